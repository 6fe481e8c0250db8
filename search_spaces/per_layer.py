"""Spaces of one fixed network whose searchable layers each take one of the same few choices (FBNet, NAS-Bench-Macro).

Such a network is a stem (3x3 conv, BN, ReLU), a plan of searchable layers ((C_in, C_out, stride) each), and a head
(1x1 conv, BN, ReLU, global average pool) with a linear classifier. A layer's input shape never depends on earlier
choices, so every (position, choice) is costed once (`positional_layers`), and a network's costs, the space's
smallest network and the layers a profile must time all follow from that table; the decision view, the one-hot
encoding and the batch reading of arch strings are the same for every such space. A space gives its constants,
`searchable_cost` (one layer's `LayerCost`), `searchable_layer` (its module), `build_searchable` (a cost key's
module) and `decode` (its own string format and messages).
"""
from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from search_spaces.base import PositionalLayers, SearchSpace
from search_spaces.costs import ConvSpec, CostKey, LayerCost
from search_spaces.layers import conv_bn, conv_out, kept_channels

IN_CHANNELS = 3


def convblock_cost(key: CostKey) -> LayerCost:
    """Cost of a `search_spaces.layers.ConvBlock` from its key: 1x1 expansion to ``round(C_in * expansion)``
    channels (in ``key.groups`` groups), kxk depthwise with the stride, 1x1 projection, BatchNorm after each."""
    cin, hw = key.in_shape[0], key.in_shape[1]
    cout, mid = key.out_shape[0], round(key.in_shape[0] * key.expansion)
    dw = ConvSpec(mid, mid, key.kernel, key.stride, hw, key.out_shape[1], groups=mid)
    convs = [ConvSpec(cin, mid, 1, 1, hw, hw, groups=key.groups), dw,
             ConvSpec(mid, cout, 1, 1, dw.hw_out, dw.hw_out, groups=key.groups)]
    return LayerCost.of(key, convs, 2 * (mid + mid + cout))


class PerLayerSpace(SearchSpace):
    """A fixed network with one choice per searchable layer (see the module).

    Class attributes a space sets: `FAMILY` (its cost keys' family), `PLAN` ((C_in, C_out, stride) per searchable
    layer), `NUM_CHOICES`, `STEM_CHANNELS`, `HEAD_CHANNELS`, `SEPARATOR` (between the choice digits of a canonical
    string) and `Arch` (its genotype: a frozen dataclass with `choices` whose `str` is the canonical string).
    """

    FAMILY: ClassVar[str]
    PLAN: ClassVar[tuple[tuple[int, int, int], ...]]
    NUM_CHOICES: ClassVar[int]
    STEM_CHANNELS: ClassVar[int]
    HEAD_CHANNELS: ClassVar[int]
    SEPARATOR: ClassVar[str]
    BLOCK_OP: ClassVar[str]   # the cost-key op of the space's ConvBlocks (what a keep ratio prunes)
    Arch: ClassVar[type]

    def __init__(self, options: Any = None, num_classes: int = 1000):
        super().__init__(options, num_classes)
        self._positional = self._positional_layers()

    @staticmethod
    @abstractmethod
    def searchable_cost(choice: int, cin: int, cout: int, stride: int, hw: int) -> LayerCost:
        """Cost of searchable layer `choice` with input (cin, hw, hw)."""

    @staticmethod
    @abstractmethod
    def searchable_layer(choice: int, cin: int, cout: int, stride: int) -> nn.Module:
        """Searchable layer `choice` as a module."""

    @abstractmethod
    def build_searchable(self, key: CostKey) -> nn.Module:
        """The module of a searchable layer's cost key (`build_layer` builds the stem, head and classifier)."""

    # ---- decision view: one decision per searchable layer -------------------------------------------------------
    def decision_sizes(self) -> tuple[int, ...]:
        return (self.NUM_CHOICES,) * len(self.PLAN)

    def to_decisions(self, arch) -> tuple[int, ...]:
        return arch.choices

    def from_decisions(self, decisions: Sequence[int]):
        if len(decisions) != len(self.PLAN) or not all(0 <= int(d) < self.NUM_CHOICES for d in decisions):
            raise ValueError(f"decisions {tuple(decisions)}: expected {len(self.PLAN)} choices in "
                             f"0..{self.NUM_CHOICES - 1}")
        return self.Arch(tuple(int(d) for d in decisions))

    # ---- compression units: the stem, each searchable layer, the head with the classifier ----------------------
    def compression_units(self) -> tuple[str, ...]:
        return ("stem", *(f"l{i}" for i in range(len(self.PLAN))), "head")

    def unit_of_layers(self, arch) -> list[int]:
        n = len(self.PLAN)
        return [0, *range(1, n + 1), n + 1, n + 1]

    def unit_modules(self, arch) -> list[tuple[str, ...]]:
        return [("stem",), *((f"blocks.{i}",) for i in range(len(self.PLAN))), ("head", "classifier")]

    def pruned_cost(self, layer: LayerCost, keep: float) -> LayerCost | None:
        """A ConvBlock with ungrouped 1x1 convolutions keeps `kept_channels` of its expansion channels: the same
        key with the expansion they amount to (as its string writes it, so key and string agree)."""
        key = layer.key
        if key.op != self.BLOCK_OP or key.groups != 1:
            return None
        cin = key.in_shape[0]
        kept = kept_channels(round(cin * key.expansion), keep)
        return convblock_cost(dataclasses.replace(key, expansion=float(f"{kept / cin:g}")))

    # ---- strings and features -----------------------------------------------------------------------------------
    def to_string(self, arch) -> str:
        return str(arch)

    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        """One-hot (layer, choice) features: column ``NUM_CHOICES * layer + choice``, float32."""
        n, layers = len(archs), len(self.PLAN)
        idx = np.fromiter((c for a in archs for c in a.choices), dtype=np.intp, count=n * layers)
        return self.encode_choices(idx.reshape(n, layers))

    def encode_choices(self, choices: np.ndarray) -> np.ndarray:
        n, layers = len(choices), len(self.PLAN)
        out = np.zeros((n, layers * self.NUM_CHOICES), dtype=np.float32)
        out[np.arange(n)[:, None], np.asarray(choices) + np.arange(layers) * self.NUM_CHOICES] = 1.0
        return out

    def choice_matrix(self, strings: Sequence[str]) -> np.ndarray:
        """Choice indices of many arch strings. Canonical strings (single digits, `SEPARATOR` between them) are
        read straight from the bytes; otherwise every string goes through `decode`, which names the first bad
        one."""
        n, layers, step = len(strings), len(self.PLAN), 1 + len(self.SEPARATOR)
        width = layers + (layers - 1) * len(self.SEPARATOR)
        if n and all(isinstance(s, str) and len(s) == width for s in strings):
            raw = np.frombuffer("".join(strings).encode("ascii", "replace"), dtype=np.uint8).reshape(n, width)
            digits = raw[:, ::step].astype(np.intp) - ord("0")
            separated = not self.SEPARATOR or (raw[:, 1::step] == ord(self.SEPARATOR)).all()
            if separated and ((digits >= 0) & (digits < self.NUM_CHOICES)).all():
                return digits
        return np.array([self.decode(s).choices for s in strings], dtype=np.intp).reshape(n, layers)

    # ---- cost -------------------------------------------------------------------------------------------------
    def positional_layers(self) -> PositionalLayers:
        return self._positional

    def _positional_layers(self) -> PositionalLayers:
        res, f = self.options.resolution, self.FAMILY
        hw = conv_out(res, 3, 1)
        stem = LayerCost.of(CostKey("stem", (IN_CHANNELS, res, res), (self.STEM_CHANNELS, hw, hw), 3, 1, act="relu",
                                    family=f), [ConvSpec(IN_CHANNELS, self.STEM_CHANNELS, 3, 1, res, hw)],
                            2 * self.STEM_CHANNELS)
        table = []
        for cin, cout, stride in self.PLAN:
            table.append(tuple(self.searchable_cost(c, cin, cout, stride, hw) for c in range(self.NUM_CHOICES)))
            hw = table[-1][0].key.out_shape[1]
        chs, head_chs = self.PLAN[-1][1], self.HEAD_CHANNELS
        head = LayerCost.of(CostKey("head", (chs, hw, hw), (head_chs, 1, 1), act="relu", family=f),
                            [ConvSpec(chs, head_chs, 1, 1, hw, hw)], 2 * head_chs)
        fc = ConvSpec(head_chs, self.num_classes, 1, 1, 1, 1, bias=True)
        classifier = LayerCost.of(CostKey("classifier", (head_chs, 1, 1), (self.num_classes, 1, 1), act="none",
                                          family=f), [fc])
        return PositionalLayers((stem, head, classifier), tuple(table))

    def layer_costs(self, arch) -> list[LayerCost]:
        """Stem, the searchable layers, head (1x1 conv + pool) and classifier."""
        stem, head, classifier = self._positional.fixed
        return [stem, *(row[c] for row, c in zip(self._positional.table, arch.choices)), head, classifier]

    def smallest(self):
        """Per layer the choice with the fewest (MACs, params); layers cost independently, so this is the
        network with the fewest MACs."""
        return self.Arch(tuple(min(range(self.NUM_CHOICES), key=lambda c: (row[c].macs, row[c].params))
                               for row in self._positional.table))

    def enumerate_layers(self, max_samples: int = 0, patience: int = 0) -> tuple[list[LayerCost], bool]:
        """Exact: the fixed stem, head and classifier plus every choice at every position."""
        pos = self._positional
        layers = {str(lc.key): lc for lc in (*pos.fixed, *(lc for row in pos.table for lc in row))}
        return list(layers.values()), True

    # ---- build ------------------------------------------------------------------------------------------------
    def build(self, arch) -> nn.Module:
        return PerLayerNet(arch.choices, self.PLAN, self.searchable_layer, self.STEM_CHANNELS, self.HEAD_CHANNELS,
                           self.num_classes)

    def build_layer(self, key: CostKey) -> nn.Module:
        """One layer alone, from its cost key (input (1, *key.in_shape))."""
        cin, cout = key.in_shape[0], key.out_shape[0]
        if key.op == "stem":
            return nn.Sequential(*conv_bn(cin, cout, key.kernel, key.stride))
        if key.op == "head":
            return nn.Sequential(*conv_bn(cin, cout, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        if key.op == "classifier":
            return nn.Sequential(nn.Flatten(1), nn.Linear(cin, cout))
        return self.build_searchable(key)

    def input_shape(self, arch) -> tuple[int, int, int, int]:
        res = self.options.resolution
        return (1, IN_CHANNELS, res, res)


class PerLayerNet(nn.Module):
    """The network of one genotype of a `PerLayerSpace`: stem, the chosen layers, head and classifier.

    Args:
        choices: one choice index per searchable layer.
        plan: (C_in, C_out, stride) per searchable layer.
        layer: builds a searchable layer from (choice, C_in, C_out, stride).
        stem_channels, head_channels: widths of the stem and the head conv.
        num_classes: classifier outputs.
    """

    def __init__(self, choices: Sequence[int], plan: Sequence[tuple[int, int, int]],
                 layer: Callable[[int, int, int, int], nn.Module], stem_channels: int, head_channels: int,
                 num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(IN_CHANNELS, stem_channels, 3))
        self.blocks = nn.Sequential(*(layer(c, *p) for c, p in zip(choices, plan)))
        self.head = nn.Sequential(*conv_bn(plan[-1][1], head_channels, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(head_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before the head."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))
