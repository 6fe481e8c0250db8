"""bench/fpga_sim.py's comparisons (issue 22): the simulator's FPGA latency and energy against a table's, FBNet or
NAS-Bench-201, where the table has them (HW-NAS-Bench's FPGA energy is not in ../shared, so these tables are made here
from the simulator's own figures with a seeded noise: test fixtures, not evidence)."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import fpga_sim  # noqa: E402


def _simulated(path, space, n: int, seed: int, columns: dict[str, tuple[str, float, float]]):
    """A CSV at `path` of `n` seeded networks of `space` with, per column, the simulator's figure (``latency_ms``
    or ``energy_mj``) times a scale, times a seeded noise of the given relative size (0: none); a test fixture,
    not evidence."""
    from hardware_profiles.fpga import FpgaSimulator, get_fpga_config

    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    sim = FpgaSimulator(get_fpga_config("fpga-zc706-int8"))
    runs = [sim(space.layer_costs(a)) for a in archs]
    df = pd.DataFrame({"arch": [space.to_string(a) for a in archs]})
    for column, (what, scale, noise) in columns.items():
        df[column] = [scale * getattr(r, what) * ((1 + noise * rng.standard_normal()) if noise else 1.0)
                      for r in runs]
    df.to_csv(path, index=False)
    return path


def _table(tmp_path, energy: str | None):
    """40 FBNet networks with the simulator's own latency and, under `energy`, its energy times 3 with a seeded
    noise of a percent."""
    from search_spaces import get_space

    return _simulated(tmp_path / "fpga.csv", get_space("fbnet", num_classes=100), 40, 0, {
        "fpga_ms": ("latency_ms", 1.0, 0.0), **({energy: ("energy_mj", 3.0, 0.01)} if energy else {})})


def test_the_simulators_energy_is_ranked_against_a_tables_fpga_energy_on_held_out_rows(tmp_path):
    res = fpga_sim.run(_table(tmp_path, "fpga_energy_mj"), tune_rows=10, seed=0)
    e = res["energy"]
    assert e["column"] == "fpga_energy_mj" and res["held_out_rows"] == 30
    assert e["preset"]["spearman"] > 0.95 and e["preset"]["scale"] == pytest.approx(3.0, rel=0.02)
    assert e["preset"]["mape_scaled"] < 0.03


def test_a_table_without_fpga_energy_says_the_comparison_was_not_made(tmp_path, capsys):
    fpga_sim.main(["--csv", str(_table(tmp_path, None)), "--tune-rows", "10"])
    assert "has no FPGA energy column" in capsys.readouterr().out.strip().splitlines()[-1]


def test_a_named_energy_column_must_exist_and_hold_positive_energies(tmp_path):
    path = _table(tmp_path, "energy")
    with pytest.raises(fpga_sim.BadTable, match="--energy-column: no column 'fpga_energy_mj'"):
        fpga_sim.run(path, 10, 0, "fpga_energy_mj")
    df = pd.read_csv(path)
    df.loc[3, "energy"] = -1.0
    df.to_csv(path, index=False)
    with pytest.raises(fpga_sim.BadTable, match="line 5, column 'energy': '-1.0' is not a positive energy"):
        fpga_sim.run(path, 10, 0, "energy")


def _nb201_table(tmp_path, dataset: str = "cifar10", latency: str | None = "fpga_latency",
                 energy: str | None = "fpga_energy", n: int = 30):
    """`n` NAS-Bench-201 cells under HW-NAS-Bench's own column names: the simulator's latency and energy for the
    network of `dataset`, times 2 and 5 with a seeded noise of a percent."""
    columns = {**({latency: ("latency_ms", 2.0, 0.01)} if latency else {}),
               **({energy: ("energy_mj", 5.0, 0.01)} if energy else {})}
    return _simulated(tmp_path / "nb201_fpga.csv", fpga_sim._space("nb201", dataset), n, 1, columns)


def test_nas_bench_201_cells_are_told_apart_and_scored_under_hw_nas_benchs_column_names(tmp_path):
    res = fpga_sim.run(_nb201_table(tmp_path), tune_rows=10, seed=0, dataset="cifar10")
    assert res["space"] == "nb201" and res["latency"]["column"] == "fpga_latency"
    assert res["preset"]["spearman"] > 0.95 and res["preset"]["scale"] == pytest.approx(2.0, rel=0.02)
    e = res["energy"]
    assert e["column"] == "fpga_energy" and set(e) == {"column", "preset", "tuned"}
    assert e["preset"]["spearman"] > 0.95 and e["preset"]["scale"] == pytest.approx(5.0, rel=0.02)


def test_the_dataset_sets_the_network_a_nas_bench_201_table_was_measured_for(tmp_path):
    path = _nb201_table(tmp_path, "ImageNet16-120")
    right = fpga_sim.run(path, 10, 0, dataset="ImageNet16-120")["preset"]
    wrong = fpga_sim.run(path, 10, 0, dataset="cifar10")["preset"]   # 32 px networks: about 4x the work
    assert right["scale"] == pytest.approx(2.0, rel=0.02) and right["mape_scaled"] < 0.03
    assert wrong["scale"] < 1.5


def test_a_table_with_energy_only_scores_the_presets_energy(tmp_path, capsys):
    path = _nb201_table(tmp_path, latency=None)
    fpga_sim.main(["--csv", str(path), "--tune-rows", "10", "--dataset", "cifar10"])
    out = capsys.readouterr().out
    assert "latency: nb201_fpga.csv has no FPGA latency column" in out
    assert "energy per inference against 'fpga_energy'" in out and "\ntuned" not in out


def test_bad_tables_are_one_line_naming_the_file_line_and_column_with_exit_status_2(tmp_path, capsys):
    path = _nb201_table(tmp_path)
    df = pd.read_csv(path)
    df.loc[4, "arch"] = "|conv_9x9~0|+|"
    df.to_csv(path, index=False)
    with pytest.raises(SystemExit) as exit_:
        fpga_sim.main(["--csv", str(path), "--tune-rows", "10", "--space", "nb201"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"{path}: line 6, column 'arch': '|conv_9x9~0|+|' is not an architecture of the nb201 space" in err
    df.drop(columns=["fpga_latency", "fpga_energy"]).to_csv(path, index=False)
    with pytest.raises(fpga_sim.BadTable, match="no FPGA column"):
        fpga_sim.run(path, 10, 0)
    with pytest.raises(fpga_sim.BadTable, match="--tune-rows 30: must leave rows on both sides of 30"):
        fpga_sim.run(_nb201_table(tmp_path), 30, 0)
