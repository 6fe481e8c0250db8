"""SSD anchors ("default boxes") of a detector head's prediction levels.

Coordinates are normalised to ``[0, 1]`` of the image side; anchors are ``(cx, cy, w, h)``.

Anchor order is a contract with the detector's head: anchors are listed level by level (in the order of
`feature_sizes`), within a level row-major over ``(y, x)``, and within a location by anchor index in the order of
`ASPECT_RATIOS`. A head whose ``(N, k * c, H, W)`` output is permuted to ``(N, H, W, k * c)`` and reshaped to
``(N, H * W * k, c)`` per level, then concatenated over levels, produces exactly this order. Box coding and
matching against them live with the detection evaluator (`nas.evaluation.detection.boxes`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Anchor shapes per location for each supported count, in anchor-index order. Each entry is an aspect ratio
# (width / height) at the level's scale s_k; the string "extra" is SSD's additional square anchor of scale
# sqrt(s_k * s_{k+1}). The sets are those of the SSD paper: 4 = {1, extra, 2, 1/2}, 6 = 4 plus {3, 1/3}.
ASPECT_RATIOS: dict[int, tuple[float | str, ...]] = {
    2: (1.0, "extra"),
    3: (1.0, 2.0, 0.5),
    4: (1.0, "extra", 2.0, 0.5),
    6: (1.0, "extra", 2.0, 0.5, 3.0, 1.0 / 3.0),
}


def level_scales(num_levels: int, min_scale: float = 0.1, max_scale: float = 0.9) -> list[float]:
    """SSD's per-level anchor scales, plus one more for the last level's extra anchor.

    Scales rise linearly from `min_scale` (first, finest level) to `max_scale` (last level); the appended
    ``num_levels + 1``-th scale is 1.0, so the last level's extra anchor is ``sqrt(max_scale)``.

    Args:
        num_levels: number of feature maps.
        min_scale: anchor side, as a share of the image side, on the first level.
        max_scale: anchor side on the last level (ignored when there is one level).

    Returns:
        ``num_levels + 1`` scales.
    """
    if num_levels == 1:
        return [min_scale, 1.0]
    step = (max_scale - min_scale) / (num_levels - 1)
    return [min_scale + step * k for k in range(num_levels)] + [1.0]


def make_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    anchors_per_location: int,
    min_scale: float = 0.1,
    max_scale: float = 0.9,
) -> torch.Tensor:
    """SSD anchors for a stack of feature maps, in the order described in the module docstring.

    Args:
        feature_sizes: ``(height, width)`` of each feature map, finest first.
        anchors_per_location: one of the keys of `ASPECT_RATIOS` (2, 3, 4 or 6).
        min_scale: anchor side on the first level, as a share of the image side.
        max_scale: anchor side on the last level.

    Returns:
        Float tensor ``(A, 4)`` of normalised ``(cx, cy, w, h)``, with
        ``A = anchors_per_location * sum(h * w for h, w in feature_sizes)``. Widths and heights are capped at 1.

    Raises:
        ValueError: unsupported `anchors_per_location`, empty `feature_sizes` or bad scales.
    """
    if anchors_per_location not in ASPECT_RATIOS:
        raise ValueError(
            f"anchors_per_location must be one of {sorted(ASPECT_RATIOS)}, got {anchors_per_location}"
        )
    if not feature_sizes:
        raise ValueError("feature_sizes is empty; give at least one (height, width)")
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale} and {max_scale}")
    scales = level_scales(len(feature_sizes), min_scale, max_scale)
    aspects = ASPECT_RATIOS[anchors_per_location]
    levels = []
    for k, (fh, fw) in enumerate(feature_sizes):
        if fh < 1 or fw < 1:
            raise ValueError(f"feature_sizes[{k}] must be positive (height, width), got {(fh, fw)}")
        shapes = torch.tensor([_anchor_shape(ar, scales[k], scales[k + 1]) for ar in aspects])
        cy, cx = torch.meshgrid(
            (torch.arange(fh, dtype=torch.float32) + 0.5) / fh,
            (torch.arange(fw, dtype=torch.float32) + 0.5) / fw,
            indexing="ij",
        )
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(shapes), 2)
        sizes = shapes.reshape(1, -1, 2).expand(fh * fw, -1, 2)
        levels.append(torch.cat([centres, sizes], dim=-1).reshape(-1, 4))
    anchors = torch.cat(levels)
    anchors[:, 2:] = anchors[:, 2:].clamp(max=1.0)
    return anchors


def _anchor_shape(aspect: float | str, scale: float, next_scale: float) -> tuple[float, float]:
    """``(w, h)`` of one anchor: SSD's extra square anchor, or `scale` at aspect ratio `aspect` (w / h)."""
    if aspect == "extra":
        side = math.sqrt(scale * next_scale)
        return side, side
    return scale * math.sqrt(aspect), scale / math.sqrt(aspect)
