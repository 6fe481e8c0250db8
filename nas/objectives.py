"""Constraints, feasibility and the Pareto front.

Cheap checks (FLOPs, params: analytic, no model built) run before any trial is spent; latency limits are checked
once the latency of a candidate is known.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from nas.recipe import Constraints


def latency_column(profile: str) -> str:
    """Results-table column holding latency (ms) on `profile`."""
    return f"latency_{profile}"


def implementation_column(profile: str) -> str:
    """Results-table column naming the implementation (engine) a candidate's latency on `profile` is for, where
    the constraint names one or asks for the best (``implementation:``)."""
    return f"implementation_{profile}"


def static_violation(constraints: Constraints, flops: float, params: float) -> str | None:
    """Why a candidate breaks the FLOPs/params limits, or None when it meets them."""
    if constraints.max_flops is not None and flops > constraints.max_flops:
        return f"flops {flops:,.0f} > max_flops {constraints.max_flops:,.0f}"
    if constraints.max_params is not None and params > constraints.max_params:
        return f"params {params:,.0f} > max_params {constraints.max_params:,.0f}"
    return None


def latency_violation(constraints: Constraints, latencies: dict[str, float]) -> str | None:
    """Why measured latencies break a limit, or None."""
    for lat in constraints.latency:
        value = latencies.get(lat.profile)
        if lat.max_ms is not None and value is not None and value > lat.max_ms:
            return f"latency on {lat.profile} {value:.3f} ms > max_ms {lat.max_ms:g}"
    return None


def static_check(space, constraints: Constraints, arch: Hashable) -> tuple[int, int, str | None]:
    """(flops, params, violation) of `arch`, computed from the genotype alone."""
    costs = space.layer_costs(arch)
    flops, params = sum(c.macs for c in costs), sum(c.params for c in costs)
    return flops, params, static_violation(constraints, flops, params)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """`a` is no worse than `b` in every (minimised) objective and better in one."""
    return bool((a <= b).all() and (a < b).any())


def dominance_matrix(points: np.ndarray) -> np.ndarray:
    """``[i, j]`` True when point i dominates point j (`dominates`), all objectives minimised; (n, n)."""
    p = np.asarray(points, float)
    return (p[:, None, :] <= p[None, :, :]).all(-1) & (p[:, None, :] < p[None, :, :]).any(-1)


def pareto_mask(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """True for points no other point beats (higher-or-equal accuracy and lower-or-equal cost, one strictly)."""
    points = np.column_stack([-np.asarray(accuracy, float), np.asarray(cost, float)])
    return ~dominance_matrix(points).any(axis=0)
