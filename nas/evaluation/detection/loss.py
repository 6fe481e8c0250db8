"""Detection losses over dense anchor predictions: SSD multibox loss and focal loss.

Both take a detector's raw outputs, ``cls_logits (N, A, C + 1)`` with column 0 the background and
``box_deltas (N, A, 4)``, plus per-image targets ``{"boxes": (K, 4) normalised xyxy, "labels": (K,) 1..C}``.
Anchors are matched to targets with `nas.evaluation.detection.boxes.match`; the box term is smooth L1 on the matched
(positive) anchors' encoded offsets. Both losses are normalised by the number of positive anchors in the batch.

The focal loss is the softmax form (one distribution over background and the C classes per anchor) rather than
RetinaNet's per-class sigmoid, so a detector trained with either loss is scored, decoded and evaluated the same
way (softmax, background column dropped).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nas.evaluation.detection.boxes import VARIANCES, encode, match

LOSSES = ("ssd", "focal")


def match_batch(
    targets: Sequence[dict], anchors: torch.Tensor, iou_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match every image's targets to the anchors and encode the box targets.

    Args:
        targets: per-image dicts with ``boxes`` ``(K, 4)`` xyxy and ``labels`` ``(K,)``.
        anchors: ``(A, 4)`` centre-size anchors.
        iou_threshold: IoU for a positive match.

    Returns:
        ``(labels, deltas)``: ``(N, A)`` long anchor labels (0 = background) and ``(N, A, 4)`` encoded targets.
    """
    labels, boxes = zip(*(
        match(t["boxes"].to(anchors.device), t["labels"].to(anchors.device), anchors, iou_threshold)
        for t in targets
    ))
    labels, boxes = torch.stack(labels), torch.stack(boxes)
    return labels, encode(boxes, anchors.unsqueeze(0), VARIANCES)


def _box_loss(box_deltas: torch.Tensor, target_deltas: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Summed smooth L1 over the positive anchors' four offsets."""
    return F.smooth_l1_loss(box_deltas[positive], target_deltas[positive], reduction="sum", beta=1.0)


def _per_positive(cls_sum: torch.Tensor, box_deltas: torch.Tensor, target_deltas: torch.Tensor,
                  positive: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"loss", "cls", "box", "num_pos"}``: the summed classification term and the box term, each divided by
    the number of positive anchors (at least 1)."""
    num_pos = positive.sum()
    denom = num_pos.clamp(min=1).to(cls_sum.dtype)
    cls, box = cls_sum / denom, _box_loss(box_deltas, target_deltas, positive) / denom
    return {"loss": cls + box, "cls": cls, "box": box, "num_pos": num_pos}


def hard_negative_mask(ce: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """The negatives SSD keeps: per image, the ``neg_pos_ratio * num_positives`` highest-loss background anchors.

    Args:
        ce: ``(N, A)`` per-anchor classification loss.
        positive: ``(N, A)`` boolean mask of matched anchors.
        neg_pos_ratio: negatives kept per positive.

    Returns:
        ``(N, A)`` boolean mask of the kept negatives (disjoint from `positive`).
    """
    num_neg = (positive.sum(dim=1, keepdim=True) * neg_pos_ratio).long()
    num_neg = num_neg.clamp(max=(~positive).sum(dim=1, keepdim=True))
    ranked = ce.detach().masked_fill(positive, -float("inf"))
    order = ranked.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)                                  # rank of each anchor's loss within its image
    return (rank < num_neg) & ~positive


def ssd_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: Sequence[dict],
    *,
    iou_threshold: float = 0.5,
    neg_pos_ratio: float = 3.0,
) -> dict[str, torch.Tensor]:
    """SSD multibox loss: smooth L1 on positives plus cross-entropy with hard negative mining.

    Args:
        cls_logits: ``(N, A, C + 1)`` class logits, column 0 background.
        box_deltas: ``(N, A, 4)`` predicted offsets (see `nas.evaluation.detection.boxes.encode`).
        anchors: ``(A, 4)`` centre-size anchors.
        targets: per-image dicts with ``boxes`` and ``labels``.
        iou_threshold: IoU for a positive match.
        neg_pos_ratio: background anchors kept per positive (3 in SSD).

    Returns:
        ``{"loss", "cls", "box", "num_pos"}``: the total (``cls + box``) and its two terms, each divided by the
        number of positives (at least 1), and that number.
    """
    _check_shapes(cls_logits, box_deltas, anchors, targets)
    labels, target_deltas = match_batch(targets, anchors, iou_threshold)
    positive = labels > 0
    ce = F.cross_entropy(cls_logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    negative = hard_negative_mask(ce, positive, neg_pos_ratio)
    return _per_positive((ce * (positive | negative)).sum(), box_deltas, target_deltas, positive)


def focal_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: Sequence[dict],
    *,
    iou_threshold: float = 0.5,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Softmax focal loss over all anchors (no hard negative mining) plus smooth L1 on positives.

    Per anchor the classification term is ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``, with ``p_t`` the softmax
    probability of the anchor's matched class and ``alpha_t = alpha`` for object anchors and ``1 - alpha`` for
    background ones, as in RetinaNet.

    Args:
        cls_logits: ``(N, A, C + 1)`` class logits, column 0 background.
        box_deltas: ``(N, A, 4)`` predicted offsets.
        anchors: ``(A, 4)`` centre-size anchors.
        targets: per-image dicts with ``boxes`` and ``labels``.
        iou_threshold: IoU for a positive match.
        alpha: weight of object anchors (background anchors get ``1 - alpha``).
        gamma: focusing exponent; 0 gives alpha-weighted cross-entropy.

    Returns:
        ``{"loss", "cls", "box", "num_pos"}`` as `ssd_loss`.
    """
    _check_shapes(cls_logits, box_deltas, anchors, targets)
    labels, target_deltas = match_batch(targets, anchors, iou_threshold)
    positive = labels > 0
    log_p = F.log_softmax(cls_logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    weight = torch.where(positive, alpha, 1.0 - alpha) * (1.0 - log_p.exp()).pow(gamma)
    return _per_positive(-(weight * log_p).sum(), box_deltas, target_deltas, positive)


def detection_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: Sequence[dict],
    *,
    loss: str = "ssd",
    iou_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The loss named by `loss` (``"ssd"`` or ``"focal"``) with its default settings.

    Raises:
        ValueError: unknown `loss` (the message lists the valid names).
    """
    if loss == "ssd":
        return ssd_loss(cls_logits, box_deltas, anchors, targets, iou_threshold=iou_threshold)
    if loss == "focal":
        return focal_loss(cls_logits, box_deltas, anchors, targets, iou_threshold=iou_threshold)
    raise ValueError(f"unknown detection loss {loss!r}; expected one of: {', '.join(LOSSES)}")


def _check_shapes(
    cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor, targets: Sequence[dict]
) -> None:
    """One-line errors for the mistakes a new detector head makes (wrong anchor count, layout or batch)."""
    if cls_logits.dim() != 3 or cls_logits.shape[2] < 2:
        raise ValueError(f"cls_logits must be (N, A, C + 1) with C >= 1, got {tuple(cls_logits.shape)}")
    n, a, classes = cls_logits.shape
    if box_deltas.shape != (n, a, 4):
        raise ValueError(f"box_deltas must be (N, A, 4) = {(n, a, 4)}, got {tuple(box_deltas.shape)}")
    if anchors.shape != (a, 4):
        raise ValueError(f"the detector predicts {a} anchors per image but {anchors.shape[0]} anchors were given")
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for a batch of {n} images")
    for i, t in enumerate(targets):
        if t["labels"].numel() and not 1 <= int(t["labels"].min()) <= int(t["labels"].max()) < classes:
            raise ValueError(f"targets[{i}] has labels outside 1..{classes - 1} (cls_logits has {classes} columns)")
