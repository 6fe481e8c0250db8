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
from dataclasses import dataclass

from pydantic import PositiveInt
from torch import nn

from search_spaces.base import SpaceOptions, register_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import ConvBlock, conv_bn, conv_out
from search_spaces.per_layer import PerLayerSpace, convblock_cost

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
class FBNetSpace(PerLayerSpace):
    """HW-NAS-Bench's FBNet space (CIFAR-100 setting): 22 layers, 9 choices each."""

    Options = FBNetOptions
    name = "fbnet"
    options: FBNetOptions
    Arch = FBNetArch
    # the module's constants, as `PerLayerSpace` reads them
    FAMILY, PLAN, NUM_CHOICES = FAMILY, tuple(_PLAN), NUM_CHOICES
    STEM_CHANNELS, HEAD_CHANNELS, SEPARATOR, BLOCK_OP = STEM_CHANNELS, HEAD_CHANNELS, " ", "fbnet"

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

    @staticmethod
    def searchable_cost(choice: int, cin: int, cout: int, stride: int, hw: int) -> LayerCost:
        spec = CHOICES[choice]
        if spec is None:
            hw_out = conv_out(hw, 1, stride)
            identity = cin == cout and stride == 1
            key = CostKey("skip", (cin, hw, hw), (cout, hw_out, hw_out), 1, stride,
                          act="none" if identity else "relu", family=FAMILY)
            if identity:   # no convolution, but still a key: some devices charge time for it
                return LayerCost.of(key, [])
            return LayerCost.of(key, [ConvSpec(cin, cout, 1, stride, hw, hw_out)], 2 * cout)
        k, e, g = spec
        key = CostKey("fbnet", (cin, hw, hw), (cout, conv_out(hw, k, stride), conv_out(hw, k, stride)), k, stride,
                      float(e), act="relu", skip=cin == cout and stride == 1, family=FAMILY, groups=g)
        return convblock_cost(key)

    @staticmethod
    def searchable_layer(choice: int, cin: int, cout: int, stride: int) -> nn.Module:
        """A ConvBlock, or for ``skip`` the identity or a 1x1 conv + BN + ReLU with the stride."""
        spec = CHOICES[choice]
        if spec is None:
            return nn.Identity() if cin == cout and stride == 1 else nn.Sequential(*conv_bn(cin, cout, 1, stride))
        k, e, g = spec
        return ConvBlock(cin, cout, k, e, g, stride)

    def build_searchable(self, key: CostKey) -> nn.Module:
        cin, cout = key.in_shape[0], key.out_shape[0]
        if key.op == "skip":
            return self.searchable_layer(SKIP, cin, cout, key.stride)
        if key.op == "fbnet":
            return ConvBlock(cin, cout, key.kernel, key.expansion, key.groups, key.stride)
        raise ValueError(f"cannot build a layer for cost key op {key.op!r}")
