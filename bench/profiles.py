"""Hardware-profile benchmark: table build time, measurement noise, FPGA simulator ranking, imported-profile error.

    python bench/profiles.py [--sample K] [--networks N] [--skip-build] [--csv PATH]

1. Build time: the x86 tables of the default ``mobilenet`` space are built from scratch, in a temporary folder,
   with onnxruntime at 1 and 2 threads (`python -m hardware_profiles.measure`), timed against the 10-minute goal.
   `--sample K` times only K blocks (a quicker, partial figure, reported as such).
2. Noise: the median relative spread (p90-p10)/median of the blocks and networks of every measured profile shipped
   in `hardware_profiles/profiles/` and of the tables just built.
3. FPGA: Spearman/Kendall of the simulator against HW-NAS-Bench's `fpga_ms` on rows it was not tuned on
   (`bench/fpga_sim.py`).
4. Imported profiles: the additive per-block fit of each imported column, scored on held-out networks (25 %), with
   the FLOPs-linear fit on the same split as the baseline.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CSV = REPO.parent / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"
GOAL_S = 600.0
IMPORTED = {"arm-raspi4-a72": "raspi4_ms", "arm-pixel3": "pixel3_ms"}
REAL_END_TO_END = ("gold_6240_ms", "silver_4114_ms", "titan_rtx_1_ms", "2080ti_1_ms")


def build_times(args: argparse.Namespace) -> list[dict]:
    from hardware_profiles.measure import main as measure_main
    from hardware_profiles.manifest import read_manifest

    out = []
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as root:
        for threads in (1, 2):
            name = f"bench-x86-t{threads}"
            argv = ["--profile", name, "--space", "mobilenet", "--threads", str(threads), "--networks",
                    str(args.networks), "--root", root]
            if args.sample:
                argv += ["--sample", str(args.sample)]
            start = time.perf_counter()
            measure_main(argv)
            seconds = time.perf_counter() - start
            m = read_manifest(Path(root) / name / "1" / "manifest.yaml")
            blocks = pd.read_csv(Path(root) / name / "1" / "blocks.csv")
            out.append({"profile": f"x86 onnxruntime {threads} thread(s)", "blocks": len(blocks),
                        "networks": args.networks, "seconds": seconds, **m.noise})
    return out


def shipped_noise() -> list[dict]:
    from hardware_profiles.manifest import discover, read_manifest

    rows = []
    for name, versions in sorted(discover().items()):
        m = read_manifest(versions[max(versions)] / "manifest.yaml")
        if m.kind == "measured":
            rows.append({"profile": m.ref, "device": m.device, **m.noise})
    return rows


def imported_errors(csv: Path) -> list[dict]:
    from hardware_profiles.importer import error_report, fit_additive
    from search_spaces import get_space

    table = pd.read_csv(csv)
    space = get_space("fbnet", num_classes=100)
    keys = [space.cost_keys(space.decode(a)) for a in table["arch"]]
    flops = np.array([space.flops(space.decode(a)) for a in table["arch"]], float)
    held = np.random.default_rng(0).random(len(table)) < 0.25   # the split the shipped profiles were fitted on
    rows = []
    for column in [*IMPORTED.values(), *REAL_END_TO_END]:
        y = table[column].to_numpy(float)
        fit = fit_additive([k for k, h in zip(keys, held) if not h], y[~held])
        ours = error_report(fit.predict([k for k, h in zip(keys, held) if h]), y[held])
        slope, icpt = np.polyfit(flops[~held], y[~held], 1)
        base = error_report(slope * flops[held] + icpt, y[held])
        rows.append({"column": column, "shipped": column in IMPORTED.values(), **ours,
                     "flops_within_10pct": base["within_10pct"], "flops_spearman": base["spearman"]})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=int, default=0, help="time only K blocks per table (0 = all)")
    p.add_argument("--networks", type=int, default=20)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = p.parse_args()
    pd.set_option("display.width", 160)
    if not args.skip_build:
        built = pd.DataFrame(build_times(args))
        built["x_goal"] = built["seconds"] / GOAL_S
        print(f"1. table build time, default mobilenet space{' (sample)' if args.sample else ''} "
              f"(goal {GOAL_S:.0f} s):")
        print(built.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\n2. measurement noise of shipped measured profiles (median relative spread p90-p10 / median):")
    print(pd.DataFrame(shipped_noise()).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if not args.csv.is_file():
        print(f"\n{args.csv} not found: FPGA and imported-profile figures skipped")
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    from fpga_sim import run as fpga_run

    res = fpga_run(args.csv, 500, 0)
    print(f"\n3. FPGA simulator vs HW-NAS-Bench fpga_ms, {res['held_out_rows']} held-out rows: "
          f"Spearman {res['preset']['spearman']:.4f}, Kendall {res['preset']['kendall']:.4f} "
          f"(uncalibrated prior: Spearman {res['prior']['spearman']:.4f})")
    print("\n4. additive per-block import, held-out networks (25 %), against a FLOPs-linear fit on the same split:")
    cols = ["column", "shipped", "mape", "within_5pct", "within_10pct", "spearman", "flops_within_10pct",
            "flops_spearman"]
    print(pd.DataFrame(imported_errors(args.csv))[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
