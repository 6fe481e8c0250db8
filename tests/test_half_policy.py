"""16-bit float units in a compression policy (``fp16`` / ``bf16``, `core.half`): keys, the mixed-precision graph,
the backends that time it or refuse it, scoring, and a GPU-style search end to end on a fixture table."""
from __future__ import annotations

import copy
import functools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from conftest import ASSETS, REPO
from core.errors import InputError
from core.half import apply_half, half_plan, whole_dtype
from hardware_profiles.cuda import with_policy
from search_spaces import get_space
from search_spaces.costs import parse_cost_key

TINY = yaml.safe_load((ASSETS / "tiny.yaml").read_text())["space"]["options"]
SPACES = {"mobilenet": TINY, "macro": {"resolution": 16}, "fbnet": {}}


def _space(name: str = "mobilenet", precisions=("fp32", "fp16", "bf16")):
    return get_space(name, {**SPACES[name], "compression": {"precisions": list(precisions)}}, num_classes=10)


def _with(space, seed: int, policy: str):
    """A sampled network of `space` with the given policy (one precision per unit, comma-separated)."""
    return space.decode(f"{space.base.to_string(space.sample(np.random.default_rng(seed)).base)}@{policy}")


def test_half_keys_round_trip_and_are_features_of_their_own():
    from predictors.features import BLOCK_FEATURES, block_row

    space = _space()
    layers, exact = space.enumerate_layers()
    assert exact and {lc.key.precision for lc in layers} == {"fp32", "fp16", "bf16"}
    for lc in layers:
        assert parse_cost_key(str(lc.key)) == lc.key
    half = next(lc.key for lc in layers if lc.key.precision == "fp16")
    assert str(half).split("_i")[0].endswith("_fp16")
    flag = BLOCK_FEATURES.index("half")
    assert block_row(half)[flag] == 1 and block_row(half.__class__(**{**half.__dict__, "precision": "fp32"}))[flag] == 0
    arch = space.sample(np.random.default_rng(1))
    assert space.decode(space.to_string(arch)) == arch


@pytest.mark.parametrize("name", sorted(SPACES))
def test_half_units_run_in_their_precision_and_cast_only_where_it_changes(name):
    space = _space(name)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(6)]
    arch = next(a for a in archs if "fp16" in a.precisions and "fp32" in a.precisions)
    model = space.build(arch).eval()
    plan = half_plan(model)
    assert plan and set(plan.values()) <= {"fp16", "bf16"} and model.fp32_modules
    x = torch.randn((2, *space.input_shape(arch)[1:]))
    with torch.no_grad():
        reference = model(x)
        half = apply_half(copy.deepcopy(model))
        assert apply_half(half) is half   # a second call adds no hooks
        seen = {}

        def record(unit, module, args, out):   # what the unit got (after its cast) and gave
            seen.setdefault(unit, (args[0].dtype, out.dtype))

        for unit in [*plan, *model.fp32_modules]:
            half.get_submodule(unit).register_forward_hook(functools.partial(record, unit))
        out = half(x)
    assert out.dtype == torch.float32 and torch.allclose(out, reference, atol=0.05, rtol=0.05)
    for unit, precision in plan.items():
        dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[precision])
        params = [p.dtype for p in half.get_submodule(unit).parameters()]
        assert all(d == dtype for d in params)
        if unit in seen:   # a unit that ran got its input in its dtype and was not cast back at its end
            assert seen[unit][0] == dtype and seen[unit][1] in (dtype, torch.int64)
    for unit in model.fp32_modules:
        assert all(p.dtype == torch.float32 for p in half.get_submodule(unit).parameters())
        if unit in seen:
            assert seen[unit][0] == torch.float32


def test_a_half_block_alone_runs_wholly_in_its_dtype_and_the_gpu_backend_refuses_what_it_cannot_run():
    space = _space()
    key = next(lc.key for lc in space.enumerate_layers()[0] if lc.key.precision == "bf16" and lc.key.op == "ir")
    block = space.build_layer(key).eval()
    assert whole_dtype(block) == torch.bfloat16
    model, dtype = with_policy(block, "fp32")
    assert dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model(torch.randn(1, *key.in_shape, dtype=dtype)).dtype == torch.bfloat16
    arch = _with(space, 3, "fp32,fp16,fp32,fp32")
    network, dtype = with_policy(space.build(arch).eval(), "fp32")
    assert dtype == torch.float32 and network(torch.randn(space.input_shape(arch))).dtype == torch.float32
    with pytest.raises(InputError, match="^torch-cuda at precision fp16 runs every layer in fp16; .* --precision fp32"):
        with_policy(space.build(arch).eval(), "fp16")
    plain = _with(space, 3, "fp32,fp32,fp32,fp32")
    assert with_policy(space.build(plain).eval(), "fp16")[1] is None   # nothing in 16 bits: nothing to refuse
    int8 = get_space("mobilenet", {**TINY, "compression": {}}, num_classes=10)
    with pytest.raises(InputError, match="torch-cuda cannot run a compression policy's int8 layers"):
        with_policy(int8.build(_with(int8, 3, "int8,fp32,fp32,fp32")), "fp32")


def test_cpu_engines_refuse_half_units_in_one_line(tmp_path):
    from hardware_profiles.backends import make_backend

    space = _space()
    arch = _with(space, 0, "fp16,fp32,fp32,fp32")
    for backend in ("onnxruntime-cpu", "torch-cpu-eager"):
        with pytest.raises(InputError) as err:
            make_backend(backend, warmup=1, repeats=2).measure(space.build(arch), space.input_shape(arch))
        assert "does not time a compression policy's 16-bit float units (conv_stem in fp16" in str(err.value)
    options = tmp_path / "policy.yaml"
    options.write_text(yaml.safe_dump({**TINY, "compression": {"precisions": ["fp32", "fp16"]}}))
    proc = subprocess.run([sys.executable, "-m", "hardware_profiles.measure", "--profile", "p", "--space", "mobilenet",
                           "--space-options", str(options), "--root", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "--space-options: compression.precisions: --backend onnxruntime-cpu cannot time fp16 units (it times fp32, "
        "int8)")


def test_a_policy_with_half_units_is_scored_with_them_in_16_bits():
    from nas.compression import half_logits, int8_scores

    class Data:
        def quantization_data(self, resolution):
            g = torch.Generator().manual_seed(0)
            images = torch.rand(70, 3, resolution, resolution, generator=g)
            return TensorDataset(images, torch.zeros(70, dtype=torch.long)), \
                TensorDataset(images, torch.randint(0, 10, (70,), generator=g))

    space = _space(precisions=("fp32", "bf16"))
    arch = _with(space, 0, "bf16,bf16,bf16,bf16")
    model = space.build(arch).eval()
    images = Data().quantization_data(16)[1].tensors[0].numpy()
    logits = half_logits(model, images)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    assert 0 < np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()   # bf16 rounding, same network
    assert half_plan(model)   # the network itself was left in fp32
    scores = int8_scores(model, Data(), space.input_shape(arch), fp32_accuracy=0.5)
    labels = Data().quantization_data(16)[1].tensors[1].numpy()
    assert scores["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert scores["accuracy_drop"] == pytest.approx(0.5 - scores["accuracy"])
    assert scores["quant_parity"] == pytest.approx(float(np.abs(logits[:64] - reference[:64]).max()))


@pytest.mark.slow
def test_a_search_with_fp16_units_runs_on_a_gpu_table_and_ships_its_note(tmp_path):
    """A GPU-style policy table (a fixture: imported from made-up latencies that charge fp16 layers half the time of
    fp32 ones, not a measurement) lets `compression: search` choose fp16 units; each candidate is scored with them."""
    space = _space(precisions=("fp32", "fp16"))
    rng = np.random.default_rng(0)
    archs = sorted({space.to_string(space.sample(rng)) for _ in range(400)})
    ms = [0.02 + sum(lc.macs * (0.5e-7 if lc.key.precision == "fp16" else 1e-7)
                     for lc in space.layer_costs(space.decode(a))) for a in archs]
    pd.DataFrame({"arch": archs, "ms": ms}).to_csv(tmp_path / "table.csv", index=False)
    options = tmp_path / "policy.yaml"
    options.write_text(yaml.safe_dump({**TINY, "compression": {"precisions": ["fp32", "fp16"]}}))
    env_root = tmp_path / "profiles"
    imported = subprocess.run([sys.executable, "-m", "hardware_profiles.importer", "--profile", "gpu-fixture",
                               "--space", "mobilenet", "--space-options", str(options), "--num-classes", "10",
                               "--table", str(tmp_path / "table.csv"), "--target", "ms", "--root", str(env_root)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-2000:]
    env = {**__import__("os").environ, "HWNAS_PROFILE_PATH": str(env_root)}
    run = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(tmp_path / "r"),
                          "--set", "compression=search", "--set", "space.options.compression={precisions: [fp32, fp16]}",
                          "--set", "constraints.latency=[{profile: gpu-fixture, max_ms: 5}]",
                          "--set", "search.budget=3"], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(tmp_path / "r" / "results.csv")
    ok = table[table.status == "ok"]
    assert len(ok) and ok.accuracy_fp32.notna().all()
    halves = ok[ok.arch.str.contains("fp16")]
    assert len(halves) and (halves.accuracy_drop.abs() < 0.5).all()
    best = (tmp_path / "r" / "best" / "arch.txt").read_text().strip()
    card = (tmp_path / "r" / "best" / "MODEL_CARD.md").read_text()
    model = space.build(space.decode(best))
    assert half_plan(model)   # the fixture charges fp16 layers half: the seeded search's best has some
    assert "16-bit floats in the compression policy's units (fp16: " in card
    assert all(name in card for name in half_plan(model)) and "core.half.apply_half(model)" in card
