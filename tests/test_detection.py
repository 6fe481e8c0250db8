"""Tests for nas.evaluation.detection: anchors and box coding, losses, NMS, COCO mAP, the COCO loader and synthetic data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas.evaluation.detection.boxes import cxcywh_to_xyxy, decode, encode, match
from nas.evaluation.detection.data import CocoDetection, collate_detection
from nas.evaluation.detection.loss import detection_loss, focal_loss, hard_negative_mask, ssd_loss
from nas.evaluation.detection.metrics import coco_map, detection_map
from nas.evaluation.detection.postprocess import postprocess
from nas.evaluation.detection.synthetic import MARKER, make_synthetic_coco, render_image
from nas.evaluation.detection.train import evaluate_detector, train_detector
from nas.evaluation.data import DatasetError
from search_spaces.heads.anchors import ASPECT_RATIOS, make_anchors

# ---------------------------------------------------------------- anchors and box coding


@pytest.mark.parametrize("k", sorted(ASPECT_RATIOS))
def test_anchor_count_and_order(k):
    anchors = make_anchors([(4, 4), (2, 3)], k)
    assert anchors.shape == (k * (16 + 6), 4)
    # Within a location: k anchors sharing one centre, first the square at the level's scale.
    assert torch.allclose(anchors[:k, :2], torch.tensor([0.125, 0.125]).expand(k, 2))
    assert torch.allclose(anchors[0, 2:], torch.tensor([0.1, 0.1]))
    # Row-major over (y, x): the next location is one step right, the one after a row is one step down.
    assert torch.allclose(anchors[k, :2], torch.tensor([0.375, 0.125]))
    assert torch.allclose(anchors[4 * k, :2], torch.tensor([0.125, 0.375]))
    # The second level starts after all of the first; its 2x3 map has centres at x = 1/6 and y = 1/4.
    assert torch.allclose(anchors[16 * k, :2], torch.tensor([1 / 6, 0.25]))
    assert torch.allclose(anchors[16 * k, 2:], torch.tensor([0.9, 0.9]))


def test_anchor_aspect_ratios_and_extra_scale():
    anchors = make_anchors([(1, 1), (1, 1)], 6, min_scale=0.2, max_scale=0.4)
    w, h = anchors[:6, 2], anchors[:6, 3]
    assert torch.allclose(w / h, torch.tensor([1.0, 1.0, 2.0, 0.5, 3.0, 1 / 3]), atol=1e-5)
    assert math.isclose(float(w[1]), math.sqrt(0.2 * 0.4), rel_tol=1e-5)   # SSD's extra anchor sqrt(s_k s_k+1)


def test_anchors_match_a_head_laid_out_as_documented():
    # A head's (N, k * 4, H, W) map holding, for anchor slot a at (y, x), the values (cx, cy, a, level),
    # flattened as the boxes module documents, lines up with make_anchors.
    sizes, k = [(4, 6), (2, 3)], 4
    flat = []
    for level, (h, w) in enumerate(sizes):
        cy, cx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        maps = [torch.stack([cx, cy, torch.full_like(cx, a), torch.full_like(cx, level)]) for a in range(k)]
        head = torch.cat(maps).unsqueeze(0)                                  # (1, k * 4, H, W)
        flat.append(head.permute(0, 2, 3, 1).reshape(1, -1, 4))
    flat = torch.cat(flat, dim=1)[0]
    anchors = make_anchors(sizes, k)
    assert torch.allclose(flat[:, :2], anchors[:, :2])
    assert torch.equal(flat[:, 2], (torch.arange(len(anchors)) % k).float())
    assert torch.equal(flat[:, 3], (torch.arange(len(anchors)) >= 24 * k).float())


def test_reference_detector_predicts_one_row_per_anchor():
    from nas.evaluation.detection.demo import TinySSD

    model = TinySSD(num_classes=3, width=4)
    cls, box = model(torch.zeros(2, 3, 64, 64))
    assert cls.shape == (2, len(model.anchors(64)), 4) and box.shape == (2, len(model.anchors(64)), 4)


def test_bad_anchor_arguments():
    with pytest.raises(ValueError, match="anchors_per_location must be one of"):
        make_anchors([(2, 2)], 5)
    with pytest.raises(ValueError, match="feature_sizes is empty"):
        make_anchors([], 4)


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen) * 0.6
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(50, 2, generator=gen) * 0.35], dim=1)
    anchors = make_anchors([(5, 10)], 2)[:50]
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-5)
    assert torch.allclose(encode(cxcywh_to_xyxy(anchors), anchors), torch.zeros(50, 4), atol=1e-5)


def test_match_assigns_by_threshold_and_forces_every_box():
    anchors = make_anchors([(4, 4)], 2)
    exact = cxcywh_to_xyxy(anchors[10:11])                              # matches anchor 10 perfectly
    tiny = torch.tensor([[0.80, 0.80, 0.82, 0.82]])                     # IoU far below 0.5 with every anchor
    labels, boxes = match(torch.cat([exact, tiny]), torch.tensor([1, 2]), anchors)
    assert labels[10] == 1 and torch.allclose(boxes[10], exact[0])
    assert (labels == 2).sum() == 1                                     # forced onto its best anchor only
    assert (boxes[labels == 0] == 0).all()


def test_match_gives_two_boxes_wanting_one_anchor_different_anchors():
    anchors = make_anchors([(2, 2)], 2)
    a = cxcywh_to_xyxy(anchors[0:1])
    b = a * 0.98                                                          # same best anchor, a bit lower IoU
    labels, _ = match(torch.cat([b, a]), torch.tensor([2, 1]), anchors, iou_threshold=1.01)
    assert labels[0] == 1                                                 # the higher IoU keeps the anchor
    assert sorted(labels[labels > 0].tolist()) == [1, 2]


def test_match_without_objects_is_all_background():
    labels, boxes = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), make_anchors([(3, 3)], 4))
    assert (labels == 0).all() and (boxes == 0).all()


# ---------------------------------------------------------------- losses


def _toy_problem(num_classes: int = 3):
    anchors = make_anchors([(4, 4), (2, 2)], 4, min_scale=0.2, max_scale=0.6)
    targets = [
        {"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.45], [0.5, 0.5, 0.95, 0.9]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[0.3, 0.2, 0.7, 0.6]]), "labels": torch.tensor([2])},
    ]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, len(anchors), num_classes + 1, generator=gen)
    deltas = torch.randn(2, len(anchors), 4, generator=gen) * 0.1
    return anchors, targets, logits, deltas


@pytest.mark.parametrize("loss", ["ssd", "focal"])
def test_loss_is_finite_and_decreases(loss):
    anchors, targets, logits, deltas = _toy_problem()
    logits, deltas = nn.Parameter(logits), nn.Parameter(deltas)
    opt = torch.optim.Adam([logits, deltas], lr=0.05)
    values = []
    for _ in range(30):
        out = detection_loss(logits, deltas, anchors, targets, loss=loss)
        assert torch.isfinite(out["loss"]) and out["num_pos"] >= 3
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        values.append(out["loss"].item())
    assert values[-1] < 0.5 * values[0]


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    ce = torch.tensor([[0.1, 5.0, 0.2, 0.9, 0.8, 0.7, 0.3, 0.4, 0.05, 0.6]])
    positive = torch.zeros_like(ce, dtype=torch.bool)
    positive[0, 1] = True
    kept = hard_negative_mask(ce, positive, 3.0)
    assert kept.sum() == 3 and not kept[0, 1]
    assert kept[0].nonzero().squeeze(1).tolist() == [3, 4, 5]        # the three hardest negatives


def test_ssd_loss_counts_only_mined_negatives():
    anchors, targets, logits, deltas = _toy_problem()
    out = ssd_loss(logits, deltas, anchors, targets)
    # Making an unmined, easy background anchor even easier must not change the loss.
    from nas.evaluation.detection.loss import match_batch

    labels, _ = match_batch(targets, anchors)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    easiest = ce.masked_fill(labels > 0, float("inf"))[0].argmin()
    easier = logits.clone()
    easier[0, easiest, 0] += 10.0
    assert torch.isclose(ssd_loss(easier, deltas, anchors, targets)["loss"], out["loss"])


def test_focal_loss_reduces_to_weighted_cross_entropy_at_gamma_zero():
    anchors, targets, logits, deltas = _toy_problem()
    from nas.evaluation.detection.loss import match_batch

    labels, _ = match_batch(targets, anchors)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    out = focal_loss(logits, deltas, anchors, targets, alpha=0.5, gamma=0.0)
    assert torch.isclose(out["cls"], 0.5 * ce.sum() / (labels > 0).sum())
    # gamma > 0 down-weights easy anchors, so the focal term is smaller.
    assert focal_loss(logits, deltas, anchors, targets, alpha=0.5)["cls"] < out["cls"]


def test_loss_errors_are_one_line():
    anchors, targets, logits, deltas = _toy_problem()
    with pytest.raises(ValueError, match="unknown detection loss 'bogus'; expected one of: ssd, focal"):
        detection_loss(logits, deltas, anchors, targets, loss="bogus")
    with pytest.raises(ValueError, match="anchors were given"):
        ssd_loss(logits, deltas, anchors[:-1], targets)
    with pytest.raises(ValueError, match="labels outside 1..3"):
        ssd_loss(logits, deltas, anchors, [targets[0], {"boxes": torch.zeros(1, 4) + 0.5, "labels": torch.tensor([4])}])


# ---------------------------------------------------------------- post-processing


def _confident(anchors: torch.Tensor, hits: dict[int, tuple[int, float]], num_classes: int = 2):
    """Logits giving anchor i class c with probability p for each ``i: (c, p)``, background elsewhere."""
    probs = torch.full((1, len(anchors), num_classes + 1), 1e-4)
    probs[..., 0] = 1.0
    for i, (c, p) in hits.items():
        probs[0, i] = (1 - p) / num_classes
        probs[0, i, c] = p
    return probs.log(), torch.zeros(1, len(anchors), 4)


def test_nms_removes_duplicates_and_keeps_other_classes():
    anchors = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.51, 0.5, 0.4, 0.4], [0.5, 0.51, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]])
    logits, deltas = _confident(anchors, {0: (1, 0.9), 1: (1, 0.8), 2: (2, 0.7), 3: (1, 0.6)})
    (det,) = postprocess(logits, deltas, anchors, score_threshold=0.3, nms_iou=0.5)
    assert det["labels"].tolist() == [1, 2, 1]                            # anchor 1 suppressed by anchor 0
    assert torch.allclose(det["scores"], torch.tensor([0.9, 0.7, 0.6]), atol=1e-3)
    assert torch.allclose(det["boxes"][0], torch.tensor([0.3, 0.3, 0.7, 0.7]))
    (capped,) = postprocess(logits, deltas, anchors, score_threshold=0.3, max_detections=2)
    assert capped["labels"].tolist() == [1, 2]
    (none,) = postprocess(logits, deltas, anchors, score_threshold=0.95)
    assert none["boxes"].shape == (0, 4)


# ---------------------------------------------------------------- mAP


def _gt(*boxes_labels, size=(100, 200)):
    boxes = torch.tensor([b for b, _ in boxes_labels], dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor([c for _, c in boxes_labels]), "orig_size": size}


def _det(*boxes_scores_labels):
    boxes = torch.tensor([b for b, _, _ in boxes_scores_labels], dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "scores": torch.tensor([s for _, s, _ in boxes_scores_labels]),
            "labels": torch.tensor([c for _, _, c in boxes_scores_labels], dtype=torch.long)}


A, B = [0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]


def test_map_is_one_for_perfect_and_zero_for_no_detections(capsys):
    targets = [_gt((A, 1), (B, 2)), _gt((B, 1))]
    perfect = [_det((A, 0.9, 1), (B, 0.8, 2)), _det((B, 0.7, 1))]
    assert detection_map(targets, perfect) == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})
    assert detection_map(targets, [_det(), _det()]) == {"map": 0.0, "map50": 0.0, "map75": 0.0}
    assert capsys.readouterr().out == ""                                  # pycocotools' printing is silenced


def test_map_partial_cases_by_hand():
    # A false positive ranked above the only true positive: precision 1/2 at recall 1, so AP = 0.5.
    targets = [_gt((A, 1))]
    assert detection_map(targets, [_det((B, 0.9, 1), (A, 0.8, 1))])["map50"] == pytest.approx(0.5)
    # One of two objects found, with no false positive: precision 1 up to recall 0.5, so 51 of COCO's 101
    # recall points score 1.
    targets = [_gt((A, 1)), _gt((B, 1))]
    assert detection_map(targets, [_det((A, 0.9, 1)), _det()])["map50"] == pytest.approx(51 / 101)
    # A box with IoU 0.587 counts at thresholds 0.5 and 0.55 only: 2 of the 10 that "map" averages.
    shifted = [0.1, 0.1 + 0.4 * 0.26, 0.4, 0.5 + 0.4 * 0.26]          # IoU 0.74 / 1.26
    result = detection_map([_gt((A, 1))], [_det((shifted, 0.9, 1))])
    assert result["map50"] == pytest.approx(1.0) and result["map"] == pytest.approx(0.2)


def test_map_from_an_annotation_file(tmp_path):
    gt = {"images": [{"id": 5, "height": 10, "width": 10}], "categories": [{"id": 3}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4]}]}
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(gt))
    hit = {"image_id": 5, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.9}
    assert coco_map(path, [hit])["map50"] == pytest.approx(1.0)
    assert coco_map(path, [])["map"] == 0.0
    with pytest.raises(DatasetError, match="missing.json does not exist"):
        coco_map(tmp_path / "missing.json", [hit])


# ---------------------------------------------------------------- COCO loader


def write_coco(root: Path, images: dict[str, tuple[int, int]], annotations: list[dict]) -> tuple[Path, Path]:
    """Write PNGs of the given ``name: (h, w)`` and an annotation file with categories 3 ('b') and 7 ('a')."""
    from PIL import Image

    folder = root / "images"
    folder.mkdir(parents=True)
    records = []
    for i, (name, (h, w)) in enumerate(images.items()):
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(folder / name)
        records.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    data = {"images": records, "annotations": annotations,
            "categories": [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}]}
    ann = root / "instances_train.json"
    ann.write_text(json.dumps(data))
    return folder, ann


def test_coco_loader_maps_labels_normalises_boxes_and_skips_crowds(tmp_path):
    folder, ann = write_coco(tmp_path, {"x.png": (50, 100), "y.png": (40, 40)}, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 40, 20]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 50], "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [90, 40, 30, 30]},     # runs off the image: clipped
    ])
    data = CocoDetection(folder, ann, image_size=32)
    assert len(data) == 2 and data.class_names == ["b", "a"] and data.num_classes == 2
    image, target = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert target["labels"].tolist() == [2, 1] and target["image_id"] == 1
    assert torch.allclose(target["boxes"], torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.9, 0.8, 1.0, 1.0]]))
    assert target["orig_size"].tolist() == [50, 100]
    assert data[1][1]["boxes"].shape == (0, 4)
    images, targets = collate_detection([data[0], data[1]])
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2


def test_coco_loader_flip_mirrors_boxes(tmp_path):
    folder, ann = write_coco(tmp_path, {"x.png": (50, 100)}, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 40, 20]}])
    torch.manual_seed(0)
    data = CocoDetection(folder, ann, image_size=32, train=True, flip_prob=1.0)
    assert torch.allclose(data[0][1]["boxes"], torch.tensor([[0.5, 0.1, 0.9, 0.5]]))


def test_coco_loader_cache_gives_the_same_items_without_rereading_files(tmp_path):
    folder, ann = write_coco(tmp_path, {"x.png": (50, 100), "y.png": (40, 40)}, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 40, 20]}])
    plain, cached = CocoDetection(folder, ann, image_size=32), CocoDetection(folder, ann, image_size=32, cache=True)
    flipped = CocoDetection(folder, ann, image_size=32, train=True, flip_prob=1.0, cache=True)
    expected = [plain[i] for i in range(2)]
    first = [cached[i] for i in range(2)] + [flipped[0]]
    for f in folder.iterdir():
        f.unlink()                                  # a cached dataset must not need its files again
    for i in range(2):
        image, target = cached[i]
        assert torch.equal(image, expected[i][0]) and torch.equal(image, first[i][0])
        assert torch.equal(target["boxes"], expected[i][1]["boxes"])
        assert target["orig_size"].tolist() == expected[i][1]["orig_size"].tolist()
    image, target = flipped[0]                      # the cache holds the unflipped image: each read flips it anew
    assert torch.equal(image, expected[0][0].flip(-1)) and torch.equal(image, first[2][0])
    assert torch.allclose(target["boxes"], torch.tensor([[0.5, 0.1, 0.9, 0.5]]))
    with pytest.raises(DatasetError, match="cannot be read"):
        plain[0]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"images": [], "categories": []}), "the top level has no field 'annotations'"),
    (json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1}],
                 "annotations": [{"image_id": 1, "category_id": 1}]}), r"annotations\[0\] has no field 'bbox'"),
    (json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1}],
                 "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]}), r"bbox must be 4 numbers"),
    (json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1}],
                 "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}), "image_id 2 is not in"),
    (json.dumps({"images": [{"file_name": "x.png"}], "categories": [], "annotations": []}),
     r"images\[0\] has no field 'id'"),
])
def test_coco_loader_errors_name_file_and_field(tmp_path, content, message):
    folder, _ = write_coco(tmp_path, {"x.png": (8, 8)}, [])
    bad = tmp_path / "instances_bad.json"
    bad.write_text(content)
    with pytest.raises(DatasetError, match=message) as info:
        CocoDetection(folder, bad, image_size=16)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_coco_loader_missing_paths(tmp_path):
    folder, ann = write_coco(tmp_path, {"x.png": (8, 8)}, [])
    with pytest.raises(DatasetError, match="image folder .* does not exist"):
        CocoDetection(tmp_path / "nope", ann, image_size=16)
    with pytest.raises(DatasetError, match="nope.json does not exist"):
        CocoDetection(folder, tmp_path / "nope.json", image_size=16)
    (folder / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="x.png cannot be read"):
        CocoDetection(folder, ann, image_size=16)[0]
    (folder / "x.png").unlink()
    with pytest.raises(DatasetError, match="1 image file"):
        CocoDetection(folder, ann, image_size=16)


# ---------------------------------------------------------------- synthetic data


SMALL = {"n_train": 6, "n_val": 3, "image_size": 64}


def _pixels(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_synthetic_is_deterministic(tmp_path, monkeypatch):
    import socket

    def offline(*args, **kwargs):
        raise AssertionError("the synthetic dataset must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", offline)
    from nas.evaluation.detection.synthetic import load_backgrounds

    load_backgrounds.cache_clear()                                       # read the photographs under the guard
    a = make_synthetic_coco(tmp_path / "a", seed=3, **SMALL)
    b = make_synthetic_coco(tmp_path / "b", seed=3, **SMALL)
    c = make_synthetic_coco(tmp_path / "c", seed=4, **SMALL)
    assert json.loads(a.train_annotations.read_text()) == json.loads(b.train_annotations.read_text())
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(a.val_images), _pixels(b.val_images)))
    assert not all(np.array_equal(x, y) for x, y in zip(_pixels(a.val_images), _pixels(c.val_images)))
    assert len(_pixels(a.train_images)) == 6 and not list(tmp_path.glob(".*"))    # no temp folder left


def test_synthetic_reuses_a_complete_folder_and_regenerates_otherwise(tmp_path):
    data = make_synthetic_coco(tmp_path / "d", seed=0, **SMALL)
    marker = data.root / MARKER
    stamp = marker.stat().st_mtime_ns
    make_synthetic_coco(tmp_path / "d", seed=0, **SMALL)
    assert marker.stat().st_mtime_ns == stamp                            # reused, not rewritten
    (data.train_images / "000002.png").unlink()                          # incomplete: regenerated
    make_synthetic_coco(tmp_path / "d", seed=0, **SMALL)
    assert (data.train_images / "000002.png").is_file()
    marker.unlink()                                                      # unfinished (no marker): regenerated
    make_synthetic_coco(tmp_path / "d", seed=0, **SMALL)
    assert marker.is_file()
    make_synthetic_coco(tmp_path / "d", seed=1, **SMALL)                 # other parameters: regenerated
    assert json.loads(marker.read_text())["seed"] == 1


def test_synthetic_never_replaces_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="holds files it did not write"):
        make_synthetic_coco(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_synthetic_boxes_lie_on_the_drawn_objects(tmp_path):
    data = make_synthetic_coco(tmp_path / "s", n_train=12, n_val=1, image_size=96, seed=0)
    coco = json.loads(data.train_annotations.read_text())
    images = _pixels(data.train_images)
    assert len(coco["annotations"]) >= 12 and {a["category_id"] for a in coco["annotations"]} == {1, 2, 3, 4}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        crop = images[ann["image_id"] - 1][y : y + h, x : x + w]
        hit = (crop == ann["attributes"]["color"]).all(axis=-1)
        assert hit.mean() > 0.2                                          # the object fills a good part of its box
        later = [a["bbox"] for a in coco["annotations"] if a["image_id"] == ann["image_id"] and a["id"] > ann["id"]]
        if not any(_intersects(ann["bbox"], other) for other in later):  # not drawn over: the box is tight
            assert hit[0].any() and hit[-1].any() and hit[:, 0].any() and hit[:, -1].any()


def _intersects(a: list[int], b: list[int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_default_dataset_lives_under_hwnas_data(tmp_path, monkeypatch):
    from nas.evaluation.detection.synthetic import default_dataset

    monkeypatch.setenv("HWNAS_DATA", str(tmp_path))
    data = default_dataset(n_train=2, n_val=1, image_size=32)
    assert data.root.parent == tmp_path / "detection" and data.train_annotations.is_file()


def test_render_image_respects_object_counts():
    params = {"image_size": 64, "min_objects": 2, "max_objects": 2, "min_size": 0.2, "max_size": 0.3,
              "max_overlap": 0.0}
    for i in range(5):
        _, objects = render_image(np.random.default_rng(i), params)
        assert len(objects) == 2 and not _intersects(objects[0]["bbox"], objects[1]["bbox"])


# ---------------------------------------------------------------- end to end


class TinyDetector(nn.Module):
    """Three conv layers to stride 8 and a 3x3 head on that one level: enough to find big shapes at 64 px."""

    def __init__(self, num_classes: int, k: int = 4) -> None:
        super().__init__()
        self.c, self.k = num_classes + 1, k

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(3, 16), *conv(16, 32), *conv(32, 32))
        self.head = nn.Conv2d(32, k * (self.c + 4), 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(x)).permute(0, 2, 3, 1)                # (N, H, W, k * (c + 4))
        out = out.reshape(x.shape[0], -1, self.c + 4)                    # anchor order: (y, x, anchor)
        return out[..., : self.c], out[..., self.c :]


def test_training_beats_an_untrained_detector(tmp_path):
    data = make_synthetic_coco(tmp_path / "e2e", n_train=128, n_val=48, image_size=64, seed=0,
                               max_objects=2, min_size=0.3, max_size=0.5)
    train, val = data.datasets(64)
    anchors = make_anchors([(8, 8)], 4, min_scale=0.4, max_scale=0.4)
    torch.manual_seed(0)
    model = TinyDetector(num_classes=4)
    before = evaluate_detector(model, anchors, val)
    # One thread: the tensors are small, and on a shared 2-core runner two threads were ten times slower.
    fit = train_detector(model, anchors, train, steps=100, batch_size=16, lr=5e-3, seed=0, threads=1,
                         progress=False)
    after = evaluate_detector(model, anchors, val)
    assert fit["loss"] < fit["losses"][0]
    assert after["map50"] > before["map50"] + 0.2, (before, after)


def test_training_is_repeatable_with_a_seed(tmp_path):
    data = make_synthetic_coco(tmp_path / "rep", n_train=16, n_val=1, image_size=32, seed=0)
    train, _ = data.datasets(32)
    anchors = make_anchors([(4, 4)], 4, min_scale=0.3, max_scale=0.3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_detector(TinyDetector(num_classes=4), anchors, train, steps=4, batch_size=8, seed=1,
                                   threads=1, progress=False)["losses"])
    assert runs[0] == runs[1]


def test_train_detector_needs_one_budget(tmp_path):
    model, anchors = TinyDetector(num_classes=1), make_anchors([(1, 1)], 4)
    train = [(torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)})]
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        train_detector(model, anchors, train, epochs=1, steps=1)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        train_detector(model, anchors, train, steps=1, optimizer="adam", progress=False)
