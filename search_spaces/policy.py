"""A compression policy in the genotype: each unit of a network (a stage, or a layer where the space has layers) runs
in a precision of its own, searched like any other decision (issue 21, ``compression: search``).

A space's ``compression`` option turns it on (``space.options.compression: {precisions: [fp32, int8]}``);
`search_spaces.get_space` then wraps the space in a `PolicySpace`, whose genotypes are a `PolicyArch`: the space's
own genotype plus one precision per unit. A space offers units by answering three questions (`SearchSpace`):

- `compression_units()`: the unit names, fixed for the space (``stem``, ``l0`` ... ``l7``, ``head`` for NAS-Bench-
  Macro; ``stem``, ``s0`` ... and ``head`` for the MobileNet space);
- `unit_of_layers(arch)`: the unit of each entry of `layer_costs(arch)`;
- `unit_modules(arch)`: the submodules of `build(arch)` that make up each unit.

So a policy costs without building anything: `layer_costs` gives every layer of an int8 unit a cost key with
``precision="int8"`` (`CostKey.precision`; its own rows in a block table, its own terms in a calibrated
predictor), and FLOPs and params are the network's. `build` returns the fp32 network with the names of its int8
submodules in ``int8_modules`` (a tuple of module names; `core.quantize`): what gets timed (`hardware_profiles.
backends.OnnxCpuBackend`), scored (`nas.compression`) and shipped (``model.int8.onnx``) is that graph with exactly
those modules quantized, the rest in fp32 with a (de)quantization at each boundary.

``int4`` (4-bit weights, 8-bit activations) is for the FPGA profiles, whose simulator runs each layer at its key's
weight width (`hardware_profiles.fpga`). An int4 unit is in ``int8_modules`` too and also in ``int4_modules``: it is
scored with its weights rounded to 4 bits per output channel first (`core.quantize.round_weights`), then quantized
like the int8 units; onnxruntime's CPU kernels have no 4-bit convolution, so the CPU profiles refuse it.

Canonical string: the space's own string, ``@``, then one precision per unit, comma-separated in unit order, e.g.
``00120201@fp32,int8,int8,int8,int8,int8,int8,int8,int8,fp32``. A unit with nothing to quantize (an identity
layer) always reads the first choice, so one network has one string.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.base import SearchSpace
from search_spaces.costs import LayerCost

SEPARATOR = "@"


@dataclass(frozen=True)
class PolicyArch:
    """Genotype of a `PolicySpace`: the wrapped space's genotype and one precision per compression unit."""

    base: Hashable
    precisions: tuple[str, ...]


def offers_units(space_cls: type[SearchSpace]) -> bool:
    """Whether a space class has compression units (overrides `SearchSpace.compression_units`)."""
    return space_cls.compression_units is not SearchSpace.compression_units


def no_units(name: str) -> str:
    """What to say of a space `name` without compression units."""
    return (f"search space {name!r} has no compression units; a policy can be searched on spaces that have them "
            "(macro, fbnet, mobilenet)")


def with_precision(layer: LayerCost, precision: str) -> LayerCost:
    """`layer` run in `precision`: the same MACs, params and convolutions under a key that says so."""
    if layer.key.precision == precision:
        return layer
    return dataclasses.replace(layer, key=dataclasses.replace(layer.key, precision=precision))


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

    # ---- genotypes ----------------------------------------------------------------------------------------------
    def live_units(self, base: Hashable) -> list[bool]:
        """Per unit, whether its precision can change the network `base`: a unit with no convolution (NAS-Bench-
        Macro's identity layers) has nothing to quantize."""
        live = [False] * len(self.units)
        for lc, u in zip(self.base.layer_costs(base), self.base.unit_of_layers(base), strict=True):
            live[u] = live[u] or bool(lc.convs)
        return live

    def _arch(self, base: Hashable, precisions: Sequence[str]) -> PolicyArch:
        """The genotype in canonical form: a unit with nothing to quantize reads the first choice, so one network
        has one string (and the run's ledger never trains it twice under two)."""
        live = self.live_units(base)
        return PolicyArch(base, tuple(p if on else self.choices[0] for p, on in zip(precisions, live, strict=True)))

    def sample(self, rng: np.random.Generator) -> PolicyArch:
        base = self.base.sample(rng)
        return self._arch(base, [self.choices[int(i)] for i in rng.integers(len(self.choices), size=len(self.units))])

    def _open_base_decisions(self, arch: PolicyArch) -> int:
        """How many decisions of the wrapped genotype a mutation could change (1 where the space cannot say)."""
        try:
            sizes = self.base.decision_sizes()
            return sum(1 for d, n in zip(self.base.to_decisions(arch.base), sizes) if d is not None and n > 1)
        except NotImplementedError:
            return 1

    def mutate(self, arch: PolicyArch, rng: np.random.Generator) -> PolicyArch:
        """One decision changed, the precisions of the units that have something to quantize counting as
        decisions like the space's own."""
        live = [i for i, on in enumerate(self.live_units(arch.base)) if on] if len(self.choices) > 1 else []
        units, base = len(live), self._open_base_decisions(arch)
        if units and rng.random() < units / (units + base):
            i = live[int(rng.integers(units))]
            new = [c for c in self.choices if c != arch.precisions[i]][int(rng.integers(len(self.choices) - 1))]
            return self._arch(arch.base, arch.precisions[:i] + (new,) + arch.precisions[i + 1:])
        return self._arch(self.base.mutate(arch.base, rng), arch.precisions)

    def crossover(self, a: PolicyArch, b: PolicyArch, rng: np.random.Generator) -> PolicyArch:
        take_a = rng.random(len(self.units)) < 0.5
        return self._arch(self.base.crossover(a.base, b.base, rng),
                          [x if t else y for x, y, t in zip(a.precisions, b.precisions, take_a)])

    # ---- decision view: the space's decisions, then one precision per unit ------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        return tuple(self.base.decision_sizes()) + (len(self.choices),) * len(self.units)

    def to_decisions(self, arch: PolicyArch) -> tuple[int | None, ...]:
        return tuple(self.base.to_decisions(arch.base)) + tuple(self.choices.index(p) for p in arch.precisions)

    def effective_decisions(self, arch: PolicyArch) -> tuple[int | None, ...]:
        return tuple(self.base.effective_decisions(arch.base)) + \
            tuple(self.choices.index(p) for p in arch.precisions)

    def from_decisions(self, decisions: Sequence[int]) -> PolicyArch:
        n = len(decisions) - len(self.units)
        if n < 0 or not all(0 <= int(d) < len(self.choices) for d in decisions[n:]):
            raise ValueError(f"decisions {tuple(decisions)}: expected the space's decisions, then {len(self.units)} "
                             f"precisions in 0..{len(self.choices) - 1}")
        return self._arch(self.base.from_decisions(decisions[:n]), [self.choices[int(d)] for d in decisions[n:]])

    # ---- strings and features -----------------------------------------------------------------------------------
    def to_string(self, arch: PolicyArch) -> str:
        return f"{self.base.to_string(arch.base)}{SEPARATOR}{','.join(arch.precisions)}"

    def decode(self, string: str) -> PolicyArch:
        text = str(string).strip()
        if SEPARATOR not in text:
            raise ValueError(f"arch {string!r}: expected '<arch>{SEPARATOR}<precision per unit>' (units: "
                             f"{', '.join(self.units)}; precisions: {', '.join(self.choices)})")
        base, policy = text.rsplit(SEPARATOR, 1)
        precisions = policy.split(",")
        if len(precisions) != len(self.units):
            raise ValueError(f"arch {string!r}: has {len(precisions)} precisions, the space has {len(self.units)} "
                             f"compression units ({', '.join(self.units)})")
        bad = [p for p in precisions if p not in self.choices]
        if bad:
            raise ValueError(f"arch {string!r}: precision {bad[0]!r} is not in the space's choices "
                             f"{list(self.choices)}")
        return self._arch(self.base.decode(base), precisions)

    def encode(self, archs: Sequence[PolicyArch]) -> np.ndarray:
        """The space's features, then per unit the index of its precision in the choices (0 = the first)."""
        policy = np.array([[self.choices.index(p) for p in a.precisions] for a in archs],
                          dtype=np.float32).reshape(len(archs), len(self.units))
        return np.hstack([np.asarray(self.base.encode([a.base for a in archs]), dtype=np.float32), policy])

    # ---- cost and build -------------------------------------------------------------------------------------------
    def layer_costs(self, arch: PolicyArch) -> list[LayerCost]:
        """The network's layers, each under a key in its unit's precision."""
        layers = self.base.layer_costs(arch.base)
        units = self.base.unit_of_layers(arch.base)
        return [with_precision(lc, arch.precisions[u]) for lc, u in zip(layers, units, strict=True)]

    def enumerate_layers(self, max_samples: int = 20_000, patience: int = 2_000) -> tuple[list[Any], bool]:
        """Every layer of the space in every precision of the choices."""
        layers, complete = self.base.enumerate_layers(max_samples, patience)
        return [with_precision(lc, p) for lc in layers for p in self.choices], complete

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

    def build(self, arch: PolicyArch) -> Any:
        """The fp32 network, its quantized submodules named in ``int8_modules`` and those of them with 4-bit
        weights in ``int4_modules`` (for `core.quantize`)."""
        module = self.base.build(arch.base)
        module.int8_modules, module.int4_modules = self.int8_modules(arch), self.int4_modules(arch)
        return module

    def build_layer(self, key: Any) -> Any:
        """One layer alone; an int8 (int4) key's module is marked to be quantized whole (with 4-bit weights)."""
        module = self.base.build_layer(dataclasses.replace(key, precision="fp32"))
        if key.precision != "fp32":
            module.int8_modules, module.int4_modules = ("",), ("",) if key.precision == "int4" else ()
        return module

    def input_shape(self, arch: PolicyArch) -> tuple[int, int, int, int]:
        return self.base.input_shape(arch.base)

    def smallest(self) -> PolicyArch:
        return self._arch(self.base.smallest(), [self.choices[0]] * len(self.units))
