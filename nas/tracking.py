"""Experiment tracking: W&B in offline mode (default; `wandb sync` later) or none.

Offline mode writes everything under `run_dir/wandb/` and makes no network call; one W&B run per experiment,
continued (same run id) by `--resume`. The finished run holds what a reviewer needs without the run folder: a point
per trial; the recipe as config; the trials table (arch strings and every figure); the plots `nas.report` drew
(``pareto/<cost>`` per latency profile and FLOPs, ``predictor/<profile>`` for each latency predictor's evidence,
``progress``); the best network's figures and the predictors' error figures in the summary; and the exported best
network as a model artifact (`log_model_artifact`: the files of ``best/``, the model card's figures as metadata).

The search run's W&B id, project and name are read back with `search_run_ref(run_dir)` (the id from
``run_dir/wandb_id.txt``, the project and name from ``run_dir/recipe.yaml``). A command that logs a network
released from a search links it to the search run like this::

    ref = search_run_ref(run_dir)
    run = wandb.init(project=ref.project, job_type="release", mode="offline")
    log_model_artifact(run, folder, name, {**figures, "search_run": ref.as_dict()}, aliases=("release",))
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError
from core.io import atomic_write_text, nan_to_none
from nas.recipe import Recipe

NUMERIC = ("accuracy", "flops", "params", "eval_seconds", "train_seconds")


@dataclass(frozen=True)
class WandbRunRef:
    """Where a search's W&B run is: ``wandb.Api().run(ref.path)`` once synced."""

    id: str
    project: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def search_run_ref(run_dir: Path) -> WandbRunRef | None:
    """The W&B run a search logged to, or None for a run never tracked (no ``wandb_id.txt``).

    Raises:
        InputError: ``recipe.yaml`` is missing or not a recipe (one line naming it).
    """
    run_dir = Path(run_dir)
    id_file, recipe = run_dir / "wandb_id.txt", run_dir / "recipe.yaml"
    if not id_file.is_file():
        return None
    try:
        data = yaml.safe_load(recipe.read_text())
        return WandbRunRef(id_file.read_text().strip(), data["tracking"]["project"], data["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise InputError(f"{recipe}: cannot read the run's W&B project from it ({type(err).__name__}: {err})") \
            from None


def artifact_name(text: str) -> str:
    """`text` as a W&B artifact name (letters, digits, ``-``, ``_`` and ``.``; at most 128 characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:128] or "model"


def log_model_artifact(run: Any, folder: Path, name: str, metadata: dict[str, Any],
                       aliases: Sequence[str] = ()) -> Any:
    """Log the files under `folder` (hidden ones, such as a temp file of a write that was killed, left out) as a
    W&B model artifact of `run`; W&B copies them to its staging area, so the folder may change afterwards.

    Args:
        run: an open W&B run (`wandb.init`).
        folder: the network's files, e.g. a run's ``best/`` (weights, ONNX, arch.txt, MODEL_CARD.md, SHA256SUMS).
        name: the artifact's name (made a valid one by `artifact_name`); each log of a name is a new version.
        metadata: the figures and notes to show beside it (JSON values; NaN is logged as null).
        aliases: extra aliases besides W&B's ``latest``.

    Returns:
        The logged `wandb.Artifact`.
    """
    import wandb

    artifact = wandb.Artifact(name=artifact_name(name), type="model", metadata=nan_to_none(metadata))
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            artifact.add_file(str(path), name=rel.as_posix())
    run.log_artifact(artifact, aliases=list(aliases))
    return artifact


@dataclass(frozen=True)
class ExportedModel:
    """The exported best network, for `finish` to log as a model artifact: its folder and metadata."""

    folder: Path
    metadata: dict[str, Any]


class NoTracker:
    """Tracking switched off (`tracking: none`)."""

    def log_trial(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, table: Any, plots: dict[str, Path], summary: dict[str, Any],
               model: ExportedModel | None = None) -> None:
        """Log the trials table, the plots (by W&B key), the summary and the exported network, and close (here:
        nothing; the plots are in the run folder all the same)."""

    def abort(self) -> None:
        """Close after a search that stopped with an error (what was logged so far is kept)."""


class WandbTracker(NoTracker):
    """One offline W&B run: a point per trial, then the trials table, the plots, the summary and the model."""

    def __init__(self, recipe: Recipe, run_dir: Path):
        os.environ["WANDB_MODE"] = recipe.tracking.mode
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        atomic_write_text(id_file, run_id + "\n")
        self.wandb = wandb
        self.ref = WandbRunRef(run_id, recipe.tracking.project, recipe.name)
        self.run = wandb.init(project=recipe.tracking.project, name=recipe.name, id=run_id, resume="allow",
                              dir=str(run_dir), mode=recipe.tracking.mode, config=recipe.model_dump(mode="json"),
                              settings=wandb.Settings(console="off", x_disable_stats=True))

    def log_trial(self, row: dict[str, Any]) -> None:
        data = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and (k in NUMERIC or k.startswith("latency_"))}
        self.run.log({**data, "feasible": int(bool(row.get("feasible"))), "trial": row["index"]})

    def finish(self, table: Any, plots: dict[str, Path], summary: dict[str, Any],
               model: ExportedModel | None = None) -> None:
        logged: dict[str, Any] = {"trials": self.wandb.Table(dataframe=table.astype(str))}
        logged.update({key: self.wandb.Image(str(path)) for key, path in plots.items() if Path(path).is_file()})
        self.run.log(logged)
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        if model is not None:
            log_model_artifact(self.run, model.folder, f"{self.ref.name}-best",
                               {**model.metadata, "search_run": self.ref.as_dict()}, aliases=("best",))
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)


def make_tracker(recipe: Recipe, run_dir: Path) -> NoTracker:
    """The tracker the recipe asks for."""
    if recipe.tracking.backend == "none" or recipe.tracking.mode == "disabled":
        return NoTracker()
    return WandbTracker(recipe, run_dir)
