"""Benchmark: the shipped model zoo on this machine, and what a release costs.

    python bench/zoo.py [--zoo zoo] [--run RUN_DIR ...] [--json OUT]

1. Latency, per network and profile of the zoo: the search's figure on the card (a predictor's, a table's or the
   simulator's) against the network measured here now (`HardwareProfile.measure_exported`, as `nas.zoo verify`
   does), and the card's own measured figure against today's. Per profile it prints the share of networks whose
   search figure is within 10 % of the measurement, beside the simplest baseline, a FLOPs-proportional estimate
   (ms per FLOP of the other zoo networks on that profile, leave-one-out), measured in the same run. Profiles this
   machine cannot measure (imported ARM tables, GPU tables without a GPU) are listed as such.
2. Release time: each run given with `--run` (default: the runs `bench/build_zoo.sh` left in runs/zoo/, else a tiny
   search made here) is released into a fresh temporary zoo and timed, per network.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def latency_rows(zoo: Path) -> list[dict]:
    """One row per (network, profile): search figure, card's measured figure, measured now (or why not)."""
    from core.errors import InputError
    from hardware_profiles import get_profile
    from nas.zoo import space_of
    from nas.zoo.card import ROUNDS
    from nas.zoo.folder import read_card, read_index

    rows = []
    for entry in read_index(zoo)["networks"]:
        folder = zoo / entry["path"]
        card = read_card(folder)
        space, genotype = space_of(card, folder / "card.json")
        for name, lat in card["latency"].items():
            try:
                now, how = get_profile(lat["profile"]).measure_exported(space, genotype, ROUNDS)
            except InputError as err:
                now, how = None, str(err)
            rows.append({"network": f"{entry['name']}@{entry['version']}", "profile": name, "flops": card["flops"],
                         "search_ms": lat["search_ms"], "search_source": lat["search_source"],
                         "card_measured_ms": lat["measured_ms"], "now_ms": now, "how": how})
    return rows


def flops_baseline(rows: list[dict]) -> None:
    """Add ``flops_ms``: the network's FLOPs times the median ms/FLOP of the other networks measured on the same
    profile (leave-one-out), the estimate a user without a predictor would make."""
    for r in rows:
        others = [o["now_ms"] / o["flops"] for o in rows if o["profile"] == r["profile"] and o is not r
                  and o["now_ms"] is not None and o["flops"]]
        r["flops_ms"] = float(np.median(others)) * r["flops"] if others and r["now_ms"] is not None else None


def summarise(rows: list[dict]) -> list[dict]:
    """Per profile: networks measured, share within 10 % (search figure, FLOPs baseline), median |error|, and the
    card's measured figure against today's."""
    out = []
    for profile in dict.fromkeys(r["profile"] for r in rows):
        group = [r for r in rows if r["profile"] == profile and r["now_ms"] is not None]
        if not group:
            out.append({"profile": profile, "measured": 0, "why": rows[[r["profile"] for r in rows].index(profile)]
                        ["how"]})
            continue
        err = np.array([r["search_ms"] / r["now_ms"] - 1 for r in group])
        base = np.array([r["flops_ms"] / r["now_ms"] - 1 for r in group if r["flops_ms"] is not None])
        drift = np.array([r["now_ms"] / r["card_measured_ms"] - 1 for r in group if r["card_measured_ms"]])
        out.append({"profile": profile, "measured": len(group), "source": group[0]["search_source"],
                    "search_within_10pct": float(np.mean(np.abs(err) <= 0.10)),
                    "search_median_abs_err": float(np.median(np.abs(err))),
                    "flops_within_10pct": float(np.mean(np.abs(base) <= 0.10)) if len(base) else None,
                    "flops_median_abs_err": float(np.median(np.abs(base))) if len(base) else None,
                    "card_vs_now_median": float(np.median(drift)) if len(drift) else None})
    return out


def default_runs() -> list[Path]:
    return sorted(p for p in (REPO / "runs" / "zoo").glob("*") if (p / "best.json").is_file())


def tiny_run(tmp: Path) -> Path:
    out = tmp / "tiny"
    subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "tests" / "assets" / "tiny.yaml"), "--output",
                    str(out), "--set", "tracking=none"], cwd=REPO, check=True, capture_output=True)
    return out


def release_times(runs: list[Path], tmp: Path) -> list[dict]:
    """Seconds per network of releasing each run's networks (as many as it has final-trained, else 1) into a
    fresh zoo, in a fresh process as a user runs it."""
    out = []
    for run in runs:
        top = max(1, len(list((run / "final").glob("*/metrics.json"))))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nas.zoo", "release", str(run), "--zoo", str(tmp / "zoo"),
                               "--version", "bench", "--top", str(top)], cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"release of {run} failed: {proc.stderr[-2000:]}")
        out.append({"run": run.name, "networks": top, "seconds": seconds, "seconds_per_network": seconds / top})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", default=str(REPO / "zoo"), help="the zoo to check (default: the shipped one)")
    p.add_argument("--run", action="append", default=[], help="run directory to time a release of (repeatable)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    rows = latency_rows(Path(args.zoo))
    flops_baseline(rows)
    print(f"{'network':32s} {'profile':18s} {'search ms':>10s} {'source':>13s} {'card ms':>9s} {'now ms':>9s} "
          f"{'search/now':>10s} {'FLOPs/now':>9s}")
    for r in rows:
        now = "-" if r["now_ms"] is None else f"{r['now_ms']:.4g}"
        card = "-" if r["card_measured_ms"] is None else f"{r['card_measured_ms']:.4g}"
        ratio = "-" if r["now_ms"] is None else f"{r['search_ms'] / r['now_ms']:.3f}"
        base = "-" if r.get("flops_ms") is None else f"{r['flops_ms'] / r['now_ms']:.3f}"
        print(f"{r['network']:32s} {r['profile']:18s} {r['search_ms']:10.4g} {r['search_source']:>13s} {card:>9s} "
              f"{now:>9s} {ratio:>10s} {base:>9s}")
    summary = summarise(rows)
    print("\nper profile (search figure vs measured here now; FLOPs-proportional baseline, leave-one-out):")
    for s in summary:
        if not s["measured"]:
            print(f"  {s['profile']}: not measurable here ({s['why']})")
            continue
        flops = "-" if s["flops_within_10pct"] is None else (
            f"{s['flops_within_10pct']:.0%} (median |err| {s['flops_median_abs_err']:.1%})")
        print(f"  {s['profile']}: {s['measured']} network(s); search figure ({s['source']}) within 10 %: "
              f"{s['search_within_10pct']:.0%} (median |err| {s['search_median_abs_err']:.1%}); FLOPs baseline "
              f"within 10 %: {flops}; today vs card (median): {s['card_vs_now_median']:+.1%}")
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as tmp:
        runs = [Path(r) for r in args.run] or default_runs() or [tiny_run(Path(tmp))]
        times = release_times(runs, Path(tmp))
    print("\nrelease time (fresh process, fresh zoo; includes imports, ONNX export, parity and latency "
          "measurement):")
    for t in times:
        print(f"  {t['run']}: {t['networks']} network(s) in {t['seconds']:.1f} s = {t['seconds_per_network']:.1f} s "
              "per network")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "profiles": summary, "release": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
