"""Controllers (Ray-free cores) and the Ray Tune adapter, against one shared misbehaving objective."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nas.controllers import CONTROLLERS, make_controller
from nas.controllers.base import clean_score
from nas.controllers.proposer import MemoryLedger
from nas.controllers.tune_adapter import ControllerSearcher
from search_spaces import get_space

OPTIONS = {"widths": [0.5, 0.75, 1.0], "resolutions": [128, 160]}


def space():
    return get_space("mobilenet", OPTIONS, num_classes=10)


def toy_score(arch) -> float:
    """A smooth objective with a known optimum: big kernels, SE everywhere, full width."""
    layers = [layer for stage in arch.stages for layer in stage]
    return (sum(layer.kernel for layer in layers) / (7 * len(layers)) + sum(layer.se for layer in layers)
            / len(layers) + arch.width) / 3


def bad_objective(arch, rng: np.random.Generator):
    """The shared bad objective: NaN, inf, None, a crash or a real score, at random."""
    roll = rng.random()
    if roll < 0.1:
        return float("nan")
    if roll < 0.2:
        return float("inf")
    if roll < 0.25:
        return None
    if roll < 0.35:
        raise RuntimeError("trial crashed")
    return toy_score(arch)


def drive(controller, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(n):
        arch = controller.ask()
        seen.append(controller.space.to_string(arch))
        try:
            score = bad_objective(arch, rng)
        except RuntimeError:
            score = None
        controller.tell(arch, score)
    return seen


@pytest.mark.parametrize("name", CONTROLLERS.names())
def test_controller_survives_nan_inf_and_crashes(name):
    c = make_controller(name, space(), seed=0)
    archs = drive(c, 80)
    assert all(c.space.to_string(c.space.decode(a)) == a for a in archs)   # proposals stay in the space
    state = json.loads(json.dumps(c.state_dict(), allow_nan=False))     # state stays strict JSON after bad results
    for _, score in state.get("population", []):
        assert math.isfinite(score)                                      # no NaN/inf/None member ever breeds


@pytest.mark.parametrize("name", CONTROLLERS.names())
def test_state_dict_resumes_the_exact_sequence(name):
    a = make_controller(name, space(), seed=3)
    first = drive(a, 30, seed=1)
    state = json.loads(json.dumps(a.state_dict()))
    rest_a = drive(a, 30, seed=2)
    b = make_controller(name, space(), seed=99)
    b.load_state_dict(state)
    assert drive(b, 30, seed=2) == rest_a
    assert first != rest_a


def test_evolution_beats_random_on_a_smooth_objective():
    def best_after(name: str, seed: int) -> float:
        c = make_controller(name, space(), {"population_size": 10, "sample_size": 3} if name == "evolution"
                            else {}, seed=seed)
        best = -math.inf
        for _ in range(150):
            arch = c.ask()
            score = toy_score(arch)
            c.tell(arch, score)
            best = max(best, score)
        return best

    evo = np.mean([best_after("evolution", s) for s in range(5)])
    rnd = np.mean([best_after("random", s) for s in range(5)])
    assert evo > rnd


def test_failed_members_never_win_a_tournament():
    c = make_controller("evolution", space(), {"population_size": 4, "sample_size": 4}, seed=0)
    archs = [c.ask() for _ in range(4)]
    for i, arch in enumerate(archs):
        c.tell(arch, 0.5 if i == 2 else float("nan"))
    child = c.ask()   # every tournament sees all 4 members: the parent must be archs[2]
    assert sum(1 for a, b in zip(archs[2].stages, child.stages) if a != b) + (archs[2].width != child.width) \
        + (archs[2].resolution != child.resolution) == 1


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), ("0.25", 0.25), (float("nan"), None),
                                             (float("-inf"), None), (None, None), ("x", None)])
def test_clean_score(value, expected):
    assert clean_score(value) == expected


class FakeLedger(MemoryLedger):
    """In-memory ledger that also records what the adapter checkpoints."""

    def __init__(self):
        super().__init__()
        self.checkpoints = []

    @property
    def rejected(self):
        return [r["arch"] for r in self.rows if r["status"] == "rejected"]

    def scores(self):
        return [clean_score(r["accuracy"]) for r in self.rows if r["status"] != "rejected"]

    def checkpoint(self, controller_state, pending):
        self.checkpoints.append((controller_state, list(pending)))


def test_adapter_rejects_before_a_trial_and_records_crashes():
    sp = space()
    limit = np.median([sp.flops(sp.sample(np.random.default_rng(i))) for i in range(50)])
    ledger = FakeLedger()
    searcher = ControllerSearcher(make_controller("random", sp, seed=0), ledger,
                                  lambda a: (("too big" if sp.flops(a) > limit else None), {}))
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert all(sp.flops(sp.decode(c["arch"])) <= limit for c in configs)
    assert ledger.rejected, "about half the proposals break the limit; they must be rejected without a trial"
    assert not ledger.scores()
    searcher.on_trial_complete("t0", error=True)
    searcher.on_trial_complete("t1", result={"accuracy": float("nan")})
    searcher.on_trial_complete("t2", result={"accuracy": 0.7})
    assert ledger.scores() == [None, None, 0.7]
    state, pending = ledger.checkpoints[-1]
    assert sorted(pending) == sorted(c["arch"] for c in configs[3:])
    assert state["n_told"] == len(ledger.rejected) + 3


def test_adapter_never_runs_an_in_flight_candidate_twice_nor_reports_it_failed():
    sp = get_space("mobilenet", {"kernels": [3, 5], "expansions": [3], "se": [False],
                                 "stages": [{"channels": 16, "depths": [1]}]})   # two architectures in all
    ledger = FakeLedger()
    searcher = ControllerSearcher(make_controller("random", sp, seed=0), ledger, lambda a: (None, {}),
                                  max_rejections=50)
    a, b = searcher.suggest("t1")["arch"], searcher.suggest("t2")["arch"]
    assert a != b
    assert searcher.suggest("t3") == ControllerSearcher.FINISHED   # both in flight: nothing new to run
    assert searcher.controller.n_told == 0                         # and no fake failure was told


def test_adapter_requeues_in_flight_candidates_first_and_stops_when_exhausted():
    sp = get_space("mobilenet", {"kernels": [3], "expansions": [3], "se": [False],
                                 "stages": [{"channels": 16, "depths": [1]}]})
    ledger = FakeLedger()
    searcher = ControllerSearcher(make_controller("random", sp, seed=0), ledger, lambda a: (None, {}),
                                  requeue=["r224_w1|k3e3"], max_rejections=20)
    assert searcher.suggest("a") == {"arch": "r224_w1|k3e3"}
    searcher.on_trial_complete("a", result={"accuracy": 0.5})
    # the space holds one architecture, already evaluated: the search must end, not spin
    assert searcher.suggest("b") == ControllerSearcher.FINISHED
    assert "exhausted" in searcher.exhausted
