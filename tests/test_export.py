"""Tests for nas.export: packaging a searched network and checking the ONNX graph against PyTorch."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nas.export import export_network, format_figure, load_weights, onnx_parity

ARCH = "ir_r1_k3_s2_e1_c16|ir_r2_k5_s2_e4_c24"  # opaque to the exporter; only stored and shown
SHAPE = (1, 3, 32, 32)


def mobilenet(seed: int) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("mobilenetv3_small_050", num_classes=10, pretrained=False).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "best"
    model = mobilenet(0)
    figures = {"accuracy": 0.91234, "flops": 12_345_678, "params": 567_890, "latency_ms[cpu-ort-1t]": 1.23456}
    paths = export_network(
        model, SHAPE, out, arch=ARCH, figures=figures, title="Best of run 7", extra={"seed": "0", "space": "mbv3"}
    )
    return model, out, paths, figures


def test_export_writes_all_four_files(exported):
    _, out, paths, _ = exported
    assert set(paths) == {"weights", "onnx", "arch", "card"}
    names = {"weights.safetensors", "model.onnx", "arch.txt", "MODEL_CARD.md"}
    assert {p.name for p in paths.values()} == names
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths.values())
    assert {p.name for p in out.iterdir()} == names  # no temp files left behind
    assert paths["arch"].read_text() == ARCH + "\n"


def test_safetensors_carries_arch_metadata(exported):
    from safetensors import safe_open

    _, _, paths, _ = exported
    with safe_open(str(paths["weights"]), framework="pt") as fh:
        assert fh.metadata() == {"arch": ARCH}


def test_weights_round_trip_gives_identical_outputs(exported):
    model, _, paths, _ = exported
    fresh = mobilenet(1)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))
        load_weights(fresh, paths["weights"]).eval()
        assert torch.equal(fresh(x), model(x))


def test_load_weights_is_strict(exported):
    _, _, paths, _ = exported
    with pytest.raises(RuntimeError):
        load_weights(nn.Sequential(nn.Linear(4, 2)), paths["weights"])


def test_onnx_matches_pytorch(exported):
    model, _, paths, _ = exported
    assert onnx_parity(model, paths["onnx"], SHAPE, n=2) < 1e-4


def test_onnx_parity_detects_a_different_network(exported):
    _, _, paths, _ = exported
    assert onnx_parity(mobilenet(1), paths["onnx"], SHAPE) > 1e-3


def test_model_card_names_arch_figures_input_and_loading(exported):
    _, _, paths, figures = exported
    card = paths["card"].read_text()
    assert card.startswith("# Best of run 7\n")
    assert ARCH in card
    for key, value in figures.items():
        assert f"| {key} | {format_figure(value)} |" in card
    assert "| accuracy | 0.9123 |" in card and "| flops | 12,345,678 |" in card
    assert "1x3x32x32" in card
    assert f"space.build(space.decode({ARCH!r}))" in card
    assert "weights.safetensors" in card
    assert "**seed**: 0" in card and "**space**: mbv3" in card


def test_export_preserves_training_mode(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten()).train()
    export_network(model, (1, 3, 8, 8), tmp_path, arch="tiny", figures={})
    assert model.training


@pytest.mark.parametrize(
    "value, text",
    [(0.91234, "0.9123"), (1234, "1,234"), (56_000_000.0, "56,000,000"), (3.5, "3.5"), ("n/a", "n/a"),
     (True, "True"), (float("nan"), "nan")],
)
def test_format_figure(value, text):
    assert format_figure(value) == text


def test_sha256sums_cover_the_folder_and_refuse_damaged_weights(tmp_path):
    import hashlib
    import shutil

    from core.errors import IntegrityError
    from core.io import verify_sha256sums, write_sha256sums

    model = mobilenet(0)
    out = tmp_path / "best"
    export_network(model, SHAPE, out, arch=ARCH, figures={"accuracy": 0.5})
    (out / "plan_local-cpu" / "artifact").mkdir(parents=True)   # a deployment plan's folder is covered too
    (out / "plan_local-cpu" / "artifact" / "run_plan.py").write_text("print(1)\n")
    (out / ".model.onnx.tmp").write_bytes(b"left by a killed write")   # hidden: not listed
    sums = write_sha256sums(out)
    listed = dict(line.split("  ")[::-1] for line in sums.read_text().splitlines())
    assert set(listed) == {"weights.safetensors", "model.onnx", "arch.txt", "MODEL_CARD.md",
                           "plan_local-cpu/artifact/run_plan.py"}
    assert listed["arch.txt"] == hashlib.sha256((out / "arch.txt").read_bytes()).hexdigest()   # sha256sum -c
    verify_sha256sums(out)
    (out / "plan_local-cpu" / "artifact" / "run_plan.py").write_text("print(2)\n")
    with pytest.raises(IntegrityError, match="run_plan.py"):
        verify_sha256sums(out)
    shutil.rmtree(out / "plan_local-cpu")
    write_sha256sums(out)
    load_weights(mobilenet(1), out / "weights.safetensors")
    for damage in ("flip", "truncate", "delete"):
        bad = tmp_path / damage
        shutil.copytree(out, bad)
        w = bad / "weights.safetensors"
        data = w.read_bytes()
        if damage == "flip":
            w.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
        elif damage == "truncate":
            w.write_bytes(data[: len(data) // 2])
        else:
            w.unlink()
        with pytest.raises(IntegrityError, match="weights.safetensors: (SHA-256 mismatch|missing)"):
            load_weights(mobilenet(1), w)
