"""The one adapter that runs any ask/tell `Controller` as a Ray Tune `Searcher`.

It also applies the cheap checks before a trial is spent: a proposal that breaks a FLOPs/params limit, or that was
already evaluated, is answered at once (the controller is told, the ledger records it) and the next proposal is
asked for, without a Tune trial. After every completed trial the ledger saves the rows, the controller state and
the in-flight candidates in one atomic write, which is what `--resume` restores from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Hashable

from ray.tune.search import Searcher

from nas.controllers.base import Controller
from nas.io import atomic_write_text


class Ledger(Protocol):
    """What the adapter needs from the run's record (`nas.results.RunLog` in a real run)."""

    def known_score(self, arch: str) -> tuple[bool, float | None]: ...
    def reject(self, arch: str, reason: str, **extra: Any) -> None: ...
    def complete(self, arch: str, trial_id: str, result: dict[str, Any] | None, error: bool) -> float | None: ...
    def checkpoint(self, controller_state: dict[str, Any], pending: list[str]) -> None: ...


class SpaceExhausted(RuntimeError):
    """The controller kept proposing candidates that were rejected or already known."""


class ControllerSearcher(Searcher):
    """Ray Tune `Searcher` around a Ray-free controller.

    Args:
        controller: the ask/tell core.
        ledger: where outcomes are recorded and checkpoints written.
        precheck: arch -> (violation or None, extra row fields); runs before a trial is spent.
        requeue: arch strings that were in flight when an earlier session stopped; proposed first.
        max_rejections: consecutive free answers (rejected or known) before the search ends.
    """

    def __init__(self, controller: Controller, ledger: Ledger,
                 precheck: Callable[[Hashable], tuple[str | None, dict[str, Any]]],
                 requeue: list[str] | None = None, max_rejections: int = 10_000):
        super().__init__(metric="accuracy", mode="max")
        self.controller, self.ledger, self.precheck = controller, ledger, precheck
        self.requeue = list(requeue or [])
        self.max_rejections = max_rejections
        self.pending: dict[str, str] = {}
        self.exhausted: str | None = None

    def _next_arch(self) -> str:
        space = self.controller.space
        for _ in range(self.max_rejections):
            arch = self.controller.ask()
            string = space.to_string(arch)
            if string in self.pending.values() or string in self.requeue:
                continue   # already in flight: its real result will reach the controller when it finishes
            known, score = self.ledger.known_score(string)
            if known:
                self.controller.tell(arch, score)
                continue
            violation, extra = self.precheck(arch)
            if violation is None:
                return string
            self.ledger.reject(string, violation, **extra)
            self.controller.tell(arch, None)
        raise SpaceExhausted(f"{self.max_rejections} proposals in a row were infeasible or already evaluated; "
                             "the constraints may be too tight or the space exhausted")

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.exhausted:
            return Searcher.FINISHED
        if self.requeue:
            string = self.requeue.pop(0)
        else:
            try:
                string = self._next_arch()
            except SpaceExhausted as err:
                self.exhausted = str(err)
                self._checkpoint()
                return Searcher.FINISHED
        self.pending[trial_id] = string
        return {"arch": string}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        string = self.pending.pop(trial_id, None)
        if string is None:
            return
        score = self.ledger.complete(string, trial_id, result, error)
        self.controller.tell(self.controller.space.decode(string), score)
        self._checkpoint()

    def _checkpoint(self) -> None:
        self.ledger.checkpoint(self.controller.state_dict(), self.requeue + list(self.pending.values()))

    # Tune's own experiment checkpoints (used by Tuner.restore); --resume uses the ledger instead.
    def get_state(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "requeue": self.requeue + list(self.pending.values())}

    def set_state(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.requeue, self.pending = list(state["requeue"]), {}

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(checkpoint_path, json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))
