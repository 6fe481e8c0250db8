"""Controllers (Ray-free cores) and the Ray Tune adapter, against one shared misbehaving objective."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nas.controllers import CONTROLLERS, make_controller
from nas.controllers.base import SearchObjectives, clean_score
from nas.controllers.proposer import MemoryLedger
from nas.controllers.tune_adapter import ControllerSearcher
from search_spaces import get_space

from conftest import REPO

OPTIONS = {"widths": [0.5, 0.75, 1.0], "resolutions": [128, 160]}


def space():
    return get_space("mobilenet", OPTIONS, num_classes=10)


def toy_score(arch) -> float:
    """A smooth objective with a known optimum: big kernels, SE everywhere, full width."""
    layers = [layer for stage in arch.stages for layer in stage]
    return (sum(layer.kernel for layer in layers) / (7 * len(layers)) + sum(layer.se for layer in layers)
            / len(layers) + arch.width) / 3


SPACES = {"mobilenet": (OPTIONS, 10), "nb201": ({}, 10), "fbnet": ({}, 100)}


def make_space(name: str):
    options, num_classes = SPACES[name]
    return get_space(name, options, num_classes=num_classes)


def p1_of(sp, arch) -> float:
    """Latency on profile p1 of the shared bad objective: MFLOPs, read as ms."""
    return sp.flops(arch) / 1e6


def p1_limit(sp) -> float:
    """A p1 limit about half of a space's random samples break."""
    rng = np.random.default_rng(123)
    return float(np.median([p1_of(sp, sp.sample(rng)) for _ in range(40)]))


def decision_score(sp, arch) -> float:
    """A smooth objective over any space: the mean position of each decision's choice in its range."""
    pairs = [(d, n) for d, n in zip(sp.to_decisions(arch), sp.decision_sizes()) if d is not None and n > 1]
    return sum(d / (n - 1) for d, n in pairs) / max(len(pairs), 1)


def bad_objective(sp, arch, rng: np.random.Generator, limit: float) -> dict:
    """The shared bad objective: a full results row (status, accuracy, flops, latency_p1, latency_p2), or a crash.

    Accuracy may be NaN, +-inf, None or not a number at all; latencies may be NaN or inf or missing; failed rows
    report an accuracy they must not be credited with; figures come as NumPy scalars as often as floats; rows over
    the p1 limit are ``infeasible`` (sometimes with an accuracy, as with ``search.train_infeasible``).
    """
    acc = decision_score(sp, arch)
    p1, p2 = p1_of(sp, arch), sp.params(arch) / 1e5
    row = {"status": "ok" if p1 <= limit else "infeasible", "accuracy": acc, "flops": sp.flops(arch),
           "latency_p1": p1, "latency_p2": p2}
    if row["status"] == "infeasible" and rng.random() < 0.5:
        row["accuracy"] = None
    roll = rng.random()
    if roll < 0.08:
        row["accuracy"] = float("nan")
    elif roll < 0.14:
        row["accuracy"] = float(rng.choice([np.inf, -np.inf]))
    elif roll < 0.18:
        row["accuracy"] = None
    elif roll < 0.21:
        row["accuracy"] = "n/a"
    elif roll < 0.30:
        raise RuntimeError("trial crashed")
    elif roll < 0.36:
        row.update(status="failed", error="out of memory")   # keeps its accuracy: must not be credited
    elif roll < 0.42:
        row = {"status": "rejected", "accuracy": None, "flops": row["flops"], "latency_p1": p1,
               "latency_p2": p2, "reason": "latency"}
    elif roll < 0.50:
        row.update(latency_p1=float(rng.choice([np.nan, np.inf])), latency_p2=float("-inf"))
    elif roll < 0.54:
        del row["latency_p1"], row["latency_p2"]
    elif roll < 0.58:
        row.update(flops=float("nan"), latency_p2=np.float64("nan"))
    elif roll < 0.70:
        row.update(accuracy=np.float32(acc), latency_p1=np.float64(p1), latency_p2=np.float32(p2))
    return row


def drive(controller, n: int, seed: int = 0, limit: float = math.inf, check_every: int = 0) -> list[str]:
    """Ask/tell `n` times against the bad objective; a crash is told as None or as a failed row, alternately.
    With `check_every`, the state is checked to be strict, finite JSON every that many tells."""
    rng = np.random.default_rng(seed)
    sp = controller.space
    seen = []
    for i in range(n):
        arch = controller.ask()
        seen.append(sp.to_string(arch))
        try:
            row = bad_objective(sp, arch, rng, limit)
        except RuntimeError:
            row = None if i % 2 else {"status": "failed", "accuracy": None, "error": "RuntimeError: trial crashed"}
        controller.tell(arch, row)
        if check_every and (i + 1) % check_every == 0:
            assert_strict_finite_json(controller.state_dict())
    return seen


def assert_strict_finite_json(state) -> None:
    """`state` is plain JSON data (str keys; str, int, bool, None, finite float) all the way down."""
    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                assert isinstance(k, str), f"{path}: key {k!r} is not a string"
                walk(v, f"{path}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, float):
            assert math.isfinite(node), f"{path} = {node!r}"
        else:
            assert node is None or isinstance(node, (str, int, bool)), f"{path}: {type(node).__name__} {node!r}"

    walk(state, "state")
    json.dumps(state, allow_nan=False)


CASES = [(name, {}) for name in CONTROLLERS.names()] + [
    ("rl", {"reward": "mnasnet", "alpha": -0.07, "beta": -1.0, "batch_size": 3}),
    ("evolution", {"population_size": 6, "sample_size": 3, "crossover_prob": 0.5}),
    ("nsga2", {"population_size": 6, "crossover_prob": 1.0}),
]
CASE_IDS = [name + ("-" + "-".join(f"{k}={v}" for k, v in opts.items()) if opts else "") for name, opts in CASES]


def bad_setup(name: str, options: dict, space_name: str, seed: int = 0):
    """A controller on `space_name` that knows the bad objective's profiles p1, p2 and its p1 limit."""
    sp = make_space(space_name)
    limit = p1_limit(sp)
    c = make_controller(name, sp, options, seed=seed, objectives=SearchObjectives(("p1", "p2"), {"p1": limit}))
    return c, limit


@pytest.mark.parametrize("space_name", list(SPACES))
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_controller_survives_nan_inf_and_crashes(name, options, space_name):
    c, limit = bad_setup(name, options, space_name)
    archs = drive(c, 120, limit=limit, check_every=10)
    assert all(c.space.to_string(c.space.decode(a)) == a for a in archs)   # proposals stay in the space
    assert c.n_asked == c.n_told == 120
    state = json.loads(json.dumps(c.state_dict(), allow_nan=False))     # state stays strict JSON after bad results
    assert_strict_finite_json(state)
    for _, score in state.get("population", []):
        assert math.isfinite(score)                                      # no NaN/inf/None member ever breeds
    if hasattr(c, "pareto_front"):                                        # over-limit, failed: never on the front
        front = c.pareto_front()
        assert front and all(p["p1"] <= limit and math.isfinite(p["accuracy"]) for p in front)
    if hasattr(c, "probabilities"):
        assert all(np.isfinite(p).all() and p.sum() == pytest.approx(1) for p in c.probabilities())
    # the restored state keeps proposing valid architectures
    d, _ = bad_setup(name, options, space_name, seed=7)
    d.load_state_dict(state)
    more = drive(d, 20, seed=5, limit=limit)
    assert all(d.space.to_string(d.space.decode(a)) == a for a in more)


@pytest.mark.parametrize("space_name", list(SPACES))
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_state_dict_resumes_the_exact_sequence(name, options, space_name):
    a, limit = bad_setup(name, options, space_name, seed=3)
    first = drive(a, 30, seed=1, limit=limit)
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))
    rest_a = drive(a, 30, seed=2, limit=limit)
    b, _ = bad_setup(name, options, space_name, seed=99)
    b.load_state_dict(state)
    assert drive(b, 30, seed=2, limit=limit) == rest_a
    assert b.state_dict() == a.state_dict()
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
    archs = [c.ask() for _ in range(6)]
    for i, arch in enumerate(archs):
        c.tell(arch, float("nan") if i in (1, 4) else 0.9 if i == 2 else 0.1)
    assert [a for a, _ in c.population] == [archs[i] for i in (0, 2, 3, 5)], "failed candidates never join"
    child = c.ask()   # every tournament sees all 4 members: the parent must be archs[2]
    assert sum(1 for a, b in zip(archs[2].stages, child.stages) if a != b) + (archs[2].width != child.width) \
        + (archs[2].resolution != child.resolution) == 1


def test_evolution_samples_at_random_until_its_population_is_full():
    # under a tight limit most random draws are rejected for free; they must not end the random start early
    c = make_controller("evolution", space(), {"population_size": 4, "sample_size": 2}, seed=0)
    breed = c._breed
    c._breed = lambda *a: pytest.fail("a child was bred before the population was full")
    for i in range(20):
        arch = c.ask()
        c.tell(arch, {"status": "ok", "accuracy": 0.5} if i % 7 == 6 else {"status": "rejected", "accuracy": None})
    assert len(c.population) == 2
    for _ in range(2):
        c.tell(c.ask(), 0.5)
    assert len(c.population) == 4
    c._breed = breed
    parents = [a for a, _ in c.population]
    child = c.ask()
    assert min(sum(x != y for x, y in zip(p.stages, child.stages)) + (p.width != child.width)
               + (p.resolution != child.resolution) for p in parents) == 1, "evolving once the population is full"


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


# ---- NSGA-II -------------------------------------------------------------------------------------------------------
def test_non_dominated_ranks_of_hand_made_points():
    from nas.controllers.nsga2 import non_dominated_ranks

    pts = np.array([[1, 5], [2, 3], [3, 1], [2, 4], [3, 3], [4, 4], [1, 5]], dtype=float)
    # [2,4] and [3,3] are dominated by [2,3]; [4,4] by those two; equal points do not dominate each other
    assert non_dominated_ranks(pts).tolist() == [0, 0, 0, 1, 1, 2, 0]
    assert non_dominated_ranks(np.array([[0.0, 0.0]])).tolist() == [0]
    assert non_dominated_ranks(np.array([[3.0, 3.0], [2.0, 2.0], [1.0, 1.0]])).tolist() == [2, 1, 0]   # a chain
    three = np.array([[1, 1, 1], [0, 2, 2], [2, 2, 2], [1, 1, 2]], dtype=float)
    assert non_dominated_ranks(three).tolist() == [0, 0, 2, 1]
    assert non_dominated_ranks(np.empty((0, 2))).tolist() == []


def test_crowding_distances_of_hand_made_points():
    from nas.controllers.nsga2 import crowding_distances

    pts = np.array([[1, 5], [2, 3], [3, 1], [2, 4], [4, 4]], dtype=float)
    ranks = np.array([0, 0, 0, 1, 1])
    dist = crowding_distances(pts, ranks)
    # front 0: the middle point spans (3-1)/2 in x and (5-1)/4 in y; fronts of two are all boundary
    assert dist.tolist() == [np.inf, 2.0, np.inf, np.inf, np.inf]
    flat = crowding_distances(np.array([[1, 2], [2, 2], [4, 2]], dtype=float), np.zeros(3, int))
    assert flat.tolist() == [np.inf, 1.0, np.inf]       # a zero span adds nothing (no division by zero)
    five = np.array([[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]], dtype=float)
    assert crowding_distances(five, np.zeros(5, int)).tolist() == [np.inf, 1.0, 1.0, 1.0, np.inf]
    assert crowding_distances(np.array([[1.0, 1.0]]), np.array([0])).tolist() == [np.inf]


@pytest.fixture(scope="module")
def nb201_table():
    from nas.synthetic_nb201 import synthetic_nb201

    return synthetic_nb201(0).set_index("arch")


def table_row(table, string: str, limit: float = math.inf) -> dict:
    acc, lat = float(table.at[string, "accuracy"]), float(table.at[string, "latency_ms"])
    return {"status": "ok" if lat <= limit else "infeasible", "accuracy": acc if lat <= limit else None,
            "flops": float(table.at[string, "flops"]), "latency_device": lat}


def dominated(p, others) -> bool:
    """(accuracy, latency) `p` is beaten by one of `others`: accuracy >= and latency <=, one strictly."""
    return any(a >= p[0] and lat <= p[1] and (a > p[0] or lat < p[1]) for a, lat in others)


@pytest.mark.parametrize("limit", [math.inf, 0.9])
def test_nsga2_front_is_the_true_pareto_front_of_what_it_was_told(nb201_table, limit):
    sp = make_space("nb201")
    c = make_controller("nsga2", sp, {"population_size": 12}, seed=0,
                        objectives=SearchObjectives(("device",), {} if math.isinf(limit) else {"device": limit}))
    told = {}
    for _ in range(300):
        arch = c.ask()
        s = sp.to_string(arch)
        row = table_row(nb201_table, s, limit)
        c.tell(arch, row)
        if row["status"] == "ok":
            told[s] = (row["accuracy"], row["latency_device"])
    front = c.pareto_front()
    points = [(p["accuracy"], p["device"]) for p in front]
    assert len(front) >= 3
    assert [p["device"] for p in front] == sorted(p["device"] for p in front)          # by increasing cost
    assert [p["accuracy"] for p in front] == sorted(p["accuracy"] for p in front)      # so accuracy rises too
    for i, p in enumerate(points):                                                      # mutually non-dominated
        assert not dominated(p, points[:i] + points[i + 1:])
    for p in front:                                           # each is what the table says, and within the limit
        assert (p["accuracy"], p["device"]) == told[p["arch"]] and p["device"] <= limit
    truth = {s for s, p in told.items() if not dominated(p, told.values())}
    assert {p["arch"] for p in front} == truth                # exactly the non-dominated points told
    assert len(set(told)) > 100                               # it kept exploring (the front is not trivial)


def test_nsga2_uses_flops_without_latency_profiles_and_ignores_infeasible(nb201_table):
    sp = make_space("nb201")
    c = make_controller("nsga2", sp, {"population_size": 8}, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(80):
        arch = c.ask()
        row = table_row(nb201_table, sp.to_string(arch))
        if rng.random() < 0.3:
            row["status"] = "infeasible"
        c.tell(arch, row)
    front = c.pareto_front()
    assert front and all(set(p) == {"arch", "accuracy", "flops"} for p in front)
    assert [p["flops"] for p in front] == sorted(p["flops"] for p in front)


# ---- REINFORCE -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space_name", ["nb201", "fbnet"])
def test_rl_policy_learns_the_best_choice_of_each_decision(space_name):
    sp = make_space(space_name)
    sizes = sp.decision_sizes()
    target = [(3 * d + 1) % n for d, n in enumerate(sizes)]
    c = make_controller("rl", sp, {"surrogate": "none", "entropy_weight": 0}, seed=0)   # the policy alone
    for _ in range(400):
        arch = c.ask()
        reward = np.mean([d == t for d, t in zip(sp.to_decisions(arch), target)])
        c.tell(arch, {"status": "ok", "accuracy": float(reward)})
    probs = c.probabilities()
    p_target = np.array([p[t] for p, t in zip(probs, target)])
    uniform = np.array([1 / n for n in sizes])
    assert p_target.mean() > 2 * uniform.mean()
    assert (p_target > uniform).mean() >= 0.6            # most decisions moved towards their target


def test_rl_updates_the_policy_once_per_batch():
    sp = make_space("nb201")
    c = make_controller("rl", sp, {"batch_size": 4}, seed=0)
    changed = []
    for i in range(1, 25):
        before = c.logits.copy()
        arch = c.ask()
        c.tell(arch, {"status": "ok", "accuracy": decision_score(sp, arch) + 1e-3 * i})   # never a flat batch
        changed.append(not np.array_equal(before, c.logits))
    assert changed == [i % 4 == 0 for i in range(1, 25)]


def test_rl_learns_nothing_until_a_reward_exists_then_penalises_failures():
    sp = make_space("nb201")
    c = make_controller("rl", sp, {"batch_size": 2}, seed=0)
    for _ in range(4):
        c.tell(c.ask(), None)                      # no reward yet: nothing to compare with, no step, no NaN
    assert not c.logits.any() and c.steps == 0
    rng = np.random.default_rng(1)
    good, bad = (sp.decode(sp.to_string(sp.sample(rng))) for _ in range(2))
    c.tell(good, {"status": "ok", "accuracy": 0.9})
    c.tell(bad, {"status": "failed", "accuracy": 0.99})   # gets the penalty (lowest reward), not its 0.99
    assert c.steps == c.options.epochs and np.isfinite(c.logits).all()
    # the failure got the lowest reward (0.9, the good one's): no preference learned, the policy stays uniform
    assert all(np.allclose(p, 1 / len(p)) for p in c.probabilities())


def test_rl_learns_from_each_candidate_once():
    sp = make_space("nb201")
    c = make_controller("rl", sp, {"batch_size": 2}, seed=0)
    arch = c.ask()
    for _ in range(5):
        c.tell(arch, {"status": "ok", "accuracy": 0.5})   # repeats of a known candidate: free answers, no data
    assert len(c.batch) == 1 and c.steps == 0


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_rl_steps_per_update(algorithm):
    sp = make_space("nb201")
    c = make_controller("rl", sp, {"algorithm": algorithm, "batch_size": 2, "epochs": 3}, seed=0)
    rng = np.random.default_rng(0)
    for i in range(6):
        arch = sp.sample(rng)
        c.tell(arch, {"status": "ok", "accuracy": decision_score(sp, arch) + 1e-3 * i})
    assert c.steps == (9 if algorithm == "ppo" else 3)
    assert len(c.buffer) == (6 if algorithm == "ppo" else 2)   # ppo keeps the last `memory` (4) batches


def mnasnet(objectives=None, **options):
    return make_controller("rl", make_space("nb201"), {"reward": "mnasnet", **options}, seed=0,
                           objectives=objectives)


def test_mnasnet_reward_follows_the_paper():
    from nas.controllers.base import Outcome

    c = mnasnet(SearchObjectives(("p1",), {"p1": 5.0}), alpha=-0.07, beta=-0.5)
    assert c.reward(Outcome(0.8, True, {"p1": 4.0})) == pytest.approx(0.8 * (4 / 5) ** -0.07)   # within: alpha
    assert c.reward(Outcome(0.8, True, {"p1": 5.0})) == pytest.approx(0.8)
    assert c.reward(Outcome(0.8, False, {"p1": 6.0})) == pytest.approx(0.8 * (6 / 5) ** -0.5)  # over: beta
    assert c.reward(Outcome(None, False, {"p1": 4.0})) is None                                  # failed: penalty
    assert c.reward(Outcome(0.8, True, {})) == pytest.approx(0.8)                             # no figure: no term
    # explicit targets win over the limits, and every target multiplies in
    c = mnasnet(SearchObjectives(("p1", "p2"), {"p1": 5.0}), targets={"p1": 2.0, "p2": 10.0}, alpha=0.0, beta=-1.0)
    assert c.reward(Outcome(0.5, True, {"p1": 4.0, "p2": 5.0})) == pytest.approx(0.5 * (4 / 2) ** -1.0)
    assert c.reward(Outcome(0.5, True, {"p1": 4.0, "p2": 20.0})) == pytest.approx(0.5 * 0.5 * 0.5)
    hard = make_controller("rl", make_space("nb201"), seed=0, objectives=SearchObjectives(("p1",), {"p1": 5.0}))
    assert hard.reward(Outcome(0.8, True, {"p1": 9.0})) == 0.8 and hard.reward(Outcome(0.8, False)) is None


@pytest.mark.parametrize("objectives", [None, SearchObjectives(("p1",), {})], ids=["no-profiles", "no-limits"])
def test_mnasnet_reward_without_targets_or_limits_is_refused(objectives):
    with pytest.raises(ValueError, match="mnasnet"):
        mnasnet(objectives)


# ---- constraints are checked before any evaluation (Ray-free) ------------------------------------------------------
@pytest.fixture(scope="module")
def two_profile_context(tmp_path_factory, nb201_table):
    """The nb201 tabular recipe with two latency limits checked before a trial: the synthetic table's latency_ms
    (profile device) and a made-up gpu_ms column of a second table (profile gpu), each breaking ~40 %."""
    from nas.checks import load_recipe
    from nas.context import RunContext

    folder = tmp_path_factory.mktemp("two_profiles")
    rng = np.random.default_rng(0)
    gpu = 0.2 + nb201_table["params"] / 1e6 * rng.uniform(0.5, 1.5, len(nb201_table))
    gpu.rename("gpu_ms").to_frame().reset_index().to_csv(folder / "gpu.csv", index=False)
    limits = {"device": float(nb201_table["latency_ms"].quantile(0.6)), "gpu": float(gpu.quantile(0.6))}
    latency = (f"[{{profile: device, source: table, column: latency_ms, max_ms: {limits['device']}}}, "
               f"{{profile: gpu, source: table, table: '{folder / 'gpu.csv'}', column: gpu_ms, "
               f"max_ms: {limits['gpu']}}}]")
    recipe = load_recipe(REPO / "recipes" / "nb201_tabular.yaml", [f"constraints.latency={latency}"])
    return RunContext(recipe, folder), {"device": nb201_table["latency_ms"], "gpu": gpu}, limits


@pytest.mark.parametrize("name", CONTROLLERS.names())
def test_candidates_over_either_latency_limit_are_rejected_before_evaluation(two_profile_context, name):
    from nas.controllers.proposer import search_in_process
    from nas.trial import evaluate_candidate

    ctx, truth, limits = two_profile_context
    controller = make_controller(name, ctx.space, seed=0, objectives=SearchObjectives.from_constraints(
        ctx.recipe.constraints))
    ledger, evaluated = MemoryLedger(), []

    def evaluate(string):
        evaluated.append(string)
        return evaluate_candidate(ctx, string)

    done = search_in_process(controller, ledger, ctx.precheck, evaluate, budget=15)
    assert done == len(evaluated) == ledger.n_evaluated() == 15
    for s in evaluated:                                   # nothing over either limit was ever evaluated
        assert all(truth[p][s] <= limits[p] for p in limits), s
    rejected = [r for r in ledger.rows if r["status"] == "rejected"]
    assert rejected
    for r in rejected:                                    # both figures recorded, whichever limit broke
        assert r["latency_device"] == truth["device"][r["arch"]] and r["latency_gpu"] == truth["gpu"][r["arch"]]
        over = [p for p in limits if truth[p][r["arch"]] > limits[p]]
        assert over and f"latency on {over[0]}" in r["reason"]
    assert {p for r in rejected for p in limits if f"latency on {p}" in r["reason"]} == set(limits)
    assert all(r["status"] == "ok" for r in ledger.rows if r["status"] != "rejected")
    # the controller heard about every rejected one too (and again about any it proposed twice)
    assert controller.n_told >= len(ledger.rows) > done
