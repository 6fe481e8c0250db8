"""Joint backbone + LRSSD head search space (registered as ``lrssd``).

An architecture is a `DetectorArch`: a backbone arch of another registered space that offers the features
interface (`feature_info`, `feature_layer_costs`, `build_features`; `muffnet` does) and a `HeadArch`. Its
canonical string is ``<backbone string>::<head string>``. Its cost keys are the truncated backbone's followed by
the head's, so a detector's latency is predicted from per-layer keys like a classifier's, and the detector's
FLOPs, parameters and decisions are the sums / concatenations of the two parts'.

`build(arch)` makes a `Detector`: ``model(images) -> (cls_logits (N, A, C + 1), box_deltas (N, A, 4))`` with its
SSD anchors in ``model.anchors`` ((A, 4) normalised centre-size, `search_spaces.heads.anchors.make_anchors`), which the
detection evaluator (`nas.evaluation.detection`) and the exported card use. Decoding and NMS are not in the graph
(`nas.evaluation.detection.postprocess` does them), so the ONNX file outputs the raw logits and deltas.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from search_spaces.base import SearchSpace, SpaceOptions, register_space
from search_spaces.make import get_space
from search_spaces.costs import CostKey, LayerCost
from search_spaces.heads.anchors import make_anchors
from search_spaces.heads.lrssd import (
    BACKBONE_LEVELS,
    FAMILY,
    HeadArch,
    HeadChoices,
    HeadOptions,
    LRSSDHead,
    build_head_layer,
    head_layer_costs,
    level_sizes,
)

SEPARATOR = "::"
_FEATURE_API = ("feature_info", "feature_layer_costs", "build_features")


@dataclass(frozen=True)
class DetectorArch:
    backbone: Hashable
    head: HeadArch


class DetectorOptions(SpaceOptions):
    """Options of the ``lrssd`` space."""

    backbone: str = Field("muffnet", description="registered space of the backbone (needs its features interface)")
    backbone_options: dict[str, Any] = Field(default_factory=dict, description="the backbone space's options; "
                                             "its resolution is set from `resolution`")
    resolution: PositiveInt = 160
    head: HeadOptions = Field(default_factory=HeadOptions)
    anchor_min_scale: float = Field(0.1, gt=0, le=1, description="anchor side on the finest level (image share)")
    anchor_max_scale: float = Field(0.9, gt=0, le=1, description="anchor side on the coarsest level")

    @model_validator(mode="after")
    def _scales(self) -> DetectorOptions:
        if self.anchor_min_scale > self.anchor_max_scale:
            raise ValueError(f"anchor_min_scale {self.anchor_min_scale} exceeds anchor_max_scale "
                             f"{self.anchor_max_scale}")
        return self


class Detector(nn.Module):
    """Backbone features + LRSSD head; ``anchors`` holds the SSD anchors its predictions refer to."""

    def __init__(self, backbone: nn.Module, head: LRSSDHead, anchors: torch.Tensor):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.anchors = anchors   # not a buffer: the weights file holds weights only

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


@register_space("lrssd")
class DetectorSpace(SearchSpace):
    """Backbone and detection head searched together (see the module docstring)."""

    Options = DetectorOptions
    options: DetectorOptions
    name = "lrssd"

    def __init__(self, options: DetectorOptions | None = None, num_classes: int = 3):
        super().__init__(options, num_classes)
        o = self.options
        self.backbone = get_space(o.backbone, {**o.backbone_options, "resolution": o.resolution})
        missing = [m for m in _FEATURE_API if not hasattr(self.backbone, m)]
        if missing:
            raise ValueError(f"space {o.backbone!r} cannot be a detection backbone: it has no {', '.join(missing)}")
        self.heads = HeadChoices(o.head)

    # ---- strings ----------------------------------------------------------------------------------------------
    def to_string(self, arch: DetectorArch) -> str:
        return f"{self.backbone.to_string(arch.backbone)}{SEPARATOR}{arch.head}"

    def decode(self, string: str) -> DetectorArch:
        backbone, sep, head = string.rpartition(SEPARATOR)
        if not sep:
            raise ValueError(f"detector {string!r} is not of the form <backbone>{SEPARATOR}<head>")
        return DetectorArch(self.backbone.decode(backbone), self.heads.decode(head))

    # ---- search operators -------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> DetectorArch:
        return DetectorArch(self.backbone.sample(rng), self.heads.sample(rng))

    def mutate(self, arch: DetectorArch, rng: np.random.Generator) -> DetectorArch:
        """One decision changed: in the head with probability (head decisions / all decisions)."""
        n_head = len(self.heads.choices)
        n_backbone = len(self.backbone.decision_sizes()) if _has_decisions(self.backbone) else n_head
        if rng.random() < n_head / (n_head + n_backbone):
            return DetectorArch(arch.backbone, self.heads.mutate(arch.head, rng))
        return DetectorArch(self.backbone.mutate(arch.backbone, rng), arch.head)

    def crossover(self, a: DetectorArch, b: DetectorArch, rng: np.random.Generator) -> DetectorArch:
        return DetectorArch(self.backbone.crossover(a.backbone, b.backbone, rng),
                            self.heads.crossover(a.head, b.head, rng))

    def encode(self, archs: Sequence[DetectorArch]) -> np.ndarray:
        backbone = self.backbone.encode([a.backbone for a in archs])
        head = np.array([self.heads.encode(a.head) for a in archs], dtype=np.float32).reshape(len(archs), -1)
        return np.hstack([backbone.astype(np.float32), head])

    def decision_sizes(self) -> tuple[int, ...]:
        return tuple(self.backbone.decision_sizes()) + self.heads.sizes()

    def to_decisions(self, arch: DetectorArch) -> tuple[int | None, ...]:
        return tuple(self.backbone.to_decisions(arch.backbone)) + self.heads.to_decisions(arch.head)

    def from_decisions(self, decisions: Sequence[int]) -> DetectorArch:
        n = len(self.backbone.decision_sizes())
        return DetectorArch(self.backbone.from_decisions(decisions[:n]), self.heads.from_decisions(decisions[n:]))

    # ---- cost -------------------------------------------------------------------------------------------------
    def feature_channels(self, arch: DetectorArch) -> list[int]:
        info = self.backbone.feature_info(arch.backbone)
        if len(info) < BACKBONE_LEVELS:
            raise ValueError(f"backbone {self.options.backbone!r} gives {len(info)} feature maps; the head needs "
                             f"{BACKBONE_LEVELS} (strides 8, 16, 32)")
        return [c for c, _ in info[-BACKBONE_LEVELS:]]

    def layer_costs(self, arch: DetectorArch) -> list[LayerCost]:
        return self.backbone.feature_layer_costs(arch.backbone) + head_layer_costs(
            arch.head, self.feature_channels(arch), self.options.resolution, self.num_classes)

    def smallest(self) -> DetectorArch:
        """The backbone's smallest with the head of fewest (MACs, params) on it."""
        backbone = self.backbone.smallest()
        channels = self.feature_channels(DetectorArch(backbone, None))

        def cost(head: HeadArch) -> tuple[int, int]:
            layers = head_layer_costs(head, channels, self.options.resolution, self.num_classes)
            return sum(lc.macs for lc in layers), sum(lc.params for lc in layers)

        heads = (self.heads.from_decisions(d) for d in np.ndindex(*self.heads.sizes()))
        return DetectorArch(backbone, min(heads, key=cost))

    # ---- build ------------------------------------------------------------------------------------------------
    def anchors(self, arch: DetectorArch) -> torch.Tensor:
        """The SSD anchors of `arch`'s predictions, in their order."""
        sizes = level_sizes(self.options.resolution, arch.head.levels)
        return make_anchors([(s, s) for s in sizes], arch.head.anchors, self.options.anchor_min_scale,
                            self.options.anchor_max_scale)

    def build(self, arch: DetectorArch) -> Detector:
        head = LRSSDHead(arch.head, self.feature_channels(arch), self.num_classes)
        return Detector(self.backbone.build_features(arch.backbone), head, self.anchors(arch))

    def build_layer(self, key: CostKey) -> nn.Module:
        return build_head_layer(key) if key.family == FAMILY else self.backbone.build_layer(key)

    def input_shape(self, arch: DetectorArch) -> tuple[int, int, int, int]:
        return self.backbone.input_shape(arch.backbone)


def _has_decisions(space: SearchSpace) -> bool:
    try:
        space.decision_sizes()
    except NotImplementedError:
        return False
    return True
