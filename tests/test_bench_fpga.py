"""bench/fpga_sim.py's energy comparison (issue 22): the simulator's FPGA energy against a table's, where the table
has one (HW-NAS-Bench's FPGA energy is not in ../shared, so these tables are made here)."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import fpga_sim  # noqa: E402


def _table(tmp_path, energy: str | None):
    """40 FBNet networks with the simulator's own latency and, under `energy`, its energy times a seeded noise of a
    few percent (a test fixture, not evidence)."""
    from hardware_profiles.fpga import FpgaSimulator, get_fpga_config
    from search_spaces import get_space

    space = get_space("fbnet", num_classes=100)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)]
    sim = FpgaSimulator(get_fpga_config("fpga-zc706-int8"))
    runs = [sim(space.layer_costs(a)) for a in archs]
    df = pd.DataFrame({"arch": [space.to_string(a) for a in archs], "fpga_ms": [r.latency_ms for r in runs]})
    if energy:
        df[energy] = [3.0 * r.energy_mj * (1 + 0.01 * rng.standard_normal()) for r in runs]
    path = tmp_path / "fpga.csv"
    df.to_csv(path, index=False)
    return path


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
    with pytest.raises(SystemExit, match="--energy-column: no column 'fpga_energy_mj'"):
        fpga_sim.run(path, 10, 0, "fpga_energy_mj")
    df = pd.read_csv(path)
    df.loc[3, "energy"] = -1.0
    df.to_csv(path, index=False)
    with pytest.raises(SystemExit, match="line 5, column 'energy': '-1.0' is not a positive energy"):
        fpga_sim.run(path, 10, 0, "energy")
