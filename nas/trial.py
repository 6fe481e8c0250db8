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
from nas.latency_sources import latency_figures
from nas.objectives import latency_violation, shrunk_batch, static_figures
from nas.recipe import Recipe


def weights_path(run_dir: Path, arch: str) -> Path:
    """Where the trained weights of `arch` are kept during a run."""
    return Path(run_dir) / "weights" / f"{hashlib.sha1(arch.encode()).hexdigest()[:16]}.safetensors"


def init_seed(seed: int, arch: str) -> int:
    """Seed of `arch`'s initial weights: fixed by the run's seed and the arch, whatever ran before it."""
    return (seed * 1_000_003 + int(hashlib.sha1(arch.encode()).hexdigest()[:8], 16)) % 2**31


def build_seeded(space: Any, arch: Any, seed: int) -> Any:
    """`space.build(arch)` with initial weights that depend only on (seed, the network: `space.init_string(arch)`),
    not on the global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed, space.init_string(arch)))
        return space.build(arch)


def train_candidate(space: Any, evaluator: Any, arch: Any, seed: int,
                    trained: TrainedNetworks | None = None) -> tuple[Any, dict[str, Any]]:
    """`arch` built from its seeded weights and trained by `evaluator`: (the trained network, its metrics).

    A candidate whose compression policy prunes (`search_spaces.policy`: a keep ratio below 1) is made as a
    pruning pipeline makes it, within the same training budget (`Evaluator.evaluate_pruned`): its dense network
    (`space.dense(arch)`, seeded as every compression of that network is: `SearchSpace.init_string`) is trained
    (`Evaluator.train_dense`), pruned to the keep ratios (`space.prune`), then fine-tuned
    (`Evaluator.fine_tune_pruned`); its metrics add ``accuracy_unpruned``.

    Args:
        trained: where the training of the dense network is kept for the other policies of the same network
            (`TrainedNetworks`; a policy search's run keeps it in ``trained/``): given, a dense network trained
            by an earlier candidate is loaded rather than trained again, and ``train_seconds`` counts only the
            training this call did.
    """
    shape = space.input_shape(arch)
    dense = space.dense(arch) if hasattr(space, "dense") else arch
    pruned = dense != arch
    model = build_seeded(space, dense, seed)
    if pruned and not _splits_pruning(evaluator):   # a plug-in with only the one-step hook: no shared training
        return model, evaluator.evaluate_pruned(model, shape[-1], lambda m: space.prune(m, arch))
    phase = "dense" if pruned else "full"
    metrics = trained.load(model, space, dense, phase) if trained is not None else None
    if metrics is None:
        metrics = evaluator.train_dense(model, shape[-1]) if pruned else evaluator.evaluate(model, shape[-1])
        if trained is not None:
            trained.save(model, metrics, space, dense, phase)
    if not pruned:
        return model, metrics
    return model, evaluator.fine_tune_pruned(model, shape[-1], lambda m: space.prune(m, arch), metrics)


def _splits_pruning(evaluator: Any) -> bool:
    """Whether `evaluator` implements the two steps of `Evaluator.evaluate_pruned` (`train_dense`,
    `fine_tune_pruned`), or only the one-step hook an older plug-in may override."""
    from nas.evaluation.base import Evaluator

    return type(evaluator).train_dense is not Evaluator.train_dense


class TrainedNetworks:
    """The trained networks of a policy search, by network, shared by its compression policies.

    Every policy of one network starts from the same seeded weights (`SearchSpace.init_string`) and a
    deterministic evaluator trains them alike, so the fp32 network of a candidate that prunes nothing, and the
    dense phase of one that prunes, are the same for every policy of that network: trained once here, then loaded
    (an evolution's child that changes only a precision costs its quantization, not a training). Kept as
    safetensors with the metrics in the header, one file per (space with its options, network, seed, evaluator
    options, phase), written atomically, so concurrent trials and resumed runs share them safely.

    Args:
        folder: where the files go (``<run>/trained``).
        evaluator: the evaluator that trains them (its options and seed are part of each file's key).
        seed: the run's seed (initial weights).
    """

    def __init__(self, folder: Path, evaluator: Any, seed: int):
        self.folder, self.seed = Path(folder), seed
        self.training = f"{type(evaluator).__name__}|{evaluator.seed}|{evaluator.options.model_dump_json()}"

    def path(self, space: Any, dense: Any, phase: str) -> Path:
        """The file of `dense`'s network trained for `phase` (``full``: `Evaluator.evaluate`; ``dense``:
        `Evaluator.train_dense`)."""
        key = (f"{space.name}|{space.options.model_dump_json()}|{space.num_classes}|{space.init_string(dense)}|"
               f"{self.seed}|{phase}|{self.training}")
        return self.folder / f"{phase}-{hashlib.sha1(key.encode()).hexdigest()[:20]}.safetensors"

    def load(self, model: Any, space: Any, dense: Any, phase: str) -> dict[str, Any] | None:
        """Its metrics, with `model` loaded with the trained weights, or None (`model` untouched) where no earlier
        candidate trained it."""
        import json

        from safetensors import safe_open

        path = self.path(space, dense, phase)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            metrics = json.loads(f.metadata()["metrics"])
            model.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
        return {**metrics, "train_seconds": 0.0}   # this candidate trained nothing

    def save(self, model: Any, metrics: dict[str, Any], space: Any, dense: Any, phase: str) -> None:
        import json

        from nas.export import save_weights

        save_weights(model, self.path(space, dense, phase), {"metrics": json.dumps(metrics, default=float),
                                                              "network": space.init_string(dense)})


def model_with_weights(space: Any, evaluator: Any, arch: Any, seed: int, weights: Path | None) -> Any:
    """The network `arch` in eval mode with the weights saved at `weights`; where there are none (trained on
    another node of a cluster without a shared file system, or a release that names none) and the evaluator
    trains, trained here as the search trained it (`train_candidate`); else its seeded initial weights."""
    from nas.export import load_weights

    if weights is None and evaluator.trains:
        model, _ = train_candidate(space, evaluator, arch, seed)
    else:
        model = build_seeded(space, arch, seed)
        if weights is not None:
            load_weights(model, weights)
    return model.eval()


def trained_networks(ctx: RunContext, evaluator: Any = None) -> TrainedNetworks | None:
    """The run's `TrainedNetworks` (``<run>/trained``) of `evaluator` (default the run's) where its genotypes carry
    a compression policy (several candidates per network), else None."""
    if not hasattr(ctx.space, "dense") or ctx.run_dir is None:
        return None
    return TrainedNetworks(Path(ctx.run_dir) / "trained", evaluator or ctx.evaluator, ctx.recipe.search.seed)


def at_batch(evaluator: Any, batch: int | None) -> Any:
    """`evaluator`, or a copy training at `batch` where that is below its ``batch_size`` (the datasets shared)."""
    own = getattr(evaluator.options, "batch_size", None)
    if batch is None or not isinstance(own, int) or batch >= own:
        return evaluator
    import copy

    out = copy.copy(evaluator)
    out.options = evaluator.options.model_copy(update={"batch_size": int(batch)})
    return out


def trial_evaluator(ctx: RunContext, arch: Any) -> Any:
    """The evaluator that trains `arch`: the run's, at the smaller batch size ``constraints.on_train_memory:
    shrink`` gives a candidate whose training step would not fit (`nas.objectives.memory_check`), so the search,
    the export and the final training all train it as it fits."""
    return at_batch(ctx.evaluator, shrunk_batch(ctx.space, ctx.recipe.constraints, arch))


def held_out_of(ctx: RunContext, model: Any, arch: Any) -> dict[str, Any] | None:
    """`arch`'s trained `model` scored on the run evaluator's held-out images, as it ships under the recipe's
    compression (`nas.compression.held_out_scores`); None where the evaluator has none (only a training evaluator
    has any). What the export, final training and the zoo quote beside the search's own accuracy."""
    from nas.compression import held_out_scores

    r = ctx.recipe
    return held_out_scores(model, ctx.evaluator, tuple(ctx.space.input_shape(arch)), compression=r.compression,
                           quantizer=r.quantizer, threads=getattr(ctx.evaluator.options, "threads", 1))


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
        fields, violation = static_figures(ctx.space, ctx.recipe.constraints, arch)
        row.update(fields)
        latencies, fields = latency_figures(ctx.latency, ctx.space, arch)
        row.update(fields)
        violation = violation or latency_violation(ctx.recipe.constraints, latencies, fields)
        row.update(feasible=violation is None, reason=violation)
        if violation is None or ctx.recipe.search.train_infeasible:
            if ctx.evaluator.trains:
                evaluator = at_batch(ctx.evaluator, row.get("train_batch"))
                model, metrics = train_candidate(ctx.space, evaluator, arch, ctx.recipe.search.seed,
                                                 trained_networks(ctx, evaluator))
                shape = ctx.space.input_shape(arch)
                if ctx.recipe.compression != "none" and math.isfinite(metrics["accuracy"]):
                    from nas.compression import int8_scores   # scored as it will ship: accuracy is int8's

                    scores = int8_scores(model, evaluator, tuple(shape), metrics["accuracy"],
                                         getattr(evaluator.options, "threads", 1), ctx.recipe.quantizer)
                    qat_seconds = scores.pop("qat_seconds", 0.0)   # quantization-aware fine-tuning: training too
                    metrics = {**metrics, **scores, "train_seconds": metrics.get("train_seconds", 0.0) + qat_seconds}
            else:
                metrics = ctx.evaluator.estimate(arch_string)
            if not math.isfinite(metrics["accuracy"]):
                raise FloatingPointError(f"non-finite accuracy {metrics['accuracy']}")
            row.update(accuracy=float(metrics["accuracy"]), train_seconds=metrics.get("train_seconds"))
            row.update({k: float(metrics[k]) for k in ctx.metrics if k in metrics})
            if ctx.evaluator.trains:
                save_weights(model, weights_path(ctx.run_dir, arch_string), {"arch": arch_string})
        row["status"] = "ok" if violation is None else "infeasible"
    except Exception as err:  # noqa: BLE001 - a candidate's failure is data, not a crash of the search
        row.update(status="failed", feasible=False, accuracy=None, error=f"{type(err).__name__}: {err}"[:500])
    row["eval_seconds"] = time.perf_counter() - start
    return row


_CONTEXTS: dict[int, Any] = {}


def tune_trainable(config: dict[str, Any], recipe: Recipe, run_dir: str, files: dict[str, bytes] | None = None) -> None:
    """Ray Tune function trainable: evaluates `config["arch"]` and reports its row once, with the Ray node that ran
    it (`node`, `node_ip`).

    Args:
        files: the driver's run files a worker needs (`run_files`: the latency predictors), used where `run_dir`
            is not on this node's file system.
    """
    import ray
    from ray import tune

    key = hash((recipe.model_dump_json(), run_dir))
    if key not in _CONTEXTS:   # workers are reused across trials: build datasets/profiles once
        _CONTEXTS.clear()
        folder = worker_run_dir(Path(run_dir), files or {})
        timeout = recipe.search.trial_timeout
        _CONTEXTS[key] = (TimedEvaluation(recipe, folder, timeout) if timeout
                          else (lambda arch, ctx=RunContext(recipe, folder): evaluate_candidate(ctx, arch)))
    row = _CONTEXTS[key](config["arch"])
    context = ray.get_runtime_context()
    tune.report({**row, "node": context.get_node_id()[:12], "node_ip": ray.util.get_node_ip_address()})


def run_files(run_dir: Path) -> dict[str, bytes]:
    """The files of `run_dir` a trial worker needs, by relative path: the latency predictors the driver built
    (models, meta, calibration timings). Shipped with the trainable, so a node without the run directory on its
    file system neither misses them nor measures the profile again."""
    root = Path(run_dir)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "predictors").rglob("*")) if p.is_file()}


def worker_run_dir(run_dir: Path, files: dict[str, bytes]) -> Path:
    """The run directory a trial worker uses: `run_dir` where this node sees the run (a shared file system, or
    the driver's own node), else a node-local folder holding `files` (`run_files`). Weights trained there stay on
    the node: the exported best network is then trained again by the driver (`nas.pipeline.export_best`)."""
    if (run_dir / "state.json").is_file():
        return run_dir
    import tempfile

    digest = hashlib.sha1(str(run_dir).encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
    local = Path(tempfile.gettempdir()) / "hwnas-worker" / digest.hexdigest()[:16]
    for name, data in files.items():
        path = local / name
        if not path.is_file() or path.read_bytes() != data:
            from core.io import atomic_write

            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
    return local


class TimedEvaluation:
    """Candidates evaluated in a child process that can be stopped: one still running after `timeout` seconds is
    killed and recorded as failed, and the next candidate gets a fresh process (`search.trial_timeout`).

    A hung evaluation cannot be interrupted from inside its own process (a stuck kernel, a deadlocked loader), so
    the run context lives in the child (built once, as in-process trials build theirs) and only an arch string and
    a result row cross the pipe.
    """

    def __init__(self, recipe: Recipe, run_dir: Path, timeout: float):
        self.recipe, self.run_dir, self.timeout = recipe, run_dir, timeout
        self.proc, self.conn = None, None

    def _start(self) -> None:
        import multiprocessing as mp

        # never fork this process (it runs Ray's and torch's threads): children fork from a clean server process
        # that has imported the project once, so a child replacing a killed one starts in a fraction of a second
        spawn = mp.get_context("forkserver")
        spawn.set_forkserver_preload(["nas.trial"])
        self.conn, child = spawn.Pipe()
        self.proc = spawn.Process(target=_serve, args=(child, self.recipe, str(self.run_dir)), daemon=True,
                                  name="hwnas-evaluation")
        self.proc.start()
        child.close()

    def __call__(self, arch: str) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        start = time.perf_counter()
        self.conn.send(arch)
        started = self._receive(arch, start, deadline=None)   # building the context is not the trial's time
        if started != "evaluating":
            return started
        return self._receive(arch, start, deadline=time.perf_counter() + self.timeout)

    def _receive(self, arch: str, start: float, deadline: float | None) -> Any:
        """The child's next message, or a failed row if it dies or the deadline passes (it is then killed)."""
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                break
            if deadline is not None and time.perf_counter() > deadline:
                self.proc.kill()
                self.proc.join()
                return self._failed(arch, start, f"TimeoutError: the trial ran past search.trial_timeout "
                                                 f"({self.timeout:g} s) and was stopped")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join()
            return self._failed(arch, start, "ChildProcessError: the evaluation process died (exit code "
                                             f"{self.proc.exitcode})")

    @staticmethod
    def _failed(arch: str, start: float, error: str) -> dict[str, Any]:
        return {"arch": arch, "status": "failed", "feasible": False, "accuracy": None, "error": error,
                "eval_seconds": time.perf_counter() - start}


def _serve(conn, recipe: Recipe, run_dir: str) -> None:
    """The child of `TimedEvaluation`: build the run context, then evaluate each arch string it is sent."""
    ctx = None
    while True:
        try:
            arch = conn.recv()
        except EOFError:
            return
        if ctx is None:
            ctx = RunContext(recipe, Path(run_dir))
        conn.send("evaluating")
        conn.send(evaluate_candidate(ctx, arch))
