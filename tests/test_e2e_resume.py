"""Resuming through Ray Tune: a search stopped after its budget and resumed with a bigger one proposes exactly what
an uninterrupted search with the bigger budget proposes (one trial at a time, fixed seed, a metric table)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

RECIPE = REPO / "recipes" / "nb201_tabular.yaml"
CONTROLLERS = {"rl": "{name: rl, options: {batch_size: 2}}",
               "evolution": "{name: evolution, options: {population_size: 4, sample_size: 2}}"}


def run(out: Path, controller: str, budget: int, *extra: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(out),
                           "--set", f"controller={CONTROLLERS[controller]}", "--set", "search.concurrency=1",
                           "--set", f"search.budget={budget}", "--set", "output.export=false", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def state(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


@pytest.mark.parametrize("controller", ["rl", pytest.param("evolution", marks=pytest.mark.slow)])
def test_resumed_search_proposes_what_an_uninterrupted_one_does(tmp_path, controller):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, controller, 12)
    run(b, controller, 5)
    first = state(b)
    assert sum(r["status"] != "rejected" for r in first["rows"]) == 5 and not first["pending"]
    run(b, controller, 12, "--resume")
    rows_a, rows_b = state(a)["rows"], state(b)["rows"]
    assert sum(r["status"] != "rejected" for r in rows_a) == 12
    assert any(r["status"] == "rejected" for r in rows_a)     # the sequence includes free rejections
    # every proposal, rejected ones included, in the same order, with the same outcome
    assert [r["arch"] for r in rows_b] == [r["arch"] for r in rows_a]
    assert [(r["status"], r.get("accuracy")) for r in rows_b] == [(r["status"], r.get("accuracy")) for r in rows_a]
    assert rows_b[:len(first["rows"])] == first["rows"]        # the first session's rows kept as they were
    assert state(b)["controller"] == state(a)["controller"]    # and the controller ends in the same state


def test_resume_refuses_a_controller_state_it_cannot_read_in_one_line(tmp_path):
    out = tmp_path / "run"
    run(out, "rl", 3)
    saved = state(out)
    del saved["controller"]["surrogate"]   # as saved by a version whose controller kept other fields
    del saved["sha256"]                    # (and, like every version before checksums, without one)
    (out / "state.json").write_text(json.dumps(saved))
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(out), "--resume",
                           "--set", f"controller={CONTROLLERS['rl']}", "--set", "search.concurrency=1",
                           "--set", "search.budget=4", "--set", "output.export=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / 'state.json'}: controller:") and "'surrogate'" in last
    assert state(out)["rows"] == saved["rows"]   # nothing already computed was lost
