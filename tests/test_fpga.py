"""The analytic FPGA accelerator model: presets, monotone behaviour, depthwise utilisation, buffer spills, energy."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from hardware_profiles import get_profile, profile_names
from hardware_profiles.fpga import (
    FpgaConfig,
    FpgaSimulator,
    LayerSim,
    SimResult,
    compute_cycles,
    dram_bytes,
    get_fpga_config,
    list_fpga_configs,
    simulate,
)
from hardware_profiles.manifest import read_manifest, resolve
from search_spaces import get_space
from search_spaces.costs import ConvSpec, CostKey, LayerCost

ZC706 = get_fpga_config("fpga-zc706-int8")
# the preset, a tiny-buffer variant (every layer spills and tiles) and the other depthwise mapping
CONFIGS = {
    "zc706": ZC706,
    "tiny-buffers": ZC706.model_copy(update={"weight_buffer_kb": 4, "act_buffer_kb": 4, "layer_overhead_cycles": 500}),
    "channel-dw": ZC706.model_copy(update={"depthwise_mapping": "channel", "depthwise_efficiency": 1.0}),
}
# (cin, cout, kernel, stride, hw, groups); depthwise bases have groups == cin == cout
BASES = {"dense1x1": (32, 64, 1, 1, 16, 1), "dense3x3s2": (24, 48, 3, 2, 32, 1), "grouped": (32, 64, 1, 1, 16, 2),
         "depthwise5x5": (64, 64, 5, 1, 16, 64)}


def conv(cin: int, cout: int, k: int = 1, stride: int = 1, hw: int = 16, groups: int = 1) -> ConvSpec:
    return ConvSpec(cin, cout, k, stride, hw, (hw + 2 * (k // 2) - k) // stride + 1, groups)


def layer_of(*convs: ConvSpec, skip: bool = False) -> LayerCost:
    c = convs[0]
    key = CostKey("test", (c.cin, c.hw_in, c.hw_in), (convs[-1].cout, convs[-1].hw_out, convs[-1].hw_out),
                  c.kernel, c.stride, skip=skip, groups=c.groups)
    return LayerCost.of(key, list(convs))


def cost(cfg: FpgaConfig, *convs: ConvSpec) -> SimResult:
    return FpgaSimulator(cfg)([layer_of(*convs)])


def assert_nondecreasing(results: list[SimResult]) -> None:
    lat = [r.latency_ms for r in results]
    energy = [r.energy_mj for r in results]
    assert all(b >= a for a, b in itertools.pairwise(lat)), lat
    assert all(b >= a for a, b in itertools.pairwise(energy)), energy


def varied(base: tuple, field: str, values: list[int]) -> list[ConvSpec]:
    cin, cout, k, s, hw, g = base
    out = []
    for v in values:
        if field == "hw":
            out.append(conv(cin, cout, k, s, v, g))
        elif g == cin:    # depthwise: channels move together
            out.append(conv(v, v, k, s, hw, v))
        elif field == "cin":
            out.append(conv(v * g, cout, k, s, hw, g))
        else:
            out.append(conv(cin, v * g, k, s, hw, g))
    return out


def test_presets_load_by_name_and_unknown_names_are_listed():
    assert {"fpga-zc706-int8", "fpga-zcu102-int8"} <= set(list_fpga_configs())
    zcu = get_fpga_config("fpga-zcu102-int8")
    assert (ZC706.dsp_count, ZC706.ddr_bandwidth_gbps, zcu.dsp_count, zcu.ddr_bandwidth_gbps) == (900, 12.8, 2520, 19.2)
    assert ZC706.pe_in * ZC706.pe_out <= ZC706.dsp_count * ZC706.macs_per_dsp
    with pytest.raises(ValueError, match="fpga-zc706-int8"):
        get_fpga_config("fpga-nope")
    with pytest.raises(ValueError):
        FpgaConfig(name="x", dsp_count=10, clock_mhz=100, weight_buffer_kb=1, act_buffer_kb=1, ddr_bandwidth_gbps=1,
                   bogus=1)
    assert {"fpga-zc706-int8", "fpga-zcu102-int8"} <= set(profile_names())
    for name in ("fpga-zc706-int8", "fpga-zcu102-int8"):
        manifest = read_manifest(resolve(name) / "manifest.yaml")
        assert manifest.kind == "simulated" and manifest.options["preset"] == name


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("base", BASES.values(), ids=BASES.keys())
@pytest.mark.parametrize("field", ["cin", "cout", "hw"])
def test_more_channels_or_pixels_never_cheaper(cfg, base, field):
    values = list(range(4, 100, 3)) if field == "hw" else list(range(1, 400, 7))
    assert_nondecreasing([cost(cfg, c) for c in varied(base, field, values)])


@pytest.mark.parametrize("knob, values", [
    ("ddr_bandwidth_gbps", [0.5, 1, 2, 4, 6.4, 12.8, 19.2, 50]),
    ("dsp_count", [16, 64, 100, 300, 600, 900, 901, 1500, 2520, 5000]),
    ("clock_mhz", [50, 100, 150, 200, 250, 300, 500]),
])
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_more_bandwidth_dsps_or_clock_never_slower(mobilenet_layers, cfg, knob, values):
    layers = mobilenet_layers + [layer_of(conv(*b[:2], b[2], b[3], b[4], b[5])) for b in BASES.values()]
    per_layer = np.array([[s.latency_ms for s in FpgaSimulator(cfg.model_copy(update={knob: v}))(layers).layers]
                          for v in values])
    assert (np.diff(per_layer, axis=0) <= 1e-12).all()


def test_depthwise_uses_the_array_worse_than_a_dense_conv_of_the_same_macs():
    for cfg in CONFIGS.values():
        dw = conv(256, 256, 3, 1, 16, groups=256)     # 256 * 9 * 256 MACs
        dense = conv(64, 36, 1, 1, 16)                # 64 * 36 * 256 MACs, the same
        assert dw.macs == dense.macs
        assert dw.macs / compute_cycles(dw, cfg) < dense.macs / compute_cycles(dense, cfg)


def test_weights_that_overflow_the_buffer_are_refetched():
    # 8 KiB working halves: weights and input of `big` both overflow them, so one of the two is re-read
    small = ZC706.model_copy(update={"weight_buffer_kb": 16, "act_buffer_kb": 16})
    big = conv(512, 512, 1, 1, 8)                     # 256 KiB of weights, 32 KiB of input
    fits = conv(64, 64, 1, 1, 8)                      # 4 KiB of weights, 4 KiB of input
    moved_spill, tiles_spill = dram_bytes(big, small)
    moved_fit, tiles_fit = dram_bytes(fits, small)
    assert moved_fit == fits.weights + 64 * 8 * 8 * 2 and tiles_fit == 1
    assert moved_spill > big.weights + 2 * 512 * 8 * 8 and tiles_spill > 1
    # the same layer with a weight buffer it fits in moves each byte once
    roomy = small.model_copy(update={"weight_buffer_kb": 1024})
    assert dram_bytes(big, roomy)[0] == big.weights + 2 * 512 * 8 * 8 < moved_spill


def test_energy_is_positive_and_grows_with_macs():
    results = [cost(ZC706, conv(c, c, 3, 1, 16)) for c in (8, 16, 32, 64, 128, 256)]
    energy = [r.energy_mj for r in results]
    assert all(e > 0 for e in energy) and all(b > a for a, b in itertools.pairwise(energy))
    idle = ZC706.model_copy(update={"pj_per_mac": 0, "pj_per_dram_byte": 0, "pj_per_sram_byte": 0})
    r = cost(idle, conv(64, 64, 3, 1, 16))
    assert r.energy_mj == pytest.approx(idle.static_power_w * r.latency_ms)   # W * ms = mJ


def test_identity_layer_costs_a_small_copy_and_residual_add_reads_the_shortcut():
    ident = LayerCost.of(CostKey("skip", (32, 16, 16), (32, 16, 16)), [])
    one = FpgaSimulator(ZC706)([ident]).layers[0]
    assert one.dram_bytes == 2 * 32 * 16 * 16 and 0 < one.latency_ms < 0.01 and one.bound == "memory"
    assert FpgaSimulator(ZC706.model_copy(update={"identity_dram_passes": 0}))([ident]).latency_ms == 0
    c = conv(32, 32, 1, 1, 16)
    plain, residual = (FpgaSimulator(ZC706)([layer_of(c, skip=s)]).layers[0] for s in (False, True))
    assert residual.dram_bytes == plain.dram_bytes + 32 * 16 * 16


def test_simulate_breakdown_sums_and_the_larger_board_is_faster(mobilenet_layers):
    zc = simulate(mobilenet_layers, "fpga-zc706-int8")
    zcu = simulate(mobilenet_layers, get_fpga_config("fpga-zcu102-int8"))
    assert len(zc.layers) == len(mobilenet_layers) and all(isinstance(s, LayerSim) for s in zc.layers)
    assert zc.latency_ms == pytest.approx(sum(s.latency_ms for s in zc.layers))
    assert zc.energy_mj == pytest.approx(sum(s.energy_mj for s in zc.layers))
    assert zc.macs == sum(layer.macs for layer in mobilenet_layers)
    assert {s.bound for s in zc.layers} <= {"compute", "memory"}
    assert set(zc.layers[0].as_dict()) >= {"key", "cycles_compute", "cycles_memory", "dram_bytes", "latency_ms",
                                           "energy_mj", "bound"}
    assert zcu.latency_ms < zc.latency_ms
    # every layer at least its MAC count at the array's peak rate
    assert zc.latency_ms >= zc.macs / (ZC706.peak_gmacs * 1e6)


def test_profile_reports_the_simulated_latency():
    space = get_space("mobilenet", num_classes=10)
    arch = space.sample(np.random.default_rng(0))
    stats = get_profile("fpga-zc706-int8").latency(space, arch)
    result = simulate(space.layer_costs(arch), ZC706)
    assert stats.median_ms == pytest.approx(result.latency_ms)
    assert stats.energy_mj == pytest.approx(result.energy_mj) and stats.spread == 0


@pytest.fixture(scope="module")
def mobilenet_layers() -> list[LayerCost]:
    space = get_space("mobilenet", num_classes=1000)
    return space.layer_costs(space.sample(np.random.default_rng(0)))


def test_four_bit_weights_run_a_compute_bound_layer_faster_for_less_energy_and_halve_weight_traffic():
    int4 = get_fpga_config("fpga-zc706-int4")
    assert int4.weight_bits == 4 and int4.mac_lanes == 2 * ZC706.mac_lanes
    dense = LayerCost.of(CostKey("cn", (256, 16, 16), (256, 16, 16), 3), [ConvSpec(256, 256, 3, 1, 16, 16)])
    eight, four = simulate([dense], ZC706).layers[0], simulate([dense], int4).layers[0]
    assert eight.bound == "compute" and four.latency_ms < 0.6 * eight.latency_ms
    assert four.energy_mj < eight.energy_mj
    # a 1x1 conv over a 1x1 map is all weights: moving them is the layer, and 4-bit weights move half the bytes
    fc = ConvSpec(1024, 1000, 1, 1, 1, 1)
    assert dram_bytes(fc, int4)[0] < 0.55 * dram_bytes(fc, ZC706)[0]
    for name in ("fpga-zc706-int4", "fpga-zcu102-int4"):
        profile = get_profile(name)
        assert profile.config.weight_bits == 4 and read_manifest(resolve(name) / "manifest.yaml").precision == "int4"
