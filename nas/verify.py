"""Measure the best candidates before one is exported: the check of a latency predictor where it matters most.

A search under a latency limit ends with the most accurate network that a predictor puts under the limit. That is
where a predictor is least to be trusted: of the many networks near the limit, the search keeps the ones whose
latency the predictor under-estimates most (the winner's curse), so the winner is over the limit far more often
than the predictor's average error suggests. On NAS-Bench-201 at 2 threads, with predictors calibrated on 24
networks, 4 of 16 winners measured over the limit by more than 5 %, up to 27 % over, without this check
(`bench/measured/implementation_search_t2_noverify.txt`); 9 of 16 on another machine.

Where this machine is the profile's device (a live profile such as ``local-cpu``) and a predictor checked the
limit, `verify_best` measures the ``constraints.verify`` (default 20) most accurate feasible candidates, most
accurate first, each with the engine its figure was for (`LatencySource.measure_exported`: the smallest median of
3 rounds), and the first one measured within every such limit is the run's best: reported in ``best.json`` and
exported (with ``output.export``). If none is, the
search's best stays and the summary and model card say how far over it measured. Table profiles are not checked
here: this machine is not the device they were measured on; nor is a ``source: profile`` figure, a measurement
already.

Measurements go to ``verification.csv`` as they come (atomically); a resumed run reuses them, so nothing measured
is measured twice (``constraints.verify`` may be raised on ``--resume``). ``nas.zoo release`` leaves out the
candidates measured over a limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.io import atomic_write
from nas.objectives import implementation_column, latency_column
from nas.results import RunLog, score_of

FILE = "verification.csv"


@dataclass
class Verification:
    """What `verify_best` did.

    Attributes:
        best: the run's best, reported and exported (the first candidate measured within every limit, else the
            search's best).
        measured: one record per candidate measured, most accurate first: ``arch``, ``accuracy``, per checked
            profile ``latency_<p>`` (the search's figure), ``implementation_<p>`` (the engine it is for, where the
            constraint chose one) and ``measured_<p>`` (ms), and ``within`` (bool).
        limits: the checked limits, ms by profile.
        note: one line for the run log and the model card.
    """

    best: dict[str, Any]
    measured: list[dict[str, Any]]
    limits: dict[str, float]
    note: str

    def summary(self) -> dict[str, Any]:
        return {"limits_ms": self.limits, "measured": self.measured, "note": self.note,
                "chosen": self.best["arch"]}


def checked_limits(ctx) -> dict[str, float]:
    """The limits this machine can check by measuring: profile -> max ms, for constraints with a limit, a
    predicted figure and a live profile (this machine's own device)."""
    from hardware_profiles import LiveOnnxCpuProfile

    return {lat.profile: lat.max_ms for lat in ctx.recipe.constraints.latency
            if lat.max_ms is not None and lat.source == "predictor"
            and isinstance(ctx.latency[lat.profile].profile, LiveOnnxCpuProfile)}


def ranked(log: RunLog, top: int) -> list[dict[str, Any]]:
    """The `top` feasible rows, most accurate first (ties: fewer FLOPs, then the earlier row, as `best_feasible`)."""
    rows = [r for r in log.rows if score_of(r) is not None]
    return sorted(rows, key=lambda r: (-score_of(r), r["flops"]))[:top]


def records(run_dir: Path) -> pd.DataFrame:
    """The run's measurements before export (``verification.csv``, archs read as text), empty when there are none."""
    path = Path(run_dir) / FILE
    return pd.read_csv(path, dtype={"arch": str}) if path.is_file() else pd.DataFrame()


def verify_best(ctx, log: RunLog, run_dir: Path, log_line=print) -> Verification | None:
    """Measure the most accurate feasible candidates until one is within every checked limit; None when there is
    nothing to check (no checked limit, ``verify: 0``, or no feasible candidate)."""
    limits, top = checked_limits(ctx), ctx.recipe.constraints.verify
    candidates = ranked(log, top) if limits and top else []
    if not candidates:
        return None
    path = Path(run_dir) / FILE
    done = {r["arch"]: r for r in records(run_dir).to_dict("records")}
    measured: list[dict[str, Any]] = []
    for row in candidates:
        record = done.get(row["arch"], {})
        if any(pd.isna(record.get(f"measured_{p}")) for p in limits):   # not measured yet, or not on every profile
            record = _measure(ctx, row, limits)
        record["within"] = all(record[f"measured_{p}"] <= m for p, m in limits.items())   # the limits of now
        measured.append(record)
        kept = {**done, **{m["arch"]: m for m in measured}}   # records this call does not reach stay too
        table = pd.DataFrame(list(kept.values()))
        atomic_write(path, lambda t, table=table: table.to_csv(t, index=False))
        if bool(record["within"]):
            break
    chosen = next((c for c, m in zip(candidates, measured) if bool(m["within"])), None)
    note = _note(measured, limits, chosen is not None)
    log_line(note)
    return Verification(best=chosen or candidates[0], measured=measured, limits=limits, note=note)


def _measure(ctx, row: dict[str, Any], limits: dict[str, float]) -> dict[str, Any]:
    """The candidate measured on every checked profile (ms), beside the search's figure."""
    arch = ctx.space.decode(row["arch"])
    record: dict[str, Any] = {"arch": row["arch"], "accuracy": row["accuracy"]}
    for profile in limits:
        ms, how = ctx.latency[profile].measure_exported(ctx.space, arch, rounds=3)
        if ms is None:   # a live profile always measures; say so rather than pass a network unmeasured
            raise RuntimeError(f"verifying {row['arch']} on {profile}: {how}")
        record[latency_column(profile)] = row.get(latency_column(profile))
        if row.get(implementation_column(profile)):   # the engine it was measured with (implementation: best)
            record[implementation_column(profile)] = row[implementation_column(profile)]
        record[f"measured_{profile}"] = float(ms)
    return record


def _note(measured: list[dict[str, Any]], limits: dict[str, float], found: bool) -> str:
    first, last = measured[0], measured[-1]
    figures = ", ".join(f"{p} {first[f'measured_{p}']:.3f} ms (limit {m:g}, predicted "
                        f"{first[latency_column(p)]:.3f})" for p, m in limits.items())
    if found and len(measured) == 1:
        return f"verified: the search's best measured within its limits: {figures}"
    if found:
        kept = ", ".join(f"{p} {last[f'measured_{p}']:.3f} ms" for p in limits)
        return (f"verified: the {len(measured) - 1} most accurate feasible candidate(s) measured over a limit (the "
                f"first: {figures}); exported the next, measured {kept}")
    return (f"not verified: none of the {len(measured)} most accurate feasible candidates measured within the "
            f"limits; exported the search's best, measured {figures}: raise constraints.verify or calibrate the "
            "predictor on more networks (calibration)")
