"""The Tune-searcher controller (`tune`): a Ray Tune searcher as an ask/tell core, with free rejections, repeats
answered from the ledger, an exact resume, and a run through Ray Tune itself. The shared bad objective of
`test_controllers.py` covers it too (it is registered), with its default searcher, Optuna."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from nas.controllers import make_controller
from nas.controllers.proposer import MemoryLedger, search_in_process
from search_spaces import get_space

from conftest import REPO
from test_controllers import assert_strict_finite_json, bad_setup, drive

pytest.importorskip("optuna")
HYPEROPT = pytest.mark.skipif(importlib.util.find_spec("hyperopt") is None, reason="hyperopt is not installed")
# HyperOpt's TPE starts after 20 random points by default; 5 keep its tests short
SEARCHERS = {"optuna": {"searcher": "optuna"},
             "hyperopt": {"searcher": "hyperopt", "searcher_options": {"n_initial_points": 5}}}
SEARCHER_PARAMS = ["optuna", pytest.param("hyperopt", marks=HYPEROPT)]

SPACE = get_space("nb201", num_classes=10)
LIMIT = float(np.median([SPACE.flops(SPACE.sample(np.random.default_rng(i))) for i in range(200)]))


def score(string: str) -> float:
    """An easy objective: the mean choice index of the cell's six edges, in [0, 1]."""
    return float(np.mean(SPACE.to_decisions(SPACE.decode(string)))) / 4


def precheck(arch):
    """Rejects about half the space (FLOPs above the median), as a latency limit would, before any evaluation."""
    flops = SPACE.flops(arch)
    return ("too many FLOPs" if flops > LIMIT else None), {"flops": flops}


def search(controller, budget: int, ledger: MemoryLedger | None = None, check=precheck) -> list[str]:
    """Arch strings evaluated by `budget` evaluations in-process (the benchmark's loop)."""
    evaluated: list[str] = []

    def evaluate(string: str) -> dict:
        evaluated.append(string)
        return {"accuracy": score(string)}

    done = search_in_process(controller, ledger if ledger is not None else MemoryLedger(), check, evaluate, budget)
    assert done == len(evaluated) == budget
    return evaluated


def study_states(controller) -> Counter:
    """States of the trials of the Optuna study inside Ray's OptunaSearch."""
    return Counter(t.state.name for t in controller.searcher._ot_study.trials)


@pytest.mark.parametrize("searcher", SEARCHER_PARAMS)
def test_rejected_candidates_cost_nothing_and_are_told_with_the_penalty(searcher):
    c = make_controller("tune", SPACE, SEARCHERS[searcher], seed=0)
    ledger = MemoryLedger()
    evaluated = search(c, 30, ledger)
    assert len(set(evaluated)) == 30 == ledger.n_evaluated()                  # each evaluation a new arch
    assert all(SPACE.flops(SPACE.decode(s)) <= LIMIT for s in evaluated)      # nothing over the limit evaluated
    rejected = [r["arch"] for r in ledger.rows if r["status"] == "rejected"]
    assert len(rejected) >= 5
    learnt: dict[str, float | None] = {}
    for arch, _, value, _ in c.history:                                      # (later entries: penalised repeats)
        learnt.setdefault(arch, value)
    assert all(learnt[a] is None for a in rejected)                          # the searcher heard of each: penalty
    assert all(learnt[s] == score(s) for s in evaluated)
    assert c.n_told >= len(ledger.rows) and not c.pending                   # every suggestion completed
    if searcher == "optuna":                                                  # once each: accuracy, pruned, or
        states = study_states(c)                                              # skipped (a repeat)
        assert states["COMPLETE"] == 30 and states["PRUNED"] >= len(rejected)
        assert sum(states.values()) == c.n_asked and set(states) <= {"COMPLETE", "PRUNED", "FAIL"}


def test_optuna_beats_random_search_on_an_easy_objective():
    def best(name: str, seed: int) -> float:
        return max(score(s) for s in search(make_controller(name, SPACE, seed=seed), 40, check=lambda a: (None, {})))

    tpe = [best("tune", seed) for seed in range(3)]
    rnd = [best("random", seed) for seed in range(3)]
    assert np.mean(tpe) > np.mean(rnd) and min(tpe) >= 0.9


@pytest.mark.parametrize("searcher", SEARCHER_PARAMS)
def test_a_resumed_search_continues_exactly_and_evaluates_nothing_twice(searcher):
    whole = make_controller("tune", SPACE, SEARCHERS[searcher], seed=4)
    expected = search(whole, 36)
    first = make_controller("tune", SPACE, SEARCHERS[searcher], seed=4)
    ledger = MemoryLedger()
    head = search(first, 18, ledger)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))     # plain JSON, nothing pickled
    assert_strict_finite_json(state)
    resumed = make_controller("tune", SPACE, SEARCHERS[searcher], seed=99)
    resumed.load_state_dict(state)
    tail = search(resumed, 18, ledger)
    assert len(set(head + tail)) == 36                                       # the ledger's guarantee
    assert head + tail == expected                                           # and the same search
    assert resumed.state_dict() == whole.state_dict()


@pytest.mark.parametrize("searcher", SEARCHER_PARAMS)
def test_it_survives_the_shared_bad_objective(searcher):
    c, limit = bad_setup("tune", SEARCHERS[searcher], "mobilenet")
    drive(c, 40, limit=limit, check_every=10)
    d, _ = bad_setup("tune", SEARCHERS[searcher], "mobilenet", seed=7)
    d.load_state_dict(json.loads(json.dumps(c.state_dict(), allow_nan=False)))
    assert drive(d, 15, seed=5, limit=limit) == drive(c, 15, seed=5, limit=limit)


def test_twins_and_repeats_complete_every_suggestion_once():
    sp = get_space("mobilenet", {"kernels": [3, 5], "expansions": [3], "se": [False],
                                 "stages": [{"channels": 16, "depths": [1]}]})    # two architectures in all
    c = make_controller("tune", sp, {"repeat_patience": 6}, seed=0)
    archs = [c.ask() for _ in range(6)]          # as under Tune: the same arch suggested again while in flight
    assert len({sp.to_string(a) for a in archs}) == 2
    for arch in {sp.to_string(a): a for a in archs}.values():
        c.tell(arch, 0.5)
    assert study_states(c) == {"COMPLETE": 2, "FAIL": 4} and not c.pending
    streak = c.streak
    for _ in range(10):                           # nothing new left: repeats, ignored up to the patience
        c.tell(c.ask(), 0.5)
    penalised = 10 - (6 - streak)
    assert study_states(c) == {"COMPLETE": 2, "FAIL": 4 + 6 - streak, "PRUNED": penalised}
    assert [v for _, _, v, _ in c.history] == [0.5, 0.5] + [None] * penalised


@pytest.mark.parametrize("searcher", SEARCHER_PARAMS)
def test_a_candidate_it_did_not_suggest_is_learnt_where_the_library_can(searcher):
    c = make_controller("tune", SPACE, SEARCHERS[searcher], seed=0)
    outside = SPACE.sample(np.random.default_rng(5))      # e.g. in flight when an earlier session stopped
    c.tell(outside, {"status": "ok", "accuracy": 0.7})
    fed = searcher == "optuna"                            # HyperOptSearch has no add_evaluated_point
    assert c.history == [[SPACE.to_string(outside), list(SPACE.to_decisions(outside)), 0.7, fed]]
    if fed:
        assert study_states(c) == {"COMPLETE": 1}
    d = make_controller("tune", SPACE, SEARCHERS[searcher], seed=1)
    d.load_state_dict(c.state_dict())
    search(d, 3)


def test_a_missing_package_names_the_install_command(monkeypatch):
    from nas.checks import load_recipe
    from nas.recipe import RecipeError

    monkeypatch.setitem(sys.modules, "optuna", None)     # `import optuna` now fails as if it were not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[optuna\]"'):
        make_controller("tune", SPACE, {"searcher": "optuna"})
    with pytest.raises(RecipeError) as err:
        load_recipe(REPO / "recipes" / "nb201_tabular.yaml", ["controller={name: tune, options: {searcher: optuna}}"])
    assert len(str(err.value).splitlines()) == 1
    assert "controller.options.searcher" in str(err.value) and 'pip install -e ".[optuna]"' in str(err.value)


@pytest.mark.parametrize("options, message", [
    ({"searcher": "nevergrad"}, "unknown Tune searcher 'nevergrad'; expected one of: hyperopt, optuna"),
    ({"searcher": "hyperopt", "sampler": "random"}, "apply to searcher 'optuna'"),
    ({"searcher_options": {"metric": "loss"}}, "searcher_options: metric: set by the controller"),
    ({"searcher_options": {"bogus": 1}}, "searcher_options for OptunaSearch: .*bogus"),
    ({"sampler_options": {"bogus": 1}}, "sampler_options for TPESampler: .*bogus"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as err:
        make_controller("tune", SPACE, options)
    assert "Traceback" not in str(err.value)


def test_optuna_random_sampler():
    c = make_controller("tune", SPACE, {"sampler": "random"}, seed=0)
    assert len(set(search(c, 10))) == 10


def test_a_run_through_ray_tune_resumes_without_evaluating_anything_twice(tmp_path):
    out = tmp_path / "run"

    def run(budget: int, *extra: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                               "--output", str(out), "--set", "controller={name: tune, options: {searcher: optuna}}",
                               "--set", f"search.budget={budget}", "--set", "output.export=false", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((out / "state.json").read_text())

    first = run(5)                                  # two trials at a time (the recipe's concurrency)
    state = run(9, "--resume")
    rows = state["rows"]
    evaluated = [r["arch"] for r in rows if r["status"] != "rejected"]
    assert len(evaluated) == len(set(evaluated)) == 9
    assert rows[:len(first["rows"])] == first["rows"]
    assert any(r["status"] == "rejected" for r in rows)
    assert {h[0] for h in state["controller"]["history"]} == {r["arch"] for r in rows}   # it learnt every row
