"""Local search over one-decision neighbours, plain or steered by the Gaussian-process surrogate.

``surrogate: none`` is the plain algorithm the NAS literature keeps finding hard to beat (White et al., "Local
Search is State of the Art for Neural Architecture Search Benchmarks", 2021): from a random start, evaluate
every neighbour (each differing from the current network in one decision), move to the best one if it improves
on the current network (best improvement), and restart from a new random network at a local optimum.

Steered (the default, ``surrogate: gp``), each proposal is the candidate of highest expected improvement under
the GP (`nas.controllers.gp`) among the unseen one-decision neighbours of the `parents` best networks so far and
`randoms` random networks (BANANAS, White et al. 2021, proposes from mutations of its best networks the same way).
The neighbourhoods keep the search where the good networks are; the random share and the GP's uncertainty keep it
from settling on one local optimum. Until `warm` networks have a score, proposals are random.
The defaults (10 parents, 300 randoms) were chosen by leave-one-problem-out on the real problems of
`bench/controllers.py --leave-one-out`.

Candidates the cheap checks rejected (over a latency limit) are never parents; their latency trains the
surrogate's latency model, which skips candidates clearly over a limit, as in the other steered controllers.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from pydantic import Field

from nas.controllers.base import Controller, Outcome, register_controller
from nas.controllers.surrogate import Surrogate, SurrogateOptions


class LocalSearchOptions(SurrogateOptions):
    """Options of local search."""

    parents: int = Field(10, ge=1, description="steered: the best networks whose neighbours are candidates")
    randoms: int = Field(300, ge=0, description="steered: random networks added to the candidates")
    warm: int = Field(10, ge=2, description="networks with a score before the surrogate starts steering")


def neighbours(space, arch: Hashable) -> list[Hashable]:
    """Every arch that differs from `arch` in exactly one used decision, in decision order."""
    decisions = list(space.to_decisions(arch))
    out = []
    for d, (size, choice) in enumerate(zip(space.decision_sizes(), decisions)):
        if choice is None:
            continue
        for c in range(size):
            if c != choice:
                out.append(space.from_decisions([0 if x is None else x for x in decisions[:d]] + [c] +
                                                [0 if x is None else x for x in decisions[d + 1:]]))
    return out


@register_controller("local")
class LocalSearch(Controller):
    """Best-improvement local search with random restarts, or its GP-steered form (see the module)."""

    Options = LocalSearchOptions
    options: LocalSearchOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        model = "ridge" if self.options.surrogate == "none" else self.options.surrogate
        self.surrogate = Surrogate(self.space, self.options.ridge, self.objectives.limits, model)
        self.scores: dict[str, float | None] = {}    # every candidate told: its score (None: no score)
        self.current: str | None = None              # plain: the network whose neighbourhood is being swept
        self.queue: list[str] = []                   # plain: its neighbours not proposed yet
        self.ranked: list[Hashable] = []             # steered: candidates by increasing acquisition

    # ---- proposing ------------------------------------------------------------------------------------------
    def _propose(self) -> Hashable:
        if self.options.surrogate == "none":
            return self._plain()
        if len(self.surrogate) < self.options.warm:
            return self.space.sample(self.rng)
        if self.surrogate.stale() or not self.ranked:
            self.ranked = self.surrogate.rank(self._pool())[::-1]
        while len(self.ranked) > 1:   # the ranking holds until the models change; rejected ones are skipped
            arch = self.ranked.pop()
            if self.space.to_string(arch) not in self.scores:
                return arch
        return self.ranked.pop()

    def _pool(self) -> list[Hashable]:
        """Candidates: the neighbours of the best `parents` networks, plus `randoms` random ones."""
        scored = sorted((s for s, v in self.scores.items() if v is not None), key=lambda s: -self.scores[s])
        pool: dict[str, Hashable] = {}
        for string in scored[:self.options.parents]:
            for arch in neighbours(self.space, self.space.decode(string)):
                pool.setdefault(self.space.to_string(arch), arch)
        for _ in range(self.options.randoms):
            arch = self.space.sample(self.rng)
            pool.setdefault(self.space.to_string(arch), arch)
        return list(pool.values())

    def _plain(self) -> Hashable:
        while self.queue:
            string = self.queue.pop(0)
            if string not in self.scores:
                return self.space.decode(string)
        if self.current is not None:   # the sweep is done: move to the best neighbour, or restart
            self._move()
            if self.queue:
                return self._plain()
        return self.space.sample(self.rng)

    def _move(self) -> None:
        """End of a sweep: the best neighbour becomes current if it beats it, else restart (current = None)."""
        here = self.scores.get(self.current)
        near = [(self.scores.get(self.space.to_string(a)), self.space.to_string(a))
                for a in neighbours(self.space, self.space.decode(self.current))]
        best = max(((v, s) for v, s in near if v is not None), default=None)
        if best is not None and (here is None or best[0] > here):
            self._start(best[1])
        else:
            self.current = None

    def _start(self, string: str) -> None:
        self.current = string
        arches = neighbours(self.space, self.space.decode(string))
        order = self.rng.permutation(len(arches))
        self.queue = [self.space.to_string(arches[int(i)]) for i in order]

    # ---- learning -------------------------------------------------------------------------------------------
    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        string = self.space.to_string(arch)
        self.surrogate.observe(arch, outcome.score, outcome.latency)
        if string in self.scores:
            return
        self.scores[string] = outcome.score
        if self.options.surrogate == "none" and self.current is None and outcome.score is not None:
            self._start(string)   # a restart begins at the first random network that has a score

    # ---- state ----------------------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"scores": [[s, v] for s, v in self.scores.items()], "current": self.current,
                "queue": list(self.queue), "surrogate": self.surrogate.state_dict(),
                "ranked": [self.space.to_string(a) for a in self.ranked]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.scores = {s: v for s, v in state["scores"]}
        self.current, self.queue = state["current"], list(state["queue"])
        self.surrogate.load_state_dict(state["surrogate"])
        self.ranked = [self.space.decode(a) for a in state["ranked"]]
