"""Importing a device from whole-network latencies, and costing archs on a profile."""
from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from core.errors import sha256_file
from hardware_profiles import get_profile
from hardware_profiles.cost import main as cost_main
from hardware_profiles.importer import error_report, fit_additive, main as import_main
from search_spaces import get_space

SPACE = {"resolutions": [32, 48], "widths": [0.5, 1.0], "kernels": [3, 5, 7], "expansions": [3, 6],
         "se": [False, True], "stages": [{"channels": 16, "stride": 2, "depths": [1, 2, 3]},
                                         {"channels": 24, "stride": 2, "depths": [1, 2]}],
         "last_channels": 0, "num_features": 64}


def synthetic_device(n: int, noise: float, seed: int = 0) -> tuple[pd.DataFrame, dict[str, float], float]:
    """Networks whose latency is an overhead plus per-key costs (what the importer assumes), maybe noisy."""
    space = get_space("mobilenet", SPACE)
    rng = np.random.default_rng(seed)
    layers, _ = space.enumerate_layers()
    cost = {str(lc.key): float(rng.uniform(0.01, 1.0)) for lc in layers}
    overhead = 0.3
    archs = list({space.to_string(space.sample(rng)) for _ in range(n)})
    lat = [overhead + sum(cost[k] for k in space.cost_keys(space.decode(a))) for a in archs]
    lat = np.array(lat) * (1 + noise * rng.standard_normal(len(lat)))
    return pd.DataFrame({"arch": archs, "device_ms": lat}), cost, overhead


def test_additive_fit_recovers_exact_sums():
    table, cost, overhead = synthetic_device(600, noise=0.0)
    space = get_space("mobilenet", SPACE)
    keys = [space.cost_keys(space.decode(a)) for a in table.arch]
    fit = fit_additive(keys[:450], table.device_ms.to_numpy()[:450])
    held = [i for i in range(450, len(keys)) if fit.covers(keys[i])]
    assert len(held) > 100
    np.testing.assert_allclose(fit.predict([keys[i] for i in held]), table.device_ms.to_numpy()[held], rtol=1e-6)


def test_noisy_device_is_imported_as_a_usable_profile(tmp_path, monkeypatch):
    table, _, _ = synthetic_device(800, noise=0.02)
    table.to_csv(tmp_path / "device.csv", index=False)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    assert import_main(["--profile", "phone-x", "--space", "mobilenet", "--space-options", str(tmp_path / "space.yaml"),
                        "--table", str(tmp_path / "device.csv"), "--target", "device_ms", "--root",
                        str(tmp_path / "profiles"), "--source", "synthetic test data"]) == 0
    profile = get_profile("phone-x")
    assert profile.manifest.kind == "imported" and profile.manifest.sources == ["synthetic test data"]
    assert profile.manifest.noise["holdout_mape"] < 0.03   # 2 % noise: the additive model is right
    trained = set(pd.read_csv(tmp_path / "profiles" / "phone-x" / "1" / "networks.csv").arch)
    held = table[~table.arch.isin(trained)]
    space = get_space("mobilenet", SPACE)
    held = held[[not profile.missing(space.cost_keys(space.decode(a))) for a in held.arch]]
    assert len(held) > 100
    pred = np.array([profile.latency(space, space.decode(a)).median_ms for a in held.arch])
    report = error_report(pred, held.device_ms.to_numpy())
    assert report["within_10pct"] > 0.95 and report["spearman"] > 0.95

    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(held.arch[:5]) + "\n")
    assert cost_main(["--profile", "phone-x", "--space", "mobilenet", "--archs", str(archs), "--out",
                      str(tmp_path / "cost.csv")]) == 0   # space options default to the profile's
    out = pd.read_csv(tmp_path / "cost.csv")
    assert list(out.arch) == list(held.arch[:5])
    np.testing.assert_allclose(out.latency_ms, pred[:5])
    assert (out.flops > 0).all() and "energy_mj" not in out


def test_importer_names_a_missing_column(tmp_path, capsys):
    pd.DataFrame({"arch": ["x"], "ms": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    assert import_main(["--profile", "p", "--space", "mobilenet", "--table", str(tmp_path / "t.csv"),
                        "--target", "device_ms", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 't.csv'}: no column 'device_ms' (columns: arch, ms)\n"


def test_imported_profile_records_its_tables_sha256(tmp_path, monkeypatch):
    table, _, _ = synthetic_device(200, noise=0.0)
    table.to_csv(tmp_path / "device.csv", index=False)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    monkeypatch.setenv("HWNAS_PROFILE_PATH", str(tmp_path / "profiles"))
    assert import_main(["--profile", "phone-y", "--space", "mobilenet", "--space-options", str(tmp_path / "space.yaml"),
                        "--table", str(tmp_path / "device.csv"), "--target", "device_ms", "--holdout", "0",
                        "--root", str(tmp_path / "profiles")]) == 0
    profile = get_profile("phone-y")
    folder = tmp_path / "profiles" / "phone-y" / "1"
    assert profile.manifest.table_sha256 == {"blocks": sha256_file(folder / "blocks.csv"),
                                             "networks": sha256_file(folder / "networks.csv")}
    assert len(profile.read_networks()) == len(table)   # --holdout 0: every row trains


def test_cost_reports_energy_on_a_simulated_profile(tmp_path):
    space = get_space("fbnet", num_classes=100)
    archs = [space.to_string(space.sample(np.random.default_rng(i))) for i in range(3)]
    pd.DataFrame({"arch": archs}).to_csv(tmp_path / "a.csv", index=False)
    assert cost_main(["--profile", "fpga-zc706-int8", "--space", "fbnet", "--num-classes", "100", "--archs",
                      str(tmp_path / "a.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    out = pd.read_csv(tmp_path / "o.csv")
    assert (out.latency_ms > 0).all() and (out.energy_mj > 0).all()


def test_shipped_imported_arm_profiles_cost_fbnet_archs():
    data = pd.read_csv(get_profile("arm-raspi4-a72").folder / "networks.csv")
    space = get_space("fbnet", num_classes=100)
    for name in ("arm-raspi4-a72", "arm-pixel3"):
        profile = get_profile(name)
        assert profile.manifest.kind == "imported" and profile.manifest.sources
        assert profile.latency(space, space.decode(data.arch[0])).median_ms > 0
    # HW-NAS-Bench's Pi 4 column is an exact per-block sum: the imported table reproduces its networks
    raspi = get_profile("arm-raspi4-a72")
    pred = np.array([raspi.latency(space, space.decode(a)).median_ms for a in data.arch[:50]])
    np.testing.assert_allclose(pred, data.median_ms[:50], rtol=1e-3)
