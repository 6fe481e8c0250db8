"""Benchmark: the quickstart's wall time and where it goes.

    python bench/quickstart.py [--recipe recipes/quickstart.yaml] [--set KEY=VALUE ...] [--busy 1]

Runs the recipe exactly as a user would (`python -m nas.run`, a fresh process, a fresh output folder) and prints:
the wall time against the 5-minute goal, and the shares of that wall time spent evaluating candidates (latency
measurement + proxy training, timed inside the trials), in Ray start-up and Tune's per-trial overhead, in tracking
(W&B offline), in the final report/export, and in process start-up and imports. All figures come from this run.
With `--busy N` the recipe runs a second time beside N processes that each keep a core busy, and both wall times
are printed: a search must not collapse on a laptop that is doing something else.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 300.0


def busy_processes(n: int) -> list[subprocess.Popen]:
    """`n` single-threaded processes spinning on a core each: a laptop with a browser open, a build beside it."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_recipe(recipe: str, overrides: list[str]) -> tuple[float, dict]:
    """(wall seconds, best.json) of one `python -m nas.run` in a fresh process and output folder."""
    with tempfile.TemporaryDirectory(prefix="bench-qs-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "nas.run", recipe, "--output", str(out)]
        for o in overrides:
            cmd += ["--set", o]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
        return wall, json.loads((out / "best.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "recipes" / "quickstart.yaml"), help="recipe to run")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (repeatable)")
    p.add_argument("--busy", type=int, default=0,
                   help="also run it beside this many busy single-threaded processes and print both wall times "
                        "(the goal: at most 2x the idle time with one)")
    args = p.parse_args()
    wall, summary = run_recipe(args.recipe, args.overrides)
    if args.busy:
        hogs = busy_processes(args.busy)
        try:
            loaded, loaded_summary = run_recipe(args.recipe, args.overrides)
        finally:
            for h in hogs:
                h.kill()
        acc = [(s.get("best") or {}).get("accuracy") for s in (summary, loaded_summary)]
        load_line = (f"under load: {loaded:.1f} s beside {args.busy} busy process(es) against {wall:.1f} s idle "
                     f"(ratio {loaded / wall:.2f}; goal <= 2.00); best accuracy {acc[1]} (idle run: {acc[0]})")
    t = summary["timings"]
    evaluation = t["evaluation_seconds"]
    # per-trial W&B logging happens inside Tune's loop: count it as tracking, not as Tune overhead
    ray_tune = t["ray_start_seconds"] + t["tune_seconds"] - evaluation - t["tracking_log_seconds"]
    tracking = t["tracking_init_seconds"] + t["tracking_log_seconds"] + t["tracking_finish_seconds"]
    finish = t["finish_seconds"] - t["tracking_finish_seconds"]   # Pareto plot + export of the best network
    startup = wall - summary["wall_seconds"]
    setup = t.get("setup_seconds", 0.0)   # datasets, latency predictors (calibration on a live profile)
    other = wall - evaluation - ray_tune - tracking - finish - startup - setup
    rows = [("evaluation (latency + training)", evaluation), ("setup (incl. latency calibration)", setup),
            ("Ray start + Tune overhead", ray_tune),
            ("tracking (W&B offline)", tracking), ("report + export", finish),
            ("process start + imports", startup), ("other", other)]
    if summary.get("concurrency", 1) != 1:
        print("note: with concurrent trials, evaluation time overlaps and the shares below do not add up")
    best = summary.get("best") or {}
    print(f"quickstart: {summary['evaluated']} trials evaluated, {summary['rejected']} rejected before a trial, "
          f"{summary['failed']} failed; best feasible accuracy {best.get('accuracy')}")
    print(f"wall time: {wall:.1f} s  ({wall / GOAL_SECONDS:.2f} x the 300 s goal)")
    for name, seconds in rows:
        print(f"  {name:<34} {seconds:7.1f} s  {100 * seconds / wall:5.1f} %")
    for name, lat in (summary.get("export") or {}).get("latency", {}).items():
        measured = lat["measured_ms"]
        error = "" if lat["error"] is None else f" ({lat['error']:+.1%})"
        print(f"exported best on {name}: {lat['source']} {lat['search_ms']:.4f} ms, measured "
              f"{'-' if measured is None else f'{measured:.4f} ms'}{error}")
    overhead = ray_tune + tracking
    print(f"Ray/tracking overhead vs evaluation: {overhead:.1f} s vs {evaluation:.1f} s "
          f"(ratio {overhead / max(evaluation, 1e-9):.2f})")
    if args.busy:
        print(load_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
