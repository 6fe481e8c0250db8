"""Memory budgets (issue 22): the analytic inference and training figures (`predictors.memory`), onnxruntime's
measured figure (`hardware_profiles.memory`), the recipe limits and the command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ASSETS, REPO
from predictors.memory import MIB, inference_memory, layer_peak, training_memory
from search_spaces import get_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost


def _ir(skip: bool, se: int = 0) -> LayerCost:
    """An inverted residual 16 -> 96 -> 16 channels on 8x8 maps (a squeeze-excite of `se` channels)."""
    key = CostKey("ir", (16, 8, 8), (16, 8, 8), kernel=3, expansion=6, skip=skip, se=se)
    convs = [ConvSpec(16, 96, 1, 1, 8, 8), ConvSpec(96, 96, 3, 1, 8, 8, groups=96), ConvSpec(96, 16, 1, 1, 8, 8)]
    if se:
        convs += [ConvSpec(96, se, 1, 1, 1, 1, bias=True), ConvSpec(se, 96, 1, 1, 1, 1, bias=True)]
    return LayerCost.of(key, convs)


def test_the_peak_of_an_inverted_residual_matches_the_hand_count():
    # expansion: input 16x64 + expanded 96x64 = 7,168 values; depthwise: 96x64 in + 96x64 out = 12,288, plus the
    # 16x64 block input a residual keeps: 13,312; projection: 96x64 + 16x64 (+ 1,024 kept) = 8,192
    assert layer_peak(_ir(skip=False)) == 12_288
    assert layer_peak(_ir(skip=True)) == 13_312
    # squeeze-excite gates the 96x64 depthwise output into a new tensor beside it (its 1x1 convs act on vectors)
    assert layer_peak(_ir(skip=True, se=24)) == 2 * 96 * 64 + 16 * 64
    # a blocked layout rounds 16 and 96 channels to 16s (no change) but 24 to 32
    assert layer_peak(_ir(skip=True), channel_block=32) == (96 * 64 * 2 + 32 * 64)
    # PyTorch eager mode: the caller keeps the block input alive with or without a residual, and BatchNorm writes
    # a new tensor beside the conv's output: 16x64 + 2 x 96x64 at the expansion's and the depthwise's BatchNorm
    assert layer_peak(_ir(skip=False), engine="eager") == layer_peak(_ir(skip=True), engine="eager") == 13_312
    with pytest.raises(ValueError, match="engine 'tensorrt'"):
        layer_peak(_ir(skip=False), engine="tensorrt")


@pytest.mark.parametrize("space_name, options", [("mobilenet", {}), ("macro", {"resolution": 16}), ("fbnet", {}),
                                                 ("muffnet", {"resolution": 64}), ("nb201", {"resolution": 16})])
def test_the_eager_walk_is_what_pytorch_eager_mode_holds(space_name, options):
    """The tensors an eager forward pass holds at once (`hardware_profiles.memory.eager_tensor_bytes`, a trace of
    every operator's output until its storage is let go), exactly: what the built networks' forward methods keep
    (a stem output the caller holds, MuffNet's lists of stage and unit outputs, NAS-Bench-201's nodes and the
    operands `functools.reduce` holds) is each space's `held_values`."""
    from hardware_profiles.memory import eager_tensor_bytes

    space = get_space(space_name, options, num_classes=10)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng), space.sample(rng)] + [space.decode(a) for a in {
        # an identity first, passing the stem's output on; skip edges whose sum reduce holds beside the nodes
        "fbnet": ["8 7 1 5 2 4 5 8 8 0 1 6 1 2 5 1 8 6 2 3 5 2"],
        "nb201": ["|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|skip_connect~1|none~2|"],
    }.get(space_name, [])]
    for arch in archs:
        for batch in (1, 3):
            assert inference_memory(space, arch, batch, engine="eager").activation_bytes == eager_tensor_bytes(
                space.build(arch), space.input_shape(arch), batch)


def test_a_network_peak_is_its_largest_layer_plus_the_input_it_holds():
    space = get_space("macro", {"resolution": 16}, num_classes=10)
    arch = space.decode("12120201")
    layers = space.layer_costs(arch)
    mem = inference_memory(space, arch, batch=1)
    held = 3 * 16 * 16 * 4
    per_layer = [layer_peak(lc) * 4 for lc in layers]
    per_layer[0] -= held   # the stem's input is the held input, counted once
    assert mem.activation_bytes == held + max(per_layer) and mem.peak_layer == int(np.argmax(per_layer))
    assert mem.param_bytes == 4 * sum(lc.params for lc in layers)
    assert inference_memory(space, arch, batch=8).activation_bytes == 8 * mem.activation_bytes
    assert mem.total_mb == pytest.approx((mem.param_bytes + mem.activation_bytes) / MIB)
    with pytest.raises(ValueError, match="batch 0: expected a positive batch size"):
        inference_memory(space, arch, batch=0)


def test_int8_and_half_units_hold_fewer_bytes():
    plain = get_space("macro", {"resolution": 16}, num_classes=10)
    half = get_space("macro", {"resolution": 16, "compression": {"precisions": ["fp32", "fp16"]}}, num_classes=10)
    fp32 = inference_memory(plain, plain.decode("12120201"))
    fp16 = inference_memory(half, half.decode("12120201@" + ",".join(["fp16"] * 10)))
    assert fp16.param_bytes == fp32.param_bytes // 2 and fp16.activation_bytes < fp32.activation_bytes


def test_training_memory_counts_weights_gradients_optimizer_state_and_saved_activations():
    space = get_space("macro", {"resolution": 16}, num_classes=10)
    arch = space.decode("12120201")
    weights = 4 * sum(lc.params for lc in space.layer_costs(arch))
    sgd, adam = training_memory(space, arch, 32), training_memory(space, arch, 32, optimizer="adam")
    assert sgd.weight_bytes == sgd.gradient_bytes == sgd.optimizer_bytes == weights
    assert adam.optimizer_bytes == 2 * weights and adam.total_bytes - sgd.total_bytes == weights
    double = training_memory(space, arch, 64)
    assert double.saved_activation_bytes == 2 * sgd.saved_activation_bytes
    assert double.transient_bytes == 2 * sgd.transient_bytes > 0   # the backward pass's gradients
    assert double.total_bytes - sgd.total_bytes == sgd.saved_activation_bytes + sgd.transient_bytes
    assert sgd.saved_activation_bytes > sgd.naive_training_bytes - weights   # each conv keeps more than its output
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        training_memory(space, arch, 32, optimizer="rmsprop")


def test_onnxruntime_measures_what_the_model_predicts_on_a_chain_of_inverted_residuals(tmp_path):
    """NAS-Bench-Macro's networks are plain chains: the analytic peak is onnxruntime's allocator peak (its memory
    profile, `hardware_profiles.memory`) to within a few percent (bench/memory_energy.py measures 100 of them)."""
    from core.timing import export_onnx
    from hardware_profiles.memory import onnx_activation_bytes

    space = get_space("macro", {}, num_classes=10)
    rng = np.random.default_rng(0)
    for i in range(3):
        arch = space.sample(rng)
        path = export_onnx(space.build(arch).eval(), space.input_shape(arch), tmp_path / f"{i}.onnx")
        measured = onnx_activation_bytes(path, space.input_shape(arch))
        assert measured > 0
        assert inference_memory(space, arch).activation_bytes == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("cell", [
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
])
def test_onnxruntime_holds_what_the_walk_of_a_nas_bench_201_cell_says(tmp_path, cell):
    """A cell's nodes stay alive until their last edge, identical operations on one node are made once and an
    addition writes into a dying operand (`search_spaces.nb201._fused_cell`): four node-size tensors at once in
    these cells, where a walk of the edges one after another saw three (24 % under)."""
    from core.timing import export_onnx
    from hardware_profiles.memory import onnx_activation_bytes

    space = get_space("nb201", {}, num_classes=10)
    arch = space.decode(cell)
    path = export_onnx(space.build(arch).eval(), space.input_shape(arch), tmp_path / "cell.onnx")
    measured = onnx_activation_bytes(path, space.input_shape(arch))
    assert inference_memory(space, arch).activation_bytes == pytest.approx(measured, rel=0.01)


def test_a_training_step_allocates_what_the_model_predicts_on_nas_bench_macro():
    """glibc's allocator over a real PyTorch training step (`hardware_profiles.memory.torch_training_bytes`): the
    gradients and saved activations the model predicts, to within 10 %, and the naive sum far below."""
    from hardware_profiles.memory import torch_training_bytes

    space = get_space("macro", {}, num_classes=10)
    arch = space.decode("12120201")
    predicted = training_memory(space, arch, 16)
    measured = torch_training_bytes(space.build(arch), space.input_shape(arch), 16)
    assert predicted.gradient_bytes + predicted.saved_activation_bytes == pytest.approx(measured, rel=0.1)
    twice = torch_training_bytes(space.build(arch), space.input_shape(arch), 32)
    assert twice - measured == pytest.approx(predicted.saved_activation_bytes, rel=0.1)   # activations scale


@pytest.mark.parametrize("space_name, options, arch", [
    ("muffnet", {"resolution": 64}, "d2_w1_k3_g2_f2|d4_w1_k3_g4_f3|d2_w1_k5_g1_f1"),   # grouped branches, joins
    ("fbnet", {}, "5 8 8 5 2 1 5 1 6 8 2 4 0 1 3 7 8 5 5 5 0 3"),   # group-2 blocks (a shuffle each) and skips
    ("macro", {"resolution": 16}, "12120201"),
    ("nb201", {}, "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_1x1~2|"),
])
def test_predicted_saved_activations_are_the_tensors_autograd_keeps(space_name, options, arch):
    """Every tensor the backward pass keeps (`hardware_profiles.memory.saved_tensor_bytes`, each storage once) is
    counted, and none twice: a ShuffleNetV2 unit's concatenated output, which the next unit keeps through the half
    it reads; the copy a channel shuffle makes between a grouped and a depthwise conv; a federation sum, of which
    only the last of a join is kept; a NAS-Bench-201 node two pooling edges keep, once. Within 2.5 % (BatchNorm's
    per-channel statistics are left out)."""
    from hardware_profiles.memory import saved_tensor_bytes

    space = get_space(space_name, options, num_classes=10)
    network = space.decode(arch)
    measured = saved_tensor_bytes(space.build(network), space.input_shape(network), 8)
    assert training_memory(space, network, 8).saved_activation_bytes == pytest.approx(measured, rel=0.025)


def _context(*sets: str):
    from nas.checks import load_run

    return load_run(ASSETS / "tiny.yaml", list(sets))


def test_memory_limits_reject_candidates_before_a_trial_and_show_in_the_results():
    ctx = _context("constraints.max_memory_mb=0.045", "constraints.max_train_memory_gb=1", "constraints.max_flops=null")
    assert ctx.recipe.constraints.train_batch == 32   # the proxy evaluator's batch_size
    assert {"memory_mb", "train_memory_gb"} <= set(ctx.metrics)
    space = ctx.space
    small, large = space.decode("r16_w0.25|k3e3|k3e3"), space.decode("r16_w0.5|k5e6,k5e6|k5e6,k5e6")
    violation, fields = ctx.precheck(small)
    assert violation is None and fields["memory_mb"] == pytest.approx(inference_memory(space, small).total_mb)
    assert fields["train_memory_gb"] == pytest.approx(training_memory(space, small, 32).total_gb)
    violation, fields = ctx.precheck(large)
    assert violation.startswith("memory ") and "> max_memory_mb 0.045" in violation
    ctx = _context("constraints.max_train_memory_gb=0.001", "constraints.train_batch=8", "constraints.max_flops=null")
    assert ctx.recipe.constraints.train_batch == 8 and ctx.precheck(small)[0] is None
    violation = ctx.precheck(large)[0]
    assert "training memory" in violation and "at batch 8 > max_train_memory_gb 0.001" in violation
    # a limit for an engine that keeps tensors as PyTorch eager mode does is checked against that walk
    eager = _context("constraints.max_memory_mb=0.045", "constraints.memory_engine=eager", "constraints.max_flops=null")
    figure = eager.precheck(small)[1]["memory_mb"]
    assert figure == pytest.approx(inference_memory(space, small, engine="eager").total_mb)
    assert figure > inference_memory(space, small).total_mb
    # ... and one as onnxruntime's CPU provider runs, against the walk of its graph, at the block asked for
    ort = _context("constraints.max_memory_mb=0.045", "constraints.memory_engine=onnxruntime",
                   "constraints.memory_channel_block=8", "constraints.max_flops=null")
    assert ort.recipe.constraints.memory_block() == 8
    assert ort.precheck(small)[1]["memory_mb"] == pytest.approx(
        inference_memory(space, small, channel_block=8, engine="onnxruntime").total_mb)


def test_the_largest_batch_that_fits_is_exact():
    from predictors.memory import largest_batch

    for name, classes, text in (("macro", 10, "12120201"), ("mobilenet", 1000, None)):
        space = get_space(name, {}, num_classes=classes)
        arch = space.decode(text) if text else space.smallest()
        limit = training_memory(space, arch, 37).total_bytes
        assert largest_batch(space, arch, limit) == 37 and largest_batch(space, arch, limit - 1) == 36
        assert largest_batch(space, arch, training_memory(space, arch, 1).total_bytes - 1) == 0
        assert largest_batch(space, arch, limit, "adam") < 37   # Adam holds one more buffer per weight


def test_shrink_trains_a_candidate_that_would_not_fit_at_the_largest_batch_that_does(monkeypatch, tmp_path):
    import nas.trial
    from nas.trial import evaluate_candidate, trial_evaluator

    space = _context().space
    small, large = "r16_w0.25|k3e3|k3e3", "r16_w0.5|k5e6,k5e6|k5e6,k5e6"
    limit = training_memory(space, space.decode(large), 20).total_gb
    assert training_memory(space, space.decode(small), 32).total_gb < limit   # the small one fits at 32
    ctx = _context(f"constraints.max_train_memory_gb={limit!r}", "constraints.on_train_memory=shrink",
                   "constraints.max_flops=null")
    assert "train_batch" in ctx.metrics
    violation, fields = ctx.precheck(space.decode(large))
    assert violation is None and fields["train_batch"] == 20
    assert fields["train_memory_gb"] == pytest.approx(limit)
    assert ctx.precheck(space.decode(small))[1]["train_batch"] == 32
    assert trial_evaluator(ctx, space.decode(large)).options.batch_size == 20
    assert trial_evaluator(ctx, space.decode(small)) is ctx.evaluator and ctx.evaluator.options.batch_size == 32
    from nas.pipeline import memory_figures
    from nas.search import PredictedMemory

    assert "training memory at batch 20 (GiB, predicted)" in memory_figures(ctx, space.decode(large))   # the card
    overhead = ctx.recipe.cluster.trial_memory_overhead_gb * 2 ** 30
    assert PredictedMemory(ctx.recipe, space).bytes_for(large) == \
        training_memory(space, space.decode(large), 20).total_bytes + overhead

    trained_at = []

    def train(space, evaluator, arch, seed, trained=None):   # a test double of the training, not of the evaluator
        trained_at.append(evaluator.options.batch_size)
        return space.build(arch), {"accuracy": 0.5}

    monkeypatch.setattr(nas.trial, "train_candidate", train)
    ctx.run_dir = tmp_path
    rows = [evaluate_candidate(ctx, a) for a in (large, small)]
    assert trained_at == [20, 32] and [r["train_batch"] for r in rows] == [20, 32]
    assert all(r["status"] == "ok" for r in rows), rows

    tight = training_memory(space, space.decode(large), 4).total_gb   # only batch 4 fits: below min_train_batch 8
    ctx = _context(f"constraints.max_train_memory_gb={tight!r}", "constraints.on_train_memory=shrink",
                   "constraints.max_flops=null")
    violation, fields = ctx.precheck(space.decode(large))
    assert "at batch 32 > max_train_memory_gb" in violation and fields["train_batch"] == 32
    assert violation.endswith("(the largest batch that fits, 4, is below min_train_batch 8)")


def test_shrink_without_a_training_budget_is_refused_in_one_line():
    from nas.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"constraints.on_train_memory: shrink needs "
                                          r"constraints.max_train_memory_gb, the budget"):
        _context("constraints.on_train_memory=shrink")


@pytest.mark.parametrize("sets, message", [
    (("constraints.max_memory_mb=0.001",), "constraints.max_memory_mb: 0.001 is below the smallest architecture"),
    (("constraints.max_memory_mb=-1",), "constraints.max_memory_mb"),
])
def test_memory_limits_that_cannot_hold_are_refused_in_one_line(sets, message):
    from nas.recipe import RecipeError

    with pytest.raises(RecipeError) as err:
        _context(*sets)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_training_limit_without_a_batch_size_is_refused():
    from types import SimpleNamespace

    from nas.checks import _check_train_batch
    from nas.recipe import RecipeError

    recipe = _context().recipe
    recipe.constraints.max_train_memory_gb = 1.0
    with pytest.raises(RecipeError, match=r"^r.yaml: constraints.train_batch: max_train_memory_gb needs the batch "
                                          r"size a trial trains at, and evaluator 'proxy' has no batch_size; set it$"):
        _check_train_batch("r.yaml", recipe, SimpleNamespace(evaluator=SimpleNamespace()))


def test_the_command_line_prints_both_figures_and_refuses_a_bad_batch(capsys):
    import json

    from predictors.memory import main

    proc = subprocess.run([sys.executable, "-m", "predictors.memory", "--space", "macro", "--num-classes", "10",
                           "--arch", "12120201", "--batch", "32", "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    space = get_space("macro", {}, num_classes=10)
    assert report["inference"]["activation_bytes"] == inference_memory(space, space.decode("12120201"), 32
                                                                       ).activation_bytes
    assert report["training"]["optimizer"] == "sgd" and report["training"]["total_gb"] > 0
    args = ["--space", "macro", "--num-classes", "10"]
    assert main([*args, "--arch", "12120201"]) == 0 and "training: saved activations" in capsys.readouterr().out
    assert main([*args, "--arch", "12120201", "--engine", "eager", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inference"]["activation_bytes"] == inference_memory(
        space, space.decode("12120201"), engine="eager").activation_bytes
    from predictors.memory import largest_batch

    assert main([*args, "--arch", "12120201", "--budget-gb", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"]["largest_batch"] == largest_batch(
        space, space.decode("12120201"), 2 * 2 ** 30) > 32
    for extra, line in ((("--arch", "12120201", "--batch", "0"), "--batch: 0: expected a positive batch size"),
                        (("--arch", "12120201", "--budget-gb", "0"), "--budget-gb: 0.0: expected a positive size"),
                        (("--arch", "nope"), "--arch: ")):
        assert main([*args, *extra]) == 2
        assert line in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_energy_limit_rejects_candidates_before_a_trial_on_a_profile_that_models_energy(tmp_path):
    from hardware_profiles import get_profile

    fpga = "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 5, max_energy_mj: 0.013, source: profile}]"
    ctx = _context(fpga, "constraints.max_flops=null")
    ctx.open(tmp_path, log=lambda line: None)
    assert "energy_fpga-zc706-int8" in ctx.metrics
    space = ctx.space
    small, large = space.decode("r16_w0.25|k3e3|k3e3"), space.decode("r16_w0.5|k5e6,k5e6|k5e6,k5e6")
    violation, fields = ctx.precheck(small)
    expected = get_profile("fpga-zc706-int8").latency(space, small).energy_mj
    assert violation is None and fields["energy_fpga-zc706-int8"] == pytest.approx(expected)
    violation = ctx.precheck(large)[0]
    assert violation.startswith("energy on fpga-zc706-int8 ") and violation.endswith("mJ > max_energy_mj 0.013")


def test_an_energy_limit_on_a_profile_without_energy_is_refused_in_one_line():
    from nas.recipe import RecipeError

    with pytest.raises(RecipeError) as err:
        _context("constraints.latency=[{profile: local-cpu, max_ms: 5, max_energy_mj: 1}]")
    assert "constraints.latency[0].max_energy_mj: local-cpu has no energy model or table" in str(err.value)


@pytest.mark.gpu
def test_predicted_training_memory_is_within_tolerance_of_the_gpu_allocator():
    """`torch.cuda.max_memory_allocated` over a training step (`hardware_profiles.memory.cuda_memory_bytes`): the
    gradients and saved activations predicted, to within 15 % (cuDNN's workspace comes on top)."""
    import torch

    from hardware_profiles.memory import cuda_memory_bytes

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    space = get_space("macro", {}, num_classes=10)
    arch = space.decode("12120201")
    for batch in (32, 128):
        predicted = training_memory(space, arch, batch)
        measured = cuda_memory_bytes(space.build(arch), space.input_shape(arch), batch, train=True)
        assert predicted.gradient_bytes + predicted.saved_activation_bytes == pytest.approx(measured, rel=0.15)


def test_a_layers_workspace_adds_to_its_own_peak_at_batch_1():
    """`inference_memory(workspace=...)`: a layer's bytes beside its tensors (cuDNN's workspace, measured per layer
    on a GPU) add to that layer's peak only, so the network's figure moves only where that layer's peak with them
    beats every other layer's; at a batch above 1, and for layers it does not name, nothing is added."""
    space = get_space("fbnet", {}, num_classes=100)
    arch = space.decode("7 5 4 2 2 0 0 0 1 7 5 8 4 5 8 6 5 4 5 8 2 7")
    plain = inference_memory(space, arch, engine="eager")
    layers = space.layer_costs(arch)
    top, last = str(layers[plain.peak_layer].key), str(layers[-2].key)   # the peak's layer, and the head
    assert inference_memory(space, arch, engine="eager", workspace={top: 1000}).activation_bytes == \
        plain.activation_bytes + 1000
    small = inference_memory(space, arch, engine="eager", workspace={last: 1000})
    assert small.activation_bytes == plain.activation_bytes and small.peak_layer == plain.peak_layer
    big = inference_memory(space, arch, engine="eager", workspace={last: 10 ** 8})
    assert big.peak_layer == len(layers) - 2 and big.activation_bytes > 10 ** 8
    assert inference_memory(space, arch, 2, engine="eager", workspace={top: 1000}).activation_bytes == \
        2 * plain.activation_bytes
    assert inference_memory(space, arch, engine="eager", workspace={"not a layer": 1000}) == plain


@pytest.mark.gpu
def test_the_eager_walk_with_each_layers_workspace_is_the_gpu_allocators_peak():
    """On a GPU: each layer's cuDNN workspace measured alone (`cuda_workspace_bytes`) added to the eager walk gives
    `torch.cuda.max_memory_allocated` over a network's forward pass (bench/memory_energy.py: 0.0 % median and p90
    on 40 networks of each space on an H100), where the walk alone is 20-47 % under on FBNet and NAS-Bench-201."""
    import torch

    from hardware_profiles.memory import cuda_memory_bytes
    from predictors.memory import cuda_workspace_bytes

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for name, classes in (("fbnet", 100), ("nb201", 10)):
        space = get_space(name, {}, num_classes=classes)
        rng = np.random.default_rng(1)
        for arch in (space.sample(rng), space.sample(rng)):
            shape = space.input_shape(arch)
            workspace = cuda_workspace_bytes(space, space.layer_costs(arch))
            measured = cuda_memory_bytes(space.build(arch), shape, 1, train=False)
            walk = inference_memory(space, arch, engine="eager", workspace=workspace).activation_bytes
            assert walk == pytest.approx(measured, rel=0.01)


def test_predicted_trial_memory_reserves_each_candidates_training_step_for_ray():
    from nas.search import PredictedMemory

    ctx = _context("cluster.trial_memory=predicted", "cluster.trial_memory_overhead_gb=0.5")
    assert ctx.recipe.constraints.train_batch == 32   # the evaluator's batch size, as for max_train_memory_gb
    resources = PredictedMemory(ctx.recipe, ctx.space)
    arch = "r16_w0.5|k5e6,k5e6|k5e6,k5e6"
    factory = resources({"arch": arch})
    bundle = factory.bundles[0]
    expected = training_memory(ctx.space, ctx.space.decode(arch), 32).total_bytes + 2 ** 29
    assert bundle["memory"] == expected and bundle["CPU"] == ctx.recipe.cluster.cpus_per_trial
    assert resources({"arch": "r16_w0.25|k3e3|k3e3"}).bundles[0]["memory"] < expected


def test_on_gpus_a_trial_reserves_the_share_of_a_gpu_its_training_step_needs():
    """``cluster.gpu_memory_gb``: a small candidate takes a hundredth-rounded share of a GPU (so several share
    one), a large one more, never above gpus_per_trial; Ray's host `memory` is the worker's overhead only."""
    from nas.recipe import RecipeError
    from nas.search import CUDA_CONTEXT_GB, PredictedMemory

    ctx = _context("cluster.trial_memory=predicted", "cluster.gpus_per_trial=1", "cluster.gpu_memory_gb=2",
                   "cluster.num_cpus=2", "constraints.train_batch=256")
    resources = PredictedMemory(ctx.recipe, ctx.space)
    small, large = "r16_w0.25|k3e3|k3e3", "r16_w0.5|k5e6,k5e6|k5e6,k5e6"
    for arch in (small, large):
        step = training_memory(ctx.space, ctx.space.decode(arch), 256).total_bytes
        bundle = resources({"arch": arch}).bundles[0]
        need = (step + CUDA_CONTEXT_GB * 2 ** 30) / 2 ** 31
        assert need <= bundle["GPU"] < need + 0.01 and bundle["GPU"] < 1
        assert bundle["memory"] == ctx.recipe.cluster.trial_memory_overhead_gb * 2 ** 30
    assert resources({"arch": small}).bundles[0]["GPU"] < resources({"arch": large}).bundles[0]["GPU"]
    tight = _context("cluster.trial_memory=predicted", "cluster.gpus_per_trial=0.3", "cluster.gpu_memory_gb=0.5",
                     "cluster.num_cpus=2")
    assert PredictedMemory(tight.recipe, tight.space)({"arch": large}).bundles[0]["GPU"] == 0.3   # capped
    with pytest.raises(RecipeError, match="gpu_memory_gb sizes each trial's GPU share"):
        _context("cluster.gpus_per_trial=1", "cluster.gpu_memory_gb=80")


def test_a_profiles_memory_table_is_measured_and_its_correction_limits_a_search(tmp_path, monkeypatch, capsys):
    """`python -m hardware_profiles.memory` measures a copy of a shipped onnxruntime profile's networks with
    onnxruntime's allocator into its memory table; a latency entry's ``max_memory_mb`` on that profile is then
    checked before a trial with the walk corrected by that table (`predictors.memory.profile_memory_correction`),
    the figure in column ``memory_<profile>``."""
    import shutil

    from hardware_profiles.manifest import BUILTIN_ROOT, read_manifest, verify_tables, write_manifest
    from hardware_profiles.memory import main
    from hardware_profiles.tables import read_table
    from nas.checks import load_run

    folder = tmp_path / "profiles" / "ort-memory" / "1"
    shutil.copytree(BUILTIN_ROOT / "x86-ort-t1-macro" / "1", folder)
    manifest = read_manifest(folder / "manifest.yaml")
    manifest.name = "ort-memory"
    write_manifest(manifest, folder)
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    assert main(["--profile", "ort-memory", "--networks", "12"]) == 0
    manifest = read_manifest(folder / "manifest.yaml")
    verify_tables(manifest, folder, ("blocks", "networks", "memory"))
    assert manifest.options["memory_engine"] == "onnxruntime" and "onnxruntime" in manifest.options["memory_method"]
    table = read_table(folder / manifest.tables.memory)
    space = get_space("macro", {}, num_classes=10)
    archs = [space.decode(a) for a in table.arch]
    assert len(table) == 12 and (table.activation_bytes > 0).all()
    # the walk of onnxruntime's graph and planner is its measured peak (bench/memory_energy.py), as is, on
    # NAS-Bench-Macro's chains, the fused walk
    block = manifest.options["memory_channel_block"]
    walk = np.array([inference_memory(space, a, channel_block=block, engine="onnxruntime").activation_bytes
                     for a in archs])
    assert walk == pytest.approx(table.activation_bytes.to_numpy(float), rel=0.01)
    fused = np.array([inference_memory(space, a).activation_bytes for a in archs])
    assert fused == pytest.approx(table.activation_bytes.to_numpy(float), rel=0.05)

    limit = float(np.median([inference_memory(space, a).total_mb for a in archs]))
    ctx = load_run(REPO / "recipes" / "macro_x86.yaml",
                   [f"constraints.latency=[{{profile: ort-memory, max_ms: 100, max_memory_mb: {limit}}}]"])
    ctx.open(tmp_path / "run", log=lambda line: None)
    assert "memory_ort-memory" in ctx.metrics
    verdicts = [ctx.precheck(a) for a in archs]
    figures = np.array([fields["memory_ort-memory"] for _, fields in verdicts])
    corrected = ctx.latency["ort-memory"].memory_model.predict(archs)
    params = np.array([inference_memory(space, a).param_bytes for a in archs])
    assert figures == pytest.approx((params + corrected) / MIB)
    for (violation, _), mb in zip(verdicts, figures):
        assert (violation is not None and violation.startswith("memory on ort-memory")) == (mb > limit)
    assert any(v is None for v, _ in verdicts) and any(v is not None for v, _ in verdicts)

    for args, line in ((["--profile", "fpga-zc706-int8"], "not a measured profile with a networks table"),
                       (["--profile", "gpu-h100-fp16-b1"], "runs in fp16; memory tables are measured for fp32"),
                       (["--profile", "ort-memory", "--networks", "0"], "--networks: 0: expected a positive count")):
        assert main(args) == 2 and line in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_memory_limit_on_a_profile_without_a_memory_table_is_refused_in_one_line():
    from nas.checks import RecipeError

    with pytest.raises(RecipeError, match=r"constraints.latency\[0\].max_memory_mb: x86-ort-t1-macro has no memory "
                                          r"table; measure one \(python -m hardware_profiles.memory"):
        _context("constraints.latency=[{profile: x86-ort-t1-macro, max_ms: 100, max_memory_mb: 4}]")


def _gpu_profile_copy(tmp_path, monkeypatch, keep_memory: bool = True):
    """A copy of the shipped H100 profile named ``gpu-workspace`` on the profile path, without its workspace table
    (and without its networks' memory table unless `keep_memory`): its folder."""
    import shutil

    from hardware_profiles.manifest import BUILTIN_ROOT, read_manifest, write_manifest

    folder = tmp_path / "profiles" / "gpu-workspace" / "1"
    shutil.copytree(BUILTIN_ROOT / "gpu-h100-fp32-b1" / "1", folder)
    manifest = read_manifest(folder / "manifest.yaml")
    manifest.name = "gpu-workspace"
    for which in ("workspace",) if keep_memory else ("workspace", "memory"):
        setattr(manifest.tables, which, None)
        manifest.table_sha256.pop(which, None)
    write_manifest(manifest, folder)
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    return folder


def test_a_gpu_profiles_workspace_table_limits_a_search_with_the_eager_walk_and_each_layers_workspace(
        tmp_path, monkeypatch):
    """A GPU profile's workspace table (`hardware_profiles.memory --workspace`: each layer's eager peak alone,
    ``peak_bytes``) is what ``max_memory_mb`` on that profile checks with (`predictors.memory.profile_memory_model`):
    the eager walk, each layer given what it measured beyond the tensors the walk counts, and a layer the table does
    not name the table's largest workspace. The table here is written by hand (the gpu test below measures one)."""
    import pandas as pd

    from hardware_profiles import get_profile
    from hardware_profiles.manifest import attach_table
    from predictors.memory import WorkspaceWalk, profile_memory_model

    folder = _gpu_profile_copy(tmp_path, monkeypatch, keep_memory=False)   # the networks' table is not needed
    measured = get_space("mobilenet", {}, num_classes=1000).enumerate_layers()[0]   # the profile's space
    space = get_space("mobilenet", {}, num_classes=10)   # the recipe's: the table does not name its classifier
    arch = space.sample(np.random.default_rng(3))
    layers = space.layer_costs(arch)
    plain = inference_memory(space, arch, engine="eager")
    top, gone, head = (str(layers[i].key) for i in (plain.peak_layer, 1, -1))   # gone: left out of the table
    other = next(str(lc.key) for lc in measured if str(lc.key) not in {str(x.key) for x in layers})
    extra = {top: 1000, other: 5000}
    rows = [(str(lc.key), 4 * layer_peak(lc, engine="eager") + extra.get(str(lc.key), 0))
            for lc in measured if str(lc.key) != gone]
    attach_table(folder, pd.DataFrame(rows, columns=["key", "peak_bytes"]), "workspace", {"workspace_method": "x"})

    model = profile_memory_model(get_profile("gpu-workspace"), space)
    assert isinstance(model, WorkspaceWalk)
    # the peak's layer holds its 1,000 bytes of workspace; the layers the table misses get its largest, 5,000
    expected = inference_memory(space, arch, engine="eager",
                                workspace={top: 1000, gone: 5000, head: 5000}).activation_bytes
    assert model.predict([arch])[0] == expected >= plain.activation_bytes + 1000
    assert model.unmeasured == {gone, head}

    from nas.checks import load_run

    figure = inference_memory(space, arch).param_bytes / MIB + expected / MIB
    ctx = load_run(ASSETS / "tiny.yaml", ["space.options={}", "constraints.max_flops=null", "constraints.latency="
                                          f"[{{profile: gpu-workspace, max_ms: 100, max_memory_mb: {figure}}}]"])
    assert ctx.space.layer_costs(arch) == layers
    ctx.open(tmp_path / "run", log=lambda line: None)
    violation, fields = ctx.precheck(arch)
    assert fields["memory_gpu-workspace"] == pytest.approx(figure) and violation is None
    ctx.recipe.constraints.latency[0].max_memory_mb = figure - 0.001
    violation, _ = ctx.precheck(arch)
    assert violation.startswith("memory on gpu-workspace")


@pytest.mark.gpu
def test_a_workspace_table_measured_on_a_gpu_predicts_each_networks_peak(tmp_path, monkeypatch):
    """On a GPU: `python -m hardware_profiles.memory --workspace` measures every layer of a copy of the shipped
    H100 profile's space alone; its model then gives `torch.cuda.max_memory_allocated` of whole networks' forward
    passes, none of which it measured, within 1 %."""
    import torch

    from hardware_profiles import get_profile
    from hardware_profiles.memory import cuda_memory_bytes, main
    from predictors.memory import profile_memory_model

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    _gpu_profile_copy(tmp_path, monkeypatch)
    assert main(["--profile", "gpu-workspace", "--workspace", "--train-batches", "64"]) == 0
    space = get_space("mobilenet", {}, num_classes=1000)
    model = profile_memory_model(get_profile("gpu-workspace"), space)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(3)]
    for arch in archs:
        measured = cuda_memory_bytes(space.build(arch), space.input_shape(arch), 1, train=False)
        assert model.predict([arch])[0] == pytest.approx(measured, rel=0.01)
    for arch in archs[:2]:   # a training step: weights and momentum held, plus the step's peak
        t = training_memory(space, arch, 64, workspace=model.train_workspace(space.layer_costs(arch), 64))
        step = cuda_memory_bytes(space.build(arch), space.input_shape(arch), 64, train=True, classes=1000)
        assert t.total_bytes == pytest.approx(t.weight_bytes + t.optimizer_bytes + step, rel=0.03)
    assert not model.unmeasured


def test_a_layers_training_workspace_lifts_the_peak_only_beyond_what_the_backward_pass_has_freed():
    """`training_memory`: the backward pass frees each layer's saved activations once done with them, and each
    convolution's backward holds the gradient of its output while it makes that of its input; so a workspace
    (cuDNN's, measured per layer on a GPU) of the last layer adds in full to everything saved, where one of the first
    layer adds only what it exceeds the saved activations of all the later layers by."""
    space = get_space("macro", {}, num_classes=10)
    arch = space.decode("12120201")
    layers = space.layer_costs(arch)
    plain = training_memory(space, arch, 32)
    assert training_memory(space, arch, 32, workspace={}) == plain
    held = 3 * plain.weight_bytes   # weights, gradients, momentum
    # the classifier (1,280 -> 10): everything saved, its output's and its input's gradients, its workspace
    last = training_memory(space, arch, 32, workspace={str(layers[-1].key): 10 ** 8})
    assert last.total_bytes == held + plain.saved_activation_bytes + 4 * 32 * (10 + 1280) + 10 ** 8
    # the stem (3 -> 32 channels on 32x32): the image, its BatchNorm's input and output, its output's gradient
    first = str(layers[0].key)
    kept = 4 * 32 * (3 * 32 * 32 + 3 * 32 * 32 * 32)
    assert training_memory(space, arch, 32, workspace={first: 10 ** 6}) == plain   # the later layers' are freed
    big = plain.saved_activation_bytes + plain.transient_bytes - kept + 5000
    assert training_memory(space, arch, 32, workspace={first: big}).total_bytes == plain.total_bytes + 5000


def test_a_profiles_training_workspace_is_added_to_the_training_limit_and_interpolated_between_batches(
        tmp_path, monkeypatch):
    """``constraints.train_memory_profile``: the profile's workspace table's training columns (each layer's cuDNN
    workspace in a training step, by batch) go into ``max_train_memory_gb``'s figure, interpolated linearly between
    the batches measured and in proportion to the batch beyond them; shrinking finds the largest batch that fits
    with them; a profile without them, or a recipe that predicts no training memory, is refused in one line."""
    import pandas as pd

    from hardware_profiles import get_profile
    from hardware_profiles.manifest import attach_table
    from nas.checks import load_run
    from nas.recipe import RecipeError
    from predictors.memory import profile_workspace

    folder = _gpu_profile_copy(tmp_path, monkeypatch)
    space = get_space("mobilenet", {}, num_classes=10)
    layers = space.layer_costs(space.smallest())
    head = str(layers[-2].key)   # the 1x1 head conv, whose weight gradient took 2,400 MiB at batch 512 on an H100
    rows = [(str(lc.key), 4 * layer_peak(lc, engine="eager"), 0, 2 ** 28 if str(lc.key) == head else 0)
            for lc in layers]
    attach_table(folder, pd.DataFrame(rows, columns=["key", "peak_bytes", "train_b32_bytes", "train_b128_bytes"]),
                 "workspace", {"workspace_train_batches": [32, 128]})
    model = profile_workspace(get_profile("gpu-workspace"), space)
    assert model.train_workspace(layers, 128)[head] == 2 ** 28 and model.train_workspace(layers, 32)[head] == 0
    assert model.train_workspace(layers, 80)[head] == 2 ** 27   # halfway
    assert model.train_workspace(layers, 256)[head] == 2 ** 29 and model.train_workspace(layers, 16)[head] == 0

    sets = ["space.options={}", "constraints.max_flops=null", "constraints.latency=[]",
            "constraints.max_train_memory_gb=10", "constraints.train_batch=128"]
    ctx = load_run(ASSETS / "tiny.yaml", [*sets, "constraints.train_memory_profile=gpu-workspace"])
    plain = training_memory(space, space.smallest(), 128)
    _, fields = ctx.precheck(space.smallest())
    lifted = training_memory(space, space.smallest(), 128, workspace=model.train_workspace(layers, 128))
    assert fields["train_memory_gb"] == pytest.approx(lifted.total_gb) and lifted.total_bytes > plain.total_bytes
    from nas.search import PredictedMemory   # what Ray reserves for the trial

    assert PredictedMemory(ctx.recipe, space).step_bytes(space.to_string(space.smallest())) == lifted.total_bytes
    # shrink: the largest batch whose step fits with the workspace, one fewer than without where the lift bites
    limit = (lifted.total_bytes - 1) / 2 ** 30
    shrink = load_run(ASSETS / "tiny.yaml", [*sets, f"constraints.max_train_memory_gb={limit}",
                                             "constraints.on_train_memory=shrink",
                                             "constraints.train_memory_profile=gpu-workspace"])
    _, fields = shrink.precheck(space.smallest())
    batch = int(fields["train_batch"])
    assert batch < 128 and fields["train_memory_gb"] <= limit
    assert training_memory(space, space.smallest(), batch + 1,
                           workspace=model.train_workspace(layers, batch + 1)).total_gb > limit

    for extra, line in ((["constraints.train_memory_profile=gpu-h100-fp32-b32"], "has no workspace table"),
                        (["constraints.train_memory_profile=nope"], "unknown hardware profile 'nope'"),
                        (["constraints.max_train_memory_gb=null", "constraints.train_memory_profile=gpu-workspace"],
                         "nothing predicts training memory")):
        with pytest.raises(RecipeError, match="constraints.train_memory_profile: .*" + line):
            load_run(ASSETS / "tiny.yaml", [*sets, *extra])
    attach_table(folder, pd.DataFrame(rows, columns=["key", "peak_bytes", "train_b32_bytes", "train_b128_bytes"])
                 [["key", "peak_bytes"]], "workspace", {"workspace_train_batches": []})
    with pytest.raises(RecipeError, match="workspace table has no training workspace"):
        load_run(ASSETS / "tiny.yaml", [*sets, "constraints.train_memory_profile=gpu-workspace"])
    damaged = pd.DataFrame(rows, columns=["key", "peak_bytes", "train_b32_bytes", "train_b128_bytes"])
    damaged.loc[2, "train_b32_bytes"] = float("nan")
    attach_table(folder, damaged, "workspace", {})
    with pytest.raises(RecipeError, match=r"workspace.csv: line 4, column 'train_b32_bytes': 'nan' is not a "):
        load_run(ASSETS / "tiny.yaml", [*sets, "constraints.train_memory_profile=gpu-workspace"])


def test_a_layer_the_workspace_table_does_not_name_gets_the_largest_workspace_of_its_operator():
    """A recipe of 10 classes on a table measured with 1,000: its classifier, which the table does not name, gets
    the largest workspace of the classifiers it names (none: a linear layer), not the largest of every layer (which
    made MobileNet's step 7 % larger); a layer whose operator the table has not measured gets the largest of all."""
    from predictors.memory import WorkspaceWalk

    space = get_space("mobilenet", {}, num_classes=10)
    layers = space.layer_costs(space.smallest())
    keys = [str(lc.key) for lc in layers]
    ops = {str(lc.key): lc.key.op for lc in layers}
    measured = {k: (700 if ops[k] == "ir" else 5) for k in keys[1:-1]}   # no stem, no 10-class classifier
    train = {32: {**measured, "classifier_1000": 0}}
    model = WorkspaceWalk(space, {}, train, {**ops, "classifier_1000": "classifier"})
    got = model.train_workspace(layers, 32)
    assert got[keys[-1]] == 0 and got[keys[0]] == 700 and got[keys[1]] == measured[keys[1]]
    assert model.unmeasured == {keys[0], keys[-1]}
    assert WorkspaceWalk(space, {}, train).train_workspace(layers, 32)[keys[-1]] == 700   # without the ops column
    # the shipped H100 table, measured with 1,000 classes: the 10-class classifier's inference workspace is the
    # 1,000-class one's, not the largest layer's
    from hardware_profiles import get_profile
    from predictors.memory import profile_workspace, workspace_of

    shipped = profile_workspace(get_profile("gpu-h100-fp32-b1"), space)
    thousand = get_space("mobilenet", {}, num_classes=1000).layer_costs(space.smallest())[-1]
    assert shipped.workspace(layers)[keys[-1]] == workspace_of([thousand], shipped.peaks)[str(thousand.key)]
    assert shipped.unmeasured == {keys[-1]}


def test_the_command_line_adds_a_gpu_profiles_workspace_to_both_figures(capsys):
    """``python -m predictors.memory --profile gpu-h100-fp32-b1``: the shipped H100 table's workspace in the
    inference figure (the eager walk's) and the training one (MobileNet's head: 2,400 MiB at batch 512), and the
    largest batch that fits a budget with it."""
    import json

    from hardware_profiles import get_profile
    from predictors.memory import largest_batch, main, profile_workspace

    space = get_space("mobilenet", {}, num_classes=1000)
    arch = space.sample(np.random.default_rng(2))
    model = profile_workspace(get_profile("gpu-h100-fp32-b1"), space)
    layers = space.layer_costs(arch)
    args = ["--space", "mobilenet", "--arch", space.to_string(arch), "--batch", "512"]
    with_ws = training_memory(space, arch, 512, workspace=model.train_workspace(layers, 512))
    assert with_ws.total_bytes - training_memory(space, arch, 512).total_bytes > 2 * 2 ** 30   # the head's
    budget = round(with_ws.total_gb - 1, 1)   # 1 GiB short of batch 512's step
    assert main([*args, "--profile", "gpu-h100-fp32-b1", "--json", "--budget-gb", str(budget)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inference"]["engine"] == "eager"
    eager = inference_memory(space, arch, 512, engine="eager")
    assert report["inference"]["activation_bytes"] == eager.activation_bytes   # the workspace is batch 1's
    assert main([*args[:-2], "--profile", "gpu-h100-fp32-b1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["inference"]["activation_bytes"] == model.predict([arch])[0]   # the workspace counts at batch 1
    assert report["training"]["total_gb"] == round(with_ws.total_gb, 4)
    fits = report["training"]["largest_batch"]
    assert fits == largest_batch(space, arch, budget * 2 ** 30,
                                 workspace_at=lambda b: model.train_workspace(layers, b)) < 512
    assert training_memory(space, arch, fits, workspace=model.train_workspace(layers, fits)).total_gb <= budget
    assert training_memory(space, arch, fits + 1,
                           workspace=model.train_workspace(layers, fits + 1)).total_gb > budget
    for extra, line in ((["--profile", "nope"], "--profile: unknown hardware profile 'nope'"),
                        (["--profile", "gpu-h100-fp32-b32"], "--profile: gpu-h100-fp32-b32@1 has no workspace table"),
                        (["--profile", "x86-ort-t1"], "--profile: x86-ort-t1@3 is a onnxruntime-cpu profile"),
                        (["--profile", "gpu-h100-fp32-b1", "--engine", "onnxruntime"], "--engine: onnxruntime: a GPU"),
                        (["--profile", "gpu-h100-fp32-b1", "--channel-block", "16"], "--channel-block: 16: a GPU")):
        assert main([*args, *extra]) == 2
        assert line in capsys.readouterr().err.strip().splitlines()[-1]
