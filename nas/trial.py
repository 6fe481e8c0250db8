"""One candidate's evaluation: cheap checks first, then latency, then (if still worth it) proxy training.

`evaluate_candidate` is Ray-free and never raises: any failure becomes a row with status ``failed`` and the error
text, so a crashing candidate cannot stop the search. `tune_trainable` is the thin Ray Tune wrapper around it.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

from nas.context import RunContext
from nas.objectives import latency_column, latency_violation, static_check
from nas.recipe import Recipe


def weights_path(run_dir: Path, arch: str) -> Path:
    """Where the trained weights of `arch` are kept during a run."""
    return Path(run_dir) / "weights" / f"{hashlib.sha1(arch.encode()).hexdigest()[:16]}.safetensors"


def init_seed(seed: int, arch: str) -> int:
    """Seed of `arch`'s initial weights: fixed by the run's seed and the arch, whatever ran before it."""
    return (seed * 1_000_003 + int(hashlib.sha1(arch.encode()).hexdigest()[:8], 16)) % 2**31


def build_seeded(space: Any, arch: Any, seed: int) -> Any:
    """`space.build(arch)` with initial weights that depend only on (seed, arch), not on the global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, space.to_string(arch)))
        return space.build(arch)


def evaluate_candidate(ctx: RunContext, arch_string: str) -> dict[str, Any]:
    """Evaluate one architecture; returns its results row (never raises).

    Order: decode -> FLOPs/params (analytic) -> latency on each profile -> proxy training, skipping training when
    a limit is already broken (unless `search.train_infeasible`).
    """
    from nas.export import save_weights

    start = time.perf_counter()
    row: dict[str, Any] = {"arch": arch_string, "accuracy": None, "feasible": False}
    try:
        arch = ctx.space.decode(arch_string)
        flops, params, violation = static_check(ctx.space, ctx.recipe.constraints, arch)
        row.update(flops=flops, params=params)
        latencies = {name: src.latency(ctx.space, arch) for name, src in ctx.latency.items()}
        row.update({latency_column(name): ms for name, ms in latencies.items()})
        violation = violation or latency_violation(ctx.recipe.constraints, latencies)
        row.update(feasible=violation is None, reason=violation)
        if violation is None or ctx.recipe.search.train_infeasible:
            if ctx.evaluator.trains:
                model = build_seeded(ctx.space, arch, ctx.recipe.search.seed)
                metrics = ctx.evaluator.evaluate(model, ctx.space.input_shape(arch)[-1])
            else:
                metrics = ctx.evaluator.estimate(arch_string)
            if not math.isfinite(metrics["accuracy"]):
                raise FloatingPointError(f"non-finite accuracy {metrics['accuracy']}")
            row.update(accuracy=float(metrics["accuracy"]), train_seconds=metrics.get("train_seconds"))
            row.update({k: float(metrics[k]) for k in ctx.evaluator.metrics if k in metrics})
            if ctx.evaluator.trains:
                save_weights(model, weights_path(ctx.run_dir, arch_string), {"arch": arch_string})
        row["status"] = "ok" if violation is None else "infeasible"
    except Exception as err:  # noqa: BLE001 - a candidate's failure is data, not a crash of the search
        row.update(status="failed", feasible=False, accuracy=None, error=f"{type(err).__name__}: {err}"[:500])
    row["eval_seconds"] = time.perf_counter() - start
    return row


_CONTEXTS: dict[int, RunContext] = {}


def tune_trainable(config: dict[str, Any], recipe: Recipe, run_dir: str) -> None:
    """Ray Tune function trainable: evaluates `config["arch"]` and reports its row once."""
    from ray import tune

    key = hash((recipe.model_dump_json(), run_dir))
    if key not in _CONTEXTS:   # workers are reused across trials: build datasets/profiles once
        _CONTEXTS.clear()
        _CONTEXTS[key] = RunContext(recipe, Path(run_dir))
    tune.report(evaluate_candidate(_CONTEXTS[key], config["arch"]))
