"""Prescreening: the controller searches thousands of candidates in this process on cheap estimates, then only the
best few go through Ray Tune for full evaluation.

When every objective comes from something that costs well under a millisecond (latency predictors or metric
tables, and an accuracy estimate that needs no training, `search.prescreen.estimator`), a Tune trial per
candidate would cost a hundred times more than the candidate itself. `run_prescreen` drives the recipe's
controller through the same `Proposer` the Tune adapter uses (FLOPs, params and latency limits reject before
any estimate), records every candidate in ``prescreen.csv`` (written atomically at the end; the stage is
deterministic and takes seconds, so an interrupted one is simply run again), and returns the `top_k` feasible
candidates by estimated accuracy, which the pipeline queues first for Tune.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import InputError
from core.io import atomic_write, atomic_write_json
from nas.controllers.base import Controller
from nas.controllers.proposer import MemoryLedger, search_in_process
from nas.recipe import Recipe

CSV = "prescreen.csv"
SUMMARY = "prescreen.json"


class PrescreenError(InputError):
    """A prescreen that cannot run (a latency figure that is not cheap); one line naming the constraint."""


def run_prescreen(recipe: Recipe, run_dir: Path, ctx: Any, controller: Controller) -> dict[str, Any]:
    """Estimate `search.prescreen.candidates` architectures in-process; returns the stage's summary (with
    ``top_k``: the arch strings to evaluate fully, best first).

    Args:
        recipe: the validated recipe (with `search.prescreen`).
        run_dir: where ``prescreen.csv`` / ``prescreen.json`` go.
        ctx: the driver's `RunContext` (space, latency sources, `precheck`).
        controller: the recipe's controller; it keeps what it learnt for the Tune stage.
    """
    from tqdm import tqdm

    pre = recipe.search.prescreen
    slow = [name for name, src in ctx.latency.items() if not src.cheap]
    if slow:
        raise PrescreenError(f"constraints.latency: prescreening needs cheap latency figures; {slow[0]} is measured "
                             "per candidate (use source: predictor)")
    estimator = ctx.make_estimator()
    checked: dict[str, dict[str, Any]] = {}

    def precheck(arch):
        violation, extra = ctx.precheck(arch)
        if violation is None:   # kept for the estimate that follows
            checked[ctx.space.to_string(arch)] = extra
        return violation, extra

    def evaluate(string: str) -> dict[str, Any]:
        return {"status": "ok", "feasible": True, **checked.pop(string), **estimator.estimate(string)}

    ledger = MemoryLedger()
    bar = tqdm(total=pre.candidates, desc="prescreen", unit="cand", file=sys.stderr, mininterval=0.5)
    start = time.perf_counter()
    done = search_in_process(controller, ledger, precheck, evaluate, pre.candidates,
                             max_rejections=recipe.search.max_rejections, progress=lambda row: bar.update(1),
                             repair=ctx.repair if ctx.repairs else None)
    seconds = time.perf_counter() - start
    bar.close()
    table = pd.DataFrame(ledger.rows)
    atomic_write(Path(run_dir) / CSV, lambda tmp: table.to_csv(tmp, index=False))
    summary = {"candidates": done, "proposals": len(ledger.rows), "rejected": len(ledger.rows) - done,
               "seconds": seconds, "candidates_per_second": done / seconds if seconds else None,
               "estimator": pre.estimator.name, "top_k": top_candidates(table, pre.top_k or recipe.search.budget)}
    atomic_write_json(Path(run_dir) / SUMMARY, summary)
    return summary


def top_candidates(table: pd.DataFrame, k: int) -> list[str]:
    """The `k` feasible rows with the highest estimated accuracy (ties: fewer FLOPs), best first."""
    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["accuracy"] = pd.to_numeric(ok["accuracy"], errors="coerce")
    ok = ok.dropna(subset=["accuracy"])   # every row has FLOPs: the precheck computes them before the estimate
    return ok.sort_values(["accuracy", "flops"], ascending=[False, True], kind="stable")["arch"].head(k).tolist()


def load_prescreen(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished prescreen in `run_dir`, or None."""
    import json

    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None
