"""The controller interface: a Ray-free ask/tell core with a JSON-able state.

A controller proposes architectures (`ask`) and learns from their outcomes (`tell`). An outcome
(`Outcome.of`) is built from whatever the caller has: a results row (accuracy, status, ``latency_<profile>``
columns), a bare accuracy, or `None` for a candidate that failed. NaN, inf, missing and non-numeric figures are
treated as missing, so a misbehaving trial can never put a non-finite number into a controller's state.
Single-objective controllers maximise `Outcome.score`: the accuracy of a feasible candidate, `None` otherwise
(failed, crashed, non-finite, or over a hard limit); such candidates are remembered but never preferred.
`state_dict()` returns plain JSON data (RNG state included) so a search resumes exactly where it stopped.

What a controller needs beyond the space (the profiles and latency limits of the search) is injected through
its constructor as a `SearchObjectives`, as OFA's evolution finder takes its predictors.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from core.registry import PluginOptions, Registry
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


@dataclass(frozen=True)
class Outcome:
    """What a controller learns about one candidate.

    Attributes:
        accuracy: the accuracy estimate, None when the candidate failed or was never evaluated.
        feasible: it met every hard limit (and was evaluated successfully).
        latency: ms per hardware profile, finite figures only (also known for candidates rejected before a trial).
        flops: multiply-accumulates, when known.
        status: the row's status: ``ok``, ``infeasible`` (evaluated, over a limit), ``rejected`` (over a limit by
            the cheap checks, never evaluated) or ``failed``.
    """

    accuracy: float | None
    feasible: bool
    latency: Mapping[str, float] = field(default_factory=dict)
    flops: float | None = None
    status: str = "ok"

    @property
    def rejected(self) -> bool:
        """The cheap checks rejected it before any evaluation (it cost nothing)."""
        return self.status == "rejected"

    @property
    def score(self) -> float | None:
        """The value single-objective controllers maximise: accuracy when feasible, else None."""
        return self.accuracy if self.feasible else None

    @classmethod
    def of(cls, result: Any) -> Outcome:
        """The outcome of a results row (dict), a bare accuracy (feasible when finite) or None (failed).

        A row's ``status`` decides feasibility (``ok``; a row without one counts as ok); ``failed`` rows have no
        accuracy whatever they report.
        """
        if isinstance(result, Outcome):
            return result
        if not isinstance(result, Mapping):
            acc = clean_score(result)
            return cls(acc, acc is not None, status="ok" if acc is not None else "failed")
        status = result.get("status", "ok")
        acc = None if status == "failed" else clean_score(result.get("accuracy"))
        latency = {k.removeprefix("latency_"): v for k, v in
                   ((k, clean_score(v)) for k, v in result.items() if k.startswith("latency_")) if v is not None}
        return cls(acc, status == "ok" and acc is not None, latency, clean_score(result.get("flops")), str(status))


@dataclass(frozen=True)
class SearchObjectives:
    """The search's objectives as controllers see them (injected by the pipeline from the recipe).

    Attributes:
        profiles: hardware profiles whose latency is known for each candidate, in recipe order.
        limits: hard latency limits (ms) per profile (those with `max_ms`).
    """

    profiles: tuple[str, ...] = ()
    limits: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_constraints(cls, constraints: Any) -> SearchObjectives:
        """From a recipe's `Constraints`."""
        return cls(tuple(c.profile for c in constraints.latency),
                   {c.profile: c.max_ms for c in constraints.latency if c.max_ms is not None})


class Controller(ABC):
    """Base class of every controller.

    Args:
        space: the search space it proposes from.
        options: validated options (an instance of the subclass's `Options`).
        seed: seed of its random generator.
        objectives: the search's profiles and latency limits (controllers that trade accuracy against latency
            use them; the others ignore them).
    """

    Options: ClassVar[type[ControllerOptions]] = ControllerOptions

    def __init__(self, space: SearchSpace, options: ControllerOptions | None = None, seed: int = 0,
                 objectives: SearchObjectives | None = None):
        self.space = space
        self.options = options if options is not None else self.Options()
        self.objectives = objectives if objectives is not None else SearchObjectives()
        self.rng = np.random.default_rng(seed)
        self.n_asked = 0
        self.n_told = 0

    def ask(self) -> Hashable:
        """Next architecture to evaluate."""
        self.n_asked += 1
        return self._propose()

    def tell(self, arch: Hashable, result: Any) -> None:
        """Record the outcome of `arch`: a results row, a bare accuracy or None (see `Outcome.of`)."""
        self.n_told += 1
        self._observe(arch, Outcome.of(result))

    @abstractmethod
    def _propose(self) -> Hashable: ...

    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        """Learn from one outcome (random search learns nothing)."""

    def _breed(self, select: Callable[[], Hashable], crossover_prob: float) -> Hashable:
        """A child of the evolutionary controllers: a selected parent, crossed with a second one with probability
        `crossover_prob`, then mutated once."""
        parent = select()
        if self.rng.random() < crossover_prob:
            parent = self.space.crossover(parent, select(), self.rng)
        return self.space.mutate(parent, self.rng)

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


def parse_controller_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A command line's ``name[:key=value[:key=value...]]`` -> (name, options); values are read as YAML scalars
    (``evolution:surrogate=none``, ``rl:lr=0.2:batch_size=8``)."""
    import yaml

    name, *pairs = spec.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"controller {spec!r}: options are written key=value after the name")
        options[key] = yaml.safe_load(value)
    return name, options


def make_controller(name: str, space: SearchSpace, options: dict[str, Any] | None = None, seed: int = 0,
                    objectives: SearchObjectives | None = None) -> Controller:
    """Instantiate a registered controller by name (`Registry.create`)."""
    return CONTROLLERS.create(name, options, space, seed=seed, objectives=objectives)
