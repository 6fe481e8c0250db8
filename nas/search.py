"""Running the trials: a local Ray instance (or a running cluster) and one Ray Tune experiment per session.

Each `nas.run` session (the first and every `--resume`) runs one Tune experiment under `run_dir/tune/` (or
`<cluster.storage>/<run folder>/tune`), sized to the budget still left; the run's ledger (`nas.results`), not Tune's
experiment state, is what a resume restores, so a session killed at any point loses only the trials that were in
flight, and those are proposed again first.

On a cluster (`cluster.address`), `join_cluster` connects before the run writes anything: an address nothing
answers at, a token the cluster asks for, or resources no node has (`check_resources`) are one `ClusterError` line.
Trials reserve `ClusterConfig.trial_resources`; `search.concurrency: auto` keeps as many in flight as the alive
nodes hold (`ClusterCapacity`); a trial whose worker or node died is run again (`cluster.max_retries`).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from core.errors import InputError
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


class ClusterError(InputError):
    """A cluster the run cannot use (unreachable, without the resources a trial asks for, storage that cannot be
    written); one line naming the `cluster` field, before any trial starts."""


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
    """Start (or connect to) Ray quietly, with no dashboard and no usage reporting.

    Raises:
        ClusterError: `cluster.address` names no reachable cluster (checked within `cluster.connect_timeout`
            seconds: Ray itself would keep retrying for minutes).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    cl = recipe.cluster
    if cl.address:
        _check_reachable(cl.address, cl.connect_timeout)
        env = {k: v for k, v in os.environ.items() if k.startswith("HWNAS_")}   # e.g. HWNAS_ZOO_PATH, for workers
        try:
            ray.init(address=cl.address, runtime_env={"env_vars": env} if env else None, **kwargs)
        except (ConnectionError, RuntimeError) as err:
            raise ClusterError(_connect_failure(cl.address, err)) from None
    else:
        ray.init(num_cpus=cl.num_cpus, _temp_dir=str(ray_temp_dir(run_dir)), **kwargs)


def _check_reachable(address: str, timeout: float) -> None:
    """A TCP connection to the cluster's head within `timeout` seconds, or a `ClusterError` naming the field."""
    import socket

    from ray._private import services

    if address.startswith("ray://"):
        raise ClusterError("cluster.address: ray:// (Ray Client) would run Ray Tune's loop, and with it the run's "
                           "ledger, on the head node, away from this command; run nas.run on a machine of the "
                           "cluster with HOST:PORT or auto (over ssh, or: ray job submit -- python -m nas.run ...)")
    where = address
    try:
        where = services.canonicalize_bootstrap_address(address) or address
        host, _, port = where.rpartition(":")
        port = int(port)
    except ConnectionError:   # 'auto' and no cluster started on this machine
        raise ClusterError("cluster.address: 'auto' finds no running Ray cluster on this machine; start one "
                          "(ray start --head) or give HOST:PORT") from None
    except ValueError:
        raise ClusterError(f"cluster.address: {address!r}: expected 'auto' or HOST:PORT") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        shown = address if where == address else f"{address} ({where})"
        raise ClusterError(f"cluster.address: no Ray cluster answers at {shown} within {timeout:g} s "
                          f"({err.strerror or err}); start one (ray start --head) or fix the address") from None


def _connect_failure(address: str, err: Exception) -> str:
    """One line for a cluster that answered but could not be joined; names Ray's token authentication, which
    `ray start --head` turns on and which a driver must opt into."""
    text = f"{err} {err.__cause__ or ''} {err.__context__ or ''}"
    if "InvalidAuthToken" in text or "Authentication" in text:
        return (f"cluster.address: the cluster at {address} asks for an authentication token: run with "
                "RAY_AUTH_MODE=token set (the token is read from ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or "
                "RAY_AUTH_TOKEN), as for every ray start --address on the other machines")
    return f"cluster.address: cannot join the Ray cluster at {address} ({type(err).__name__}: {err})"


_RAY_NAMES = {"cpu": "CPU", "gpu": "GPU"}


def join_cluster(recipe: Recipe, run_dir: Path) -> None:
    """Connect to `cluster.address` and check it can hold a trial, before the run writes anything (a run that
    cannot start leaves no run folder behind). A local run checks this machine's CPUs and GPUs the same way and
    starts its Ray instance later, in `run_trials`."""
    if not recipe.cluster.address:
        import torch

        check_resources(recipe, {"CPU": float(recipe.cluster.num_cpus or os.cpu_count() or 1),
                                 "GPU": float(torch.cuda.device_count())})
        return
    start_ray(recipe, run_dir)
    try:
        check_resources(recipe)
    except ClusterError:
        _stop_ray(recipe, run_dir, always=True)
        raise


CUDA_CONTEXT_GB = 0.5   # what a process's CUDA context and PyTorch's kernels take on a GPU before any tensor


class PredictedMemory:
    """Tune's per-trial resources with ``cluster.trial_memory: predicted``: the recipe's trial resources plus Ray's
    `memory` (bytes) for the candidate in the trial's config, its training step at ``constraints.train_batch`` (or
    the smaller batch it trains at under ``constraints.on_train_memory: shrink``)
    (`nas.objectives.train_memory`) plus ``cluster.trial_memory_overhead_gb``; so Ray starts a trial only on a
    node with that much unreserved memory, and a large candidate does not share a node with more than fit. Where
    trials train on GPUs and ``cluster.gpu_memory_gb`` says how much one holds, the step is reserved as a share of
    a GPU instead (`gpu_share`), and Ray's `memory` holds the worker's overhead only."""

    def __init__(self, recipe: Recipe, space):
        self.recipe, self.space = recipe, space

    def step_bytes(self, arch: str) -> int:
        """The predicted training step of `arch` at the batch it trains at."""
        from nas.objectives import shrunk_batch, train_memory

        r, genotype = self.recipe, self.space.decode(arch)
        batch = shrunk_batch(self.space, r.constraints, genotype) or r.constraints.train_batch or 1
        return train_memory(self.space, r.constraints, genotype, batch).total_bytes

    def bytes_for(self, arch: str) -> int:
        """Ray's `memory` for a CPU trial of `arch`: its training step plus the worker's overhead."""
        return int(self.step_bytes(arch) + self.recipe.cluster.trial_memory_overhead_gb * 2 ** 30)

    def gpu_share(self, arch: str) -> float:
        """With ``cluster.gpu_memory_gb``: the share of a GPU the training step of `arch` and a CUDA context
        (`CUDA_CONTEXT_GB`) need, rounded up to a hundredth (to whole GPUs above one), at most ``gpus_per_trial``."""
        c = self.recipe.cluster
        need = (self.step_bytes(arch) + CUDA_CONTEXT_GB * 2 ** 30) / (c.gpu_memory_gb * 2 ** 30)
        share = math.ceil(100 * need) / 100
        return min(c.gpus_per_trial, share if share <= 1 else math.ceil(share))   # Ray: a fraction or whole GPUs

    def __call__(self, config: dict):
        from ray import tune

        c = self.recipe.cluster
        bundle = {_RAY_NAMES.get(k, k): v for k, v in c.trial_resources().items() if v > 0}
        if "arch" in config and c.gpu_memory_gb is not None:   # the step runs on the GPU, the worker on the host
            bundle["GPU"] = self.gpu_share(config["arch"])
            bundle["memory"] = int(c.trial_memory_overhead_gb * 2 ** 30)
        elif "arch" in config:
            bundle["memory"] = self.bytes_for(config["arch"])
        return tune.PlacementGroupFactory([bundle])


def check_resources(recipe: Recipe, total: dict[str, float] | None = None) -> None:
    """The cluster (or this machine) can hold one trial, or a `ClusterError` naming the field: otherwise Tune
    would wait for resources that never come.

    Args:
        total: the resources there are, by Ray's names; default: the connected cluster's alive nodes.
    """
    if total is None:
        import ray

        total, nodes = ray.cluster_resources(), f" (nodes: {len(ray.nodes())})"
    else:
        nodes = ""
    for name, amount in recipe.cluster.trial_resources().items():
        have = total.get(_RAY_NAMES.get(name, name), 0.0)
        if amount > have:
            field = {"cpu": "cpus_per_trial", "gpu": "gpus_per_trial"}.get(name, "resources")
            if name.startswith("accelerator_type:"):
                field = "accelerator_type"
            where = f"the cluster at {recipe.cluster.address}" if recipe.cluster.address else "this machine"
            raise ClusterError(f"cluster.{field}: a trial asks for {amount:g} {_RAY_NAMES.get(name, name)} and "
                              f"{where} has {have:g} in all{nodes}; no trial could start")


class ClusterCapacity:
    """How many trials the cluster holds at once (`search.concurrency: auto`): its alive nodes' resources over a
    trial's, read again every `refresh` seconds, so nodes that join get trials and nodes that leave are not
    waited for."""

    def __init__(self, recipe: Recipe, refresh: float = 2.0):
        self.per_trial = {_RAY_NAMES.get(k, k): v for k, v in recipe.cluster.trial_resources().items() if v > 0}
        self.refresh, self._read, self._value = refresh, -float("inf"), 1

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self._read >= self.refresh:
            import ray

            total = ray.cluster_resources()
            self._value = max(1, min(int(total.get(k, 0.0) / v + 1e-9) for k, v in self.per_trial.items()))
            self._read = now
        return self._value


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
    from ray import tune

    from nas.trial import run_files, tune_trainable

    t0 = time.perf_counter()
    start_ray(recipe, run_dir)
    t_ray = time.perf_counter() - t0
    if not recipe.cluster.address:   # a cluster was checked when it was joined (`join_cluster`)
        try:
            check_resources(recipe)   # Ray's own view of this machine
        except ClusterError:
            _stop_ray(recipe, run_dir)
            raise

    auto = recipe.search.concurrency == "auto"
    searcher = ControllerSearcher(controller, log, ctx.precheck, requeue=requeue,
                                  max_rejections=recipe.search.max_rejections,
                                  capacity=ClusterCapacity(recipe) if auto else None,
                                  repair=ctx.repair if ctx.repairs else None)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, recipe=recipe, run_dir=str(run_dir.resolve()), files=run_files(run_dir)),
        PredictedMemory(recipe, ctx.space) if recipe.cluster.trial_memory == "predicted"
        else recipe.cluster.trial_resources())
    if auto:   # Tune lets a custom searcher's trials wait for resources one at a time; the capacity limits them
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1000")
    storage = tune_storage(recipe, run_dir)
    session = _next_session(storage)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                    max_concurrent_trials=None if auto else recipe.search.concurrency,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"session{session}", storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=recipe.cluster.max_retries)),
    )
    t1 = time.perf_counter()
    try:
        tuner.fit()
    finally:
        _stop_ray(recipe, run_dir)
    t_tune = time.perf_counter() - t1
    if searcher.exhausted:
        print(f"search ended early: {searcher.exhausted}")
    return {"ray_start_seconds": t_ray, "tune_seconds": t_tune}


def _stop_ray(recipe: Recipe, run_dir: Path, always: bool = False) -> None:
    """Stop the local Ray instance this run started, and remove its temp folder where that was the short one under
    the system temp dir (`ray_temp_dir`; one inside the run directory stays, with Ray's logs); a cluster's
    connection is left to the process's end (or closed too, `always`)."""
    import ray

    if always or not recipe.cluster.address:
        ray.shutdown()
    if not recipe.cluster.address:
        temp = ray_temp_dir(run_dir)
        if Path(run_dir).resolve() not in temp.parents:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)


def tune_storage(recipe: Recipe, run_dir: Path) -> str:
    """Where Tune keeps its experiments: `<cluster.storage>/<run folder name>/tune`, else `<run_dir>/tune`."""
    if recipe.cluster.storage:
        from nas.storage import tune_location

        return tune_location(recipe.cluster.storage, Path(run_dir).resolve().name)
    return str((Path(run_dir) / "tune").resolve())


def _next_session(storage: str) -> int:
    """1 + the Tune experiments (`session<N>`) already under `storage`."""
    import pyarrow.fs

    from nas.storage import filesystem

    try:
        fs, path = filesystem(storage)
        found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:
        return 1
    return 1 + sum(1 for f in found if f.base_name.startswith("session"))
