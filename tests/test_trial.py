"""A candidate's evaluation, the run ledger and the Pareto helpers, without Ray."""
from __future__ import annotations

import json
import warnings

import pytest

from core.registry import Registry
from nas.checks import load_recipe
from nas.objectives import pareto_mask
from nas.results import RunLog, score_of
from nas.context import RunContext
from nas.trial import evaluate_candidate, run_files, weights_path, worker_run_dir

from conftest import ASSETS


@pytest.fixture
def ctx(tmp_path):
    recipe = load_recipe(ASSETS / "tiny.yaml", ["evaluator.options.limit=200", "evaluator.options.epochs=0.2"])
    return RunContext(recipe, tmp_path)


SMALL = "r16_w0.25|k3e3|k3e3"   # a point of the tiny space under its FLOPs limit
BIG = "r16_w0.5|k5e6s,k5e6s|k5e6s,k5e6s"


def test_feasible_candidate_is_measured_trained_and_saved(ctx):
    row = evaluate_candidate(ctx, SMALL)
    assert row["status"] == "ok" and row["feasible"]
    assert 0 <= row["accuracy"] <= 1 and row["latency_local-cpu"] > 0
    assert row["flops"] == ctx.space.flops(ctx.space.decode(SMALL))
    assert weights_path(ctx.run_dir, SMALL).is_file()


def test_over_the_flops_limit_is_not_trained(ctx):
    row = evaluate_candidate(ctx, BIG)
    assert row["status"] == "infeasible" and row["accuracy"] is None
    assert "max_flops" in row["reason"]
    assert not weights_path(ctx.run_dir, BIG).exists()


def test_over_the_latency_limit_is_not_trained_unless_asked(tmp_path):
    recipe = load_recipe(ASSETS / "tiny.yaml", ["constraints.latency=[{profile: local-cpu, max_ms: 0.000001}]",
                                                "evaluator.options.limit=200"])
    row = evaluate_candidate(RunContext(recipe, tmp_path), SMALL)
    assert row["status"] == "infeasible" and row["accuracy"] is None and "latency" in row["reason"]
    recipe = load_recipe(ASSETS / "tiny.yaml", ["constraints.latency=[{profile: local-cpu, max_ms: 0.000001}]",
                                                "evaluator.options.limit=200", "search.train_infeasible=true"])
    row = evaluate_candidate(RunContext(recipe, tmp_path), SMALL)
    assert row["status"] == "infeasible" and 0 <= row["accuracy"] <= 1


@pytest.mark.parametrize("failure", ["raise", "nan"])
def test_crash_or_nan_becomes_a_failed_row(ctx, monkeypatch, failure):
    def broken(model, resolution):
        if failure == "raise":
            raise RuntimeError("out of memory")
        return {"accuracy": float("nan")}

    monkeypatch.setattr(ctx.evaluator, "evaluate", broken)
    row = evaluate_candidate(ctx, SMALL)
    assert row["status"] == "failed" and row["accuracy"] is None and score_of(row) is None
    assert ("out of memory" if failure == "raise" else "non-finite") in row["error"]


def test_arch_outside_the_space_is_a_failed_row(ctx):
    row = evaluate_candidate(ctx, "r16_w0.25|k9e3|k3e3")
    assert row["status"] == "failed" and "kernel" in row["error"]


def test_run_log_round_trip_and_scores(tmp_path):
    log = RunLog(tmp_path, ["local-cpu"])
    log.add({"arch": "a", "status": "ok", "accuracy": 0.8, "flops": 10, "feasible": True})
    log.add({"arch": "b", "status": "ok", "accuracy": 0.8, "flops": 5, "feasible": True})
    log.add({"arch": "c", "status": "failed", "accuracy": None, "flops": 1})
    log.reject("d", "flops 99 > max_flops 50", flops=99)
    log.save({"rng": 1}, ["e"])
    back = RunLog.load(tmp_path)
    assert back.rows == log.rows and back.pending == ["e"] and back.controller_state == {"rng": 1}
    assert back.n_evaluated() == 3 and back.best_feasible()["arch"] == "b"   # tie -> fewer FLOPs
    assert score_of(back.get("a")) == 0.8 and score_of(back.get("c")) is None and back.get("zz") is None
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert csv[0].startswith("index,arch,status,accuracy,flops,params,latency_local-cpu,feasible")
    assert len(csv) == 5
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temp files"
    json.loads((tmp_path / "state.json").read_text())


def test_ledger_records_a_crashed_trial(tmp_path):
    log = RunLog(tmp_path, [])
    seen = []
    log.listeners.append(seen.append)
    row = log.complete("x", "t1", None, error=True)
    assert row is log.rows[0] and score_of(row) is None
    assert row["status"] == "failed" and "crashed" in row["error"] and seen == log.rows


def test_pareto_mask():
    acc = [0.9, 0.8, 0.95, 0.7, 0.9]
    lat = [2.0, 1.0, 3.0, 1.5, 2.5]
    assert pareto_mask(acc, lat).tolist() == [True, True, True, False, False]
    assert pareto_mask([], []).tolist() == []


def test_registry_lists_names_and_warns_on_overwrite():
    reg: Registry = Registry("widget")
    reg.register("b")(1)
    reg.register("a")(2)
    assert reg.names() == ["a", "b"] and reg.get("a") == 2 and "a" in reg
    with pytest.raises(ValueError, match="unknown widget 'c'; expected one of: a, b"):
        reg.get("c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.register("a")(3)
    assert caught and reg.get("a") == 3


def test_same_arch_gets_the_same_accuracy_whatever_ran_before(ctx):
    import torch

    first = evaluate_candidate(ctx, SMALL)
    evaluate_candidate(ctx, "r16_w0.5|k5e3|k3e6")   # another trial in the same worker moves the global RNG
    torch.rand(100)
    again = evaluate_candidate(ctx, SMALL)
    assert first["status"] == again["status"] == "ok"
    assert again["accuracy"] == first["accuracy"]


def test_a_worker_without_the_run_folder_gets_the_drivers_predictors_and_measures_nothing(ctx, tmp_path,
                                                                                          monkeypatch):
    import tempfile

    import nas.latency_sources

    files = run_files(ctx.run_dir)                   # what the driver ships with the trainable
    assert any(name.endswith("meta.json") for name in files) and all(n.startswith("predictors/") for n in files)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node-tmp"))
    gone = tmp_path / "elsewhere" / "run"            # the driver's run folder, not on this node
    folder = worker_run_dir(gone, files)
    assert folder.is_relative_to(tmp_path / "node-tmp") and not gone.exists()
    monkeypatch.setattr(nas.latency_sources, "_calibrated", lambda *a, **k: pytest.fail("calibrated again"))
    worker = RunContext(ctx.recipe, folder)
    arch = ctx.space.decode(SMALL)
    assert worker.latency["local-cpu"].latency(ctx.space, arch) == ctx.latency["local-cpu"].latency(ctx.space, arch)
    assert worker_run_dir(gone, files) == folder     # the next trial on this node finds them in place
    (ctx.run_dir / "state.json").write_text("{}")    # a node that sees the run folder uses it
    assert worker_run_dir(ctx.run_dir, files) == ctx.run_dir
