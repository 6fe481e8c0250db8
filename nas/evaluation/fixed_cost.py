"""A metric-table evaluator that costs a fixed time per candidate: for scaling benchmarks and fault drills.

``fixed_cost`` answers like ``tabular`` (the accuracy is looked up) but first sleeps ``seconds``, so a search's
wall time is set by the number of trials and the parallelism, not by what the machine can compute: two cores can
host a benchmark of many Ray nodes (`bench/cluster.py`). ``stall_fraction`` of the candidates (chosen by a hash
of the arch and the seed, so the same ones in every run) sleep ``stall_seconds`` instead: a hung trial, for
exercising ``search.trial_timeout``. Nothing it reports is evidence about a network.
"""
from __future__ import annotations

import hashlib
import time
from typing import ClassVar

from pydantic import Field, NonNegativeFloat

from nas.evaluation.base import register_evaluator
from nas.evaluation.tabular import TabularEvaluator, TabularOptions


class FixedCostOptions(TabularOptions):
    path: str = Field("synthetic:nb201", description="metric table the accuracy is read from (as tabular)")
    seconds: NonNegativeFloat = Field(1.0, description="time each candidate costs (a sleep)")
    stall_fraction: float = Field(0.0, ge=0, le=1, description="share of candidates that hang (stall_seconds)")
    stall_seconds: NonNegativeFloat = Field(3600.0, description="time a stalled candidate sleeps")


@register_evaluator("fixed_cost")
class FixedCostEvaluator(TabularEvaluator):
    """`tabular`'s answer after a fixed sleep (see the module docstring)."""

    Options = FixedCostOptions
    options: FixedCostOptions
    trains: ClassVar[bool] = False

    def stalls(self, arch: str) -> bool:
        """Whether `arch` is one of the candidates that hang (a fixed share, the same in every run)."""
        digest = hashlib.sha1(f"{self.seed}|{arch}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.options.stall_fraction

    def estimate(self, arch: str) -> dict[str, float]:
        time.sleep(self.options.stall_seconds if self.stalls(arch) else self.options.seconds)
        return super().estimate(arch)
