"""One candidate's evaluation: cheap checks first, then latency, then (if still worth it) proxy training.

`evaluate_candidate` is Ray-free and never raises: any failure becomes a row with status ``failed`` and the error
text, so a crashing candidate cannot stop the search. `tune_trainable` is the thin Ray Tune wrapper around it.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class TrialContext:
    """Everything a trial needs, built once per worker process from the recipe."""

    recipe: Recipe
    run_dir: Path
    space: Any = field(init=False)
    latency: dict[str, Any] = field(init=False)
    evaluator: Any = field(init=False)

    def __post_init__(self) -> None:
        from nas.evaluation import make_evaluator
        from nas.evaluation.tabular import constraint_table
        from nas.latency_sources import make_sources
        from search_spaces import get_space

        r = self.recipe
        self.evaluator = make_evaluator(r.evaluator.name, r.evaluator.options, seed=r.search.seed)
        self.space = get_space(r.space.name, r.space.options, num_classes=self.evaluator.num_classes())
        self.evaluator.bind(self.space)
        self.latency = make_sources(r.constraints, self.space, self.run_dir, seed=r.search.seed,
                                    tables={c.profile: constraint_table(r, c) for c in r.constraints.latency})

    def precheck(self, arch: Any) -> tuple[str | None, dict[str, Any]]:
        """(violation or None, row fields) from what costs nothing: FLOPs, params and the latency figures of
        cheap sources (predictors, tables, simulators); run before a trial is spent on `arch`."""
        flops, params, violation = static_check(self.space, self.recipe.constraints, arch)
        extra: dict[str, Any] = {"flops": flops, "params": params}
        if violation is None:
            lat = {}
            for name, src in self.latency.items():
                if src.cheap:
                    try:
                        lat[name] = src.latency(self.space, arch)
                    except KeyError:   # not in a metric table: the trial records it as failed, the search goes on
                        continue
            extra.update({latency_column(name): ms for name, ms in lat.items()})
            violation = latency_violation(self.recipe.constraints, lat)
        return violation, extra


def evaluate_candidate(ctx: TrialContext, arch_string: str) -> dict[str, Any]:
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


_CONTEXTS: dict[int, TrialContext] = {}


def tune_trainable(config: dict[str, Any], recipe: Recipe, run_dir: str) -> None:
    """Ray Tune function trainable: evaluates `config["arch"]` and reports its row once."""
    from ray import tune

    key = hash((recipe.model_dump_json(), run_dir))
    if key not in _CONTEXTS:   # workers are reused across trials: build datasets/profiles once
        _CONTEXTS.clear()
        _CONTEXTS[key] = TrialContext(recipe, Path(run_dir))
    tune.report(evaluate_candidate(_CONTEXTS[key], config["arch"]))
