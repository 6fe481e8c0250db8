"""The run's pictures and summary: the accuracy-vs-latency Pareto plot and `best.json`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.io import atomic_write
from nas.objectives import latency_column, pareto_mask
from nas.recipe import Recipe


def cost_axis(recipe: Recipe, table: pd.DataFrame) -> tuple[str, str, float | None]:
    """(column, label, limit) of the plot's x axis: latency on the first profile, else FLOPs."""
    if recipe.constraints.latency:
        lat = recipe.constraints.latency[0]
        return latency_column(lat.profile), f"latency on {lat.profile} (ms)", lat.max_ms
    limit = recipe.constraints.max_flops
    return "flops", "FLOPs (multiply-accumulates)", limit


def pareto_plot(recipe: Recipe, table: pd.DataFrame, path: Path) -> Path:
    """Accuracy against cost: feasible points, the Pareto front among them, infeasible points with an accuracy
    as crosses, and candidates never trained (rejected or over the latency limit) as ticks under the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col, label, limit = cost_axis(recipe, table)
    t = table.copy()
    t[col] = pd.to_numeric(t[col], errors="coerce")
    t["accuracy"] = pd.to_numeric(t["accuracy"], errors="coerce")
    ok = t[(t["status"] == "ok") & t["accuracy"].notna() & t[col].notna()]
    bad = t[(t["status"] == "infeasible") & t["accuracy"].notna() & t[col].notna()]
    untrained = t[t["status"].isin(["infeasible", "rejected"]) & t["accuracy"].isna() & t[col].notna()]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
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
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
