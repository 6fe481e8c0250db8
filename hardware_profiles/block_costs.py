"""A network's latency as the runtime's fixed per-inference overhead plus the sum of its blocks' costs.

One function of the project adds block costs up, and three places need it: a lookup-table profile (costs measured
block by block), a predictor's block table (`predictors.models.LookupSum`: measured, fitted or transferred costs)
and the importer of end-to-end tables (`hardware_profiles.importer`: costs fitted to whole networks). They all hold
a `BlockCosts`, so they price the same network the same way.

Each cost is net of the overhead, which a network pays once: a block timed alone pays it too, so a measured table
is turned into net costs by `BlockCosts.measured` (``max(block - overhead, 0)``).

One approximation: a classifier (final linear layer) whose class count was never measured is costed from a
measured classifier of the same input width and family, scaled by the ratio of outputs. Tables are measured at one
class count, while searches run at their dataset's; the classifier is a negligible share of a network.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np

_CLASSIFIER = re.compile(r"^classifier_.*_i(?P<cin>\d+)x1x1_o(?P<cout>\d+)x1x1_(?P<family>\w+)$")


class BlockCosts:
    """Net cost (ms) per cost key and the overhead counted once per network.

    Args:
        costs_ms: {cost key: cost net of the overhead}.
        overhead_ms: the runtime's fixed cost of one inference.
    """

    def __init__(self, costs_ms: Mapping[str, float], overhead_ms: float):
        self.costs: dict[str, float] = {str(k): float(v) for k, v in costs_ms.items()}
        self.overhead_ms = float(overhead_ms)
        self._classifiers: dict[tuple[str, str], tuple[int, float]] = {}
        for key, ms in self.costs.items():
            m = _CLASSIFIER.match(key)
            if m:
                self._classifiers[(m["cin"], m["family"])] = (int(m["cout"]), ms)

    @classmethod
    def measured(cls, block_ms: Mapping[str, float], overhead_ms: float) -> BlockCosts:
        """From blocks timed one by one, each paying the overhead once: costs net of it, never below zero."""
        o = float(overhead_ms)
        return cls({k: max(float(v) - o, 0.0) for k, v in block_ms.items()}, o)

    def cost(self, key: str) -> float | None:
        """The net cost of one block, or None when neither it nor a classifier to scale from is known."""
        if key in self.costs:
            return self.costs[key]
        m = _CLASSIFIER.match(key)
        known = self._classifiers.get((m["cin"], m["family"])) if m else None
        if known is None:
            return None
        cout, ms = known
        return ms * int(m["cout"]) / cout

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys this table cannot cost (in order, with repeats)."""
        return [k for k in keys if self.cost(k) is None]

    def sums(self, key_lists: Iterable[Iterable[str]],
             fallback: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
        """Latency (ms) of networks given as cost-key lists: the overhead plus each block's cost.

        Args:
            key_lists: one list of cost keys per network (a key counted as often as it occurs).
            fallback: costs of the keys the table cannot cost (called once, with the distinct missing keys).

        Raises:
            KeyError: some key cannot be costed and there is no `fallback`.
        """
        key_lists = [list(ks) for ks in key_lists]
        known: dict[str, float] = {}
        unknown: list[str] = []
        for k in {k for ks in key_lists for k in ks}:
            c = self.cost(k)
            if c is None:
                unknown.append(k)
            else:
                known[k] = c
        if unknown:
            unknown.sort()
            if fallback is None:
                raise KeyError(f"{len(unknown)} block(s) without a cost, e.g. {unknown[0]}")
            known.update(zip(unknown, np.asarray(fallback(unknown), float)))
        return np.array([self.overhead_ms + sum(known[k] for k in ks) for ks in key_lists])
