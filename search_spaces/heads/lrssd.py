"""LRSSD detection heads: light SSD heads with shared prediction layers and fused multi-scale features.

A head takes the backbone's last three feature maps (strides 8, 16, 32; `feature_info` of the backbone space)
and predicts, for every anchor, class logits (index 0 = background) and SSD box deltas. Its searchable decisions
(`HeadArch`):

- ``levels`` (3-6): prediction levels; the three backbone maps plus ``levels - 3`` extra down-sampling layers
  (depthwise 3x3 stride 2 + pointwise to ``width``) on top of the last one;
- ``fusion``: light refinement by top-down fusion of the levels, from the coarsest down: ``add`` (the nearest-
  upsampled coarser map added to the finer one, as FPN), ``concat`` (concatenated, then a 1x1 conv back to
  ``width``) or ``none``;
- ``shared``: one prediction layer applied on every level (its parameters counted once) or one per level;
- ``kernel`` (3 or 5) of the prediction layers' depthwise convolution and ``width`` (64, 96, 128) of the head;
- ``anchors`` per location (`search_spaces.heads.anchors.make_anchors`: 4 = aspect ratios {1, 1', 2, 1/2}; 6 adds 3, 1/3).

Every backbone level goes through a 1x1 "lateral" conv to ``width`` when the levels must agree in width (fusion or
a shared prediction layer); with neither, the prediction layers read the backbone's maps directly, which is the
SSDLite head (MobileNetV2 + SSDLite is the point ``l6_none_sep_k3_w..._a6`` on a MobileNetV2 backbone).

A prediction layer is one depthwise kxk conv + BN + ReLU feeding two 1x1 convs (with bias): the class logits and
the box deltas, so classification and regression share the depthwise part (the light choice; SSDLite has one
depthwise-separable conv for each). Outputs are flattened level by level, row-major over (y, x), then anchor,
the order `make_anchors` uses.

Cost keys (family ``lrssd``): ``lateral``, ``extra``, ``fuseadd`` (0 MACs), ``fusecat`` (its
input shape is the concatenation's) and ``predict`` (output channels = anchors x (classes + 1 + 4)). A shared
prediction layer yields one key per level (it runs on every level), with its parameters on the first only.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from core.registry import PluginOptions
from search_spaces.base import crossover_decisions, mutate_decisions
from search_spaces.costs import ConvSpec, CostKey, LayerCost

FAMILY = "lrssd"
BACKBONE_LEVELS = 3          # the backbone's maps at strides 8, 16, 32
FUSIONS = ("none", "add", "concat")


@dataclass(frozen=True)
class HeadArch:
    """One LRSSD head; ``str()`` is its canonical string, e.g. ``l5_add_shared_k3_w96_a6``."""

    levels: int
    fusion: str
    shared: bool
    kernel: int
    width: int
    anchors: int

    def __str__(self) -> str:
        return (f"l{self.levels}_{self.fusion}_{'shared' if self.shared else 'sep'}_k{self.kernel}_w{self.width}"
                f"_a{self.anchors}")

    @property
    def lateral(self) -> bool:
        """Whether the backbone levels are projected to ``width`` (needed by fusion and by a shared layer)."""
        return self.fusion != "none" or self.shared


_HEAD_RE = re.compile(r"^l(\d+)_(none|add|concat)_(shared|sep)_k(\d+)_w(\d+)_a(\d+)$")


class HeadOptions(PluginOptions):
    """The head's choices (each a non-empty list)."""

    levels: list[Literal[3, 4, 5, 6]] = Field(default_factory=lambda: [3, 4, 5, 6], min_length=1)
    fusions: list[Literal["none", "add", "concat"]] = Field(default_factory=lambda: list(FUSIONS), min_length=1)
    shared: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    kernels: list[Literal[3, 5]] = Field(default_factory=lambda: [3, 5], min_length=1)
    widths: list[int] = Field(default_factory=lambda: [64, 96, 128], min_length=1)
    anchors: list[Literal[2, 3, 4, 6]] = Field(default_factory=lambda: [4, 6], min_length=1)

    def choices(self) -> tuple[tuple, ...]:
        """The choice list of each `HeadArch` field, in field order."""
        return (tuple(self.levels), tuple(self.fusions), tuple(self.shared), tuple(self.kernels),
                tuple(self.widths), tuple(self.anchors))


class HeadChoices:
    """Sampling, mutation, crossover, encoding and parsing of heads within `HeadOptions`."""

    def __init__(self, options: HeadOptions):
        self.choices = options.choices()

    def sample(self, rng: np.random.Generator) -> HeadArch:
        return HeadArch(*(c[int(rng.integers(len(c)))] for c in self.choices))

    def to_decisions(self, head: HeadArch) -> tuple[int, ...]:
        return tuple(c.index(getattr(head, f.name)) for c, f in zip(self.choices, fields(HeadArch)))

    def from_decisions(self, decisions: Sequence[int]) -> HeadArch:
        return HeadArch(*(c[int(d)] for c, d in zip(self.choices, decisions)))

    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    def mutate(self, head: HeadArch, rng: np.random.Generator) -> HeadArch:
        """`head` with one decision that has alternatives changed (unchanged when none has)."""
        decisions = mutate_decisions(self.to_decisions(head), self.sizes(), rng)
        return head if decisions is None else self.from_decisions(decisions)

    def crossover(self, a: HeadArch, b: HeadArch, rng: np.random.Generator) -> HeadArch:
        return self.from_decisions(crossover_decisions(self.to_decisions(a), self.to_decisions(b), rng))

    def encode(self, head: HeadArch) -> list[float]:
        """levels, width, kernel, anchors as numbers; fusion one-hot; shared flag."""
        return [float(head.levels), head.width / 128, float(head.kernel), float(head.anchors),
                *(float(head.fusion == f) for f in FUSIONS), float(head.shared)]

    def decode(self, string: str) -> HeadArch:
        m = _HEAD_RE.match(string.strip())
        if not m:
            raise ValueError(f"head {string!r} is not of the form l<levels>_<none|add|concat>_<shared|sep>_k<kernel>"
                             "_w<width>_a<anchors>")
        head = HeadArch(int(m[1]), m[2], m[3] == "shared", int(m[4]), int(m[5]), int(m[6]))
        for c, f in zip(self.choices, fields(HeadArch)):
            if getattr(head, f.name) not in c:
                raise ValueError(f"head {string!r}: {f.name} {getattr(head, f.name)!r} is not among the space's "
                                 f"choices {list(c)}")
        return head


# ---- sizes and costs ------------------------------------------------------------------------------------------
def level_sizes(resolution: int, levels: int) -> list[int]:
    """Square map size of each prediction level: stride 8, 16, ... of a `resolution` input, every stride-2 layer
    (padding k // 2, odd k) rounding up."""
    hw, sizes = resolution, []
    for level in range(3 + levels - 1):
        hw = (hw + 1) // 2
        if level >= 2:
            sizes.append(hw)
    return sizes


def _dw_separable(key: CostKey, cin: int, cout: int, kernel: int, stride: int, hw: int, hw_out: int,
                  bias: bool) -> LayerCost:
    convs = [ConvSpec(cin, cin, kernel, stride, hw, hw_out, groups=cin),
             ConvSpec(cin, cout, 1, 1, hw_out, hw_out, bias=bias)]
    return LayerCost.of(key, convs, 2 * cin + (0 if bias else 2 * cout))


def head_layer_costs(head: HeadArch, feature_channels: Sequence[int], resolution: int,
                     num_classes: int) -> list[LayerCost]:
    """Cost keys, MACs and parameters of `head` on backbone maps of `feature_channels` (strides 8, 16, 32)."""
    sizes = level_sizes(resolution, head.levels)
    w, layers = head.width, []
    chans = list(feature_channels[-BACKBONE_LEVELS:])
    for level in range(BACKBONE_LEVELS, head.levels):   # extra down-sampling layers
        cin, hw = chans[-1], sizes[level - 1]
        key = CostKey("extra", (cin, hw, hw), (w, sizes[level], sizes[level]), 3, 2, family=FAMILY)
        layers.append(_dw_separable(key, cin, w, 3, 2, hw, sizes[level], bias=False))
        chans.append(w)
    if head.lateral:
        for level in range(BACKBONE_LEVELS):
            cin, hw = chans[level], sizes[level]
            key = CostKey("lateral", (cin, hw, hw), (w, hw, hw), family=FAMILY)
            layers.append(LayerCost.of(key, [ConvSpec(cin, w, 1, 1, hw, hw)], 2 * w))
            chans[level] = w
    if head.fusion != "none":
        for level in reversed(range(head.levels - 1)):
            hw = sizes[level]
            if head.fusion == "add":
                layers.append(LayerCost.of(CostKey("fuseadd", (w, hw, hw), (w, hw, hw), act="none",
                                                   family=FAMILY), []))
            else:
                key = CostKey("fusecat", (2 * w, hw, hw), (w, hw, hw), family=FAMILY)
                layers.append(LayerCost.of(key, [ConvSpec(2 * w, w, 1, 1, hw, hw)], 2 * w))
    outputs = head.anchors * (num_classes + 1 + 4)
    for level in range(head.levels):
        hw = sizes[level]
        key = CostKey("predict", (chans[level], hw, hw), (outputs, hw, hw), head.kernel, act="none", family=FAMILY)
        cost = _dw_separable(key, chans[level], outputs, head.kernel, 1, hw, hw, bias=True)
        if head.shared and level > 0:
            cost = LayerCost(key, cost.macs, 0, cost.convs)   # the same weights run again
        layers.append(cost)
    return layers


# ---- modules --------------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU()]


def extra_layer(cin: int, cout: int) -> nn.Module:
    """Depthwise 3x3 stride 2 + BN + ReLU, pointwise to `cout` + BN + ReLU."""
    return nn.Sequential(*_conv_bn_relu(cin, cin, 3, 2, groups=cin), *_conv_bn_relu(cin, cout))


class Predictor(nn.Module):
    """Depthwise kxk + BN + ReLU, then 1x1 convs to anchors x (classes + 1) logits and anchors x 4 deltas."""

    def __init__(self, cin: int, kernel: int, anchors: int, num_classes: int):
        super().__init__()
        self.dw = nn.Sequential(*_conv_bn_relu(cin, cin, kernel, groups=cin))
        self.cls = nn.Conv2d(cin, anchors * (num_classes + 1), 1)
        self.box = nn.Conv2d(cin, anchors * 4, 1)
        self.outputs = (num_classes + 1, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dw(x)
        n = x.shape[0]
        # (N, A*K, H, W) -> (N, H, W, A*K) -> (N, H*W*A, K): row-major over (y, x), then anchor
        return tuple(conv(x).permute(0, 2, 3, 1).reshape(n, -1, k) for conv, k in zip((self.cls, self.box),
                                                                                      self.outputs))


class FuseCat(nn.Module):
    """Concatenate the finer map with the upsampled coarser one, 1x1 conv back to the width."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn_relu(2 * width, width))

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([fine, coarse], 1))


class LRSSDHead(nn.Module):
    """The head of `head` on backbone maps of `feature_channels`; forward(list of maps) -> (logits, deltas)."""

    def __init__(self, head: HeadArch, feature_channels: Sequence[int], num_classes: int):
        super().__init__()
        self.head = head
        w, chans = head.width, list(feature_channels[-BACKBONE_LEVELS:])
        self.extras = nn.ModuleList()
        for _ in range(BACKBONE_LEVELS, head.levels):
            self.extras.append(extra_layer(chans[-1], w))
            chans.append(w)
        self.laterals = nn.ModuleList(nn.Sequential(*_conv_bn_relu(c, w)) for c in chans[:BACKBONE_LEVELS]) \
            if head.lateral else nn.ModuleList()
        if head.lateral:
            chans = [w] * head.levels
        self.fuse = nn.ModuleList(FuseCat(w) for _ in range(head.levels - 1)) if head.fusion == "concat" \
            else nn.ModuleList()
        n_pred = 1 if head.shared else head.levels
        self.predictors = nn.ModuleList(Predictor(chans[i], head.kernel, head.anchors, num_classes)
                                        for i in range(n_pred))

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        maps = list(features[-BACKBONE_LEVELS:])
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        for i, lateral in enumerate(self.laterals):
            maps[i] = lateral(maps[i])
        if self.head.fusion != "none":
            for i in reversed(range(len(maps) - 1)):
                up = F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
                maps[i] = maps[i] + up if self.head.fusion == "add" else self.fuse[i](maps[i], up)
        outs = [self.predictors[0 if self.head.shared else i](m) for i, m in enumerate(maps)]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)


def build_head_layer(key: CostKey) -> nn.Module:
    """One head layer alone from its cost key (input (1, *key.in_shape)), for timing it."""
    cin, cout = key.in_shape[0], key.out_shape[0]
    if key.op == "extra":
        return extra_layer(cin, cout)
    if key.op == "lateral":
        return nn.Sequential(*_conv_bn_relu(cin, cout))
    if key.op == "fuseadd":
        return _AddUpsampled()
    if key.op == "fusecat":
        return nn.Sequential(*_conv_bn_relu(cin, cout))
    if key.op == "predict":
        return _FlatPredictor(cin, key.kernel, cout)
    raise ValueError(f"cannot build a head layer for cost key op {key.op!r}")


class _AddUpsampled(nn.Module):
    """The add fusion alone: the map plus a nearest-upsampled half-size copy of itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.max_pool2d(x, 1, 2)
        return x + F.interpolate(coarse, size=x.shape[-2:], mode="nearest")


class _FlatPredictor(nn.Module):
    """A prediction layer with `outputs` channels in all (the key does not split classes from boxes)."""

    def __init__(self, cin: int, kernel: int, outputs: int):
        super().__init__()
        self.dw = nn.Sequential(*_conv_bn_relu(cin, cin, kernel, groups=cin))
        self.pw = nn.Conv2d(cin, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))
