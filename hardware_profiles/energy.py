"""Energy per inference measured with a hardware energy counter (issue 22).

    python -m hardware_profiles.energy --profile NAME [--networks N] [--runs R] [--min-seconds S] [--idle-seconds S]

A counter reports the energy a device has used since some origin: NVML's total-energy counter on NVIDIA GPUs
(`NvmlCounter`, `nvidia-ml-py`: ``pip install -e ".[energy]"``), Intel's RAPL package counter on CPUs that expose it
(`RaplCounter`, ``/sys/class/powercap``; most VMs do not). `energy_per_inference` reads the counter around many runs
of one network and takes off the idle power (`energy_table`: read once, before the first network): energy per run,
in mJ. Two passes are made and their spread recorded. Each pass lasts at least `min_seconds` (2 by default; more
runs where one run is short): the counters tick coarsely and NVML's is known to sample the power in part of each
100 ms window only; on the lent H100, passes of 0.3 s differed by 12.5 % (median) at batch 32 and 30 % at batch 1
(`bench/memory_energy.py`). The command line measures a measured GPU profile's networks this way
(each replayed as the profile timed it: `hardware_profiles.cuda`, CUDA graphs, its precision and batch) into the
profile's energy table (``energy.csv``: ``arch``, ``energy_mj``, ``spread``, ``idle_w``), and the manifest records
the method (``options.energy_method``). A device whose counter is missing or unsupported is one line naming why
(exit status 2), and nothing is written.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError, cli_entry

ENERGY_COLUMNS = ["arch", "energy_mj", "spread", "idle_w", "runs"]


class EnergyUnavailable(InputError):
    """No energy counter can be read here (the reason in words)."""


class NvmlCounter:
    """NVIDIA GPU `index`'s total-energy counter (mJ since the driver loaded; Volta and later)."""

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ModuleNotFoundError:
            raise EnergyUnavailable("NVML is not installed: pip install -e \".[energy]\" (nvidia-ml-py)") from None
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except pynvml.NVMLError as err:
            raise EnergyUnavailable(f"NVML cannot read GPU {index}'s energy counter: {err}") from None
        self.nvml = pynvml
        self.method = (f"NVML total energy counter of {pynvml.nvmlDeviceGetName(self.handle)} "
                       "(nvmlDeviceGetTotalEnergyConsumption), idle power over a quiet interval subtracted")

    def read_mj(self) -> float:
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))


class RaplCounter:
    """The CPU package's RAPL energy counter (``/sys/class/powercap/intel-rapl:0``; µJ, wrapping at its range)."""

    def __init__(self, root: Path = Path("/sys/class/powercap/intel-rapl:0")):
        self.path, self.range = root / "energy_uj", root / "max_energy_range_uj"
        try:
            self.wrap = int(self.range.read_text())
            self.last = int(self.path.read_text())
        except (OSError, ValueError):
            raise EnergyUnavailable(f"this CPU exposes no RAPL energy counter ({root} is not readable; usual in "
                                    "virtual machines)") from None
        self.total = 0
        self.method = f"RAPL package energy counter ({root}), idle power over a quiet interval subtracted"

    def read_mj(self) -> float:
        now = int(self.path.read_text())
        self.total += (now - self.last) % self.wrap
        self.last = now
        return self.total / 1e3


def find_counter(device: str) -> NvmlCounter | RaplCounter:
    """The energy counter of `device` (``cuda``: NVML; ``cpu``: RAPL).

    Raises:
        EnergyUnavailable: none can be read here, and why.
    """
    return NvmlCounter() if device == "cuda" else RaplCounter()


@dataclass(frozen=True)
class EnergyStats:
    energy_mj: float   # per run, idle power taken off; the median of the passes
    spread: float      # (largest - smallest pass) / median
    idle_w: float
    runs: int


def idle_power(counter, seconds: float) -> float:
    """The device's draw (W) over `seconds` of doing nothing: the counter read around a sleep."""
    e0, t0 = counter.read_mj(), time.perf_counter()
    time.sleep(seconds)
    return (counter.read_mj() - e0) / (time.perf_counter() - t0) / 1e3


def energy_per_inference(run: Callable[[], None], counter, runs: int = 200, idle_seconds: float = 1.0,
                         passes: int = 2, min_seconds: float = 2.0, idle_w: float | None = None) -> EnergyStats:
    """Energy of one call of `run` (which must finish its work before returning, e.g. synchronise a GPU): the
    counter read around `runs` calls in each of `passes` passes, less the idle power (`idle_w`, else read over
    `idle_seconds` before them; see the module). Where `runs` calls would take less than `min_seconds` (one call,
    timed after a warm-up call, tells), each pass makes as many more as that takes; `EnergyStats.runs` is the
    number made."""
    if min_seconds > 0:
        run()
        t0 = time.perf_counter()
        run()
        runs = max(runs, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-9)))
    if idle_w is None:
        idle_w = idle_power(counter, idle_seconds)
    per_run = []
    for _ in range(passes):
        e0, t0 = counter.read_mj(), time.perf_counter()
        for _ in range(runs):
            run()
        seconds = time.perf_counter() - t0
        per_run.append((counter.read_mj() - e0 - idle_w * 1e3 * seconds) / runs)
    mid = float(np.median(per_run))
    return EnergyStats(mid, float((max(per_run) - min(per_run)) / abs(mid)) if mid else 0.0, idle_w, runs)


def energy_table(items: Sequence[tuple[str, Callable[[], Callable[[], None]]]], counter, runs: int = 200,
                 idle_seconds: float = 5.0, log=lambda line: None, min_seconds: float = 2.0,
                 idle_w: float | None = None) -> pd.DataFrame:
    """One row per (arch, function making its run) of `items`: its `energy_per_inference` (`ENERGY_COLUMNS`);
    each run is made just before it is measured, so one network at a time holds the device. The idle power is
    read once, over `idle_seconds` before the first network, unless the caller read it already (`idle_w`): read
    between networks, a GPU still cools down from the last one (an H100 drew 70 W before any work, 120-130 W in
    one second's pause between networks), and subtracting that made small networks' figures noisy, some
    negative. A caller measuring several tables in a row reads it once, before the first (an H200 read 78 W
    before a table at batch 1 and 121 W right after it)."""
    if idle_w is None:
        idle_w = idle_power(counter, idle_seconds)
        log(f"idle power {idle_w:.1f} W over {idle_seconds:g} s")
    rows = []
    for i, (arch, make_run) in enumerate(items):
        stats = energy_per_inference(make_run(), counter, runs, min_seconds=min_seconds, idle_w=idle_w)
        rows.append({"arch": arch, "energy_mj": stats.energy_mj, "spread": stats.spread, "idle_w": stats.idle_w,
                     "runs": stats.runs})
        log(f"{i + 1}/{len(items)} {arch}: {stats.energy_mj:.4f} mJ (spread {stats.spread:.1%})")
    return pd.DataFrame(rows, columns=ENERGY_COLUMNS)


def write_energy_table(folder: Path, table: pd.DataFrame, method: str) -> Path:
    """`table` as the profile's ``energy.csv`` in `folder`, and the manifest naming it, its hash and `method`."""
    from hardware_profiles.manifest import attach_table

    return attach_table(folder, table, "energy", {"energy_method": method})


def cuda_runner(module, input_shape: tuple[int, ...], precision: str, batch: int, channels_last: bool
                ) -> Callable[[], None]:
    """One replay of `module`'s CUDA graph, as `hardware_profiles.cuda.TorchCudaBackend` times it
    (`network_graph`), synchronised."""
    import torch

    from hardware_profiles.cuda import network_graph

    graph, model, x = network_graph(module, input_shape, precision, batch, channels_last)

    def run(_reads=(model, x)) -> None:   # the graph reads the weights and input in place: keep them alive
        graph.replay()
        torch.cuda.synchronize()
    return run


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from core.cli import ArgParser
    from hardware_profiles import get_profile
    from hardware_profiles.lookup import TableProfile
    from hardware_profiles.manifest import resolve
    from search_spaces import make_space

    p = ArgParser(prog="python -m hardware_profiles.energy",
                  description="Measure energy per inference of a GPU profile's networks into its energy table.")
    p.add_argument("--profile", required=True, help="a measured torch-cuda profile (its networks are measured)")
    p.add_argument("--networks", type=int, help="how many of its networks (default all)")
    p.add_argument("--runs", type=int, default=200, help="runs per pass (default 200; two passes)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="each pass lasts at least this long, with more runs if need be (default 2)")
    p.add_argument("--idle-seconds", type=float, default=5.0,
                   help="quiet interval for idle power, before the first network (default 5)")
    args = p.parse_args(argv)
    if args.runs <= 0 or args.idle_seconds <= 0 or (args.networks is not None and args.networks <= 0):
        raise InputError("--runs, --idle-seconds and --networks must be positive")
    if args.min_seconds < 0:
        raise InputError("--min-seconds must not be negative")
    profile = get_profile(args.profile)
    m = getattr(profile, "manifest", None)
    if not isinstance(profile, TableProfile) or m.backend != "torch-cuda" or not m.tables.networks:
        raise InputError(f"--profile: {args.profile} is not a measured torch-cuda profile with a networks table")
    counter = find_counter("cuda")
    space = make_space(m.space, m.space_options, m.num_classes or 1000, source=f"{m.ref} manifest")
    archs = profile.read_networks()["arch"].astype(str).tolist()[:args.networks]
    items = [(a, lambda g=space.decode(a): cuda_runner(space.build(g), space.input_shape(g), m.precision, m.batch,
                                                       bool(m.options.get("channels_last", False)))) for a in archs]
    table = energy_table(items, counter, args.runs, args.idle_seconds, log=print, min_seconds=args.min_seconds)
    path = write_energy_table(resolve(args.profile), table, counter.method)
    print(f"{len(table)} networks -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
