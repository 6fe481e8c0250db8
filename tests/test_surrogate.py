"""Surrogate-steered proposals (`nas.controllers.surrogate`, `nas.controllers.gp`) and what they do to the
controllers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas.controllers import make_controller
from nas.controllers.base import SearchObjectives
from nas.controllers.gp import CategoricalGP, normal_scores
from nas.controllers.local_search import neighbours
from nas.controllers.proposer import MemoryLedger, search_in_process
from nas.controllers.surrogate import MARGIN, Surrogate
from nas.synthetic_nb201 import synthetic_nb201
from search_spaces import get_space

SPACE = get_space("nb201")
WEIGHTS = np.random.default_rng(0).normal(size=(6, 5))   # an additive score: one weight per (edge, op)


def additive(arch) -> float:
    return float(sum(WEIGHTS[e, o] for e, o in enumerate(SPACE.to_decisions(arch))))


def latency(arch) -> float:
    """An additive latency: op o on any edge costs o ms."""
    return float(sum(SPACE.to_decisions(arch)))


def archs(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [SPACE.sample(rng) for _ in range(n)]


def fitted(n: int = 80, limits: dict | None = None) -> Surrogate:
    s = Surrogate(SPACE, limits=limits)
    for a in archs(n):
        s.observe(a, additive(a), {"p": latency(a)})
    s.fit()
    return s


def test_score_model_ranks_unseen_candidates_like_the_truth():
    s = fitted()
    test = archs(300, seed=1)
    predicted = s._apply(s.score_model, [s._columns(a) for a in test])
    assert spearmanr(predicted, [additive(a) for a in test])[0] > 0.9


def test_latency_model_is_fitted_only_for_limited_profiles_and_learns_an_additive_cost():
    assert fitted().latency_models == {}                       # no limit on p: nothing to steer away from
    s = fitted(limits={"p": 10.0})
    test = archs(100, seed=2)
    predicted = s._apply(s.latency_models["p"], [s._columns(a) for a in test])
    assert np.abs(predicted - [latency(a) for a in test]).max() < 0.2
    assert s.latency_models["p"][2] < 0.05                     # residual sd of an exactly additive cost


def test_steer_prefers_unseen_then_within_limit_then_best_predicted():
    s = fitted(limits={"p": 10.0})
    seen_best = max((SPACE.decode(k) for k in s.seen), key=additive)
    rng = np.random.default_rng(3)
    fresh = [a for a in archs(400, seed=4) if SPACE.to_string(a) not in s.seen]
    over = [a for a in fresh if latency(a) > 10.0 + MARGIN * 0.05 + 1.0]
    within = [a for a in fresh if latency(a) <= 10.0 - 1.0]
    pool = [seen_best, *over[:5], *within[:5]]
    rng.shuffle(pool)
    pick = s.steer(lambda n: pool[:n], len(pool), warm=8)
    assert pick in within[:5]
    assert additive(pick) == max(additive(a) for a in within[:5])
    # every draw far over the limit: still a proposal (rejected for free later), never an empty choice
    assert s.steer(lambda n: over[:n], 5, warm=8) in over[:5]
    # before `warm` scores there is no steering: the first draw as is
    assert Surrogate(SPACE).steer(lambda n: pool[:n], len(pool), warm=8) is pool[0]


def test_observe_ignores_repeats_and_the_state_round_trips_exactly():
    s = fitted(40, limits={"p": 10.0})
    a = next(iter(SPACE.decode(k) for k in s.seen))
    assert not s.observe(a, 123.0, {"p": 0.0})
    state = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    t = Surrogate(SPACE, limits={"p": 10.0})
    t.load_state_dict(state)
    assert t.state_dict() == s.state_dict()
    test = archs(50, seed=5)
    draws = iter(test)
    assert t.steer(lambda n: [next(draws) for _ in range(n)], 10, 8) == \
        s.steer(lambda n: test[:n], 10, 8)


def regret_after(name: str, options: dict, seed: int, queries: int = 60) -> float:
    table = synthetic_nb201(0).set_index("arch")
    limit = float(table["latency_ms"].median())
    best_feasible = float(table.loc[table["latency_ms"] <= limit, "accuracy"].max())
    acc, lat = table["accuracy"].to_dict(), table["latency_ms"].to_dict()
    c = make_controller(name, SPACE, options, seed=seed, objectives=SearchObjectives(("t",), {"t": limit}))
    found = [-np.inf]

    def precheck(arch):
        ms = lat[SPACE.to_string(arch)]
        return (None if ms <= limit else "over"), {"latency_t": ms}

    def evaluate(string):
        found[0] = max(found[0], acc[string])
        return {"status": "ok", "accuracy": acc[string], "latency_t": lat[string]}

    search_in_process(c, MemoryLedger(), precheck, evaluate, queries)
    return best_feasible - found[0]


@pytest.mark.parametrize("name", ["evolution", "rl", "local"])
def test_steering_finds_better_feasible_networks_than_the_plain_algorithm(name):
    steered = np.mean([regret_after(name, {}, s) for s in range(6)])
    plain = np.mean([regret_after(name, {"surrogate": "none"}, s) for s in range(6)])
    assert steered < plain


def test_rl_learns_nothing_from_rejected_candidates_unless_told_to_penalise_them():
    rejected = {"status": "rejected", "accuracy": None, "latency_p1": 9.0, "reason": "latency"}
    for mode, batch in (("ignore", 0), ("penalty", 1)):
        c = make_controller("rl", SPACE, {"rejected": mode, "batch_size": 4}, seed=0)
        c.tell(c.ask(), rejected)
        assert len(c.batch) == batch
        assert len(c.surrogate.seen) == 1   # either way it is remembered and not proposed for learning again


# ---- the Gaussian-process score model (the default) ----------------------------------------------------------------
def interacting(arch) -> float:
    """An additive score plus a large bonus for one pair of choices together (a conv on edge 0 and on edge 5):
    what a ridge regression on one-hot choices cannot represent."""
    d = SPACE.to_decisions(arch)
    return additive(arch) + 6.0 * (d[0] == 3 and d[5] == 3)


def test_gp_ranks_an_interacting_score_better_than_the_ridge_model():
    train, test = archs(150), archs(400, seed=1)
    truth = [interacting(a) for a in test]
    X = np.array([SPACE.to_decisions(a) for a in train])
    gp = CategoricalGP().fit(X, [interacting(a) for a in train])
    mean, sd = gp.predict(np.array([SPACE.to_decisions(a) for a in test]))
    ridge = Surrogate(SPACE)
    for a in train:
        ridge.observe(a, interacting(a))
    ridge.fit()
    linear = ridge._apply(ridge.score_model, [ridge._columns(a) for a in test])
    bonus = np.array([interacting(a) - additive(a) > 0 for a in test])
    assert spearmanr(mean, truth)[0] > spearmanr(linear, truth)[0]
    assert mean[bonus].mean() - mean[~bonus].mean() > linear[bonus].mean() - linear[~bonus].mean()
    assert np.all(sd > 0) and np.all(np.isfinite(sd))
    # at a training point the posterior is close to the data and surer than far away
    m0, s0 = gp.predict(X[:1])
    assert s0[0] < sd.mean()


def test_normal_scores_are_rank_based():
    z = normal_scores(np.array([3.0, -100.0, 2.0, 1e9]))
    assert list(np.argsort(z)) == [1, 2, 0, 3]
    assert z.sum() == pytest.approx(0.0)
    assert np.allclose(normal_scores(np.array([1.0, 2.0, 3.0, 4.0])), np.sort(z))   # the values do not matter


def test_gp_expected_improvement_prefers_a_high_mean_then_uncertainty():
    X = np.array([[0, 0], [0, 1], [1, 0]])
    gp = CategoricalGP().fit(X, [0.0, 1.0, 2.0])
    ei = gp.expected_improvement(np.array([[1, 0], [0, 0], [2, 2]]))
    assert ei[0] > ei[1]            # the best point seen beats the worst one
    assert ei[2] > ei[1]            # an unexplored point beats a known bad one


def test_gp_surrogate_state_round_trips_and_steers_identically():
    s = Surrogate(SPACE, limits={"p": 10.0}, model="gp")
    for a in archs(40):
        s.observe(a, interacting(a), {"p": latency(a)})
    s.fit()
    state = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    t = Surrogate(SPACE, limits={"p": 10.0}, model="gp")
    t.load_state_dict(state)
    assert t.state_dict() == state
    pool = archs(60, seed=9)
    assert t.rank(pool) == s.rank(pool)


@pytest.mark.parametrize("ops, live", [
    ((3, 2, 1, 4, 1, 1), (3, 2, 1, 4, 1, 1)),      # every node reached and useful
    ((0, 2, 3, 0, 0, 1), (0, 2, 0, 0, 0, 1)),      # node 1 has no input: its out-edge (2,1) is dead
    ((3, 0, 3, 3, 0, 0), (0, 0, 0, 3, 0, 0)),      # nodes 1, 2 reach no output: edges (1,0), (2,1) dead
    ((0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)),
])
def test_nb201_effective_decisions_read_dead_edges_as_none(ops, live):
    arch = SPACE.from_decisions(ops)
    assert SPACE.effective_decisions(arch) == live
    assert SPACE.effective_decisions(SPACE.from_decisions(live)) == live   # idempotent


def test_plain_local_search_climbs_an_additive_score_to_its_optimum():
    optimum = sum(WEIGHTS.max(axis=1))
    c = make_controller("local", SPACE, {"surrogate": "none"}, seed=0)
    best = -np.inf
    for _ in range(250):
        arch = c.ask()
        best = max(best, additive(arch))
        c.tell(arch, additive(arch))
    assert best == pytest.approx(optimum)


def test_local_search_neighbours_differ_in_one_decision():
    arch = archs(1)[0]
    near = neighbours(SPACE, arch)
    assert len(near) == 6 * 4 and len({SPACE.to_string(a) for a in near}) == 24
    base = SPACE.to_decisions(arch)
    assert all(sum(x != y for x, y in zip(SPACE.to_decisions(a), base)) == 1 for a in near)
