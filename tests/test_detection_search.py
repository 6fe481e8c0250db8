"""Detection search: the `detection` evaluator on data the tests make, and a joint backbone + head search end to
end through Ray Tune (results with mAP columns, the exported detector with its anchors and ONNX parity)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from nas.evaluation import make_evaluator
from search_spaces import get_space

TINY_DATA = {"synthetic_train": 24, "synthetic_val": 8, "synthetic_size": 64}


@pytest.fixture
def evaluator(tmp_path):
    return make_evaluator("detection", {**TINY_DATA, "data_dir": str(tmp_path), "epochs": 1, "batch_size": 8})


def test_evaluator_trains_a_detector_and_reports_map(evaluator):
    assert evaluator.num_classes() == 4
    sp = get_space("lrssd", {"resolution": 64, "backbone_options": {"preset": "40m"}}, num_classes=4)
    torch.manual_seed(0)
    model = sp.build(sp.sample(np.random.default_rng(0)))
    before = [p.detach().clone() for p in model.parameters()]
    out = evaluator.evaluate(model, 64)
    assert out["accuracy"] == out["map50"] and 0 <= out["map"] <= out["map50"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # it trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a trial without a GPU gets")
def test_evaluator_asked_for_cuda_without_a_gpu_says_so(tmp_path):
    ev = make_evaluator("detection", {**TINY_DATA, "data_dir": str(tmp_path), "device": "cuda"})
    assert make_evaluator("detection", {**TINY_DATA, "data_dir": str(tmp_path)}).device() == "cpu"   # auto
    with pytest.raises(RuntimeError, match="evaluator.options.device is 'cuda'.*gpus_per_trial"):
        ev.device()


def test_evaluator_refuses_a_model_without_anchors(evaluator):
    with pytest.raises(TypeError, match="model.anchors"):
        evaluator.evaluate(torch.nn.Conv2d(3, 3, 1), 64)


@pytest.mark.parametrize("mode, kept", [("auto", True), ("on", True), ("off", False)])
def test_evaluator_keeps_a_small_dataset_in_memory_unless_told_not_to(tmp_path, mode, kept):
    ev = make_evaluator("detection", {**TINY_DATA, "data_dir": str(tmp_path), "cache_images": mode, "limit": 16})
    train, val = ev._data(64)
    assert len(train) == 16 and train.dataset.in_memory is kept and val.in_memory is kept


def test_evaluator_reads_a_dataset_too_big_for_memory_from_disk(tmp_path, monkeypatch):
    import nas.evaluation.detection.evaluator as module

    monkeypatch.setattr(module, "CACHE_AUTO_BYTES", 3 * 64 * 64 * 31)   # one image short of both splits
    train, val = make_evaluator("detection", {**TINY_DATA, "data_dir": str(tmp_path)})._data(64)
    assert not train.in_memory and not val.in_memory


def test_coco_dataset_needs_its_files(tmp_path):
    with pytest.raises(ValueError, match="needs evaluator.options.path"):
        make_evaluator("detection", {"dataset": "coco"})
    with pytest.raises(ValueError, match="train_images .* does not exist"):
        make_evaluator("detection", {"dataset": "coco", "path": str(tmp_path)})


def test_coco_dataset_reads_a_folder_in_the_documented_layout(tmp_path):
    from nas.evaluation.detection.synthetic import make_synthetic_coco

    data = make_synthetic_coco(tmp_path / "coco", 6, 4, 64, 0)
    ev = make_evaluator("detection", {"dataset": "coco", "path": str(data.root)})
    assert ev.num_classes() == 4 and ev.files()["val_annotations"] == data.val_annotations


def test_joint_search_end_to_end_through_ray_tune(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "lrssd_detection.yaml").read_text())
    recipe["space"]["options"]["resolution"] = 64
    recipe["evaluator"]["options"].update(TINY_DATA, data_dir=str(tmp_path / "data"), epochs=1, batch_size=8,
                                          threads=1)
    recipe["constraints"]["latency"][0].update(calibration=4, max_ms=1000.0)
    recipe["search"]["budget"] = 2
    recipe["tracking"] = "none"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(path), "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    ok = table[table.status == "ok"]
    assert len(ok) == 2 and ok.map50.between(0, 1).all() and (ok.accuracy == ok.map50).all()
    assert all("::" in a for a in table.arch)
    summary = json.loads((out / "best.json").read_text())
    assert summary["export"]["onnx_max_abs_diff"] < 1e-3
    anchors = json.loads((out / "best" / "anchors.json").read_text())["anchors"]
    model = get_space("lrssd", recipe["space"]["options"], num_classes=4).build(
        get_space("lrssd", recipe["space"]["options"], num_classes=4).decode(summary["best"]["arch"]))
    assert np.allclose(anchors, model.anchors.numpy(), atol=1e-6)
    card = (out / "best" / "MODEL_CARD.md").read_text()
    assert "| map50 |" in card and "| map |" in card and "anchors.json" in card
    release_and_load_detector(out, tmp_path / "zoo")


def release_and_load_detector(run, zoo):
    """A searched detector released to a zoo loads with its anchors and postprocessing (`nas.zoo`)."""
    import onnxruntime as ort

    import nas.zoo

    proc = subprocess.run([sys.executable, "-m", "nas.zoo", "release", str(run), "--zoo", str(zoo), "--version", "v1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((zoo / "zoo.json").read_text())["networks"][0]
    card = json.loads((zoo / entry["path"] / "card.json").read_text())
    assert card["task"] == "detection" and card["accuracy"]["metric"] == "map50" and "map" in card["metrics"]
    assert "synthetic shapes" in card["provenance"]["dataset"]["name"]
    model = nas.zoo.create_model(entry["name"], zoo=zoo)
    anchors = json.loads((zoo / entry["path"] / "anchors.json").read_text())["anchors"]
    assert np.allclose(anchors, model.anchors.numpy(), atol=1e-6)
    x = torch.rand(1, *card["space"]["input_shape"][1:])
    session = ort.InferenceSession(str(zoo / entry["path"] / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        logits, deltas = model(x)
    for got, want in zip(session.run(None, {session.get_inputs()[0].name: x.numpy()}), (logits, deltas)):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    detections = model.postprocess(logits, deltas)
    assert len(detections) == 1 and set(detections[0]) >= {"boxes", "scores", "labels"}
