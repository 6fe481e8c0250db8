"""The NAS-Bench-201 space: benchmark strings, all 15,625 cells, published cost range, exact cost, batch path."""
from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_batch_path_matches_per_arch, counted_on_meta as counted

from predictors.models import LGBMLatencyPredictor
from search_spaces import SPACES, get_space
from search_spaces.nb201 import NUM_EDGES, NUM_OPS, NUM_POSITIONS, OP_NAMES, NB201Arch

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV3 = ALL_NONE.replace("none", "nor_conv_3x3")


@pytest.fixture(scope="module")
def space():
    return get_space("nb201", num_classes=10)




def test_registered_with_the_benchmark_op_order():
    assert "nb201" in SPACES.names()
    assert OP_NAMES == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert (NUM_EDGES, NUM_OPS, NUM_POSITIONS) == (6, 5, 90)


def test_benchmark_string_round_trips(space):
    arch = space.decode(EXAMPLE)
    assert arch.ops == (3, 3, 4, 1, 3, 1)
    assert space.to_string(arch) == EXAMPLE


@pytest.mark.parametrize("bad, why", [
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "node 2: unknown op 'max_pool_3x3'; expected one of"),
    (EXAMPLE.replace("skip_connect~2", "skip_connect~1"), "node 3: input node index '1' where 2 belongs"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~x"), "node 2: input node index 'x'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", r"has 3 edges in 2 nodes \(inputs per node \[1, 2\]\)"),
    (EXAMPLE.replace("|skip_connect~2|", "|skip_connect~2|none~3|"), "has 7 edges in 3 nodes"),
    (EXAMPLE.replace("nor_conv_3x3~1", "nor_conv_3x3"), "node 3 edge 'nor_conv_3x3' is not 'op~input'"),
    (EXAMPLE[1:], "malformed"),
    ("", "malformed"),
    ("3 3 4 1 3 1", "malformed"),
])
def test_decode_rejects_strings_outside_the_space(space, bad, why):
    with pytest.raises(ValueError, match=why):
        space.decode(bad)


def test_space_holds_exactly_15625_distinct_cells(space):
    archs = [NB201Arch(ops) for ops in itertools.product(range(NUM_OPS), repeat=NUM_EDGES)]
    strings = [space.to_string(a) for a in archs]
    assert len(set(strings)) == len(archs) == 15_625
    assert all(space.decode(s) == a for s, a in zip(strings, archs))
    np.testing.assert_array_equal(space.choice_matrix(strings)[:, :NUM_EDGES], [a.ops for a in archs])


def test_cost_range_is_the_published_one(space):
    # NAS-Bench-201 (Dong & Yang, 2020), CIFAR-10: 7.78 to 220.11 MFLOPs (MACs), 0.073M to 1.531M parameters.
    # Over every cell via the positional tables: the extremes are all-none and all-nor_conv_3x3.
    pos = space.positional_layers()
    cells = np.array(list(itertools.product(range(NUM_OPS), repeat=NUM_EDGES)))
    at = (np.arange(NUM_POSITIONS), np.tile(cells, NUM_POSITIONS // NUM_EDGES))
    for field, low, high in (("macs", 7.78e6, 220.11e6), ("params", 0.073e6, 1.531e6)):
        per = np.array([[getattr(lc, field) for lc in row] for row in pos.table])
        total = sum(getattr(lc, field) for lc in pos.fixed) + per[at].sum(axis=1)
        assert total.min() == pytest.approx(low, rel=0.01) and total.max() == pytest.approx(high, rel=0.01)
    assert space.flops(space.decode(ALL_NONE)) == 7_783_040 and space.params(space.smallest()) == 73_306
    assert space.flops(space.decode(ALL_CONV3)) == 220_119_680 and space.params(space.decode(ALL_CONV3)) == 1_531_546
    assert space.to_string(space.smallest()) == ALL_NONE


def test_flops_and_params_match_built_models_exactly(space):
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(8)] + [space.decode(s) for s in (EXAMPLE, ALL_NONE, ALL_CONV3)]
    for arch in archs:
        built = counted(partial(space.build, arch), space.input_shape(arch))
        assert (space.flops(arch), space.params(arch)) == built, str(arch)


def test_network_shape_and_cost_keys(space):
    arch = space.decode(EXAMPLE)
    with torch.no_grad():
        model = space.build(arch).eval()
        assert model(torch.randn(space.input_shape(arch))).shape == (1, 10)
        assert model.features(torch.randn(space.input_shape(arch))).shape == (1, 64, 8, 8)
    assert sum(p.numel() for p in model.parameters()) == space.params(arch)
    keys = space.cost_keys(arch)
    assert len(keys) == 1 + 90 + 2 + 2
    assert keys[0] == "stem_k3_s1_e1_none_i3x32x32_o16x32x32_nb201"
    assert keys[1:7] == ["reluconv_k3_s1_e1_relu_i16x32x32_o16x32x32_nb201"] * 2 + [
        "avgpool_k3_s1_e1_none_i16x32x32_o16x32x32_nb201", "skip_k1_s1_e1_none_i16x32x32_o16x32x32_nb201",
        "reluconv_k3_s1_e1_relu_i16x32x32_o16x32x32_nb201", "skip_k1_s1_e1_none_i16x32x32_o16x32x32_nb201"]
    assert keys[31] == "resblock_k3_s2_e1_relu_skip_i16x32x32_o32x16x16_nb201"
    assert keys[62] == "resblock_k3_s2_e1_relu_skip_i32x16x16_o64x8x8_nb201"
    assert keys[63] == "reluconv_k3_s1_e1_relu_i64x8x8_o64x8x8_nb201"
    assert keys[-2:] == ["head_k1_s1_e1_relu_i64x8x8_o64x1x1_nb201", "classifier_k1_s1_e1_none_i64x1x1_o10x1x1_nb201"]
    assert space.cost_keys(space.smallest())[1] == "zero_k1_s1_e1_none_i16x32x32_o16x32x32_nb201"


def test_every_layer_is_enumerated_and_builds_alone_with_its_cost(space):
    layers, exact = space.enumerate_layers()
    keys = {str(lc.key) for lc in layers}
    assert exact and len(keys) == len(layers) == 5 + 3 * NUM_OPS   # fixed layers, every op at each width
    rng = np.random.default_rng(7)
    assert all(k in keys for _ in range(50) for k in space.cost_keys(space.sample(rng)))
    for lc in layers:
        assert counted(partial(space.build_layer, lc.key), (1, *lc.key.in_shape)) == (lc.macs, lc.params), lc.key
        with torch.no_grad():
            out = space.build_layer(lc.key).eval()(torch.randn(1, *lc.key.in_shape))
        assert out.shape[1] == lc.key.out_shape[0]


def test_variation_stays_in_space(space):
    rng = np.random.default_rng(2)
    for _ in range(200):
        arch, other = space.sample(rng), space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch.ops, child.ops)) == 1
        assert space.decode(space.to_string(child)) == child
        mixed = space.crossover(arch, other, rng)
        assert all(c in (x, y) for c, x, y in zip(mixed.ops, arch.ops, other.ops))
        assert space.from_decisions(space.to_decisions(arch)) == arch
    assert space.decision_sizes() == (NUM_OPS,) * NUM_EDGES


def test_choice_matrix_and_encoding_agree_with_decode(space):
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(500)]
    strings = [space.to_string(a) for a in archs]
    m = space.choice_matrix(strings)
    assert m.shape == (500, NUM_POSITIONS)
    np.testing.assert_array_equal(m, np.tile([a.ops for a in archs], 15))
    x = space.encode(archs)
    assert x.shape == (500, 30) and x.dtype == np.float32
    np.testing.assert_array_equal(x.reshape(500, NUM_EDGES, NUM_OPS).argmax(axis=2), [a.ops for a in archs])
    np.testing.assert_array_equal(space.encode_choices(m), x)
    assert space.choice_matrix([]).shape == (0, NUM_POSITIONS) and space.encode([]).shape == (0, 30)
    with pytest.raises(ValueError, match="unknown op 'conv'"):
        space.choice_matrix([strings[0], EXAMPLE.replace("nor_conv_3x3~0|+", "conv~0|+")])


def test_onnx_export_matches_pytorch(space, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    arch = space.decode("|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    model = space.build(arch).eval()
    x = torch.randn(space.input_shape(arch))
    path = tmp_path / "nb201.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def synthetic_nb201(space, n: int, seed: int = 0) -> pd.DataFrame:
    """Additive per-(edge, op) costs times a non-additive effect: a cell of only zero/skip edges is 30 % faster."""
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.05, 1.0, size=(NUM_EDGES, NUM_OPS))
    archs = [space.sample(rng) for _ in range(n)]
    cheap = [all(o < 2 for o in a.ops) for a in archs]
    lat = [(0.5 + cost[np.arange(NUM_EDGES), a.ops].sum()) * (0.7 if c else 1.0) for a, c in zip(archs, cheap)]
    return pd.DataFrame({"arch": [space.to_string(a) for a in archs], "device_ms": lat})


@pytest.mark.parametrize("correction", [True, False])
def test_batch_path_matches_one_lowering_per_arch(space, correction):
    data = synthetic_nb201(space, 500)
    tr, te = data.iloc[:300], data.iloc[300:]
    model = LGBMLatencyPredictor("nb201", num_classes=10, correction=correction, n_estimators=30,
                                 block_estimators=30).fit(tr.arch.tolist(), tr.device_ms.to_numpy())
    assert_batch_path_matches_per_arch(model, te.arch.tolist())
