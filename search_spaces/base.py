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
from typing import Any, ClassVar, Literal

import numpy as np

from pydantic import Field, field_validator, model_serializer

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


class CompressionOptions(PluginOptions):
    """``space.options.compression``: the choices of a compression policy searched per unit (`search_spaces.
    policy`; the recipe's ``compression: search``)."""

    precisions: list[Literal["fp32", "int8", "int4", "fp16", "bf16"]] = Field(
        default_factory=lambda: ["fp32", "int8"], min_length=1,
        description="what each unit may run in (int4: 4-bit weights, 8-bit activations, on the FPGA profiles; "
                    "fp16 / bf16: 16-bit floats, on the GPU profiles measured with a policy)")
    keep: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="fractions of a unit's expansion channels structured pruning may keep (1: no pruning); the "
                    "trained network is pruned, then fine-tuned")

    @field_validator("precisions", "keep")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("choices must be unique")
        return v

    @field_validator("keep")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [k for k in v if not 0 < k <= 1]
        if bad:
            raise ValueError(f"keep ratio {bad[0]:g} is not in (0, 1]")
        if 1 not in v:   # a unit with nothing to prune keeps all; the search may always leave a unit whole
            raise ValueError("the choices must include 1 (no pruning)")
        return [float(k) for k in v]

    @property
    def prunes(self) -> bool:
        """Whether the policy searches keep ratios (a choice below 1), so its candidates are pruned."""
        return self.keep != [1.0]

    @model_serializer(mode="wrap")
    def _without_default_keep(self, handler):
        """Dumped without ``keep`` when it is the default (no pruning), as before it existed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("keep") == [1.0]:
            del data["keep"]
        return data


class SpaceOptions(PluginOptions):
    """Base for a space's recipe options; every space takes ``compression`` (a policy in the genotype)."""

    compression: CompressionOptions | None = Field(None, description="search a compression policy per unit "
                                                   "(search_spaces.policy); none: the networks as they are")

    @model_serializer(mode="wrap")
    def _without_unset_compression(self, handler):
        """Options dumped without ``compression`` when it is not set, as they were before it existed (predictor
        files and run folders compare the dumps)."""
        data = handler(self)
        if isinstance(data, dict) and data.get("compression", 0) is None:
            del data["compression"]
        return data


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

    def init_string(self, arch: Hashable) -> str:
        """The string the initial weights of `arch`'s network are seeded by (`nas.trial.build_seeded`): its
        canonical string, or where genotypes also say how one network is compressed, that network's (so every
        compression of it starts from the same weights)."""
        return self.to_string(arch)

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

    def held_values(self, arch: Hashable, engine: str, layers: Sequence[LayerCost]) -> list[int]:
        """Activation values (batch 1) kept alive while each layer of `layers` (`layer_costs(arch)`, which the
        caller has made already) runs, beside the layer's own input and output, by an engine that runs the network
        as ``fused`` or ``eager`` (`predictors.memory.layer_peak`): what `predictors.memory.inference_memory` adds
        to each layer's peak. This default: nothing for a fused engine, which frees a tensor after its last use,
        so a chain of layers keeps nothing else; in eager mode the stem's output, which the caller of the body
        still holds while the body runs (``blocks(stem(x))``), from the body's second layer to the head (from the
        one after its first layer that is not an identity, which passes the stem's output on as it is). Spaces
        whose layers are not one chain, or whose forward keeps more (lists of earlier outputs, a cell's nodes),
        override it."""
        if engine != "eager":
            return [0] * len(layers)
        heads = [n for n, lc in enumerate(layers) if lc.key.op == "head"]
        first = 1
        while first < len(layers) and not layers[first].convs and layers[first].key.op == "skip" \
                and layers[first].key.in_shape == layers[first].key.out_shape:
            first += 1
        stem = int(np.prod(layers[0].key.out_shape))
        return [stem if first < n < (heads[0] if heads else len(layers)) else 0 for n in range(len(layers))]

    def runtime_graph(self, arch: Hashable, graph: Any, x: Any, layers: Sequence[LayerCost]) -> bool:
        """Build into `graph` (a `predictors.ort_memory.OrtGraph`, its input `x`) the graph onnxruntime runs for
        `arch`, where the layers are not one chain; return whether it did. This default does nothing and returns
        False: the layers are one chain, which `predictors.ort_memory.ort_graph` builds from their cost keys."""
        return False

    def saved_twice(self, arch: Hashable) -> int:
        """Activation values (per sample) that `predictors.memory.training_memory`'s walk of the layers in order
        counts for the backward pass more than once, though autograd keeps the tensor once (several layers of a
        cell reading one node): taken off its figure. None here; NAS-Bench-201 overrides it."""
        return 0

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

    # ---- compression units (spaces on which a policy can be searched: `search_spaces.policy`) -------------------
    def compression_units(self) -> tuple[str, ...]:
        """Names of the units a compression policy gives a precision each (stages, or layers), fixed for the
        space."""
        raise NotImplementedError(f"search space {self.name!r} has no compression units")

    def unit_of_layers(self, arch: Hashable) -> list[int]:
        """The compression unit (index into `compression_units`) of each entry of `layer_costs(arch)`."""
        raise NotImplementedError(f"search space {self.name!r} has no compression units")

    def unit_modules(self, arch: Hashable) -> list[tuple[str, ...]]:
        """Per compression unit, the names of the submodules of `build(arch)` that make it up."""
        raise NotImplementedError(f"search space {self.name!r} has no compression units")

    def pruned_cost(self, layer: LayerCost, keep: float) -> LayerCost | None:
        """`layer` (of `layer_costs`) with `keep` of its expansion channels left by structured pruning, or None
        when the space cannot prune it. A space that prunes builds those layers from inverted residuals that
        `search_spaces.layers.prune_expansion` narrows to exactly the channels this cost counts
        (`search_spaces.policy`)."""
        return None

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
