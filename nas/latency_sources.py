"""Where a search's latency figures come from: a latency predictor (the default) or the profile itself.

Each latency constraint names a profile and a `source` (`nas.recipe.LatencyConstraint`):

- ``predictor`` (default): a LightGBM latency predictor (`predictors`) costs a candidate in well under a
  millisecond, so latency limits are checked before a trial is spent, like FLOPs. The predictor is, in order:
  1. the folder given as the constraint's ``predictor`` (`predictors.train --out`);
  2. trained from the profile's block and network tables (table profiles, e.g. ``x86-ort-t1``);
  3. calibrated on the profile: ``calibration`` networks sampled from the space (within the FLOPs/params limits)
     are timed by the profile (measured live, or simulated) and the few-shot analytic prior
     (`predictors.transfer.few_shot` without sources) is fitted to them.
  A built predictor (and the calibration timings, written as they come) is kept in
  ``<run>/predictors/<profile>/`` and reused by ``--resume`` and by the trial workers.
- ``profile``: the profile's own figure for every candidate (live measurement, table sum, simulation).
- ``table``: a column of a metric table (`nas.metric_tables`), looked up like an accuracy; nothing to
  measure the exported network on.

`measure_exported` times the exported best network on the profile wherever this machine can: live profiles and
onnxruntime-CPU tables are measured here (with the table's threads and repetitions), CUDA tables when a GPU is
present, simulated profiles are simulated; otherwise it says why not. The model card shows it beside the
predicted figure.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from nas.recipe import Constraints, LatencyConstraint


class LatencySetupError(InputError):
    """A latency source that cannot be set up; one line naming the constraint."""


@dataclass
class LatencySource:
    """One constraint's latency figure for candidates: `latency(space, arch)` in ms."""

    constraint: LatencyConstraint
    profile: Any
    predictor: Any = None
    how: str = ""
    column: Any = None      # source table: the metric table's latency column (pandas Series by arch string)

    @property
    def cheap(self) -> bool:
        """Whether a figure costs (almost) nothing, so it can be checked before a trial."""
        from hardware_profiles.lookup import TableProfile
        from hardware_profiles.simulated import SimulatedProfile

        return (self.predictor is not None or self.column is not None
                or isinstance(self.profile, (TableProfile, SimulatedProfile)))

    def latency(self, space, arch: Hashable) -> float:
        if self.column is not None:
            from nas.metric_tables import lookup

            return lookup(self.column, self.how, space.to_string(arch))
        if self.predictor is not None:
            return float(self.predictor.predict([space.to_string(arch)])[0])
        return float(self.profile.latency(space, arch).median_ms)


def _folder_name(profile: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", profile)


def make_sources(constraints: Constraints, space, run_dir: Path, *, seed: int = 0, log=print,
                 tables: dict[str, str | None] | None = None) -> dict[str, LatencySource]:
    """The latency source of every constraint, loading the predictors built earlier or building them (the
    driver builds them before any trial starts, so trial workers load them).

    Args:
        constraints: the recipe's constraints.
        space: the search space (the recipe's options and class count).
        run_dir: the run directory; built predictors live in ``predictors/<profile>/``.
        seed: seed of the calibration sample.
        log: where progress lines go.
        tables: metric table path per profile, for ``source: table`` constraints.
    """
    from hardware_profiles import get_profile
    from nas.metric_tables import metric_column, read_metric_table

    out = {}
    for i, lat in enumerate(constraints.latency):
        if lat.source == "table":
            path = (tables or {}).get(lat.profile)
            if path is None:
                raise LatencySetupError(f"constraints.latency[{i}].table: source 'table' needs a metric table")
            column = metric_column(read_metric_table(path), path, lat.column, f"constraints.latency[{i}].column")
            out[lat.profile] = LatencySource(lat, None, column=column, how=f"metric table {path}, column {lat.column}")
            continue
        profile = get_profile(lat.profile)
        if lat.source == "profile":
            out[lat.profile] = LatencySource(lat, profile, how=f"{lat.profile} ({type(profile).__name__})")
            continue
        model, how = _predictor(i, lat, profile, space, Path(run_dir), constraints, seed, log)
        out[lat.profile] = LatencySource(lat, profile, model, how)
    return out


def _predictor(index: int, lat: LatencyConstraint, profile, space, run_dir: Path, constraints: Constraints,
               seed: int, log) -> tuple[Any, str]:
    from hardware_profiles.lookup import TableProfile
    from predictors.io import PredictorFileError, load

    field = f"constraints.latency[{index}]"
    if lat.predictor:
        try:
            model, _ = load(Path(lat.predictor))
        except PredictorFileError as err:
            raise LatencySetupError(f"{field}.predictor: {err}") from None
        return checked_predictor(field, model, space), f"predictor {lat.predictor}"
    folder = run_dir / "predictors" / _folder_name(lat.profile)
    if not (folder / "meta.json").is_file():
        if isinstance(profile, TableProfile) and profile.manifest.tables.networks:
            _from_tables(profile, folder, log)
        else:
            _calibrated(lat, profile, space, folder, constraints, seed, log)
    try:
        model, meta = load(folder)
    except PredictorFileError as err:   # the run's own predictor, damaged (or saved by an older version)
        raise LatencySetupError(f"{field}: the run's predictor cannot be used ({err}); delete "
                                f"{folder / 'meta.json'} and resume to build it again (from the calibration "
                                "timings kept beside it, if any)") from None
    return checked_predictor(field, model, space), _how(meta, folder)


def _how(meta: dict, folder: Path) -> str:
    if "calibration" in meta:
        c = meta["calibration"]
        return f"predictor calibrated on {c['networks']} networks timed on {c['profile']} ({folder})"
    prof = meta.get("profile") or {}
    return f"predictor trained on {prof.get('name')}@{prof.get('version')} tables ({folder})"


def checked_predictor(field: str, model, space):
    """The predictor, if it can cost this space's arch strings (`LatencySetupError` naming `field` if not)."""
    if model.space != space.name:
        raise LatencySetupError(f"{field}: a predictor for space {model.space!r}, the recipe searches "
                                f"{space.name!r}")
    try:
        model.predict([space.to_string(space.smallest())])
    except (ValueError, KeyError) as err:
        raise LatencySetupError(f"{field}: the predictor cannot cost this space's architectures ({err}); "
                                "use source: profile, or a predictor trained for these space options") from None
    return model


def _from_tables(profile, folder: Path, log) -> None:
    from hardware_profiles.drift import profile_record, runtime_drift
    from predictors.io import save
    from predictors.train import profile_predictor

    m = profile.manifest
    log(f"training a latency predictor from {m.ref}'s tables ({len(profile.block_ms)} blocks)")
    model, archs, y = profile_predictor(profile)
    save(model, folder, archs=archs, y=y, profile=profile_record(m))
    drift = runtime_drift(profile_record(m))
    if drift:
        log(drift)


def _calibration_archs(space, constraints: Constraints, n: int, seed: int) -> list[str]:
    """`n` distinct archs sampled from the space, preferring ones within the FLOPs/params limits."""
    from nas.objectives import static_check

    rng = np.random.default_rng(seed)
    ok, other = [], []
    for _ in range(200 * n):
        arch = space.sample(rng)
        string = space.to_string(arch)
        if string in ok or string in other:
            continue
        (other if static_check(space, constraints, arch)[2] else ok).append(string)
        if len(ok) >= n:
            break
    return (ok + other)[:n]


def _calibrated(lat: LatencyConstraint, profile, space, folder: Path, constraints: Constraints, seed: int,
                log) -> None:
    """Time `calibration` networks on the profile and fit the analytic prior to them.

    Live timings are taken in two interleaved rounds and the smaller median kept: on a shared or virtual machine a
    sub-millisecond network's median can double between two minutes (contention), and the minimum over rounds is
    the figure that repeats. Timings are written as they come, so an interrupted calibration resumes."""
    import pandas as pd
    from tqdm import tqdm

    from hardware_profiles.simulated import SimulatedProfile
    from core.io import atomic_write
    from predictors.io import save
    from predictors.transfer import few_shot

    simulated = isinstance(profile, SimulatedProfile)
    n, rounds = lat.calibration or (200 if simulated else 24), 1 if simulated else 2
    archs = _calibration_archs(space, constraints, n, seed)
    path = folder / "calibration.csv"
    rows = pd.read_csv(path, dtype={"arch": str}).to_dict("records") if path.is_file() else []
    done = {(r["arch"], int(r["round"])) for r in rows}
    todo = [(a, k) for k in range(rounds) for a in archs if (a, k) not in done]
    if todo:
        log(f"calibrating a latency predictor for {lat.profile}: {len(todo)} timings "
            f"({n} networks x {rounds} round(s); {len(done)} already taken)")
    for a, k in tqdm(todo, desc=f"calibrating {lat.profile}", unit="net", file=sys.stderr, disable=not todo):
        rows.append({"arch": a, "round": k, "median_ms": float(profile.latency(space, space.decode(a)).median_ms)})
        table = pd.DataFrame(rows)
        atomic_write(path, lambda t, table=table: table.to_csv(t, index=False))
    best = pd.DataFrame(rows).groupby("arch")["median_ms"].min()
    y = best.loc[archs].to_numpy(float)
    spec = (space.name, space.options.model_dump(mode="json"), space.num_classes)
    model, fit = few_shot([], archs, y, space=spec, seed=seed)
    save(model, folder, archs=archs, y=y, profile=None,
         extra={"calibration": {"profile": lat.profile, "networks": len(archs), "rounds": rounds, **fit.as_dict()}})
    log(f"calibrated {lat.profile}: leave-one-out error of log latency {fit.loo_log_rmse:.3f}")


def measure_exported(source: LatencySource, space, arch: Hashable) -> tuple[float | None, str]:
    """(measured ms or None, how) of the exported network on the constraint's profile, on this machine."""
    from hardware_profiles import LiveOnnxCpuProfile
    from hardware_profiles.lookup import TableProfile
    from hardware_profiles.simulated import SimulatedProfile

    profile = source.profile
    if source.column is not None:
        return None, "not measured: the figure comes from a metric table, not a hardware profile"
    if isinstance(profile, LiveOnnxCpuProfile):   # the smaller of two medians, as in calibration
        ms = min(profile.latency(space, arch).median_ms for _ in range(2))
        return float(ms), f"measured live ({profile.description}; smaller median of 2 rounds)"
    if isinstance(profile, SimulatedProfile):
        return float(profile.latency(space, arch).median_ms), "simulated (the profile is a simulator)"
    if not isinstance(profile, TableProfile):
        return None, f"no way to measure {type(profile).__name__} here"
    m = profile.manifest
    shape = space.input_shape(arch)
    if m.backend == "onnxruntime-cpu":
        from hardware_profiles.measure import OnnxCpuBackend

        backend = OnnxCpuBackend(m.threads or 1, warmup=10, repeats=50)
        ms = min(backend.measure(space.build(arch), shape).median_ms for _ in range(2))
        return float(ms), (f"measured on this machine with onnxruntime, {m.threads or 1} thread(s), smaller median "
                           f"of 2 rounds (the table was measured on: {m.device})")
    if m.backend == "torch-cuda":
        import torch

        if not torch.cuda.is_available():
            return None, f"not measured: {m.ref} is a CUDA profile and this machine has no GPU"
        from hardware_profiles.cuda import TorchCudaBackend

        backend = TorchCudaBackend(precision=m.precision, batch=m.batch,
                                   channels_last=bool(m.options.get("channels_last", True)))
        return float(backend.measure(space.build(arch), shape).median_ms), \
            f"measured on {torch.cuda.get_device_name()} (CUDA graph, {m.precision}, batch {m.batch})"
    return None, f"not measured: {m.ref} was {m.kind} ({m.device}); it cannot be timed on this machine"
