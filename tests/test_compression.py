"""Compression-aware scoring (``compression: int8``, `nas.compression`): the quantized model, its score, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest import ASSETS, REPO
from nas.compression import int8_scores, onnx_logits, quantize_int8


class _Data:
    """A test evaluator's data: `quantization_data` is all `int8_scores` asks of an evaluator."""

    def __init__(self, calibration, validation):
        self.sets = (calibration, validation)

    def quantization_data(self, resolution: int):
        return self.sets


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _images(n: int, seed: int = 0, size: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, size, size, generator=g), torch.randint(0, 4, (n,), generator=g))


def test_the_int8_model_is_qdq_with_per_channel_weights_and_matches_its_fp32_reference(tmp_path):
    model = _net()
    fp32, int8 = quantize_int8(model, _images(100), (1, 3, 8, 8), tmp_path)
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # per-channel: some weight's scale holds one value per output channel
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert any(n.op_type == "DequantizeLinear" and scales.get(n.input[1], np.zeros(1)).size == 8
               for n in graph.node)
    images = _images(70, seed=1).tensors[0].numpy()   # not a multiple of the batch: the padded tail is dropped
    reference = model(torch.from_numpy(images)).detach().numpy()
    got_fp32, got_int8 = onnx_logits(fp32, images), onnx_logits(int8, images)
    assert got_int8.shape == reference.shape == got_fp32.shape
    np.testing.assert_allclose(got_fp32, reference, atol=1e-4)
    spread = np.abs(reference).max()
    assert np.abs(got_int8 - reference).max() < 0.05 * spread   # int8 rounding, not a different network
    assert np.abs(got_int8 - reference).max() > 0               # and really quantized


def test_int8_scores_report_the_quantized_accuracy_beside_the_fp32_one():
    model, val = _net(), _images(90, seed=2)
    with torch.no_grad():
        predicted = model(val.tensors[0]).argmax(1)
    val = TensorDataset(val.tensors[0], predicted)   # labels the fp32 network gets all right
    scores = int8_scores(model, _Data(_images(100), val), (1, 3, 8, 8), fp32_accuracy=1.0)
    assert scores["accuracy_fp32"] == 1.0
    assert 0.5 < scores["accuracy"] <= 1.0
    assert scores["accuracy_drop"] == pytest.approx(1.0 - scores["accuracy"])
    assert 0 < scores["quant_parity"] < 1


def test_int8_scores_score_on_the_images_asked_for_instead_of_the_validation_set():
    model, other = _net(), _images(60, seed=5)
    with torch.no_grad():
        predicted = model(other.tensors[0]).argmax(1)
    right, wrong = TensorDataset(other.tensors[0], predicted), TensorDataset(other.tensors[0], (predicted + 1) % 4)
    data = _Data(_images(100), wrong)   # the validation labels are all wrong, the images asked for all right
    assert int8_scores(model, data, (1, 3, 8, 8), 1.0)["accuracy"] < 0.5
    assert int8_scores(model, data, (1, 3, 8, 8), 1.0, scored_on=right)["accuracy"] > 0.5


def test_calibration_draws_its_images_across_a_class_sorted_set_with_a_fixed_seed():
    """MNIST-5k is sorted by class: the first 128 training images are all zeros, and ranges calibrated on them
    clipped the other digits' activations (one network: 0.879 int8 against 0.963 fp32)."""
    from torch.utils.data import Subset

    from nas.compression import CALIBRATION_IMAGES, calibration_sample

    labels = torch.arange(10).repeat_interleave(100)   # 1,000 images, class-sorted
    data = TensorDataset(torch.rand(1000, 3, 8, 8, generator=torch.Generator().manual_seed(0)), labels)
    sample = calibration_sample(data)
    assert len(sample) == CALIBRATION_IMAGES and set(sample.tensors[1].tolist()) == set(range(10))
    assert torch.equal(sample.tensors[0], calibration_sample(data).tensors[0])   # the same images every time
    lazy = calibration_sample(Subset(data, list(range(1000))))   # any map-style set: a subset of it
    assert [int(lazy[i][1]) for i in range(len(lazy))] == sample.tensors[1].tolist()
    small = _images(40)
    assert calibration_sample(small) is small


def test_an_empty_or_misshaped_calibration_set_is_one_clear_error(tmp_path):
    model = _net()
    empty = TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="calibration set is empty"):
        quantize_int8(model, empty, (1, 3, 8, 8), tmp_path)
    with pytest.raises(ValueError, match=r"calibration images have shape \(3, 16, 16\)"):
        quantize_int8(model, _images(10, size=16), (1, 3, 8, 8), tmp_path)


def test_a_network_with_non_finite_outputs_fails_in_one_line_before_the_quantizer_asserts():
    model = _net()
    with torch.no_grad():
        model[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="outputs are not finite before quantization"):
        int8_scores(model, _Data(_images(20), _images(20)), (1, 3, 8, 8), fp32_accuracy=0.5)


def test_a_candidate_whose_quantization_fails_is_recorded_as_failed_and_the_search_goes_on(monkeypatch):
    from nas.context import RunContext
    from nas.recipe import read_recipe
    from nas.trial import evaluate_candidate

    recipe = read_recipe(ASSETS / "tiny.yaml", ["compression=int8", "constraints.latency=[]"])
    ctx = RunContext(recipe)
    import nas.compression

    def broken(*a, **k):
        raise FloatingPointError("the int8 network's outputs are not finite")

    monkeypatch.setattr(nas.compression, "int8_scores", broken)
    arch = ctx.space.to_string(ctx.space.sample(np.random.default_rng(0)))
    row = evaluate_candidate(ctx, arch)
    assert row["status"] == "failed" and row["accuracy"] is None
    assert row["error"] == "FloatingPointError: the int8 network's outputs are not finite"


def test_compression_needs_an_evaluator_that_can_score_a_quantized_network(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(tmp_path / "r"),
                           "--set", "compression=int8", "--set", "evaluator.name=tabular",
                           "--set", "evaluator.options={path: 'synthetic:nb201', accuracy: accuracy}",
                           "--set", "space.name=nb201", "--set", "space.options={}",
                           "--set", "constraints.latency=[]", "--set", "constraints.max_flops=null"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "compression: int8" in line and "'tabular' cannot score a quantized network" in line
    unknown = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output",
                              str(tmp_path / "u"), "--set", "compression=int3"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "compression" in unknown.stderr.strip().splitlines()[-1]


def test_a_search_with_compression_int8_scores_every_candidate_quantized(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
                           "--set", "compression=int8"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    ok = table[table.status == "ok"]
    assert len(ok) and {"accuracy_fp32", "accuracy_drop", "quant_parity"} <= set(table.columns)
    np.testing.assert_allclose(ok.accuracy, ok.accuracy_fp32 - ok.accuracy_drop)
    assert ok.quant_parity.gt(0).all()
    card = (out / "best" / "MODEL_CARD.md").read_text()
    assert "accuracy_fp32" in card and "accuracy_drop" in card and "model.int8.onnx" in card
    # the limit was on local-cpu (fp32); the int8 network as it ships is measured on this CPU too
    line = next(x for x in card.splitlines() if "latency local-cpu-int8 (ms, measured)" in x)
    assert float(line.rstrip(" |").split("|")[-1]) > 0 and "as it ships (int8 on this CPU)" in card
    # and against the fp32 network measured on the same CPU (which of the two is faster depends on the machine)
    fp32 = next(x for x in card.splitlines() if "latency local-cpu (ms, measured)" in x)
    ratio = next(x for x in card.splitlines() if "int8 / fp32 latency on this CPU (measured)" in x)
    assert float(ratio.rstrip(" |").split("|")[-1].strip().lstrip("x")) == pytest.approx(
        float(line.rstrip(" |").split("|")[-1]) / float(fp32.rstrip(" |").split("|")[-1]), abs=0.006)
    # shipped as scored: the int8 graph beside the fp32 one, covered by the checksums
    int8 = out / "best" / "model.int8.onnx"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "  model.int8.onnx\n" in (out / "best" / "SHA256SUMS").read_text()
    # held out (tiny.yaml's limit leaves 4,600 images out): the int8 figure is the shipped int8 graph's on them
    held = json.loads((out / "best.json").read_text())["export"]["held_out"]
    assert "| accuracy (held out) |" in card and "| accuracy_fp32 (held out) |" in card
    import onnxruntime as ort

    from nas.context import RunContext
    from nas.recipe import read_recipe

    images, labels = RunContext(read_recipe(out / "recipe.yaml")).evaluator.held_out(16).tensors
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: images[i:i + 1].numpy()})[0] for i in range(len(images))])
    assert held["images"] == 4600 and held["accuracy"] == pytest.approx(float((logits.argmax(1) == labels.numpy())
                                                                               .mean()), abs=2 / 4600)


@pytest.mark.slow
def test_a_search_with_quantization_aware_fine_tuning_ships_the_tuned_int8_state(tmp_path):
    """End to end with QAT (about 15 s of torchao conversion per candidate, hence slow): the exported network's
    shipped state remakes an int8 network whose accuracy is the one the search recorded."""
    pytest.importorskip("torchao")
    from safetensors.torch import load_file

    from core.quantize import convert_qat, prepare_qat
    from nas.compression import _arrays, calibration_batches
    from nas.context import RunContext
    from nas.export import load_weights
    from nas.recipe import read_recipe

    out = tmp_path / "run"
    sets = ["compression=int8", "quantizer=pt2e", "evaluator.options.qat_epochs=0.5", "search.budget=2"]
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
                           *sum((["--set", s] for s in sets), [])], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = json.loads((out / "best.json").read_text())["best"]
    assert "model.qat.safetensors" in (out / "best" / "MODEL_CARD.md").read_text()
    assert "  model.qat.safetensors\n" in (out / "best" / "SHA256SUMS").read_text()
    ctx = RunContext(read_recipe(out / "recipe.yaml"))
    arch = ctx.space.decode(best["arch"])
    model = ctx.space.build(arch)
    load_weights(model, out / "best" / "weights.safetensors")
    calibration, validation = ctx.evaluator.quantization_data(ctx.space.input_shape(arch)[-1])
    example = calibration_batches(calibration, ctx.space.input_shape(arch))[0]
    remade = prepare_qat(model.eval(), example)
    remade.load_state_dict(load_file(str(out / "best" / "model.qat.safetensors")))
    images, labels = _arrays(validation, "validation")
    with torch.no_grad():
        logits = convert_qat(remade)(torch.from_numpy(images)).numpy()
    assert (logits.argmax(1) == labels).mean() == pytest.approx(best["accuracy"])


@pytest.mark.parametrize("sets, expect", [
    (["compression=int8"], "local-cpu-int8"),
    (["compression=none"], None),
    (["compression=int8", "quantizer=pt2e"], None),   # runs in PyTorch, not onnxruntime
    (["compression=search", "space={name: macro, options: {resolution: 16, compression: {precisions: [fp32, "
      "int8]}}}"], "local-cpu"),
    (["compression=search", "space={name: macro, options: {resolution: 16, compression: {precisions: [int8, "
      "int4]}}}"], None),   # 4-bit weights: not what this CPU runs
])
def test_the_export_measures_a_compressed_network_as_it_ships_on_this_cpu(sets, expect, tmp_path):
    from nas.context import RunContext
    from nas.pipeline import shipped_latency
    from nas.recipe import read_recipe

    if "quantizer=pt2e" in sets:
        pytest.importorskip("torchao")
    ctx = RunContext(read_recipe(ASSETS / "tiny.yaml", [*sets, "constraints.latency=[]",
                                                        "constraints.max_flops=null"]), tmp_path)
    got = shipped_latency(ctx, ctx.space.sample(np.random.default_rng(0)), {})
    if expect is None:
        assert got is None
    else:
        assert got[0] == expect and got[1] > 0 and "as it ships" in got[2]


def test_an_int8_export_slower_than_its_fp32_network_on_this_cpu_is_said_so(tmp_path):
    from nas.context import RunContext
    from nas.pipeline import int8_over_fp32
    from nas.recipe import read_recipe

    ctx = RunContext(read_recipe(ASSETS / "tiny.yaml", ["compression=int8"]), tmp_path)
    arch = ctx.space.sample(np.random.default_rng(0))
    fp32 = {"local-cpu": {"measured_ms": 0.10}}
    ratio, note = int8_over_fp32(ctx, arch, fp32, ("local-cpu-int8", 0.17, "as it ships"))
    assert ratio == pytest.approx(1.7) and "model.int8.onnx runs x1.70 the time of model.onnx (fp32)" in note
    assert "compression: search" in note
    assert int8_over_fp32(ctx, arch, fp32, ("local-cpu-int8", 0.06, "as it ships")) == (pytest.approx(0.6), "")
    # a local-cpu-int8 constraint measured it (then nothing is measured again as it ships)
    ratio, _ = int8_over_fp32(ctx, arch, {**fp32, "local-cpu-int8": {"measured_ms": 0.08}}, None)
    assert ratio == pytest.approx(0.8)
    assert int8_over_fp32(ctx, arch, fp32, None) is None   # the int8 network was not measured
    # without a local-cpu constraint the fp32 network is measured now
    ratio, _ = int8_over_fp32(ctx, arch, {}, ("local-cpu-int8", 0.05, "as it ships"))
    assert ratio > 0
    fp32_run = RunContext(read_recipe(ASSETS / "tiny.yaml", ["compression=none"]), tmp_path)
    assert int8_over_fp32(fp32_run, arch, fp32, ("local-cpu-int8", 0.17, "")) is None


def test_pt2e_quantizes_with_per_channel_weights_folded_batchnorm_and_agrees_with_onnxruntime(tmp_path):
    """PyTorch's PT2E flow (torchao) is the int8 path where a network runs in PyTorch: the same network and
    calibration give int8 logits near the fp32 ones and near onnxruntime's int8 ones."""
    pytest.importorskip("torchao")
    from core.quantize import quantize_pt2e
    from nas.compression import pt2e_logits

    model, calibration = _net(), _images(100)
    batch = calibration.tensors[0][:64].numpy()
    graph = quantize_pt2e(model, batch, [batch])
    ops = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert "quantized_decomposed.dequantize_per_channel.default" in ops and not any("batch_norm" in o for o in ops)
    images = _images(70, seed=1).tensors[0].numpy()   # not a multiple of the batch: the padded tail is dropped
    reference = model(torch.from_numpy(images)).detach().numpy()
    got, tuned = pt2e_logits(model, calibration, images)
    assert tuned is None   # no evaluator with a QAT budget: post-training quantization
    _, ort_int8 = quantize_int8(model, calibration, (1, 3, 8, 8), tmp_path)
    spread = np.abs(reference).max()
    assert got.shape == reference.shape
    assert 0 < np.abs(got - reference).max() < 0.05 * spread
    assert np.abs(got - onnx_logits(ort_int8, images)).max() < 0.05 * spread
    with pytest.raises(ValueError, match=r"calibration images have shape \(3, 16, 16\)"):
        pt2e_logits(model, _images(10, size=16), images)
    model.int8_modules = ("0",)   # a policy's int8 units: onnxruntime's to score
    with pytest.raises(Exception, match="PT2E cannot run a compression policy's int8 layers"):
        quantize_pt2e(model, batch, [batch])


def test_a_candidate_scored_with_the_pt2e_quantizer(tmp_path):
    pytest.importorskip("torchao")
    from nas.compression import export_int8
    from nas.context import RunContext
    from nas.recipe import read_recipe
    from nas.trial import evaluate_candidate

    recipe = read_recipe(ASSETS / "tiny.yaml", ["compression=int8", "quantizer=pt2e", "constraints.latency=[]"])
    ctx = RunContext(recipe, tmp_path)
    arch = ctx.space.to_string(ctx.space.sample(np.random.default_rng(0)))
    row = evaluate_candidate(ctx, arch)
    assert row["status"] == "ok", row.get("error")
    assert row["accuracy"] == pytest.approx(row["accuracy_fp32"] - row["accuracy_drop"]) and row["quant_parity"] > 0
    path, note = export_int8(None, ctx.evaluator, (1, 3, 8, 8), tmp_path, quantizer="pt2e")
    assert path is None and "PT2E" in note and "core.quantize.quantize_pt2e" in note


class _QatData(_Data):
    """A test evaluator with a quantization-aware budget: a few steps of the proxy's training loop."""

    def qat_epochs(self):
        return 2.0

    def fine_tune_quantized(self, model, resolution):
        from nas.evaluation.proxy import train_and_evaluate

        return train_and_evaluate(model, self.sets[0], self.sets[1], epochs=self.qat_epochs(), batch_size=32,
                                  lr=0.01)


def test_quantization_aware_fine_tuning_trains_the_fake_quantized_network_and_ships_its_weights(tmp_path):
    """QAT (the PT2E flow's fake-quantize nodes, trained by the evaluator) changes the weights, converts to an
    int8 graph that computes what was trained, and its shipped state remakes that int8 network exactly."""
    pytest.importorskip("torchao")
    from safetensors.torch import load_file

    from core.quantize import convert_qat, prepare_qat
    from nas.compression import export_int8, qat_tuned

    model, data = _net(), _QatData(_images(128), _images(70, seed=1))
    batch = data.sets[0].tensors[0][:64].numpy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepared, metrics = qat_tuned(model, batch, data)
    assert metrics["steps"] == 8 and 0 <= metrics["accuracy"] <= 1
    ops = {str(n.target) for n in prepared.graph.nodes if n.op == "call_module"}
    assert any("activation_post_process" in o for o in ops)   # fake-quantize modules in the graph
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # the fp32 model untouched
    images = torch.from_numpy(_images(70, seed=2).tensors[0].numpy())
    prepared.eval()
    with torch.no_grad():
        fake = prepared(images)
    int8 = convert_qat(prepared)
    graph_ops = {str(n.target) for n in int8.graph.nodes if n.op == "call_function"}
    assert "quantized_decomposed.dequantize_per_channel.default" in graph_ops
    with torch.no_grad():
        got = int8(images)
        fp32 = model(images)
    assert torch.allclose(got, fake, atol=0.05 * fake.abs().max())   # int8 computes what QAT trained
    assert (got - fp32).abs().max() > 1e-3                            # and QAT moved it from the fp32 network
    path, note = export_int8(model, data, (1, 3, 8, 8), tmp_path, quantizer="pt2e")
    assert path == tmp_path / "model.qat.safetensors" and "2 epochs of quantization-aware" in note
    # export fine-tunes again (deterministic on the CPU; scoring in eval mode moved no range) and ships the state
    remade = prepare_qat(model, batch)
    remade.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        torch.testing.assert_close(convert_qat(remade)(images), got)


def test_a_candidate_with_quantization_aware_fine_tuning_counts_it_as_training(tmp_path):
    pytest.importorskip("torchao")
    from nas.context import RunContext
    from nas.recipe import read_recipe
    from nas.trial import evaluate_candidate

    rows = []
    for qat in ([], ["evaluator.options.qat_epochs=0.5"]):
        recipe = read_recipe(ASSETS / "tiny.yaml", ["compression=int8", "quantizer=pt2e", "constraints.latency=[]",
                                                    *qat])
        ctx = RunContext(recipe, tmp_path / str(len(qat)))
        if qat:   # the fine-tuning as it runs, reporting a training time no candidate could reach without it
            tune = ctx.evaluator.fine_tune_quantized
            ctx.evaluator.fine_tune_quantized = lambda m, r: {**tune(m, r), "train_seconds": 1e4}
        arch = ctx.space.to_string(ctx.space.sample(np.random.default_rng(0)))
        rows.append(evaluate_candidate(ctx, arch))
        assert rows[-1]["status"] == "ok", rows[-1].get("error")
    ptq, qat = rows
    assert qat["accuracy_fp32"] == ptq["accuracy_fp32"]   # the same trained network before quantization
    assert qat["accuracy"] == pytest.approx(qat["accuracy_fp32"] - qat["accuracy_drop"])
    assert "qat_seconds" not in qat and 1e4 < qat["train_seconds"] < 1e4 + 1e3 > ptq["train_seconds"]


@pytest.mark.parametrize("sets, message", [
    (["quantizer=pt2e"], "quantizer: pt2e quantizes whole networks with compression: int8 (the recipe has "
                         "compression: none)"),
    (["quantizer=pt2e", "compression=int8", "__no_torchao__"], 'quantizer: pt2e needs the torchao package: '
                                                               'pip install -e ".[torchao]"'),
    (["quantizer=pt2e", "compression=int8", "__broken_torchao__"],
     "quantizer: pt2e: torchao cannot be imported with torch (RuntimeError: made for another torch)"),
    (["quantizer=tflite", "compression=int8"], "quantizer: Input should be 'onnxruntime' or 'pt2e'"),
    (["compression=int8", "evaluator.options.qat_epochs=1"],
     "evaluator.options.qat_epochs: quantization-aware fine-tuning runs in PyTorch's PT2E flow, with compression: "
     "int8 and quantizer: pt2e (the recipe has compression: int8, quantizer: onnxruntime)"),
])
def test_a_pt2e_recipe_that_cannot_run_is_refused_in_one_line(sets, message, monkeypatch):
    import core.quantize
    from nas.checks import load_run
    from nas.recipe import RecipeError

    if "__no_torchao__" in sets:   # as if not installed (submodules imported by other tests hidden too)
        for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")] + ["torchao"]:
            monkeypatch.setitem(sys.modules, name, None)
    if "__broken_torchao__" in sets:   # installed, but failing to import with this torch
        def broken():
            raise RuntimeError("made for another torch")
        monkeypatch.setattr(core.quantize, "pt2e_flow", broken)
    sets = [s for s in sets if not s.startswith("__")]
    with pytest.raises(RecipeError) as err:
        load_run(ASSETS / "tiny.yaml", sets)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_compression_bench_times_fp32_against_int8_and_prints_markdown(tmp_path):
    from conftest import load_bench

    bench = load_bench("compression")
    ms = bench.latency_pairs([(_net(), (1, 3, 8, 8)), (_net(), (1, 3, 8, 8))], _images(40), 1, tmp_path)
    assert ms.shape == (2, 2) and (ms > 0).all()
    table = bench.markdown(pd.DataFrame({"arm": ["a"], "int8 accuracy": [0.5]}))
    assert table.splitlines() == ["| arm | int8 accuracy |", "|---|---|", "| a | 0.5000 |"]


def test_the_matched_arm_under_a_simulator_limits_a_ratio_of_arm_a_s_own_figure_and_keeps_a_saved_one(tmp_path):
    """`--no-cpu --matched-ratio 0.7`: arm (c')'s limit is 0.7x (a)'s winner as the search priced it, on the same
    profile and source; a resumed (c') run keeps the limit its recipe saved."""
    from types import SimpleNamespace

    import yaml
    from conftest import load_bench

    bench = load_bench("compression")
    first = SimpleNamespace(profile="fpga-zc706-int8", source="profile")
    ctx = SimpleNamespace(recipe=SimpleNamespace(constraints=SimpleNamespace(latency=[first])))
    seed_a = (ctx, None, None, {"latency_fpga-zc706-int8": 0.3, "latency_other": 9.0})
    limit = yaml.safe_load(bench.matched_limit(tmp_path / "run", seed_a, 1, 0.7, no_cpu=True))
    assert limit == {"profile": "fpga-zc706-int8", "max_ms": pytest.approx(0.21), "source": "profile"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump({"constraints": {"latency": [
        {"profile": "fpga-zc706-int8", "max_ms": 0.2, "source": "profile"}]}}))
    kept = yaml.safe_load(bench.matched_limit(tmp_path / "run", None, 1, 0.7, no_cpu=True))
    assert kept == {"profile": "fpga-zc706-int8", "max_ms": 0.2, "source": "profile"}
    with pytest.raises(SystemExit, match="needs arm none"):
        bench.matched_limit(tmp_path / "fresh", None, 1, no_cpu=True)


def test_the_bench_scores_a_winner_on_the_images_its_search_left_out_and_refuses_when_none_are():
    from types import SimpleNamespace

    from conftest import load_bench
    from nas.evaluation.evaluators import ProxyOptions, ProxyTrainingEvaluator

    bench = load_bench("compression")
    evaluator = ProxyTrainingEvaluator(ProxyOptions(limit=4950, val_fraction=0.5), seed=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).eval()
    scores = bench.held_out_scores(SimpleNamespace(evaluator=evaluator), model, (1, 3, 12, 12), 1)
    assert scores["held-out images"] == 50
    assert 0 <= scores["held-out int8 accuracy"] <= 1 and 0 <= scores["held-out fp32 accuracy"] <= 1
    assert scores["held-out fp32 accuracy"] * 50 == pytest.approx(round(scores["held-out fp32 accuracy"] * 50))
    with pytest.raises(ValueError, match="limit None leaves no image out"):
        bench.held_out_scores(SimpleNamespace(evaluator=ProxyTrainingEvaluator(ProxyOptions())), model,
                              (1, 3, 12, 12), 1)
    # and before any search runs: the quickstart uses every image unless a limit is set
    with pytest.raises(SystemExit, match="quickstart.yaml: --held-out: evaluator.options mnist5k with limit None leaves no"):
        bench.check_held_out(REPO / "recipes" / "quickstart.yaml", ())
    bench.check_held_out(REPO / "recipes" / "quickstart.yaml", ("evaluator.options.limit=4000",))


def test_the_onnxruntime_backend_times_networks_int8_and_refuses_a_precision_it_lacks(tmp_path):
    from core.errors import InputError
    from hardware_profiles.backends import OnnxCpuBackend, make_backend

    backend = make_backend("onnxruntime-cpu", warmup=1, repeats=3, precision="int8")
    assert backend.precision == "int8" and "int8" in backend.describe()
    graph = backend.export(_net(), (1, 3, 8, 8), tmp_path / "net.onnx")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(graph)).graph.node}
    assert backend.measure(_net(), (1, 3, 8, 8)).median_ms > 0
    medians = backend.round_medians([(_net, (1, 3, 8, 8)), (_net, (1, 3, 8, 8))], rounds=2)
    assert medians.shape == (2, 2) and (medians > 0).all()
    with pytest.raises(InputError, match="^--precision fp16: onnxruntime-cpu measures fp32 or int8"):
        OnnxCpuBackend(1, 1, 3, "fp16")


def test_the_live_int8_profile_measures_a_quantized_network():
    from hardware_profiles import get_profile
    from search_spaces import get_space

    profile = get_profile("local-cpu-int8")
    assert profile.precision == "int8" and profile.backend.precision == "int8" and "int8" in profile.description
    space = get_space("nb201")
    assert profile.latency(space, space.sample(np.random.default_rng(0))).median_ms > 0


def test_the_shipped_int8_table_prices_every_network_of_the_mobilenet_space():
    from hardware_profiles import get_profile
    from search_spaces import get_space

    profile = get_profile("x86-ort-int8-t1")
    assert profile.manifest.precision == "int8" and profile.manifest.space == "mobilenet"
    space = get_space("mobilenet")
    archs = [space.sample(np.random.default_rng(i)) for i in range(20)]
    assert all(k in profile.block_ms for a in archs for k in space.cost_keys(a))
    assert all(profile.latency(space, a).median_ms > 0 for a in archs)
    nets = profile.table("networks")
    assert len(nets) == 200 and (nets.median_ms > 0).all()


def test_an_int8_table_builds_and_a_predictor_trains_on_it(tmp_path, monkeypatch):
    import yaml

    from hardware_profiles import get_profile
    from hardware_profiles.measure import MeasureSettings, measure_profile
    from predictors.train import TrainSettings, train

    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path))
    report = measure_profile(MeasureSettings(profile="tiny-int8", space="nb201", sample=6, networks=30, warmup=1,
                                             repeats=3, attempts=1, precision="int8", root=str(tmp_path)))
    assert report["profile"] == "tiny-int8@1" and report["networks"] == 30
    manifest = yaml.safe_load((tmp_path / "tiny-int8" / "1" / "manifest.yaml").read_text())
    assert manifest["precision"] == "int8" and manifest["backend"] == "onnxruntime-cpu"
    profile = get_profile("tiny-int8")
    assert (profile.read_networks()["median_ms"] > 0).all()
    summary = train(TrainSettings(out=str(tmp_path / "pred"), profile="tiny-int8"))
    assert summary["rows"] >= 30 and (tmp_path / "pred" / "meta.json").is_file()
