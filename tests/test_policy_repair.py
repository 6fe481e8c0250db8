"""Undoing compression that buys nothing (`nas.compression.undo_dominated`, ``search.repair: dominated``): a unit
is proposed uncompressed where the run's cheap figures price its compression at no gain, and controllers learn the
outcome of what was evaluated."""
from __future__ import annotations

import numpy as np
import pytest

from nas.compression import fit_limits, repaired, undo_dominated
from nas.controllers import make_controller
from nas.controllers.proposer import MemoryLedger, search_in_process
from search_spaces import get_space
from search_spaces.policy import PolicyArch, PolicySpace

from conftest import ASSETS
from test_policy import TINY_MOBILENET

SPACE: PolicySpace = get_space("mobilenet", {**TINY_MOBILENET, "compression": {"precisions": ["fp32", "int8"],
                                                                              "keep": [1, 0.5]}}, num_classes=10)
# per unit: ms in fp32, ms in int8 (int8 dearer on the first two units, as on small tensors on a CPU)
MS = [(1.0, 1.5), (2.0, 2.0), (3.0, 1.0), (5.0, 2.5)]
N = len(MS)


def _ms(arch: PolicyArch) -> float:
    return sum(ms[p == "int8"] * k for ms, p, k in zip(MS, arch.precisions, arch.keeps))


def precheck(arch: PolicyArch, limit: float = np.inf, energy: bool = False):
    """A run's cheap figures: a latency per unit and precision, pruning scaling it; `energy`: fp32 costs more energy
    than int8 on the last unit although it is no slower."""
    fields = {"flops": 1, "latency_dev": _ms(arch)}
    if energy:
        fields["energy_dev"] = fields["latency_dev"] + 10.0 * (arch.precisions[-1] == "fp32")
    return ("latency" if fields["latency_dev"] > limit else None), fields


def test_a_unit_is_made_fp32_where_int8_is_no_faster_and_pruning_that_pays_is_kept():
    assert len(SPACE.units) == len(MS)
    arch = SPACE._arch(SPACE.sample(np.random.default_rng(0)).base, ["int8"] * N, [0.5] * N)
    live, prunable = SPACE.unit_flags(arch.base)
    fixed = undo_dominated(SPACE, arch, precheck)
    # int8 slower (unit 0) or no faster (unit 1): fp32; faster: kept; pruning lowers the latency: kept
    assert fixed.precisions == tuple("fp32" if (u < 2 or not live[u]) else "int8" for u in range(N))
    assert fixed.keeps == arch.keeps and any(k < 1 for k in fixed.keeps)
    assert _ms(fixed) < _ms(arch)
    assert undo_dominated(SPACE, fixed, precheck) == fixed   # a repaired proposal is a fixed point


def test_a_pruned_unit_is_made_whole_only_where_that_costs_nothing():
    arch = SPACE._arch(SPACE.sample(np.random.default_rng(1)).base, ["fp32"] * N, [0.5] * N)

    def width_blind(a):   # a device where a unit's latency does not follow its width
        return None, {"latency_dev": 4.0}

    assert undo_dominated(SPACE, arch, width_blind).keeps == (1.0,) * N
    assert undo_dominated(SPACE, arch, precheck).keeps == arch.keeps   # pruning pays there


def test_a_figure_the_compression_lowers_or_a_limit_the_proposal_met_keeps_it():
    arch = SPACE._arch(SPACE.sample(np.random.default_rng(0)).base, ["int8"] * N, [1.0] * N)
    live = SPACE.live_units(arch.base)
    # the last unit's fp32 is faster but dearer in energy: it stays int8
    assert undo_dominated(SPACE, arch, lambda a: precheck(a, energy=True)).precisions[-1] == \
        ("int8" if live[-1] else "fp32")

    def memory_limited(a):   # more than two fp32 units break a memory limit the proposal met
        violation, fields = precheck(a)
        return ("memory" if sum(p == "fp32" for p in a.precisions) > 2 else violation), fields

    fixed = undo_dominated(SPACE, arch, memory_limited)
    assert sum(p == "fp32" for p in fixed.precisions) <= 2 and memory_limited(fixed)[0] is None


def test_without_a_latency_figure_nothing_is_undone():
    arch = SPACE._arch(SPACE.sample(np.random.default_rng(0)).base, ["int8"] * N, [0.5] * N)
    assert undo_dominated(SPACE, arch, lambda a: (None, {"flops": 1.0})) == arch


def test_a_proposal_over_the_limit_is_quantized_where_that_saves_most_then_pruned():
    base = SPACE.sample(np.random.default_rng(0)).base
    assert SPACE.live_units(base) == [True] * N
    arch = SPACE._arch(base, ["fp32"] * N, [1.0] * N)   # 11 ms
    assert fit_limits(SPACE, arch, lambda a: precheck(a, 9.0)).precisions == ("fp32",) * 3 + ("int8",)   # 8.5 ms
    assert fit_limits(SPACE, arch, lambda a: precheck(a, 7.0)).precisions == ("fp32", "fp32", "int8", "int8")
    tight = fit_limits(SPACE, arch, lambda a: precheck(a, 5.0))   # 6.5 ms quantized: pruning too
    assert tight.precisions == ("fp32", "fp32", "int8", "int8") and min(tight.keeps) == 0.5
    assert precheck(tight, 5.0)[0] is None
    assert fit_limits(SPACE, arch, lambda a: precheck(a, 1.0)) == arch   # no compression fits: left to be rejected
    assert fit_limits(SPACE, arch, lambda a: ("flops", {"flops": 1})) == arch   # not priced: left as it is
    assert fit_limits(SPACE, arch, precheck) == arch   # within the limit: nothing to fit
    # fit, then what the fitting made dominated undone: a fixed point of both
    fixed = repaired(SPACE, SPACE._arch(base, ["int8"] * N, [1.0] * N), lambda a: precheck(a, 5.0), "fit")
    assert fixed.precisions[:2] == ("fp32", "fp32") and precheck(fixed, 5.0)[0] is None
    assert undo_dominated(SPACE, fixed, lambda a: precheck(a, 5.0)) == fixed
    assert repaired(SPACE, arch, lambda a: precheck(a, 9.0), "none") == arch
    assert repaired(SPACE, arch, lambda a: precheck(a, 9.0), "dominated") == arch


def _search(name: str, options: dict, budget: int = 12):
    controller = make_controller(name, SPACE, options, seed=0)
    told: list[PolicyArch] = []
    observe = controller._observe
    controller._observe = lambda arch, outcome: (told.append(arch), observe(arch, outcome))
    evaluated: list[str] = []

    def evaluate(string: str) -> dict:
        evaluated.append(string)
        return {"accuracy": 1.0 / _ms(SPACE.decode(string)), "latency_dev": _ms(SPACE.decode(string))}

    ledger = MemoryLedger()
    assert search_in_process(controller, ledger, precheck, evaluate, budget,
                             repair=lambda a: undo_dominated(SPACE, a, precheck)) == budget
    return controller, evaluated, told, ledger


@pytest.mark.parametrize("name, options", [("evolution", {"population_size": 4, "sample_size": 2}),
                                           ("random", {}), ("rl", {"batch_size": 4})])
def test_every_candidate_is_repaired_and_its_outcome_told_as_that_of_the_proposal(name, options):
    controller, evaluated, told, ledger = _search(name, options)
    for string in evaluated:
        arch = SPACE.decode(string)
        assert undo_dominated(SPACE, arch, precheck) == arch
        assert all(p == "fp32" for p in arch.precisions[:2])   # int8 never pays on those units
    assert len(set(evaluated)) == len(evaluated) == 12
    # the controller learns its own proposals, int8 on unit 0 among them, with the repaired candidate's outcome
    assert any(a.precisions[0] == "int8" for a in told) and controller.n_told == len(told) >= len(evaluated)
    # the ledger names the proposal a repaired candidate answers (results.csv's `proposed`), and only for those
    repaired_rows = [r for r in ledger.rows if "proposed" in r]
    assert repaired_rows and all(undo_dominated(SPACE, SPACE.decode(r["proposed"]), precheck) == SPACE.decode(r["arch"])
                                 and r["proposed"] != r["arch"] for r in repaired_rows)


def test_a_tune_searcher_reports_each_trial_it_suggested():
    pytest.importorskip("optuna")
    controller, evaluated, _, _ = _search("tune", {"searcher": "optuna"}, budget=8)
    assert not controller.pending   # every suggestion was reported (its own arch, the repaired outcome)
    states = {t.state.name for t in controller.searcher._ot_study.trials}
    assert states <= {"COMPLETE", "PRUNED", "FAIL"}


def test_a_policy_search_repairs_by_default_and_not_with_repair_none(tmp_path):
    from nas.checks import load_run
    from nas.context import RunContext

    sets = ["compression=search", "space.options.compression={precisions: [fp32, int8]}"]
    assert RunContext(load_run(ASSETS / "tiny.yaml", sets).recipe).repairs
    assert not RunContext(load_run(ASSETS / "tiny.yaml", [*sets, "search.repair=none"]).recipe).repairs
    assert RunContext(load_run(ASSETS / "tiny.yaml", [*sets, "search.repair=fit"]).recipe).repairs
    assert not RunContext(load_run(ASSETS / "tiny.yaml", []).recipe).repairs


def test_the_tune_adapter_tells_each_trial_as_the_proposal_it_answers():
    from nas.controllers.tune_adapter import ControllerSearcher

    controller = make_controller("random", SPACE, seed=0)
    told: list[PolicyArch] = []
    observe = controller._observe
    controller._observe = lambda arch, outcome: (told.append(arch), observe(arch, outcome))
    ledger = MemoryLedger()
    searcher = ControllerSearcher(controller, ledger, precheck, repair=lambda a: undo_dominated(SPACE, a, precheck))
    for i in range(10):
        string = searcher.suggest(f"t{i}")["arch"]
        asked = searcher.asked.get(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"accuracy": 0.5})
        assert told[-1] == (SPACE.decode(string) if asked is None else asked)
        proposal = SPACE.to_string(asked)
        assert ledger.get(string).get("proposed") == (proposal if proposal != string else None)
        assert undo_dominated(SPACE, SPACE.decode(string), precheck) == SPACE.decode(string)
    assert not searcher.asked and any(a.precisions[0] == "int8" for a in told)
