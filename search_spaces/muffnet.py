"""MuffNet-style search space: ShuffleNetV2 units with multi-layer feature federation (registered as ``muffnet``).

The skeleton is ShuffleNetV2's (Ma et al., 2018) at 224x224: a 3x3 stride-2 stem to 24 channels (BN, ReLU) and a
3x3 stride-2 max pool; three stages of units, each stage opened by ShuffleNetV2's down-sampling unit (stride 2);
a 1x1 conv to 1024 channels (BN, ReLU), global average pool and a linear classifier.

Units (torchvision's ShuffleNetV2 ``InvertedResidual``, with the searchable kernel ``k`` and groups ``g``):

- basic unit (stride 1, C -> C): channel split into halves x1, x2; ``concat(x1, branch(x2))``, then a channel
  shuffle with 2 groups. ``branch`` is 1x1 conv (groups g), BN, ReLU, channel shuffle (g groups, when g > 1),
  kxk depthwise conv, BN, 1x1 conv (groups g), BN, ReLU.
- down-sampling unit (stride 2, C_in -> C): ``concat(branch1(x), branch2(x))`` then the 2-group shuffle; branch1
  is kxk depthwise stride 2, BN, 1x1 conv C_in -> C/2, BN, ReLU; branch2 is the basic unit's branch reading C_in
  with a strided depthwise conv. The 1x1 convs that read C_in use ``gcd(g, C_in)`` groups (C_in is the previous
  stage's width, which need not divide by this stage's g).

Multi-layer feature federation (the idea of MuffNet, Chen et al., 2019): a unit's input joins the outputs of the
stage's last `span` units instead of only the previous one, so the topology between units is sparse and each
unit's compute stays dense. The join is an elementwise sum (the outputs of a stage's units share one shape): unit
i of a stage reads ``y_{i-1} + ... + y_{i-span}`` (the units that exist), and the stage's output, which the next
stage and a detector read, is the same sum after its last unit. A sum costs no parameters and no multiplies and
exports as plain ONNX ``Add`` nodes (no concatenation, so no widths grow with the span). Span 1 is ShuffleNetV2;
a span above the stage's depth sums all its units (the same network as span = depth).

Searchable per stage: depth, width, kernel {3, 5, 7}, groups of the 1x1 convs, federation span. Width w names
ShuffleNetV2's multipliers: 0.5, 1.0, 1.5 and 2.0 give its published stage channels (``SHUFFLENET_V2_CHANNELS``),
other values interpolate linearly between them (below 0.5x and above 2.0x they scale the nearest), rounded to an
even count and then up to a multiple of 2g so both halves split into g groups (as ShuffleNetV1 sizes its stages
by group count), and up to a multiple of ``channel_multiple`` (default 2; 8 for hardware-friendly branches). So
``shufflenet_v2(0.5)`` and ``shufflenet_v2(1.0)`` are points of the default space: 40.5M and 144.9M
multiply-accumulates at 224x224 (published: 41M and 146M), torchvision's networks to the MAC and parameter.
Options ``preset: 40m | 150m`` narrow the choices around the matching ShuffleNetV2 point so the space is centred on
that budget; explicit choice lists override the preset's.

Cost keys (`layer_costs`), family ``muffnet``: ``stem`` (3x3 stride-2 conv + BN + ReLU); ``maxpool`` (kernel 3,
stride 2, 0 MACs); ``shuffle`` for a unit (kernel k, groups g; stride 2 = the down-sampling unit); ``add`` for
each two-operand sum of a federation join (act ``none``, 0 MACs; a join of n maps is n - 1 adds, following the
unit it closes); ``head`` (1x1 conv + BN + ReLU + pool, output 1024x1x1); ``classifier``. `feature_layer_costs`
is the prefix up to the last stage's output, so a detector is costed as backbone keys plus its head's keys.

Canonical string: one ``d<depth>_w<width>_k<kernel>_g<groups>_f<span>`` per stage, joined by ``|``, e.g.
ShuffleNetV2 1.0x: ``d4_w1_k3_g1_f1|d8_w1_k3_g1_f1|d4_w1_k3_g1_f1``.
"""
from __future__ import annotations

import functools
import itertools
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
from torch import nn

from search_spaces.base import SearchSpace, SpaceOptions, register_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import AddStored, ShuffleUnit, conv_bn, conv_out

FAMILY = "muffnet"
IN_CHANNELS = 3
STEM_CHANNELS = 24
HEAD_CHANNELS = 1024
NUM_STAGES = 3
STAGE_STRIDES = (8, 16, 32)   # of each stage's output, relative to the input
SHUFFLENET_V2_DEPTHS = (4, 8, 4)
SHUFFLENET_V2_CHANNELS = {0.5: (48, 96, 192), 1.0: (116, 232, 464), 1.5: (176, 352, 704), 2.0: (244, 488, 976)}
SHUFFLENET_V2_POINTS = (0.5, 1.0, 1.5)   # widths whose whole network (head conv 1024) is ShuffleNetV2's
FIELDS = ("depth", "width", "kernel", "groups", "span")   # one stage's decisions, in genotype and decision order

# Choice ranges with no preset, and per budget preset. A preset holds the ShuffleNetV2 point of its budget (0.5x:
# 40.5M, 1.0x: 144.9M MACs at 224x224), which is the cheapest kernel but the densest 1x1 convs of its range, so the
# widths sit at and above it: sampled archs' median is then within a few percent of the budget (measured).
_RANGES = {"kernels": [3, 5, 7], "groups": [1, 2, 4], "spans": [1, 2, 3]}
PRESETS: dict[str | None, dict[str, list]] = {
    None: {"depths": [[2, 3, 4, 5, 6], [4, 6, 8, 10], [2, 3, 4, 5, 6]], "widths": [0.5, 0.75, 1.0, 1.25, 1.5],
           **_RANGES},
    "40m": {"depths": [[3, 4, 5], [6, 8, 10], [3, 4, 5]], "widths": [0.45, 0.5, 0.55, 0.6], **_RANGES},
    "150m": {"depths": [[3, 4, 5], [6, 8, 10], [3, 4, 5]], "widths": [1.0, 1.25, 1.5], **_RANGES},
}


def stage_channels(stage: int, width: float, groups: int = 1, multiple: int = 2) -> int:
    """Output channels of `stage` (0-based) at width multiplier `width` with 1x1 convs of `groups` groups, rounded
    up to a multiple of `multiple` as well (2: ShuffleNetV2's own counts; see `MuffNetOptions.channel_multiple`)."""
    anchors = sorted(SHUFFLENET_V2_CHANNELS)
    top = anchors[-1]
    if width > top:
        base = SHUFFLENET_V2_CHANNELS[top][stage] * width / top
    else:
        base = float(np.interp(width, [0.0, *anchors], [0, *(SHUFFLENET_V2_CHANNELS[w][stage] for w in anchors)]))
    even = max(2, 2 * int(base / 2 + 0.5))
    step = math.lcm(2 * groups, multiple)
    return -(-even // step) * step


# ---- genotype ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageArch:
    """One stage's choices."""

    depth: int
    width: float
    kernel: int
    groups: int
    span: int

    def __str__(self) -> str:
        width = int(self.width) if self.width.is_integer() else self.width   # "w1", "w0.5": shortest exact form
        return f"d{self.depth}_w{width}_k{self.kernel}_g{self.groups}_f{self.span}"


@dataclass(frozen=True)
class MuffNetArch:
    """Genotype of the ``muffnet`` space: the choices of its three stages."""

    stages: tuple[StageArch, ...]

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.stages)


def shufflenet_v2(width: float) -> MuffNetArch:
    """ShuffleNetV2 at `width` (0.5, 1.0 or 1.5) as a genotype: depths 4/8/4, 3x3 kernels, dense 1x1 convs, span
    1 (its MACs and parameters are torchvision's `shufflenet_v2_x*`'s). Widths 0.5 and 1.0 are points of the
    default space and of the 40m / 150m presets respectively. (2.0x is not: it widens the head conv to 2048.)"""
    if width not in SHUFFLENET_V2_POINTS:
        raise ValueError(f"ShuffleNetV2 width {width:g} is not one this space reproduces: {list(SHUFFLENET_V2_POINTS)}")
    return MuffNetArch(tuple(StageArch(d, float(width), 3, 1, 1) for d in SHUFFLENET_V2_DEPTHS))


_STAGE_RE = re.compile(r"^d(\d+)_w([0-9.e+-]+)_k(\d+)_g(\d+)_f(\d+)$")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# ---- options -----------------------------------------------------------------------------------------------------
def _choice_list(v: list | None) -> list | None:
    if v is None:
        return v
    if not v:
        raise ValueError("needs at least one choice")
    if len(set(v)) != len(v):
        raise ValueError("choices must be unique")
    return sorted(v)


class MuffNetOptions(SpaceOptions):
    """Options of the ``muffnet`` space. Choice lists left unset come from the preset (or the defaults,
    `PRESETS[None]`); a list that is set overrides the preset's."""

    resolution: PositiveInt = 224
    preset: Literal["40m", "150m"] | None = None
    depths: list[list[PositiveInt]] | None = None   # one list per stage
    widths: list[PositiveFloat] | None = None
    kernels: list[Literal[3, 5, 7]] | None = None
    groups: list[PositiveInt] | None = None
    spans: list[PositiveInt] | None = None
    channel_multiple: Literal[2, 4, 8, 16] = Field(
        2, description="round every stage's channels up to a multiple of this; 2 keeps ShuffleNetV2's counts "
        "(116, 232, 464 at 1.0x), whose branches (half) are often not a multiple of 4, and vectorised depthwise "
        "kernels are then several times slower (onnxruntime CPU: 7-16x per MAC); 8 makes every branch a multiple "
        "of 4")

    @field_validator("widths", "kernels", "groups", "spans")
    @classmethod
    def _unique_sorted(cls, v: list | None) -> list | None:
        return _choice_list(v)

    @field_validator("depths")
    @classmethod
    def _per_stage(cls, v: list[list[int]] | None) -> list[list[int]] | None:
        if v is not None and len(v) != NUM_STAGES:
            raise ValueError(f"needs one list of depth choices per stage ({NUM_STAGES}), got {len(v)}")
        return None if v is None else [_choice_list(d) for d in v]

    def stage_choices(self) -> tuple[tuple[tuple, ...], ...]:
        """Per stage, the choice tuple of each of `FIELDS`."""
        base = PRESETS[self.preset]
        pick = {f: tuple(getattr(self, f) if getattr(self, f) is not None else base[f])
                for f in ("depths", "widths", "kernels", "groups", "spans")}
        return tuple((tuple(pick["depths"][s]), tuple(float(w) for w in pick["widths"]), pick["kernels"],
                      pick["groups"], pick["spans"]) for s in range(NUM_STAGES))


# ---- per-layer cost (pure and cached: keys repeat across the archs a predictor walks) ----------------------------
def _key(op: str, cin: int, hw: int, cout: int, ho: int, kernel: int = 1, stride: int = 1, act: str = "relu",
         groups: int = 1) -> CostKey:
    return CostKey(op, (cin, hw, hw), (cout, ho, ho), kernel, stride, act=act, family=FAMILY, groups=groups)


@functools.cache
def _stem_cost(res: int) -> LayerCost:
    conv = ConvSpec(IN_CHANNELS, STEM_CHANNELS, 3, 2, res, conv_out(res, 3, 2))
    return LayerCost.of(_key("stem", IN_CHANNELS, res, STEM_CHANNELS, conv.hw_out, 3, 2), [conv], 2 * STEM_CHANNELS)


@functools.cache
def _maxpool_cost(chs: int, hw: int) -> LayerCost:
    return LayerCost.of(_key("maxpool", chs, hw, chs, conv_out(hw, 3, 2), 3, 2, act="none"), [])


@functools.cache
def _unit_cost(cin: int, cout: int, hw: int, kernel: int, groups: int, stride: int) -> LayerCost:
    """A ShuffleNetV2 unit: the down-sampling one when `stride` is 2, else the basic one (cin == cout)."""
    half, ho = cout // 2, conv_out(hw, kernel, stride)
    tail = [ConvSpec(half, half, kernel, stride, hw, ho, groups=half),
            ConvSpec(half, half, 1, 1, ho, ho, groups=groups)]
    if stride == 1:
        convs, bn = [ConvSpec(half, half, 1, 1, hw, hw, groups=groups), *tail], 2 * 3 * half
    else:
        g_in = math.gcd(groups, cin)
        convs = [ConvSpec(cin, cin, kernel, stride, hw, ho, groups=cin), ConvSpec(cin, half, 1, 1, ho, ho, groups=g_in),
                 ConvSpec(cin, half, 1, 1, hw, hw, groups=g_in), *tail]
        bn = 2 * (cin + half) + 2 * 3 * half
    return LayerCost.of(_key("shuffle", cin, hw, cout, ho, kernel, stride, groups=groups), convs, bn)


@functools.cache
def _add_cost(chs: int, hw: int) -> LayerCost:
    return LayerCost.of(_key("add", chs, hw, chs, hw, act="none"), [])


@functools.cache
def _head_cost(chs: int, hw: int) -> LayerCost:
    conv = ConvSpec(chs, HEAD_CHANNELS, 1, 1, hw, hw)
    return LayerCost.of(_key("head", chs, hw, HEAD_CHANNELS, 1), [conv], 2 * HEAD_CHANNELS)


@functools.cache
def _classifier_cost(chs: int, num_classes: int) -> LayerCost:
    fc = ConvSpec(chs, num_classes, 1, 1, 1, 1, bias=True)
    return LayerCost.of(_key("classifier", chs, 1, num_classes, 1, act="none"), [fc])


@dataclass(frozen=True)
class StagePlan:
    """One stage as built: input and output channels, input map size, and its choices."""

    cin: int
    cout: int
    hw: int
    depth: int
    kernel: int
    groups: int
    span: int

    def layers(self) -> list[LayerCost]:
        """The stage's units, each followed by the adds of the federation join after it."""
        out, hw = [], self.hw
        for i in range(self.depth):
            unit = _unit_cost(self.cout if i else self.cin, self.cout, hw, self.kernel, self.groups, 1 if i else 2)
            hw = unit.key.out_shape[1]
            out += [unit] + [_add_cost(self.cout, hw)] * (min(i + 1, self.span) - 1)
        return out


# ---- the space ---------------------------------------------------------------------------------------------------
@register_space("muffnet")
class MuffNetSpace(SearchSpace):
    """ShuffleNetV2 units with per-stage depth, width, kernel, groups and feature-federation span."""

    Options = MuffNetOptions
    name = "muffnet"
    options: MuffNetOptions

    def __init__(self, options: MuffNetOptions | None = None, num_classes: int = 1000):
        super().__init__(options, num_classes)
        self.choices = self.options.stage_choices()

    # ---- decision view: per stage depth, width, kernel, groups, span ------------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for stage in self.choices for c in stage)

    def to_decisions(self, arch: MuffNetArch) -> tuple[int, ...]:
        return tuple(c.index(getattr(st, f)) for st, stage in zip(arch.stages, self.choices)
                     for f, c in zip(FIELDS, stage))

    def from_decisions(self, decisions: Sequence[int]) -> MuffNetArch:
        it = iter(int(d) for d in decisions)
        return MuffNetArch(tuple(StageArch(*(c[next(it)] for c in stage)) for stage in self.choices))

    # ---- strings and features ---------------------------------------------------------------------------------
    def to_string(self, arch: MuffNetArch) -> str:
        return str(arch)

    def decode(self, string: str) -> MuffNetArch:
        parts = string.strip().split("|")
        if len(parts) != NUM_STAGES:
            raise ValueError(f"arch {string!r}: has {len(parts)} stages, the muffnet space has {NUM_STAGES}")
        stages = []
        for s, (token, choices) in enumerate(zip(parts, self.choices)):
            m = _STAGE_RE.match(token)
            if m is None or _float(m[2]) is None:
                raise ValueError(f"arch {string!r}: stage {s} {token!r} is not "
                                 "'d<depth>_w<width>_k<kernel>_g<groups>_f<span>'")
            values = (int(m[1]), _float(m[2]), int(m[3]), int(m[4]), int(m[5]))
            for field, value, allowed in zip(FIELDS, values, choices):
                if value not in allowed:
                    raise ValueError(f"arch {string!r}: stage {s} {field} {value:g} is not in the space's choices "
                                     f"{list(allowed)}")
            stages.append(StageArch(*values))
        return MuffNetArch(tuple(stages))

    def encode(self, archs: Sequence[MuffNetArch]) -> np.ndarray:
        """Per stage [depth, width, kernel, groups, span, channels]: 18 float32 columns."""
        rows = [[v for s, st in enumerate(a.stages)
                 for v in (st.depth, st.width, st.kernel, st.groups, st.span,
                           stage_channels(s, st.width, st.groups, self.options.channel_multiple))] for a in archs]
        return np.asarray(rows, dtype=np.float32).reshape(len(archs), 6 * NUM_STAGES)

    # ---- cost -------------------------------------------------------------------------------------------------
    def plan(self, arch: MuffNetArch) -> list[StagePlan]:
        """The stages of `arch` as built (channels and map sizes at the space's resolution)."""
        hw = _maxpool_cost(STEM_CHANNELS, _stem_cost(self.options.resolution).key.out_shape[1]).key.out_shape[1]
        out, cin = [], STEM_CHANNELS
        for s, st in enumerate(arch.stages):
            cout = stage_channels(s, st.width, st.groups, self.options.channel_multiple)
            out.append(StagePlan(cin, cout, hw, st.depth, st.kernel, st.groups, st.span))
            cin, hw = cout, conv_out(hw, st.kernel, 2)
        return out

    def feature_layer_costs(self, arch: MuffNetArch) -> list[LayerCost]:
        """Layers of the backbone `build_features` makes: stem, max pool, the stages up to the last one's output."""
        stem = _stem_cost(self.options.resolution)
        out = [stem, _maxpool_cost(STEM_CHANNELS, stem.key.out_shape[1])]
        for stage in self.plan(arch):
            out += stage.layers()
        return out

    def layer_costs(self, arch: MuffNetArch) -> list[LayerCost]:
        """`feature_layer_costs`, then the head (1x1 conv to 1024 + pool) and the classifier."""
        out = self.feature_layer_costs(arch)
        chs, hw = out[-1].key.out_shape[:2]
        return out + [_head_cost(chs, hw), _classifier_cost(HEAD_CHANNELS, self.num_classes)]

    def held_values(self, arch: MuffNetArch, engine: str, layers: Sequence[LayerCost]) -> list[int]:
        """In eager mode, what `MuffNetBackbone.forward` keeps beside each layer: the stage's input (the caller's
        ``x``), every earlier stage's output (the ``feats`` list) and, inside a stage, every earlier unit's output
        (``outs``), the sum being made and the one it replaces; a fused engine, nothing (see
        `SearchSpace.held_values`)."""
        if engine != "eager":
            return super().held_values(arch, engine, layers)
        held, feats = [0, 0], 0   # stem; max pool, whose input is the stem's output
        stage_in = int(np.prod(self.feature_layer_costs(arch)[1].key.out_shape))
        for s, plan in enumerate(self.plan(arch)):
            ho = conv_out(plan.hw, plan.kernel, 2)
            unit = plan.cout * ho * ho
            for i in range(plan.depth):
                alias = i > 0 and min(i, plan.span) == 1   # the unit reads the last output itself, not a sum
                held.append(feats + (stage_in if i else 0) + i * unit - (unit if alias else 0))
                for j in range(1, min(i + 1, plan.span)):   # the join's adds: outputs, old input, running sum
                    held.append(feats + stage_in + (i + 1) * unit + (unit if i and not alias else 0)
                                + (unit if j > 1 else 0) - unit)
            feats, stage_in = feats + (stage_in if s else 0), unit   # the max pool's output is in no list
        return held + [0, 0]   # head and classifier: the backbone's list of stage outputs is gone

    def runtime_graph(self, arch: MuffNetArch, graph, x, layers: Sequence[LayerCost]) -> bool:
        """The graph onnxruntime runs (see `SearchSpace.runtime_graph`): stem, max pool, each stage's units, a
        unit's two branches one after the other, each join's sums as the stage's forward makes them, head."""
        layers = iter(enumerate(layers))

        def take():
            graph.layer, lc = next(layers)
            return lc

        stem = take().convs[0]
        x = graph.convolve(x, stem)
        pool = take().key.out_shape
        x = graph.pool(x, pool[1:])
        for plan in self.plan(arch):
            outs = []
            for i in range(plan.depth):
                unit = take()
                convs = unit.convs
                if unit.key.stride == 1:
                    kept, x2 = graph.split(x, 2)
                else:
                    kept, x2 = graph.convolve(graph.convolve(x, convs[0], act=False), convs[1]), x
                    convs = convs[2:]
                y = graph.convolve(x2, convs[0])
                if convs[0].groups > 1:
                    y = graph.shuffle(y, convs[0].groups)
                y = graph.convolve(graph.convolve(y, convs[1], act=False), convs[2])
                outs.append(graph.shuffle(graph.concat([kept, y]), 2))
                joined = outs[-min(plan.span, len(outs)):]
                x = joined[0]
                for y in joined[1:]:
                    take()
                    x = graph.add(x, y)
        head = take()
        x = graph.pool(graph.convolve(x, head.convs[0]), (1, 1), "GlobalAveragePool")
        take()
        graph.classify(x, self.num_classes)
        return True

    def feature_info(self, arch: MuffNetArch) -> list[tuple[int, int]]:
        """(channels, stride) of each stage output `build_features(arch)` returns: strides 8, 16, 32."""
        return [(p.cout, stride) for p, stride in zip(self.plan(arch), STAGE_STRIDES)]

    def smallest(self) -> MuffNetArch:
        return self._smallest

    @functools.cached_property
    def _smallest(self) -> MuffNetArch:
        """Fewest (MACs, params): the shallowest depth, smallest kernel and span (MACs and params grow with
        them; a join has neither), searched over widths and groups, whose rounding makes cost non-monotone."""
        best, best_cost = None, None
        per_stage = [[StageArch(c[0][0], w, c[2][0], g, c[4][0]) for w in c[1] for g in c[3]] for c in self.choices]
        for stages in itertools.product(*per_stage):
            arch = MuffNetArch(stages)
            cost = (self.flops(arch), self.params(arch))
            if best_cost is None or cost < best_cost:
                best, best_cost = arch, cost
        return best

    def enumerate_layers(self, max_samples: int = 0, patience: int = 0) -> tuple[list[LayerCost], bool]:
        """Exact: a layer depends only on its stage's (width, groups, kernel), the previous stage's (width,
        groups) for a down-sampling unit, and the resolution; every combination is listed."""
        stem = _stem_cost(self.options.resolution)
        layers = [stem, _maxpool_cost(STEM_CHANNELS, stem.key.out_shape[1])]
        hw, prev = layers[-1].key.out_shape[1], [STEM_CHANNELS]
        for s, (depths, widths, kernels, groups, spans) in enumerate(self.choices):
            pairs = sorted({(stage_channels(s, w, g, self.options.channel_multiple), g) for w in widths
                            for g in groups})
            ho = conv_out(hw, 3, 2)   # every odd kernel halves (rounding up) with stride 2
            for (cout, g), k in itertools.product(pairs, kernels):
                layers += [_unit_cost(cin, cout, hw, k, g, 2) for cin in prev]
                layers += [_unit_cost(cout, cout, ho, k, g, 1)] * (max(depths) > 1)
            prev, hw = sorted({c for c, _ in pairs}), ho
            layers += [_add_cost(c, hw) for c in prev] * (max(depths) > 1 and max(spans) > 1)
        layers += [_head_cost(c, hw) for c in prev] + [_classifier_cost(HEAD_CHANNELS, self.num_classes)]
        unique = {str(lc.key): lc for lc in layers}
        return list(unique.values()), True

    # ---- compression units (search_spaces.policy) -------------------------------------------------------------
    def compression_units(self) -> tuple[str, ...]:
        """The stem with its max pool, each stage (its units and federation joins) and the head with the
        classifier."""
        return ("stem", *(f"s{s}" for s in range(NUM_STAGES)), "head")

    def unit_of_layers(self, arch: MuffNetArch) -> list[int]:
        """In `layer_costs` order: stem and max pool, each stage's units and adds, then head and classifier."""
        stages = [1 + s for s, stage in enumerate(self.plan(arch)) for _ in stage.layers()]
        return [0, 0, *stages, NUM_STAGES + 1, NUM_STAGES + 1]

    def unit_modules(self, arch: MuffNetArch) -> list[tuple[str, ...]]:
        """Module names of `MuffNet`."""
        return [("backbone.stem", "backbone.maxpool"), *((f"backbone.stages.{s}",) for s in range(NUM_STAGES)),
                ("head", "classifier")]

    # ---- build ------------------------------------------------------------------------------------------------
    def build(self, arch: MuffNetArch) -> MuffNet:
        return MuffNet(self.build_features(arch), self.num_classes)

    def build_features(self, arch: MuffNetArch) -> MuffNetBackbone:
        """The backbone alone (no head conv, no classifier); its forward returns the three stage outputs."""
        return MuffNetBackbone(self.plan(arch))

    def build_layer(self, key: CostKey) -> nn.Module:
        """One layer alone, from its cost key (input (1, *key.in_shape))."""
        cin, cout = key.in_shape[0], key.out_shape[0]
        if key.op == "stem":
            return nn.Sequential(*conv_bn(cin, cout, key.kernel, key.stride))
        if key.op == "maxpool":
            return nn.MaxPool2d(key.kernel, key.stride, key.kernel // 2)
        if key.op == "shuffle":
            return ShuffleUnit(cin, cout, key.kernel, key.groups, key.stride)
        if key.op == "add":
            return AddStored(key.in_shape)
        if key.op == "head":
            return nn.Sequential(*conv_bn(cin, cout, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        if key.op == "classifier":
            return nn.Sequential(nn.Flatten(1), nn.Linear(cin, cout))
        raise ValueError(f"cannot build a layer for cost key op {key.op!r}")

    def input_shape(self, arch: MuffNetArch) -> tuple[int, int, int, int]:
        res = self.options.resolution
        return (1, IN_CHANNELS, res, res)


# ---- modules (plain torch) ---------------------------------------------------------------------------------------
class FederatedStage(nn.Module):
    """A stage's units; each reads (and the stage returns) the sum of the last `span` unit outputs."""

    def __init__(self, plan: StagePlan):
        super().__init__()
        self.span = plan.span
        self.units = nn.ModuleList(ShuffleUnit(plan.cout if i else plan.cin, plan.cout, plan.kernel, plan.groups,
                                               1 if i else 2) for i in range(plan.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for unit in self.units:
            outs.append(unit(x))
            x = functools.reduce(operator.add, outs[-self.span:])
        return x


class MuffNetBackbone(nn.Module):
    """Stem, max pool and the federated stages; forward returns the three stage outputs (strides 8, 16, 32).

    Args:
        plan: the stages, as `MuffNetSpace.plan` gives them.
    """

    def __init__(self, plan: Sequence[StagePlan]):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(IN_CHANNELS, STEM_CHANNELS, 3, 2))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList(FederatedStage(p) for p in plan)
        self.out_channels = [p.cout for p in plan]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.stem(x))
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class MuffNet(nn.Module):
    """The classification network: backbone, 1x1 conv to 1024 (BN, ReLU), global average pool, linear.

    Args:
        backbone: the feature network (`MuffNetSpace.build_features`).
        num_classes: classifier outputs.
    """

    def __init__(self, backbone: MuffNetBackbone, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(*conv_bn(backbone.out_channels[-1], HEAD_CHANNELS, 1), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(1))
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.backbone(x)[-1]))
