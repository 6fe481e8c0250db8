"""The MuffNet space: ShuffleNetV2 points and presets, strings, variation, exact cost, layers, features, ONNX."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from conftest import counted_on_meta as counted

from predictors.features import BLOCK_FEATURES, _macs_estimate, block_matrix
from search_spaces import SPACES, get_space
from search_spaces.costs import parse_cost_key
from search_spaces.muffnet import (
    FIELDS,
    NUM_STAGES,
    SHUFFLENET_V2_CHANNELS,
    FederatedStage,
    MuffNetArch,
    StagePlan,
    shufflenet_v2,
    stage_channels,
)

V2_05 = "d4_w0.5_k3_g1_f1|d8_w0.5_k3_g1_f1|d4_w0.5_k3_g1_f1"
V2_10 = "d4_w1_k3_g1_f1|d8_w1_k3_g1_f1|d4_w1_k3_g1_f1"
MIXED = "d3_w0.75_k5_g2_f2|d6_w1_k7_g4_f3|d2_w1.25_k3_g4_f3"   # grouped convs, shuffles and joins everywhere
PRESETS = {"40m": 40e6, "150m": 150e6}


@pytest.fixture(scope="module")
def space():
    return get_space("muffnet")




def decisions_differing(space, a, b) -> int:
    return sum(x != y for x, y in zip(space.to_decisions(a), space.to_decisions(b)))


# ---- ShuffleNetV2 points and presets -----------------------------------------------------------------------------
def test_registered_and_shufflenet_v2_is_a_point_of_the_space(space):
    assert "muffnet" in SPACES.names()
    assert space.to_string(shufflenet_v2(0.5)) == V2_05 and space.to_string(shufflenet_v2(1.0)) == V2_10
    assert space.decode(V2_05) == shufflenet_v2(0.5) and space.decode(V2_10) == shufflenet_v2(1.0)
    assert [c for c, _ in space.feature_info(shufflenet_v2(1.0))] == [116, 232, 464]
    with pytest.raises(ValueError, match="width 2 is not one this space reproduces"):
        shufflenet_v2(2.0)


@pytest.mark.parametrize("width, published_macs, published_params", [(0.5, 41e6, 1.4e6), (1.0, 146e6, 2.3e6)])
def test_shufflenet_v2_costs_the_published_flops(space, width, published_macs, published_params):
    # Ma et al. (2018), ImageNet 224x224: ShuffleNetV2 0.5x 41M and 1.0x 146M FLOPs (multiply-accumulates)
    arch = shufflenet_v2(width)
    assert space.flops(arch) == pytest.approx(published_macs, rel=0.05)
    assert space.params(arch) == pytest.approx(published_params, rel=0.05)
    assert counted(partial(space.build, arch), space.input_shape(arch)) == (space.flops(arch), space.params(arch))


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5])
def test_shufflenet_v2_points_are_torchvisions_networks(space, width):
    models = pytest.importorskip("torchvision.models")
    reference = partial(getattr(models, f"shufflenet_v2_x{width:.1f}".replace(".", "_")), weights=None)
    arch = shufflenet_v2(width)
    assert counted(reference, (1, 3, 224, 224)) == (space.flops(arch), space.params(arch))


@pytest.mark.parametrize("preset, budget", PRESETS.items())
def test_presets_are_centred_on_their_budget(preset, budget):
    space = get_space("muffnet", {"preset": preset})
    rng = np.random.default_rng(0)
    flops = [space.flops(space.sample(rng)) for _ in range(400)]
    assert np.median(flops) == pytest.approx(budget, rel=0.15)
    assert min(flops) < budget < max(flops)
    point = shufflenet_v2(0.5 if preset == "40m" else 1.0)    # the ShuffleNetV2 of that budget is inside
    assert space.decode(space.to_string(point)) == point
    assert space.flops(point) == pytest.approx(budget, rel=0.05)
    assert np.prod(space.decision_sizes(), dtype=float) < np.prod(get_space("muffnet").decision_sizes(), dtype=float)


def test_explicit_choices_override_the_preset():
    space = get_space("muffnet", {"preset": "40m", "kernels": [3], "spans": [2, 1]})
    choices = space.choices[0]
    assert choices[FIELDS.index("kernel")] == (3,) and choices[FIELDS.index("span")] == (1, 2)
    assert choices[FIELDS.index("width")] == (0.45, 0.5, 0.55, 0.6)     # the preset's


@pytest.mark.parametrize("options, why", [
    ({"preset": "100m"}, "preset"),
    ({"depths": [[4], [8]]}, "one list of depth choices per stage"),
    ({"widths": [0.5, 0.5]}, "unique"),
    ({"groups": []}, "at least one choice"),
    ({"kernels": [4]}, "kernels"),
    ({"widths": [0.0]}, "greater than 0"),
    ({"span": [1]}, "Extra inputs are not permitted"),
])
def test_options_are_validated(options, why):
    with pytest.raises(ValidationError, match=why):
        get_space("muffnet", options)


def test_stage_channels_follow_shufflenet_v2_and_split_into_groups():
    for width, chans in SHUFFLENET_V2_CHANNELS.items():
        assert tuple(stage_channels(s, width) for s in range(NUM_STAGES)) == chans
    assert [stage_channels(0, w) for w in (0.25, 0.75, 1.25)] == [24, 82, 146]   # scaled, interpolated
    assert stage_channels(0, 1.0, 4) == 120 and stage_channels(0, 1.0, 2) == 116   # halves split into g groups
    for s in range(NUM_STAGES):
        for g in (1, 2, 4, 8):
            chans = [stage_channels(s, w, g) for w in np.arange(0.1, 3.0, 0.05)]
            assert all(c % (2 * g) == 0 for c in chans) and chans == sorted(chans)


def test_channel_multiple_makes_every_depthwise_conv_a_multiple_of_four_channels():
    archs = lambda space: [space.sample(np.random.default_rng(i)) for i in range(30)]   # noqa: E731
    plain, aligned = get_space("muffnet", {"preset": "150m"}), get_space("muffnet", {"preset": "150m",
                                                                                      "channel_multiple": 8})

    def depthwise_channels(space, arch):
        return [c.cin for lc in space.layer_costs(arch) for c in lc.convs if c.groups == c.cin > 1]
    assert any(c % 4 for a in archs(plain) for c in depthwise_channels(plain, a)), "the default has ragged ones"
    assert all(c % 4 == 0 for a in archs(aligned) for c in depthwise_channels(aligned, a))
    for a in archs(aligned)[:3]:   # the built network has the channels its costs describe
        assert [m.in_channels for m in aligned.build(a).modules() if isinstance(m, torch.nn.Conv2d)
                and m.groups == m.in_channels > 1] == depthwise_channels(aligned, a)
    assert stage_channels(0, 1.0, 1, 8) == 120 and stage_channels(0, 1.0, 4, 8) == 120
    assert stage_channels(1, 1.25, 2, 8) == 296 and stage_channels(1, 1.25, 2) == 292


# ---- strings and variation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"preset": "40m"}, {"preset": "150m"}, {"widths": [0.3, 2.5]}])
def test_strings_round_trip(options):
    space = get_space("muffnet", options)
    rng = np.random.default_rng(1)
    for _ in range(200):
        arch = space.sample(rng)
        assert space.decode(space.to_string(arch)) == arch
    assert space.decode(space.to_string(space.smallest())) == space.smallest()


@pytest.mark.parametrize("bad, why", [
    (V2_10.rsplit("|", 1)[0], "has 2 stages, the muffnet space has 3"),
    (V2_10 + "|d4_w1_k3_g1_f1", "has 4 stages"),
    ("", "has 1 stages"),
    (V2_10.replace("k3", "k4", 1), r"stage 0 kernel 4 is not in the space's choices \[3, 5, 7\]"),
    (V2_10.replace("d8", "d7"), r"stage 1 depth 7 is not in the space's choices \[4, 6, 8, 10\]"),
    (V2_10.replace("g1_f1", "g8_f1"), "stage 0 groups 8 is not"),
    (V2_10.replace("f1", "f4"), "stage 0 span 4 is not"),
    (V2_10.replace("w1", "w0.6", 1), "stage 0 width 0.6 is not"),
    (V2_10.replace("w1", "wide", 1), "stage 0 'd4_wide_k3_g1_f1' is not 'd<depth>_w<width>_k<kernel>_g"),
    (V2_10.replace("_f1", "", 1), "stage 0 'd4_w1_k3_g1' is not"),
    (V2_10.replace("w1", "w1..5", 1), "stage 0 'd4_w1..5_k3_g1_f1' is not"),
])
def test_decode_rejects_strings_outside_the_space(space, bad, why):
    with pytest.raises(ValueError, match=why):
        space.decode(bad)


def test_mutation_changes_exactly_one_decision(space):
    rng = np.random.default_rng(2)
    for _ in range(300):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert decisions_differing(space, arch, child) == 1
        assert space.decode(space.to_string(child)) == child
    fixed = get_space("muffnet", {"depths": [[1], [1], [1]], "widths": [1.0], "kernels": [3], "groups": [1],
                                  "spans": [1, 2]})
    arch = fixed.sample(rng)
    assert decisions_differing(fixed, arch, fixed.mutate(arch, rng)) == 1   # only the spans can change


def test_crossover_takes_each_decision_from_a_parent(space):
    rng = np.random.default_rng(3)
    a, b = space.sample(rng), space.sample(rng)
    da, db = space.to_decisions(a), space.to_decisions(b)
    children = [space.crossover(a, b, rng) for _ in range(30)]
    for child in children:
        assert isinstance(child, MuffNetArch)
        assert all(c in (x, y) for c, x, y in zip(space.to_decisions(child), da, db))
    assert len({space.to_string(c) for c in children}) > 2


def test_decision_view_round_trips(space):
    sizes = space.decision_sizes()
    assert sizes == (5, 5, 3, 3, 3, 4, 5, 3, 3, 3, 5, 5, 3, 3, 3)   # per stage: depth, width, kernel, groups, span
    rng = np.random.default_rng(4)
    for _ in range(100):
        arch = space.sample(rng)
        decisions = space.to_decisions(arch)
        assert all(0 <= d < n for d, n in zip(decisions, sizes))
        assert space.from_decisions(decisions) == arch
    assert space.from_decisions([0] * len(sizes)) == space.decode("d2_w0.5_k3_g1_f1|d4_w0.5_k3_g1_f1|d2_w0.5_k3_g1_f1")


def test_encode_has_a_fixed_width(space):
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(300)]
    x = space.encode(archs)
    assert x.shape == (300, 6 * NUM_STAGES) and x.dtype == np.float32
    per_stage = x.reshape(300, NUM_STAGES, 6)
    np.testing.assert_array_equal(per_stage[:, :, 0], [[s.depth for s in a.stages] for a in archs])
    np.testing.assert_array_equal(per_stage[:, :, 5], [[c for c, _ in space.feature_info(a)] for a in archs])
    assert space.encode([]).shape == (0, 6 * NUM_STAGES)


# ---- cost ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"preset": "40m"}, {"preset": "150m", "resolution": 160}])
def test_flops_and_params_match_built_models_exactly(options):
    space = get_space("muffnet", options, num_classes=100)
    rng = np.random.default_rng(6)
    archs = [space.sample(rng) for _ in range(8)] + [space.smallest()]
    archs += [space.decode(MIXED)] if not options else []
    for arch in archs:
        built = counted(partial(space.build, arch), space.input_shape(arch))
        assert (space.flops(arch), space.params(arch)) == built, str(arch)


def test_smallest_is_a_lower_bound_on_cost(space):
    low = space.smallest()
    low_f, low_p = space.flops(low), space.params(low)
    assert all(s.depth == d for s, d in zip(low.stages, (2, 4, 2))) and all(s.span == 1 for s in low.stages)
    rng = np.random.default_rng(7)
    for _ in range(300):
        arch = space.sample(rng)
        assert space.flops(arch) >= low_f and space.params(arch) >= low_p
    for i in range(len(space.decision_sizes())):     # no single-decision change makes it cheaper
        for c in range(space.decision_sizes()[i]):
            decisions = list(space.to_decisions(low))
            decisions[i] = c
            assert space.flops(space.from_decisions(decisions)) >= low_f


def test_cost_keys_describe_every_layer(space):
    keys = space.cost_keys(shufflenet_v2(1.0))
    assert len(keys) == 2 + 16 + 2                    # stem, max pool, 16 units, no joins at span 1, head, classifier
    assert keys[:3] == ["stem_k3_s2_e1_relu_i3x224x224_o24x112x112_muffnet",
                        "maxpool_k3_s2_e1_none_i24x112x112_o24x56x56_muffnet",
                        "shuffle_k3_s2_e1_relu_i24x56x56_o116x28x28_muffnet"]
    assert keys[3] == "shuffle_k3_s1_e1_relu_i116x28x28_o116x28x28_muffnet"
    assert keys[-2:] == ["head_k1_s1_e1_relu_i464x7x7_o1024x1x1_muffnet",
                         "classifier_k1_s1_e1_none_i1024x1x1_o1000x1x1_muffnet"]
    costs = space.layer_costs(space.decode(MIXED))
    ops = [lc.key.op for lc in costs]
    # stage 0, span 2: adds after units 2 and 3; stage 1, span 3: 0, 1, 2, 2, 2, 2; stage 2, span 3: 0, 1
    assert ops.count("add") == 2 + 9 + 1 and ops.count("shuffle") == 3 + 6 + 2
    assert ops[2:7] == ["shuffle", "shuffle", "add", "shuffle", "add"]
    assert str(costs[3].key) == "shuffle_k5_s1_e1_g2_relu_i84x28x28_o84x28x28_muffnet"     # 82 rounded up to 4
    assert str(costs[4].key) == "add_k1_s1_e1_none_i84x28x28_o84x28x28_muffnet" and costs[4].macs == 0
    assert str(costs[7].key) == "shuffle_k7_s2_e1_g4_relu_i84x28x28_o232x14x14_muffnet"
    assert all(lc.key.family == "muffnet" for lc in costs)


def test_every_layer_is_enumerated_with_block_features(space):
    layers, exact = space.enumerate_layers()
    keys = [str(lc.key) for lc in layers]
    assert exact and len(set(keys)) == len(keys)
    rng = np.random.default_rng(8)
    assert all(k in set(keys) for _ in range(300) for k in space.cost_keys(space.sample(rng)))
    assert all(str(parse_cost_key(k)) == k for k in keys)
    features = block_matrix(keys)
    assert features.shape == (len(keys), len(BLOCK_FEATURES))
    named = dict(zip(BLOCK_FEATURES, features.T))
    assert (named["family_muffnet"] == 1).all()
    assert (named["op_shuffle"] + named["op_maxpool"] + named["op_add"] + named["op_stem"] + named["op_head"]
            + named["op_classifier"] == 1).all()
    for lc in layers:     # the features' MACs estimate of a unit is exact
        if lc.key.op == "shuffle":
            assert _macs_estimate(lc.key) == pytest.approx(lc.macs), lc.key


def test_build_layer_gives_every_key_its_shape_and_cost():
    space = get_space("muffnet", {"resolution": 96})
    rng = np.random.default_rng(9)
    seen = {}
    for _ in range(3):
        seen.update((str(lc.key), lc) for lc in space.layer_costs(space.sample(rng)))
    seen.update((str(lc.key), lc) for lc in space.layer_costs(space.decode(MIXED)))
    for lc in seen.values():
        key = lc.key
        assert counted(partial(space.build_layer, key), (1, *key.in_shape)) == (lc.macs, lc.params), str(key)
        with torch.no_grad():
            out = space.build_layer(key).eval()(torch.randn(1, *key.in_shape))
        expected = key.out_shape if key.out_shape[1:] != (1, 1) else key.out_shape[:1]
        assert tuple(out.shape[1:]) == expected, str(key)
    with pytest.raises(ValueError, match="cannot build a layer for cost key op 'ir'"):
        space.build_layer(parse_cost_key("ir_k3_s1_e6_relu_i16x8x8_o16x8x8_muffnet"))
    with pytest.raises(ValueError, match="no ShuffleNetV2 unit 16 -> 24 channels, stride 1"):
        space.build_layer(parse_cost_key("shuffle_k3_s1_e1_relu_i16x8x8_o24x8x8_muffnet"))


def test_federation_sums_the_last_span_unit_outputs():
    stage = FederatedStage(StagePlan(cin=24, cout=32, hw=16, depth=4, kernel=3, groups=2, span=3)).eval()
    x = torch.randn(2, 24, 16, 16)
    with torch.no_grad():
        outs, inp = [], x
        for unit in stage.units:
            outs.append(unit(inp))
            inp = sum(outs[-3:])
        torch.testing.assert_close(stage(x), outs[1] + outs[2] + outs[3])
        plain = FederatedStage(StagePlan(24, 32, 16, 4, 3, 2, 1)).eval()
        y = x
        for unit in plain.units:
            y = unit(y)
        torch.testing.assert_close(plain(x), y)


# ---- features for detection --------------------------------------------------------------------------------------
@pytest.mark.parametrize("string", [V2_05, MIXED])
def test_feature_interface_for_detection(space, string):
    arch = space.decode(string)
    info = space.feature_info(arch)
    assert [s for _, s in info] == [8, 16, 32]
    with torch.device("meta"):
        backbone = space.build_features(arch).eval()
        with torch.no_grad():
            feats = backbone(torch.randn(space.input_shape(arch)))
    assert [tuple(f.shape) for f in feats] == [(1, c, 224 // s, 224 // s) for c, s in info]
    head_free = space.feature_layer_costs(arch)
    full = space.layer_costs(arch)
    assert [str(lc.key) for lc in full[:len(head_free)]] == [str(lc.key) for lc in head_free]
    assert [lc.key.op for lc in full[len(head_free):]] == ["head", "classifier"]
    assert head_free[-1].key.out_shape == (info[-1][0], 7, 7)
    built = counted(partial(space.build_features, arch), space.input_shape(arch))
    assert built == (sum(lc.macs for lc in head_free), sum(lc.params for lc in head_free))


# ---- export ------------------------------------------------------------------------------------------------------
def test_onnx_export_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    space = get_space("muffnet", {"resolution": 64}, num_classes=10)
    arch = space.decode(MIXED)
    torch.manual_seed(0)
    x = torch.randn(space.input_shape(arch))
    for name, model, outputs in (("net", space.build(arch).eval(), ["y"]),
                                 ("features", space.build_features(arch).eval(), ["p3", "p4", "p5"])):
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=outputs, dynamo=False)
        with torch.no_grad():
            expected = model(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else expected
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy()})
        assert len(got) == len(outputs)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
