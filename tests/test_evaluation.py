"""Tests for nas.evaluation: datasets, proxy training and ONNX latency measurement."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.timing import LatencyStats, export_onnx, measure_latency, measure_module_latency
from nas.evaluation.data import DATASETS, DatasetError, load_dataset, split_indices
from nas.evaluation.proxy import TrainingDiverged, train_and_evaluate


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    """A small BN conv net that learns MNIST at 16x16 in a second."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 16, 1), *block(16, 32, 2), *block(32, 32, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


@pytest.fixture(scope="module")
def mnist16():
    return load_dataset("mnist5k", 16, limit=2000, seed=0)


def make_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 5) -> Path:
    """Write small PNGs of varying size and mode (grayscale and RGB) under root/<class>/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 10 + i, 12 + 2 * c
            if i % 2:
                img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
            else:
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
            img.save(root / name / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------------- datasets


def test_mnist5k_shapes_classes_and_normalisation():
    train, val, num_classes = load_dataset("mnist5k", 28, limit=1000)
    assert num_classes == 10
    assert len(train) + len(val) == 1000
    assert len(val) == pytest.approx(200, abs=10)
    x, y = train.tensors
    assert x.shape == (len(train), 3, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert abs(float(x.mean())) < 0.1
    assert 0.85 < float(x.std()) < 1.15


def test_mnist5k_resizes_to_resolution():
    train, val, _ = load_dataset("mnist5k", 32, limit=100)
    assert train.tensors[0].shape[1:] == (3, 32, 32)
    assert val.tensors[0].shape[1:] == (3, 32, 32)


def test_mnist5k_split_is_seed_stable():
    a_train, a_val, _ = load_dataset("mnist5k", 12, limit=300, seed=3)
    b_train, b_val, _ = load_dataset("mnist5k", 12, limit=300, seed=3)
    c_train, _, _ = load_dataset("mnist5k", 12, limit=300, seed=4)
    assert torch.equal(a_train.tensors[0], b_train.tensors[0])
    assert torch.equal(a_val.tensors[1], b_val.tensors[1])
    assert not torch.equal(a_train.tensors[0], c_train.tensors[0])


def test_mnist5k_held_out_images_are_exactly_those_the_limit_leaves_out():
    """A winner's held-out score uses only images its search neither trained nor validated on."""
    from nas.evaluation.data import held_out_mnist5k

    train, val, _ = load_dataset("mnist5k", 12, limit=4900, seed=3)
    held = held_out_mnist5k(12, seed=3, limit=4900)
    assert len(held) == 100 and held.tensors[0].shape[1:] == (3, 12, 12)
    flat = lambda d: {tuple(r) for r in d.tensors[0].flatten(1)[:, ::7].tolist()}  # noqa: E731
    seen = flat(train) | flat(val)
    assert len(seen) + len(flat(held)) > 4900 * 0.99 and not (flat(held) & seen)
    with pytest.raises(ValueError, match="leaves none of MNIST-5k's 5000 images out"):
        held_out_mnist5k(12, seed=3, limit=None)


def test_an_image_folder_s_test_folder_is_its_held_out_set(tmp_path):
    """``path/test/`` beside train/ and val/ is scored held out (at most ``limit`` images of it); without one, or
    for MNIST-5k with every image in use, there is no held-out set; a test/ of other classes is refused."""
    from nas.evaluation.data import DatasetError, check_image_folder, load_held_out

    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        make_image_folder(root / split, per_class=n)
    assert load_held_out("imagefolder", 8, path=str(root), seed=0, limit=None) is None
    make_image_folder(root / "test", per_class=3)
    held = load_held_out("imagefolder", 8, path=str(root), seed=0, limit=None)
    assert len(held) == 6 and held[0][0].shape == (3, 8, 8) and sorted({y for _, y in held}) == [0, 1]
    assert len(load_held_out("imagefolder", 8, path=str(root), seed=0, limit=4)) == 4
    assert load_held_out("mnist5k", 8, path=None, seed=0, limit=None) is None
    assert len(load_held_out("mnist5k", 8, path=None, seed=0, limit=4990)) == 10
    make_image_folder(root / "test", classes=("eel",), per_class=1)
    with pytest.raises(DatasetError, match="train classes \\['cat', 'dog'\\] differ from test"):
        check_image_folder(root)
    with pytest.raises(DatasetError, match="test classes"):
        load_held_out("imagefolder", 8, path=str(root), seed=0, limit=None)


def test_split_indices_is_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(4), 25)
    train, val = split_indices(labels, 0.2, seed=0)
    assert set(train).isdisjoint(val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    again_train, _ = split_indices(labels, 0.2, seed=0)
    assert np.array_equal(train, again_train)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar1m", 32)
    for name in DATASETS:
        assert name in str(info.value)


def test_image_folder_single_root_is_split(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=5)
    train, val, num_classes = load_dataset("imagefolder", 8, path=str(root), val_fraction=0.4)
    assert num_classes == 2
    assert len(train) + len(val) == 10
    assert sorted(int(val[i][1]) for i in range(len(val))) == [0, 0, 1, 1]
    image, label = train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert label in (0, 1)


def test_image_folder_uses_train_and_val_subfolders(tmp_path):
    make_image_folder(tmp_path / "train", per_class=4)
    make_image_folder(tmp_path / "val", per_class=2)
    train, val, num_classes = load_dataset("imagefolder", 6, path=str(tmp_path))
    assert (len(train), len(val), num_classes) == (8, 4, 2)
    assert all(val[i][0].shape == (3, 6, 6) for i in range(len(val)))


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_image_folder_bad_path_names_the_path(tmp_path, kind):
    path = tmp_path / "nowhere"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("not a folder")
    with pytest.raises(DatasetError, match="nowhere"):
        load_dataset("imagefolder", 8, path=str(path))


def test_image_folder_without_path_is_dataset_error():
    with pytest.raises(ValueError, match="path"):
        load_dataset("imagefolder", 8)


# ---------------------------------------------------------------------------------------------- proxy training


def test_training_is_deterministic_and_restores_global_settings():
    import timm

    train, val, _ = load_dataset("mnist5k", 32, limit=400)
    torch.manual_seed(0)
    initial = timm.create_model("mobilenetv3_small_050", num_classes=10, pretrained=False)
    a, b = copy.deepcopy(initial), copy.deepcopy(initial)
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    ra = train_and_evaluate(a, train, val, epochs=1, batch_size=32, seed=7, threads=1)
    rb = train_and_evaluate(b, train, val, epochs=1, batch_size=32, seed=7, threads=1)
    for key in ("accuracy", "val_loss", "train_loss", "steps"):
        assert ra[key] == rb[key], key
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv_stem.weight"], initial.state_dict()["conv_stem.weight"])
    assert torch.get_num_threads() == threads_before
    assert torch.are_deterministic_algorithms_enabled() == det_before


def test_training_learns_mnist(mnist16):
    train, val, _ = mnist16
    torch.manual_seed(0)
    result = train_and_evaluate(tiny_cnn(), train, val, epochs=3, batch_size=32, lr=0.1)
    assert result["accuracy"] > 0.6  # chance is 0.1; this budget reaches ~0.9
    assert result["train_loss"] < 1.0
    assert np.isfinite(result["val_loss"]) and result["train_seconds"] >= 0
    assert result["steps"] == 3 * (len(train) // 32)


def test_fractional_epochs_take_fraction_of_steps(mnist16):
    train, val, _ = mnist16
    torch.manual_seed(0)
    result = train_and_evaluate(tiny_cnn(), train, val, epochs=0.5, batch_size=50)
    assert result["steps"] == round(0.5 * (len(train) // 50))
    assert 0.0 <= result["accuracy"] <= 1.0


def test_training_on_lazy_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=6)
    train, val, num_classes = load_dataset("imagefolder", 8, path=str(root))
    torch.manual_seed(0)
    result = train_and_evaluate(tiny_cnn(num_classes), train, val, epochs=2, batch_size=4)
    assert result["steps"] == 2 * (len(train) // 4)
    assert 0.0 <= result["accuracy"] <= 1.0


def test_huge_learning_rate_raises_training_diverged():
    train, val, _ = load_dataset("mnist5k", 8, limit=300)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(TrainingDiverged, match="step"):
        train_and_evaluate(model, train, val, epochs=2, batch_size=32, lr=1e20)


class NanHead(nn.Module):
    """Turns every logit into NaN, as a broken op would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def test_nan_output_raises_training_diverged_on_first_step():
    train, val, _ = load_dataset("mnist5k", 8, limit=100)
    model = nn.Sequential(tiny_cnn(), NanHead())
    with pytest.raises(TrainingDiverged, match="step 1 "):
        train_and_evaluate(model, train, val, epochs=1, batch_size=16)
    # The deterministic-mode switch must be undone even when training fails.
    assert not torch.are_deterministic_algorithms_enabled()


# ----------------------------------------------------------------------------------------------------- latency


def test_export_onnx_writes_valid_file_and_restores_mode(tmp_path):
    import onnx

    model = tiny_cnn().train()
    path = export_onnx(model, (1, 3, 16, 16), tmp_path / "sub" / "m.onnx")
    assert path == tmp_path / "sub" / "m.onnx"
    onnx.checker.check_model(onnx.load(str(path)))
    assert model.training
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temp files left behind


def test_export_onnx_is_quiet(tmp_path, capsys):
    import timm

    model = timm.create_model("mobilenetv3_small_050", num_classes=10, pretrained=False)
    export_onnx(model, (1, 3, 32, 32), tmp_path / "m.onnx")
    assert capsys.readouterr().out == ""


def test_measure_latency_stats_are_positive_and_ordered(tmp_path):
    path = export_onnx(tiny_cnn(), (1, 3, 16, 16), tmp_path / "m.onnx")
    stats = measure_latency(path, (1, 3, 16, 16), threads=1, warmup=2, repeats=15)
    assert isinstance(stats, LatencyStats)
    assert (stats.repeats, stats.threads) == (15, 1)
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.mean_ms > 0 and stats.spread >= 0
    assert stats.spread == pytest.approx((stats.p90_ms - stats.p10_ms) / stats.median_ms)
    with pytest.raises(AttributeError):
        stats.median_ms = 0.0  # frozen


def test_min_seconds_extends_the_number_of_runs():
    stats = measure_module_latency(tiny_cnn(), (1, 3, 8, 8), warmup=0, repeats=1, min_seconds=0.05)
    assert stats.repeats > 1
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms


def test_export_falls_back_to_dynamo_exporter(tmp_path, monkeypatch, capsys):
    from core import timing as latency
    from nas.export import onnx_parity

    real = latency._export_to

    def legacy_gone(model, dummy, path, opset, dynamo):
        if not dynamo:
            raise RuntimeError("legacy exporter removed")
        real(model, dummy, path, opset, dynamo)

    monkeypatch.setattr(latency, "_export_to", legacy_gone)
    model = tiny_cnn().eval()
    path = export_onnx(model, (1, 3, 16, 16), tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # weights inline, no side file
    assert onnx_parity(model, path, (1, 3, 16, 16)) < 1e-4
    assert capsys.readouterr().out == ""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_proxy_training_on_the_gpu_repeats_itself_and_hands_the_model_back_on_the_cpu(mnist16):
    train, val, _ = mnist16
    results, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_cnn()
        results.append(train_and_evaluate(model, train, val, epochs=1, batch_size=32, device="cuda"))
        assert next(model.parameters()).device.type == "cpu"
        weights.append(model.state_dict())
    assert results[0]["accuracy"] == results[1]["accuracy"] and len(results[0]["losses"]) == results[0]["steps"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
