"""The run's pictures: accuracy against each cost (Pareto plots), the latency predictors' evidence and the
search's progress.

Every plot is made here from the results table (and, for the predictors' evidence, the run's latency sources and
the export's latency figures), rendered with matplotlib's Agg canvas and written atomically, so the plots exist
with tracking off too and are testable without W&B (`nas.tracking` only logs the files):

- ``pareto.png``: accuracy against the first latency profile (FLOPs without profiles), as the run always wrote;
- ``plots/pareto_<profile>.png`` per latency profile and ``plots/pareto_flops.png``;
- ``plots/predictor_<profile>.png`` per latency constraint whose figures a predictor gives: predicted against
  measured latency of the networks the predictor was built on (calibration timings, or the profile's network
  table) with MAPE and Spearman, and the exported best network (predicted by the search, measured after export);
- ``plots/progress.png``: best feasible accuracy against the trials evaluated.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.io import atomic_write
from hardware_profiles import TableProfile
from hardware_profiles.importer import error_report
from nas.latency_sources import profile_file_name as file_name   # one sanitiser: predictors/<profile>, plots
from nas.objectives import (energy_column, implementation_column, latency_column, pareto_mask,
                            profile_memory_column)
from nas.recipe import Recipe

Axis = tuple[str, str, float | None]   # (results column, axis label, limit or None)


def cost_axes(recipe: Recipe) -> dict[str, Axis]:
    """The costs a run's candidates are judged on, by name: each latency profile of the recipe, then ``flops``, then
    the energy and memory budgets the recipe limits (``energy_<profile>``, ``memory``, ``memory_<profile>``,
    ``train_memory``)."""
    axes: dict[str, Axis] = {lat.profile: (latency_column(lat.profile), f"latency on {lat.profile} (ms)", lat.max_ms)
                             for lat in recipe.constraints.latency}
    c = recipe.constraints
    axes["flops"] = ("flops", "FLOPs (multiply-accumulates)", c.max_flops)
    if c.max_memory_mb is not None:
        axes["memory"] = ("memory_mb", "inference memory at batch 1 (MiB, predicted)", c.max_memory_mb)
    for lat in c.latency:
        if lat.max_energy_mj is not None:
            axes[f"energy_{lat.profile}"] = (energy_column(lat.profile), f"energy on {lat.profile} (mJ)",
                                             lat.max_energy_mj)
        if lat.max_memory_mb is not None:
            axes[f"memory_{lat.profile}"] = (profile_memory_column(lat.profile),
                                             f"inference memory on {lat.profile} (MiB, predicted)", lat.max_memory_mb)
    if c.max_train_memory_gb is not None:
        axes["train_memory"] = ("train_memory_gb", f"training memory at batch {c.train_batch} (GiB, predicted)",
                                c.max_train_memory_gb)
    return axes


def cost_axis(recipe: Recipe) -> Axis:
    """The x axis of ``pareto.png``: latency on the first profile, else FLOPs."""
    return next(iter(cost_axes(recipe).values()))


def _figure(size: tuple[float, float]):
    """A new (figure, axes) on matplotlib's Agg canvas (no pyplot state: nothing to close, safe off the main
    thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _numeric(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
    t = table.copy()
    for col in columns:
        t[col] = pd.to_numeric(t[col], errors="coerce")
    return t


def pareto_plot(recipe: Recipe, table: pd.DataFrame, path: Path, axis: Axis | None = None) -> Path:
    """Accuracy against one cost (`axis`, default `cost_axis`): feasible points, the Pareto front among them,
    infeasible points with an accuracy as crosses, and candidates never trained (rejected or over the latency
    limit) as ticks under the axis."""
    col, label, limit = axis or cost_axis(recipe)
    t = _numeric(table, col, "accuracy")
    ok = t[(t["status"] == "ok") & t["accuracy"].notna() & t[col].notna()]
    bad = t[(t["status"] == "infeasible") & t["accuracy"].notna() & t[col].notna()]
    untrained = t[t["status"].isin(["infeasible", "rejected"]) & t["accuracy"].isna() & t[col].notna()]
    fig, ax = _figure((7, 4.5))
    ax.scatter(ok[col], ok["accuracy"], c="tab:blue", s=24, label=f"feasible ({len(ok)})")
    if len(ok):
        front = ok[pareto_mask(ok["accuracy"], ok[col])].sort_values(col)
        ax.step(front[col], front["accuracy"], where="post", c="tab:blue", alpha=0.6, label="Pareto front")
        best = ok.loc[ok["accuracy"].idxmax()]
        ax.scatter([best[col]], [best["accuracy"]], marker="*", s=180, c="gold", edgecolors="k", zorder=5,
                   label="best feasible")
    if len(bad):
        ax.scatter(bad[col], bad["accuracy"], marker="x", c="tab:red", s=28, label=f"infeasible ({len(bad)})")
    if len(untrained):
        ax.plot(untrained[col], np.zeros(len(untrained)), "|", c="tab:red", ms=12, alpha=0.7,
                transform=ax.get_xaxis_transform(), label=f"not trained: over a limit ({len(untrained)})")
    if limit is not None:
        ax.axvline(limit, ls="--", c="gray", label=f"limit {limit:g}")
    ax.set_xlabel(label)
    ax.set_ylabel(f"accuracy ({recipe.evaluator.name})")
    ax.set_title(f"{recipe.name}: {len(t)} candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pareto_plots(recipe: Recipe, table: pd.DataFrame, folder: Path, drawn: Path | None = None) -> dict[str, Path]:
    """One Pareto plot per cost of `cost_axes`, as ``folder/pareto_<cost>.png``, by cost name.

    Args:
        drawn: ``pareto.png`` if already drawn: copied for its own axis instead of drawn again.
    """
    out = {}
    for name, axis in cost_axes(recipe).items():
        path = folder / f"pareto_{file_name(name)}.png"
        if drawn is not None and axis == cost_axis(recipe):
            out[name] = atomic_write(path, lambda tmp: shutil.copyfile(drawn, tmp))
        else:
            out[name] = pareto_plot(recipe, table, path, axis)
    return out


def trials_in_order(table: pd.DataFrame) -> pd.DataFrame:
    """The evaluated rows (rejected candidates cost no trial) in the order they finished, numbered from 1 in
    ``trial``, with ``best``, the best feasible accuracy so far (NaN before the first feasible trial)."""
    t = _numeric(table, "accuracy", "index")
    t = t[t["status"] != "rejected"].sort_values("index").reset_index(drop=True)
    t["trial"] = np.arange(1, len(t) + 1)
    t["best"] = t["accuracy"].where(t["status"] == "ok").cummax().ffill()
    return t


def progress_plot(recipe: Recipe, table: pd.DataFrame, path: Path) -> Path:
    """Best feasible accuracy so far against the trials evaluated (`trials_in_order`), with each trial's own
    accuracy behind it: feasible as dots, infeasible as crosses, none (failed, over a limit) as ticks."""
    from matplotlib.ticker import MaxNLocator

    t = trials_in_order(table)
    has_acc = t["accuracy"].notna()
    feasible, infeasible = t[has_acc & (t["status"] == "ok")], t[has_acc & (t["status"] == "infeasible")]
    fig, ax = _figure((7, 4.5))
    ax.scatter(feasible["trial"], feasible["accuracy"], c="tab:blue", s=20, alpha=0.6, label="feasible trial")
    if len(infeasible):
        ax.scatter(infeasible["trial"], infeasible["accuracy"], marker="x", c="tab:red", s=24,
                   label="infeasible trial")
    if (~has_acc).any():
        ax.plot(t["trial"][~has_acc], np.zeros((~has_acc).sum()), "|", c="tab:gray", ms=12,
                transform=ax.get_xaxis_transform(), label=f"no accuracy: failed or over a limit ({(~has_acc).sum()})")
    ax.step(t["trial"], t["best"], where="post", c="tab:green", lw=2, label="best feasible so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in order of completion)")
    ax.set_ylabel(f"accuracy ({recipe.evaluator.name})")
    ax.set_title(f"{recipe.name}: {len(t)} trials of a budget of {recipe.search.budget}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")   # late trials may sit anywhere
    return _save(fig, path)


@dataclass
class PredictorEvidence:
    """A latency predictor's figures against measured ones: the networks it was built on (or its profile's
    table holds) and the exported best network.

    Attributes:
        profile: the constraint's profile, with ``/<implementation>`` for one engine of a constraint that names
            its ``implementation:``.
        predicted: the predictor's figures (ms) of the networks.
        measured: their measured latencies (ms).
        what: which networks they are, in words (the plot's title).
        exported: (predicted, measured) ms of the exported best network; None where not known (not exported,
            or not measurable from this machine).
        held_out: (predicted, measured) ms of the candidates measured before export (`nas.verify`): networks
            the predictor never saw, picked where it matters (at the limit).
    """

    profile: str
    predicted: np.ndarray
    measured: np.ndarray
    what: str
    exported: tuple[float | None, float | None] = (None, None)
    held_out: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))

    def errors(self) -> dict[str, float]:
        """MAPE, the shares within 5 % and 10 %, Spearman and Kendall over the networks (rank figures need 3
        networks or more), and the exported network's relative error."""
        out: dict[str, float] = {}
        if len(self.measured) >= 3:
            out.update(error_report(self.predicted, self.measured))
        predicted, measured = self.exported
        if predicted is not None and measured:
            out["exported_error"] = predicted / measured - 1
        if len(self.held_out[1]):
            out["held_out_mape"] = float(np.mean(np.abs(self.held_out[0] / self.held_out[1] - 1)))
        return out


def predictor_evidence(run_dir: Path, sources: dict[str, Any],
                       exported: dict[str, dict[str, Any]] | None = None) -> list[PredictorEvidence]:
    """The evidence of every latency predictor of the run: each source that is one
    (`nas.latency_sources.PredictorSource`) and each engine's of a source with ``implementation:`` (labelled
    ``<profile>/<implementation>``; the exported network's star goes to the engine that won it).

    Args:
        run_dir: the run folder (calibration timings are in ``predictors/<profile>[/<implementation>]/``, the
            candidates measured before export in ``verification.csv``).
        sources: the run's latency sources by profile (`RunContext.latency`).
        exported: the export's latency figures by profile (``summary["export"]["latency"]``), if exported.
    """
    out = []
    for name, src in sources.items():
        lat = (exported or {}).get(name) or {}
        for engine, part in (getattr(src, "parts", None) or {None: src}).items():
            if part.predictor is None:
                continue
            label = name if engine is None else f"{name}/{engine}"
            archs, measured, what = _measured_networks(Path(run_dir), part, file_name(name), engine)
            try:
                predicted = _predict(part, archs)
            except (ValueError, KeyError) as err:   # a table of other space options than the predictor's
                predicted, measured, what = np.empty(0), np.empty(0), f"its measured networks cannot be costed ({err})"
            try:
                held = _held_out(Path(run_dir), part, name, engine, exclude=set(archs))
            except (ValueError, KeyError):
                held = (np.empty(0), np.empty(0))
            star = (lat.get("search_ms"), lat.get("measured_ms")) if engine in (None, lat.get("implementation")) \
                else (None, None)
            out.append(PredictorEvidence(label, predicted, measured, what, star, held))
    return out


def _predict(src, archs: list[str]) -> np.ndarray:
    return np.asarray(src.predictor.predict(archs), float) if archs else np.empty(0)


def _held_out(run_dir: Path, src, profile: str, engine: str | None,
              exclude: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, measured) ms of the candidates measured before export on `profile` (with `engine`, for one
    engine of ``implementation:``): ``verification.csv``, written by `nas.verify`; those in `exclude` (the
    predictor's own calibration networks) left out, so what remains is held out."""
    from nas.verify import records

    col = f"measured_{profile}"
    rows = records(run_dir)
    if col not in rows:
        return np.empty(0), np.empty(0)
    if engine is not None:   # the engine each candidate was measured with: the one its figure was for
        impl = implementation_column(profile)
        rows = rows[rows[impl] == engine] if impl in rows else rows.iloc[:0]
    rows = rows[np.isfinite(pd.to_numeric(rows[col], errors="coerce")) & ~rows["arch"].isin(exclude)]
    return _predict(src, rows["arch"].tolist()), rows[col].to_numpy(float)


def _measured_networks(run_dir: Path, src, folder: str,
                       engine: str | None = None) -> tuple[list[str], np.ndarray, str]:
    """(archs, measured ms, what they are) of the networks behind a predictor (kept in
    ``predictors/<folder>[/<engine>]/``): the run's calibration timings (the smaller median of the rounds, as the
    fit took them), else the profile's network table, else none."""
    lat, meta = src.constraint, getattr(src.predictor, "saved_meta_", None) or {}
    calibration = run_dir / "predictors" / folder / (file_name(engine) if engine else "") / "calibration.csv"
    if not lat.predictor and calibration.is_file():
        ms = pd.read_csv(calibration, dtype={"arch": str}).groupby("arch", sort=False)["median_ms"].min()
        loo = (meta.get("calibration") or {}).get("loo_log_rmse")
        note = "" if loo is None else f"; leave-one-out RMSE of log latency {loo:.3f}"
        return list(ms.index), ms.to_numpy(float), f"{len(ms)} calibration networks, fitted to (in-sample){note}"
    if isinstance(src.profile, TableProfile) and src.profile.manifest.tables.networks:
        nets = src.profile.read_networks()
        nets = nets[np.isfinite(pd.to_numeric(nets["median_ms"], errors="coerce"))]
        archs = nets["arch"].astype(str).tolist()
        unseen = len(set(archs) - set(meta.get("train_archs") or ()))
        seen = "all fitted to: in-sample" if not unseen else f"{unseen} of them not fitted to"
        return archs, nets["median_ms"].to_numpy(float), f"{len(archs)} networks of {src.profile.name}'s table ({seen})"
    return [], np.empty(0), "no measured networks kept with this predictor"


def predictor_plot(ev: PredictorEvidence, path: Path) -> Path:
    """Predicted against measured latency of the evidence's networks, with the +-10 % band, the error figures in
    the title, the candidates measured before export as triangles and the exported best network as a star."""
    fig, ax = _figure((6.5, 5.5))
    if len(ev.measured):
        ax.scatter(ev.measured, ev.predicted, c="tab:blue", s=22, alpha=0.7, label=f"networks ({len(ev.measured)})")
    if len(ev.held_out[1]):
        ax.scatter(ev.held_out[1], ev.held_out[0], marker="^", c="tab:red", s=40, zorder=4,
                   label=f"measured before export, held out ({len(ev.held_out[1])}; "
                         f"MAPE {ev.errors()['held_out_mape']:.1%})")
    predicted, measured = ev.exported
    err = ev.errors()
    if "exported_error" in err:
        ax.scatter([measured], [predicted], marker="*", s=220, c="gold", edgecolors="k", zorder=5,
                   label=f"exported best ({err['exported_error']:+.1%})")
    elif predicted is not None:   # the search's figure alone: a level, not a point
        ax.axhline(predicted, c="goldenrod", ls=":", label=f"exported best: predicted {predicted:.3g} ms")
    values = np.concatenate([ev.measured, ev.predicted, *ev.held_out, [v for v in ev.exported if v is not None]])
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    xs = np.array([lo, hi]) if hi > lo else np.array([0.5 * lo, 1.5 * hi])
    ax.plot(xs, xs, "k-", lw=1, label="predicted = measured")
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="k", alpha=0.08, label="+-10 %")
    figures = (f"MAPE {err['mape']:.1%}, Spearman {err['spearman']:.3f}" if "mape" in err
               else "too few networks for error figures")
    if predicted is None or measured is None:
        figures += "; no exported network" if predicted is None else "; exported best not measurable here"
    ax.set_title(f"latency predictor for {ev.profile}\n{ev.what}\n{figures}", fontsize=9)
    ax.set_xlabel(f"measured latency on {ev.profile} (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def run_plots(recipe: Recipe, table: pd.DataFrame, run_dir: Path, sources: dict[str, Any],
              exported: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Path], dict[str, float]]:
    """Every plot of the run but ``pareto.png`` (which must be there already: it is copied, not drawn again),
    under ``run_dir/plots/``.

    Returns:
        The plots by W&B key (``pareto/<cost>``, ``predictor/<profile>``, ``progress``), and the predictors'
        error figures by summary key (``predictor/<profile>/mape``, ...).
    """
    folder = Path(run_dir) / "plots"
    plots = {f"pareto/{k}": p for k, p in pareto_plots(recipe, table, folder, Path(run_dir) / "pareto.png").items()}
    figures = {}
    for ev in predictor_evidence(run_dir, sources, exported):
        plots[f"predictor/{ev.profile}"] = predictor_plot(ev, folder / f"predictor_{file_name(ev.profile)}.png")
        figures.update({f"predictor/{ev.profile}/{k}": v for k, v in ev.errors().items()})
    plots["progress"] = progress_plot(recipe, table, folder / "progress.png")
    return plots, figures
