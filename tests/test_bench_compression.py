"""bench/compression.py's paired figures over seeds (issue 21): the accuracy difference of each arm against (a),
seed by seed, with its t-interval, and the pooling of several runs' files (rows made here, not measurements)."""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from scipy.stats import t as student

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import compression  # noqa: E402

A, C = compression.ARMS["none"], compression.ARMS["search"]


def _rows(seeds, a_acc, c_acc, a_ms=0.12, c_ms=0.06, held=True):
    rows = []
    for seed, a, c in zip(seeds, a_acc, c_acc):
        for arm, acc, ms in ((A, a, a_ms), (C, c, c_ms)):
            row = {"seed": seed, "arm": arm, "int8 accuracy": acc + 0.01, "int8 ms": ms}
            if held:
                row["held-out int8 accuracy"] = acc
            rows.append(row)
    return rows


def test_paired_figures_are_the_seedwise_differences_with_their_t_interval():
    lines = compression.paired(pd.DataFrame(_rows([0, 1, 2], [0.90, 0.92, 0.91], [0.91, 0.92, 0.89])))
    assert lines[0].startswith("paired over seeds, held-out int8 accuracy")
    diff = pd.Series([0.01, 0.0, -0.02])
    half = student.ppf(0.975, 2) * diff.std(ddof=1) / 3 ** 0.5
    assert lines[1] == (f"  {C}: 3 seeds, {diff.mean():+.4f} ({diff.mean() - half:+.4f} to {diff.mean() + half:+.4f}); "
                        "won 1, tied 1, lost 1; latency as shipped x0.500 (x0.500-x0.500)")


def test_without_held_out_scores_the_searches_own_accuracy_is_paired():
    head, line = compression.paired(pd.DataFrame(_rows([0, 1], [0.9, 0.9], [0.95, 0.93], held=False)))
    assert head.startswith("paired over seeds, int8 accuracy")
    assert "2 seeds, +0.0400" in line and "won 2, tied 0, lost 0" in line


def test_runs_are_pooled_by_seed_and_a_seed_in_two_files_is_refused(tmp_path, capsys):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    one.write_text(json.dumps({"rows": _rows([0, 1], [0.90, 0.92], [0.91, 0.92])}))
    two.write_text(json.dumps({"rows": _rows([2], [0.91], [0.89])}))
    df = compression.pool([str(one), str(two)])
    assert sorted(df["seed"].unique()) == [0, 1, 2]
    assert "3 seeds" in compression.paired(df)[1]
    with pytest.raises(SystemExit) as exit_:
        compression.pool([str(one), str(one)])
    assert exit_.value.code == 2 and "seed 0, (a) fp32 search, then int8 is in" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit):
        compression.pool([str(tmp_path / "bad.json")])
    assert "not a bench/compression.py --out file" in capsys.readouterr().err


@pytest.mark.slow
def test_arm_lowest_compresses_the_fp32_searchs_winner_everywhere_without_searching_again(tmp_path):
    """End to end on the tiny recipe under an FPGA simulator's limit (about 40 s): (a') is (a)'s winner with every
    unit in 4 bits, priced by the simulator below (a)'s int8 figure, its int4 units counted."""
    import subprocess

    out = tmp_path / "lowest.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compression.py"), "--recipe",
                           str(REPO / "tests" / "assets" / "tiny.yaml"), "--seeds", "0", "--budget", "2",
                           "--sampled", "0", "--no-cpu", "--precisions", "int8,int4", "--arms", "none,lowest",
                           "--set", "constraints.latency=[{profile: fpga-zc706-int8, max_ms: 5, source: profile}]",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, low = json.loads(out.read_text())["rows"]
    assert low["arm"] == "(a') fp32 search, then int4 everywhere"
    assert low["arch"].split("@")[0] == a["arch"] and set(low["arch"].split("@")[1].split(",")) == {"int4"}
    assert low["fp32 accuracy"] == pytest.approx(a["fp32 accuracy"]) and low["MFLOPs"] == a["MFLOPs"]
    assert low["fpga-zc706-int8 ms"] < a["fpga-zc706-int8 ms"] and low["compressed units"] >= 1
    assert not (tmp_path / "work" / "lowest-s0" / "best.json").exists()   # nothing searched for it


def test_block_tables_alone_compare_int8_with_fp32_per_block_type(tmp_path, monkeypatch, capsys):
    """``--arms ''`` searches nothing and prints the two measured tables side by side (NAS-Bench-201's ops here,
    measured small and fast: the figures are this machine's, the test reads only their shape)."""
    from hardware_profiles.measure import MeasureSettings, measure_profile

    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path))
    for name, precision in (("t-fp32", "fp32"), ("t-int8", "int8")):
        measure_profile(MeasureSettings(profile=name, space="nb201", networks=2, num_classes=10, warmup=1,
                                        repeats=3, attempts=1, precision=precision, root=str(tmp_path)))
    monkeypatch.setattr(sys, "argv", ["compression.py", "--arms", "", "--block-tables", "t-fp32,t-int8"])
    compression.main()
    out = capsys.readouterr().out
    assert "int8 / fp32 per block type, t-fp32,t-int8" in out and "whole networks both tables timed" in out
    types = {"stem_k3_e1", "resblock_k3_e1", "reluconv_k1_e1", "reluconv_k3_e1", "avgpool_k3_e1", "skip_k1_e1",
             "zero_k1_e1", "head_k1_e1", "classifier_k1_e1"}
    assert all(f"| {t} " in out for t in types)
    monkeypatch.setattr(sys, "argv", ["compression.py", "--arms", ""])
    with pytest.raises(SystemExit, match="nothing to run without --block-tables"):
        compression.main()
