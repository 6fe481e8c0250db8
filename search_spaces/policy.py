"""A compression policy in the genotype: each unit of a network (a stage, or a layer where the space has layers) runs
in a precision of its own, searched like any other decision (issue 21, ``compression: search``).

A space's ``compression`` option turns it on (``space.options.compression: {precisions: [fp32, int8]}``);
`search_spaces.get_space` then wraps the space in a `PolicySpace`, whose genotypes are a `PolicyArch`: the space's
own genotype plus one precision per unit. A space offers units by answering three questions (`SearchSpace`):

- `compression_units()`: the unit names, fixed for the space (``stem``, ``l0`` ... ``l7``, ``head`` for NAS-Bench-
  Macro and likewise per layer for FBNet; ``stem``, ``s0`` ... and ``head`` for the MobileNet, NAS-Bench-201 and
  MuffNet spaces, whose stages are the units);
- `unit_of_layers(arch)`: the unit of each entry of `layer_costs(arch)`;
- `unit_modules(arch)`: the submodules of `build(arch)` that make up each unit.

So a policy costs without building anything: `layer_costs` gives every layer of an int8 unit a cost key with
``precision="int8"`` (`CostKey.precision`; its own rows in a block table, its own terms in a calibrated
predictor), and FLOPs and params are the network's. `build` returns the fp32 network with the names of its int8
submodules in ``int8_modules`` (a tuple of module names; `core.quantize`): what gets timed (`hardware_profiles.
backends.OnnxCpuBackend`), scored (`nas.compression`) and shipped (``model.int8.onnx``) is that graph with exactly
those modules quantized, the rest in fp32 with a (de)quantization at each boundary.

``fp16`` and ``bf16`` are for the GPU profiles: `build` names those units in ``fp16_modules`` / ``bf16_modules``, and
`core.half.apply_half` runs them in 16-bit floats inside the fp32 network (cast in and out at each unit), which is
what the GPU backend times (`hardware_profiles.cuda`) and the search scores (`nas.compression`, in PyTorch).

``int4`` (4-bit weights, 8-bit activations) is for the FPGA profiles, whose simulator runs each layer at its key's
weight width (`hardware_profiles.fpga`). An int4 unit is in ``int8_modules`` too and also in ``int4_modules``: it is
scored with its weights rounded to 4 bits per output channel first (`core.quantize.round_weights`), then quantized
like the int8 units; onnxruntime's CPU kernels have no 4-bit convolution, so the CPU profiles refuse it.

A policy may also prune (``keep: [1, 0.75, 0.5]``): each unit gets a keep ratio, and structured pruning leaves
that share of the expansion channels of its inverted residuals (`search_spaces.layers.prune_expansion`; a multiple
of 8, `kept_channels`). The space prices a pruned layer without building it (`SearchSpace.pruned_cost`: the key of
the same block at the expansion the kept channels amount to), and `build` returns the pruned network. A candidate
is not trained pruned from scratch: `nas.trial.train_candidate` trains its dense network (`dense`), prunes it
(`prune`, the same surgery on trained weights) and fine-tunes it, within one candidate's training budget.

Canonical string: the space's own string, ``@``, then per unit its precision, with ``:<keep>`` where it keeps less
than all its channels, comma-separated in unit order, e.g. ``00120201@fp32,int8,int8:0.5,int8,int8,int8,int8,int8,
int8,fp32``. A unit with nothing to quantize (an identity layer) always reads the first precision, one with nothing
to prune keeps 1, so one network has one string.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.base import SPACES, SearchSpace
from search_spaces.costs import HALF_PRECISIONS, PRECISION_BITS, LayerCost
from search_spaces.layers import expansion_parts, prune_expansion

SEPARATOR = "@"
UNPRUNED_SAMPLES = 0.5   # the share of sampled policies that prune nothing (`PolicySpace.sample`)


@dataclass(frozen=True)
class PolicyArch:
    """Genotype of a `PolicySpace`: the wrapped space's genotype, one precision and one keep ratio per compression
    unit (1.0 everywhere when the space's choices do not prune)."""

    base: Hashable
    precisions: tuple[str, ...]
    keeps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.keeps:
            object.__setattr__(self, "keeps", (1.0,) * len(self.precisions))


def offers_units(space_cls: type[SearchSpace]) -> bool:
    """Whether a space class has compression units (overrides `SearchSpace.compression_units`)."""
    return space_cls.compression_units is not SearchSpace.compression_units


def offers_pruning(space_cls: type[SearchSpace]) -> bool:
    """Whether a space class can prune its layers (overrides `SearchSpace.pruned_cost`)."""
    return space_cls.pruned_cost is not SearchSpace.pruned_cost


def _spaces_that(offers) -> str:
    """The registered spaces whose class `offers` (`offers_units`, `offers_pruning`), comma-separated."""
    return ", ".join(name for name in SPACES.names() if offers(SPACES.get(name)))


def no_units(name: str) -> str:
    """What to say of a space `name` without compression units."""
    return (f"search space {name!r} has no compression units; a policy can be searched on spaces that have them "
            f"({_spaces_that(offers_units)})")


def no_pruning(name: str) -> str:
    """What to say of a space `name` that cannot prune its layers."""
    return (f"search space {name!r} cannot prune its layers; keep ratios below 1 are searched on the spaces of "
            f"inverted residuals ({_spaces_that(offers_pruning)})")


def with_precision(layer: LayerCost, precision: str) -> LayerCost:
    """`layer` run in `precision`: the same MACs, params and convolutions under a key that says so."""
    if layer.key.precision == precision:
        return layer
    return dataclasses.replace(layer, key=dataclasses.replace(layer.key, precision=precision))


def _keep_text(keep: float) -> str:
    return f"{keep:g}"


class PolicySpace(SearchSpace):
    """A search space whose genotypes carry a compression policy (see the module).

    Args:
        base: the space the policy is searched over; its ``options.compression`` gives the choices.
    """

    def __init__(self, base: SearchSpace):
        if not offers_units(type(base)):
            raise ValueError(f"compression: {no_units(base.name)}")
        self.units = tuple(base.compression_units())
        super().__init__(base.options, base.num_classes)
        self.base, self.name, self.Options = base, base.name, base.Options
        self.choices = tuple(base.options.compression.precisions)
        self.keep_choices = tuple(base.options.compression.keep)
        if self.prunes and not offers_pruning(type(base)):
            raise ValueError(f"compression.keep: {no_pruning(base.name)}")

    @property
    def prunes(self) -> bool:
        """Whether the policy searches keep ratios (`CompressionOptions.prunes`)."""
        return self.base.options.compression.prunes

    # ---- genotypes ----------------------------------------------------------------------------------------------
    def unit_flags(self, base: Hashable) -> tuple[list[bool], list[bool]]:
        """Per unit, in one walk over the layers of the network `base`: whether its precision can change the
        network (a unit with no convolution, such as NAS-Bench-Macro's identity layers, has nothing to quantize),
        and whether its keep ratio can (it has a layer that some keep choice narrows)."""
        live, prunable = [False] * len(self.units), [False] * len(self.units)
        for lc, u in zip(self.base.layer_costs(base), self.base.unit_of_layers(base), strict=True):
            live[u] = live[u] or bool(lc.convs)
            prunable[u] = prunable[u] or (self.prunes and any(self._pruned(lc, k).key != lc.key
                                                               for k in self.keep_choices))
        return live, prunable

    def live_units(self, base: Hashable) -> list[bool]:
        """Per unit, whether its precision can change the network `base` (`unit_flags`)."""
        return self.unit_flags(base)[0]

    def prunable_units(self, base: Hashable) -> list[bool]:
        """Per unit, whether its keep ratio can change the network `base` (`unit_flags`)."""
        return self.unit_flags(base)[1]

    def _pruned(self, layer: LayerCost, keep: float) -> LayerCost:
        return (self.base.pruned_cost(layer, keep) or layer) if keep < 1 else layer

    def _arch(self, base: Hashable, precisions: Sequence[str], keeps: Sequence[float] | None = None) -> PolicyArch:
        """The genotype in canonical form: a unit with nothing to quantize reads the first precision of the
        choices, one with nothing to prune keeps 1, so one network has one string (and the run's ledger never
        trains it twice under two)."""
        live, prunable = self.unit_flags(base)
        keeps = (1.0,) * len(self.units) if keeps is None else keeps
        return PolicyArch(base, tuple(p if on else self.choices[0] for p, on in zip(precisions, live, strict=True)),
                          tuple(float(k) if on else 1.0 for k, on in zip(keeps, prunable, strict=True)))

    def dense(self, arch: PolicyArch) -> PolicyArch:
        """`arch` before pruning: every keep ratio 1 (the network a pruned candidate is trained as first)."""
        return PolicyArch(arch.base, arch.precisions, (1.0,) * len(self.units))

    @property
    def least_compressed(self) -> str:
        """The precision of the choices that compresses least (most bits; the first of equals)."""
        return max(self.choices, key=PRECISION_BITS.__getitem__)

    @property
    def most_compressed(self) -> str:
        """The precision of the choices that compresses most (fewest bits; the first of equals)."""
        return min(self.choices, key=PRECISION_BITS.__getitem__)

    def with_unit(self, arch: PolicyArch, unit: int, precision: str | None = None,
                  keep: float | None = None) -> PolicyArch | None:
        """`arch` with unit `unit` in `precision` or at `keep` (canonical: a unit with nothing to quantize or prune
        stays as it was); None where that changes nothing. The steps `nas.compression`'s repairs weigh."""
        precisions, keeps = list(arch.precisions), list(arch.keeps)
        if precision is not None:
            precisions[unit] = precision
        if keep is not None:
            keeps[unit] = keep
        other = self._arch(arch.base, precisions, keeps)
        return None if other == arch else other

    def sample(self, rng: np.random.Generator) -> PolicyArch:
        """A network of the wrapped space with a random precision per unit; where the policy prunes, half the
        samples prune nothing and the rest draw a keep ratio per unit. Drawn per unit alone, a network of nine
        prunable units would almost never be left whole (at three choices, 1 in 3^9), so a random or evolutionary
        search would never see the dense networks its pruned candidates are compared with."""
        base = self.base.sample(rng)
        precisions = [self.choices[int(i)] for i in rng.integers(len(self.choices), size=len(self.units))]
        keeps = [self.keep_choices[int(i)] for i in rng.integers(len(self.keep_choices), size=len(self.units))]
        if self.prunes and rng.random() < UNPRUNED_SAMPLES:
            keeps = None
        return self._arch(base, precisions, keeps)

    def _open_base_decisions(self, arch: PolicyArch) -> int:
        """How many decisions of the wrapped genotype a mutation could change (1 where the space cannot say)."""
        try:
            sizes = self.base.decision_sizes()
            return sum(1 for d, n in zip(self.base.to_decisions(arch.base), sizes) if d is not None and n > 1)
        except NotImplementedError:
            return 1

    def mutate(self, arch: PolicyArch, rng: np.random.Generator) -> PolicyArch:
        """One decision changed, the precisions of the units that have something to quantize and the keep ratios
        of those that have something to prune counting as decisions like the space's own."""
        quantizable, prunable = self.unit_flags(arch.base)
        live = [(0, i) for i, on in enumerate(quantizable) if on] if len(self.choices) > 1 else []
        live += [(1, i) for i, on in enumerate(prunable) if on]
        units, base = len(live), self._open_base_decisions(arch)
        if units and rng.random() < units / (units + base):
            which, i = live[int(rng.integers(units))]
            choices, now = (self.choices, arch.precisions) if which == 0 else (self.keep_choices, arch.keeps)
            new = [c for c in choices if c != now[i]][int(rng.integers(len(choices) - 1))]
            return self.with_unit(arch, i, **({"precision": new} if which == 0 else {"keep": new})) or arch
        return self._arch(self.base.mutate(arch.base, rng), arch.precisions, arch.keeps)

    def crossover(self, a: PolicyArch, b: PolicyArch, rng: np.random.Generator) -> PolicyArch:
        """The bases crossed, and each unit's precision and keep ratio taken together from one parent."""
        take_a = rng.random(len(self.units)) < 0.5
        return self._arch(self.base.crossover(a.base, b.base, rng),
                          [x if t else y for x, y, t in zip(a.precisions, b.precisions, take_a)],
                          [x if t else y for x, y, t in zip(a.keeps, b.keeps, take_a)])

    # ---- decision view: the space's decisions, one precision per unit, then one keep ratio per unit -------------
    def _policy_sizes(self) -> tuple[int, ...]:
        return (len(self.choices),) * len(self.units) + ((len(self.keep_choices),) * len(self.units)
                                                          if self.prunes else ())

    def _policy_decisions(self, arch: PolicyArch) -> tuple[int, ...]:
        return tuple(self.choices.index(p) for p in arch.precisions) + \
            (tuple(self.keep_choices.index(k) for k in arch.keeps) if self.prunes else ())

    def decision_sizes(self) -> tuple[int, ...]:
        return tuple(self.base.decision_sizes()) + self._policy_sizes()

    def to_decisions(self, arch: PolicyArch) -> tuple[int | None, ...]:
        return tuple(self.base.to_decisions(arch.base)) + self._policy_decisions(arch)

    def effective_decisions(self, arch: PolicyArch) -> tuple[int | None, ...]:
        return tuple(self.base.effective_decisions(arch.base)) + self._policy_decisions(arch)

    def from_decisions(self, decisions: Sequence[int]) -> PolicyArch:
        sizes = self._policy_sizes()
        n = len(decisions) - len(sizes)
        if n < 0 or not all(0 <= int(d) < size for d, size in zip(decisions[n:], sizes)):
            raise ValueError(f"decisions {tuple(decisions)}: expected the space's decisions, then {len(self.units)} "
                             f"precisions in 0..{len(self.choices) - 1}" +
                             (f" and {len(self.units)} keep ratios in 0..{len(self.keep_choices) - 1}"
                              if self.prunes else ""))
        units = len(self.units)
        precisions = [self.choices[int(d)] for d in decisions[n:n + units]]
        keeps = [self.keep_choices[int(d)] for d in decisions[n + units:]] if self.prunes else None
        return self._arch(self.base.from_decisions(decisions[:n]), precisions, keeps)

    # ---- strings and features -----------------------------------------------------------------------------------
    def to_string(self, arch: PolicyArch) -> str:
        """The space's string, ``@``, then per unit its precision, with ``:<keep>`` where it keeps less than all
        its channels."""
        units = (p if k == 1 else f"{p}:{_keep_text(k)}" for p, k in zip(arch.precisions, arch.keeps))
        return f"{self.base.to_string(arch.base)}{SEPARATOR}{','.join(units)}"

    def init_string(self, arch: PolicyArch) -> str:
        """The wrapped space's string: every policy of one network starts from the same initial weights, and a
        deterministic evaluator trains them to the same fp32 network, so policies of one network differ by what
        their compression does, not by the luck of an initialisation (as they would if seeded by their own
        strings)."""
        return self.base.init_string(arch.base)

    def decode(self, string: str) -> PolicyArch:
        text = str(string).strip()
        keeps = f"[:keep ratio, one of {', '.join(map(_keep_text, self.keep_choices))}]" if self.prunes else ""
        if SEPARATOR not in text:
            raise ValueError(f"arch {string!r}: expected '<arch>{SEPARATOR}<precision{keeps} per unit>' (units: "
                             f"{', '.join(self.units)}; precisions: {', '.join(self.choices)})")
        base, policy = text.rsplit(SEPARATOR, 1)
        tokens = [t.partition(":") for t in policy.split(",")]
        if len(tokens) != len(self.units):
            raise ValueError(f"arch {string!r}: has {len(tokens)} precisions, the space has {len(self.units)} "
                             f"compression units ({', '.join(self.units)})")
        bad = [p for p, _, _ in tokens if p not in self.choices]
        if bad:
            raise ValueError(f"arch {string!r}: precision {bad[0]!r} is not in the space's choices "
                             f"{list(self.choices)}")
        return self._arch(self.base.decode(base), [p for p, _, _ in tokens],
                          [self._keep(string, k) if sep else 1.0 for _, sep, k in tokens])

    def _keep(self, string: str, text: str) -> float:
        try:
            keep = float(text)
        except ValueError:
            keep = None
        if keep is None or keep not in self.keep_choices:
            raise ValueError(f"arch {string!r}: keep ratio {text!r} is not in the space's choices "
                             f"{list(map(_keep_text, self.keep_choices))}")
        return keep

    def encode(self, archs: Sequence[PolicyArch]) -> np.ndarray:
        """The space's features, then per unit the index of its precision in the choices (0 = the first), then,
        where keep ratios are searched, per unit its keep ratio."""
        policy = np.array([[self.choices.index(p) for p in a.precisions] for a in archs],
                          dtype=np.float32).reshape(len(archs), len(self.units))
        parts = [np.asarray(self.base.encode([a.base for a in archs]), dtype=np.float32), policy]
        if self.prunes:
            parts.append(np.array([a.keeps for a in archs], dtype=np.float32).reshape(len(archs), len(self.units)))
        return np.hstack(parts)

    # ---- cost and build -------------------------------------------------------------------------------------------
    def layer_costs(self, arch: PolicyArch) -> list[LayerCost]:
        """The network's layers, each pruned to its unit's keep ratio and under a key in its unit's precision."""
        layers = self.base.layer_costs(arch.base)
        units = self.base.unit_of_layers(arch.base)
        return [with_precision(self._pruned(lc, arch.keeps[u]), arch.precisions[u])
                for lc, u in zip(layers, units, strict=True)]

    def enumerate_layers(self, max_samples: int = 20_000, patience: int = 2_000) -> tuple[list[Any], bool]:
        """Every layer of the space at every keep ratio and in every precision of the choices."""
        layers, complete = self.base.enumerate_layers(max_samples, patience)
        pruned = {str(x.key): x for lc in layers for x in (self._pruned(lc, k) for k in self.keep_choices)}
        return [with_precision(lc, p) for lc in pruned.values() for p in self.choices], complete

    def _modules(self, arch: PolicyArch, precisions: tuple[str, ...]) -> tuple[str, ...]:
        modules = self.base.unit_modules(arch.base)
        return tuple(name for p, names in zip(arch.precisions, modules, strict=True) if p in precisions
                     for name in names)

    def int8_modules(self, arch: PolicyArch) -> tuple[str, ...]:
        """Names of the submodules of `build(arch)` that run quantized (8-bit activations): its int8 and int4
        units."""
        return self._modules(arch, ("int8", "int4"))

    def int4_modules(self, arch: PolicyArch) -> tuple[str, ...]:
        """Names of the submodules of `build(arch)` whose weights are 4-bit (its int4 units)."""
        return self._modules(arch, ("int4",))

    def half_modules(self, arch: PolicyArch) -> dict[str, tuple[str, ...]]:
        """Per 16-bit precision (``fp16``, ``bf16``), the names of the submodules of `build(arch)` that run in it
        (`build` names those left in fp32 in ``fp32_modules``, where `core.half.apply_half` casts back)."""
        return {p: self._modules(arch, (p,)) for p in HALF_PRECISIONS}

    def prune(self, model: Any, arch: PolicyArch) -> Any:
        """`model` (built for `dense(arch)`, trained or not) pruned in place to `arch`'s keep ratios: in each unit
        that keeps less than all, every prunable block keeps its most important expansion channels
        (`search_spaces.layers.prune_expansion`, which leaves the channels `SearchSpace.pruned_cost` counts).
        Returns `model`."""
        for keep, names in zip(arch.keeps, self.base.unit_modules(arch.base), strict=True):
            if keep < 1:
                blocks = [m for name in names for m in model.get_submodule(name).modules()
                          if expansion_parts(m) is not None]
                for block in blocks:
                    prune_expansion(block, keep)
        return model

    def build(self, arch: PolicyArch) -> Any:
        """The fp32 network (pruned to the keep ratios: `prune` of its freshly built dense network), its quantized
        submodules named in ``int8_modules`` and those of them with 4-bit weights in ``int4_modules`` (for
        `core.quantize`)."""
        return self.mark(self.prune(self.base.build(arch.base), arch), arch)

    def mark(self, module: Any, arch: PolicyArch) -> Any:
        """`module` (a network of `arch`'s base, trained or not, pruned as `arch` prunes) with the names of its
        submodules in each precision of `arch`'s policy, as `build` marks them: what `core.quantize` and
        `core.half` then run in that precision. E.g. a searched fp32 network marked with another policy."""
        module.int8_modules, module.int4_modules = self.int8_modules(arch), self.int4_modules(arch)
        for precision, names in self.half_modules(arch).items():
            setattr(module, f"{precision}_modules", names)
        module.fp32_modules = self._modules(arch, ("fp32",))
        return module

    def build_layer(self, key: Any) -> Any:
        """One layer alone; an int8 (int4) key's module is marked to be quantized whole (with 4-bit weights), an
        fp16 (bf16) key's to run whole in that precision (`core.half`)."""
        module = self.base.build_layer(dataclasses.replace(key, precision="fp32"))
        if key.precision in HALF_PRECISIONS:
            setattr(module, f"{key.precision}_modules", ("",))
        elif key.precision != "fp32":
            module.int8_modules, module.int4_modules = ("",), ("",) if key.precision == "int4" else ()
        return module

    def input_shape(self, arch: PolicyArch) -> tuple[int, int, int, int]:
        return self.base.input_shape(arch.base)

    def held_values(self, arch: PolicyArch, engine: str, layers: Sequence[LayerCost]) -> list[int]:
        """The base network's: pruning narrows only the expansions inside a layer, never what a forward keeps
        between layers (nor the layers' shapes the base space reads)."""
        return self.base.held_values(arch.base, engine, layers)

    def saved_twice(self, arch: PolicyArch) -> int:
        return self.base.saved_twice(arch.base)

    def runtime_graph(self, arch: PolicyArch, graph: Any, x: Any, layers: Sequence[LayerCost]) -> bool:
        """The base space's, on the pruned layers (`predictors.ort_memory` walks only fp32 ones)."""
        return self.base.runtime_graph(arch.base, graph, x, layers)

    def smallest(self) -> PolicyArch:
        """The space's smallest network at the smallest keep ratio (the fewest MACs a policy can reach)."""
        return self._arch(self.base.smallest(), [self.choices[0]] * len(self.units),
                          [min(self.keep_choices)] * len(self.units))
