"""The one adapter that runs any ask/tell `Controller` as a Ray Tune `Searcher`.

It also applies the cheap checks before a trial is spent (`nas.controllers.proposer.Proposer`): a proposal that
breaks a FLOPs, params or predicted-latency limit, or that was already evaluated, is answered at once (the
controller is told, the ledger records it) and the next proposal is asked for, without a Tune trial. After every
completed trial the ledger saves the rows, the controller state and the in-flight candidates in one atomic write,
which is what `--resume` restores from.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from core.io import atomic_write_text
from nas.controllers.base import Controller
from nas.controllers.proposer import Ledger, Precheck, Proposer, Repair, SpaceExhausted


class ControllerSearcher(Searcher):
    """Ray Tune `Searcher` around a Ray-free controller.

    Args:
        controller: the ask/tell core.
        ledger: where outcomes are recorded and checkpoints written.
        precheck: arch -> (violation or None, extra row fields); runs before a trial is spent.
        requeue: arch strings that were in flight when an earlier session stopped; proposed first.
        max_rejections: consecutive free answers (rejected or known) before the search ends.
        capacity: how many trials may be in flight now (`nas.search.ClusterCapacity`, for `concurrency: auto`);
            None: Tune's `max_concurrent_trials` limits them.
        repair: as for `Proposer`; each trial's outcome is told as that of the proposal it answers.
    """

    def __init__(self, controller: Controller, ledger: Ledger, precheck: Precheck,
                 requeue: list[str] | None = None, max_rejections: int = 10_000,
                 capacity: Callable[[], int] | None = None, repair: Repair | None = None):
        super().__init__(metric="accuracy", mode="max")
        self.controller, self.ledger = controller, ledger
        self.proposer = Proposer(controller, ledger, precheck, max_rejections, repair)
        self.requeue = list(requeue or [])
        self.pending: dict[str, str] = {}
        self.asked: dict[str, Hashable] = {}   # trial id -> the proposal its candidate answers (not requeued)
        self.exhausted: str | None = None
        self.capacity = capacity

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.exhausted:
            return Searcher.FINISHED
        if self.capacity is not None and len(self.pending) >= self.capacity():
            return None   # Tune asks again on a later step
        if self.requeue:
            string = self.requeue.pop(0)
        else:
            try:
                string, asked = self.proposer.next(busy={*self.pending.values(), *self.requeue})
            except SpaceExhausted as err:
                self.exhausted = str(err)
                self._checkpoint()
                return Searcher.FINISHED
            self.asked[trial_id] = asked
        self.pending[trial_id] = string
        return {"arch": string}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        string = self.pending.pop(trial_id, None)
        if string is None:
            return
        asked = self.asked.pop(trial_id, None)
        row = self.ledger.complete(string, trial_id, result, error, **self.proposer.repaired_from(string, asked))
        self.controller.tell(self.controller.space.decode(string) if asked is None else asked, row)
        self._checkpoint()

    def _checkpoint(self) -> None:
        self.ledger.checkpoint(self.controller.state_dict(), self.requeue + list(self.pending.values()))

    # Tune's own experiment checkpoints (used by Tuner.restore); --resume uses the ledger instead.
    def get_state(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "requeue": self.requeue + list(self.pending.values())}

    def set_state(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.requeue, self.pending, self.asked = list(state["requeue"]), {}, {}

    def save(self, checkpoint_path: str) -> None:
        atomic_write_text(checkpoint_path, json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))
