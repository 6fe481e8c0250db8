"""Tabular search: a metric table the test writes drives the nb201 recipe; bad tables are one-line errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.run import main

from conftest import REPO

RECIPE = REPO / "recipes" / "nb201_tabular.yaml"


@pytest.fixture(scope="module")
def table_file(tmp_path_factory) -> Path:
    """A metric table over every nb201 cell with the figures under other names (top1, edge_ms), and decoy
    ``accuracy`` / ``latency_ms`` columns that must not be read."""
    from nas.synthetic_nb201 import synthetic_nb201

    src = synthetic_nb201(1)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"arch": src["arch"], "top1": src["accuracy"],
                          "edge_ms": np.round(src["latency_ms"] * rng.uniform(0.8, 1.2, len(src)), 5),
                          "accuracy": 100 - src["accuracy"], "latency_ms": 1.0})
    path = tmp_path_factory.mktemp("table") / "bench.csv"
    table.to_csv(path, index=False)
    return path


def overrides(path: Path, accuracy: str = "top1", column: str = "edge_ms", *more: str) -> list[str]:
    return ["--set", f"evaluator.options.path={path}", "--set", f"evaluator.options.accuracy={accuracy}",
            "--set", f"constraints.latency.0.column={column}", *more]


def test_search_on_a_table_evaluates_only_feasible_rows_and_reports_the_best(tmp_path, table_file):
    table = pd.read_csv(table_file).set_index("arch")
    limit = float(table.edge_ms.quantile(0.4))   # most cells break it: they must be rejected without a trial
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(out),
                           *overrides(table_file), "--set", f"constraints.latency.0.max_ms={limit}",
                           "--set", "search.budget=16"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(out / "results.csv")
    evaluated, rejected = rows[rows.status != "rejected"], rows[rows.status == "rejected"]
    assert len(evaluated) == 16 and len(rejected) > 0
    assert (evaluated.status == "ok").all()
    # every figure is the table's own, from the columns the recipe named
    np.testing.assert_array_equal(evaluated.accuracy.to_numpy(), table.top1[evaluated.arch].to_numpy())
    np.testing.assert_array_equal(rows.latency_device.to_numpy(), table.edge_ms[rows.arch].to_numpy())
    assert (evaluated.latency_device <= limit).all() and (rejected.latency_device > limit).all()
    assert rejected.reason.str.contains("latency on device").all() and rejected.accuracy.isna().all()
    best = json.loads((out / "best.json").read_text())["best"]
    feasible = table.loc[evaluated.arch]
    feasible = feasible[feasible.edge_ms <= limit]
    assert best["accuracy"] == feasible.top1.max()
    assert best["arch"] in set(feasible.index[feasible.top1 == feasible.top1.max()])
    assert best["latency_device"] == pytest.approx(table.edge_ms[best["arch"]])
    exported = json.loads((out / "best.json").read_text())["export"]["latency"]["device"]
    assert exported["source"] == "table" and exported["measured_ms"] is None   # nothing to time a column on


# ---- one-line errors ---------------------------------------------------------------------------------------------
def run_bad(capsys, tmp_path: Path, *args: str) -> str:
    code = main([str(RECIPE), "--output", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()   # nothing was started
    return err


def test_missing_table_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    err = run_bad(capsys, tmp_path, *overrides(missing))
    assert str(missing) in err and "not found" in err


def test_missing_table_file_of_the_evaluator_alone(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    err = run_bad(capsys, tmp_path, "--set", f"evaluator.options.path={missing}", "--set", "constraints.latency=[]")
    assert str(missing) in err and "not found" in err and "evaluator.options.path" in err


def test_unknown_synthetic_table_of_a_constraint(tmp_path, capsys):
    err = run_bad(capsys, tmp_path, "--set", "constraints.latency.0.table=synthetic:nb999")
    assert "unknown synthetic table 'synthetic:nb999'" in err


def test_missing_accuracy_column(tmp_path, capsys, table_file):
    err = run_bad(capsys, tmp_path, *overrides(table_file, accuracy="top5"))
    assert str(table_file) in err and "evaluator.options.accuracy" in err and "'top5'" in err


def test_missing_latency_column(tmp_path, capsys, table_file):
    err = run_bad(capsys, tmp_path, *overrides(table_file, column="gpu_ms"))
    assert str(table_file) in err and "constraints.latency[0].column" in err and "'gpu_ms'" in err
    assert "edge_ms" in err   # the columns it has are listed


def test_table_source_without_a_column(tmp_path, capsys, table_file):
    err = run_bad(capsys, tmp_path, *overrides(table_file), "--set", "constraints.latency.0.column=null")
    assert "constraints.latency[0]" in err and "needs column" in err


def test_table_source_without_a_table(tmp_path, capsys):
    err = run_bad(capsys, tmp_path, "--set", "evaluator={name: proxy}", "--set", "search.concurrency=1")
    assert "constraints.latency[0].table" in err and "metric table" in err


def test_non_numeric_accuracy_column(tmp_path, capsys):
    path = tmp_path / "words.csv"
    pd.DataFrame({"arch": ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "top1": ["high"],
                  "edge_ms": [1.0]}).to_csv(path, index=False)
    err = run_bad(capsys, tmp_path, *overrides(path, accuracy="edge_ms", column="top1"))
    assert "constraints.latency[0].column" in err and "no numeric values" in err


# ---- archs the table does not list -------------------------------------------------------------------------------
@pytest.fixture
def partial(tmp_path, table_file):
    """A context on a table listing 40 of the 15,625 cells (and the cells it lists)."""
    from nas.checks import load_recipe
    from nas.context import RunContext

    table = pd.read_csv(table_file).iloc[::390][["arch", "top1", "edge_ms"]]
    path = tmp_path / "partial.csv"
    table.to_csv(path, index=False)
    recipe = load_recipe(RECIPE, overrides(path)[1::2] + ["constraints.latency.0.max_ms=5"])
    return RunContext(recipe, tmp_path), table.set_index("arch")


def test_evaluating_an_arch_missing_from_the_table_gives_a_failed_row(partial):
    from nas.trial import evaluate_candidate

    ctx, table = partial
    listed = table.index[0]
    assert evaluate_candidate(ctx, listed)["accuracy"] == table.top1[listed]
    missing = "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert missing not in table.index
    row = evaluate_candidate(ctx, missing)
    assert row["status"] == "failed" and row["accuracy"] is None and "no row" in row["error"]


def test_search_over_a_partial_table_records_unlisted_archs_as_failed(partial):
    from nas.controllers import make_controller
    from nas.controllers.base import SearchObjectives
    from nas.controllers.proposer import MemoryLedger, search_in_process
    from nas.trial import evaluate_candidate

    ctx, table = partial
    controller = make_controller("random", ctx.space, seed=0,
                                 objectives=SearchObjectives.from_constraints(ctx.recipe.constraints))
    ledger = MemoryLedger()
    done = search_in_process(controller, ledger, ctx.precheck, lambda s: evaluate_candidate(ctx, s), budget=10)
    assert done == 10
    for r in ledger.rows:
        if r["arch"] in table.index:
            assert r["status"] == "ok" and r["accuracy"] == table.top1[r["arch"]]
        else:
            assert r["status"] == "failed" and "no row" in r.get("error", "") and not math.isfinite(
                r["accuracy"] if r["accuracy"] is not None else math.nan)


def test_arch_strings_of_digits_keep_their_leading_zeros(tmp_path):
    """NAS-Bench-Macro's arch strings are digits: a table reader must not turn "00120201" into 120201."""
    from hardware_profiles.tables import read_latency_table, read_table
    from nas.metric_tables import read_metric_table

    path = tmp_path / "macro.csv"
    path.write_text("arch,accuracy,median_ms\n00120201,91.5,0.5\n00000001,90.0,0.4\n")
    assert list(read_metric_table(str(path)).index) == ["00120201", "00000001"]
    assert list(read_table(path)["arch"]) == ["00120201", "00000001"]
    assert read_latency_table(path, "median_ms").archs == ["00120201", "00000001"]
