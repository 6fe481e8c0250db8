"""The MobileNet-style space: strings, variation, analytic cost against real models, timm definitions."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import SPACES, get_space
from search_spaces.blocks import NetworkDef, build_network, count_macs, count_params, layer_costs
from search_spaces.timm_defs import REFERENCE_NETWORKS

WIDE = {"widths": [0.5, 0.75, 1.0], "resolutions": [96, 128, 160]}


def counted(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs by torch's flop counter, parameters) of a built model."""
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(shape))
    return fc.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SPACES.names())
def test_every_registered_space_round_trips_and_builds(name):
    space = get_space(name, num_classes=10)
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    assert space.decode(space.to_string(arch)) == arch
    out = space.build(arch).eval()(torch.randn(space.input_shape(arch)))
    if isinstance(out, tuple):   # a detector: class logits (1, A, classes + 1) and box deltas (1, A, 4)
        assert out[0].shape[::2] == (1, 11) and out[1].shape[::2] == (1, 4) and out[0].shape[1] == out[1].shape[1]
    else:
        assert out.shape == (1, 10)


def test_flops_and_params_match_built_models_on_random_samples():
    space = get_space("mobilenet", WIDE, num_classes=100)
    rng = np.random.default_rng(1)
    for _ in range(25):
        arch = space.sample(rng)
        macs, params = counted(space.build(arch), space.input_shape(arch))
        assert abs(space.flops(arch) - macs) <= 0.01 * macs, str(arch)
        assert space.params(arch) == params, str(arch)


@pytest.mark.parametrize("name", sorted(REFERENCE_NETWORKS))
def test_timm_block_definitions_decode_cost_and_build_like_timm(name):
    net = REFERENCE_NETWORKS[name]
    reference = timm.create_model(name, pretrained=False)
    ours = build_network(net)
    macs, params = counted(ours, (1, 3, 224, 224))
    ref_macs, ref_params = counted(reference, (1, 3, 224, 224))
    assert params == ref_params == count_params(net)
    assert macs == ref_macs == count_macs(net)


def test_published_mobilenetv2_cost():
    # MobileNetV2-1.0 at 224: 300M multiply-adds, 3.5M parameters (Sandler et al., 2018)
    net = REFERENCE_NETWORKS["mobilenetv2_100"]
    assert 295e6 < count_macs(net) < 305e6
    assert 3.4e6 < count_params(net) < 3.6e6


def test_unsupported_block_is_a_clear_error():
    net = NetworkDef(arch_def=(("mqa_r1_k3_h4_s1_d64_c24",),))
    with pytest.raises(ValueError, match="not supported"):
        layer_costs(net)
    with pytest.raises(ValueError, match="cannot decode"):
        layer_costs(NetworkDef(arch_def=(("zz_r1_k3",),)))


def test_canonical_string_is_stable_and_readable():
    space = get_space("mobilenet")
    s = "r224_w1|k3e4,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s"
    arch = space.decode(s)
    assert space.to_string(arch) == s
    assert [len(st) for st in arch.stages] == [2, 2, 3, 2, 2]
    assert arch.stages[0][1].se and arch.stages[0][1].kernel == 5 and arch.stages[0][1].expansion == 6


@pytest.mark.parametrize("bad, why", [
    ("garbage", "start with"),
    ("r224_w1|k3e4,k5e6", "stages"),
    ("r999_w1|k3e4,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s", "resolution"),
    ("r224_w1|k4e4,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s", "kernel"),
    ("r224_w1|k3e5,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s", "expansion"),
    ("r224_w1|k3e4|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s", "depth"),
    ("r224_w1|k3x4,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s", "not 'k<kernel>"),
])
def test_decode_rejects_strings_outside_the_space(bad, why):
    with pytest.raises(ValueError, match=why):
        get_space("mobilenet").decode(bad)


def test_mutation_changes_exactly_one_decision_and_stays_in_space():
    space = get_space("mobilenet", WIDE)
    rng = np.random.default_rng(2)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert child != arch
        assert space.decode(space.to_string(child)) == child
        diffs = (arch.resolution != child.resolution) + (arch.width != child.width)
        for a, b in zip(arch.stages, child.stages):
            if len(a) != len(b):
                diffs += 1
            else:
                diffs += sum((x.kernel != y.kernel) + (x.expansion != y.expansion) + (x.se != y.se)
                             for x, y in zip(a, b))
        assert diffs == 1


def test_crossover_takes_stages_from_parents():
    space = get_space("mobilenet", WIDE)
    rng = np.random.default_rng(3)
    a, b = space.sample(rng), space.sample(rng)
    for _ in range(20):
        child = space.crossover(a, b, rng)
        assert all(c in (x, y) for c, x, y in zip(child.stages, a.stages, b.stages))
        assert space.decode(space.to_string(child)) == child


def test_encode_is_fixed_width_and_distinguishes_archs():
    space = get_space("mobilenet", WIDE)
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(50)]
    x = space.encode(archs)
    assert x.shape == (50, 2 + 4 * 4 * 5)
    assert len({row.tobytes() for row in x}) == len(set(archs))


def test_smallest_is_a_lower_bound_on_cost():
    space = get_space("mobilenet", WIDE)
    rng = np.random.default_rng(5)
    low_f, low_p = space.flops(space.smallest()), space.params(space.smallest())
    for _ in range(100):
        arch = space.sample(rng)
        assert space.flops(arch) >= low_f and space.params(arch) >= low_p


def test_cost_keys_describe_every_layer():
    space = get_space("mobilenet", num_classes=10)
    arch = space.decode("r224_w1|k3e4,k5e6s|k3e3,k3e3|k7e6s,k3e4,k5e3|k3e3,k3e3|k5e6s,k5e6s")
    keys = space.cost_keys(arch)
    # stem + ds + 11 searchable layers + last 1x1 conv + head + classifier
    assert len(keys) == 1 + 1 + 11 + 1 + 1 + 1
    assert keys[0].startswith("stem_k3_s2") and "_i3x224x224_o16x112x112" in keys[0]
    ir = [k for k in keys if k.startswith("ir_")]
    assert ir[1].startswith("ir_k5_s1_e6_se") and "_skip_" in ir[1]       # SE and residual recorded
    assert ir[2].startswith("ir_k3_s2_e3_") and "_o40x28x28_" in ir[2]     # stride and output shape
    assert keys[-1].startswith("classifier") and "_o10x1x1_" in keys[-1]
    assert sum(lc.macs for lc in space.layer_costs(arch)) == space.flops(arch)
