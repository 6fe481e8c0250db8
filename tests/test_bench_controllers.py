"""bench/controllers.py: the one-table JSON form outside checks read, and the suite's figures on a small problem."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("controllers")


def test_one_table_json_has_regret_per_controller_and_checkpoint(bench, capsys):
    out = bench.main(["--table", "synthetic:nb201", "--budget", "60", "--seeds", "2", "--jobs", "1",
                      "--controllers", "local,evolution:surrogate=none", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["regret"] == json.loads(json.dumps(out["regret"]))
    assert set(printed["regret"]) == {"random", "local", "evolution:surrogate=none"}   # random always included
    for spec, by_checkpoint in printed["regret"].items():
        assert list(by_checkpoint) == ["50"]
        assert by_checkpoint["50"] >= 0
    assert printed["ratio_vs_random"]["random"]["50"] == pytest.approx(1.0)
    assert printed["feasible_rows"] < printed["rows"] and printed["seeds"] == 2


def test_suite_figures_regret_ratio_and_goals_on_a_small_problem(bench):
    """Two tiny problems (one real-like, one fixture): regret is measured from the feasible optimum, the fixture
    stays out of the means, and the goals name the problems where a controller loses."""
    rng = np.random.default_rng(0)
    from search_spaces import get_space

    space = get_space("nb201")
    archs = sorted({space.to_string(space.sample(rng)) for _ in range(3000)})
    acc = dict(zip(archs, rng.normal(60, 5, len(archs))))
    cost = dict(zip(archs, rng.uniform(1, 10, len(archs))))
    problems = [bench.Problem("toy/real", "nb201", acc, cost, 4.0, "held-out"),
                bench.Problem("toy/fixture", "nb201", acc, cost, 8.0, "fixture")]
    specs = ["random", "local"]
    # candidates outside the toy table have no cost: rejected for free, like over-limit ones
    traces = bench.run_all(problems, specs, range(2), 30, jobs=1)
    results = bench.figures(problems, traces, specs, [30])
    real = results[0]
    assert real["optimum"] == max(v for a, v in acc.items() if cost[a] <= 4.0)
    assert all(v >= 0 for s in specs for v in real["regret"][s].values())
    summ = bench.summary(results, specs, [30])
    assert summ["mean_ratio"]["all"]["random"][30] == pytest.approx(1.0)
    assert summ["mean_ratio"]["dev"]["local"][30] is None                 # no dev problem in this set
    assert summ["goals"]["local"]["mean_ratio"] == pytest.approx(real["ratio_vs_random"]["local"][30])
