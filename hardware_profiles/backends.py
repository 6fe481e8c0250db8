"""Timing backends: how a network is timed on a device, one class per runtime, used by everything that times.

A backend turns a module into latency statistics with the project's protocol (export or capture once, warm-up runs,
the median of repeats): `OnnxCpuBackend` (onnxruntime on this CPU, fp32, batch 1) and
`hardware_profiles.cuda.TorchCudaBackend` (a CUDA graph on the GPU). Measuring a profile's tables
(`hardware_profiles.measure`), live profiles and calibration (`hardware_profiles.base`) and the check of an
exported network against its profile (`HardwareProfile.measure_exported`) all time through one of them, so a figure
means the same wherever it was taken. `BACKENDS` names them as manifests do (``backend:``); `make_backend` builds
one, `unavailable` says why one cannot run here.

Every other registered implementation (`hardware_profiles.implementations`: ``openvino-cpu``, ``torch-cpu-eager``,
``torch-cuda-compile``, ...) is a backend too (`ImplementationBackend`), so ``hardware_profiles.measure --backend
openvino-cpu`` builds a profile's tables with that engine, and a live profile can time with it.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from hardware_profiles.implementations import IMPLEMENTATIONS, Network, get_implementation

# as manifests name them (``backend:``): the two engines of the shipped profiles, then every other implementation
BACKENDS = tuple(dict.fromkeys(["onnxruntime-cpu", "torch-cuda", *IMPLEMENTATIONS.names()]))


def backend_device(backend: str) -> str:
    """``cpu`` or ``cuda``: where `backend` runs."""
    return IMPLEMENTATIONS.get(backend).device if backend in IMPLEMENTATIONS else "cpu"


def machine_info(backend: str) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"arch": platform.machine(), "system": platform.system(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    import onnxruntime
    import torch

    info.update(onnxruntime=onnxruntime.__version__, torch=torch.__version__)
    if backend_device(backend) == "cuda" and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


class OnnxCpuBackend:
    """onnxruntime CPU provider: fixed intra-op threads, sequential execution; fp32, or with ``precision="int8"``
    each network quantized first (`core.quantize`: static QDQ, per-channel int8 weights, ranges calibrated on
    seeded random inputs, which give the same graph and kernels as real images)."""

    runtime = "onnxruntime"
    PRECISIONS = ("fp32", "int8")

    def __init__(self, threads: int, warmup: int, repeats: int, precision: str = "fp32"):
        if precision not in self.PRECISIONS:
            raise InputError(f"--precision {precision}: onnxruntime-cpu measures {' or '.join(self.PRECISIONS)}")
        self.threads, self.warmup, self.repeats, self.precision = threads, warmup, repeats, precision

    @staticmethod
    def unavailable() -> str | None:
        """Why this backend cannot time here (None: it can)."""
        return None

    def describe(self) -> str:
        int8 = " int8 (QDQ, per-channel)" if self.precision == "int8" else ""
        return f"onnxruntime{int8}, {self.threads} thread{'s' if self.threads != 1 else ''}"

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def export(self, module, input_shape: tuple[int, ...], path: Path) -> Path:
        """`module` as the graph this backend times: exported fp32, and quantized for ``int8``; a network that
        names its int8 submodules (a compression policy's, `core.quantize.int8_plan`) has exactly those
        quantized, whatever the backend's precision."""
        from core.half import refuse_half_plan
        from core.quantize import int4_plan, int8_plan, quantize_onnx_int8, random_batches
        from core.timing import export_onnx

        refuse_half_plan(module, "onnxruntime-cpu")
        if int4_plan(module):
            raise InputError(f"onnxruntime-cpu has no 4-bit convolution kernels to time "
                             f"({', '.join(int4_plan(module))} with 4-bit weights); int4 units run on the FPGA "
                             "profiles")
        fp32 = export_onnx(module, input_shape, path)
        plan = int8_plan(module)
        if plan == () or (plan is None and self.precision == "fp32"):
            return fp32
        return quantize_onnx_int8(fp32, path.with_name(f"{path.stem}.int8.onnx"), random_batches(input_shape), plan,
                                  module)

    def measure(self, module, input_shape: tuple[int, ...]):
        from core.timing import measure_latency

        with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
            path = self.export(module, input_shape, Path(tmp) / "model.onnx")
            return measure_latency(path, input_shape, threads=self.threads, warmup=self.warmup,
                                   repeats=self.repeats)

    def round_medians(self, items: list[tuple[Callable[[], Any], tuple[int, ...]]], rounds: int) -> np.ndarray:
        """Median ms of every (build, input shape) in each of `rounds` interleaved rounds, (items, rounds): each
        module exported once, all sessions open, timed by `core.timing.measure_interleaved`."""
        from core.timing import measure_interleaved

        with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
            paths = [self.export(build(), shape, Path(tmp) / f"{i}.onnx") for i, (build, shape) in enumerate(items)]
            return measure_interleaved(paths, [shape for _, shape in items], threads=self.threads,
                                       warmup=self.warmup, repeats=self.repeats, rounds=rounds)


class ImplementationBackend:
    """A registered implementation (`hardware_profiles.implementations`) as a measuring backend: each module is
    prepared with the implementation's default settings for the thread budget (or `settings`), run `warmup` times,
    then `repeats` single runs are timed and the median reported, as the other backends do."""

    def __init__(self, name: str, threads: int, warmup: int, repeats: int, batch: int = 1,
                 settings: dict[str, Any] | None = None):
        self.impl = get_implementation(name, "--backend")
        self.threads, self.warmup, self.repeats, self.batch = threads, warmup, repeats, batch
        self.settings = {**self.impl.default(threads).settings, **(settings or {})}
        self.runtime = self.impl.engine

    def describe(self) -> str:
        return f"{self.impl.engine} ({', '.join(f'{k}={v}' for k, v in sorted(self.settings.items()))})"

    def version(self) -> str:
        from importlib.metadata import version

        return version(self.impl.package or "torch")

    def measure(self, module, input_shape: tuple[int, ...]):
        from core.half import refuse_half_plan
        from core.quantize import refuse_int8_plan
        from core.timing import summarise

        refuse_int8_plan(module, self.impl.name)
        refuse_half_plan(module, self.impl.name)
        with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
            runner = self.impl.prepare(Network((self.batch, *input_shape[1:]), {}, module=module), self.settings,
                                       Path(tmp))
            try:
                for _ in range(self.warmup):
                    runner()
                return summarise(runner.time(self.repeats), threads=self.threads)
            finally:
                runner.close()


def round_medians(backend, items: list[tuple[Callable[[], Any], tuple[int, ...]]], rounds: int) -> np.ndarray:
    """Median ms of every (build, shape) in each of `rounds` interleaved rounds, (items, rounds): through the
    backend's own `round_medians` where it has one (builds and exports once), else by building and measuring
    every item once per round."""
    if hasattr(backend, "round_medians"):
        return backend.round_medians(items, rounds)
    return np.array([[backend.measure(build(), shape).median_ms for build, shape in items]
                     for _ in range(rounds)]).reshape(rounds, len(items)).T


def measure_in_rounds(backend, items: list[tuple[Callable[[], Any], tuple[int, ...]]], rounds: int) -> list:
    """`LatencyStats` of every (build, shape) from `rounds` interleaved rounds: the smallest round median is the
    figure (`core.timing.rounds_summary`)."""
    from core.timing import rounds_summary

    return [rounds_summary(row, backend.repeats, getattr(backend, "threads", 0))
            for row in round_medians(backend, items, rounds)]


def exported_ms(backend, space, arch: Any, rounds: int = 2) -> float:
    """`space`'s network `arch` timed by `backend` in `rounds` interleaved rounds: the smallest round median (ms),
    what a model card shows beside the search's figure (`HardwareProfile.measure_exported`)."""
    return float(measure_in_rounds(backend, [(lambda: space.build(arch), space.input_shape(arch))], rounds)[0]
                 .median_ms)


def preheat_backend(backend: str, seconds: float, threads: int) -> None:
    """`--preheat`: load the CPU as the measurement will before timing anything (`core.timing.preheat`;
    a GPU is warmed by each item's own warm-up runs)."""
    from core.timing import preheat

    if backend_device(backend) == "cpu" and seconds > 0:
        print(f"preheating for {seconds:g} s ...", file=sys.stderr)
        preheat(seconds, threads)


def make_backend(backend: str, *, threads: int = 1, warmup: int = 10, repeats: int = 50, precision: str = "fp32",
                 batch: int = 1, channels_last: bool = False):
    """The measuring backend: onnxruntime on this CPU (``onnxruntime-cpu``, fp32, batch 1), CUDA graphs on the
    GPU (``torch-cuda``), or any other registered implementation (`ImplementationBackend`; `precision` and
    `channels_last` set its settings where it has them).

    Raises:
        InputError: an unknown backend, or one that cannot run on this machine (the line says why)."""
    why = unavailable(backend)
    if why:
        raise InputError(f"--backend {backend}: {why}")
    if backend == "onnxruntime-cpu":
        return OnnxCpuBackend(threads, warmup, repeats, precision)
    if backend != "torch-cuda":
        known = IMPLEMENTATIONS.get(backend).default(threads).settings
        given = {"precision": precision, "channels_last": channels_last}
        return ImplementationBackend(backend, threads, warmup, repeats, batch,
                                     {k: v for k, v in given.items() if k in known})
    from hardware_profiles.cuda import TorchCudaBackend

    return TorchCudaBackend(precision=precision, batch=batch, channels_last=channels_last, warmup=warmup,
                            repeats=repeats)


def unavailable(backend: str) -> str | None:
    """Why `backend` cannot time networks on this machine, or None when it can."""
    if backend == "onnxruntime-cpu":
        return OnnxCpuBackend.unavailable()
    if backend == "torch-cuda":
        from hardware_profiles.cuda import TorchCudaBackend

        return TorchCudaBackend.unavailable()
    if backend in IMPLEMENTATIONS:
        return IMPLEMENTATIONS.get(backend).unavailable()
    return f"{backend!r} cannot measure; expected one of: {', '.join(BACKENDS)}"


def measure_stable(backend, build: Callable[[], Any], shape: tuple[int, ...], max_spread: float,
                   attempts: int) -> tuple[Any, int]:
    """Measure; re-measure while the spread is above `max_spread`; keep the least noisy result."""
    best, n = None, 0
    for n in range(1, attempts + 1):
        stats = backend.measure(build(), shape)
        if best is None or stats.spread < best.spread:
            best = stats
        if stats.spread <= max_spread:
            break
    return best, n
