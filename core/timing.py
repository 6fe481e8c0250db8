"""ONNX export and onnxruntime CPU latency measurement.

Latency is measured on the exported graph, not on eager PyTorch, because deployment runs the exported graph and
onnxruntime's fusions (Conv+BN+activation) change the ranking of candidates. Sessions are pinned to a fixed thread
count with sequential execution so that repeated measurements of one network agree.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from core.io import atomic_write


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated single-input inference timings, in milliseconds.

    Attributes:
        median_ms: median run time; the figure to report.
        mean_ms: mean run time.
        p10_ms: 10th percentile.
        p90_ms: 90th percentile.
        spread: ``(p90_ms - p10_ms) / median_ms``, a unit-free measure of how noisy the measurement was.
        repeats: number of timed runs.
        threads: onnxruntime intra-op threads used.
    """

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    repeats: int
    threads: int


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Swallow Python-level stdout and warnings (the exporters print progress and deprecation notices)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        yield sink


def _export_to(model: nn.Module, dummy: torch.Tensor, path: Path, opset: int | None, dynamo: bool) -> None:
    """One `torch.onnx.export` call with the chosen exporter, writing a single self-contained file."""
    kwargs: dict = {"dynamo": dynamo, "input_names": ["input"], "output_names": ["output"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        # The dynamo exporter otherwise puts the weights in a side file, which would escape the atomic rename.
        kwargs.update(external_data=False, verbose=False)
    with _quiet():
        torch.onnx.export(model, (dummy,), str(path), **kwargs)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, opset: int | None = None) -> Path:
    """Export `model` (in eval mode) to one ONNX file, atomically and quietly.

    The legacy TorchScript exporter (``dynamo=False``) is tried first because it is many times faster (README,
    "Measured design decisions"), and every network of a profile is exported. The legacy exporter is deprecated,
    so if it fails or has been removed the dynamo exporter is used instead.

    Args:
        model: network to export; its training/eval mode is restored afterwards.
        input_shape: full input shape including batch, e.g. ``(1, 3, 224, 224)``.
        path: destination ``.onnx`` file; its parent directory is created if needed.
        opset: ONNX opset version, or None for the exporter's default.

    Returns:
        The path written.

    Raises:
        RuntimeError: both exporters failed; the message carries both causes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(input_shape, dtype=torch.float32)
    was_training = model.training
    model.eval()
    def write(tmp: Path) -> None:
        try:
            _export_to(model, dummy, tmp, opset, dynamo=False)
        except Exception as legacy_exc:  # noqa: BLE001 - any failure means: try the other exporter
            try:
                _export_to(model, dummy, tmp, opset, dynamo=True)
            except Exception as dynamo_exc:
                raise RuntimeError(
                    f"ONNX export to {path} failed with both exporters: legacy: {legacy_exc!r}; dynamo: {dynamo_exc!r}"
                ) from dynamo_exc

    try:
        atomic_write(path, write)
    finally:
        model.train(was_training)
    return path


def ort_session_options(threads: int, opt_level: str = "all", execution_mode: str = "sequential"):
    """onnxruntime `SessionOptions`: `threads` intra-op threads (and inter-op ones when parallel), the graph
    optimisation level (basic/extended/all); the profiles' protocol is the default (all, sequential). The engine
    selection's onnxruntime candidates and their plans' snippets set the same (`hardware_profiles.implementations`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[opt_level]
    parallel = execution_mode == "parallel"
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads if parallel else 1
    opts.log_severity_level = 3  # errors only: keep the optimiser's notes off the console
    return opts


def _session(onnx_path: str | Path, threads: int) -> onnxruntime.InferenceSession:  # noqa: F821 - lazy import
    """A CPU onnxruntime session pinned to `threads` intra-op threads, sequential, fully optimised."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), sess_options=ort_session_options(threads),
                                providers=["CPUExecutionProvider"])


def summarise(times_s: list[float], threads: int) -> LatencyStats:
    """`LatencyStats` from per-run times in seconds."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p10, median, p90 = (float(v) for v in np.percentile(ms, [10, 50, 90]))
    return LatencyStats(
        median_ms=median,
        mean_ms=float(ms.mean()),
        p10_ms=p10,
        p90_ms=p90,
        spread=(p90 - p10) / median if median > 0 else 0.0,
        repeats=len(ms),
        threads=threads,
    )


def measure_latency(
    onnx_path: str | Path,
    input_shape: tuple[int, ...],
    *,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    min_seconds: float = 0.0,
) -> LatencyStats:
    """Time single inferences of an ONNX model with onnxruntime on CPU.

    Each run is timed on its own with `time.perf_counter`; the median is the robust figure to report, and
    `spread` says how far to trust it.

    Args:
        onnx_path: model file.
        input_shape: full input shape including batch; the input is fixed random float32 data.
        threads: onnxruntime intra-op threads.
        warmup: untimed runs first (allocations, caches, lazy kernel selection).
        repeats: minimum number of timed runs.
        min_seconds: keep timing past `repeats` until this much wall time has been spent timing, so that very
            fast networks still get a stable median.

    Returns:
        The timing summary.
    """
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, threads >= 1; got {repeats}, {warmup}, {threads}")
    session = _session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats or spent < min_seconds:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return summarise(times, threads)


def measure_interleaved(onnx_paths: list[str | Path], input_shapes: list[tuple[int, ...]], *, threads: int = 1,
                        warmup: int = 10, repeats: int = 30, rounds: int = 5,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Median ms of every model in each of `rounds` interleaved rounds: array (models, rounds).

    One session per model stays open; each round times every model in turn (`repeats` runs, after `warmup` runs
    in the first round). Machine drift (a neighbour's load, frequency changes) then lands on all models alike
    instead of on whichever was being timed when it happened; the smallest median over rounds is the figure that
    repeats on a shared or virtual machine, and the spread across rounds is the measurement's noise.

    Args:
        progress: called with 1 after each model's timing (e.g. a tqdm bar's `update`).
    """
    if rounds < 1 or repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need rounds, repeats, threads >= 1 and warmup >= 0; got {rounds}, {repeats}, {threads}, "
                         f"{warmup}")
    sessions = [_session(p, threads) for p in onnx_paths]
    rng = np.random.default_rng(0)
    feeds = [{s.get_inputs()[0].name: rng.standard_normal(shape, dtype=np.float32)}
             for s, shape in zip(sessions, input_shapes)]
    out = np.empty((len(sessions), rounds))
    for r in range(rounds):
        for i, (session, feed) in enumerate(zip(sessions, feeds)):
            for _ in range(warmup if r == 0 else 0):
                session.run(None, feed)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - start)
            out[i, r] = float(np.median(times)) * 1e3
            if progress is not None:
                progress(1)
    return out


def preheat(seconds: float, threads: int = 1) -> None:
    """Keep `threads` cores as busy as a measurement does for `seconds` (onnxruntime running a small convolution
    net) before timing, so that what is timed runs in the machine's sustained state.

    Some machines run faster for their first minutes under load (README, "Measured design decisions"): tables
    measured partly cold and partly warm disagree with themselves, and a network timed from idle disagrees with
    a profile timed under sustained load. Preheating is meant to put both in the sustained state; it does not
    close the whole gap, so judge a profile against timings taken the same way (`bench/timm_models.py` prints a
    `rescaled` figure for that)."""
    if seconds <= 0:
        return
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)).eval()
    with tempfile.TemporaryDirectory(prefix="nas-preheat-") as tmp:
        session = _session(export_onnx(model, (1, 3, 64, 64), Path(tmp) / "preheat.onnx"), threads)
        feed = {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), dtype=np.float32)}
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            session.run(None, feed)


def rounds_summary(round_medians_ms: np.ndarray, repeats: int, threads: int) -> LatencyStats:
    """`LatencyStats` of one model timed in several rounds (`measure_interleaved`'s row): the smallest round
    median is the figure (what repeats on a shared machine), the others say how far it moved: `mean_ms` is the
    mean of the round medians, `p10_ms`/`p90_ms` the smallest and largest, `spread` their difference over the
    smallest."""
    ms = np.asarray(round_medians_ms, dtype=np.float64)
    low, high = float(ms.min()), float(ms.max())
    return LatencyStats(median_ms=low, mean_ms=float(ms.mean()), p10_ms=low, p90_ms=high,
                        spread=(high - low) / low if low > 0 else 0.0, repeats=repeats * len(ms), threads=threads)


def measure_module_latency(model: nn.Module, input_shape: tuple[int, ...], **kwargs) -> LatencyStats:
    """Export `model` to a temporary ONNX file and time it with `measure_latency`.

    Args:
        model: network to measure.
        input_shape: full input shape including batch.
        **kwargs: passed to `measure_latency` (threads, warmup, repeats, min_seconds).

    Returns:
        The timing summary.
    """
    with tempfile.TemporaryDirectory(prefix="nas-latency-") as tmp:
        path = export_onnx(model, input_shape, Path(tmp) / "model.onnx")
        return measure_latency(path, input_shape, **kwargs)
