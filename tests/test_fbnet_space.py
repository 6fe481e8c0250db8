"""The FBNet space (HW-NAS-Bench, CIFAR-100 setting): data strings, variation, exact cost, ONNX, layer order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import SPACES, get_space
from search_spaces.fbnet import CHOICE_NAMES, NUM_CHOICES, NUM_LAYERS, SKIP, FBNetArch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"
ALL_K3_E1 = " ".join(["0"] * NUM_LAYERS)


@pytest.fixture(scope="module")
def space():
    return get_space("fbnet", num_classes=100)


@pytest.fixture(scope="module")
def data():
    if not DATA.exists():
        pytest.skip(f"shared FBNet latency data not found at {DATA}")
    pd = pytest.importorskip("pandas")
    return pd.read_csv(DATA)


def counted(space, arch) -> tuple[int, int]:
    """(MACs by torch's flop counter, parameters) of the built model.

    Built and run on the meta device: the counter needs shapes only, and real CPU forwards of 30+ nets would take
    most of the test budget on a 2-core runner. The ONNX test runs a real forward.
    """
    with torch.device("meta"):
        model = space.build(arch).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.randn(space.input_shape(arch)))
    return fc.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def test_registered_with_the_data_choice_order():
    assert "fbnet" in SPACES.names()
    assert CHOICE_NAMES == ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
    assert (NUM_LAYERS, NUM_CHOICES, SKIP) == (22, 9, 8)


def test_data_strings_round_trip(space, data):
    for string in data["arch"].head(200):
        arch = space.decode(string)
        assert len(arch.choices) == NUM_LAYERS
        assert space.to_string(arch) == string


@pytest.mark.parametrize("bad, why", [
    (" ".join(["0"] * 21), "has 21 layer choices"),
    (" ".join(["0"] * 23), "has 23 layer choices"),
    ("", "has 0 layer choices"),
    (" ".join(["0"] * 21 + ["9"]), "layer 21 choice 9 is out of range"),
    (" ".join(["-1"] + ["0"] * 21), "layer 0 choice '-1' is not a non-negative integer"),
    (" ".join(["0", "1.5"] + ["0"] * 20), "layer 1 choice '1.5' is not"),
    (" ".join(["0", "0", "k3"] + ["0"] * 19), "layer 2 choice 'k3' is not"),
])
def test_decode_rejects_strings_outside_the_space(space, bad, why):
    with pytest.raises(ValueError, match=why):
        space.decode(bad)


def test_mutation_changes_exactly_one_layer(space):
    rng = np.random.default_rng(2)
    for _ in range(300):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch.choices, child.choices)) == 1
        assert all(0 <= c < NUM_CHOICES for c in child.choices)
        assert space.decode(space.to_string(child)) == child


def test_crossover_takes_each_layer_from_a_parent(space):
    rng = np.random.default_rng(3)
    a, b = space.sample(rng), space.sample(rng)
    for _ in range(20):
        child = space.crossover(a, b, rng)
        assert isinstance(child, FBNetArch) and len(child.choices) == NUM_LAYERS
        assert all(c in (x, y) for c, x, y in zip(child.choices, a.choices, b.choices))


def test_flops_and_params_match_built_models_exactly(space):
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(30)]
    archs += [space.decode(ALL_K3_E1), space.decode(" ".join(["8"] * NUM_LAYERS)), space.smallest()]
    for arch in archs:
        macs, params = counted(space, arch)
        assert space.flops(arch) == macs, str(arch)
        assert space.params(arch) == params, str(arch)


def test_encode_is_a_vectorised_one_hot(space):
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(2000)]
    x = space.encode(archs)
    assert x.shape == (2000, NUM_LAYERS * NUM_CHOICES) and x.dtype == np.float32
    per_layer = x.reshape(2000, NUM_LAYERS, NUM_CHOICES)
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(per_layer.sum(axis=2), 1.0)
    np.testing.assert_array_equal(per_layer.argmax(axis=2), np.array([a.choices for a in archs]))
    assert space.encode([]).shape == (0, NUM_LAYERS * NUM_CHOICES)


def test_onnx_export_matches_pytorch(space, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    arch = space.decode("1 5 2 8 3 7 1 5 0 4 6 8 1 5 2 3 8 1 5 6 7 1")   # both grouped choices and shuffles
    model = space.build(arch).eval()
    x = torch.randn(space.input_shape(arch))
    path = tmp_path / "fbnet.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_smallest_is_a_lower_bound_on_cost(space):
    rng = np.random.default_rng(5)
    low = space.smallest()
    low_f, low_p = space.flops(low), space.params(low)
    assert low.choices.count(SKIP) >= 20   # skip wherever it is the identity and at cheap projections
    for _ in range(200):
        arch = space.sample(rng)
        assert space.flops(arch) >= low_f and space.params(arch) >= low_p
    for layer in range(NUM_LAYERS):       # no single-layer change makes it cheaper
        for c in range(NUM_CHOICES):
            other = FBNetArch(low.choices[:layer] + (c,) + low.choices[layer + 1:])
            assert space.flops(other) >= low_f


def test_three_stride_two_layers_leave_a_4x4_map_at_32x32(space):
    arch = space.decode(ALL_K3_E1)
    costs = space.layer_costs(arch)
    assert len(costs) == 1 + NUM_LAYERS + 2
    assert [lc.key.stride for lc in costs[1:-2]].count(2) == 3
    assert costs[-3].key.out_shape == (352, 4, 4)
    with torch.no_grad():
        feats = space.build(arch).eval().features(torch.randn(space.input_shape(arch)))
    assert feats.shape == (1, 352, 4, 4)


def test_cost_keys_describe_every_layer(space):
    arch = space.decode("0 8 1 5 3 8 2 7 4 6 8 0 1 2 3 4 5 6 7 8 0 1")
    costs = space.layer_costs(arch)
    keys = [str(lc.key) for lc in costs]
    assert keys[0] == "stem_k3_s1_e1_relu_i3x32x32_o16x32x32_fbnet"
    assert keys[1] == "fbnet_k3_s1_e1_relu_skip_i16x32x32_o16x32x32_fbnet"       # residual recorded
    assert keys[2] == "skip_k1_s1_e1_relu_i16x32x32_o24x32x32_fbnet"             # projection skip
    assert keys[3] == "fbnet_k3_s1_e1_g2_relu_skip_i24x32x32_o24x32x32_fbnet"    # groups recorded
    assert keys[6].startswith("skip_") and costs[6].key.stride == 2 and costs[6].macs > 0
    assert keys[11] == "skip_k1_s1_e1_none_i64x8x8_o64x8x8_fbnet" and costs[11].macs == 0   # identity
    assert keys[-2] == "head_k1_s1_e1_relu_i352x4x4_o1504x1x1_fbnet"
    assert keys[-1] == "classifier_k1_s1_e1_none_i1504x1x1_o100x1x1_fbnet"
    assert all(lc.key.family == "fbnet" for lc in costs)


def test_encoding_lines_up_with_the_data_layer_order(space, data):
    # The FPGA column is an exact sum of per-(layer, choice) costs, so a linear fit on our one-hot features must
    # reproduce held-out rows. Additivity alone is blind to the layer order, so also check the fitted per-choice
    # costs against our cost keys: two layers with the same keys for every choice (same shapes and stride) must
    # get the same fitted costs, and layers whose keys differ must not.
    x = space.encode([space.decode(s) for s in data["arch"]]).astype(np.float64)
    y = data["fpga_ms"].to_numpy(dtype=np.float64)
    train, test = slice(0, 3000), slice(3000, None)
    coef, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
    pred = x[test] @ coef
    r2 = 1 - np.sum((y[test] - pred) ** 2) / np.sum((y[test] - y[test].mean()) ** 2)
    assert r2 > 0.999
    per_choice = coef.reshape(NUM_LAYERS, NUM_CHOICES)
    per_choice -= per_choice.mean(axis=1, keepdims=True)   # one-hot groups fix each layer only up to a constant
    keys = [[str(space.layer_costs(FBNetArch((c,) * NUM_LAYERS))[1 + layer].key) for c in range(NUM_CHOICES)]
            for layer in range(NUM_LAYERS)]
    for i in range(NUM_LAYERS):
        for j in range(i + 1, NUM_LAYERS):
            gap = np.abs(per_choice[i] - per_choice[j]).max()
            if keys[i] == keys[j]:
                assert gap < 1e-4, (i, j, gap)
            else:
                assert gap > 1e-3, (i, j, gap)


def test_every_layer_is_enumerated_and_builds_alone_with_its_cost():
    space = get_space("fbnet", num_classes=100)
    layers, exact = space.enumerate_layers()
    keys = {str(lc.key) for lc in layers}
    rng = np.random.default_rng(7)
    assert exact and all(k in keys for _ in range(100) for k in space.cost_keys(space.sample(rng)))
    for lc in layers[::7]:
        module = space.build_layer(lc.key).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            out = module(torch.randn(1, *lc.key.in_shape))
        assert fc.get_total_flops() // 2 == lc.macs and sum(p.numel() for p in module.parameters()) == lc.params
        assert out.shape[1] == lc.key.out_shape[0]
