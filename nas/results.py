"""The run's ledger: one row per architecture, with the controller state and the candidates in flight.

Two files hold it, so that recording a trial costs the same at the 10,000th trial as at the first:

- `state.json`, the snapshot: rows, the controller's `state_dict` and the in-flight candidates, written atomically
  and carrying the SHA-256 of its own content (a ledger damaged or edited since, a flipped digit still being valid
  JSON, is refused on resume rather than continued from figures nobody measured);
- `journal.jsonl`, one line per checkpoint since the snapshot: the new rows, what changed in the controller state
  (`core.jsondelta`: a history that grew is written as its new tail) and the candidates in flight. Each line's
  SHA-256 is chained to the one before; a last line cut short by a kill is ignored (that checkpoint never
  completed), any other damage is refused. When the journal reaches half the rows it is folded into a new snapshot,
  so the snapshot's cost (proportional to the rows) is spread over as many trials and stays flat per trial.

A run killed at any moment resumes from the last complete checkpoint with nothing lost and nothing evaluated twice,
and the controller in exactly the state it was saved in. `RunLog.load` reads both files; read the rows through it
(a finished run has folded its journal into `state.json`). `results.csv` is the same rows as a table: a row is
appended per trial, the file rewritten with each snapshot.

Statuses: ``ok`` (evaluated, feasible), ``infeasible`` (evaluated, breaks a latency limit), ``failed`` (crashed
or non-finite), ``rejected`` (broke a FLOPs/params limit, or a latency limit on a predicted or looked-up figure:
no trial was spent).
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import InputError, IntegrityError, json_sha256
from core.io import nan_to_none, atomic_write, atomic_write_json
from core.jsondelta import apply, delta
from nas.controllers.base import Outcome
from nas.controllers.proposer import MemoryLedger
from nas.objectives import implementation_column, latency_column

BASE_COLUMNS = ["index", "arch", "status", "accuracy", "flops", "params"]
# proposed: the controller's proposal a candidate answers, where ``search.repair`` changed it (empty otherwise)
TAIL_COLUMNS = ["feasible", "reason", "proposed", "error", "eval_seconds", "train_seconds", "trial_id", "finished_at",
                "node", "node_ip"]


def score_of(row: dict[str, Any]) -> float | None:
    """The value controllers maximise: accuracy of a feasible, successful candidate (`Outcome.score`); None
    otherwise, and for a row without a status."""
    return Outcome.of(row).score if "status" in row else None


class RunLog(MemoryLedger):
    """Rows of one run plus the controller state, persisted in `run_dir/state.json` and `journal.jsonl`.

    The in-memory ledger (`get`, `reject`) is `MemoryLedger`'s; this adds finish times, the results columns, the
    listeners, running counts (`n_evaluated`, `best_feasible` cost nothing per call) and the saves: `save` writes a
    snapshot, `checkpoint` appends one journal line.

    Args:
        run_dir: the run's output folder.
        profiles: hardware profile names, one latency column each.
        metrics: the evaluator's figures beside accuracy (`Evaluator.metrics`, e.g. mAP), one column each.
        implementations: profiles whose constraint chooses an implementation: an ``implementation_<profile>`` column
            each, naming the engine the candidate's latency is for.
    """

    JOURNAL = "journal.jsonl"
    MIN_JOURNAL = 64   # journal lines before a snapshot may fold them in (then: half the rows)

    def __init__(self, run_dir: Path, profiles: list[str], metrics: tuple[str, ...] = (),
                 implementations: tuple[str, ...] = ()):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.profiles = list(profiles)
        self.implementations = list(implementations)
        self.metrics = list(metrics)
        self.controller_state: dict[str, Any] | None = None
        self.pending: list[str] = []
        self.listeners: list = []   # called with each completed trial's row (progress, tracking)
        self._evaluated, self._best, self._best_key = 0, None, None
        self._seq, self._digest = 0, ""            # checkpoints persisted, digest of the last one
        self._saved_rows, self._journal_lines = 0, 0
        self._saved_state: Any = None              # the controller state as persisted (a private copy)
        self.mirror = None   # a copy on shared storage (`nas.storage.RunStorage`, `cluster.storage`), if any

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def seq(self) -> int:
        """Checkpoints persisted so far (a snapshot holds those up to its own `seq`)."""
        return self._seq

    @property
    def journal_path(self) -> Path:
        return self.run_dir / self.JOURNAL

    @property
    def columns(self) -> list[str]:
        return (BASE_COLUMNS + self.metrics + [latency_column(p) for p in self.profiles]
                + [implementation_column(p) for p in self.implementations] + TAIL_COLUMNS)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append `row` (index and finish time are filled in) and return it."""
        return self._count(super().add({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **row}))

    def _count(self, row: dict[str, Any]) -> dict[str, Any]:
        self._evaluated += row.get("status") != "rejected"
        s = score_of(row)
        if s is not None and (self._best_key is None or (s, -row["flops"]) > self._best_key):   # ties: first row
            self._best, self._best_key = row, (s, -row["flops"])
        return row

    def n_evaluated(self) -> int:
        """Rows that cost an evaluation (everything but cheap rejections)."""
        return self._evaluated

    def best_feasible(self) -> dict[str, Any] | None:
        """The feasible row with the highest accuracy (ties: lower FLOPs, then the first)."""
        return self._best

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def save(self, controller_state: dict[str, Any] | None = None, pending: list[str] | None = None) -> None:
        """Write a snapshot of rows, controller state and in-flight candidates (atomic), fold the journal into it,
        and rewrite the CSV view."""
        if controller_state is not None:
            self.controller_state = controller_state
        if pending is not None:
            self.pending = list(pending)
        state = nan_to_none({"version": 1, "profiles": self.profiles, "metrics": self.metrics,
                             **({"implementations": self.implementations} if self.implementations else {}),
                             "rows": self.rows, "controller": self.controller_state, "pending": self.pending,
                             "seq": self._seq})
        self._digest = json_sha256(state)
        atomic_write_json(self.state_path, {**state, "sha256": self._digest})
        self.journal_path.unlink(missing_ok=True)   # a crash before this: the journal's lines are <= seq, skipped
        self._saved_rows, self._journal_lines = len(self.rows), 0
        self._saved_state = state["controller"]     # a copy: nan_to_none rebuilt it
        atomic_write(self.run_dir / "results.csv", lambda tmp: self.table().to_csv(tmp, index=False))
        if self.mirror is not None:
            self.mirror.snapshot(self.run_dir, self._seq)

    # ---- the search loops' ledger interface (nas.controllers.proposer.Ledger; `reject` is MemoryLedger's) --------
    def complete(self, arch: str, trial_id: str, result: dict[str, Any] | None, error: bool,
                 **extra: Any) -> dict[str, Any]:
        if error or not result or "status" not in result:
            row = {"arch": arch, "status": "failed", "feasible": False,
                   "error": "trial process crashed (see the Tune trial logs under tune/)"}
        else:
            row = {k: v for k, v in result.items() if k in self.columns}
            row["arch"] = arch
        row = self.add({**row, **extra, "trial_id": trial_id})
        for listener in self.listeners:
            listener(row)
        return row

    def checkpoint(self, controller_state: dict[str, Any], pending: list[str]) -> None:
        """Persist the rows added since the last checkpoint, the controller state and the in-flight candidates:
        one journal line (the cost of what changed), or a new snapshot once the journal is long."""
        self._seq += 1
        if self._journal_lines >= max(self.MIN_JOURNAL, len(self.rows) // 2):
            self.save(controller_state, pending)
            return
        self.controller_state, self.pending = controller_state, list(pending)
        rows = self.rows[self._saved_rows:]
        entry = nan_to_none({"seq": self._seq, "rows": rows, "pending": self.pending,
                             "controller": delta(self._saved_state, controller_state)})
        text = json.dumps(entry)
        self._digest = _chain(self._digest, entry)
        line = text[:-1] + f', "sha256": "{self._digest}"}}\n'
        with open(self.journal_path, "a") as f:
            f.write(line)
        if self.mirror is not None:
            self.mirror.journal(self._seq, line)
        self._saved_state = apply(self._saved_state, json.loads(text)["controller"], inplace=True)
        self._saved_rows, self._journal_lines = len(self.rows), self._journal_lines + 1
        _append_csv(self.run_dir / "results.csv", self.columns, rows)

    @classmethod
    def load(cls, run_dir: Path) -> RunLog:
        """The log saved in `run_dir`: its snapshot and the journal written since.

        Raises:
            InputError: no `state.json`, or one that is not a complete ledger (unreadable, not JSON, fields
                missing); `IntegrityError` when its content, or a journal line, does not match the SHA-256 it was
                saved with.
        """
        path = Path(run_dir) / "state.json"
        try:
            data = json.loads(path.read_text())
            digest = data.pop("sha256", None)   # ledgers saved before checksums have none
            if digest is not None and digest != json_sha256(data):
                raise IntegrityError(f"{path}: SHA-256 mismatch: the ledger was damaged or edited after it was "
                                     "saved; restore it or start a new run")
            log = cls(run_dir, data["profiles"], tuple(data.get("metrics", ())), tuple(data.get("implementations", ())))
            for row in data["rows"]:
                log._keep(row)
            log.controller_state, log.pending = data["controller"], data["pending"]
            log._seq, log._digest = data.get("seq", 0), digest or ""
            log._replay_journal()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{path}: not a readable run ledger ({type(err).__name__}: {err})") from None
        log._saved_rows = len(log.rows)
        log._saved_state = json.loads(json.dumps(log.controller_state))   # a private copy, as `save` keeps
        return log

    def _keep(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._by_arch[row["arch"]] = row
        self._count(row)

    def _replay_journal(self) -> None:
        """Apply the journal's complete lines written after the snapshot (`IntegrityError` for a damaged one); text
        after the last newline is a line cut short by a kill: that checkpoint never completed, and is ignored."""
        path = self.journal_path
        if not path.is_file():
            return
        for number, line in enumerate(path.read_text().split("\n")[:-1], 1):
            entry = json.loads(line)
            digest = entry.pop("sha256", None)
            if entry["seq"] <= self._seq:    # folded into the snapshot already (a crash between the two writes)
                continue
            if entry["seq"] != self._seq + 1 or digest != _chain(self._digest, entry):
                raise IntegrityError(f"{path}: line {number}: SHA-256 mismatch: the journal was damaged or edited "
                                     "after it was saved; restore it or start a new run")
            for row in entry["rows"]:
                self._keep(row)
            self.controller_state = apply(self.controller_state, entry["controller"], inplace=True)   # from JSON
            self.pending, self._seq, self._digest = entry["pending"], entry["seq"], digest
            self._journal_lines += 1


def _chain(previous: str, entry: dict[str, Any]) -> str:
    """A journal line's digest: its content's, chained to the line before (a deleted line breaks the chain)."""
    return hashlib.sha256((previous + json_sha256(entry)).encode()).hexdigest()


def _append_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Append `rows` to the CSV view as `DataFrame.to_csv` would write them (None and NaN as empty cells)."""
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        for row in rows:
            writer.writerow(["" if (v := row.get(c)) is None or v != v else v for c in columns])
