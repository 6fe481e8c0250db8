"""SSD anchors ("default boxes"), box coding and anchor matching, all vectorised over anchors.

Coordinates are normalised to ``[0, 1]`` of the image side. Anchors are ``(cx, cy, w, h)``; ground-truth and
predicted boxes are ``(x1, y1, x2, y2)``.

Anchor order is a contract with the detector's head: anchors are listed level by level (in the order of
`feature_sizes`), within a level row-major over ``(y, x)``, and within a location by anchor index in the order of
`ASPECT_RATIOS`. A head whose ``(N, k * c, H, W)`` output is permuted to ``(N, H, W, k * c)`` and reshaped to
``(N, H * W * k, c)`` per level, then concatenated over levels, produces exactly this order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import box_iou as _tv_box_iou

# SSD's box variances: the encoded centre offsets are divided by 0.1 and the log sizes by 0.2, which brings the
# regression targets to roughly unit scale.
VARIANCES = (0.1, 0.2)
# Largest log size change `decode` accepts (as torchvision's BoxCoder): exp() of more would overflow in float16.
_MAX_LOG_SCALE = math.log(1000.0 / 16)

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


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre-size boxes as corner boxes."""
    centre, half = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corner boxes as centre-size boxes."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two sets of corner boxes.

    Args:
        boxes_a: ``(M, 4)`` xyxy boxes.
        boxes_b: ``(K, 4)`` xyxy boxes.

    Returns:
        ``(M, K)`` IoU matrix.
    """
    return _tv_box_iou(boxes_a, boxes_b)


def encode(gt_xyxy: torch.Tensor, anchors: torch.Tensor, variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """SSD regression targets of boxes relative to anchors.

    Args:
        gt_xyxy: ``(..., 4)`` corner boxes, one per anchor (broadcast against `anchors`).
        anchors: ``(..., 4)`` centre-size anchors.
        variances: SSD's ``(centre, size)`` variances.

    Returns:
        ``(..., 4)`` deltas ``((cx - acx) / (aw * v0), (cy - acy) / (ah * v0), log(w / aw) / v1, log(h / ah) / v1)``.
    """
    gt = xyxy_to_cxcywh(gt_xyxy)
    centre = (gt[..., :2] - anchors[..., :2]) / (anchors[..., 2:] * variances[0])
    # A zero-size box (e.g. the placeholder target of a background anchor) would give log(0); its delta is unused.
    size = torch.log(gt[..., 2:].clamp(min=1e-8) / anchors[..., 2:]) / variances[1]
    return torch.cat([centre, size], dim=-1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Inverse of `encode`: corner boxes from regression deltas.

    Args:
        deltas: ``(..., 4)`` predicted deltas (broadcast against `anchors`).
        anchors: ``(..., 4)`` centre-size anchors.
        variances: SSD's ``(centre, size)`` variances.

    Returns:
        ``(..., 4)`` xyxy boxes in normalised coordinates (not clipped to the image).
    """
    centre = anchors[..., :2] + deltas[..., :2] * variances[0] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp((deltas[..., 2:] * variances[1]).clamp(max=_MAX_LOG_SCALE))
    return cxcywh_to_xyxy(torch.cat([centre, size], dim=-1))


def match(
    gt_boxes: torch.Tensor, gt_labels: torch.Tensor, anchors: torch.Tensor, iou_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign every anchor a class label and a target box (SSD matching).

    An anchor takes the ground-truth box it overlaps most when that IoU is at least `iou_threshold`, and is
    background (label 0) otherwise. In addition every ground-truth box is forced onto its own best anchor, even
    below the threshold, so no object goes unlearnt; when two boxes want the same anchor the one with the higher
    IoU keeps it and the other takes its best remaining anchor.

    Args:
        gt_boxes: ``(G, 4)`` xyxy ground-truth boxes (G may be 0).
        gt_labels: ``(G,)`` class labels, 1..C.
        anchors: ``(A, 4)`` centre-size anchors.
        iou_threshold: IoU at or above which an anchor is matched.

    Returns:
        ``(labels, boxes)``: ``(A,)`` long labels (0 = background) and ``(A, 4)`` xyxy target boxes (zeros for
        background anchors).
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.long, device=anchors.device),
            torch.zeros(num_anchors, 4, dtype=anchors.dtype, device=anchors.device),
        )
    iou = box_iou(gt_boxes.to(anchors.dtype), cxcywh_to_xyxy(anchors))        # (G, A)
    best_iou, best_gt = iou.max(dim=0)                                         # per anchor
    forced = _force_best_anchors(iou)                                          # (G,) distinct anchor indices
    best_gt[forced] = torch.arange(len(forced), device=iou.device)
    best_iou[forced] = 2.0                                                     # above any threshold
    labels = gt_labels.to(torch.long)[best_gt]
    labels[best_iou < iou_threshold] = 0
    boxes = gt_boxes.to(anchors.dtype)[best_gt] * (labels > 0).unsqueeze(1)
    return labels, boxes


def _force_best_anchors(iou: torch.Tensor) -> torch.Tensor:
    """A distinct anchor for every ground-truth box (row of `iou`), each as close to its best as conflicts allow.

    Each round, every unassigned box bids for its best free anchor; where several bid for one anchor the
    highest IoU wins (ties to the lower box index). A round assigns at least one box, so there are at most G
    rounds, and nearly always one.
    """
    num_gt, num_anchors = iou.shape
    if num_gt > num_anchors:
        raise ValueError(f"cannot force {num_gt} ground-truth boxes onto {num_anchors} anchors")
    assigned = torch.full((num_gt,), -1, dtype=torch.long, device=iou.device)
    free = iou.clone()
    while (pending := assigned < 0).any():
        bidders = pending.nonzero().squeeze(1)
        bid_iou, bid_anchor = free[bidders].max(dim=1)
        # Strongest bidder first; the stable sort keeps the lower box index first among equal bids.
        order = torch.argsort(bid_iou, descending=True, stable=True)
        bidders, bid_anchor = bidders[order], bid_anchor[order]
        _, slot = torch.unique(bid_anchor, return_inverse=True)
        position = torch.arange(len(slot), device=iou.device)
        first = torch.full((len(slot),), len(slot), dtype=torch.long, device=iou.device)
        first.scatter_reduce_(0, slot, position, reduce="amin")
        wins = position == first[slot]                     # the first (strongest) bidder for each anchor
        assigned[bidders[wins]] = bid_anchor[wins]
        free[:, bid_anchor[wins]] = -1.0
    return assigned
