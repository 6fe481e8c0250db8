"""Multi-objective evolution in the manner of NSGA-II (Deb et al., 2002): accuracy against latency.

Objectives: maximise accuracy; minimise latency on every profile of the search (`SearchObjectives.profiles`), or
FLOPs when the search has no latency profile. Generations are asynchronous, so trials may run concurrently: the
first `population_size` proposals are random; after that each child is bred from the current parents (binary
tournaments on non-domination rank, then crowding distance; uniform crossover; one mutation). Once
`population_size` children have results, parents and children are merged and the best `population_size` by rank
and crowding become the next parents. Failed, rejected and over-limit candidates never join (hard constraints).

`pareto_front()` returns every non-dominated candidate seen, the controller's answer to a multi-objective search.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from pydantic import Field

from nas.controllers.base import Controller, ControllerOptions, Outcome, register_controller
from nas.objectives import dominance_matrix, dominates


class NSGA2Options(ControllerOptions):
    """Options of the NSGA-II controller."""

    population_size: int = Field(16, ge=2, description="parents kept each generation")
    crossover_prob: float = Field(0.5, ge=0, le=1, description="chance a child crosses two parents first")


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index of each point (0 = non-dominated), all objectives minimised."""
    n = len(points)
    better = dominance_matrix(points)
    ranks = np.full(n, -1)
    dominated_by = better.sum(0)        # how many points dominate each point
    front, rank = np.flatnonzero(dominated_by == 0), 0
    while front.size:
        ranks[front] = rank
        dominated_by = dominated_by - better[front].sum(0)
        dominated_by[ranks >= 0] = -1
        front, rank = np.flatnonzero(dominated_by == 0), rank + 1
    return ranks


def crowding_distances(points: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Crowding distance of each point within its front (boundary points: inf)."""
    dist = np.zeros(len(points))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        for m in range(points.shape[1]):
            order = idx[np.argsort(points[idx, m], kind="stable")]
            span = points[order[-1], m] - points[order[0], m]
            dist[order[0]] = dist[order[-1]] = np.inf
            if len(order) > 2 and span > 0:
                dist[order[1:-1]] += (points[order[2:], m] - points[order[:-2], m]) / span
    return dist


@register_controller("nsga2")
class NSGA2(Controller):
    """NSGA-II style Pareto search over accuracy and latency (or FLOPs)."""

    Options = NSGA2Options
    options: NSGA2Options

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.parents: list[tuple[str, list[float]]] = []
        self.children: list[tuple[str, list[float]]] = []
        self.front: list[tuple[str, list[float]]] = []
        self._order: np.ndarray | None = None

    def objectives_of(self, outcome: Outcome) -> list[float] | None:
        """Minimised objective vector: (-accuracy, latency per profile) or (-accuracy, FLOPs); None when the
        candidate cannot join (failed, infeasible, or a cost figure missing)."""
        if outcome.score is None:
            return None
        costs = ([outcome.latency.get(p) for p in self.objectives.profiles] if self.objectives.profiles
                 else [outcome.flops])
        if any(c is None for c in costs):
            return None
        return [-outcome.score, *costs]

    # ---- proposing ------------------------------------------------------------------------------------------
    def _propose(self) -> Hashable:
        if len(self.parents) < 2:
            return self.space.sample(self.rng)
        return self._breed(self._tournament, self.options.crossover_prob)

    def _tournament(self) -> Hashable:
        """The better of two random parents by (rank, -crowding)."""
        if self._order is None:
            points = np.array([obj for _, obj in self.parents])
            ranks = non_dominated_ranks(points)
            crowd = crowding_distances(points, ranks)
            self._order = np.lexsort((-crowd, ranks)).argsort()   # position in the (rank, -crowding) order
        i, j = self.rng.choice(len(self.parents), size=2, replace=False)
        best = i if self._order[i] < self._order[j] else j
        return self.space.decode(self.parents[int(best)][0])

    # ---- learning -------------------------------------------------------------------------------------------
    def _observe(self, arch: Hashable, outcome: Outcome) -> None:
        obj = self.objectives_of(outcome)
        if obj is None:
            return
        member = (self.space.to_string(arch), obj)
        self._update_front(member)
        if any(s == member[0] for s, _ in self.parents + self.children):
            return
        self.children.append(member)
        if len(self.children) >= self.options.population_size:
            self._select()

    def _select(self) -> None:
        """Environmental selection: the best `population_size` of parents + children by rank, then crowding."""
        pool = self.parents + self.children
        points = np.array([obj for _, obj in pool])
        ranks = non_dominated_ranks(points)
        crowd = crowding_distances(points, ranks)
        keep = np.lexsort((-crowd, ranks))[: self.options.population_size]
        self.parents, self.children, self._order = [pool[int(k)] for k in sorted(keep)], [], None

    def _update_front(self, member: tuple[str, list[float]]) -> None:
        point = np.array(member[1])
        if any(dominates(np.array(o), point) or s == member[0] for s, o in self.front):
            return
        self.front = [(s, o) for s, o in self.front if not dominates(point, np.array(o))] + [member]

    def pareto_front(self) -> list[dict[str, Any]]:
        """Every non-dominated candidate seen: arch, accuracy and its cost figures, by increasing cost."""
        names = list(self.objectives.profiles) or ["flops"]
        rows = [{"arch": s, "accuracy": -o[0], **dict(zip(names, o[1:]))} for s, o in self.front]
        return sorted(rows, key=lambda r: [r[n] for n in names])

    # ---- state ----------------------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"parents": [list(m) for m in self.parents], "children": [list(m) for m in self.children],
                "front": [list(m) for m in self.front]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.parents = [(s, list(o)) for s, o in state["parents"]]
        self.children = [(s, list(o)) for s, o in state["children"]]
        self.front = [(s, list(o)) for s, o in state["front"]]
        self._order = None
