"""Hardware profiles: where latency figures come from, loaded by name.

Every profile answers one question through one interface, `profile.latency(space, arch)` returning an object with
`median_ms` (and `energy_mj` where the profile models energy), so a search does not care whether the figure was
measured live, looked up in a measured table, simulated or predicted.

- Live profiles (registered classes): ``local-cpu`` (onnxruntime CPU, 1 thread) and ``local-cpu-2t`` (2 threads),
  measured for each candidate on the machine running the search.
- Versioned profiles (manifests, see `hardware_profiles.manifest`): measured or imported lookup tables, and
  simulators. ``name`` loads the newest version, ``name@version`` a given one.

A profile that cannot be used (unknown name, unreadable manifest, table refused by its checksum) is an `InputError`
(a `ValueError`) with one line naming the file or the name; a damaged manifest only fails the profile it belongs to.
"""
from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from nas.errors import InputError
from nas.registry import Registry

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


def profile_names() -> list[str]:
    """Live profiles and every profile with a readable manifest (see `hardware_profiles.manifest.broken` for the
    manifests left out)."""
    from hardware_profiles.manifest import discover

    return sorted(set(PROFILES.names()) | set(discover()))


def has_profile(ref: str) -> bool:
    """Whether `ref` (a name or name@version) names a profile.

    Raises:
        ManifestError: it names a profile whose manifest cannot be read (so the user sees why, not "unknown").
    """
    from hardware_profiles.manifest import resolve

    return ref in PROFILES or resolve(ref) is not None


def get_profile(ref: str) -> HardwareProfile:
    """Load a profile by name (newest version) or name@version.

    Raises:
        InputError: unknown profile (the message lists the valid names); `ManifestError` for its unreadable
            manifest; `IntegrityError` for a table that is not the one its manifest recorded.
    """
    from hardware_profiles.manifest import read_manifest, resolve

    if ref in PROFILES:
        return PROFILES.get(ref)()
    folder = resolve(ref)
    if folder is None:
        raise InputError(f"unknown hardware profile {ref!r}; expected one of: {', '.join(profile_names())}")
    manifest = read_manifest(folder / "manifest.yaml")
    if manifest.kind == "simulated":
        from hardware_profiles.simulated import SimulatedProfile

        return SimulatedProfile(manifest, folder)
    from hardware_profiles.lookup import TableProfile

    return TableProfile(manifest, folder)
