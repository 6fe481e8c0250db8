"""Running the trials: a local Ray instance (or a cluster) and one Ray Tune experiment per session.

Each `nas.run` session (the first and every `--resume`) runs one Tune experiment under `run_dir/tune/`, sized to
the budget still left; the run's ledger (`state.json`), not Tune's experiment state, is what a resume restores,
so a session killed at any point loses only the trials that were in flight, and those are proposed again first.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from nas.controllers.base import Controller
from nas.controllers.tune_adapter import ControllerSearcher
from nas.recipe import Recipe
from nas.results import RunLog

# Never phone home: Ray's usage statistics are off for every process this run starts.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune prints its own tables; the run prints one progress line instead.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Trials keep the driver's working directory, so relative paths in a recipe mean the same thing inside a trial.
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")


def ray_temp_dir(run_dir: Path) -> Path:
    """Ray's temp folder inside the run directory.

    Ray puts Unix sockets under it and a socket path may not exceed 107 bytes; Ray's own session folder name adds
    about 60, so a long run path falls back to a short per-run folder under the system temp dir.
    """
    path = (Path(run_dir) / ".ray").resolve()
    if len(str(path)) <= 40:
        return path
    import hashlib
    import tempfile

    return Path(tempfile.gettempdir()) / f"hwnas-ray-{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"


def start_ray(recipe: Recipe, run_dir: Path) -> None:
    """Start (or connect to) Ray quietly, with no dashboard and no usage reporting."""
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    if recipe.cluster.address:
        ray.init(address=recipe.cluster.address, **kwargs)
    else:
        ray.init(num_cpus=recipe.cluster.num_cpus, _temp_dir=str(ray_temp_dir(run_dir)), **kwargs)


def run_trials(recipe: Recipe, run_dir: Path, ctx, controller: Controller, log: RunLog,
               requeue: list[str], remaining: int) -> dict[str, float]:
    """Run `remaining` trials through Ray Tune; returns timing figures (seconds).

    Args:
        recipe: the validated recipe.
        run_dir: the run's output folder.
        ctx: the driver's `RunContext` (space, latency sources, `precheck`).
        controller: the controller (state already restored on resume).
        log: the run's ledger; updated and saved after every trial.
        requeue: candidates in flight when the previous session stopped.
        remaining: trials still to run.
    """
    import ray
    from ray import tune

    from nas.trial import tune_trainable

    t0 = time.perf_counter()
    start_ray(recipe, run_dir)
    t_ray = time.perf_counter() - t0

    searcher = ControllerSearcher(controller, log, ctx.precheck, requeue=requeue,
                                  max_rejections=recipe.search.max_rejections)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, recipe=recipe, run_dir=str(run_dir.resolve())),
        {"cpu": recipe.cluster.cpus_per_trial, "gpu": recipe.cluster.gpus_per_trial})
    session = 1 + sum(1 for p in (run_dir / "tune").glob("session*")) if (run_dir / "tune").is_dir() else 1
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                    max_concurrent_trials=recipe.search.concurrency, reuse_actors=True),
        run_config=tune.RunConfig(name=f"session{session}", storage_path=str((run_dir / "tune").resolve()),
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=0)),
    )
    t1 = time.perf_counter()
    try:
        tuner.fit()
    finally:
        if not recipe.cluster.address:
            ray.shutdown()
    t_tune = time.perf_counter() - t1
    if searcher.exhausted:
        print(f"search ended early: {searcher.exhausted}")
    return {"ray_start_seconds": t_ray, "tune_seconds": t_tune}
