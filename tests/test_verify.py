"""Measuring the best candidates before export (`nas.verify`).

The measurement is a test double of the source's `measure_exported` (fixed figures per network): what is tested is
which network the run exports given what was measured, the record kept, and the resume. One end-to-end run checks
that a real search measures its best live and says so on the model card.
"""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from hardware_profiles import LocalCpu1T
from nas.recipe import Constraints, LatencyConstraint
from nas.results import RunLog
from nas.verify import FILE, checked_limits, verify_best


class Measured:
    """A latency source whose measurement is a fixed figure per arch; counts the measurements taken."""

    def __init__(self, figures: dict[str, float]):
        self.figures, self.calls, self.profile = figures, [], LocalCpu1T()

    def measure_exported(self, space, arch, rounds: int = 2):
        self.calls.append(arch)
        return self.figures[arch], "test double"


def context(figures: dict[str, float], verify: int = 5, **lat):
    lat = LatencyConstraint(**{"profile": "local-cpu", "max_ms": 1.0, **lat})
    space = SimpleNamespace(decode=lambda a: a)
    src = Measured(figures)
    recipe = SimpleNamespace(constraints=Constraints(latency=[lat], verify=verify))
    return SimpleNamespace(recipe=recipe, space=space, latency={"local-cpu": src}), src


def ledger(tmp_path, rows: list[tuple[str, float, str]]) -> RunLog:
    log = RunLog(tmp_path, ["local-cpu"])
    for arch, acc, status in rows:
        log.add({"arch": arch, "status": status, "accuracy": acc, "flops": 1e6, "params": 1e4,
                 "latency_local-cpu": 0.9, "feasible": status == "ok"})
    return log


ROWS = [("a", 0.70, "ok"), ("b", 0.90, "ok"), ("c", 0.95, "infeasible"), ("d", 0.80, "ok"), ("e", 0.60, "ok")]


def test_the_first_candidate_measured_within_the_limit_is_exported(tmp_path):
    ctx, src = context({"a": 0.8, "b": 1.3, "d": 0.95, "e": 0.5})
    check = verify_best(ctx, ledger(tmp_path, ROWS), tmp_path, log_line=lambda line: None)
    assert src.calls == ["b", "d"]                   # most accurate feasible first; the infeasible c never
    assert check.best["arch"] == "d"
    assert [m["within"] for m in check.measured] == [False, True]
    assert "exported the next" in check.note and "1.300 ms" in check.note
    saved = pd.read_csv(tmp_path / FILE)
    assert list(saved["arch"]) == ["b", "d"] and list(saved["measured_local-cpu"]) == [1.3, 0.95]


def test_the_search_best_stays_when_nothing_measures_within_the_limit(tmp_path):
    ctx, src = context({"a": 1.2, "b": 1.3, "d": 1.1, "e": 0.5}, verify=3)
    check = verify_best(ctx, ledger(tmp_path, ROWS), tmp_path, log_line=lambda line: None)
    assert src.calls == ["b", "d", "a"]              # `verify` candidates at most: e is never measured
    assert check.best["arch"] == "b" and not any(m["within"] for m in check.measured)
    assert check.note.startswith("not verified") and "raise constraints.verify" in check.note


def test_a_resumed_check_reuses_its_measurements_against_the_limits_of_now(tmp_path):
    ctx, src = context({"a": 0.8, "b": 1.3, "d": 0.95, "e": 0.5})
    log = ledger(tmp_path, ROWS)
    verify_best(ctx, log, tmp_path, log_line=lambda line: None)
    ctx2, src2 = context({"a": 0.8, "b": 1.3, "d": 0.95, "e": 0.5}, max_ms=1.5)
    check = verify_best(ctx2, log, tmp_path, log_line=lambda line: None)
    assert src2.calls == [] and check.best["arch"] == "b" and check.note.startswith("verified: the search's best")
    assert list(pd.read_csv(tmp_path / FILE)["arch"]) == ["b", "d"]   # d, not reached this time, is kept


def test_release_leaves_out_what_the_check_measured_over_the_limit(tmp_path):
    from nas.zoo.release import ReleaseSettings, measured_over, select_rows

    ctx, _ = context({"a": 0.8, "b": 1.3, "d": 0.95, "e": 0.5})
    log = ledger(tmp_path, ROWS)
    verify_best(ctx, log, tmp_path, log_line=lambda line: None)
    assert measured_over(tmp_path) == {"b"}
    rows = select_rows(ReleaseSettings(run_dir=str(tmp_path), top=2), ctx, log)
    assert [r["arch"] for r in rows] == ["d", "a"]


@pytest.mark.parametrize("setting", [dict(verify=0), dict(max_ms=None), dict(source="profile")])
def test_nothing_is_measured_without_a_predicted_limit_to_check(tmp_path, setting):
    verify = setting.pop("verify", 5)
    ctx, src = context({"b": 1.3}, verify=verify, **setting)
    assert verify_best(ctx, ledger(tmp_path, ROWS), tmp_path, log_line=lambda line: None) is None
    assert src.calls == [] and not (tmp_path / FILE).exists()


def test_table_profiles_are_not_checked_here():
    ctx, src = context({})
    src.profile = object()   # not this machine's device
    assert checked_limits(ctx) == {}


def test_a_search_measures_its_best_and_says_so_on_the_card(tmp_path):
    from conftest import ASSETS, REPO

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
                           "--set", "search.budget=2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "best.json").read_text())
    check = summary["verification"]
    assert check["chosen"] == summary["best"]["arch"] == (out / "best" / "arch.txt").read_text().strip()
    first = check["measured"][0]
    assert first["within"] and 0 < first["measured_local-cpu"] <= 50   # the tiny networks are far below 50 ms
    assert check["note"] in (out / "best" / "MODEL_CARD.md").read_text()
    assert pd.read_csv(out / FILE, dtype={"arch": str})["arch"].iloc[0] == summary["best"]["arch"]
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    del saved["constraints"]["verify"]   # a run started before the field existed
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
                           "--set", "search.budget=3", "--set", "constraints.verify=2", "--resume"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]   # resumed; and verify may change on --resume
    assert json.loads((out / "best.json").read_text())["evaluated"] >= 3
