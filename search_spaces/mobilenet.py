"""MobileNet-style search space (registered as ``mobilenet``).

Stages of inverted-residual blocks with a searchable kernel {3, 5, 7}, expansion {3, 4, 6} and squeeze-excite per
layer, a searchable depth per stage, a width multiplier and an input resolution. Fixed around them, as in
MobileNetV3: a 3x3 stride-2 stem, one depthwise-separable block, and a 1x1 conv + pooled 1x1 head.

Canonical string: ``r<resolution>_w<width>|<stage>|<stage>...``, each stage a comma-separated list of layers
``k<kernel>e<expansion>`` with a trailing ``s`` when the layer has squeeze-excite, e.g.
``r224_w1|k3e4,k5e6s|k3e3,k3e3,k7e6s|...``. It lowers to timm block strings (`to_network`) and is built by timm's
builder; FLOPs and params come from those strings without building the model.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Literal
from collections.abc import Sequence

import numpy as np
from pydantic import Field, PositiveInt, field_validator
from timm.layers import make_divisible

from search_spaces.base import SearchSpace, SpaceOptions, register_space
from search_spaces.blocks import NetworkDef, build_layer, build_network, layer_costs, pruned_ir_cost
from search_spaces.costs import LayerCost


class StageOptions(SpaceOptions):
    """One searchable stage: output channels, first-layer stride, depth choices."""

    channels: PositiveInt
    stride: Literal[1, 2] = 1
    depths: list[PositiveInt] = Field(default_factory=lambda: [2, 3, 4], min_length=1)


def _default_stages() -> list[StageOptions]:
    return [StageOptions(channels=c, stride=s) for c, s in ((24, 2), (40, 2), (80, 2), (112, 1), (160, 2))]


class MobileNetOptions(SpaceOptions):
    """Options of the ``mobilenet`` space (the defaults are MobileNetV3-Large's skeleton at 224x224)."""

    stages: list[StageOptions] = Field(default_factory=_default_stages, min_length=1)
    kernels: list[Literal[3, 5, 7]] = Field(default_factory=lambda: [3, 5, 7], min_length=1)
    expansions: list[float] = Field(default_factory=lambda: [3.0, 4.0, 6.0], min_length=1)
    se: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    widths: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    resolutions: list[PositiveInt] = Field(default_factory=lambda: [224], min_length=1)
    se_ratio: float = Field(0.25, gt=0, le=1)
    stem_size: PositiveInt = 16
    first_channels: PositiveInt = 16
    last_channels: int = Field(960, ge=0, description="1x1 conv before pooling; 0 = none")
    num_features: PositiveInt = 1280
    act: Literal["relu", "relu6", "hard_swish", "swish"] = "hard_swish"

    @field_validator("kernels", "expansions", "se", "widths", "resolutions")
    @classmethod
    def _unique_sorted(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("choices must be unique")
        if any(isinstance(x, float) and x <= 0 for x in v):
            raise ValueError("choices must be positive")
        return sorted(v)


@dataclass(frozen=True)
class Layer:
    """One searchable inverted-residual layer."""

    kernel: int
    expansion: float
    se: bool

    def __str__(self) -> str:
        return f"k{self.kernel}e{self.expansion:g}{'s' if self.se else ''}"


@dataclass(frozen=True)
class MobileNetArch:
    """Genotype of the ``mobilenet`` space: resolution, width and per-stage layers."""

    resolution: int
    width: float
    stages: tuple[tuple[Layer, ...], ...]

    def __str__(self) -> str:
        stages = "|".join(",".join(str(layer) for layer in stage) for stage in self.stages)
        return f"r{self.resolution}_w{self.width:g}|{stages}"


_LAYER_RE = re.compile(r"^k(\d+)e(\d+(?:\.\d+)?)(s?)$")
_HEAD_RE = re.compile(r"^r(\d+)_w(\d+(?:\.\d+)?)$")


@register_space("mobilenet")
class MobileNetSpace(SearchSpace):
    """MobileNetV2/V3-style inverted-residual space built with timm."""

    Options = MobileNetOptions
    name = "mobilenet"
    options: MobileNetOptions

    # ---- sampling and variation -------------------------------------------------------------------------------
    def _layer(self, rng: np.random.Generator) -> Layer:
        o = self.options
        return Layer(int(rng.choice(o.kernels)), float(rng.choice(o.expansions)), bool(rng.choice(o.se)))

    def sample(self, rng: np.random.Generator) -> MobileNetArch:
        o = self.options
        stages = tuple(tuple(self._layer(rng) for _ in range(int(rng.choice(s.depths)))) for s in o.stages)
        return MobileNetArch(int(rng.choice(o.resolutions)), float(rng.choice(o.widths)), stages)

    def _decisions(self, arch: MobileNetArch) -> list[tuple[str, int, int]]:
        """Every decision of `arch` that has more than one choice: (kind, stage, layer)."""
        o = self.options
        out = [("resolution", -1, -1)] * (len(o.resolutions) > 1) + [("width", -1, -1)] * (len(o.widths) > 1)
        for s, (stage, so) in enumerate(zip(arch.stages, o.stages)):
            out += [("depth", s, -1)] * (len(so.depths) > 1)
            for i in range(len(stage)):
                out += [(kind, s, i) for kind, n in (("kernel", len(o.kernels)), ("expansion", len(o.expansions)),
                                                      ("se", len(o.se))) if n > 1]
        return out

    def mutate(self, arch: MobileNetArch, rng: np.random.Generator) -> MobileNetArch:
        decisions = self._decisions(arch)
        if not decisions:
            return arch
        kind, s, i = decisions[int(rng.integers(len(decisions)))]
        o = self.options
        pick = lambda choices, old: rng.choice([c for c in choices if c != old])  # noqa: E731
        if kind == "resolution":
            return replace(arch, resolution=int(pick(o.resolutions, arch.resolution)))
        if kind == "width":
            return replace(arch, width=float(pick(o.widths, arch.width)))
        stages = list(arch.stages)
        if kind == "depth":
            depth = int(pick(o.stages[s].depths, len(stages[s])))
            stages[s] = stages[s][:depth] + tuple(self._layer(rng) for _ in range(depth - len(stages[s])))
        else:
            layer = stages[s][i]
            choices, cast = {"kernel": (o.kernels, int), "expansion": (o.expansions, float), "se": (o.se, bool)}[kind]
            new = cast(pick(choices, getattr(layer, kind)))
            stages[s] = stages[s][:i] + (replace(layer, **{kind: new}),) + stages[s][i + 1:]
        return replace(arch, stages=tuple(stages))

    def crossover(self, a: MobileNetArch, b: MobileNetArch, rng: np.random.Generator) -> MobileNetArch:
        take = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
        stages = tuple(take(sa, sb) for sa, sb in zip(a.stages, b.stages))
        return MobileNetArch(take(a.resolution, b.resolution), take(a.width, b.width), stages)

    # ---- decision view: resolution, width, then per stage its depth and per layer slot kernel/expansion/SE -----
    def decision_sizes(self) -> tuple[int, ...]:
        o = self.options
        sizes = [len(o.resolutions), len(o.widths)]
        for so in o.stages:
            sizes += [len(so.depths)] + [len(o.kernels), len(o.expansions), len(o.se)] * max(so.depths)
        return tuple(sizes)

    def to_decisions(self, arch: MobileNetArch) -> tuple[int | None, ...]:
        o = self.options
        out: list[int | None] = [o.resolutions.index(arch.resolution), o.widths.index(arch.width)]
        for stage, so in zip(arch.stages, o.stages):
            out.append(so.depths.index(len(stage)))
            for i in range(max(so.depths)):
                layer = stage[i] if i < len(stage) else None
                out += ([None] * 3 if layer is None else
                        [o.kernels.index(layer.kernel), o.expansions.index(layer.expansion), o.se.index(layer.se)])
        return tuple(out)

    def from_decisions(self, decisions: Sequence[int]) -> MobileNetArch:
        o = self.options
        it = iter(int(d) for d in decisions)
        res, width = o.resolutions[next(it)], o.widths[next(it)]
        stages = []
        for so in o.stages:
            depth = so.depths[next(it)]
            slots = [Layer(o.kernels[next(it)], o.expansions[next(it)], o.se[next(it)])
                     for _ in range(max(so.depths))]
            stages.append(tuple(slots[:depth]))
        return MobileNetArch(res, width, tuple(stages))

    # ---- compression units: the stem (with the first depthwise-separable block), each stage, the head --------
    def compression_units(self) -> tuple[str, ...]:
        return ("stem", *(f"s{i}" for i in range(len(self.options.stages))), "head")

    def unit_of_layers(self, arch: MobileNetArch) -> list[int]:
        """Stem and first block, then each stage's layers, then the last 1x1 conv, head and classifier (the
        order of `layer_costs`)."""
        tail = 1 + bool(self.options.last_channels) + 1
        stages = [1 + s for s, stage in enumerate(arch.stages) for _ in stage]
        return [0, 0, *stages, *[len(arch.stages) + 1] * tail]

    def unit_modules(self, arch: MobileNetArch) -> list[tuple[str, ...]]:
        """Module names of timm's EfficientNet as `build` makes it: ``blocks.0`` is the first block, ``blocks.<s+1>``
        stage s, ``blocks.<last>`` the last 1x1 conv (when the space has one)."""
        n = len(arch.stages)
        head = ((f"blocks.{n + 1}",) if self.options.last_channels else ()) + \
            ("global_pool", "conv_head", "norm_head", "act2", "flatten", "classifier")
        return [("conv_stem", "bn1", "blocks.0"), *((f"blocks.{s + 1}",) for s in range(n)), head]

    def pruned_cost(self, layer: LayerCost, keep: float) -> LayerCost | None:
        """An inverted residual keeps `kept_channels` of its expansion channels (`blocks.pruned_ir_cost`)."""
        return pruned_ir_cost(layer, keep)

    # ---- strings and features ---------------------------------------------------------------------------------
    def to_string(self, arch: MobileNetArch) -> str:
        return str(arch)

    def decode(self, string: str) -> MobileNetArch:
        o = self.options
        parts = string.strip().split("|")
        head = _HEAD_RE.match(parts[0])
        if head is None:
            raise ValueError(f"arch {string!r}: expected it to start with 'r<resolution>_w<width>|'")
        if len(parts) - 1 != len(o.stages):
            raise ValueError(f"arch {string!r}: has {len(parts) - 1} stages, the space has {len(o.stages)}")
        res, width = int(head.group(1)), float(head.group(2))
        _check(string, "resolution", res, o.resolutions)
        _check(string, "width", width, o.widths)
        stages = []
        for s, (text, so) in enumerate(zip(parts[1:], o.stages)):
            layers = []
            for token in text.split(","):
                m = _LAYER_RE.match(token)
                if m is None:
                    raise ValueError(f"arch {string!r}: layer {token!r} is not 'k<kernel>e<expansion>[s]'")
                layer = Layer(int(m.group(1)), float(m.group(2)), m.group(3) == "s")
                _check(string, "kernel", layer.kernel, o.kernels)
                _check(string, "expansion", layer.expansion, o.expansions)
                _check(string, "squeeze-excite", layer.se, o.se)
                layers.append(layer)
            _check(string, f"stage {s} depth", len(layers), so.depths)
            stages.append(tuple(layers))
        return MobileNetArch(res, width, tuple(stages))

    def encode(self, archs: Sequence[MobileNetArch]) -> np.ndarray:
        """Rows: [resolution, width, then per layer slot: present, kernel, expansion, se]."""
        slots = [max(s.depths) for s in self.options.stages]
        out = np.zeros((len(archs), 2 + 4 * sum(slots)), dtype=np.float32)
        for r, arch in enumerate(archs):
            out[r, :2] = arch.resolution, arch.width
            col = 2
            for stage, n in zip(arch.stages, slots):
                for i, layer in enumerate(stage):
                    out[r, col + 4 * i: col + 4 * i + 4] = 1, layer.kernel, layer.expansion, layer.se
                col += 4 * n
        return out

    # ---- lowering, cost and build -----------------------------------------------------------------------------
    def to_network(self, arch: MobileNetArch) -> NetworkDef:
        """The timm block-string description of `arch`."""
        o = self.options
        ch = lambda c: make_divisible(c * arch.width)  # noqa: E731
        se = f"_se{o.se_ratio:g}"
        arch_def = [[f"ds_r1_k3_s1_e1_c{ch(o.first_channels)}"]]
        for stage, so in zip(arch.stages, o.stages):
            arch_def.append([f"ir_r1_k{layer.kernel}_s{so.stride if i == 0 else 1}_e{layer.expansion:g}"
                             f"_c{ch(so.channels)}{se if layer.se else ''}" for i, layer in enumerate(stage)])
        if o.last_channels:
            arch_def.append([f"cn_r1_k1_s1_c{ch(o.last_channels)}"])
        return NetworkDef(arch_def=tuple(tuple(s) for s in arch_def), family="mobilenetv3",
                          stem_size=ch(o.stem_size), num_features=o.num_features, act=o.act,
                          resolution=arch.resolution, num_classes=self.num_classes)

    def layer_costs(self, arch: MobileNetArch) -> list[LayerCost]:
        return layer_costs(self.to_network(arch))

    def build(self, arch: MobileNetArch):
        return build_network(self.to_network(arch))

    def build_layer(self, key):
        return build_layer(key)

    def enumerate_layers(self, max_samples: int = 0, patience: int = 0) -> tuple[list[LayerCost], bool]:
        """Exact: a layer's key depends on its stage, whether it is the stage's first layer, its own choices, the
        width and the resolution, never on other layers; so max-depth networks with one (kernel, expansion, SE)
        choice everywhere, for every width and resolution, contain every key."""
        o = self.options
        layers: dict[str, LayerCost] = {}
        for res, width, k, e, se in itertools.product(o.resolutions, o.widths, o.kernels, o.expansions, o.se):
            stages = tuple((Layer(k, e, se),) * max(s.depths) for s in o.stages)
            for layer in self.layer_costs(MobileNetArch(res, width, stages)):
                layers.setdefault(str(layer.key), layer)
        return list(layers.values()), True

    def input_shape(self, arch: MobileNetArch) -> tuple[int, int, int, int]:
        return (1, 3, arch.resolution, arch.resolution)

    def smallest(self) -> MobileNetArch:
        o = self.options
        layer = Layer(min(o.kernels), min(o.expansions), False not in o.se)
        stages = tuple((layer,) * min(s.depths) for s in o.stages)
        return MobileNetArch(min(o.resolutions), min(o.widths), stages)


def _check(string: str, what: str, value, choices) -> None:
    if value not in choices:
        shown = value if isinstance(value, bool) else f"{value:g}"
        raise ValueError(f"arch {string!r}: {what} {shown} is not in the space's choices {list(choices)}")
