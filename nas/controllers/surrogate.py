"""Surrogate-assisted proposals: a cheap model of what the controller maximises picks which candidate it proposes.

Evaluations are the costly part of a search; asking the controller is nearly free. So instead of proposing its
next draw as is, a steered controller draws `candidates` of them (children of tournament winners for evolution,
policy samples for RL), and proposes the one that a ridge regression fitted on every outcome so far predicts to
score best, preferring candidates it has not seen. This is the idea of predictor-guided evolution (BANANAS,
White et al. 2021; NPENAS, Wei et al. 2022) in its cheapest form; the controller's own algorithm still decides
where the draws come from, so the search keeps its locality (evolution) or its learnt distribution (RL).

The models: ridge regressions on one-hot features of the space's decisions (`SearchSpace.to_decisions`; an
inactive decision has none). The score model fits the *ranks* of the scores, so a few broken networks at 10 %
accuracy do not bend it. A latency model per profile with a hard limit fits the latency figures the controller is
told (rejected candidates carry them too); draws it puts over a limit by more than `MARGIN` residual standard
deviations are skipped when any other draw is left. Such draws would be rejected for free, but thousands of them
slow an in-process search down, while near the limit, where the best feasible networks lie, nothing is skipped.
Steering starts once `warm` candidates have a score; the models are refitted when the number of candidates seen
has grown by a tenth since the last fit (at least one), from sufficient statistics kept as candidates arrive, so
thousands of in-process candidates cost a few dozen small solves. The fitted models are part of the JSON state,
so a resumed search proposes exactly what the uninterrupted one would.

Measured with `python bench/controllers.py --seeds 30` (synthetic NB201 table, limit at the median latency;
mean regret after 100 queries, random search 1.38): evolution 0.63 plain, 0.19 steered; RL 0.59 plain, 0.12
steered. With a uniform policy the steering alone (RL with a learning rate of ~0) reaches 0.35 (60 seeds), so the
controllers' own algorithms still carry much of the gain. In the prescreen stage (`python bench/prescreen.py`,
fbnet, 10,000 candidates on cheap estimates) steered evolution finds a best estimate of 68.32 against 68.35 and a
top-100 mean of 68.28 against 68.10 (1,000 candidates: best 67.86 against 67.59), and spends 13 s against 8 s.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from nas.controllers.base import ControllerOptions
from search_spaces.base import SearchSpace


class SurrogateOptions(ControllerOptions):
    """Options of a controller whose proposals a surrogate can steer."""

    surrogate: Literal["ridge", "none"] = Field("ridge", description="ridge: propose the best-predicted of "
                                                "`candidates` draws; none: the plain algorithm")
    candidates: int = Field(10, ge=1, description="draws the surrogate chooses each proposal from")
    warm: int = Field(8, ge=2, description="scored candidates before the surrogate starts steering")
    ridge: float = Field(1.0, gt=0, description="L2 penalty of the score model (ridge regression)")


MARGIN = 2.0   # a draw is skipped when its predicted latency exceeds a limit by more than MARGIN residual sd
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

    def __init__(self, space: SearchSpace, ridge: float = 1.0, limits: Mapping[str, float] | None = None):
        self.space, self.ridge, self.limits = space, ridge, dict(limits or {})
        self.offsets = np.concatenate([[0], np.cumsum(space.decision_sizes())]).astype(int)
        self._reset()

    def _reset(self) -> None:
        width = int(self.offsets[-1])
        self.seen: dict[str, list] = {}   # string -> [score or None, {profile: ms}]; in the order told
        self._scored: list[tuple[np.ndarray, float]] = []   # (active one-hot columns, score)
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
        cols = self._columns(arch)
        for profile, ms in latency.items():
            self._latency[profile].add(cols, ms)
        if score is not None:
            self._scored.append((cols, float(score)))
            self._scores.add(cols)
        return True

    def _columns(self, arch: Hashable) -> np.ndarray:
        return np.array([self.offsets[d] + c for d, c in enumerate(self.space.to_decisions(arch)) if c is not None],
                        dtype=np.intp)

    def fit(self) -> None:
        """Fit the score model on the ranks (0..1) of every score so far, and each latency model with data."""
        n = len(self._scored)
        scores = np.array([v for _, v in self._scored])
        ranks = (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 0.5) / n
        cols = [c for c, _ in self._scored]
        xty = np.bincount(np.concatenate(cols), weights=np.repeat(ranks, [len(c) for c in cols]),
                          minlength=len(self._scores.sums))
        self.score_model = self._scores.solve(self.ridge, xty, float(ranks.sum()))
        self.latency_models = {p: r.solve(LATENCY_RIDGE) for p, r in self._latency.items() if r.n > len(r.sums)}
        self.fitted_on = len(self.seen)

    @staticmethod
    def _apply(model: list, rows: list[np.ndarray]) -> np.ndarray:
        return np.array([model[0][cols].sum() for cols in rows]) + model[1]

    def steer(self, draw: Callable[[int], list[Hashable]], candidates: int, warm: int) -> Hashable:
        """One draw as is until `warm` candidates have a score; then, of `candidates` draws, the one with the best
        predicted score, preferring draws not seen yet and not clearly over a latency limit (`draw(n)` returns n
        draws)."""
        if len(self) < warm or candidates == 1:
            return draw(1)[0]
        if self.score_model is None or len(self.seen) >= self.fitted_on + max(1, self.fitted_on // 10):
            self.fit()
        pool = draw(candidates)
        pool = [a for a in pool if self.space.to_string(a) not in self.seen] or pool
        rows = [self._columns(a) for a in pool]
        within = np.ones(len(pool), dtype=bool)
        for profile, model in self.latency_models.items():
            within &= self._apply(model, rows) - MARGIN * model[2] <= self.limits[profile]
        if within.any():
            pool, rows = [a for a, w in zip(pool, within) if w], [r for r, w in zip(rows, within) if w]
        return pool[int(np.argmax(self._apply(self.score_model, rows)))]

    # ---- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the candidates seen (score, latency per limited profile) and the fitted models."""
        def plain(model):
            return None if model is None else [model[0].tolist(), *model[1:]]
        profiles = list(self.limits)
        return {"seen": [[s, score, [lat.get(p) for p in profiles]] for s, (score, lat) in self.seen.items()],
                "fitted_on": self.fitted_on,
                "score_model": plain(self.score_model),
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
        self.latency_models = {p: array(m) for p, m in state["latency_models"].items()}
