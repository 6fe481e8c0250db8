"""The controller interface: a Ray-free ask/tell core with a JSON-able state.

A controller proposes architectures (`ask`) and learns from their scores (`tell`). A score is the value to
maximise (accuracy for the built-in controllers) or `None` when the candidate failed, crashed, returned a
non-finite value or broke a constraint: such candidates are remembered but never preferred. `state_dict()`
returns plain JSON data (RNG state included) so a search resumes exactly where it stopped.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar
from collections.abc import Hashable

import numpy as np
from nas.registry import PluginOptions, Registry
from search_spaces.base import SearchSpace

CONTROLLERS: Registry[type[Controller]] = Registry("controller")
register_controller = CONTROLLERS.register


class ControllerOptions(PluginOptions):
    """Base for a controller's recipe options."""


def clean_score(score: Any) -> float | None:
    """`score` as a finite float, or None for missing / NaN / inf / non-numeric values."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class Controller(ABC):
    """Base class of every controller.

    Args:
        space: the search space it proposes from.
        options: validated options (an instance of the subclass's `Options`).
        seed: seed of its random generator.
    """

    Options: ClassVar[type[ControllerOptions]] = ControllerOptions

    def __init__(self, space: SearchSpace, options: ControllerOptions | None = None, seed: int = 0):
        self.space = space
        self.options = options if options is not None else self.Options()
        self.rng = np.random.default_rng(seed)
        self.n_asked = 0
        self.n_told = 0

    def ask(self) -> Hashable:
        """Next architecture to evaluate."""
        self.n_asked += 1
        return self._propose()

    def tell(self, arch: Hashable, score: Any) -> None:
        """Record the outcome of `arch`; a non-finite or missing score counts as a failure."""
        self.n_told += 1
        self._observe(arch, clean_score(score))

    @abstractmethod
    def _propose(self) -> Hashable: ...

    def _observe(self, arch: Hashable, score: float | None) -> None:
        """Learn from one outcome (random search learns nothing)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; `load_state_dict` of it restores the controller exactly."""
        return {"rng": self.rng.bit_generator.state, "n_asked": self.n_asked, "n_told": self.n_told,
                **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by `state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.n_asked, self.n_told = state["n_asked"], state["n_told"]
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def make_controller(name: str, space: SearchSpace, options: dict[str, Any] | None = None, seed: int = 0) -> Controller:
    """Instantiate a registered controller by name."""
    cls = CONTROLLERS.get(name)
    return cls(space, cls.Options(**(options or {})), seed=seed)
