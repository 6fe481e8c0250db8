"""Latency predictors: estimators, saving/loading without pickle, train and evaluate commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hardware_profiles.importer import error_report
from predictors.evaluate import main as evaluate_main
from predictors.io import PredictorFileError, load, save
from predictors.models import FlopsLinear, LGBMLatencyPredictor, LookupSum
from predictors.train import main as train_main
from search_spaces import get_space

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"


def synthetic_fbnet(n: int, seed: int = 0) -> pd.DataFrame:
    """Additive per-(layer, choice) costs times a non-additive effect: consecutive skips fuse (20 % faster)."""
    space = get_space("fbnet", num_classes=100)
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.05, 1.0, size=(22, 9))
    archs = [space.sample(rng) for _ in range(n)]
    lat = []
    for a in archs:
        c = np.array(a.choices)
        fused = np.sum((c[1:] == 8) & (c[:-1] == 8))
        lat.append((0.5 + cost[np.arange(22), c].sum()) * (1 - 0.2 * min(fused, 3) / 3))
    return pd.DataFrame({"arch": [space.to_string(a) for a in archs], "device_ms": lat})


@pytest.fixture(scope="module")
def data():
    return synthetic_fbnet(1200)


@pytest.fixture(scope="module")
def fitted(data):
    tr = data.iloc[:800]
    return LGBMLatencyPredictor("fbnet", num_classes=100).fit(tr.arch.tolist(), tr.device_ms.to_numpy())


def test_correction_learns_what_block_sums_miss(data, fitted):
    tr, te = data.iloc[:800], data.iloc[800:]
    lookup = LookupSum("fbnet", num_classes=100).fit(tr.arch.tolist(), tr.device_ms.to_numpy())
    flops = FlopsLinear("fbnet", num_classes=100).fit(tr.arch.tolist(), tr.device_ms.to_numpy())
    y = te.device_ms.to_numpy()
    ours = error_report(fitted.predict(te.arch.tolist()), y)
    base = error_report(lookup.predict(te.arch.tolist()), y)
    assert ours["mape"] < 0.8 * base["mape"]
    assert ours["within_5pct"] > base["within_5pct"]
    assert fitted.score(te.arch.tolist(), y) > flops.score(te.arch.tolist(), y)


def test_unseen_blocks_are_costed_by_the_block_model():
    space = get_space("fbnet", num_classes=100)
    table = synthetic_fbnet(300)
    train = table[~table.arch.str.startswith("0 ")]        # layer 0 never takes choice 0 in training
    model = LGBMLatencyPredictor("fbnet", num_classes=100).fit(train.arch.tolist(), train.device_ms.to_numpy())
    arch = space.to_string(space.decode("0 " + " ".join(["3"] * 21)))
    assert np.isfinite(model.predict([arch])).all() and model.predict([arch])[0] > 0
    with pytest.raises(KeyError, match="without a cost"):
        LookupSum("fbnet", num_classes=100).fit(train.arch.tolist(), train.device_ms.to_numpy()).predict([arch])


def test_save_load_round_trip_without_pickle(tmp_path, data, fitted):
    archs, y = data.arch[:800].tolist(), data.device_ms[:800].to_numpy()
    save(fitted, tmp_path / "m", archs=archs, y=y, profile={"name": "dev", "version": 2})
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["block_model.txt", "blocks.json", "meta.json", "network_model.txt"]
    model, meta = load(tmp_path / "m", profile="dev@2")
    test = data.arch[800:].tolist()
    np.testing.assert_allclose(model.predict(test), fitted.predict(test), rtol=1e-9)
    assert len(meta["training_data_sha256"]) == 64 and meta["n_train"] == 800
    with pytest.raises(PredictorFileError, match="profile: trained for dev@2, not other"):
        load(tmp_path / "m", profile="other")
    meta["block_feature_schema"] = meta["block_feature_schema"][:-1]
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PredictorFileError, match="block_feature_schema"):
        load(tmp_path / "m")


def test_train_and_evaluate_commands(tmp_path, data, capsys):
    data.to_csv(tmp_path / "dev.csv", index=False)
    assert train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(tmp_path / "dev.csv"),
                       "--target", "device_ms", "--max-rows", "600", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert evaluate_main(["--model", str(tmp_path / "m"), "--table", str(tmp_path / "dev.csv"),
                          "--target", "device_ms", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["training_rows_skipped"] == 600 and res["rows"] == len(data) - 600
    for name in ("predictor", "lookup_table", "flops_linear"):
        assert {"rmse_ms", "mape", "within_5pct", "within_10pct", "spearman", "kendall"} <= set(res[name])
    assert res["predictor"]["mape"] < res["flops_linear"]["mape"]
    assert Path(res["plot"]).read_bytes()[:4] == b"\x89PNG" and len(res["worst"]) == 10
    with pytest.raises(SystemExit, match="no column 'ms'"):
        train_main(["--space", "fbnet", "--table", str(tmp_path / "dev.csv"), "--target", "ms", "--out",
                    str(tmp_path / "x")])


@pytest.mark.skipif(not SHARED.is_file(), reason="shared FBNet latency data not present")
def test_real_cpu_latency_from_1000_networks():
    df = pd.read_csv(SHARED)
    perm = np.random.default_rng(0).permutation(len(df))
    tr, te = df.iloc[perm[:1000]], df.iloc[perm[1000:2000]]
    model = LGBMLatencyPredictor("fbnet", num_classes=100).fit(tr.arch.tolist(), tr.gold_6240_ms.to_numpy())
    r = error_report(model.predict(te.arch.tolist()), te.gold_6240_ms.to_numpy())
    assert r["within_10pct"] > 0.97 and r["spearman"] > 0.9   # bench/predictors.py prints the exact figures
