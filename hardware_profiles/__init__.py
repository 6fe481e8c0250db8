"""Hardware profiles: where latency figures come from, loaded by name.

Every profile answers one question through one interface, `profile.latency(space, arch)` returning an object with
`median_ms` (and `energy_mj` where the profile models energy), so a search does not care whether the figure was
measured live, looked up in a measured table, simulated or predicted.

- Live profiles (registered classes): ``local-cpu`` (onnxruntime CPU, 1 thread), ``local-cpu-2t`` (2 threads) and
  ``local-cpu-int8`` (1 thread, each network quantized to int8 first), measured for each candidate on the machine
  running the search.
- Versioned profiles (manifests, see `hardware_profiles.manifest`): measured or imported lookup tables, and
  simulators. ``name`` loads the newest version, ``name@version`` a given one.

A profile that cannot be used (unknown name, unreadable manifest, table refused by its checksum) is an `InputError`
(a `ValueError`) with one line naming the file or the name; a damaged manifest only fails the profile it belongs to.
"""
from __future__ import annotations

from core.errors import InputError
from hardware_profiles.base import (PROFILES, Estimate, HardwareProfile, LiveOnnxCpuProfile, LocalCpu1T, LocalCpu2T,
                                    register_profile)
from hardware_profiles.lookup import TableProfile
from hardware_profiles.manifest import discover, read_manifest, resolve
from hardware_profiles.simulated import SimulatedProfile

__all__ = ["PROFILES", "Estimate", "HardwareProfile", "LiveOnnxCpuProfile", "LocalCpu1T", "LocalCpu2T",
           "SimulatedProfile", "TableProfile", "get_profile", "has_profile", "profile_names", "register_profile"]


def profile_names() -> list[str]:
    """Live profiles and every profile with a readable manifest (see `hardware_profiles.manifest.broken` for the
    manifests left out)."""
    return sorted(set(PROFILES.names()) | set(discover()))


def has_profile(ref: str) -> bool:
    """Whether `ref` (a name or name@version) names a profile.

    Raises:
        ManifestError: it names a profile whose manifest cannot be read (so the user sees why, not "unknown").
    """
    return ref in PROFILES or resolve(ref) is not None


def get_profile(ref: str) -> HardwareProfile:
    """Load a profile by name (newest version) or name@version.

    Raises:
        InputError: unknown profile (the message lists the valid names); `ManifestError` for its unreadable
            manifest; `IntegrityError` for a table that is not the one its manifest recorded.
    """
    if ref in PROFILES:
        return PROFILES.get(ref)()
    folder = resolve(ref)
    if folder is None:
        raise InputError(f"unknown hardware profile {ref!r}; expected one of: {', '.join(profile_names())}")
    manifest = read_manifest(folder / "manifest.yaml")
    if manifest.kind == "simulated":
        return SimulatedProfile(manifest, folder)
    return TableProfile(manifest, folder)
