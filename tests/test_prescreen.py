"""Prescreening in-process (no Ray): the stage's rows, its top-k, and the surrogate accuracy estimator."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from nas.checks import load_recipe
from nas.controllers import make_controller
from nas.controllers.base import SearchObjectives
from nas.evaluation import make_evaluator
from nas.synthetic_nb201 import synthetic_nb201
from nas.prescreen import load_prescreen, run_prescreen
from nas.context import RunContext
from search_spaces import get_space

RECIPE = "recipes/nb201_prescreen.yaml"


def test_prescreen_estimates_in_process_and_queues_the_best_feasible(tmp_path):
    table_limit = "constraints.latency=[{profile: device, source: table, column: latency_ms, max_ms: 0.9}]"
    recipe = load_recipe(RECIPE, [table_limit, "search.prescreen.candidates=300", "search.budget=5"])
    ctx = RunContext(recipe, tmp_path)
    controller = make_controller("evolution", ctx.space, seed=0,
                                 objectives=SearchObjectives.from_constraints(recipe.constraints))
    summary = run_prescreen(recipe, tmp_path, ctx, controller)
    rows = pd.read_csv(tmp_path / "prescreen.csv")
    table = synthetic_nb201(0).set_index("arch")
    ok = rows[rows["status"] == "ok"]
    assert summary["candidates"] == len(ok) == 300 and summary["rejected"] == (rows["status"] == "rejected").sum()
    rejected = rows[rows["status"] == "rejected"]
    assert (ok["latency_device"] <= 0.9).all() and (rejected["latency_device"] > 0.9).all()
    assert np.allclose(ok["accuracy"], table.loc[ok["arch"], "accuracy"])   # the estimator's figures, row by row
    # best first; equal accuracies (cells with dead edges score alike) by fewer FLOPs, as run_prescreen breaks ties
    best = ok.sort_values(["accuracy", "flops"], ascending=[False, True], kind="stable")["arch"].head(5).tolist()
    assert summary["top_k"] == best and load_prescreen(tmp_path)["top_k"] == best
    assert controller.n_told >= len(rows) > 300   # rejected (and repeated) proposals were told too, unestimated


def test_surrogate_estimates_unseen_architectures(tmp_path):
    table = synthetic_nb201(0)
    connected = table[table["accuracy"] > 50]
    train = connected.sample(800, random_state=0)
    train.to_csv(tmp_path / "results.csv", index=False)
    space = get_space("nb201", num_classes=10)
    est = make_evaluator("surrogate", {"path": str(tmp_path / "results.csv")}).bind(space)
    unseen = connected.drop(train.index).sample(500, random_state=1)
    predicted = [est.estimate(a)["accuracy"] for a in unseen["arch"]]
    assert spearmanr(predicted, unseen["accuracy"])[0] > 0.7
