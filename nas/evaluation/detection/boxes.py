"""Box coding and anchor matching against SSD anchors, all vectorised over anchors.

Coordinates are normalised to ``[0, 1]`` of the image side. Anchors are ``(cx, cy, w, h)``; ground-truth and
predicted boxes are ``(x1, y1, x2, y2)``. The anchors themselves, and the order a head's predictions follow, are
made next to the heads (`search_spaces.heads.anchors`), which build detectors with them.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou as _tv_box_iou

# SSD's box variances: the encoded centre offsets are divided by 0.1 and the log sizes by 0.2, which brings the
# regression targets to roughly unit scale.
VARIANCES = (0.1, 0.2)
# Largest log size change `decode` accepts (as torchvision's BoxCoder): exp() of more would overflow in float16.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


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
