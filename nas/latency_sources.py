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

Each kind is its own class behind one interface (`LatencySource`: `latency`, `cheap`, `measure_exported`):
`PredictorSource`, `ProfileSource`, `TableSource`.

A constraint's ``implementation`` names the engine the network will run on (`hardware_profiles.implementations`):
``default`` is the profile's own; another name on a live profile (``local-cpu``) times with that engine; ``best``
makes one source per implementation (each a predictor or the profile, as above: a predictor is calibrated per
engine, in ``predictors/<profile>/<implementation>/``) and a candidate's latency is the smallest of them, the
winning engine recorded in the ``implementation_<profile>`` column (`ImplementationSource`). On a table profile the
implementations are other profiles measured on the same device with another ``--backend``.

`measure_exported` times the exported best network on the profile wherever this machine can (the profile says how:
`HardwareProfile.measure_exported`); the model card shows it beside the search's figure.
"""
from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.errors import InputError
from core.io import atomic_write
from hardware_profiles import HardwareProfile, TableProfile, get_profile
from hardware_profiles.drift import profile_record, runtime_drift
from nas.metric_tables import lookup, metric_column, read_metric_table
from nas.objectives import static_check
from nas.recipe import Constraints, LatencyConstraint
from predictors.io import PredictorFileError, load, save
from predictors.train import profile_predictor
from predictors.transfer import few_shot


class LatencySetupError(InputError):
    """A latency source that cannot be set up; one line naming the constraint."""


class LatencySource(ABC):
    """One constraint's latency figure for candidates: `latency(space, arch)` in ms.

    Attributes:
        constraint: the recipe's latency constraint.
        how: where the figure comes from, in words (run log, model card).
        profile: the hardware profile behind the figure (None for a metric-table column).
        predictor: the latency predictor giving the figure (None unless it is a `PredictorSource`).
    """

    constraint: LatencyConstraint
    how: str
    profile: HardwareProfile | None
    predictor: Any

    @property
    @abstractmethod
    def cheap(self) -> bool:
        """Whether a figure costs (almost) nothing, so it can be checked before a trial."""

    @abstractmethod
    def latency(self, space, arch: Hashable) -> float:
        """The candidate's latency (ms)."""

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        """(measured ms or None, how) of the exported network on the constraint's profile, from this machine (the
        smallest median of `rounds` interleaved rounds)."""
        return self.profile.measure_exported(space, arch, rounds)

    def figure(self, space, arch: Hashable) -> tuple[float, str | None]:
        """(latency ms, the implementation it is for, or None for the profile's own engine)."""
        return self.latency(space, arch), None


@dataclass
class PredictorSource(LatencySource):
    """A latency predictor's figure (the default): well under a millisecond per candidate."""

    constraint: LatencyConstraint
    profile: HardwareProfile
    predictor: Any
    how: str
    cheap = True

    def latency(self, space, arch: Hashable) -> float:
        return float(self.predictor.predict([space.to_string(arch)])[0])


@dataclass
class ProfileSource(LatencySource):
    """The profile's own figure (measured live, summed from its table, simulated); cheap when the profile is."""

    constraint: LatencyConstraint
    profile: HardwareProfile
    how: str
    predictor = None

    @property
    def cheap(self) -> bool:
        return self.profile.cheap

    def latency(self, space, arch: Hashable) -> float:
        return float(self.profile.latency(space, arch).median_ms)


@dataclass
class TableSource(LatencySource):
    """A metric table's latency column (a pandas Series by arch string), looked up like an accuracy."""

    constraint: LatencyConstraint
    column: Any
    how: str
    profile = predictor = None
    cheap = True

    def latency(self, space, arch: Hashable) -> float:
        return lookup(self.column, self.how, space.to_string(arch))

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        return None, "not measured: the figure comes from a metric table, not a hardware profile"


@dataclass
class ImplementationSource(LatencySource):
    """A constraint with ``implementation:``: one source per implementation (`parts`, by implementation name); a
    candidate's figure is the smallest of theirs, and `figure` names the implementation that gave it."""

    constraint: LatencyConstraint
    parts: dict[str, LatencySource]
    how: str
    predictor = None

    @property
    def profile(self) -> HardwareProfile:
        return next(iter(self.parts.values())).profile

    @property
    def cheap(self) -> bool:
        return all(p.cheap for p in self.parts.values())

    def figure(self, space, arch: Hashable) -> tuple[float, str | None]:
        figures = {name: src.latency(space, arch) for name, src in self.parts.items()}
        name = min(figures, key=figures.get)
        return figures[name], name

    def latency(self, space, arch: Hashable) -> float:
        return self.figure(space, arch)[0]

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        """The exported network measured with the implementation that won it."""
        name = self.figure(space, arch)[1]
        ms, how = self.parts[name].measure_exported(space, arch, rounds)
        return ms, f"{name}: {how}"


def latency_figures(sources: dict[str, LatencySource], space, arch: Hashable,
                    cheap_only: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
    """(latency ms by profile, results-row fields: ``latency_<profile>``, where an implementation is chosen
    ``implementation_<profile>``, and where energy is limited ``energy_<profile>`` from the profile's model) of a
    candidate. `cheap_only`: only the sources that cost nothing, skipping a
    candidate a metric table lacks (its trial records it as failed)."""
    from nas.objectives import energy_column, implementation_column, latency_column, profile_memory_column

    lat: dict[str, float] = {}
    fields: dict[str, Any] = {}
    for name, src in sources.items():
        if cheap_only and not src.cheap:
            continue
        try:
            ms, impl = src.figure(space, arch)
        except KeyError:
            if not cheap_only:
                raise
            continue
        lat[name] = fields[latency_column(name)] = ms
        if impl is not None:
            fields[implementation_column(name)] = impl
        if src.constraint.max_energy_mj is not None:   # a profile with energy (checked: nas.checks)
            fields[energy_column(name)] = energy_figure(src, space, arch)
        if src.constraint.max_memory_mb is not None:   # a profile with a memory table (checked: nas.checks)
            fields[profile_memory_column(name)] = memory_figure(src, space, arch)
    return lat, fields


def profile_file_name(profile: str) -> str:
    """`profile` as a file or folder name (``predictors/<profile>/``, the run's plots)."""
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
    out = {}
    for i, lat in enumerate(constraints.latency):
        if lat.source == "table":
            path = (tables or {}).get(lat.profile)
            out[lat.profile] = TableSource(lat, table_column(i, lat, path), f"metric table {path}, column {lat.column}")
            continue
        profile = get_profile(lat.profile)
        if lat.implementation == "default":
            out[lat.profile] = _source(i, lat, profile, space, Path(run_dir), constraints, seed, log)
            continue
        parts = {name: _source(i, lat, prof, space, Path(run_dir), constraints, seed, log, part=name)
                 for name, prof in implementation_profiles(i, lat, profile).items()}
        out[lat.profile] = ImplementationSource(lat, parts, f"{lat.implementation} of {', '.join(parts)}: "
                                                + "; ".join(p.how for p in parts.values()))
    for i, lat in enumerate(constraints.latency):
        if lat.max_energy_mj is not None and isinstance(out[lat.profile].profile, TableProfile):
            from predictors.energy import profile_energy_predictor

            try:   # a measured energy table (hardware_profiles.energy): its predictor, the same in every worker
                out[lat.profile].energy_model = profile_energy_predictor(out[lat.profile].profile, space, seed)
            except ValueError as err:
                raise LatencySetupError(f"constraints.latency[{i}].max_energy_mj: {err}") from None
        if lat.max_memory_mb is not None:
            from predictors.memory import profile_memory_model

            try:   # a measured workspace or memory table (hardware_profiles.memory); the same model in every worker
                out[lat.profile].memory_model = profile_memory_model(out[lat.profile].profile, space, seed)
            except ValueError as err:
                raise LatencySetupError(f"constraints.latency[{i}].max_memory_mb: {err}") from None
    return out


def memory_figure(src: LatencySource, space, arch: Hashable) -> float:
    """A candidate's inference memory at batch 1 (MiB) on the source's profile: its parameters plus the activation
    peak the profile's memory model predicts (`predictors.memory.profile_memory_model`: the eager walk with its
    layers' workspace, or a correction fitted to its networks)."""
    from predictors.memory import MIB, inference_memory

    return float((inference_memory(space, arch).param_bytes + src.memory_model.predict([arch])[0]) / MIB)


def energy_figure(src: LatencySource, space, arch: Hashable) -> float:
    """A candidate's energy per inference (mJ) on the source's profile: predicted from its energy table where it
    has one (`predictors.energy`), else its model's (the FPGA simulators)."""
    model = getattr(src, "energy_model", None)
    if model is not None:
        return float(model.predict([arch])[0])
    return float(src.profile.latency(space, arch).energy_mj)


def _source(index: int, lat: LatencyConstraint, profile, space, run_dir: Path, constraints: Constraints, seed: int,
            log, part: str | None = None) -> LatencySource:
    """The constraint's source on one profile (`part`: the implementation it stands for, under ``best``)."""
    if lat.source == "profile":
        return ProfileSource(lat, profile, f"{lat.profile} ({type(profile).__name__})")
    if lat.predictor:
        if part is not None:   # `nas.checks` refuses this before a run starts; a direct caller gets the same line
            raise LatencySetupError(f"constraints.latency[{index}].predictor: a given predictor answers for one "
                                    "engine; leave it out with implementation (one is built per implementation)")
        return PredictorSource(lat, profile, given_predictor(index, lat, space), f"predictor {lat.predictor}")
    model, how = _run_predictor(index, lat, profile, space, run_dir, constraints, seed, log, part)
    return PredictorSource(lat, profile, model, how)


def default_implementations(device: str = "cpu") -> list[str]:
    """What ``implementation: best`` compares on a live profile when the constraint lists none: every installed
    implementation of the device that does not compile per network (compiling costs seconds per candidate)."""
    from hardware_profiles.implementations import implementations

    return [i.name for i in implementations(device) if "compile" not in i.name and i.unavailable() is None]


def implementation_profiles(index: int, lat: LatencyConstraint, profile) -> dict[str, HardwareProfile]:
    """The profile per implementation a constraint with ``implementation:`` compares, by implementation name.

    Raises:
        LatencySetupError: an unknown or uninstalled implementation, one for another device, an implementation a
            table profile was not measured with, a listed profile measured elsewhere, or a profile kind that
            cannot choose (a simulator).
    """
    from hardware_profiles import LiveOnnxCpuProfile
    from hardware_profiles.implementations import IMPLEMENTATIONS

    field = f"constraints.latency[{index}].implementation{'s' if lat.implementations else ''}"
    if isinstance(profile, LiveOnnxCpuProfile):
        names = (lat.implementations or default_implementations() if lat.implementation == "best"
                 else [lat.implementation])
        for name in names:
            impl = IMPLEMENTATIONS.get(name) if name in IMPLEMENTATIONS else None
            why = ("not a registered implementation (expected one of: "
                   f"{', '.join(IMPLEMENTATIONS.names())})" if impl is None else
                   f"runs on {impl.device}, {lat.profile} is a CPU profile" if impl.device != "cpu" else
                   impl.unavailable())
            if why:
                raise LatencySetupError(f"{field}: {name}: {why}")
        return {name: type(profile)(implementation=name) for name in dict.fromkeys(names)}
    if not isinstance(profile, TableProfile) or profile.manifest.kind != "measured":
        raise LatencySetupError(f"{field}: {lat.profile} is not measured with an engine (a live or measured profile "
                                "can choose one)")
    m = profile.manifest
    if lat.implementation != "best":
        if lat.implementation != m.backend:
            raise LatencySetupError(f"{field}: {lat.profile} was measured with {m.backend}; for "
                                    f"{lat.implementation}, measure a profile with hardware_profiles.measure "
                                    f"--backend {lat.implementation} and name it")
        return {m.backend: profile}
    if not lat.implementations:
        raise LatencySetupError(f"{field}: list the profiles measured with other engines on {m.device} "
                                "(implementations: [PROFILE, ...])")
    out = {m.backend: profile}
    for ref in lat.implementations:
        other = get_profile(ref)
        om = getattr(other, "manifest", None)
        if om is None or om.kind != "measured" or (om.device, om.threads, om.space) != (m.device, m.threads, m.space):
            raise LatencySetupError(f"{field}: {ref} is not a profile measured on {m.device} with {m.threads} "
                                    f"thread(s) for space {m.space}, as {lat.profile} is")
        if om.backend in out:
            raise LatencySetupError(f"{field}: {ref} was measured with {om.backend}, as another listed profile was")
        out[om.backend] = other
    return out


def table_column(index: int, lat: LatencyConstraint, path: str | None):
    """The latency column of a ``source: table`` constraint's metric table (a pandas Series by arch string).

    Raises:
        LatencySetupError: no table, or one without the column; `TableError` for a table that cannot be read.
    """
    if path is None:
        raise LatencySetupError(f"constraints.latency[{index}].table: source 'table' needs a metric table: set "
                                "table, or use the tabular evaluator")
    return metric_column(read_metric_table(path), path, lat.column, f"constraints.latency[{index}].column")


def given_predictor(index: int, lat: LatencyConstraint, space):
    """The constraint's own predictor folder (``predictor:``), loaded and checked: trained for the constraint's
    profile (when it names one) and able to cost the space's architectures.

    Raises:
        LatencySetupError: one line naming ``constraints.latency[index].predictor``.
    """
    field = f"constraints.latency[{index}].predictor"
    try:
        model, meta = load(Path(lat.predictor))
    except PredictorFileError as err:
        raise LatencySetupError(f"{field}: {err}") from None
    trained_for = (meta.get("profile") or {}).get("name")
    if trained_for and trained_for != lat.profile.partition("@")[0]:
        raise LatencySetupError(f"{field}: {lat.predictor} was trained for profile {trained_for}, not {lat.profile}")
    return checked_predictor(field, model, space)


def _run_predictor(index: int, lat: LatencyConstraint, profile, space, run_dir: Path, constraints: Constraints,
                   seed: int, log, part: str | None = None) -> tuple[Any, str]:
    """The run's own predictor for the constraint (built into ``<run>/predictors/<profile>/``, or its `part`
    subfolder for one implementation, if not there yet): trained from the profile's tables when it has measured
    networks, else calibrated on it."""
    field = f"constraints.latency[{index}]"
    folder = run_dir / "predictors" / profile_file_name(lat.profile)
    if part is not None:
        folder = folder / profile_file_name(part)
    if not (folder / "meta.json").is_file():
        if isinstance(profile, TableProfile) and profile.manifest.tables.networks:
            _from_tables(profile, folder, log)
        else:
            _calibrated(lat, profile, space, folder, constraints, seed, log,
                        lat.profile if part is None else f"{lat.profile} ({part})")
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

    m = profile.manifest
    log(f"training a latency predictor from {m.ref}'s tables ({len(profile.block_ms)} blocks)")
    model, archs, y = profile_predictor(profile)
    save(model, folder, archs=archs, y=y, profile=profile_record(m))
    drift = runtime_drift(profile_record(m))
    if drift:
        log(drift)


def _calibration_archs(space, constraints: Constraints, n: int, seed: int) -> list[str]:
    """`n` distinct archs sampled from the space, preferring ones within the FLOPs/params limits."""
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
                log, label: str | None = None) -> None:
    """Time `calibration` networks on the profile and fit the analytic prior to them.

    Live timings are taken in two interleaved rounds and the smaller median kept: on a shared or virtual machine a
    sub-millisecond network's median can double between two minutes (contention), and the minimum over rounds is
    the figure that repeats. Timings are written as they come, so an interrupted calibration resumes."""
    label = label or lat.profile
    cheap = profile.cheap   # a deterministic figure: one round, and many networks cost little
    n, rounds = lat.calibration or (200 if cheap else 24), 1 if cheap else 2
    archs = _calibration_archs(space, constraints, n, seed)
    path = folder / "calibration.csv"
    rows = pd.read_csv(path, dtype={"arch": str}).to_dict("records") if path.is_file() else []
    done = {(r["arch"], int(r["round"])) for r in rows}
    todo = [(a, k) for k in range(rounds) for a in archs if (a, k) not in done]
    if todo:
        log(f"calibrating a latency predictor for {label}: {len(todo)} timings "
            f"({n} networks x {rounds} round(s); {len(done)} already taken)")
    for a, k in tqdm(todo, desc=f"calibrating {label}", unit="net", file=sys.stderr, disable=not todo):
        rows.append({"arch": a, "round": k, "median_ms": float(profile.latency(space, space.decode(a)).median_ms)})
        table = pd.DataFrame(rows)
        atomic_write(path, lambda t, table=table: table.to_csv(t, index=False))
    best = pd.DataFrame(rows).groupby("arch")["median_ms"].min()
    y = best.loc[archs].to_numpy(float)
    spec = (space.name, space.options.model_dump(mode="json"), space.num_classes)
    model, fit = few_shot([], archs, y, space=spec, seed=seed)
    save(model, folder, archs=archs, y=y, profile=None,
         extra={"calibration": {"profile": label, "networks": len(archs), "rounds": rounds, **fit.as_dict()}})
    log(f"calibrated {label}: leave-one-out error of log latency {fit.loo_log_rmse:.3f}")
