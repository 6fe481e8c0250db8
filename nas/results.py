"""The run's ledger: one row per architecture, saved atomically with the controller state after every result.

`state.json` holds rows, the controller's `state_dict` and the in-flight candidates in one file written
atomically, so a run killed at any moment resumes with nothing lost and nothing evaluated twice. It carries the
SHA-256 of its own content: a ledger damaged or edited since (a flipped digit is still valid JSON) is refused on
resume rather than continued from figures nobody measured.
`results.csv` is the same rows as a table, rewritten alongside.

Statuses: ``ok`` (evaluated, feasible), ``infeasible`` (evaluated, breaks a latency limit), ``failed`` (crashed
or non-finite), ``rejected`` (broke a FLOPs/params limit, or a latency limit on a predicted or looked-up figure:
no trial was spent).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import InputError, IntegrityError, json_sha256
from core.io import nan_to_none, atomic_write, atomic_write_json
from nas.controllers.base import Outcome
from nas.controllers.proposer import MemoryLedger
from nas.objectives import latency_column

BASE_COLUMNS = ["index", "arch", "status", "accuracy", "flops", "params"]
TAIL_COLUMNS = ["feasible", "reason", "error", "eval_seconds", "train_seconds", "trial_id", "finished_at"]


def score_of(row: dict[str, Any]) -> float | None:
    """The value controllers maximise: accuracy of a feasible, successful candidate (`Outcome.score`); None
    otherwise, and for a row without a status."""
    return Outcome.of(row).score if "status" in row else None


class RunLog(MemoryLedger):
    """Rows of one run plus the controller state, persisted in `run_dir/state.json`.

    The in-memory ledger (`get`, `reject`, `n_evaluated`) is `MemoryLedger`'s; this adds finish times, the
    results columns, the listeners and the atomic saves.

    Args:
        run_dir: the run's output folder.
        profiles: hardware profile names, one latency column each.
        metrics: the evaluator's figures beside accuracy (`Evaluator.metrics`, e.g. mAP), one column each.
    """

    def __init__(self, run_dir: Path, profiles: list[str], metrics: tuple[str, ...] = ()):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.profiles = list(profiles)
        self.metrics = list(metrics)
        self.controller_state: dict[str, Any] | None = None
        self.pending: list[str] = []
        self.listeners: list = []   # called with each completed trial's row (progress, tracking)

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + self.metrics + [latency_column(p) for p in self.profiles] + TAIL_COLUMNS

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append `row` (index and finish time are filled in) and return it."""
        return super().add({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **row})

    def best_feasible(self) -> dict[str, Any] | None:
        """The feasible row with the highest accuracy (ties: lower FLOPs)."""
        best, best_key = None, None
        for r in self.rows:   # each row scored once: the progress bar asks after every trial
            s = score_of(r)
            if s is not None and (best_key is None or (s, -r["flops"]) > best_key):   # ties: the first row
                best, best_key = r, (s, -r["flops"])
        return best

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def save(self, controller_state: dict[str, Any] | None = None, pending: list[str] | None = None) -> None:
        """Persist rows and controller state (atomic), then the CSV view."""
        if controller_state is not None:
            self.controller_state = controller_state
        if pending is not None:
            self.pending = list(pending)
        state = nan_to_none({"version": 1, "profiles": self.profiles, "metrics": self.metrics, "rows": self.rows,
                              "controller": self.controller_state, "pending": self.pending})
        atomic_write_json(self.state_path, {**state, "sha256": json_sha256(state)})
        atomic_write(self.run_dir / "results.csv", lambda tmp: self.table().to_csv(tmp, index=False))

    # ---- the search loops' ledger interface (nas.controllers.proposer.Ledger; `reject` is MemoryLedger's) --------
    def complete(self, arch: str, trial_id: str, result: dict[str, Any] | None, error: bool) -> dict[str, Any]:
        if error or not result or "status" not in result:
            row = {"arch": arch, "status": "failed", "feasible": False,
                   "error": "trial process crashed (see the Tune trial logs under tune/)"}
        else:
            row = {k: v for k, v in result.items() if k in self.columns}
            row["arch"] = arch
        row = self.add({**row, "trial_id": trial_id})
        for listener in self.listeners:
            listener(row)
        return row

    def checkpoint(self, controller_state: dict[str, Any], pending: list[str]) -> None:
        self.save(controller_state, pending)

    @classmethod
    def load(cls, run_dir: Path) -> RunLog:
        """The log saved in `run_dir`.

        Raises:
            InputError: no `state.json`, or one that is not a complete ledger (unreadable, not JSON, fields
                missing); `IntegrityError` when its content does not match the SHA-256 it was saved with.
        """
        path = Path(run_dir) / "state.json"
        try:
            data = json.loads(path.read_text())
            digest = data.pop("sha256", None)   # ledgers saved before checksums have none
            if digest is not None and digest != json_sha256(data):
                raise IntegrityError(f"{path}: SHA-256 mismatch: the ledger was damaged or edited after it was "
                                     "saved; restore it or start a new run")
            log = cls(run_dir, data["profiles"], tuple(data.get("metrics", ())))
            for row in data["rows"]:
                log.rows.append(row)
                log._by_arch[row["arch"]] = row
            log.controller_state, log.pending = data["controller"], data["pending"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{path}: not a readable run ledger ({type(err).__name__}: {err})") from None
        return log

