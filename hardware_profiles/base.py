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

    @abstractmethod
    def latency(self, space, arch: Hashable):
        """Latency of `arch` (a genotype of `space`) on this profile's device: an object with `median_ms`."""


class LiveOnnxCpuProfile(HardwareProfile):
    """Measures each network live with onnxruntime on this machine's CPU.

    Method: export to ONNX (fp32, batch 1), `warmup` runs, then the median of `repeats` timed runs with fixed
    intra-op threads and sequential execution.
    """

    threads = 1

    def __init__(self, warmup: int = 10, repeats: int = 50):
        self.warmup, self.repeats = warmup, repeats

    def latency(self, space, arch: Hashable):
        from core.timing import measure_module_latency   # torch: only when a network is timed

        return measure_module_latency(space.build(arch), space.input_shape(arch), threads=self.threads,
                                      warmup=self.warmup, repeats=self.repeats)


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
