"""Constraints, feasibility and the Pareto front.

Cheap checks (FLOPs, params: analytic, no model built) run before any trial is spent; latency limits are checked
once the latency of a candidate is known.
"""
from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence

import numpy as np

from nas.recipe import Constraints


def latency_column(profile: str) -> str:
    """Results-table column holding latency (ms) on `profile`."""
    return f"latency_{profile}"


def energy_column(profile: str) -> str:
    """Results-table column holding energy per inference (mJ) on `profile`, where its constraint limits it."""
    return f"energy_{profile}"


def profile_memory_column(profile: str) -> str:
    """Results-table column holding inference memory (MiB) on `profile`, where its constraint limits it."""
    return f"memory_{profile}"


def profile_budget_columns(constraints: Constraints) -> tuple[str, ...]:
    """The results columns the energy and per-profile memory limits add (``max_energy_mj``, ``max_memory_mb`` in
    a latency entry)."""
    return tuple([energy_column(lat.profile) for lat in constraints.latency if lat.max_energy_mj is not None] +
                 [profile_memory_column(lat.profile) for lat in constraints.latency if lat.max_memory_mb is not None])


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


def latency_violation(constraints: Constraints, latencies: dict[str, float],
                      fields: dict[str, float] | None = None) -> str | None:
    """Why latencies (or, in the row `fields`, energies: `energy_column`, and per-profile memory:
    `profile_memory_column`) break a limit, or None."""
    for lat in constraints.latency:
        value = latencies.get(lat.profile)
        if lat.max_ms is not None and value is not None and value > lat.max_ms:
            return f"latency on {lat.profile} {value:.3f} ms > max_ms {lat.max_ms:g}"
        energy = (fields or {}).get(energy_column(lat.profile))
        if lat.max_energy_mj is not None and energy is not None and energy > lat.max_energy_mj:
            return f"energy on {lat.profile} {energy:.3f} mJ > max_energy_mj {lat.max_energy_mj:g}"
        memory = (fields or {}).get(profile_memory_column(lat.profile))
        if lat.max_memory_mb is not None and memory is not None and memory > lat.max_memory_mb:
            return f"memory on {lat.profile} {memory:.3f} MiB > max_memory_mb {lat.max_memory_mb:g}"
    return None


@functools.lru_cache(maxsize=8)
def train_workspace_model(profile: str, space):
    """``constraints.train_memory_profile``'s workspace table on `space` (`predictors.memory.profile_workspace`),
    read once per space object (a run's; the trials' processes read it once each), so every proposal's check does
    not parse the table again.

    Raises:
        ValueError: it has no usable workspace table (InputError: no such profile)."""
    from hardware_profiles import get_profile
    from predictors.memory import profile_workspace

    return profile_workspace(get_profile(profile), space)


def workspace_at(space, constraints: Constraints, arch: Hashable):
    """Each layer of `arch`'s cuDNN workspace at a batch, as ``constraints.train_memory_profile``'s table gives it
    (`predictors.memory.WorkspaceWalk.train_workspace`), as a function of the batch; None where the recipe names no
    such profile."""
    if constraints.train_memory_profile is None:
        return None
    model = train_workspace_model(constraints.train_memory_profile, space)
    return lambda batch: model.train_workspace(space.layer_costs(arch), batch)


def train_memory(space, constraints: Constraints, arch: Hashable, batch: int):
    """`arch`'s training step at `batch` as the limits predict it (`predictors.memory.training_memory`), with each
    layer's cuDNN workspace from ``constraints.train_memory_profile`` where the recipe names one (`workspace_at`)."""
    from predictors.memory import training_memory

    at = workspace_at(space, constraints, arch)
    return training_memory(space, arch, batch, workspace=None if at is None else at(batch))


def fitting_batch(space, constraints: Constraints, arch: Hashable, limit_bytes: float) -> int:
    """The largest batch size whose training step (`train_memory`) fits in `limit_bytes`; 0 when not even one sample
    does (`predictors.memory.largest_batch`, with the workspace `workspace_at` gives)."""
    from predictors.memory import largest_batch

    return largest_batch(space, arch, limit_bytes, workspace_at=workspace_at(space, constraints, arch))


def memory_check(space, constraints: Constraints, arch: Hashable) -> tuple[dict[str, float], str | None]:
    """(the memory figures the limits ask for: ``memory_mb``, ``train_memory_gb`` and, with ``on_train_memory:
    shrink``, the ``train_batch`` the candidate trains at; the first limit `arch` breaks or None), predicted from
    the genotype alone (`predictors.memory`) before a trial is spent. Shrinking takes the largest batch size whose
    step fits max_train_memory_gb (`fitting_batch`), if it is min_train_batch or more."""
    from predictors.memory import inference_memory

    fields: dict[str, float] = {}
    violation = None
    if constraints.max_memory_mb is not None:
        mb = fields["memory_mb"] = inference_memory(space, arch, channel_block=constraints.memory_block(),
                                                    engine=constraints.memory_engine).total_mb
        if mb > constraints.max_memory_mb:
            violation = f"memory {mb:.3f} MiB > max_memory_mb {constraints.max_memory_mb:g}"
    limit = constraints.max_train_memory_gb
    if limit is not None:
        batch = constraints.train_batch or 1
        gb = train_memory(space, constraints, arch, batch).total_gb
        shrink = constraints.on_train_memory == "shrink"
        fits = min(batch, fitting_batch(space, constraints, arch, limit * 2 ** 30)) if shrink and gb > limit \
            else batch
        if fits < batch and fits >= min(constraints.min_train_batch, batch):
            batch, gb = fits, train_memory(space, constraints, arch, fits).total_gb
        if shrink:
            fields["train_batch"] = batch
        fields["train_memory_gb"] = gb
        if violation is None and gb > limit:
            violation = f"training memory {gb:.3f} GiB at batch {batch} > max_train_memory_gb {limit:g}" + (
                f" (the largest batch that fits, {fits}, is below min_train_batch {constraints.min_train_batch})"
                if shrink else "")
    return fields, violation


def shrunk_batch(space, constraints: Constraints, arch: Hashable) -> int | None:
    """The batch size `arch` trains at under ``constraints.on_train_memory: shrink`` (`memory_check`), else None."""
    if constraints.on_train_memory != "shrink" or constraints.max_train_memory_gb is None:
        return None
    return int(memory_check(space, constraints, arch)[0]["train_batch"])


def memory_columns(constraints: Constraints) -> tuple[str, ...]:
    """The results columns the memory limits add (`memory_check`)."""
    train = () if constraints.max_train_memory_gb is None else \
        ("train_memory_gb", "train_batch") if constraints.on_train_memory == "shrink" else ("train_memory_gb",)
    return (("memory_mb",) if constraints.max_memory_mb is not None else ()) + train


def static_figures(space, constraints: Constraints, arch: Hashable) -> tuple[dict[str, float], str | None]:
    """(``flops``, ``params`` and the memory figures of `memory_check` for the results row; the first limit `arch`
    breaks or None), computed from the genotype alone."""
    costs = space.layer_costs(arch)
    fields: dict[str, float] = {"flops": sum(c.macs for c in costs), "params": sum(c.params for c in costs)}
    violation = static_violation(constraints, fields["flops"], fields["params"])
    memory, memory_violation = memory_check(space, constraints, arch)
    fields.update(memory)
    return fields, violation or memory_violation


def static_check(space, constraints: Constraints, arch: Hashable) -> tuple[int, int, str | None]:
    """(flops, params, violation) of `arch` (`static_figures`)."""
    fields, violation = static_figures(space, constraints, arch)
    return fields["flops"], fields["params"], violation


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
