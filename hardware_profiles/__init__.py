"""Hardware profiles: where latency figures come from, loaded by name.

Every profile answers one question through one interface, `profile.latency(space, arch) -> LatencyStats`, so a
search does not care whether the figure was measured live, looked up in a measured table, simulated or predicted.
This package registers the live profiles of the machine the search runs on:

- ``local-cpu``: onnxruntime's CPU provider, 1 intra-op thread, measured live for each candidate.
- ``local-cpu-2t``: the same with 2 threads.
"""
from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Hashable

from nas.registry import Registry

PROFILES: Registry[type[HardwareProfile]] = Registry("hardware profile")
register_profile = PROFILES.register


class HardwareProfile(ABC):
    """A latency source for one target device."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def latency(self, space, arch: Hashable):
        """`LatencyStats` of `arch` (a genotype of `space`) on this profile's device."""


class LiveOnnxCpuProfile(HardwareProfile):
    """Measures each network live with onnxruntime on this machine's CPU.

    Method: export to ONNX (fp32, batch 1), `warmup` runs, then the median of `repeats` timed runs with fixed
    intra-op threads and sequential execution.
    """

    threads = 1

    def __init__(self, warmup: int = 10, repeats: int = 50):
        self.warmup, self.repeats = warmup, repeats

    def latency(self, space, arch: Hashable):
        from nas.evaluation.latency import export_onnx, measure_latency

        shape = space.input_shape(arch)
        with tempfile.TemporaryDirectory(prefix="hwnas-lat-") as tmp:
            path = export_onnx(space.build(arch), shape, Path(tmp) / "model.onnx")
            return measure_latency(path, shape, threads=self.threads, warmup=self.warmup, repeats=self.repeats)


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


def get_profile(name: str) -> HardwareProfile:
    """Instantiate a registered profile by name (`ValueError` listing valid names if unknown)."""
    return PROFILES.get(name)()
