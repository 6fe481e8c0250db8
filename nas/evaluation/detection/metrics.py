"""Detection mean average precision through pycocotools' `COCOeval`.

`detection_map` scores in-memory predictions against in-memory targets (the dicts `nas.evaluation.detection.data` and
`nas.evaluation.detection.postprocess` produce) by building the COCO ground truth from a dict, so no file is written.
`coco_map` does the same from COCO-format data: an annotation file or dict plus a list of COCO result records.

Scores are COCO's: ``map`` is AP averaged over IoU thresholds 0.50:0.05:0.95, ``map50`` is AP at IoU 0.5 and
``map75`` at 0.75, each with 101-point interpolated precision, averaged over the categories that have ground truth,
with at most 100 detections per image. pycocotools prints progress; that is silenced here.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from nas.evaluation.data import DatasetError

_NO_SCORES = {"map": 0.0, "map50": 0.0, "map75": 0.0}


def _pycocotools():
    """The two pycocotools classes, or an ImportError saying how to install them."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("detection mAP needs pycocotools: pip install pycocotools") from None
    return COCO, COCOeval


def _load_ground_truth(ground_truth: dict | str | Path) -> dict:
    """A COCO ground-truth dict, read from `ground_truth` when it is a path."""
    if isinstance(ground_truth, dict):
        return ground_truth
    path = Path(ground_truth)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"annotation file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {path}: expected a JSON object at the top level")
    return data


def coco_map(ground_truth: dict | str | Path, results: Sequence[dict]) -> dict[str, float]:
    """COCO mAP of result records against COCO-format ground truth.

    Args:
        ground_truth: an ``instances_*.json`` path or the same content as a dict (``images``, ``annotations``
            with ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``area``, ``iscrowd``, and
            ``categories``).
        results: COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, in the
            ground truth's pixel coordinates.

    Returns:
        ``{"map", "map50", "map75"}``, all 0.0 when there are no results.

    Raises:
        ValueError: the ground truth holds no (non-crowd) box, so AP is undefined.
    """
    COCO, COCOeval = _pycocotools()
    gt_dict = _load_ground_truth(ground_truth)
    if not any(not a.get("iscrowd", 0) for a in gt_dict.get("annotations", [])):
        raise ValueError("the ground truth has no boxes, so mAP is undefined")
    if not results:
        return dict(_NO_SCORES)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = _with_defaults(gt_dict)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])      # loadRes adds fields to the records
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    # COCOeval reports -1 where nothing could be scored; no detection matched anything there.
    return {"map": max(float(stats[0]), 0.0), "map50": max(float(stats[1]), 0.0), "map75": max(float(stats[2]), 0.0)}


def _with_defaults(gt: dict) -> dict:
    """A shallow copy of `gt` with the optional fields COCOeval reads (``info``, ``area``, ``iscrowd``) filled in."""
    annotations = []
    for ann in gt.get("annotations", []):
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        annotations.append(ann)
    return {**gt, "info": gt.get("info", {}), "annotations": annotations}


def _pixel_xywh(boxes: torch.Tensor, size: tuple[int, int] | None) -> list[list[float]]:
    """Normalised xyxy boxes as ``[x, y, w, h]`` lists, in pixels of an image of ``size = (h, w)`` if given."""
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    if size is not None:
        h, w = size
        boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return xywh.tolist()


def targets_to_coco(targets: Sequence[dict]) -> dict:
    """COCO ground truth built from per-image target dicts.

    Args:
        targets: dicts with ``boxes`` ``(K, 4)`` normalised xyxy and ``labels`` ``(K,)`` in 1..C; optional
            ``image_id`` (default: position in the list) and ``orig_size`` ``(h, w)``, which puts boxes in
            pixels so COCO's small/medium/large areas mean what they usually do (the headline scores do not
            depend on it).

    Returns:
        A COCO dict with one category per label seen.
    """
    images, annotations, labels = [], [], set()
    for i, t in enumerate(targets):
        image_id = int(t.get("image_id", i))
        size = _size(t)
        images.append({"id": image_id, "height": size[0] if size else 1, "width": size[1] if size else 1})
        for box, label in zip(_pixel_xywh(t["boxes"], size), t["labels"].tolist()):
            labels.add(int(label))
            # Annotation ids start at 1: COCOeval uses 0 to mean "unmatched".
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": c} for c in sorted(labels)]}


def _size(target: dict) -> tuple[int, int] | None:
    """The ``(h, w)`` of a target's original image, or None when it has no ``orig_size``."""
    size = target.get("orig_size")
    if size is None:
        return None
    h, w = (int(v) for v in (size.tolist() if isinstance(size, torch.Tensor) else size))
    return h, w


def detection_map(targets: Sequence[dict], detections: Sequence[dict]) -> dict[str, float]:
    """COCO mAP of per-image detections against per-image targets, all in memory.

    Args:
        targets: per-image ground truth, as `targets_to_coco` takes.
        detections: per-image predictions in the same order, dicts with ``boxes`` ``(D, 4)`` normalised xyxy,
            ``scores`` ``(D,)`` and ``labels`` ``(D,)`` in 1..C (what `nas.evaluation.detection.postprocess.postprocess`
            returns).

    Returns:
        ``{"map", "map50", "map75"}``; 0.0 each when there are no detections at all.

    Raises:
        ValueError: lengths differ, or the targets hold no box.
    """
    if len(targets) != len(detections):
        raise ValueError(f"got {len(detections)} detection lists for {len(targets)} images")
    gt = targets_to_coco(targets)
    results = []
    for image, t, d in zip(gt["images"], targets, detections):
        for box, score, label in zip(_pixel_xywh(d["boxes"], _size(t)), d["scores"].tolist(), d["labels"].tolist()):
            results.append({"image_id": image["id"], "category_id": int(label), "bbox": box, "score": float(score)})
    # Detections of a class with no ground truth anywhere are false positives COCOeval would skip silently; they
    # still need a category entry for loadRes, and without ground truth they cannot change the mean.
    known = {c["id"] for c in gt["categories"]}
    gt["categories"] += [{"id": c} for c in sorted({r["category_id"] for r in results} - known)]
    return coco_map(gt, results)
