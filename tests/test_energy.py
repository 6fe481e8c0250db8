"""Energy per inference from a hardware counter (`hardware_profiles.energy`): the method with a test double of the
counter (real runs and real time, a made-up power draw), the profile's energy table, RAPL's wrap-around, and the
command line on a machine without a GPU."""
from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO
from hardware_profiles.energy import (ENERGY_COLUMNS, RaplCounter, EnergyUnavailable, energy_per_inference,
                                      energy_table, write_energy_table)


class StubCounter:
    """A test double of NVML's counter: a device drawing `idle_w` all the time, plus what each run charges."""

    method = "stub"

    def __init__(self, idle_w: float):
        self.idle_w, self.start, self.charged = idle_w, time.perf_counter(), 0.0

    def charge(self, mj: float) -> None:
        self.charged += mj

    def read_mj(self) -> float:
        return self.idle_w * 1e3 * (time.perf_counter() - self.start) + self.charged


def test_energy_per_inference_takes_the_idle_power_off():
    counter = StubCounter(idle_w=2.0)

    def run():
        time.sleep(0.002)   # a run that takes time, during which the idle draw keeps counting
        counter.charge(0.5)

    stats = energy_per_inference(run, counter, runs=20, idle_seconds=0.05, min_seconds=0)
    assert stats.energy_mj == pytest.approx(0.5, rel=0.05) and stats.idle_w == pytest.approx(2.0, rel=0.05)
    assert stats.runs == 20 and 0 <= stats.spread < 0.1


def test_a_pass_of_short_runs_is_lengthened_to_min_seconds():
    """A counter ticks coarsely, so a pass is made to last at least `min_seconds`: 20 runs of 1 ms become about 300
    for 0.3 s (more than 20 even if each run took ten times as long), and the energy per run is unchanged."""
    counter = StubCounter(idle_w=1.0)

    def run():
        time.sleep(0.001)
        counter.charge(0.25)

    stats = energy_per_inference(run, counter, runs=20, idle_seconds=0.02, min_seconds=0.3)
    assert stats.runs > 20 and stats.energy_mj == pytest.approx(0.25, rel=0.05)


def test_an_energy_table_builds_with_a_stub_counter_and_lands_in_the_profile(tmp_path):
    from hardware_profiles.manifest import Manifest, read_manifest, verify_tables, write_manifest

    counter = StubCounter(idle_w=1.0)
    charges = {"a": 0.2, "b": 0.8}
    items = [(arch, lambda mj=mj: (lambda: counter.charge(mj))) for arch, mj in charges.items()]
    table = energy_table(items, counter, runs=10, idle_seconds=0.02, min_seconds=0)
    assert list(table.columns) == ENERGY_COLUMNS and list(table.arch) == ["a", "b"]
    assert table.energy_mj.tolist() == pytest.approx([0.2, 0.8], rel=0.05)
    assert table.idle_w.nunique() == 1 and table.idle_w[0] == pytest.approx(1.0, rel=0.05)   # read once, first
    # an idle power read before an earlier table is taken as given: the idle draw is not read again (a GPU fresh
    # from the last table draws more than at rest)
    again = energy_table(items, counter, runs=10, idle_seconds=0.02, min_seconds=0, idle_w=0.5)
    assert again.idle_w.tolist() == [0.5, 0.5]
    folder = tmp_path / "gpu" / "1"
    write_manifest(Manifest(name="gpu", version=1, kind="measured", device="d", runtime="r"), folder)
    path = write_energy_table(folder, table, counter.method)
    manifest = read_manifest(folder / "manifest.yaml")
    assert manifest.tables.energy == "energy.csv" and manifest.options["energy_method"] == "stub"
    assert "energy" in manifest.table_sha256
    verify_tables(manifest, folder, ("energy",))
    assert pd.read_csv(path).energy_mj.tolist() == pytest.approx(table.energy_mj.tolist())


def test_rapl_counts_across_its_wrap_and_is_refused_where_missing(tmp_path):
    root = tmp_path / "intel-rapl:0"
    root.mkdir()
    (root / "max_energy_range_uj").write_text("1000000\n")
    (root / "energy_uj").write_text("999000\n")
    counter = RaplCounter(root)
    (root / "energy_uj").write_text("4000\n")   # wrapped: 1,000 uJ to the top, then 4,000
    assert counter.read_mj() == pytest.approx(5.0)
    with pytest.raises(EnergyUnavailable, match="exposes no RAPL energy counter"):
        RaplCounter(tmp_path / "nothing")


def test_the_command_line_says_in_one_line_why_it_cannot_measure_here(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "-m", "hardware_profiles.energy", "--profile", "gpu-h100-fp16-b1",
                           "--networks", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "NVML" in last and ("pip install" in last or "cannot read" in last)
    from hardware_profiles.energy import main

    assert main(["--profile", "x86-ort-t1"]) == 2
    assert "is not a measured torch-cuda profile" in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_energy_limit_on_a_measured_profile_uses_a_predictor_of_its_energy_table(tmp_path, monkeypatch):
    """A copy of a shipped macro table profile given an energy table (a fixture: energy made up as a function of
    FLOPs, written the way `hardware_profiles.energy` writes a measured one): the recipe's limit is checked with the
    predictor fitted to it, before a trial."""
    import shutil

    import numpy as np

    from hardware_profiles.manifest import BUILTIN_ROOT, read_manifest, write_manifest
    from nas.checks import load_run
    from predictors.energy import EnergyPredictor
    from search_spaces import get_space

    folder = tmp_path / "profiles" / "gpu-energy" / "1"
    shutil.copytree(BUILTIN_ROOT / "x86-ort-t1-macro" / "1", folder)
    manifest = read_manifest(folder / "manifest.yaml")
    manifest.name = "gpu-energy"
    write_manifest(manifest, folder)
    space = get_space("macro", {}, num_classes=10)
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(80)))
    flops = np.array([sum(lc.macs for lc in space.layer_costs(space.decode(a))) for a in archs])
    energy = 0.05 + 2e-9 * flops
    write_energy_table(folder, pd.DataFrame({"arch": archs, "energy_mj": energy, "spread": 0.0, "idle_w": 50.0,
                                             "runs": 200}), "fixture")
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    held_out = EnergyPredictor(space).fit([space.decode(a) for a in archs[:60]], energy[:60])
    assert np.median(np.abs(held_out.predict([space.decode(a) for a in archs[60:]]) / energy[60:] - 1)) < 0.1
    limit = float(np.median(energy))
    ctx = load_run(REPO / "recipes" / "macro_x86.yaml",
                   [f"constraints.latency=[{{profile: gpu-energy, max_ms: 100, max_energy_mj: {limit}}}]"])
    ctx.open(tmp_path / "run", log=lambda line: None)
    verdicts = [ctx.precheck(space.decode(a)) for a in archs[:20]]
    figures = np.array([fields["energy_gpu-energy"] for _, fields in verdicts])
    assert figures == pytest.approx(ctx.latency["gpu-energy"].energy_model.predict(
        [space.decode(a) for a in archs[:20]]))
    for (violation, _), mj in zip(verdicts, figures):
        assert (violation is not None and violation.startswith("energy on gpu-energy")) == (mj > limit)
    assert any(v is None for v, _ in verdicts) and any(v is not None for v, _ in verdicts)


@pytest.mark.gpu
def test_nvml_energy_per_inference_grows_with_the_work_of_a_run():
    """On a real NVIDIA GPU: NVML's counter, idle power taken off, charges a run of four matrix products about four
    times what it charges a run of one (more than twice, to leave room for the counter's coarseness)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from hardware_profiles.energy import find_counter

    counter = find_counter("cuda")
    a = torch.randn(4096, 4096, device="cuda")

    def products(n):
        def run():
            for _ in range(n):
                a @ a
            torch.cuda.synchronize()
        return run

    one, four = (energy_per_inference(products(n), counter, runs=20, idle_seconds=0.5, min_seconds=0.5)
                 for n in (1, 4))
    assert 0 < one.energy_mj and four.energy_mj > 2 * one.energy_mj
    assert one.idle_w > 0
