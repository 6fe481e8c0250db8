"""Experiment tracking: W&B in offline mode (default; `wandb sync` later) or none.

Offline mode writes everything under `run_dir/wandb/` and makes no network call; one W&B run per experiment,
continued (same run id) by `--resume`.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from core.io import atomic_write_text
from nas.recipe import Recipe

NUMERIC = ("accuracy", "flops", "params", "eval_seconds", "train_seconds")


class NoTracker:
    """Tracking switched off (`tracking: none`)."""

    def log_trial(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, table: Any, plot: Path | None, summary: dict[str, Any]) -> None:
        pass

    def abort(self) -> None:
        """Close after a search that stopped with an error (what was logged so far is kept)."""


class WandbTracker(NoTracker):
    """One offline W&B run: a point per trial, then the trials table, the Pareto plot and the summary."""

    def __init__(self, recipe: Recipe, run_dir: Path):
        os.environ["WANDB_MODE"] = recipe.tracking.mode
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        atomic_write_text(id_file, run_id + "\n")
        self.wandb = wandb
        self.run = wandb.init(project=recipe.tracking.project, name=recipe.name, id=run_id, resume="allow",
                              dir=str(run_dir), mode=recipe.tracking.mode, config=recipe.model_dump(mode="json"),
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def log_trial(self, row: dict[str, Any]) -> None:
        data = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and (k in NUMERIC or k.startswith("latency_"))}
        self.run.log({**data, "feasible": int(bool(row.get("feasible"))), "trial": row["index"]})

    def finish(self, table: Any, plot: Path | None, summary: dict[str, Any]) -> None:
        logged: dict[str, Any] = {"trials": self.wandb.Table(dataframe=table.astype(str))}
        if plot is not None and plot.is_file():
            logged["pareto"] = self.wandb.Image(str(plot))
        self.run.log(logged)
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)


def make_tracker(recipe: Recipe, run_dir: Path) -> NoTracker:
    """The tracker the recipe asks for."""
    if recipe.tracking.backend == "none" or recipe.tracking.mode == "disabled":
        return NoTracker()
    return WandbTracker(recipe, run_dir)
