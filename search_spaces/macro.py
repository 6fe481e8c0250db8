"""NAS-Bench-Macro search space on CIFAR-10 (registered as ``macro``).

The network is exactly NAS-Bench-Macro's (Su et al., CVPR 2021; `shared/data/nasbench-macro/README.md`):

- stem: 3x3 conv to 32 channels, stride 1, BN, ReLU;
- 8 searchable layers in 3 stages of [2, 3, 3]; a stage's first layer has stride 2 and doubles the channels
  (64, 128, 256), the others keep stride 1 and channels;
- each layer one of ``[id, ir_3x3_t3, ir_5x5_t6]`` (`CHOICE_NAMES`, the benchmark's digit order): ``id`` is the
  identity, or a 1x1 conv with the layer's stride + BN (no activation) where the stride or channels change; an
  inverted residual (k, t) is 1x1 conv to t*C_in + BN + ReLU, kxk depthwise conv with the layer's stride + BN +
  ReLU, 1x1 conv to C_out + BN, plus a residual add when C_in == C_out and the stride is 1;
- head: 1x1 conv to 1280 channels, BN, ReLU, global average pool; classifier: linear to `num_classes` (10 for the
  benchmark's CIFAR-10; pass ``num_classes=10`` to `get_space`).

Conventions, as the benchmark's reference code has them and as its ``params`` / ``flops`` columns confirm: every
convolution has no bias (each is followed by BN); padding is k // 2; BN is affine and its weight and bias count as
parameters; the classifier is an `nn.Linear` with bias (counted). Decided here: the ReLUs are not in place (clean
ONNX export).

Agreement with the file, checked on all 6,561 rows: its ``params`` equals `params(arch)` (convolution weights +
2 per BN channel + the classifier's weights and bias) and its ``flops`` equals `flops(arch)`, the multiply-
accumulates of the convolutions and the classifier (the classifier's bias adds are not counted; BN, ReLU, pooling
and residual adds count nothing). E.g. ``00000000``: 387,882 params, 7,713,280 MACs. The file repeats rows: the
benchmark trained one network per equivalence class (an ``id`` at a stage's stride-1 positions can sit before or
after the other op; 3,969 distinct networks) and copied its row to the other orderings, which build the same
network, so their costs agree too.

Cost keys (`layer_costs`), family ``macro``: ``stem`` (kernel 3, act ``relu``); ``ir`` for an inverted residual
(kernel, stride, expansion, act ``relu``, ``skip`` = residual add); ``skip`` (kernel 1, act ``none``) for the
``id`` choice, the identity when the shape is unchanged (0 MACs, kept because devices charge time for it) or the
1x1 projection with the layer's stride otherwise; ``head`` (1x1 conv + BN + ReLU + pool, output 1280x1x1);
``classifier`` (act ``none``). Layers cost independently (a layer's input shape never depends on earlier
choices), so the space has the positional batch path: 8 positions of 3 choices.

Canonical string: the file's ``arch`` column, 8 digits in layer order with leading zeros kept (``"00120201"``;
read the column as text), so the shared CSV's strings decode directly and `encode` columns line up with its order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import PositiveInt
from torch import nn

from search_spaces.base import SpaceOptions, register_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import ConvBlock, conv_bn, conv_out
from search_spaces.per_layer import PerLayerSpace, convblock_cost

# (kernel, expansion) per choice digit; None = id. Order is the benchmark's.
CHOICES: tuple[tuple[int, int] | None, ...] = (None, (3, 3), (5, 6))
CHOICE_NAMES = ("id", "ir_3x3_t3", "ir_5x5_t6")
IDENTITY = CHOICES.index(None)
STAGE_DEPTHS = (2, 3, 3)
STAGE_CHANNELS = (64, 128, 256)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IN_CHANNELS = 3
NUM_LAYERS = sum(STAGE_DEPTHS)
NUM_CHOICES = len(CHOICES)
FAMILY = "macro"


def layer_plan() -> list[tuple[int, int, int]]:
    """(C_in, C_out, stride) of each of the 8 searchable layers, in the benchmark's order."""
    plan, cin = [], STEM_CHANNELS
    for depth, cout in zip(STAGE_DEPTHS, STAGE_CHANNELS):
        for i in range(depth):
            plan.append((cin, cout, 2 if i == 0 else 1))
            cin = cout
    return plan


_PLAN = layer_plan()
_STAGE_STARTS = tuple(int(x) for x in np.cumsum((0,) + STAGE_DEPTHS[:-1]))


class MacroOptions(SpaceOptions):
    """Options of the ``macro`` space (the network is fixed; only the input resolution may change)."""

    resolution: PositiveInt = 32


@dataclass(frozen=True)
class MacroArch:
    """Genotype of the ``macro`` space: one choice digit (into `CHOICES`) per searchable layer."""

    choices: tuple[int, ...]

    def __str__(self) -> str:
        return "".join(str(c) for c in self.choices)


@register_space("macro")
class MacroSpace(PerLayerSpace):
    """NAS-Bench-Macro's space (CIFAR-10): 8 layers, 3 choices each, 6,561 networks."""

    Options = MacroOptions
    name = "macro"
    options: MacroOptions
    Arch = MacroArch
    # the module's constants, as `PerLayerSpace` reads them
    FAMILY, PLAN, NUM_CHOICES = FAMILY, tuple(_PLAN), NUM_CHOICES
    STEM_CHANNELS, HEAD_CHANNELS, SEPARATOR, BLOCK_OP = STEM_CHANNELS, HEAD_CHANNELS, "", "ir"

    def effective_decisions(self, arch: MacroArch) -> tuple[int, ...]:
        """The choices with each stage's stride-1 identities moved behind its other stride-1 layers: an identity
        there is a no-op, so the orderings build one network (the benchmark trained one of them and copied its
        row to the others)."""
        out: list[int] = []
        for start, depth in zip(_STAGE_STARTS, STAGE_DEPTHS):
            rest = arch.choices[start + 1:start + depth]
            moved = [c for c in rest if c != IDENTITY]
            out += [arch.choices[start], *moved, *[IDENTITY] * (len(rest) - len(moved))]
        return tuple(out)

    def decode(self, string: str) -> MacroArch:
        if not isinstance(string, str):
            raise ValueError(f"arch {string!r}: expected a string of {NUM_LAYERS} digits, got "
                             f"{type(string).__name__} (read the arch column as text: leading zeros matter)")
        if len(string) != NUM_LAYERS:
            hint = " (leading zeros lost? read the arch column as text)" if string.isdigit() else ""
            raise ValueError(f"arch {string!r}: has {len(string)} layer choices, the macro space has "
                             f"{NUM_LAYERS}{hint}")
        for i, char in enumerate(string):
            if char not in "0123456789":
                raise ValueError(f"arch {string!r}: layer {i} choice {char!r} is not a digit")
            if int(char) >= NUM_CHOICES:
                raise ValueError(f"arch {string!r}: layer {i} choice {char} is out of range 0..{NUM_CHOICES - 1}")
        return MacroArch(tuple(int(c) for c in string))

    @staticmethod
    def searchable_cost(choice: int, cin: int, cout: int, stride: int, hw: int) -> LayerCost:
        spec = CHOICES[choice]
        if spec is None:
            hw_out = conv_out(hw, 1, stride)
            key = CostKey("skip", (cin, hw, hw), (cout, hw_out, hw_out), 1, stride, act="none", family=FAMILY)
            if cin == cout and stride == 1:   # no convolution, but still a key: some devices charge time for it
                return LayerCost.of(key, [])
            return LayerCost.of(key, [ConvSpec(cin, cout, 1, stride, hw, hw_out)], 2 * cout)
        k, e = spec
        key = CostKey("ir", (cin, hw, hw), (cout, conv_out(hw, k, stride), conv_out(hw, k, stride)), k, stride,
                      float(e), act="relu", skip=cin == cout and stride == 1, family=FAMILY)
        return convblock_cost(key)

    @staticmethod
    def searchable_layer(choice: int, cin: int, cout: int, stride: int) -> nn.Module:
        """An inverted residual is FBNet's ConvBlock with ungrouped 1x1 convs (the same MobileNetV2 block); ``id``
        the identity, or a 1x1 conv + BN (no activation) with the stride."""
        spec = CHOICES[choice]
        if spec is None:
            if cin == cout and stride == 1:
                return nn.Identity()
            return nn.Sequential(*conv_bn(cin, cout, 1, stride, relu=False))
        k, e = spec
        return ConvBlock(cin, cout, k, e, 1, stride)

    def build_searchable(self, key: CostKey) -> nn.Module:
        cin, cout = key.in_shape[0], key.out_shape[0]
        if key.op == "skip":
            return self.searchable_layer(IDENTITY, cin, cout, key.stride)
        if key.op == "ir":
            return ConvBlock(cin, cout, key.kernel, key.expansion, 1, key.stride)
        raise ValueError(f"cannot build a layer for cost key op {key.op!r}")
