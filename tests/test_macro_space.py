"""The NAS-Bench-Macro space: data strings, variation, the file's exact cost, the batch path, and measuring it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hardware_profiles import measure
from hardware_profiles.manifest import read_manifest
from hardware_profiles.tables import read_table
from search_spaces import SPACES, get_space
from search_spaces.macro import CHOICE_NAMES, IDENTITY, NUM_CHOICES, NUM_LAYERS, MacroArch

from conftest import counted_on_meta

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench-macro" / "nasbench_macro_cifar10.csv"
UNIFORM = ["0" * NUM_LAYERS, "1" * NUM_LAYERS, "2" * NUM_LAYERS]


@pytest.fixture(scope="module")
def space():
    return get_space("macro", num_classes=10)   # the benchmark's CIFAR-10 classifier


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    if not DATA.exists():
        pytest.skip(f"shared NAS-Bench-Macro data not found at {DATA}")
    return pd.read_csv(DATA, dtype={"arch": str})   # as text: leading zeros are part of the arch


def test_registered_with_the_benchmark_choice_order():
    assert "macro" in SPACES.names()
    assert CHOICE_NAMES == ("id", "ir_3x3_t3", "ir_5x5_t6")
    assert (NUM_LAYERS, NUM_CHOICES, IDENTITY) == (8, 3, 0)


def test_data_strings_decode_and_round_trip(space, data):
    strings = list(data["arch"])
    assert len(strings) == 6561 == NUM_CHOICES ** NUM_LAYERS
    archs = [space.decode(s) for s in strings]
    assert [space.to_string(a) for a in archs] == strings
    np.testing.assert_array_equal(space.choice_matrix(strings), np.array([a.choices for a in archs]))


@pytest.mark.parametrize("bad, why", [
    ("0000000", "has 7 layer choices, the macro space has 8 \\(leading zeros lost"),
    ("000000000", "has 9 layer choices"),
    ("", "has 0 layer choices"),
    ("00000003", "layer 7 choice 3 is out of range 0..2"),
    ("30000000", "layer 0 choice 3 is out of range"),
    ("0000a000", "layer 4 choice 'a' is not a digit"),
    ("0 000000", "layer 1 choice ' ' is not a digit"),
    ("000000-1", "layer 6 choice '-' is not a digit"),
    ("0000000\u0661", "layer 7 choice '\u0661' is not a digit"),   # a Unicode digit is not one of ours
])
def test_decode_rejects_strings_outside_the_space(space, bad, why):
    with pytest.raises(ValueError, match=why):
        space.decode(bad)
    with pytest.raises(ValueError, match=why):   # the batch path validates like decode
        space.choice_matrix(["01201201", bad])


def test_decode_names_a_number_read_without_its_leading_zeros(space):
    with pytest.raises(ValueError, match="expected a string of 8 digits, got int"):
        space.decode(1201)


def test_flops_and_params_equal_the_files_counts(space, data):
    rng = np.random.default_rng(0)
    rows = data.iloc[rng.choice(len(data), 200, replace=False)]
    rows = pd.concat([rows, data[data["arch"].isin(UNIFORM)]])
    assert set(UNIFORM) <= set(rows["arch"])
    for arch, params, flops in zip(rows["arch"], rows["params"], rows["flops"]):
        costs = space.layer_costs(space.decode(arch))
        assert sum(lc.macs for lc in costs) == flops, arch
        assert sum(lc.params for lc in costs) == params, arch
    pos, choices = space.positional_layers(), space.choice_matrix(list(data["arch"]))   # and every row at once
    np.testing.assert_array_equal(pos.totals("macs", choices), data["flops"].to_numpy())
    np.testing.assert_array_equal(pos.totals("params", choices), data["params"].to_numpy())


def test_layer_costs_agree_with_the_built_modules(space):
    rng = np.random.default_rng(1)
    archs = [space.decode(s) for s in UNIFORM] + [space.smallest()] + [space.sample(rng) for _ in range(12)]
    for arch in archs:
        macs, params = counted_on_meta(lambda: space.build(arch), space.input_shape(arch))
        assert (space.flops(arch), space.params(arch)) == (macs, params), str(arch)


def test_other_resolutions_and_class_counts_cost_exactly():
    space = get_space("macro", {"resolution": 64}, num_classes=100)
    arch = space.decode("21021102")
    assert space.input_shape(arch) == (1, 3, 64, 64)
    assert space.layer_costs(arch)[-3].key.out_shape == (256, 8, 8)
    assert counted_on_meta(lambda: space.build(arch), space.input_shape(arch)) == (space.flops(arch),
                                                                                   space.params(arch))


def test_batch_path_equals_per_arch_layer_costs(space):
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(300)]
    strings = [space.to_string(a) for a in archs]
    pos, choices = space.positional_layers(), space.choice_matrix(strings)
    for attr in ("macs", "params"):
        per_arch = [sum(getattr(lc, attr) for lc in space.layer_costs(a)) for a in archs]
        np.testing.assert_array_equal(pos.totals(attr, choices), per_arch)
    for arch, row in zip(archs[:50], choices):
        assert [*pos.fixed[:1], *(pos.table[p][c] for p, c in enumerate(row)), *pos.fixed[1:]] == \
            space.layer_costs(arch)
    np.testing.assert_array_equal(space.encode_choices(choices), space.encode(archs))


def test_encode_is_a_one_hot_per_layer(space):
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(500)]
    x = space.encode(archs)
    assert x.shape == (500, NUM_LAYERS * NUM_CHOICES) and x.dtype == np.float32
    per_layer = x.reshape(500, NUM_LAYERS, NUM_CHOICES)
    np.testing.assert_array_equal(per_layer.sum(axis=2), 1.0)
    np.testing.assert_array_equal(per_layer.argmax(axis=2), np.array([a.choices for a in archs]))
    assert space.encode([]).shape == (0, NUM_LAYERS * NUM_CHOICES)


def test_build_runs_a_cifar_forward(space):
    arch = space.decode("12021012")
    model = space.build(arch).eval()
    with torch.no_grad():
        x = torch.randn(space.input_shape(arch))
        assert model.features(x).shape == (1, 256, 4, 4)
        assert model(x).shape == (1, 10)


def test_variation_and_decisions(space):
    rng = np.random.default_rng(4)
    assert space.decision_sizes() == (NUM_CHOICES,) * NUM_LAYERS
    for _ in range(300):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch.choices, child.choices)) == 1
        assert space.decode(space.to_string(child)) == child
        assert space.from_decisions(space.to_decisions(arch)) == arch
    a, b = space.sample(rng), space.sample(rng)
    for _ in range(20):
        child = space.crossover(a, b, rng)
        assert isinstance(child, MacroArch) and all(c in (x, y) for c, x, y in zip(child.choices, a.choices,
                                                                                     b.choices))
    with pytest.raises(ValueError, match="expected 8 choices in 0..2"):
        space.from_decisions([0] * 7 + [3])


def test_smallest_is_every_layer_id_and_a_lower_bound(space):
    low = space.smallest()
    assert space.to_string(low) == "00000000"
    rng = np.random.default_rng(5)
    for _ in range(200):
        arch = space.sample(rng)
        assert space.flops(arch) >= space.flops(low) and space.params(arch) >= space.params(low)


def test_cost_keys_describe_every_layer(space):
    costs = space.layer_costs(space.decode("01201220"))
    keys = [str(lc.key) for lc in costs]
    assert keys[0] == "stem_k3_s1_e1_relu_i3x32x32_o32x32x32_macro"
    assert keys[1] == "skip_k1_s2_e1_none_i32x32x32_o64x16x16_macro" and costs[1].macs > 0   # projection
    assert keys[2] == "ir_k3_s1_e3_relu_skip_i64x16x16_o64x16x16_macro"                      # residual recorded
    assert keys[3] == "ir_k5_s2_e6_relu_i64x16x16_o128x8x8_macro"
    assert keys[4] == "skip_k1_s1_e1_none_i128x8x8_o128x8x8_macro" and costs[4].macs == costs[4].params == 0
    assert keys[-2] == "head_k1_s1_e1_relu_i256x4x4_o1280x1x1_macro"
    assert keys[-1] == "classifier_k1_s1_e1_none_i1280x1x1_o10x1x1_macro"


def test_every_layer_is_enumerated_and_builds_alone_with_its_cost(space):
    layers, exact = space.enumerate_layers()
    keys = {str(lc.key) for lc in layers}
    assert exact and len(keys) == len(layers) == 21   # 3 fixed + 8 positions x 3 choices, less 6 repeats
    rng = np.random.default_rng(6)
    assert all(k in keys for _ in range(100) for k in space.cost_keys(space.sample(rng)))
    for lc in layers:
        shape = (1, *lc.key.in_shape)
        assert counted_on_meta(lambda: space.build_layer(lc.key), shape) == (lc.macs, lc.params), str(lc.key)
        with torch.no_grad():
            out = space.build_layer(lc.key).eval()(torch.randn(shape))
        assert out.shape in ((1, *lc.key.out_shape), (1, lc.key.out_shape[0])), str(lc.key)


def test_measure_times_the_space_into_a_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("HWNAS_PROFILE_PATH", raising=False)
    argv = ["--profile", "tiny-macro", "--space", "macro", "--num-classes", "10", "--sample", "4", "--networks", "2",
            "--warmup", "1", "--repeats", "3", "--attempts", "1", "--flush-seconds", "0", "--root", str(tmp_path)]
    assert measure.main(argv) == 0
    folder = tmp_path / "tiny-macro" / "1"
    manifest = read_manifest(folder / "manifest.yaml")
    assert (manifest.space, manifest.num_classes, manifest.resolution) == ("macro", 10, 32)
    blocks, nets = pd.read_csv(folder / "blocks.csv"), pd.read_csv(folder / "networks.csv", dtype={"arch": str})
    space = get_space("macro", num_classes=10)
    assert len(blocks) == 4 and set(blocks["key"]) <= {str(lc.key) for lc in space.enumerate_layers()[0]}
    assert len(nets) == 2 and all(space.to_string(space.decode(a)) == a for a in nets["arch"])
    assert any(a.startswith("0") for a in nets["arch"])   # the project's reader keeps the leading zeros
    assert list(read_table(folder / "networks.csv")["arch"]) == list(nets["arch"])
    assert (blocks["median_ms"] > 0).all() and (nets["median_ms"] > 0).all()


def test_effective_decisions_join_the_orderings_the_benchmark_trained_once(space, data):
    """Moving a stage's stride-1 identities behind its other layers maps the file's 6,561 rows onto its 3,969
    trained networks: one accuracy per class, and the costs agree."""
    canon = [space.effective_decisions(space.decode(a)) for a in data["arch"]]
    groups = data.assign(canon=canon).groupby("canon")
    assert groups.ngroups == 3969
    assert (groups["acc_mean"].nunique() == 1).all()
    assert (groups["flops"].nunique() == 1).all() and (groups["params"].nunique() == 1).all()
    assert space.effective_decisions(space.decode("01000010")) == (0, 1, 0, 0, 0, 0, 1, 0)
    assert space.effective_decisions(space.decode("00000010")) == (0, 0, 0, 0, 0, 0, 1, 0)
    assert space.effective_decisions(space.decode("12012021")) == (1, 2, 0, 1, 2, 0, 2, 1)
