"""Surrogate-assisted proposals: a cheap model of what the controller maximises picks which candidate it proposes.

Evaluations are the costly part of a search; asking the controller is nearly free. So instead of proposing its
next draw as is, a steered controller draws `candidates` of them (children of tournament winners for evolution,
policy samples for RL, neighbours of the best networks for local search), and proposes the one a score model
fitted on every outcome so far rates highest, preferring candidates it has not seen. This is predictor-guided
search (BANANAS, White et al. 2021; NPENAS, Wei et al. 2022); the controller's own algorithm still decides where
the draws come from, so the search keeps its locality (evolution, local search) or its learnt distribution (RL).

The score model (`model`):
- ``gp`` (the default): a Gaussian process over the decisions with an exponentiated Hamming kernel, on the
  normal scores of the ranks, proposing by expected improvement (`nas.controllers.gp`). It sees the space's
  `effective_decisions`, so two genotypes of one network (an NB201 cell with dead edges, a NAS-Bench-Macro stage
  with its identities in another order) are one point. It models interactions between decisions, which real
  benchmarks have: on NAS-Bench-201 under a latency limit the ridge model steered evolution to worse than random
  on some problems. Past `GP_POINTS` (400) scored candidates, as in a prescreen of thousands of cheap estimates,
  the ridge model takes over: it is well determined there, and the GP's cubic refits would dominate the search;
- ``ridge``: ridge regression on one-hot features of the decisions, fitted to the ranks of the scores (an
  additive model; the synthetic NB201 table, nearly additive by construction, is where it shines).

A latency model per profile with a hard limit (ridge regression on one-hot decisions, either way) fits the latency
figures the controller is told (rejected candidates carry them too); draws it puts over a limit by more than
`MARGIN` residual standard deviations are skipped when any other draw is left. Such draws would be rejected for
free, but thousands of them slow an in-process search down, while near the limit, where the best feasible
networks lie, nothing is skipped. Steering starts once `warm` candidates have a score. The GP is refitted at every
new score (its length scale and noise re-chosen when the scores have grown by a tenth); the ridge models when the
candidates seen have grown by a tenth, from sufficient statistics kept as candidates arrive. The fits are part of
the JSON state, so a resumed search proposes exactly what the uninterrupted one would.

`python bench/controllers.py` measures each controller with and without steering, and the GP against the ridge
model, on real NAS-Bench-201 and NAS-Bench-Macro problems (the README has the table).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from nas.controllers.base import ControllerOptions
from nas.controllers.gp import CategoricalGP
from search_spaces.base import SearchSpace


class SurrogateOptions(ControllerOptions):
    """Options of a controller whose proposals a surrogate can steer."""

    surrogate: Literal["gp", "ridge", "none"] = Field("gp", description="gp: propose the draw of highest expected "
                                                      "improvement under a Gaussian process on the decisions; ridge: "
                                                      "the best-predicted draw by a ridge regression on one-hot "
                                                      "decisions; none: the plain algorithm")
    candidates: int = Field(10, ge=1, description="draws the surrogate chooses each proposal from")
    warm: int = Field(8, ge=2, description="scored candidates before the surrogate starts steering")
    ridge: float = Field(1.0, gt=0, description="L2 penalty of the score model (ridge regression)")


MARGIN = 2.0   # a draw is skipped when its predicted latency exceeds a limit by more than MARGIN residual sd
GP_POINTS = 400   # scored candidates up to which the GP scores (a prescreen scores thousands on cheap estimates:
                  # there the additive ridge model is well determined, and a GP refit per score would cost O(n^3))
LATENCY_RIDGE = 1e-3   # latency is nearly additive and barely noisy: fitted closely, once it has more rows than columns


class _Regression:
    """Sufficient statistics of a least-squares fit on one-hot rows, updated one row at a time."""

    def __init__(self, width: int):
        self.gram, self.sums, self.xty = np.zeros((width, width)), np.zeros(width), np.zeros(width)
        self.n, self.y_sum, self.yy = 0, 0.0, 0.0

    def add(self, cols: np.ndarray, y: float = 0.0) -> None:
        self.gram[np.ix_(cols, cols)] += 1.0
        self.sums[cols] += 1.0
        self.xty[cols] += y
        self.n, self.y_sum, self.yy = self.n + 1, self.y_sum + y, self.yy + y * y

    def solve(self, ridge: float, xty: np.ndarray | None = None, y_sum: float | None = None) -> list:
        """[weights, intercept, residual sd] of ridge regression on centred features (targets `xty`/`y_sum`
        instead of the recorded ones when given; the sd then is not meaningful)."""
        xty = self.xty if xty is None else xty
        y_sum = self.y_sum if y_sum is None else y_sum
        mean_x, mean_y = self.sums / self.n, y_sum / self.n
        sxx = self.gram - self.n * np.outer(mean_x, mean_x)
        sxy = xty - self.sums * mean_y
        w = np.linalg.solve(sxx + ridge * np.eye(len(self.sums)), sxy)
        rss = self.yy - self.n * mean_y ** 2 - 2 * w @ sxy + w @ sxx @ w
        return [w, float(mean_y - mean_x @ w), float(np.sqrt(max(rss, 0.0) / self.n))]


class Surrogate:
    """What a controller has seen, with a ridge model of its scores and one of its latency on each profile that
    has a hard limit (see the module).

    Args:
        space: the search space (its decision view gives the features).
        ridge: L2 penalty of the score model.
        limits: hard latency limits (ms) per profile.
    """

    def __init__(self, space: SearchSpace, ridge: float = 1.0, limits: Mapping[str, float] | None = None,
                 model: str = "ridge"):
        self.space, self.ridge, self.limits, self.model = space, ridge, dict(limits or {}), model
        self.offsets = np.concatenate([[0], np.cumsum(space.decision_sizes())]).astype(int)
        self._reset()

    def _reset(self) -> None:
        width = int(self.offsets[-1])
        self.seen: dict[str, list] = {}   # string -> [score or None, {profile: ms}]; in the order told
        self._seen_rows: list[list] = []   # the same as state_dict's rows, appended as they come (see state_dict)
        self._scored: list[tuple[np.ndarray, float]] = []   # (active one-hot columns, score)
        self._decisions: list[tuple[int, ...]] = []           # the scored candidates' decisions (-1: unused)
        self.gp: CategoricalGP | None = None
        self.gp_state: list | None = None   # [scored fitted on, length scale, noise, scored when they were chosen]
        self._scores = _Regression(width)                     # the scored candidates' features
        self._latency = {p: _Regression(width) for p in self.limits}
        self.fitted_on = 0   # candidates seen when the models were last fitted
        self.score_model: list | None = None                  # [weights, intercept, -] on ranks
        self.latency_models: dict[str, list] = {}             # profile -> [weights, intercept, residual sd]

    def __len__(self) -> int:
        """Candidates with a score."""
        return len(self._scored)

    def observe(self, arch: Hashable, score: float | None, latency: Mapping[str, float] | None = None) -> bool:
        """Record `arch`'s score (None when it has none) and its latency per profile; False when it was already
        seen (nothing changes)."""
        string = self.space.to_string(arch)
        if string in self.seen:
            return False
        latency = {p: float(ms) for p, ms in (latency or {}).items() if p in self.limits}
        self.seen[string] = [score, latency]
        self._seen_rows.append([string, score, [latency.get(p) for p in self.limits]])
        cols = self._columns(arch)
        for profile, ms in latency.items():
            self._latency[profile].add(cols, ms)
        if score is not None:
            self._scored.append((cols, float(score)))
            self._decisions.append(self._decision_row(arch))
            self._scores.add(cols)
        return True

    def _decision_row(self, arch: Hashable) -> tuple[int, ...]:
        return tuple(-1 if c is None else int(c) for c in self.space.effective_decisions(arch))

    def _columns(self, arch: Hashable) -> np.ndarray:
        return np.array([self.offsets[d] + c for d, c in enumerate(self.space.to_decisions(arch)) if c is not None],
                        dtype=np.intp)

    def fit(self) -> None:
        """Fit the score model on the ranks (0..1) of every score so far, and each latency model with data."""
        self.latency_models = {p: r.solve(LATENCY_RIDGE) for p, r in self._latency.items() if r.n > len(r.sums)}
        self.fitted_on = len(self.seen)
        if self._use_gp():
            self._fit_gp(len(self._scored))
            return
        n = len(self._scored)
        scores = np.array([v for _, v in self._scored])
        ranks = (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 0.5) / n
        cols = [c for c, _ in self._scored]
        xty = np.bincount(np.concatenate(cols), weights=np.repeat(ranks, [len(c) for c in cols]),
                          minlength=len(self._scores.sums))
        self.score_model = self._scores.solve(self.ridge, xty, float(ranks.sum()))

    def _fit_gp(self, n: int, hyper: tuple[float, float] | None = None) -> None:
        """Fit the GP to the first `n` scored candidates; its length scale and noise are re-chosen when the scored
        candidates have grown by a tenth since they were last chosen (or set to `hyper`)."""
        X = np.array(self._decisions[:n])
        y = np.array([v for _, v in self._scored[:n]])
        if self.gp is None:
            self.gp = CategoricalGP()
        if hyper is not None:
            self.gp.length_scale, self.gp.noise = hyper
        chosen_at = self.gp_state[3] if self.gp_state else 0
        choose = hyper is None and (self.gp.length_scale is None or n >= chosen_at + max(1, chosen_at // 10))
        self.gp.fit(X, y, choose=choose)
        self.gp_state = [n, self.gp.length_scale, self.gp.noise, n if choose else chosen_at]

    def _use_gp(self) -> bool:
        """The GP scores candidates while at most `GP_POINTS` have a score; past that the ridge model does."""
        return self.model == "gp" and len(self._scored) <= GP_POINTS

    @staticmethod
    def _apply(model: list, rows: list[np.ndarray]) -> np.ndarray:
        return np.array([model[0][cols].sum() for cols in rows]) + model[1]

    def steer(self, draw: Callable[[int], list[Hashable]], candidates: int, warm: int) -> Hashable:
        """One draw as is until `warm` candidates have a score; then, of `candidates` draws, the one with the best
        predicted score, preferring draws not seen yet and not clearly over a latency limit (`draw(n)` returns n
        draws)."""
        if len(self) < warm or candidates == 1:
            return draw(1)[0]
        return self.choose(draw(candidates))

    def choose(self, pool: list[Hashable]) -> Hashable:
        """The candidate of `pool` worth evaluating most, preferring candidates not seen yet and not clearly over
        a latency limit (the models are refitted first when they are stale)."""
        return self.rank(pool)[0]

    def rank(self, pool: list[Hashable]) -> list[Hashable]:
        """`pool` from most to least worth evaluating: the candidates not seen yet and not clearly over a latency
        limit (all of `pool` when no candidate is left), by decreasing acquisition; the models are refitted first
        when they are stale."""
        if self.stale():
            self.fit()
        pool = [a for a in pool if self.space.to_string(a) not in self.seen] or pool
        rows = [self._columns(a) for a in pool]
        within = self.within_limits(rows)
        if within.any():
            pool, rows = [a for a, w in zip(pool, within) if w], [r for r, w in zip(rows, within) if w]
        order = np.argsort(-self.acquisition(pool, rows), kind="stable")
        return [pool[int(i)] for i in order]

    def stale(self) -> bool:
        """The models miss candidates told since they were fitted: a new score (GP), or a tenth more candidates
        seen."""
        if len(self.seen) >= self.fitted_on + max(1, self.fitted_on // 10):
            return True
        if self._use_gp():
            return self.gp_state is None or self.gp_state[0] != len(self._scored)
        return self.score_model is None

    def within_limits(self, rows: list[np.ndarray]) -> np.ndarray:
        """Per one-hot row: not clearly over any latency limit by the latency models."""
        within = np.ones(len(rows), dtype=bool)
        for profile, model in self.latency_models.items():
            within &= self._apply(model, rows) - MARGIN * model[2] <= self.limits[profile]
        return within

    def acquisition(self, pool: list[Hashable], rows: list[np.ndarray] | None = None) -> np.ndarray:
        """How much each of `pool` is worth evaluating: the GP's expected improvement, or the ridge prediction."""
        if self._use_gp():
            return self.gp.expected_improvement(np.array([self._decision_row(a) for a in pool]))
        rows = rows if rows is not None else [self._columns(a) for a in pool]
        return self._apply(self.score_model, rows)

    # ---- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the candidates seen (score, latency per limited profile) and the fitted models.

        The rows of ``seen`` are the list this surrogate keeps appending to (not a copy, so a state costs nothing
        per candidate seen, and the ledger journals only the new tail: `nas.results`); do not modify it."""
        def plain(model):
            return None if model is None else [model[0].tolist(), *model[1:]]
        return {"seen": self._seen_rows,
                "fitted_on": self.fitted_on,
                "score_model": plain(self.score_model), "gp": self.gp_state,
                "latency_models": {p: plain(m) for p, m in self.latency_models.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output."""
        self._reset()
        profiles = list(self.limits)
        for string, score, latency in state["seen"]:
            self.observe(self.space.decode(string), score,
                         {p: ms for p, ms in zip(profiles, latency) if ms is not None})
        self.fitted_on = state["fitted_on"]

        def array(model):
            return None if model is None else [np.asarray(model[0], dtype=float), *model[1:]]
        self.score_model = array(state["score_model"])
        self.gp_state = None
        if state.get("gp"):
            n, length_scale, noise, chosen_at = state["gp"]
            self._fit_gp(n, (length_scale, noise))
            self.gp_state[3] = chosen_at
        self.latency_models = {p: array(m) for p, m in state["latency_models"].items()}
