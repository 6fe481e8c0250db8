"""Analytic per-layer model of an int8 DSP-array CNN accelerator on an FPGA (HLS style, ZC706 / ZCU102 class).

The accelerator runs a network one convolution at a time on a 2-D array of MAC lanes: ``pe_in`` input channels by
``pe_out`` output channels per cycle, ``pe_out`` derived from the DSP budget (each DSP48 packs `macs_per_dsp` int8
MACs sharing one activation, Xilinx WP486). Weights and activations live in DDR; each convolution streams them
through an on-chip weight buffer and activation buffer. Per convolution:

- **compute cycles**: dense ``ceil(cin/g / pe_in) * ceil(cout / pe_out) * k^2 * hw_out^2`` (grouped convs packed
  side by side along ``pe_out``, divided by `grouped_efficiency`); depthwise convs use one input lane per output
  channel (``mapping="channel"``) or spread the k x k taps over the ``pe_in`` lanes (``"window"``), divided by
  `depthwise_efficiency`.
- **DRAM traffic**: int8 (or, with ``weight_bits=4``, 4-bit) weights, int8 input and output activations (int32
  bias). Buffers are double-buffered, so half of
  each holds the working tile. Weights that do not fit are split into ``n_w`` output-channel chunks; an input that
  does not fit is split into ``n_i`` row bands (each re-reading a ``k - stride`` row halo). The cheaper loop order
  is taken: weight chunks outer (input re-read ``n_w`` times) or row bands outer (weights re-read ``n_i`` times).
  A residual add reads the shortcut tensor once more.
- **latency**: ``max(compute, memory) + pipeline fill + per-tile fill + layer overhead`` cycles. Double-buffering
  assumption: DDR transfers of tile t+1 overlap the compute of tile t, so a layer is bound by the slower of the
  two; the exposed first load / last store is folded into the fill terms.
- **energy**: ``MACs * pJ/MAC + DRAM bytes * pJ/B + SRAM bytes * pJ/B + static W * latency``; SRAM bytes are every
  DRAM byte written into and read out of a buffer, plus ``pe_in`` activation reads per compute cycle (weights
  stay in DSP registers for a tile, partial sums in the accumulators).

A layer with no convolution (an identity ``skip``) costs `identity_dram_passes` passes of its activation through
DDR plus the layer overhead. Results are cached per (cost key string, convolutions), so costing thousands of
networks of one space costs each distinct layer once.

`simulate(layers, config)` is the entry point; presets load by name with `get_fpga_config` (`FPGA_CONFIGS`).
The FPGA latency profiles (``fpga-zc706-int8``, ``fpga-zcu102-int8`` and their 4-bit-weight twins
``fpga-zc706-int4``, ``fpga-zcu102-int4``) are registered in `hardware_profiles`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.registry import Registry
from search_spaces.costs import ConvSpec, LayerCost


class FpgaConfig(BaseModel):
    """One accelerator instance on one board; every field in the units its name or description says.

    Board fields (DSPs, clock, buffers, DDR) come from datasheets (see the presets). The design knobs marked
    "calibrated" (pe_in, depthwise_mapping, depthwise_efficiency, grouped_efficiency, layer_overhead_cycles) were
    calibrated on 500 HW-NAS-Bench FBNet rows, seed 0 (`bench/fpga_sim.py`: grid search by Spearman against
    `fpga_ms` on the tuning rows only); their pre-calibration guesses were 16, "channel", 1.0, 0.8 and 2000.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="board / design name, e.g. fpga-zc706-int8")
    dsp_count: int = Field(gt=0, description="DSP slices on the device (DSP48E1/E2)")
    clock_mhz: float = Field(gt=0, description="accelerator clock, MHz")
    macs_per_dsp: int = Field(2, gt=0, description="int8 MACs per DSP per cycle (2: WP486 packing)")
    weight_bits: Literal[8, 4] = Field(8, description="weight precision (activations stay 8-bit): 4-bit weights pack "
                                       "twice the MACs per DSP, take half the weight bytes and half the MAC energy")
    array_dsp_fraction: float = Field(0.9, gt=0, le=1,
                                      description="share of the DSPs in the MAC array (rest: addressing, requant)")
    pe_in: int = Field(32, gt=0, description="input-channel lanes of the MAC array (calibrated)")
    weight_buffer_kb: float = Field(gt=0, description="on-chip weight buffer, KiB (both halves of the double buffer)")
    act_buffer_kb: float = Field(gt=0, description="on-chip input-activation buffer, KiB (both halves)")
    ddr_bandwidth_gbps: float = Field(gt=0, description="peak DDR bandwidth, GB/s (1e9 bytes/s)")
    ddr_efficiency: float = Field(0.7, gt=0, le=1, description="sustained fraction of peak DDR bandwidth")
    depthwise_mapping: Literal["channel", "window"] = Field(
        "window", description="channel: one input lane per output channel; window: the k*k taps spread over the "
                              "pe_in lanes (calibrated)")
    depthwise_efficiency: float = Field(0.5, gt=0, le=1, description="extra utilisation factor of depthwise "
                                        "convs: line-buffer stalls, padding (calibrated)")
    grouped_efficiency: float = Field(1.0, gt=0, le=1, description="utilisation factor of grouped (1 < g < cin) "
                                      "convs packed block-diagonally (calibrated)")
    pipeline_fill_cycles: int = Field(100, ge=0, description="pipeline fill + drain per convolution, cycles")
    tile_fill_cycles: int = Field(32, ge=0, description="fill + drain per tile (weight chunk x row band), cycles")
    layer_overhead_cycles: int = Field(0, ge=0, description="fixed per-convolution cost beyond the fill: "
                                       "descriptor fetch, DMA set-up not hidden behind the previous conv, cycles "
                                       "(calibrated: 0, i.e. the next layer's set-up is prefetched)")
    identity_dram_passes: float = Field(2.0, ge=0,
                                        description="activation bytes moved through DDR by an identity layer, in "
                                                    "units of its tensor (2 = read + write; 0 = aliased away)")
    identity_overhead_cycles: int = Field(0, ge=0, description="fixed cost of an identity layer, cycles")
    residual_add: bool = Field(True, description="a residual add reads the shortcut tensor from DDR")
    pj_per_mac: float = Field(1.0, ge=0, description="energy per int8 MAC incl. fabric routing, pJ (a 4-bit-weight "
                              "MAC: half of it, the multiplier's width halved)")
    pj_per_dram_byte: float = Field(160.0, ge=0, description="energy per DDR byte (~20 pJ/bit, Horowitz ISSCC'14)")
    pj_per_sram_byte: float = Field(5.0, ge=0, description="energy per BRAM byte accessed, pJ")
    static_power_w: float = Field(0.5, ge=0, description="static power of the programmable logic, W")

    @property
    def mac_lanes(self) -> int:
        """MAC lanes the array may use: the int8 packing, doubled for 4-bit weights."""
        return max(1, int(self.dsp_count * self.macs_per_dsp * (8 // self.weight_bits) * self.array_dsp_fraction))

    @property
    def weight_bytes(self) -> float:
        """Bytes per weight."""
        return self.weight_bits / 8

    @property
    def pe_out(self) -> int:
        """Output-channel lanes: the DSP budget divided over the ``pe_in`` input lanes."""
        return max(1, self.mac_lanes // self.pe_in)

    @property
    def peak_gmacs(self) -> float:
        """Peak int8 throughput, GMAC/s."""
        return self.pe_in * self.pe_out * self.clock_mhz / 1e3

    @property
    def ddr_bytes_per_cycle(self) -> float:
        """Sustained DDR bytes per accelerator cycle."""
        return self.ddr_bandwidth_gbps * 1e3 * self.ddr_efficiency / self.clock_mhz


FPGA_CONFIGS: Registry[FpgaConfig] = Registry("FPGA preset")


def _preset(cfg: FpgaConfig) -> FpgaConfig:
    FPGA_CONFIGS.register(cfg.name)(cfg)
    return cfg


# Xilinx ZC706 (XC7Z045, DS190 Zynq-7000 overview / UG954 board guide): 900 DSP48E1, 545 x 36 Kb = 19.1 Mb BRAM,
# PL DDR3 SODIMM 64 bit at 1600 MT/s = 12.8 GB/s peak; 200 MHz is the usual closure for int8 HLS CNN engines
# (Angel-Eye, DNNBuilder). Buffers: 1 MiB weights + 1 MiB activations of the 2.39 MB of BRAM. Energy figures are
# order-of-magnitude estimates (Horowitz ISSCC'14 scaled for FPGA fabric; XPE-class static power).
ZC706 = _preset(FpgaConfig(
    name="fpga-zc706-int8", dsp_count=900, clock_mhz=200.0, weight_buffer_kb=1024, act_buffer_kb=1024,
    ddr_bandwidth_gbps=12.8, static_power_w=0.5))

# Xilinx ZCU102 (XCZU9EG, DS891 Zynq UltraScale+ overview / UG1182 board guide): 2520 DSP48E2, 912 x 36 Kb =
# 32.1 Mb BRAM, PS DDR4 64 bit at 2400 MT/s = 19.2 GB/s peak; 300 MHz typical for int8 HLS engines on
# UltraScale+. Buffers: 1.75 MiB weights + 1.75 MiB activations of the 4.0 MB of BRAM.
ZCU102 = _preset(FpgaConfig(
    name="fpga-zcu102-int8", dsp_count=2520, clock_mhz=300.0, weight_buffer_kb=1792, act_buffer_kb=1792,
    ddr_bandwidth_gbps=19.2, static_power_w=0.8))


# The same boards with 4-bit weights (8-bit activations): two 4-bit-weight MACs where the int8 design packs one
# (the packing of WP486 with the narrower operand, as in Xilinx's INT4 work, WP521), half the weight traffic and
# buffer footprint. The calibrated knobs are the int8 design's; no public table of 4-bit latency checks them.
ZC706_INT4 = _preset(ZC706.model_copy(update={"name": "fpga-zc706-int4", "weight_bits": 4}))
ZCU102_INT4 = _preset(ZCU102.model_copy(update={"name": "fpga-zcu102-int4", "weight_bits": 4}))


def get_fpga_config(name: str) -> FpgaConfig:
    """A preset by name (`ValueError` listing the valid names if unknown)."""
    return FPGA_CONFIGS.get(name)


def list_fpga_configs() -> list[str]:
    """Names of the registered presets."""
    return FPGA_CONFIGS.names()


@dataclass(frozen=True)
class LayerSim:
    """Simulated cost of one layer (all its convolutions).

    Attributes:
        key: the layer's cost key string.
        cycles_compute: MAC-array cycles.
        cycles_memory: DDR transfer cycles at the sustained bandwidth.
        dram_bytes: bytes moved to and from DDR.
        sram_bytes: bytes read from and written to on-chip buffers.
        macs: multiply-accumulates.
        latency_ms: wall time, ms.
        energy_mj: energy, mJ (dynamic + static over `latency_ms`).
        bound: "compute" or "memory", whichever of the two cycle counts is larger.
    """

    key: str
    cycles_compute: float
    cycles_memory: float
    dram_bytes: float
    sram_bytes: float
    macs: int
    latency_ms: float
    energy_mj: float
    bound: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SimResult:
    """Whole-network result of `simulate`: totals plus the per-layer breakdown."""

    latency_ms: float
    energy_mj: float
    layers: tuple[LayerSim, ...]

    @property
    def dram_bytes(self) -> float:
        return sum(layer.dram_bytes for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def compute_cycles(conv: ConvSpec, cfg: FpgaConfig) -> float:
    """MAC-array cycles of one convolution (see the module docstring for the mapping)."""
    k2, pixels, cin_g = conv.kernel * conv.kernel, conv.hw_out * conv.hw_out, conv.cin // conv.groups
    cycles = math.ceil(cin_g / cfg.pe_in) * math.ceil(conv.cout / cfg.pe_out) * k2 * pixels
    if conv.groups > 1:
        cycles /= cfg.grouped_efficiency
    if cin_g > 1:
        return cycles
    # one input channel per output (depthwise, a channel multiplier, or a single-channel dense conv): the depthwise
    # mapping, or the dense one where that is cheaper (k = 1)
    taps = k2 if cfg.depthwise_mapping == "channel" else math.ceil(k2 / cfg.pe_in)
    return min(cycles, math.ceil(conv.cout / cfg.pe_out) * taps * pixels / cfg.depthwise_efficiency)


def _tiling(conv: ConvSpec, cfg: FpgaConfig) -> tuple[int, int, float]:
    """(weight chunks, input row bands, weight bytes) of one convolution for the buffer sizes of `cfg`."""
    wbytes = conv.weights * cfg.weight_bytes + (4 * conv.cout if conv.bias else 0)
    n_w = max(1, math.ceil(wbytes / (cfg.weight_buffer_kb * 512)))   # half of the double buffer
    row_bytes = conv.cin * conv.hw_in
    rows_fit = int(cfg.act_buffer_kb * 512 // row_bytes)
    # output rows per band such that its input rows ((r - 1) * stride + k) fit; at least one row
    r = max(1, min(conv.hw_out, (rows_fit - conv.kernel) // conv.stride + 1)) if rows_fit >= conv.kernel else 1
    n_i = math.ceil(conv.hw_out / r)
    if rows_fit < conv.kernel:   # even one band does not fit: split its channels too
        n_i *= math.ceil(conv.kernel * row_bytes / (cfg.act_buffer_kb * 512))
    return n_w, n_i, wbytes


def dram_bytes(conv: ConvSpec, cfg: FpgaConfig) -> tuple[float, int]:
    """(bytes moved to and from DDR, tiles) of one convolution, for the cheaper of the two loop orders."""
    n_w, n_i, wbytes = _tiling(conv, cfg)
    halo = max(conv.kernel - conv.stride, 0)
    in_bytes = conv.cin * conv.hw_in * (conv.hw_in + (n_i - 1) * halo)
    out_bytes = conv.cout * conv.hw_out * conv.hw_out
    moved = min(wbytes + n_w * in_bytes, n_i * wbytes + in_bytes) + out_bytes
    return float(moved), n_w * n_i


def _cycles_to_ms(cycles: float, cfg: FpgaConfig) -> float:
    return cycles / (cfg.clock_mhz * 1e3)


def _energy_mj(macs: float, dram: float, sram: float, latency_ms: float, cfg: FpgaConfig) -> float:
    dynamic_pj = macs * cfg.pj_per_mac * cfg.weight_bits / 8 + dram * cfg.pj_per_dram_byte + sram * cfg.pj_per_sram_byte
    return dynamic_pj * 1e-9 + cfg.static_power_w * latency_ms


WEIGHT_BITS = {"int8": 8, "int4": 4}   # a layer's weight width by its key's precision (a compression policy's)


@lru_cache(maxsize=64)
def at_weight_bits(cfg: FpgaConfig, bits: int) -> FpgaConfig:
    """`cfg` with `bits`-bit weights (itself when it has them)."""
    return cfg if cfg.weight_bits == bits else cfg.model_copy(update={"weight_bits": bits})


def simulate_layer(layer: LayerCost, cfg: FpgaConfig) -> LayerSim:
    """Cost of one layer: its convolutions run one after another, each with its own fill and overhead. A layer
    whose key names a precision (``int8``, ``int4``: a compression policy's unit) runs at that weight width;
    otherwise at the config's."""
    if layer.key.precision in WEIGHT_BITS:
        cfg = at_weight_bits(cfg, WEIGHT_BITS[layer.key.precision])
    key = str(layer.key)
    if not layer.convs:
        c, h, w = layer.key.in_shape
        moved = cfg.identity_dram_passes * c * h * w
        mem = moved / cfg.ddr_bytes_per_cycle
        lat = _cycles_to_ms(mem + cfg.identity_overhead_cycles, cfg)
        return LayerSim(key, 0.0, mem, moved, 2 * moved, 0, lat, _energy_mj(0, moved, 2 * moved, lat, cfg), "memory")
    comp_total = mem_total = dram_total = sram_total = cycles_total = 0.0
    for i, conv in enumerate(layer.convs):
        comp = compute_cycles(conv, cfg)
        moved, tiles = dram_bytes(conv, cfg)
        if i == len(layer.convs) - 1 and layer.key.skip and cfg.residual_add:
            moved += conv.cout * conv.hw_out * conv.hw_out   # shortcut tensor read for the add
        mem = moved / cfg.ddr_bytes_per_cycle
        cycles_total += (max(comp, mem) + cfg.pipeline_fill_cycles + cfg.tile_fill_cycles * tiles
                         + cfg.layer_overhead_cycles)
        comp_total, mem_total, dram_total = comp_total + comp, mem_total + mem, dram_total + moved
        sram_total += 2 * moved + comp * cfg.pe_in
    lat = _cycles_to_ms(cycles_total, cfg)
    energy = _energy_mj(layer.macs, dram_total, sram_total, lat, cfg)
    bound = "compute" if comp_total >= mem_total else "memory"
    return LayerSim(key, comp_total, mem_total, dram_total, sram_total, layer.macs, lat, energy, bound)


class FpgaSimulator:
    """`simulate_layer` for one config, cached per (cost key string, convolutions).

    Args:
        config: the accelerator.
    """

    def __init__(self, config: FpgaConfig):
        self.config = config
        self._cache: dict[tuple, LayerSim] = {}

    def layer(self, layer: LayerCost) -> LayerSim:
        """Cost of one layer (cached)."""
        ck = (str(layer.key), layer.convs)
        hit = self._cache.get(ck)
        if hit is None:
            hit = self._cache[ck] = simulate_layer(layer, self.config)
        return hit

    def __call__(self, layers: Sequence[LayerCost]) -> SimResult:
        sims = tuple(self.layer(layer) for layer in layers)
        return SimResult(sum(s.latency_ms for s in sims), sum(s.energy_mj for s in sims), sims)


@lru_cache(maxsize=32)
def simulator(config: FpgaConfig | str) -> FpgaSimulator:
    """The shared cached simulator of a config or preset name."""
    return FpgaSimulator(get_fpga_config(config) if isinstance(config, str) else config)


def simulate(layers: Sequence[LayerCost], config: FpgaConfig | str = "fpga-zc706-int8") -> SimResult:
    """Latency and energy of a network on the accelerator.

    Args:
        layers: the network's layers, as a search space's `layer_costs(arch)` gives them.
        config: an `FpgaConfig` or a preset name (see `list_fpga_configs()`).

    Returns:
        `SimResult` with latency_ms, energy_mj and the per-layer breakdown (`LayerSim`, one per layer).
    """
    return simulator(config)(layers)
