"""Recovering NetworkDefs from timm models: exact cost, same build, clear errors for what is unsupported.

Costs are checked against timm models on the meta device (shapes only), so every model runs at 224 cheaply.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.blocks import (NetworkDef, build_layer, build_network, count_macs, count_params, decode_blocks,
                                  layer_costs)
from search_spaces.costs import parse_cost_key
from search_spaces.timm_defs import REFERENCE_NETWORKS
from search_spaces.timm_import import network_def_from_timm

SUPPORTED = [
    "mobilenetv2_035", "mobilenetv2_100", "mobilenetv2_140", "mobilenetv3_large_075", "mobilenetv3_large_100",
    "mobilenetv3_small_050", "mobilenetv3_small_100", "tf_mobilenetv3_large_minimal_100", "mnasnet_100",
    "semnasnet_100", "mnasnet_small", "spnasnet_100", "fbnetc_100", "efficientnet_lite0", "tf_efficientnet_lite0",
    "efficientnet_b0", "hardcorenas_a", "lcnet_100", "mobilenetv1_100", "efficientnet_es", "tf_efficientnetv2_b0",
    "mobilenetv4_conv_small", "mixnet_s",
]
# every MobileNet-family name timm lists: each must be costed exactly or refused in one line
FAMILY_PATTERNS = ("mobilenetv1*", "mobilenetv2*", "mobilenetv3*", "tf_mobilenetv3*", "mobilenetv4*", "mnasnet*",
                   "semnasnet*", "spnasnet*", "fbnet*", "tinynet*", "hardcorenas*", "lcnet*", "mixnet*",
                   "tf_mixnet*", "ghostnet*", "efficientnet_*", "tf_efficientnet*")
FAMILY_MODELS = sorted({n for p in FAMILY_PATTERNS for n in timm.list_models(p)})
COSTED_AT_LEAST = 107   # of the 150 names timm 1.0 lists; a timm release that breaks the importer shows here
UNSUPPORTED = {
    "mobilenetv3_rw": "SE width 18 of 72",         # SE rounded with round(), not make_divisible
    "efficientnet_cc_b0_4e": "CondConvResidual",
    "ghostnet_100": "model class GhostNet",
    "mobilenetv4_hybrid_medium": "MobileAttention",   # attention blocks
    "mobilenetv4_conv_blur_medium": "anti-aliased",
}


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def counted(model: torch.nn.Module, resolution: int = 224, in_chans: int = 3) -> tuple[int, int]:
    """(MACs by torch's flop counter, parameters), run on the model's device (meta: shapes only)."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(torch.randn(1, in_chans, resolution, resolution, device=device))
    return fc.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SUPPORTED)
def test_imported_def_costs_and_builds_like_the_timm_model(name):
    net = network_def_from_timm(name)
    ref_macs, ref_params = counted(meta_model(name))
    assert count_params(net) == ref_params
    assert count_macs(net) == ref_macs
    with torch.device("meta"):
        built = build_network(net)
    assert counted(built) == (ref_macs, ref_params)
    assert network_def_from_timm(built) == net   # importing what we built gives the same def back


def _costed_or_refused(name: str) -> bool:
    """True if `name` is costed exactly (MACs, params and parseable cost keys); False if refused in one line."""
    try:
        net = network_def_from_timm(name)
    except ValueError as err:
        assert re.fullmatch(rf"timm model {re.escape(name)}: [^\n]+ is not supported by the cost model", str(err))
        return False
    assert (count_macs(net), count_params(net)) == counted(meta_model(name)), name
    for lc in layer_costs(net):
        assert parse_cost_key(str(lc.key)) == lc.key
    return True


def test_every_mobilenet_family_model_is_costed_exactly_or_refused_in_one_line():
    costed = [name for name in FAMILY_MODELS if _costed_or_refused(name)]
    assert len(costed) >= COSTED_AT_LEAST, f"{len(costed)} of {len(FAMILY_MODELS)} costed"
    assert {"mobilenetv2_100", "efficientnet_lite0", "lcnet_100", "efficientnet_es"} <= set(costed)


def _assert_layers_build_alone(net) -> None:
    """`build_layer` of every key of `net` (what `measure` times) has the key's MACs and params."""
    for lc in layer_costs(net):
        with torch.device("meta"):
            layer = build_layer(lc.key)
        assert counted(layer.eval(), lc.key.in_shape[1], lc.key.in_shape[0]) == (lc.macs, lc.params), str(lc.key)


@pytest.mark.parametrize("name", ["lcnet_100", "efficientnet_es", "mobilenetv2_100", "mobilenetv4_conv_small",
                                  "mobilenetv4_conv_medium", "mixnet_s"])
def test_new_block_types_build_alone_as_the_cost_key_describes(name):
    _assert_layers_build_alone(network_def_from_timm(name, resolution=96))


@pytest.mark.parametrize("family", ["mobilenetv3", "efficientnet"])
def test_uir_and_mixed_kernel_variants_cost_build_and_round_trip(family):
    """Block variants timm's models do not all use: a uir block strided by its start or end depthwise conv, with
    all three depthwise convs and SE; MixNet splits that do not divide evenly; layer scale and the normalised head."""
    from search_spaces.blocks import NetworkDef, network_def_from_json, network_def_to_json
    from search_spaces.costs import CostKey

    mnv3 = family == "mobilenetv3"
    net = NetworkDef(arch_def=(("uir_r1_k0_s2_a3_e4_c32", "uir_r1_k0_s1_e2_c32"),   # the importer's option order
                               ("uir_r1_k0_s2_p3_e4_c40", "uir_r2_k5_s1_a3_p3_e4_c40_se0.25_nsw"),
                               ("ir_r1_k3.5.7.9.11_s2_a1.1.1_p1.1_e1.8_c48_se0.25", "ir_r1_k3.5_s1_e3_c48_noskip"),
                               ("uir_r1_k3_s2_a5_e6_c64",)),
                     family=family, stem_size=24, num_features=640, act="hard_swish" if mnv3 else "relu",
                     resolution=96, head_norm=mnv3, layer_scale=mnv3)
    with torch.device("meta"):
        built = build_network(net)
    assert counted(built, net.resolution) == (count_macs(net), count_params(net))
    assert network_def_from_timm(built, resolution=net.resolution) == net
    assert network_def_from_json(network_def_to_json(net)) == net
    assert ('"head_norm"' in network_def_to_json(net)) == mnv3   # left out at its default: older JSON unchanged
    keys = [lc.key for lc in layer_costs(net)]
    assert all(parse_cost_key(str(k)) == k for k in keys)
    assert keys[-2].norm == mnv3 and all(k.layer_scale == mnv3 for k in keys if k.op == "uir")
    assert {(k.start, k.kernel, k.end) for k in keys if k.op == "uir"} >= {(3, 0, 0), (0, 0, 3), (3, 5, 3)}
    assert any(k.kernels == (3, 5, 7, 9, 11) and (k.exp_splits, k.proj_splits) == (3, 2) for k in keys)
    _assert_layers_build_alone(net)
    with pytest.raises(ValueError, match="mixed kernels"):
        CostKey("ir", (8, 8, 8), (8, 8, 8), 3, kernels=(3, 5))


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "semnasnet_100", "mobilenetv2_035", "efficientnet_b0"])
def test_built_def_loads_timm_weights_and_gives_the_same_output(name):
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    for module in reference.modules():   # non-trivial BN statistics, so BN placement matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = build_network(network_def_from_timm(reference)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name", ["tf_mobilenetv3_large_minimal_100", "tf_efficientnet_lite0", "tf_mixnet_s",
                                  "tf_efficientnetv2_b0"])
def test_tf_port_records_same_padding_and_builds_to_the_same_outputs(name):
    """A tf_ port's TensorFlow 'same' padding is read (`pad_type="same"`), priced apart (its stem and strided
    blocks get `_same` cost keys, whose twins without the flag are the symmetric-padded model's keys) and built:
    with timm's weights (and its BN eps, the one other difference) the built model gives the port's outputs."""
    from search_spaces.costs import unpadded_key

    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    net = network_def_from_timm(reference, resolution=96)
    assert net.pad_type == "same"
    ours = build_network(net).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    for mine, theirs in zip(ours.modules(), reference.modules()):
        assert type(mine) is type(theirs)   # Conv2dSame wherever the port pads at run time
        if isinstance(mine, torch.nn.BatchNorm2d):
            mine.eps = theirs.eps
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
    keys = [lc.key for lc in layer_costs(net)]
    padded = [k for k in keys if k.same_pad]
    assert padded[0].op == "stem" and all(k.stride == 2 for k in padded) and len(padded) >= 5
    assert all(not k.same_pad for k in keys if k.stride == 1)
    twin = layer_costs(dataclasses.replace(net, pad_type=""))
    assert [unpadded_key(str(k)) or str(k) for k in keys] == [str(lc.key) for lc in twin]
    assert (count_macs(net), count_params(net)) == (sum(lc.macs for lc in twin), sum(lc.params for lc in twin))
    assert unpadded_key(str(twin[0].key)) is None and all(parse_cost_key(str(k)) == k for k in padded)
    assert network_def_from_timm(ours, resolution=96) == net


def test_same_padded_layers_build_alone_with_their_pad_and_random_ones_round_trip():
    """Cost keys with `same_pad` build alone as timm builds them in the network (a run-time pad before the
    strided conv); random TensorFlow-padded networks cost exactly, and their JSON keeps the padding (a network
    with the default padding writes none: older JSON is unchanged)."""
    from timm.layers import Conv2dSame

    from search_spaces.blocks import network_def_from_json, network_def_to_json
    from search_spaces.random_defs import random_defs

    nets = random_defs("same", 6, seed=3)
    assert all(n.pad_type == "same" for n in nets) and {n.family for n in nets} == {"mobilenetv3", "efficientnet"}
    for net in nets:
        with torch.device("meta"):
            built = build_network(net)
        assert counted(built, net.resolution) == (count_macs(net), count_params(net)), net.arch_def
        assert network_def_from_json(network_def_to_json(net)) == net
        back = network_def_from_timm(built, resolution=net.resolution)   # ratios come back in the importer's form
        assert back.pad_type == "same" and (count_macs(back), count_params(back)) == (count_macs(net), count_params(net))
    assert '"pad_type"' not in network_def_to_json(dataclasses.replace(nets[0], pad_type=""))
    net = network_def_from_timm("tf_mobilenetv3_small_minimal_100", resolution=96)
    _assert_layers_build_alone(net)
    for lc in layer_costs(net)[:4]:
        assert any(isinstance(m, Conv2dSame) for m in build_layer(lc.key).modules()) == lc.key.same_pad
    with pytest.raises(ValueError, match="unknown pad_type 'valid'"):
        NetworkDef(arch_def=(), pad_type="valid")


def test_a_model_padded_two_ways_is_refused():
    from timm.layers import Conv2dSame

    model = meta_model("mobilenetv3_small_050")
    conv = model.conv_stem
    with torch.device("meta"):
        model.conv_stem = Conv2dSame(conv.in_channels, conv.out_channels, 3, stride=2, bias=False)
    with pytest.raises(ValueError, match="'same' padding on some strided convolutions only"):
        network_def_from_timm(model)


@pytest.mark.parametrize("name", sorted(REFERENCE_NETWORKS))
def test_hand_written_reference_networks_are_recovered(name):
    def canonical(net):
        # a stage's stride applies to its first block only; repeats are expanded by decoding
        return [[dict(ba, stride=ba["stride"] if i == 0 else 1) for i, ba in enumerate(stage)]
                for stage in decode_blocks(net)]

    ours, theirs = network_def_from_timm(name), REFERENCE_NETWORKS[name]
    assert canonical(ours) == canonical(theirs)
    assert [str(layer.key) for layer in layer_costs(ours)] == [str(layer.key) for layer in layer_costs(theirs)]
    assert ours.arch_def == tuple(tuple(s.replace("_e1_", "_") if s.startswith("ds") else s for s in stage)
                                  for stage in theirs.arch_def)
    assert (ours.family, ours.stem_size, ours.num_features, ours.act, ours.pad_type) == \
        (theirs.family, theirs.stem_size, theirs.num_features, theirs.act, theirs.pad_type)


def test_expansion_ratios_are_short_and_exact():
    net = network_def_from_timm("mobilenetv3_large_075")
    assert "ir_r2_k3_s1_e2.25_c64" in net.arch_def[3]   # 144 / 64: two decimals reproduce 144 exactly


@pytest.mark.parametrize("name, what", sorted(UNSUPPORTED.items()))
def test_unsupported_models_raise_one_clear_error(name, what):
    with pytest.raises(ValueError, match=rf"^timm model {name}: .*{what}.* is not supported by the cost model$"):
        network_def_from_timm(name)


def test_model_settings_and_head_variants():
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    net = network_def_from_timm("mobilenetv2_100", num_classes=10, resolution=160)
    assert (net.num_classes, net.resolution, net.in_chans) == (10, 160, 3)
    base = network_def_from_timm("mnasnet_small")
    with torch.device("meta"):
        no_head = EfficientNet(decode_blocks(base), num_features=0, stem_size=8, in_chans=1, num_classes=7)
        plain = network_def_from_timm("tf_mobilenetv3_large_minimal_100")   # no SE: MobileNetV3's default is fine
        normed = MobileNetV3(decode_blocks(plain), head_norm=True)
        no_bias = MobileNetV3(decode_blocks(plain), head_bias=False)
        sigmoid_se = build_network(network_def_from_timm("mobilenetv3_small_100"))
    imported = network_def_from_timm(no_head)
    assert (imported.num_features, imported.in_chans, imported.num_classes) == (0, 1, 7)
    assert counted(no_head, 224, in_chans=1) == (count_macs(imported), count_params(imported))
    imported = network_def_from_timm(normed)   # MobileNetV4's head: 1x1 conv without bias, BatchNorm, activation
    assert imported.head_norm and counted(normed) == (count_macs(imported), count_params(imported))
    with pytest.raises(ValueError, match="head conv"):
        network_def_from_timm(no_bias)
    for module in sigmoid_se.modules():   # an SE gate the mobilenetv3 family does not build
        if isinstance(module, SqueezeExcite):
            module.gate = torch.nn.Sigmoid()
    with pytest.raises(ValueError, match="SE with sigmoid gate"):
        network_def_from_timm(sigmoid_se)


def test_random_network_defs_cost_exactly_build_and_round_trip():
    """The random networks a profile times to learn networks-in-general: exact MACs and params against the
    built model, readable back from the module and from JSON, the same list for the same seed."""
    from search_spaces.blocks import network_def_from_json, network_def_to_json
    from search_spaces.random_defs import random_defs

    nets = random_defs("random", 12, seed=3)
    assert nets == random_defs("random", 12, seed=3) and nets != random_defs("random", 12, seed=4)
    kinds = {s.split("_")[0] for net in nets for stage in net.arch_def for s in stage}
    assert {"ir", "er", "dsa"} <= kinds and {n.family for n in nets} == {"mobilenetv3", "efficientnet"}
    for net in nets:
        with torch.device("meta"):
            built = build_network(net)
        assert counted(built, net.resolution) == (count_macs(net), count_params(net)), net.arch_def
        back = network_def_from_timm(built, resolution=net.resolution)
        assert (count_macs(back), count_params(back)) == (count_macs(net), count_params(net))
        assert network_def_from_json(network_def_to_json(net)) == net
    for bad in ("{", "[]", '{"arch_def": [], "colour": 1}'):
        with pytest.raises(ValueError, match="not a network definition"):
            network_def_from_json(bad)


def test_random_mixed_defs_draw_mixed_kernels_and_every_uir_kind_and_cost_exactly():
    """The MixNet/MobileNetV4-like networks: depthwise kernel mixes, split 1x1 convs and `uir` blocks of every
    kind (extra depthwise, inverted bottleneck, ConvNeXt-like, FFN), exact MACs and params against the built
    model, and a cost key that tells a mixed block from a plain one; the same list for the same seed."""
    from search_spaces.blocks import layer_costs
    from search_spaces.random_defs import random_defs

    nets = random_defs("mixed", 16, seed=3)
    assert nets == random_defs("mixed", 16, seed=3) and nets != random_defs("mixed", 16, seed=4)
    blocks = [s for net in nets for stage in net.arch_def for s in stage]
    assert any("k3.5.7" in s for s in blocks) and any("_a1.1" in s for s in blocks)
    uir = {(s.split("_a")[1].split("_")[0] != "0", s.split("_k")[1].split("_")[0] != "0")
           for s in blocks if s.startswith("uir")}
    assert uir == {(True, True), (False, True), (True, False), (False, False)}
    assert any(net.head_norm for net in nets) and any(net.layer_scale for net in nets)
    mixed = [lc.key for net in nets for lc in layer_costs(net) if lc.key.kernels]
    assert mixed and all("_mk" in str(key) for key in mixed)
    for net in nets:
        with torch.device("meta"):
            built = build_network(net)
        assert counted(built, net.resolution) == (count_macs(net), count_params(net)), net.arch_def


def test_random_plain_defs_are_wide_depthwise_separable_stacks_that_cost_exactly():
    """The MobileNetV1/LCNet-like plain stacks: only `dsa` blocks, widths doubling with each stride up to 1,024
    channels and beyond, exact MACs and params against the built model, the same list for the same seed."""
    from search_spaces.random_defs import random_defs

    nets = random_defs("plain", 12, seed=3)
    assert nets == random_defs("plain", 12, seed=3) and nets != random_defs("plain", 12, seed=4)
    assert {s.split("_")[0] for net in nets for stage in net.arch_def for s in stage} == {"dsa"}
    widths = [[int(stage[0].split("_c")[1].split("_")[0]) for stage in net.arch_def] for net in nets]
    assert all(w[-1] == max(w) and w[-1] >= 8 * w[0] for w in widths)
    assert max(w[-1] for w in widths) >= 1024
    for net in nets:
        with torch.device("meta"):
            built = build_network(net)
        assert counted(built, net.resolution) == (count_macs(net), count_params(net)), net.arch_def


def test_block_features_tell_mixed_and_extra_depthwise_blocks_from_plain_ones():
    """A MixNet block (three depthwise kernels, split 1x1 convs) and a MobileNetV4 extra-depthwise block launch
    more convolutions than a plain block of the same shape: their feature rows say so, so the block model can
    price them apart."""
    from predictors.features import BLOCK_FEATURES, block_row
    def row(block: str, family: str = "efficientnet") -> dict:
        net = NetworkDef(arch_def=(("ds_r1_k3_s1_c32",), (block,)), family=family, act="relu", resolution=64)
        return dict(zip(BLOCK_FEATURES, block_row(layer_costs(net)[2].key)))

    plain, mixed = row("ir_r1_k7_s2_e6_c40"), row("ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40")
    assert (plain["dw_splits"], plain["exp_splits"], plain["proj_splits"]) == (1, 1, 1)
    assert (mixed["dw_splits"], mixed["exp_splits"], mixed["proj_splits"]) == (3, 2, 2)
    extra = row("uir_r1_a3_k5_s2_e4_c40", "mobilenetv3")
    assert (extra["start_kernel"], extra["end_kernel"]) == (3, 0) and plain["start_kernel"] == 0


def test_a_network_strided_beyond_32_is_refused_not_costed_wrongly():
    """timm's builder dilates rather than strides past an output stride of 32, a network the cost model does
    not represent: costing one is a clear ValueError, not MACs that differ from the built model's."""
    stages = tuple((f"ds_r1_k3_s2_c{16 * 2 ** i}",) for i in range(5))   # the stem's 2, then 2^5: 64 in all
    with pytest.raises(ValueError, match="stride the input by 64, more than 32"):
        layer_costs(NetworkDef(arch_def=stages, resolution=128))
    assert layer_costs(NetworkDef(arch_def=stages[:4], resolution=128))
