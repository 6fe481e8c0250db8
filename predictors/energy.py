"""Energy per inference predicted for any network of a space from a profile's energy table (issue 22).

A measured profile's energy table (``energy.csv``: `hardware_profiles.energy`, NVML on a GPU) holds whole networks,
not blocks: a counter integrates over many runs and cannot tell the layers of one apart. So the predictor is
network-level: LightGBM on the log of the analytic figures energy follows (FLOPs, parameters, the activation peak
and the bytes every layer reads and writes, from `predictors.memory`'s walk) and the space's encoding of the
architecture, fitted to log energy. A recipe's ``max_energy_mj`` on such a profile trains it from the table when the
run starts (deterministic: seeded, one thread), so the driver and every trial worker hold the same model.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def energy_features(space, archs: Sequence[Hashable]) -> np.ndarray:
    """Per arch: log FLOPs, log parameters, log analytic activation peak, log activation bytes moved (every layer's
    input and output), then the space's encoding."""
    from predictors.memory import inference_memory

    rows = []
    for arch in archs:
        layers = space.layer_costs(arch)
        moved = sum(int(np.prod(lc.key.in_shape)) + int(np.prod(lc.key.out_shape)) for lc in layers)
        rows.append([np.log1p(sum(lc.macs for lc in layers)), np.log1p(sum(lc.params for lc in layers)),
                     np.log(inference_memory(space, arch).activation_bytes), np.log1p(moved)])
    return np.hstack([np.asarray(rows), np.asarray(space.encode(list(archs)), dtype=np.float64)])


class EnergyPredictor:
    """Energy per inference (mJ) of a space's networks, fitted to measured ones (see the module)."""

    def __init__(self, space, seed: int = 0):
        self.space, self.seed, self.booster = space, seed, None

    def fit(self, archs: Sequence[Hashable], energy_mj: Sequence[float]) -> EnergyPredictor:
        import lightgbm as lgb

        y = np.asarray(energy_mj, float)
        if len(y) < 5 or not (y > 0).all():
            raise ValueError(f"an energy predictor needs 5 or more positive energies (got {len(y)}, "
                             f"{int((y <= 0).sum())} not positive)")
        model = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=8, min_child_samples=3,
                                  subsample=0.8, subsample_freq=1, random_state=self.seed, verbose=-1, n_jobs=1)
        self.booster = model.fit(energy_features(self.space, archs), np.log(y)).booster_
        return self

    def predict(self, archs: Sequence[Hashable]) -> np.ndarray:
        return np.exp(self.booster.predict(energy_features(self.space, archs)))


def profile_energy_predictor(profile, space, seed: int = 0) -> EnergyPredictor:
    """An `EnergyPredictor` fitted to `profile`'s energy table, its archs read in `space`.

    Raises:
        ValueError: the profile has no energy table, it is not the one the manifest recorded or cannot be read
            (`TableProfile.table`), or an arch of it is not of `space`.
    """
    m = profile.manifest
    if not getattr(m.tables, "energy", None):
        raise ValueError(f"{m.ref} has no energy table (hardware_profiles.energy measures one)")
    table = profile.table("energy")
    archs = [space.decode(str(a)) for a in table["arch"]]
    return EnergyPredictor(space, seed).fit(archs, table["energy_mj"].to_numpy(float))
