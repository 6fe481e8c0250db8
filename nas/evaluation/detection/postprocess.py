"""From dense detector outputs to a short list of detections per image.

Per image: softmax over background and classes, drop the background column, keep (anchor, class) pairs scoring
above a threshold, decode their boxes, suppress duplicates class by class (`torchvision.ops.batched_nms`) and keep
the best `max_detections`.
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from nas.evaluation.detection.boxes import VARIANCES, decode


@torch.no_grad()
def postprocess(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    *,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    pre_nms_top_k: int = 1000,
) -> list[dict[str, torch.Tensor]]:
    """Detections of every image in a batch.

    Args:
        cls_logits: ``(N, A, C + 1)`` class logits, column 0 background.
        box_deltas: ``(N, A, 4)`` predicted offsets.
        anchors: ``(A, 4)`` centre-size anchors.
        score_threshold: lowest class probability kept.
        nms_iou: IoU above which a lower-scoring box of the same class is suppressed.
        max_detections: most detections kept per image.
        pre_nms_top_k: most candidates per image passed to NMS (the highest-scoring ones); bounds the cost of
            an untrained detector whose scores all clear the threshold.

    Returns:
        One dict per image with ``boxes`` ``(D, 4)`` normalised xyxy clipped to ``[0, 1]``, ``scores`` ``(D,)``
        and ``labels`` ``(D,)`` long in 1..C, sorted by descending score.
    """
    scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]                # (N, A, C)
    boxes = decode(box_deltas.float(), anchors.unsqueeze(0), VARIANCES).clamp(0.0, 1.0)
    return [
        _select(scores[i], boxes[i], score_threshold, nms_iou, max_detections, pre_nms_top_k)
        for i in range(scores.shape[0])
    ]


def _select(
    scores: torch.Tensor, boxes: torch.Tensor, score_threshold: float, nms_iou: float, max_detections: int,
    top_k: int,
) -> dict[str, torch.Tensor]:
    """Threshold, top-k, per-class NMS and cap for one image's ``(A, C)`` scores and ``(A, 4)`` boxes."""
    num_classes = scores.shape[1]
    flat = scores.flatten()
    keep = (flat > score_threshold).nonzero().squeeze(1)
    if keep.numel() > top_k:
        keep = keep[flat[keep].topk(top_k).indices]
    cand_scores = flat[keep]
    anchor_idx, class_idx = keep // num_classes, keep % num_classes
    cand_boxes = boxes[anchor_idx]
    # A box of (near) zero area can come out of clipping; NMS and mAP both misbehave on it.
    valid = ((cand_boxes[:, 2] - cand_boxes[:, 0]) > 1e-6) & ((cand_boxes[:, 3] - cand_boxes[:, 1]) > 1e-6)
    cand_scores, class_idx, cand_boxes = cand_scores[valid], class_idx[valid], cand_boxes[valid]
    kept = batched_nms(cand_boxes, cand_scores, class_idx, nms_iou)[:max_detections]
    return {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": class_idx[kept] + 1}
