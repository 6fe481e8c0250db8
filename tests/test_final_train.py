"""Final training (`python -m nas.train`): a run's chosen networks trained with a final budget, network by network,
resumable, with their curves; bad input is one line and exit status 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ASSETS, REPO

from nas.checks import load_recipe
from nas.context import RunContext
from nas.evaluation.evaluators import ProxyTrainingEvaluator
from nas.export import load_weights
from nas.results import RunLog
from nas.train import main, network_name


def make_run(folder, recipe_path=ASSETS / "tiny.yaml", accuracies=(0.5, 0.7, 0.6)) -> list[str]:
    """A run folder as a finished search leaves it (recipe.yaml, state.json, results.csv), without running one;
    returns the rows' archs."""
    recipe = load_recipe(recipe_path)
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    space = RunContext(recipe).space
    rng = np.random.default_rng(0)
    log, archs = RunLog(folder, recipe.profiles), []
    while len(archs) < len(accuracies):
        arch = space.to_string(space.sample(rng))
        if arch not in archs:
            archs.append(arch)
    for arch, acc in zip(archs, accuracies):
        log.add({"arch": arch, "status": "ok", "accuracy": acc, "flops": 100, "feasible": True})
    log.save()
    return archs


@pytest.fixture
def counted(monkeypatch):
    """Counts the networks the proxy evaluator trains."""
    calls = []
    real = ProxyTrainingEvaluator.evaluate

    def evaluate(self, model, resolution):
        calls.append(self.options.epochs)
        return real(self, model, resolution)

    monkeypatch.setattr(ProxyTrainingEvaluator, "evaluate", evaluate)
    return calls


def test_top_networks_are_trained_with_the_final_budget_and_resume_network_by_network(tmp_path, counted, capsys):
    run = tmp_path / "run"
    archs = make_run(run)
    assert main([str(run), "--top", "2", "--epochs", "1"]) == 0
    best_two = [archs[1], archs[2]]                       # accuracies 0.7 and 0.6
    assert counted == [1.0, 1.0]
    out = run / "final"
    for arch in best_two:
        folder = out / network_name(arch)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["arch"] == arch and (folder / "arch.txt").read_text().strip() == arch
        assert metrics["settings"]["options"]["epochs"] == 1.0 and metrics["settings"]["options"]["limit"] == 400
        assert metrics["settings"]["options"]["device"] == "auto"              # the GPU where there is one
        assert metrics["search_accuracy"] in (0.7, 0.6) and 0 <= metrics["accuracy"] <= 1
        assert metrics["held_out_images"] == 4600 and 0 <= metrics["accuracy_held_out"] <= 1   # limit 400 of 5,000
        curve = pd.read_csv(folder / "curve.csv")
        assert len(curve) == metrics["steps"] == 10 and curve["loss"].notna().all()   # 320 images / 32 per step
        assert (folder / "curve.png").stat().st_size > 0
        space = RunContext(load_recipe(ASSETS / "tiny.yaml")).space
        model = load_weights(space.build(space.decode(arch)), folder / "weights.safetensors")
        images, labels = RunContext(load_recipe(ASSETS / "tiny.yaml")).evaluator.held_out(16).tensors
        with torch.no_grad():
            held = float((model.eval()(images).argmax(1) == labels).float().mean())
        assert metrics["accuracy_held_out"] == pytest.approx(held)
        assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    listed = json.loads((out / "final.json").read_text())["networks"]
    assert sorted(n["arch"] for n in listed) == sorted(best_two)
    assert [n["accuracy"] for n in listed] == sorted((n["accuracy"] for n in listed), reverse=True)
    printed = capsys.readouterr().out
    assert all(a in printed for a in best_two)

    counted.clear()
    assert main([str(run), "--top", "2", "--epochs", "1"]) == 0 and counted == []        # nothing trained again
    (out / network_name(archs[2]) / "metrics.json").unlink()                             # as if killed during it
    assert main([str(run), "--top", "2", "--epochs", "1"]) == 0 and counted == [1.0]
    capsys.readouterr()
    assert main([str(run), "--top", "2", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "trained with other settings (epochs: 1.0 -> 2.0)" in err
    assert len(err.splitlines()) == 1


def test_the_search_s_latency_setup_plays_no_part(tmp_path):
    run = tmp_path / "run"
    archs = make_run(run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["constraints"]["latency"][0]["predictor"] = str(tmp_path / "moved-away")   # a folder that is gone
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main([str(run), "--arch", archs[0], "--epochs", "0.5"]) == 0
    assert (run / "final" / network_name(archs[0]) / "metrics.json").is_file()


def test_the_same_settings_train_the_same_weights(tmp_path):
    run = tmp_path / "run"
    archs = make_run(run)
    assert main([str(run), "--arch", archs[0], "--epochs", "0.5"]) == 0
    assert main([str(run), "--arch", archs[0], "--epochs", "0.5", "--out", str(tmp_path / "again")]) == 0
    a = (run / "final" / network_name(archs[0]) / "weights.safetensors").read_bytes()
    b = (tmp_path / "again" / network_name(archs[0]) / "weights.safetensors").read_bytes()
    assert a == b


@pytest.mark.parametrize("argv, message", [
    (["{run}", "--top", "1", "--set", "search.budget=3"], "final training changes evaluator options only"),
    (["{run}", "--arch", "r16_w9|x"], "--arch: arch 'r16_w9|x'"),
    (["{run}", "--top", "0"], "--top: must be at least 1"),
    (["{run}", "--top", "1", "--set", "evaluator.options.epochs=-1"], "evaluator.options.epochs"),
    (["{run}", "--top", "1", "--epochs", "0"], "evaluator.options.epochs"),
    (["{missing}", "--top", "1"], "not a run directory of a search (recipe.yaml missing)"),
    (["{run}", "--top", "1", "--arch", "x"], "not allowed with argument"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    make_run(run)
    args = [a.format(run=run, missing=tmp_path / "none") for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not (run / "final").exists()


def test_a_run_without_a_training_evaluator_or_a_feasible_network_is_refused(tmp_path, capsys):
    tabular = tmp_path / "tabular"
    make_run(tabular, REPO / "recipes" / "nb201_tabular.yaml")
    assert main([str(tabular), "--top", "1"]) == 2
    assert "'tabular' does not train networks" in capsys.readouterr().err
    empty = tmp_path / "empty"
    make_run(empty, accuracies=())
    assert main([str(empty), "--top", "1"]) == 2
    assert "results.csv: no feasible network to train" in capsys.readouterr().err


def test_a_detection_run_trains_its_detectors_the_same_way(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "lrssd_detection.yaml").read_text())
    recipe["space"]["options"]["resolution"] = 64
    recipe["evaluator"]["options"].update(synthetic_train=24, synthetic_val=8, synthetic_size=64, epochs=0.5,
                                          data_dir=str(tmp_path / "data"), batch_size=8, threads=1)
    recipe["constraints"]["latency"][0].update(calibration=4, max_ms=1000.0)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    arch = make_run(run, path, accuracies=(0.3,))[0]
    assert main([str(run), "--top", "1", "--epochs", "1"]) == 0
    folder = run / "final" / network_name(arch)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["accuracy"] == metrics["map50"] and 0 <= metrics["map"] <= metrics["map50"] <= 1
    assert metrics["settings"]["evaluator"] == "detection" and metrics["settings"]["options"]["epochs"] == 1.0
    assert len(pd.read_csv(folder / "curve.csv")) == metrics["steps"] == 3            # 24 images, 8 per step
