"""Single-shot object detection: anchors, losses, post-processing, COCO mAP, data and a built-in dataset.

A detector is any module with ``model(images) -> (cls_logits (N, A, C + 1), box_deltas (N, A, 4))`` whose A
predictions follow the order of `make_anchors` (see `search_spaces.heads.anchors`). Typical use::

    from nas.evaluation.detection import default_dataset, make_anchors, train_detector, evaluate_detector

    data = default_dataset()                      # generated once, offline, into ~/.cache/hwnas
    train, val = data.datasets(image_size=128)
    anchors = make_anchors([(16, 16), (8, 8), (4, 4)], 4, min_scale=0.1, max_scale=0.5)
    train_detector(model, anchors, train, epochs=16)
    print(evaluate_detector(model, anchors, val))  # {"map50": ..., "map": ..., "map75": ...}

Submodules are imported lazily by the names below, so ``import nas.evaluation.detection`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ASPECT_RATIOS": "search_spaces.heads.anchors", "make_anchors": "search_spaces.heads.anchors",
    "encode": "boxes", "decode": "boxes", "match": "boxes",
    "box_iou": "boxes", "cxcywh_to_xyxy": "boxes", "xyxy_to_cxcywh": "boxes",
    "ssd_loss": "loss", "focal_loss": "loss", "detection_loss": "loss",
    "postprocess": "postprocess",
    "detection_map": "metrics", "coco_map": "metrics", "targets_to_coco": "metrics",
    "CocoDetection": "data", "collate_detection": "data", "read_annotations": "data",
    "make_synthetic_coco": "synthetic", "default_dataset": "synthetic", "SyntheticCoco": "synthetic",
    "train_detector": "train", "evaluate_detector": "train", "predict": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.evaluation.detection' has no attribute {name!r}")
    module = _EXPORTS[name]
    return getattr(importlib.import_module(module if "." in module else f"nas.evaluation.detection.{module}"), name)
