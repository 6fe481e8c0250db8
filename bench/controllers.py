"""Controller benchmark: regret of every controller, and of the peers a user would pick instead, on real problems.

    python bench/controllers.py [--seeds 20] [--budget 300] [--jobs 2] [--controllers LIST] [--problems LIST]
                                [--leave-one-out] [--json]
    python bench/controllers.py --table FILE --accuracy COLUMN --latency COLUMN [--limit MS] [--space nb201]
                                [--budget N] [--seeds N] [--json]

A problem is a tabular benchmark searched under a cost limit: accuracy from one column, a cost (latency in ms,
or FLOPs) from another, the limit at a percentile of the cost. Each controller searches it in this process
(`nas.controllers.proposer.search_in_process`, the loop the pipeline's in-process search uses; the Tune adapter
drives the same cores through the same `Proposer`). A query is one accuracy lookup: as in a real search,
candidates over the limit are rejected from the cost column before any query is spent, and already-evaluated
candidates are answered for free. Regret after N queries = (best accuracy among the feasible rows) - (best
feasible accuracy found in N queries), in accuracy points, the mean over seeds with its standard error. The
ratio divides by random search's regret at the same N on the same problem (lower is better).

The suite (the default) holds real problems and one test fixture:
- ``nb201/<accuracy>/<device>/p<q>``: NAS-Bench-201 from `shared/data/nb201-dev` with CIFAR-100 and
  ImageNet16-120 accuracy, latency measured on a device, the limit at its 30th and 60th percentile. The devices
  split in two: `DEV_DEVICES`, on which the controllers' defaults were developed, and `HELD_OUT_DEVICES`, never
  looked at while choosing them (the summary prints both means);
- ``macro/...``: NAS-Bench-Macro (`shared/data/nasbench-macro`, the `macro` space; mean CIFAR-10 accuracy of its
  three runs) under a latency limit on this machine's x86 profile (`x86-ort-t1-macro`, the predictor trained on its
  measured tables gives every network's latency) and under a FLOPs limit (the file's own counts); held out too;
- ``synthetic/nb201``: the synthetic NB201-shaped table (`synthetic:nb201`, nearly additive by construction, a
  test fixture, not evidence), limit at its median latency; left out of every mean.

Controllers: ours with their defaults (`evolution`, `rl`, `local`, and `nsga2`, which searches a Pareto front
rather than one limit and is reported but not judged), the plain algorithms (``surrogate=none``), and the peers:
random search, plain local search (``local:surrogate=none``: best improvement over one-decision neighbours, random
restarts) and Optuna's TPE sampler through Ray Tune's `OptunaSearch` (``tune:searcher=optuna``, given the same free
rejections; it stops at `--tune-budget` queries, 100 by default, because its suggestions cost ~40 ms each once a
search has a thousand trials, rejected ones included). `--controllers` lists registered names, each optionally
with options (``name:key=value:...``).

`--leave-one-out` checks the defaults by leave-one-problem-out: for each real problem, every setting of `GRID` is ranked by
its mean ratio on the *other* real problems (with seeds of their own, not the reported ones), and the chosen
setting's ratio on the left-out problem is the held-out figure, printed next to the default's.

With `--table`, one problem from any metric table (CSV/Parquet with an ``arch`` column, or ``synthetic:nb201``),
limit at `--limit` or the median cost; `--json` prints `regret` per controller per checkpoint, random included.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.io import atomic_write_text  # noqa: E402
from nas.controllers import CONTROLLERS, make_controller  # noqa: E402
from nas.controllers.base import SearchObjectives, parse_controller_spec  # noqa: E402
from nas.controllers.proposer import MemoryLedger, search_in_process  # noqa: E402
from nas.metric_tables import metric_column, read_metric_table  # noqa: E402
from search_spaces import get_space  # noqa: E402

CHECKPOINTS = (50, 100, 300)
PROFILE = "table"
DATA = REPO.parent / "shared" / "data"
NB201 = DATA / "nb201-dev" / "nb201_dev.csv"
MACRO = DATA / "nasbench-macro" / "nasbench_macro_cifar10.csv"
NB201_ACCURACY = ("acc_cifar100", "acc_imagenet16")
DEV_DEVICES = ("gold_6240_ms", "pixel2_ms")
HELD_OUT_DEVICES = ("titanxp_1_ms", "silver_4210r_ms", "samsung_s7_ms")
PERCENTILES = (0.3, 0.6)
MACRO_PROFILE = "x86-ort-t1-macro"
OURS = ("evolution", "rl", "local")
PEERS = ("random", "local:surrogate=none", "tune:searcher=optuna")
DEFAULT = (*OURS, "nsga2", "evolution:surrogate=none", "rl:surrogate=none", *PEERS)
GRID = {   # settings --leave-one-out ranks (the default of each is in its list)
    "local": ("local", "local:parents=20", "local:randoms=100", "local:warm=20"),
    "evolution": ("evolution", "evolution:candidates=10", "evolution:candidates=100"),
    "rl": ("rl", "rl:candidates=60"),
}


@dataclass
class Problem:
    """One search problem: accuracy and cost per arch string, a limit on the cost, and which split it is in."""

    name: str
    space: str
    accuracy: dict
    cost: dict
    limit: float
    split: str   # dev, held-out or fixture

    @property
    def optimum(self) -> float:
        return max(a for s, a in self.accuracy.items() if self.cost[s] <= self.limit)

    @property
    def feasible_rows(self) -> int:
        return sum(self.cost[s] <= self.limit for s in self.accuracy)


def run_one(spec: str, seed: int, space, accuracy, latency, limit: float, budget: int) -> list[float]:
    """Best feasible accuracy after each query (NaN before the first feasible one) for one controller and seed."""
    name, options = parse_controller_spec(spec)
    controller = make_controller(name, space, options, seed=seed,
                                 objectives=SearchObjectives((PROFILE,), {PROFILE: limit}))
    ledger = MemoryLedger()
    column = f"latency_{PROFILE}"

    def precheck(arch):
        ms = float(latency.get(space.to_string(arch), np.nan))
        return (None if ms <= limit else f"latency {ms:.3f} > {limit:g}"), {column: ms}

    def evaluate(string: str) -> dict:
        return {"status": "ok", "accuracy": float(accuracy[string]), column: float(latency[string])}

    best, trace = -np.inf, []

    def record(row: dict) -> None:
        nonlocal best
        if row["status"] == "ok":
            best = max(best, row["accuracy"])
        trace.append(best)

    search_in_process(controller, ledger, precheck, evaluate, budget, max_rejections=2_000, progress=record)
    trace += [best] * (budget - len(trace))   # a controller that exhausted the space keeps its best
    return [np.nan if not np.isfinite(b) else b for b in trace]


# ---- the problems ------------------------------------------------------------------------------------------------
def _limited(name: str, space: str, acc: pd.Series, cost: pd.Series, q: float | None, split: str) -> Problem:
    cost = cost.reindex(acc.index)
    limit = float(np.nanquantile(cost, 0.5 if q is None else q))
    return Problem(name, space, acc.to_dict(), cost.to_dict(), limit, split)


def suite() -> list[Problem]:
    """The default problems (see the module); those whose data is missing are skipped with a note."""
    problems = []
    if NB201.is_file():
        table = pd.read_csv(NB201, dtype={"arch": str}).set_index("arch")
        for acc in NB201_ACCURACY:
            for split, devices in (("dev", DEV_DEVICES), ("held-out", HELD_OUT_DEVICES)):
                for dev in devices:
                    for q in PERCENTILES:
                        problems.append(_limited(f"nb201/{acc.removeprefix('acc_')}/{dev.removesuffix('_ms')}/"
                                                 f"p{round(100 * q)}", "nb201", table[acc], table[dev], q, split))
    else:
        print(f"note: {NB201} not found; the NAS-Bench-201 problems are skipped", file=sys.stderr)
    if MACRO.is_file():
        table = pd.read_csv(MACRO, dtype={"arch": str}).set_index("arch")
        latency = macro_latency(table.index.tolist())
        for q in PERCENTILES:
            problems.append(_limited(f"macro/{MACRO_PROFILE}/p{round(100 * q)}", "macro", table["acc_mean"],
                                     latency, q, "held-out"))
        problems.append(_limited("macro/flops/p30", "macro", table["acc_mean"], table["flops"] / 1e6, 0.3,
                                 "held-out"))
    else:
        print(f"note: {MACRO} not found; the NAS-Bench-Macro problems are skipped", file=sys.stderr)
    synth = read_metric_table("synthetic:nb201")
    problems.append(_limited("synthetic/nb201", "nb201", synth["accuracy"], synth["latency_ms"], None, "fixture"))
    return problems


def macro_latency(archs: list[str]) -> pd.Series:
    """Every NAS-Bench-Macro network's latency (ms) on this machine's x86 profile: the predictor trained on the
    profile's measured block and network tables (`predictors.train.profile_predictor`)."""
    from hardware_profiles import get_profile
    from predictors.train import profile_predictor

    model, _, _ = profile_predictor(get_profile(MACRO_PROFILE))
    return pd.Series(model.predict(archs), index=archs)


# ---- running -----------------------------------------------------------------------------------------------------
_PROBLEMS: list[Problem] = []


def _job(args: tuple) -> tuple:
    index, spec, seed, budget = args
    p = _PROBLEMS[index]
    trace = run_one(spec, seed, get_space(p.space, num_classes=10), p.accuracy, p.cost, p.limit, budget)
    return index, spec, seed, trace


def run_all(problems: list[Problem], specs: list[str], seeds: range, budget: int, jobs: int,
            label: str = "", caps: dict[str, int] | None = None) -> dict:
    """{(problem index, spec): (seeds, queries) array of best-so-far accuracy}, in `jobs` processes; a spec in
    `caps` searches at most that many queries."""
    global _PROBLEMS
    _PROBLEMS = problems
    caps = caps or {}
    work = [(i, s, seed, min(budget, caps.get(s, budget))) for i in range(len(problems)) for s in specs
            for seed in seeds]
    out: dict = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool, tqdm(total=len(work), desc=label or "searches", file=sys.stderr,
                                      disable=None) as bar:
        for index, spec, seed, trace in pool.imap_unordered(_job, work, chunksize=1):
            out.setdefault((index, spec), {})[seed] = trace
            bar.update()
    return {k: np.array([v[s] for s in sorted(v)]) for k, v in out.items()}


def regrets(problem: Problem, traces: np.ndarray, checkpoints: list[int]) -> tuple[dict, dict]:
    """(mean regret, standard error) per checkpoint; None past the queries the traces hold."""
    r = problem.optimum - np.nan_to_num(traces, nan=-np.inf)
    r = np.where(np.isfinite(r), r, problem.optimum - min(problem.accuracy.values()))   # nothing feasible found
    held = r.shape[1]
    mean = {c: float(r[:, c - 1].mean()) if c <= held else None for c in checkpoints}
    se = {c: (float(r[:, c - 1].std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0) if c <= held else None
          for c in checkpoints}
    return mean, se


def figures(problems: list[Problem], traces: dict, specs: list[str], checkpoints: list[int]) -> list[dict]:
    out = []
    for i, p in enumerate(problems):
        reg, se = {}, {}
        for s in specs:
            reg[s], se[s] = regrets(p, traces[(i, s)], checkpoints)
        ratio = ({s: {c: (reg[s][c] / reg["random"][c] if reg[s][c] is not None and reg["random"][c] else None)
                      for c in checkpoints} for s in specs} if "random" in specs else {})
        out.append({"problem": p.name, "split": p.split, "space": p.space, "rows": len(p.accuracy),
                    "feasible_rows": p.feasible_rows, "limit": p.limit, "optimum": p.optimum,
                    "regret": reg, "se": se, "ratio_vs_random": ratio})
    return out


def summary(results: list[dict], specs: list[str], checkpoints: list[int]) -> dict:
    """Mean ratio to random per controller over the real problems (dev, held-out, all), and the goals."""
    real = [r for r in results if r["split"] != "fixture"]
    if not real or "random" not in specs:
        return {}

    def mean_ratio(rows, s, c):
        vals = [r["ratio_vs_random"][s][c] for r in rows if r["ratio_vs_random"][s][c] is not None]
        return float(np.mean(vals)) if vals else None
    out = {"mean_ratio": {split: {s: {c: mean_ratio([r for r in real if split == "all" or r["split"] == split], s, c)
                                      for c in checkpoints} for s in specs}
                          for split in ("dev", "held-out", "all")}}
    peers = [s for s in PEERS if s in specs and s != "random"]
    c = 100 if 100 in checkpoints else checkpoints[-1]
    goals = {}
    for s in (x for x in OURS if x in specs):
        below_peer = [r["problem"] for r in real if peers and
                      r["regret"][s][c] >= min(r["regret"][p][c] for p in peers if r["regret"][p][c] is not None)]
        worse = [r["problem"] for r in real if r["regret"][s][c] > r["regret"]["random"][c]]
        goals[s] = {"mean_ratio": out["mean_ratio"]["all"][s][c], "third_of_random":
                    (out["mean_ratio"]["all"][s][c] or 1.0) <= 1 / 3,
                    "not_below_best_peer_on": below_peer, "worse_than_random_on": worse}
    out["goals_at"] = c
    out["goals"] = goals
    return out


# ---- leave-one-problem-out ---------------------------------------------------------------------------------------
def leave_one_out(problems: list[Problem], seeds: int, budget: int, jobs: int) -> dict:
    """For each controller of `GRID` and each real problem: the setting with the best mean ratio (at `budget`
    queries) on the other real problems, and its ratio on the left-out one. Seeds 1000+ (not the reported ones)."""
    real = [p for p in problems if p.split != "fixture"]
    specs = ["random", *(s for grid in GRID.values() for s in grid)]
    traces = run_all(real, specs, range(1000, 1000 + seeds), budget, jobs, "tuning")
    table = figures(real, traces, specs, [budget])
    ratio = {s: np.array([r["ratio_vs_random"][s][budget] or 0.0 for r in table]) for s in specs}
    out = {}
    for name, grid in GRID.items():
        chosen, held = [], []
        for i in range(len(real)):
            rest = np.arange(len(real)) != i
            pick = min(grid, key=lambda s: ratio[s][rest].mean())
            chosen.append(pick)
            held.append(float(ratio[pick][i]))
        out[name] = {"default": grid[0], "default_ratio": float(ratio[grid[0]].mean()),
                     "held_out_ratio": float(np.mean(held)), "chosen": pd.Series(chosen).value_counts().to_dict(),
                     "grid": {s: float(ratio[s].mean()) for s in grid}}
    return {"queries": budget, "seeds": seeds, "problems": len(real), "controllers": out}


# ---- printing ----------------------------------------------------------------------------------------------------
def print_problem(r: dict, specs: list[str], checkpoints: list[int]) -> None:
    print(f"\n{r['problem']} ({r['split']}): {r['rows']} archs, {r['feasible_rows']} within {r['limit']:.4g}; "
          f"best feasible accuracy {r['optimum']:.3f}")
    width = max(12, *(len(s) + 2 for s in specs))
    print(f"{'controller':<{width}}" + "".join(f"{'@' + str(c):>16}{'ratio':>7}" for c in checkpoints))
    for s in specs:
        cells = ""
        for c in checkpoints:
            ratio = (r["ratio_vs_random"].get(s) or {}).get(c)
            cells += (f"{r['regret'][s][c]:>9.3f} ±{r['se'][s][c]:<5.3f}" if r["regret"][s][c] is not None
                      else f"{'-':>16}") + (f"{ratio:>7.2f}" if ratio is not None else f"{'-':>7}")
        print(f"{s:<{width}}{cells}")


def print_summary(summ: dict, specs: list[str], checkpoints: list[int]) -> None:
    if not summ:
        return
    print("\nmean ratio to random search over the real problems (dev: the defaults were developed on them; "
          "held-out: never looked at)")
    width = max(12, *(len(s) + 2 for s in specs))
    print(f"{'controller':<{width}}" + "".join(f"{split + ' @' + str(c):>18}" for split in ("dev", "held-out", "all")
                                             for c in checkpoints))
    for s in specs:
        cells = "".join(f"{v:>18.3f}" if (v := summ["mean_ratio"][split][s][c]) is not None else f"{'-':>18}"
                        for split in ("dev", "held-out", "all") for c in checkpoints)
        print(f"{s:<{width}}{cells}")
    c = summ["goals_at"]
    print(f"\ngoals at {c} queries: mean ratio <= 1/3, below the best peer and never worse than random on every "
          "real problem")
    for s, g in summ["goals"].items():
        print(f"  {s}: mean ratio {g['mean_ratio']:.3f} ({'met' if g['third_of_random'] else 'missed'}); "
              f"not below the best peer on {len(g['not_below_best_peer_on'])} problem(s)"
              f"{': ' + ', '.join(g['not_below_best_peer_on']) if g['not_below_best_peer_on'] else ''}; "
              f"worse than random on {len(g['worse_than_random_on'])}"
              f"{': ' + ', '.join(g['worse_than_random_on']) if g['worse_than_random_on'] else ''}")


def print_tuning(t: dict) -> None:
    print(f"\nleave-one-problem-out check of the defaults ({t['problems']} real problems, {t['seeds']} tuning seeds, "
          f"ratio at {t['queries']} queries):")
    for name, c in t["controllers"].items():
        chosen = ", ".join(f"{s} x{n}" for s, n in c["chosen"].items())
        print(f"  {name}: default {c['default']} {c['default_ratio']:.3f}; setting chosen on the other problems, "
              f"judged on the left-out one: {c['held_out_ratio']:.3f} (chosen: {chosen})")
        print("    grid means: " + ", ".join(f"{s} {v:.3f}" for s, v in c["grid"].items()))


# ---- main --------------------------------------------------------------------------------------------------------
def single_table(args: argparse.Namespace, specs: list[str]) -> dict:
    """The one-table mode (`--table`): the figures of one problem, in the JSON form outside checks read."""
    table = read_metric_table(args.table)
    accuracy = metric_column(table, args.table, args.accuracy, "--accuracy").dropna()
    latency = metric_column(table, args.table, args.latency, "--latency").reindex(accuracy.index)
    limit = float(np.nanmedian(latency)) if args.limit is None else args.limit
    if not (latency <= limit).any():
        sys.exit(f"{args.table}: no row has {args.latency} <= {limit:g}")
    problem = Problem(args.table, args.space, accuracy.to_dict(), latency.to_dict(), limit, "table")
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget] or [args.budget]
    t0 = time.perf_counter()
    traces = run_all([problem], specs, range(args.seeds), args.budget, args.jobs)
    r = figures([problem], traces, specs, checkpoints)[0]
    if not args.json:
        print_problem(r, specs, checkpoints)
        print(f"({time.perf_counter() - t0:.1f} s, {args.seeds} seeds)")
    return {"table": args.table, "rows": r["rows"], "feasible_rows": r["feasible_rows"], "limit_ms": limit,
            "optimum": r["optimum"], "seeds": args.seeds, "budget": args.budget,
            "seconds": time.perf_counter() - t0,
            "regret": {s: {str(c): v for c, v in r["regret"][s].items()} for s in specs},
            "se": {s: {str(c): v for c, v in r["se"][s].items()} for s in specs},
            "ratio_vs_random": {s: {str(c): v for c, v in d.items()} for s, d in r["ratio_vs_random"].items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=None, help="one metric table (CSV/Parquet, 'arch' column) instead of the "
                    "suite; 'synthetic:nb201' for the synthetic fixture")
    ap.add_argument("--accuracy", default="accuracy", help="--table: accuracy column")
    ap.add_argument("--latency", default="latency_ms", help="--table: latency column (ms)")
    ap.add_argument("--limit", type=float, default=None, help="--table: latency limit (ms); default: the median")
    ap.add_argument("--space", default="nb201", help="--table: search space of the table's arch strings")
    ap.add_argument("--budget", type=int, default=max(CHECKPOINTS), help="queries per search")
    ap.add_argument("--seeds", type=int, default=20, help="seeds per controller and problem")
    ap.add_argument("--controllers", default=None, help="comma-separated controllers, each name[:key=value...] "
                    f"(default: {','.join(DEFAULT)}; registered: {', '.join(CONTROLLERS.names())})")
    ap.add_argument("--problems", default=None, help="suite: only problems whose name contains one of these "
                    "comma-separated words")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="searches run in parallel processes")
    ap.add_argument("--leave-one-out", action="store_true", help="suite: also the leave-one-problem-out check of "
                    "the defaults (GRID)")
    ap.add_argument("--loo-seeds", type=int, default=10, help="--leave-one-out: seeds per setting and problem")
    ap.add_argument("--tune-budget", type=int, default=100, help="suite: queries of the Ray Tune searchers "
                    "(tune:...): Optuna's TPE spends ~40 ms per suggestion at a thousand trials, 8x the time of "
                    "every other controller together at 300 queries, so by default they stop at 100")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--out", type=Path, default=None, help="suite: also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    specs = args.controllers.split(",") if args.controllers else list(DEFAULT)
    if "random" not in specs:
        specs.insert(0, "random")
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget] or [args.budget]
    if args.table is not None:
        out = single_table(args, specs)
        if args.json:
            print(json.dumps(out, indent=2))
        return out
    problems = suite()
    if args.problems:
        words = args.problems.split(",")
        problems = [p for p in problems if any(w in p.name for w in words)]
    t0 = time.perf_counter()
    caps = {s: args.tune_budget for s in specs if s.startswith("tune")}
    traces = run_all(problems, specs, range(args.seeds), args.budget, args.jobs, caps=caps)
    results = figures(problems, traces, specs, checkpoints)
    out = {"seeds": args.seeds, "budget": args.budget, "problems": results,
           "summary": summary(results, specs, checkpoints)}
    if args.leave_one_out:
        out["leave_one_problem_out"] = leave_one_out(problems, args.loo_seeds, 100 if args.budget >= 100
                                                     else args.budget, args.jobs)
    out["seconds"] = time.perf_counter() - t0
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(out, indent=2, default=str))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return out
    for r in results:
        print_problem(r, specs, checkpoints)
    print_summary(out["summary"], specs, checkpoints)
    if args.leave_one_out:
        print_tuning(out["leave_one_problem_out"])
    print(f"\n({out['seconds']:.0f} s, {args.seeds} seeds, {args.jobs} processes)")
    return out


if __name__ == "__main__":
    main()
