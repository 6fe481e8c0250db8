"""bench/memory_energy.py: a run's file keeps every network's measured bytes, and --rescore judges today's
predictions on them without the device."""
from __future__ import annotations

import json

import numpy as np

from conftest import load_bench


def test_rescore_judges_todays_prediction_on_the_measurements_a_run_kept(tmp_path, capsys):
    from predictors.memory import inference_memory, training_memory
    from search_spaces import get_space

    bench = load_bench("memory_energy")
    space = get_space("macro", {}, num_classes=10)
    archs = bench.sample(space, 6, 0)
    names = [space.to_string(a) for a in archs]
    predicted = [training_memory(space, a, 32).total_bytes for a in archs]
    measured = [int(p * 1.1) for p in predicted]   # a device that holds 10 % more than predicted
    cell = bench.training_figures(measured, predicted, [1] * 6, names)
    assert cell["measured"] == dict(zip(names, measured)) and cell["out_of_memory_at_predicted"] == 6
    eager = [inference_memory(space, a, engine="eager").activation_bytes for a in archs]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"training": {"macro": {"32": {"predicted": {}}}},   # a cell from before
                                "gpu": {"macro": {"training_b32": cell,
                                                  "inference": {"measured": dict(zip(names, eager))}}}}))
    assert bench.rescore(str(path)) == 0
    out = capsys.readouterr().out
    assert "macro         32 no per-network measurements kept in this file" in out
    assert "eager walk 0.0% / 0.0%" in out   # the eager walk is what was "measured"
    row = next(line for line in out.splitlines() if line.startswith("macro") and "/6" in line)
    assert "9.1% /   9.1%" in row and "6/6" in row   # 1 - 1 / 1.1, every network above the prediction
    assert np.isclose(cell["predicted"]["median"], 1 - 1 / 1.1, atol=1e-3)
