"""Latency sources of a search: predictors by default (from tables, or calibrated), the profile on request, and
the exported network measured."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ASSETS
from scipy.stats import spearmanr

from hardware_profiles import PROFILES, Estimate, HardwareProfile, get_profile
from nas.checks import load_recipe
from nas.latency_sources import LatencySetupError, _calibrated, make_sources
from nas.recipe import Constraints, LatencyConstraint, RecipeError
from nas.context import RunContext
from predictors.io import load
from search_spaces import get_space


def constraints(**lat) -> Constraints:
    return Constraints(latency=[LatencyConstraint(**lat)])


def test_simulated_profile_gets_a_calibrated_predictor_kept_for_resume(tmp_path):
    space = get_space("fbnet", num_classes=100)
    c = constraints(profile="fpga-zc706-int8", calibration=40)
    lines: list[str] = []
    src = make_sources(c, space, tmp_path, log=lines.append)["fpga-zc706-int8"]
    folder = tmp_path / "predictors" / "fpga-zc706-int8"
    assert src.predictor is not None and src.cheap and "calibrated on 40 networks" in src.how
    assert len(pd.read_csv(folder / "calibration.csv")) == 40 and any("calibrating" in x for x in lines)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(150)]
    sim = get_profile("fpga-zc706-int8")
    truth = [sim.latency(space, a).median_ms for a in archs]
    assert spearmanr([src.latency(space, a) for a in archs], truth)[0] > 0.9
    lines.clear()
    again = make_sources(c, space, tmp_path, log=lines.append)["fpga-zc706-int8"]
    assert lines == []                                   # loaded, not re-timed
    assert again.latency(space, archs[0]) == pytest.approx(src.latency(space, archs[0]), rel=1e-12)


def test_table_profile_gets_a_predictor_trained_on_its_tables(tmp_path):
    space = get_space("mobilenet", num_classes=1000)
    src = make_sources(constraints(profile="x86-ort-t1", max_ms=5), space, tmp_path, log=lambda _: None)["x86-ort-t1"]
    assert f"trained on {get_profile('x86-ort-t1').manifest.ref} tables" in src.how
    table = get_profile("x86-ort-t1")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)]
    pred = np.array([src.latency(space, a) for a in archs])
    lookup = np.array([table.latency(space, a).median_ms for a in archs])
    assert spearmanr(pred, lookup)[0] > 0.8 and np.median(np.abs(pred / lookup - 1)) < 0.3


def test_source_profile_asks_the_profile_itself(tmp_path):
    space = get_space("fbnet", num_classes=100)
    src = make_sources(constraints(profile="fpga-zc706-int8", source="profile"), space, tmp_path)["fpga-zc706-int8"]
    arch = space.sample(np.random.default_rng(1))
    assert src.predictor is None and not (tmp_path / "predictors").exists()
    assert src.latency(space, arch) == get_profile("fpga-zc706-int8").latency(space, arch).median_ms


class CountingProfile(HardwareProfile):
    """A fake live profile: latency = 1e-6 * MACs + 0.05 ms, counting calls."""

    def __init__(self):
        self.calls = 0

    def latency(self, space, arch):
        self.calls += 1
        return type("Stats", (), {"median_ms": 1e-6 * space.flops(arch) + 0.05})()


def test_interrupted_calibration_resumes_with_the_timings_it_has(tmp_path):
    space = get_space("fbnet", num_classes=100)
    lat = LatencyConstraint(profile="fake", calibration=8)
    folder = tmp_path / "cal"
    first = CountingProfile()
    _calibrated(lat, first, space, folder, Constraints(), seed=0, log=lambda _: None)
    assert first.calls == 16                                  # 8 networks x 2 rounds (a live profile)
    table = pd.read_csv(folder / "calibration.csv")
    table.iloc[:10].to_csv(folder / "calibration.csv", index=False)   # as if killed after 10 timings
    second = CountingProfile()
    _calibrated(lat, second, space, folder, Constraints(), seed=0, log=lambda _: None)
    assert second.calls == 6
    model, _ = load(folder)
    arch = space.sample(np.random.default_rng(2))
    assert model.predict([space.to_string(arch)])[0] == pytest.approx(1e-6 * space.flops(arch) + 0.05, rel=0.05)


class GivenTimings(HardwareProfile):
    """A live-kind profile whose timings are given, not measured (0.05 ms + 2 ns per MAC), so a calibration test
    does not depend on how busy the machine is."""

    def latency(self, space, arch):
        return Estimate(0.05 + 2e-6 * space.flops(arch))


def test_precheck_rejects_on_predicted_latency_before_a_trial(tmp_path, monkeypatch):
    monkeypatch.setitem(PROFILES._entries, "given-timings", GivenTimings)
    tight = "constraints.latency=[{profile: given-timings, max_ms: 1.0e-6, calibration: 4}]"
    recipe = load_recipe(ASSETS / "tiny.yaml", [tight])
    ctx = RunContext(recipe, tmp_path)
    violation, extra = ctx.precheck(ctx.space.smallest())
    assert violation is not None and "latency on given-timings" in violation
    assert extra["latency_given-timings"] == pytest.approx(GivenTimings().latency(ctx.space, ctx.space.smallest())
                                                           .median_ms, rel=0.5)
    relaxed = load_recipe(ASSETS / "tiny.yaml", [tight.replace("1.0e-6", "1000")])
    assert RunContext(relaxed, tmp_path / "b").precheck(ctx.space.smallest())[0] is None


def test_exported_network_is_measured_where_this_machine_can(tmp_path):
    space = get_space("fbnet", num_classes=100)
    arch = space.sample(np.random.default_rng(3))
    sim = make_sources(constraints(profile="fpga-zc706-int8", source="profile"), space, tmp_path)
    ms, how = sim["fpga-zc706-int8"].measure_exported(space, arch)
    assert ms == get_profile("fpga-zc706-int8").latency(space, arch).median_ms and "simulated" in how
    mobile = get_space("mobilenet", num_classes=1000)
    x86 = make_sources(constraints(profile="x86-ort-t1", source="profile"), mobile, tmp_path)["x86-ort-t1"]
    ms, how = x86.measure_exported(mobile, mobile.smallest())
    assert ms > 0 and "measured on this machine with onnxruntime, 1 thread" in how
    import torch

    if not torch.cuda.is_available():
        gpu = make_sources(constraints(profile="gpu-h100-fp16-b1", source="profile"), mobile, tmp_path)
        ms, how = gpu["gpu-h100-fp16-b1"].measure_exported(mobile, mobile.smallest())
        assert ms is None and "no GPU" in how


def test_recipe_refuses_a_predictor_folder_that_cannot_serve(tmp_path):
    with pytest.raises(RecipeError, match=r"constraints.latency\[0\].predictor: .*not a predictor folder"):
        load_recipe(ASSETS / "tiny.yaml", [f"constraints.latency=[{{profile: local-cpu, predictor: {tmp_path}}}]"])
    from predictors.train import main as train_main

    train_main(["--profile", "arm-pixel3", "--out", str(tmp_path / "pixel3")])
    with pytest.raises(RecipeError, match="trained for profile arm-pixel3, not local-cpu"):
        load_recipe(ASSETS / "tiny.yaml",
                    [f"constraints.latency=[{{profile: local-cpu, predictor: {tmp_path / 'pixel3'}}}]"])
    fbnet = get_space("fbnet", num_classes=100)
    archs = [fbnet.sample(np.random.default_rng(i)) for i in range(60)]
    pd.DataFrame({"arch": [fbnet.to_string(a) for a in archs], "ms": [1e-6 * fbnet.flops(a) for a in archs]}).to_csv(
        tmp_path / "own.csv", index=False)
    train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(tmp_path / "own.csv"), "--target", "ms",
                "--out", str(tmp_path / "own")])
    with pytest.raises(RecipeError, match="predictor for space 'fbnet', the recipe searches 'mobilenet'"):
        load_recipe(ASSETS / "tiny.yaml",
                    [f"constraints.latency=[{{profile: local-cpu, predictor: {tmp_path / 'own'}}}]"])
    with pytest.raises(RecipeError, match=r"constraints.latency\[0\].source: Input should be .predictor., .profile. or .table."):
        load_recipe(ASSETS / "tiny.yaml", ["constraints.latency=[{profile: local-cpu, source: guess}]"])


def test_a_damaged_run_predictor_is_refused_and_rebuilt_from_its_kept_timings(tmp_path, monkeypatch):
    monkeypatch.setitem(PROFILES._entries, "given-timings", GivenTimings)
    space = get_space("fbnet", num_classes=100)
    c = constraints(profile="given-timings", calibration=6)
    first = make_sources(c, space, tmp_path, log=lambda _: None)["given-timings"]
    folder = tmp_path / "predictors" / "given-timings"
    model = folder / "block_model.txt"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(LatencySetupError, match=r"constraints.latency\[0\]: the run's predictor cannot be used "
                                                r"\(.*block_model.txt: SHA-256 mismatch.*delete .*meta.json"):
        make_sources(c, space, tmp_path, log=lambda _: None)
    (folder / "meta.json").unlink()
    lines: list[str] = []
    again = make_sources(c, space, tmp_path, log=lines.append)["given-timings"]
    assert not any("timings (" in x for x in lines)          # refitted from calibration.csv, nothing re-timed
    arch = space.sample(np.random.default_rng(1))
    assert again.latency(space, arch) == pytest.approx(first.latency(space, arch), rel=1e-9)
