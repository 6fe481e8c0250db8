"""FBNet search space in HW-NAS-Bench's CIFAR-100 setting (registered as ``fbnet``).

The network is exactly the one `shared/data/fbnet-latency/README.md` describes (HW-NAS-Bench's FBNet space):

- stem: 3x3 conv to 16 channels, stride 1, BN, ReLU;
- 7 stages with [1, 4, 4, 4, 4, 4, 1] searchable layers, output channels [16, 24, 32, 64, 112, 184, 352] and
  first-layer strides [1, 1, 2, 2, 1, 2, 1] (stride only on a stage's first layer), 22 layers in all;
- each layer one of ``[k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip]`` (`CHOICES`);
- head: 1x1 conv to 1504 channels, BN, ReLU, global average pool, linear to `num_classes` (100 for CIFAR-100).

A ConvBlock (k, e, g) is 1x1 conv (groups g) to e*C_in, BN, ReLU, channel shuffle when g > 1, kxk depthwise conv
with the layer's stride, BN, ReLU, 1x1 conv (groups g) to C_out, BN, plus a residual add when C_in == C_out and
the stride is 1. ``skip`` is the identity when the shape is unchanged, else a 1x1 conv + BN + ReLU with the stride.

Details the README leaves open, decided here: every convolution has no bias (each is followed by BN); padding is
k // 2; the ReLU after the stem, inside blocks and after the head is not in place (clean ONNX export); the
classifier is an `nn.Linear` with bias; the channel shuffle is the ShuffleNet one (view as (g, C/g), transpose).

Cost keys (`layer_costs`), family ``fbnet``: ``stem``; ``fbnet`` for a ConvBlock (kernel, stride, expansion, groups,
``skip`` = residual add); ``skip`` with kernel 1 for the skip choice, act ``relu`` for the 1x1 projection and ``none``
for the identity (0 MACs, kept because some devices charge time for it); ``head`` (1x1 conv + BN + ReLU + pool,
output 1504x1x1); ``classifier`` (act ``none``). Layers cost independently: a layer's input shape never depends on
earlier choices.

Canonical string: the data's ``arch`` column, 22 space-separated choice indices, e.g. ``"0 8 3 ... 2"``, so the
shared CSV's strings decode directly and `encode` columns line up with its layer order.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn

from search_spaces.base import (
    PositionalLayers,
    SearchSpace,
    SpaceOptions,
    register_space,
)
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import ConvBlock, conv_bn, conv_out

# (kernel, expansion, groups) per choice index; None = skip. Order is the data's.
CHOICES: tuple[tuple[int, int, int] | None, ...] = (
    (3, 1, 1), (3, 1, 2), (3, 3, 1), (3, 6, 1), (5, 1, 1), (5, 1, 2), (5, 3, 1), (5, 6, 1), None)
CHOICE_NAMES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
SKIP = CHOICES.index(None)
STAGE_DEPTHS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES = (1, 1, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504
IN_CHANNELS = 3
NUM_LAYERS = sum(STAGE_DEPTHS)
NUM_CHOICES = len(CHOICES)
FAMILY = "fbnet"

_INT_RE = re.compile(r"^[0-9]+$")


def layer_plan() -> list[tuple[int, int, int]]:
    """(C_in, C_out, stride) of each of the 22 searchable layers, in the data's order."""
    plan, cin = [], STEM_CHANNELS
    for depth, cout, stride in zip(STAGE_DEPTHS, STAGE_CHANNELS, STAGE_STRIDES):
        for i in range(depth):
            plan.append((cin, cout, stride if i == 0 else 1))
            cin = cout
    return plan


_PLAN = layer_plan()


class FBNetOptions(SpaceOptions):
    """Options of the ``fbnet`` space (the network is fixed; only the input resolution may change)."""

    resolution: PositiveInt = 32


@dataclass(frozen=True)
class FBNetArch:
    """Genotype of the ``fbnet`` space: one choice index (into `CHOICES`) per searchable layer."""

    choices: tuple[int, ...]

    def __str__(self) -> str:
        return " ".join(str(c) for c in self.choices)


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """HW-NAS-Bench's FBNet space (CIFAR-100 setting): 22 layers, 9 choices each."""

    Options = FBNetOptions
    name = "fbnet"
    options: FBNetOptions

    # ---- decision view: one decision of 9 choices per layer ----------------------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        return (NUM_CHOICES,) * NUM_LAYERS

    def to_decisions(self, arch: FBNetArch) -> tuple[int, ...]:
        return arch.choices

    def from_decisions(self, decisions: Sequence[int]) -> FBNetArch:
        return FBNetArch(tuple(int(d) for d in decisions))

    # ---- strings and features ---------------------------------------------------------------------------------
    def to_string(self, arch: FBNetArch) -> str:
        return str(arch)

    def decode(self, string: str) -> FBNetArch:
        tokens = string.split()
        if len(tokens) != NUM_LAYERS:
            raise ValueError(f"arch {string!r}: has {len(tokens)} layer choices, the fbnet space has {NUM_LAYERS}")
        choices = []
        for i, token in enumerate(tokens):
            if not _INT_RE.match(token):
                raise ValueError(f"arch {string!r}: layer {i} choice {token!r} is not a non-negative integer")
            if int(token) >= NUM_CHOICES:
                raise ValueError(f"arch {string!r}: layer {i} choice {token} is out of range 0..{NUM_CHOICES - 1}")
            choices.append(int(token))
        return FBNetArch(tuple(choices))

    def encode(self, archs: Sequence[FBNetArch]) -> np.ndarray:
        """One-hot (layer, choice) features: column ``9 * layer + choice``, 22 x 9 = 198 float32 columns."""
        n = len(archs)
        idx = np.fromiter((c for a in archs for c in a.choices), dtype=np.intp, count=n * NUM_LAYERS)
        return self.encode_choices(idx.reshape(n, NUM_LAYERS))

    def encode_choices(self, choices: np.ndarray) -> np.ndarray:
        n = len(choices)
        out = np.zeros((n, NUM_LAYERS * NUM_CHOICES), dtype=np.float32)
        out[np.arange(n)[:, None], choices + np.arange(NUM_LAYERS) * NUM_CHOICES] = 1.0
        return out

    def choice_matrix(self, strings: Sequence[str]) -> np.ndarray:
        """Choice indices of many arch strings. The canonical form (single digits, single spaces) is read
        straight from the bytes; anything else goes through `decode`, which names the first bad string."""
        n = len(strings)
        width = 2 * NUM_LAYERS - 1
        if n and all(len(s) == width for s in strings):
            raw = np.frombuffer("".join(strings).encode("ascii", "replace"), dtype=np.uint8).reshape(n, width)
            digits = raw[:, ::2].astype(np.intp) - ord("0")
            if (raw[:, 1::2] == ord(" ")).all() and ((digits >= 0) & (digits < NUM_CHOICES)).all():
                return digits
        return np.array([self.decode(s).choices for s in strings], dtype=np.intp).reshape(n, NUM_LAYERS)

    def positional_layers(self) -> PositionalLayers:
        fixed = self.layer_costs(FBNetArch((SKIP,) * NUM_LAYERS))
        table, hw = [], fixed[0].key.out_shape[1]
        for cin, cout, stride in _PLAN:
            table.append(tuple(_searchable_cost(c, cin, cout, stride, hw) for c in range(NUM_CHOICES)))
            hw = table[-1][0].key.out_shape[1]
        return PositionalLayers((fixed[0], *fixed[-2:]), tuple(table))

    # ---- cost -------------------------------------------------------------------------------------------------
    def layer_costs(self, arch: FBNetArch) -> list[LayerCost]:
        """Stem, the 22 searchable layers, head (1x1 conv to 1504 + pool) and classifier."""
        res = self.options.resolution
        stem = ConvSpec(IN_CHANNELS, STEM_CHANNELS, 3, 1, res, conv_out(res, 3, 1))
        hw = stem.hw_out
        out = [LayerCost.of(CostKey("stem", (IN_CHANNELS, res, res), (STEM_CHANNELS, hw, hw), 3, 1, act="relu",
                                    family=FAMILY), [stem], 2 * STEM_CHANNELS)]
        for choice, (cin, cout, stride) in zip(arch.choices, _PLAN):
            out.append(_searchable_cost(choice, cin, cout, stride, hw))
            hw = out[-1].key.out_shape[1]
        chs = STAGE_CHANNELS[-1]
        head = ConvSpec(chs, HEAD_CHANNELS, 1, 1, hw, hw)
        out.append(LayerCost.of(CostKey("head", (chs, hw, hw), (HEAD_CHANNELS, 1, 1), act="relu", family=FAMILY),
                                [head], 2 * HEAD_CHANNELS))
        fc = ConvSpec(HEAD_CHANNELS, self.num_classes, 1, 1, 1, 1, bias=True)
        out.append(LayerCost.of(CostKey("classifier", (HEAD_CHANNELS, 1, 1), (self.num_classes, 1, 1), act="none",
                                        family=FAMILY), [fc]))
        return out

    def smallest(self) -> FBNetArch:
        """Per layer the choice with the fewest (MACs, params); layers cost independently, so this is the
        network with the fewest MACs (skip wherever it is the identity, the cheapest block elsewhere)."""
        hw, choices = conv_out(self.options.resolution, 3, 1), []
        for cin, cout, stride in _PLAN:
            costs = [_searchable_cost(c, cin, cout, stride, hw) for c in range(NUM_CHOICES)]
            choices.append(min(range(NUM_CHOICES), key=lambda c: (costs[c].macs, costs[c].params)))
            hw = costs[0].key.out_shape[1]
        return FBNetArch(tuple(choices))

    def enumerate_layers(self, max_samples: int = 0, patience: int = 0) -> tuple[list[LayerCost], bool]:
        """Exact: the fixed stem, head and classifier plus every choice at every position."""
        pos = self.positional_layers()
        layers = {str(lc.key): lc for lc in (*pos.fixed, *(lc for row in pos.table for lc in row))}
        return list(layers.values()), True

    # ---- build ------------------------------------------------------------------------------------------------
    def build(self, arch: FBNetArch):
        return FBNet(arch.choices, self.num_classes)

    def build_layer(self, key: CostKey) -> nn.Module:
        """One layer alone, from its cost key (input (1, *key.in_shape))."""
        cin, cout = key.in_shape[0], key.out_shape[0]
        if key.op == "stem":
            return nn.Sequential(*conv_bn(cin, cout, key.kernel, key.stride))
        if key.op == "skip":
            return _layer(SKIP, cin, cout, key.stride)
        if key.op == "fbnet":
            return ConvBlock(cin, cout, key.kernel, int(key.expansion), key.groups, key.stride)
        if key.op == "head":
            return nn.Sequential(*conv_bn(cin, cout, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        if key.op == "classifier":
            return nn.Sequential(nn.Flatten(1), nn.Linear(cin, cout))
        raise ValueError(f"cannot build a layer for cost key op {key.op!r}")

    def input_shape(self, arch: FBNetArch) -> tuple[int, int, int, int]:
        res = self.options.resolution
        return (1, IN_CHANNELS, res, res)


def _searchable_cost(choice: int, cin: int, cout: int, stride: int, hw: int) -> LayerCost:
    """Cost of searchable layer `choice` with input (cin, hw, hw)."""
    spec = CHOICES[choice]
    if spec is None:
        hw_out = conv_out(hw, 1, stride)
        identity = cin == cout and stride == 1
        key = CostKey("skip", (cin, hw, hw), (cout, hw_out, hw_out), 1, stride, act="none" if identity else "relu",
                      family=FAMILY)
        if identity:   # no convolution, but still a key: some devices charge time for it
            return LayerCost.of(key, [])
        return LayerCost.of(key, [ConvSpec(cin, cout, 1, stride, hw, hw_out)], 2 * cout)
    k, e, g = spec
    mid = cin * e
    dw = ConvSpec(mid, mid, k, stride, hw, conv_out(hw, k, stride), groups=mid)
    convs = [ConvSpec(cin, mid, 1, 1, hw, hw, groups=g), dw, ConvSpec(mid, cout, 1, 1, dw.hw_out, dw.hw_out, groups=g)]
    key = CostKey("fbnet", (cin, hw, hw), (cout, dw.hw_out, dw.hw_out), k, stride, float(e), act="relu",
                  skip=cin == cout and stride == 1, family=FAMILY, groups=g)
    return LayerCost.of(key, convs, 2 * (mid + mid + cout))


# ---- modules (plain torch) ---------------------------------------------------------------------------------------
def _layer(choice: int, cin: int, cout: int, stride: int) -> nn.Module:
    spec = CHOICES[choice]
    if spec is None:
        return nn.Identity() if cin == cout and stride == 1 else nn.Sequential(*conv_bn(cin, cout, 1, stride))
    k, e, g = spec
    return ConvBlock(cin, cout, k, e, g, stride)


class FBNet(nn.Module):
    """The FBNet network of one genotype (CIFAR-100 setting by default).

    Args:
        choices: 22 choice indices into `CHOICES`.
        num_classes: classifier outputs.
    """

    def __init__(self, choices: Sequence[int], num_classes: int = 100):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(IN_CHANNELS, STEM_CHANNELS, 3))
        self.blocks = nn.Sequential(*(_layer(c, *p) for c, p in zip(choices, _PLAN)))
        self.head = nn.Sequential(*conv_bn(STAGE_CHANNELS[-1], HEAD_CHANNELS, 1), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(1))
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before the head: (N, 352, H/8, W/8)."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))
