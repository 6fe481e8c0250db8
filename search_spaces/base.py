"""The search-space interface and its registry.

A search space is a small class over frozen genotypes ("archs"): it samples, mutates, crosses over, encodes and
decodes them, counts their cost analytically, yields per-layer cost keys, and builds the `nn.Module` as a separate
step. Each space declares its recipe options as a pydantic model (`Options`), so `space.options` in a recipe is
validated by the space it configures.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pydantic import ValidationError

from core.errors import InputError, format_validation_error
from core.registry import PluginOptions, Registry
from search_spaces.costs import LayerCost

SPACES: Registry[type[SearchSpace]] = Registry("search space")
register_space = SPACES.register


def mutate_decisions(decisions: Sequence[int], sizes: Sequence[int], rng: np.random.Generator) -> list[int] | None:
    """`decisions` with one of those that have alternatives changed to another choice; None when none has."""
    open_ = [i for i, n in enumerate(sizes) if n > 1]
    if not open_:
        return None
    i = open_[int(rng.integers(len(open_)))]
    out = [int(d) for d in decisions]
    out[i] = (out[i] + 1 + int(rng.integers(sizes[i] - 1))) % sizes[i]
    return out


def crossover_decisions(a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Each decision from `a` or `b` with equal probability."""
    take_a = rng.random(len(a)) < 0.5
    return [int(x if t else y) for x, y, t in zip(a, b, take_a)]


class SpaceOptions(PluginOptions):
    """Base for a space's recipe options."""


@dataclass(frozen=True)
class PositionalLayers:
    """The layers of a space whose every layer costs independently of the other layers' choices.

    `fixed` are the layers every network has (stem, head, ...); `table[p][c]` is the layer that choice `c` puts
    at searchable position `p`. A network's layers are `fixed` plus `table[p][choice_p]` for each position, so
    a batch given as a choice matrix (`SearchSpace.choice_matrix`) is costed by fancy indexing instead of one
    `layer_costs` walk per network (the predictors' batch path).
    """

    fixed: tuple[LayerCost, ...]
    table: tuple[tuple[LayerCost, ...], ...]

    def totals(self, attr: str, choices: np.ndarray) -> np.ndarray:
        """Per network (row of a choice matrix): the sum of a layer figure (``"macs"``, ``"params"``) over all
        its layers, by indexing instead of a `layer_costs` walk per network."""
        per_choice = np.array([[getattr(lc, attr) for lc in row] for row in self.table])
        fixed = sum(getattr(lc, attr) for lc in self.fixed)
        return fixed + per_choice[np.arange(len(self.table)), choices].sum(axis=1)


class SearchSpace(ABC):
    """Interface of every search space.

    Args:
        options: the space's validated options (an instance of `Options`).
        num_classes: classifier outputs of the networks it builds (set from the evaluation dataset).
    """

    Options: ClassVar[type[SpaceOptions]] = SpaceOptions
    name: ClassVar[str] = ""

    def __init__(self, options: SpaceOptions | None = None, num_classes: int = 1000):
        self.options = options if options is not None else self.Options()
        self.num_classes = num_classes

    # ---- sampling and variation: by default over the decision view (a space with other rules overrides them) ---
    def sample(self, rng: np.random.Generator) -> Hashable:
        """A uniformly random architecture: a uniform choice per decision."""
        return self.from_decisions(rng.integers(self.decision_sizes()))

    def mutate(self, arch: Hashable, rng: np.random.Generator) -> Hashable:
        """A copy of `arch` with exactly one decision (of those with more than one choice) changed."""
        decisions = mutate_decisions(self.to_decisions(arch), self.decision_sizes(), rng)
        return arch if decisions is None else self.from_decisions(decisions)

    def crossover(self, a: Hashable, b: Hashable, rng: np.random.Generator) -> Hashable:
        """Uniform crossover: each decision from `a` or `b` with equal probability."""
        return self.from_decisions(crossover_decisions(self.to_decisions(a), self.to_decisions(b), rng))

    @abstractmethod
    def encode(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Feature matrix, one row per arch (fixed width for the space)."""

    @abstractmethod
    def decode(self, string: str) -> Hashable:
        """Arch from its canonical string; `ValueError` naming the problem when it is not in the space."""

    @abstractmethod
    def to_string(self, arch: Hashable) -> str:
        """Canonical string of `arch` (decode(to_string(a)) == a)."""

    @abstractmethod
    def layer_costs(self, arch: Hashable) -> list[LayerCost]:
        """Per-layer cost keys with MACs and params, computed without building the model."""

    @abstractmethod
    def build(self, arch: Hashable) -> Any:
        """The `nn.Module` for `arch` (randomly initialised)."""

    @abstractmethod
    def input_shape(self, arch: Hashable) -> tuple[int, int, int, int]:
        """Input tensor shape at batch 1 (N, C, H, W)."""

    @abstractmethod
    def smallest(self) -> Hashable:
        """The arch with the fewest MACs and params (used to reject impossible constraints up front)."""

    def build_layer(self, key: Any) -> Any:
        """A standalone module for one cost key (input shape (1, *key.in_shape)), to time a layer alone."""
        raise NotImplementedError(f"search space {self.name!r} cannot build single layers")

    def enumerate_layers(self, max_samples: int = 20_000, patience: int = 2_000) -> tuple[list[Any], bool]:
        """Every distinct layer (LayerCost) the space can produce, and whether the list is known to be complete.

        This default samples at random until `patience` samples in a row add nothing new (a sample, reported as
        such); spaces that can enumerate their layers exactly override it.
        """
        rng = np.random.default_rng(0)
        layers: dict[str, Any] = {}
        quiet = 0
        for _ in range(max_samples):
            new = 0
            for layer in self.layer_costs(self.sample(rng)):
                new += str(layer.key) not in layers
                layers.setdefault(str(layer.key), layer)
            quiet = 0 if new else quiet + 1
            if quiet >= patience:
                break
        return list(layers.values()), False

    # ---- decision view (policy-gradient controllers) ----------------------------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        """Number of choices of each of the space's categorical decisions, in a fixed order."""
        raise NotImplementedError(f"search space {self.name!r} has no decision view")

    def to_decisions(self, arch: Hashable) -> tuple[int | None, ...]:
        """Choice index of each decision for `arch`; None for a decision `arch` does not use (e.g. the layers
        beyond a stage's depth)."""
        raise NotImplementedError(f"search space {self.name!r} has no decision view")

    def from_decisions(self, decisions: Sequence[int]) -> Hashable:
        """The arch one choice index per decision describes (decisions it does not use are ignored)."""
        raise NotImplementedError(f"search space {self.name!r} has no decision view")

    def effective_decisions(self, arch: Hashable) -> tuple[int | None, ...]:
        """`to_decisions` with choices that cannot change the network read as a canonical one (a space whose
        genotypes can hold dead parts overrides it), so a surrogate sees two genotypes of one network as one
        point; by default the decisions themselves."""
        return self.to_decisions(arch)

    # ---- optional batch path (spaces whose layers cost independently) ------------------------------------------
    def positional_layers(self) -> PositionalLayers | None:
        """The space's layers by (position, choice), or None when a layer's cost depends on other choices."""
        return None

    def choice_matrix(self, strings: Sequence[str]) -> np.ndarray:
        """(n, positions) choice indices of many arch strings at once, validated like `decode`; only for
        spaces with `positional_layers`."""
        raise NotImplementedError(f"search space {self.name!r} has no choice-matrix batch path")

    def encode_choices(self, choices: np.ndarray) -> np.ndarray:
        """`encode` of the archs given as a choice matrix (spaces with `positional_layers`)."""
        raise NotImplementedError(f"search space {self.name!r} has no choice-matrix batch path")

    def cost_keys(self, arch: Hashable) -> list[str]:
        """Canonical per-layer cost key strings of `arch`."""
        return [str(layer.key) for layer in self.layer_costs(arch)]

    def flops(self, arch: Hashable) -> int:
        """Multiply-accumulates at batch 1 (the literature's "FLOPs")."""
        return sum(layer.macs for layer in self.layer_costs(arch))

    def params(self, arch: Hashable) -> int:
        """Trainable parameters."""
        return sum(layer.params for layer in self.layer_costs(arch))


def get_space(name: str, options: dict[str, Any] | SpaceOptions | None = None, num_classes: int = 1000) -> SearchSpace:
    """Instantiate a registered space by name.

    Args:
        name: registered name (see `SPACES.names()`).
        options: a dict (validated by the space's `Options`) or an `Options` instance.
        num_classes: classifier outputs.
    """
    return SPACES.create(name, options, num_classes=num_classes)


def make_space(name: Any, options: Any, num_classes: Any, *, source: str | Path = "--space-options",
               name_field: str = "--space", error: type[InputError] = InputError):
    """The registered search space `name` with `options` and `num_classes`.

    Args:
        source: where the options came from (a YAML file, a flag, a metadata file), for the message.
        name_field: where the name came from.
        error: the `InputError` subclass to raise (e.g. `PredictorFileError` for a predictor's metadata).

    Raises:
        `error`: an unknown space (the valid names listed), options that are not a mapping or that the space
            rejects (the first bad field named), or a class count that is not a positive integer.
    """
    if not isinstance(name, str) or name not in SPACES:
        raise error(f"{name_field}: unknown search space {name!r}; expected one of: {', '.join(SPACES.names())}")
    if options is not None and not isinstance(options, dict):
        raise error(f"{source}: space options must be a mapping of option: value, got {type(options).__name__}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise error(f"{source}: num_classes must be a positive integer, got {num_classes!r}")
    try:
        return get_space(name, options or {}, num_classes=num_classes)
    except ValidationError as err:
        raise error(format_validation_error(str(source), err)) from None
    except (ValueError, TypeError) as err:
        raise error(f"{source}: {err}") from None
