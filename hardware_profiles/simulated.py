"""Simulated profiles: latency and energy from an analytic model instead of a table.

A simulated profile's manifest names its model and preset in `options` (``model: fpga``, ``preset: NAME``);
`profile.latency(space, arch)` runs the model on the arch's layers and returns latency with energy.
"""
from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from hardware_profiles.base import Estimate, HardwareProfile
from hardware_profiles.manifest import Manifest, ManifestError


class SimulatedProfile(HardwareProfile):
    """A profile whose figures come from `hardware_profiles.fpga` (the only model so far).

    Args:
        manifest: the profile's manifest (`options.preset` names the accelerator configuration).
        folder: its folder.
    """

    cheap = True

    def __init__(self, manifest: Manifest, folder: Path):
        from hardware_profiles.fpga import get_fpga_config, simulator

        source = Path(folder) / "manifest.yaml"
        model = manifest.options.get("model", "fpga")
        if model != "fpga":
            raise ManifestError(f"{source}: options.model: unknown simulator {model!r}; expected one of: fpga")
        self.manifest, self.name = manifest, manifest.ref
        self.description = f"{manifest.device} ({manifest.runtime}, simulated)"
        try:
            self.config = get_fpga_config(manifest.options.get("preset", manifest.name))
        except ValueError as err:
            raise ManifestError(f"{source}: options.preset: {err}") from None
        self.simulate = simulator(self.config)

    def latency(self, space, arch: Hashable) -> Estimate:
        result = self.simulate(space.layer_costs(arch))
        return Estimate(result.latency_ms, energy_mj=result.energy_mj)

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        return float(self.latency(space, arch).median_ms), "simulated (the profile is a simulator)"
