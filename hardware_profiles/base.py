"""The hardware-profile interface, its registry and the live CPU profiles.

A profile answers `profile.latency(space, arch)` with an object carrying `median_ms` (an `Estimate` when the
figure was not timed directly). Live profiles are registered classes; versioned ones (measured or imported
tables, simulators) are loaded from manifests by `hardware_profiles.get_profile`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass

from core.registry import Registry
from hardware_profiles.backends import OnnxCpuBackend, exported_ms

PROFILES: Registry[type[HardwareProfile]] = Registry("hardware profile")
register_profile = PROFILES.register


@dataclass(frozen=True)
class Estimate:
    """A latency figure that was not timed directly (table sum, simulation)."""

    median_ms: float
    energy_mj: float | None = None
    spread: float = 0.0


class HardwareProfile(ABC):
    """A latency source for one target device."""

    name: str = ""
    description: str = ""
    cheap: bool = False
    """Whether a figure costs (almost) nothing (a table sum, a simulation), so a search can check it before a
    trial is spent; a profile that times every network is not."""

    @abstractmethod
    def latency(self, space, arch: Hashable):
        """Latency of `arch` (a genotype of `space`) on this profile's device: an object with `median_ms`."""

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        """(ms or None, how) of the exported network measured on this profile's device from this machine, for a
        model card to show beside the search's figure (the smallest median of `rounds` interleaved rounds); None,
        with the reason, where this machine cannot."""
        return None, f"not measured: no way to measure {type(self).__name__} here"


class LiveOnnxCpuProfile(HardwareProfile):
    """Measures each network live on this machine's CPU, with onnxruntime unless another implementation is named.

    Method: export to ONNX (fp32, batch 1), `warmup` runs, then the median of `repeats` timed runs with fixed
    intra-op threads and sequential execution. With `implementation` (a CPU implementation of
    `hardware_profiles.implementations`, e.g. ``openvino-cpu``), the same protocol runs on that engine with its
    default settings for the profile's threads: what a latency constraint's ``implementation`` asks for.
    """

    threads = 1
    precision = "fp32"   # or int8: onnxruntime times each network quantized (`OnnxCpuBackend`)

    def __init__(self, warmup: int = 10, repeats: int = 50, implementation: str = "onnxruntime-cpu"):
        from hardware_profiles.backends import make_backend

        self.warmup, self.repeats, self.implementation = warmup, repeats, implementation
        self.backend = (OnnxCpuBackend(self.threads, warmup, repeats, self.precision)
                        if implementation == "onnxruntime-cpu" else
                        make_backend(implementation, threads=self.threads, warmup=warmup, repeats=repeats))
        if implementation != "onnxruntime-cpu":
            self.description = f"{self.description.split(',')[0]}, {self.backend.describe()}, measured live"

    def latency(self, space, arch: Hashable):
        return self.backend.measure(space.build(arch), space.input_shape(arch))

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        return exported_ms(self.backend, space, arch, rounds), \
            f"measured live ({self.description}; smallest median of {rounds} rounds)"


@register_profile("local-cpu")
class LocalCpu1T(LiveOnnxCpuProfile):
    name = "local-cpu"
    description = "this machine's CPU, onnxruntime, 1 thread, measured live"
    threads = 1


@register_profile("local-cpu-2t")
class LocalCpu2T(LiveOnnxCpuProfile):
    name = "local-cpu-2t"
    description = "this machine's CPU, onnxruntime, 2 threads, measured live"
    threads = 2


@register_profile("local-cpu-int8")
class LocalCpuInt8(LiveOnnxCpuProfile):
    """What a network costs on this CPU once quantized to int8 (``compression: int8`` ships it so): onnxruntime,
    1 thread, static QDQ with per-channel weights (`core.quantize`)."""

    name = "local-cpu-int8"
    description = "this machine's CPU, onnxruntime int8 (QDQ, per-channel), 1 thread, measured live"
    threads = 1
    precision = "int8"
