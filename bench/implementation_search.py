"""Search for the engine it will run on: ``implementation: best`` against the default engine, same limit and budget.

    python bench/implementation_search.py [--space nb201|macro] [--seeds 0,1,2] [--budget 60] [--quantile 0.25]
        [--threads 1] [--verify 20] [--controller random|local|rl] [--work DIR] [--out FILE.json]

The problem is real: NAS-Bench-201 cells with their real CIFAR-100 accuracy (`shared/data/nb201-dev`), or with
``--space macro`` NAS-Bench-Macro's MobileNet-style networks (inverted residuals with depthwise 3x3/5x5
convolutions) with their real CIFAR-10 accuracy (`shared/data/nasbench-macro`), read by the ``tabular`` evaluator,
nothing trained, under a latency limit on this machine's CPU (``local-cpu``, or ``local-cpu-2t`` with
``--threads 2``). Engines disagree on these networks (on NB201 cells OpenVINO wins the light ones, onnxruntime the
convolution-heavy ones), so which networks fit a limit depends on the engine. The controller and its settings are
the recipe's (`recipes/nb201_tabular.yaml`) for both problems: nothing here is tuned to either.

1. One calibration for both arms: 24 cells timed live with every CPU engine (`nas.latency_sources`' calibrated
   predictors, one per implementation); the default arm gets the onnxruntime predictor of the very same timings,
   so the arms differ only in what the constraint allows.
2. The limit: the `--quantile` of the default engine's predicted latency over all networks of the space.
3. Per seed, two searches (`python -m nas.run recipes/nb201_tabular.yaml` with overrides), evolution, `--budget`
   trials each: ``implementation: default`` (onnxruntime, the engine the CPU profiles use) and
   ``implementation: best`` (onnxruntime, OpenVINO, PyTorch eager; a candidate's latency is the smallest).
   Each run checks its best before export (`nas.verify`, ``constraints.verify``: `--verify` most accurate
   feasible cells measured live until one is within the limit; ``--verify 0``: the search's best unmeasured).
4. Printed per seed and arm: the exported network's real accuracy, its engine, and its latency measured now on that
   engine in interleaved rounds (`hardware_profiles.select`, fp32: the engine's best settings, what its plan ships),
   against the limit, beside the search's own best (before the check); plus the ceiling of each arm: the best
   accuracy among all cells its predictors put under the limit. The comparison that counts is of networks that
   hold the limit when measured now: per arm, the mean accuracy of its exported networks, with a network measured
   over the limit by more than 5 % counted as a miss. Beside it, the same network measured with the engine's
   default settings, the ones the limit and the predictors are for (`measure_exported`, as ``constraints.verify``
   measures; ``at default settings``): an engine whose best settings run far faster than its defaults (onnxruntime's
   parallel execution on NB201's branching cells, on some machines) shows here, and the misses are counted on both.

The figures are what this machine measured in this run; the held-out part is the measurement of the winners,
taken after the searches and not used by them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.io import atomic_write_json  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "nb201_tabular.yaml"
# The problems: a space, its table of real accuracy, the accuracy column and the classes of its networks.
PROBLEMS = {
    "nb201": {"table": DATA / "nb201-dev" / "nb201_dev.csv", "accuracy": "acc_cifar100", "num_classes": 100},
    "macro": {"table": DATA / "nasbench-macro" / "nasbench_macro_cifar10.csv", "accuracy": "acc_mean",
              "num_classes": 10},
}


def overrides(space: str, profile: str, limit: float | None, implementation: str, budget: int, seed: int,
              verify: int = 0, controller: str | None = None) -> list[str]:
    """The recipe's --set lines for one arm (`controller`: another controller with its default options instead of
    the recipe's evolution)."""
    problem = PROBLEMS[space]
    lat = {"profile": profile, "implementation": implementation, **({"max_ms": limit} if limit else {})}
    other = [f"controller.name={controller}", "controller.options={}"] if controller else []
    return [*other, f"space.name={space}", f"evaluator.options.path={problem['table']}",
            f"evaluator.options.accuracy={problem['accuracy']}",
            f"evaluator.options.num_classes={problem['num_classes']}",
            f"constraints.latency=[{json.dumps(lat)}]",
            f"constraints.verify={verify}", f"search.budget={budget}", f"search.seed={seed}",
            "search.concurrency=1", "tracking=none"]


def calibrate(work: Path, space: str, profile: str) -> tuple[dict, Path]:
    """Calibrate one predictor per engine (`RunContext.open` builds them) into ``work/calibration``; returns the
    sources and the predictors folder."""
    from nas.context import RunContext
    from nas.recipe import read_recipe

    folder = work / "calibration"
    recipe = read_recipe(RECIPE, overrides(space, profile, None, "best", 1, 0))
    ctx = RunContext(recipe).open(folder, log=lambda line: print(line, file=sys.stderr))
    return ctx, folder / "predictors"


def predicted(ctx, profile: str, archs: list[str]) -> pd.DataFrame:
    """Every cell's predicted latency per engine (ms), one column per implementation."""
    src = ctx.latency[profile]
    return pd.DataFrame({name: part.predictor.predict(archs) for name, part in src.parts.items()}, index=archs)


def ceiling_table(table: pd.Series, pred: pd.DataFrame) -> str:
    """Per limit (quantiles of onnxruntime's predicted latency): feasible cells and the best accuracy among them
    for the default engine and for the fastest engine per cell, i.e. what each arm could find at most."""
    best_of = pred.min(axis=1)
    lines = ["| quantile | limit ms | feasible default | feasible best | ceiling default | ceiling best |",
             "|---|---|---|---|---|---|"]
    for q in (0.02, 0.05, 0.1, 0.25, 0.5):
        limit = float(np.quantile(pred["onnxruntime-cpu"], q))
        ok_d, ok_b = pred["onnxruntime-cpu"] <= limit, best_of <= limit
        lines.append(f"| {q:.0%} | {limit:.3f} | {int(ok_d.sum())} | {int(ok_b.sum())} | "
                     f"{table[ok_d].max():.2f} | {table[ok_b].max():.2f} |")
    return "\n".join(lines)


def run_arm(work: Path, predictors: Path, space: str, profile: str, limit: float, implementation: str,
            budget: int, seed: int, verify: int, controller: str | None = None) -> dict:
    """One search (a fresh run folder seeded with the shared predictors); returns its best.json."""
    run_dir = work / f"{implementation}-v{verify}-s{seed}{f'-{controller}' if controller else ''}"
    if not (run_dir / "best.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        target = run_dir / "predictors" / profile
        if implementation == "best":
            shutil.copytree(predictors / profile, target)
        else:
            shutil.copytree(predictors / profile / "onnxruntime-cpu", target)
        cmd = [sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(run_dir),
               *sum((["--set", o] for o in overrides(space, profile, limit, implementation, budget, seed, verify,
                                                     controller)), [])]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "best.json").read_text())


def measure_winner(space_name: str, arch: str, engines: list[str], threads: int) -> dict[str, float]:
    """The cell timed now with every engine of the comparison (fp32, 5 interleaved rounds): ms per engine."""
    from hardware_profiles.implementations import Network
    from hardware_profiles.select import SelectSettings, select
    from search_spaces import make_space

    classes = PROBLEMS[space_name]["num_classes"]
    space = make_space(space_name, {}, classes)
    genotype = space.decode(arch)
    net = Network(tuple(space.input_shape(genotype)), {"space": space_name, "options": {}, "num_classes": classes,
                                                       "arch": arch}, module=space.build(genotype).eval())
    plan = select(net, SelectSettings(implementations=",".join(engines), threads=threads, precision="fp32",
                                      rounds=5, repeats=30), None, log=lambda line: None)
    out: dict[str, float] = {}
    for e in plan.entries:   # fastest first: each engine's best settings
        if e.latency_ms is not None:
            out.setdefault(e.implementation, e.latency_ms)
    return out


def run_seed_arm(ctx, work: Path, predictors: Path, profile: str, limit: float, arm: str, seed: int,
                 engines: list[str], args) -> dict:
    """One arm's search for one seed, its exported network measured now: a row of the comparison (printed)."""
    summary = run_arm(work, predictors, args.space, profile, limit, arm, args.budget, seed, args.verify,
                      args.controller)
    best, check = summary["best"] or {}, summary.get("verification") or {}
    arch = best.get("arch")
    measured = measure_winner(args.space, arch, engines, args.threads) if arch else {}
    engine = best.get(f"implementation_{profile}") or "onnxruntime-cpu"
    at_default = default_settings_ms(ctx, profile, engine, arch) if arch else None
    first = (check.get("measured") or [{}])[0]
    r = {"seed": seed, "arm": arm, "accuracy": best.get("accuracy"), "arch": arch, "engine": engine,
         "search_ms": best.get(f"latency_{profile}"), "measured_ms": measured.get(engine), "measured_all": measured,
         "measured_default_settings_ms": at_default,
         "search_best_accuracy": first.get("accuracy", best.get("accuracy")),
         "checked": len(check.get("measured") or []), "found": bool(check) and bool(check["measured"][-1]["within"])}
    print(f"seed {seed} {arm:7s}: accuracy {r['accuracy']:.2f} (search's best {r['search_best_accuracy']:.2f}, "
          f"{r['checked']} checked), engine {engine}, search {r['search_ms']:.3f} ms, measured now "
          f"{r['measured_ms']:.3f} ms on it, {at_default:.3f} ms at default settings (limit {limit:.3f})"
          if arch else f"seed {seed} {arm}: no feasible network")
    return r


def default_settings_ms(ctx, profile: str, engine: str, arch: str) -> float | None:
    """The exported network timed with `engine` at its default settings for the profile's threads (the protocol the
    calibration and ``constraints.verify`` use: the smallest median of 3 interleaved rounds)."""
    ms, _ = ctx.latency[profile].parts[engine].measure_exported(ctx.space, ctx.space.decode(arch), rounds=3)
    return ms


def report(df: pd.DataFrame, limit: float) -> None:
    """Per arm: accuracy of the exported networks, of the search's best before the check, and of the exported
    networks that hold the limit now (within 5 %; a network over it is a miss); then the seeds won per arm."""
    df["holds"] = df["measured_ms"] <= limit * 1.05
    df["holds_at_default"] = df["measured_default_settings_ms"] <= limit * 1.05
    df["held_accuracy"] = df["accuracy"].where(df["holds"])
    summary = df.groupby("arm").agg(exported=("accuracy", "mean"), search_best=("search_best_accuracy", "mean"),
                                    held=("held_accuracy", "mean"), misses=("holds", lambda h: int((~h).sum())),
                                    runs=("holds", "size"), checked=("checked", "mean"))
    print(summary.round(2).to_string())
    wide = df.pivot(index="seed", columns="arm", values="accuracy")
    held = df.pivot(index="seed", columns="arm", values="holds")
    both = held.all(axis=1)
    print(f"seeds where both arms' exported networks hold the limit now: {int(both.sum())} of {len(held)}; among "
          f"them best >= default in {int((wide['best'][both] >= wide['default'][both]).sum())}, best > default in "
          f"{int((wide['best'][both] > wide['default'][both]).sum())}; mean accuracy there: best "
          f"{wide['best'][both].mean():.2f}, default {wide['default'][both].mean():.2f}")
    print(f"exported networks measured over the limit by more than 5%: {int((~df['holds']).sum())} of {len(df)} "
          f"(at the engine's default settings: {int((~df['holds_at_default']).sum())})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=sorted(PROBLEMS), default="nb201",
                   help="nb201: NAS-Bench-201 cells, CIFAR-100; macro: NAS-Bench-Macro (MobileNet-style), CIFAR-10")
    p.add_argument("--controller", help="another controller (its default options) instead of the recipe's "
                   "evolution, e.g. random, local, rl")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=60)
    p.add_argument("--quantile", type=float, default=0.25)
    p.add_argument("--threads", type=int, choices=[1, 2], default=1)
    p.add_argument("--verify", type=int, default=20, help="constraints.verify of every run (0: no check)")
    p.add_argument("--work", default="/tmp/hwnas-implementation-search")
    p.add_argument("--out", help="write the figures here as JSON")
    args = p.parse_args()
    profile = "local-cpu" if args.threads == 1 else "local-cpu-2t"
    work = Path(args.work) / (profile if args.space == "nb201" else f"{args.space}-{profile}")
    start = time.time()
    ctx, predictors = calibrate(work, args.space, profile)
    problem = PROBLEMS[args.space]
    table = pd.read_csv(problem["table"], usecols=["arch", problem["accuracy"]],
                        dtype={"arch": str}).set_index("arch")[problem["accuracy"]]
    pred = predicted(ctx, profile, list(table.index))
    limit = float(np.quantile(pred["onnxruntime-cpu"], args.quantile))
    engines = list(pred.columns)
    best_of = pred.min(axis=1)
    ceilings = {"default": float(table[pred["onnxruntime-cpu"] <= limit].max()),
                "best": float(table[best_of <= limit].max())}
    wins = pred.idxmin(axis=1).value_counts().to_dict()
    print(f"{profile}: limit {limit:.3f} ms (the {args.quantile:.0%} quantile of onnxruntime's predicted latency); "
          f"engines {engines}; fastest predicted engine over all cells: {wins}")
    print(f"feasible cells: default {int((pred['onnxruntime-cpu'] <= limit).sum())}, "
          f"best {int((best_of <= limit).sum())}; ceiling accuracy: default {ceilings['default']:.2f}, "
          f"best {ceilings['best']:.2f}")
    print(ceiling_table(table, pred))
    rows: list[dict] = []

    def save(complete: bool) -> None:   # after every run, so a cut-off bench keeps what it measured
        if args.out:
            atomic_write_json(Path(args.out), {
                "space": args.space, "profile": profile, "limit_ms": limit, "quantile": args.quantile,
                "budget": args.budget, "verify": args.verify, "controller": args.controller or "evolution (recipe)",
                "ceilings": ceilings, "wins": wins, "runs": rows, "complete": complete,
                "seconds": time.time() - start})

    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in ("default", "best"):
            rows.append(run_seed_arm(ctx, work, predictors, profile, limit, arm, seed, engines, args))
            save(False)
    report(pd.DataFrame(rows), limit)
    save(True)


if __name__ == "__main__":
    main()
