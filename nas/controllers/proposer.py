"""Turning a controller's proposals into candidates worth evaluating, with or without Ray Tune.

`Proposer` is the part every search loop shares: it asks the controller until a proposal is new (not already in
the ledger, not in flight) and passes the cheap checks (FLOPs, params, predicted latency). Known and rejected
proposals are answered at once (the controller is told the ledger's row), so they cost no evaluation. The Ray
Tune adapter (`nas.controllers.tune_adapter.ControllerSearcher`) wraps it for one trial per candidate;
`search_in_process` drives it directly for cheap objectives (tables, predictors), where a Tune trial per candidate
would cost far more than the evaluation itself.
"""
from __future__ import annotations

from collections.abc import Callable, Container, Hashable
from typing import Any, Protocol

from nas.controllers.base import Controller

Precheck = Callable[[Hashable], tuple[str | None, dict[str, Any]]]
Repair = Callable[[Hashable], Hashable]


class Ledger(Protocol):
    """What the search loops need from the run's record (`nas.results.RunLog` in a real run)."""

    def get(self, arch: str) -> dict[str, Any] | None: ...
    def reject(self, arch: str, reason: str, **extra: Any) -> dict[str, Any]: ...
    def complete(self, arch: str, trial_id: str, result: dict[str, Any] | None, error: bool,
                 **extra: Any) -> dict[str, Any]: ...
    def checkpoint(self, controller_state: dict[str, Any], pending: list[str]) -> None: ...


class SpaceExhausted(RuntimeError):
    """The controller kept proposing candidates that were rejected or already known."""


class Proposer:
    """The next candidate worth an evaluation.

    Args:
        controller: the ask/tell core.
        ledger: rows of every candidate seen so far.
        precheck: arch -> (violation or None, extra row fields); the cheap checks run before any evaluation.
        max_rejections: consecutive free answers (rejected or known) before `SpaceExhausted`.
        repair: arch -> the arch evaluated in its place (`nas.compression.repaired`, ``search.repair``); the
            controller is told the outcome of the repaired arch as that of its own proposal, so what it learns
            and keeps stays its own (a surrogate learns that a dominated compression changes nothing, instead of
            never seeing one), and the ledger holds what was evaluated, its ``proposed`` field naming the proposal
            where the repair changed it (`repaired_from`).
    """

    def __init__(self, controller: Controller, ledger: Ledger, precheck: Precheck, max_rejections: int = 10_000,
                 repair: Repair | None = None):
        self.controller, self.ledger, self.precheck = controller, ledger, precheck
        self.max_rejections, self.repair = max_rejections, repair

    def next(self, busy: Container[str] = ()) -> tuple[str, Hashable]:
        """(canonical string of the next new, feasible-looking candidate, the proposal it answers: the
        controller's arch, which `repair` may have turned into the candidate).

        Args:
            busy: candidates in flight; proposed again, they are skipped (their own result comes later).
        """
        space = self.controller.space
        for _ in range(self.max_rejections):
            asked = self.controller.ask()
            arch = asked if self.repair is None else self.repair(asked)
            string = space.to_string(arch)
            if string in busy:
                continue
            row = self.ledger.get(string)
            if row is not None:
                self.controller.tell(asked, row)
                continue
            violation, extra = self.precheck(arch)
            if violation is None:
                return string, asked
            self.controller.tell(asked, self.ledger.reject(string, violation, **extra,
                                                           **self.repaired_from(string, asked)))
        raise SpaceExhausted(f"{self.max_rejections} proposals in a row were infeasible or already evaluated; "
                             "the constraints may be too tight or the space exhausted")

    def repaired_from(self, string: str, asked: Hashable | None) -> dict[str, str]:
        """The ledger field naming the proposal `asked` that candidate `string` answers, where the repair changed
        it (``proposed``, a results column); nothing otherwise, or where the proposal is not known (a trial
        requeued by a resumed run)."""
        if asked is None or self.repair is None:
            return {}
        proposal = self.controller.space.to_string(asked)
        return {"proposed": proposal} if proposal != string else {}


class MemoryLedger:
    """A ledger kept in memory (in-process searches, benchmarks); rows in the order they were added."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._by_arch: dict[str, dict[str, Any]] = {}

    def get(self, arch: str) -> dict[str, Any] | None:
        """The row of `arch` if it was already seen."""
        return self._by_arch.get(arch)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append `row` (its index is filled in) and return it."""
        row = {"index": len(self.rows), **row}
        self.rows.append(row)
        self._by_arch[row["arch"]] = row
        return row

    def reject(self, arch: str, reason: str, **extra: Any) -> dict[str, Any]:
        return self.add({"arch": arch, "status": "rejected", "feasible": False, "reason": reason, **extra})

    def complete(self, arch: str, trial_id: str, result: dict[str, Any] | None, error: bool,
                 **extra: Any) -> dict[str, Any]:
        if error or not result:
            return self.add({"arch": arch, "status": "failed", "feasible": False, "accuracy": None, **extra})
        return self.add({"status": "ok", **result, **extra, "arch": arch})

    def checkpoint(self, controller_state: dict[str, Any], pending: list[str]) -> None:
        pass

    def n_evaluated(self) -> int:
        """Rows that cost an evaluation (everything but cheap rejections)."""
        return sum(r["status"] != "rejected" for r in self.rows)


def search_in_process(controller: Controller, ledger: Ledger, precheck: Precheck,
                      evaluate: Callable[[str], dict[str, Any]], budget: int, max_rejections: int = 10_000,
                      progress: Callable[[dict[str, Any]], None] | None = None, repair: Repair | None = None) -> int:
    """Run `budget` evaluations one after another in this process; returns how many ran.

    Args:
        controller, ledger, precheck, repair: as for `Proposer`.
        evaluate: arch string -> results row (``status``, ``accuracy``, latency columns, ...); an exception is
            recorded as a failed row, so a crashing objective never stops the search.
        budget: evaluations to run (rejected and known proposals are free).
        progress: called with each evaluated row.
    """
    proposer = Proposer(controller, ledger, precheck, max_rejections, repair)
    done = 0
    while done < budget:
        try:
            string, asked = proposer.next()
        except SpaceExhausted:
            break
        try:
            result, error = evaluate(string), False
        except Exception:  # noqa: BLE001 - a candidate's failure is data
            result, error = None, True
        row = ledger.complete(string, f"p{done}", result, error, **proposer.repaired_from(string, asked))
        controller.tell(asked, row)
        done += 1
        if progress is not None:
            progress(row)
    return done
