"""Latency predictors: estimators, saving/loading without pickle, train and evaluate commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_batch_path_matches_per_arch

from hardware_profiles.importer import error_report
from predictors.evaluate import main as evaluate_main
from predictors.io import PredictorFileError, load, meta_digest, save
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
    assert files == ["block_model.txt", "blocks.json", "generic_model.txt", "meta.json", "network_model.txt"]
    model, meta = load(tmp_path / "m", profile="dev@2")
    test = data.arch[800:].tolist()
    np.testing.assert_allclose(model.predict(test), fitted.predict(test), rtol=1e-9)
    assert len(meta["training_data_sha256"]) == 64 and meta["n_train"] == 800
    with pytest.raises(PredictorFileError, match="profile: trained for dev@2, not other"):
        load(tmp_path / "m", profile="other")
    assert set(meta["files"]) == {"block_model.txt", "blocks.json", "network_model.txt", "generic_model.txt"}
    meta["block_feature_schema"] = meta["block_feature_schema"][:-1]   # as a model from another code version
    meta["meta_sha256"] = meta_digest(meta)
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
    capsys.readouterr()
    assert train_main(["--space", "fbnet", "--table", str(tmp_path / "dev.csv"), "--target", "ms", "--out",
                       str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'dev.csv'}: no column 'ms' (columns: arch, device_ms)\n"


@pytest.mark.skipif(not SHARED.is_file(), reason="shared FBNet latency data not present")
def test_real_cpu_latency_from_1000_networks():
    df = pd.read_csv(SHARED)
    perm = np.random.default_rng(0).permutation(len(df))
    tr, te = df.iloc[perm[:1000]], df.iloc[perm[1000:2000]]
    model = LGBMLatencyPredictor("fbnet", num_classes=100).fit(tr.arch.tolist(), tr.gold_6240_ms.to_numpy())
    r = error_report(model.predict(te.arch.tolist()), te.gold_6240_ms.to_numpy())
    assert r["within_10pct"] > 0.97 and r["spearman"] > 0.9   # bench/predictors.py prints the exact figures


@pytest.mark.parametrize("correction", [True, False])
def test_batch_path_matches_one_lowering_per_arch(data, correction):
    tr, te = data.iloc[:600], data.iloc[600:]
    model = LGBMLatencyPredictor("fbnet", num_classes=100, correction=correction).fit(
        tr.arch.tolist(), tr.device_ms.to_numpy())
    assert_batch_path_matches_per_arch(model, te.arch.tolist())
    assert model.predict([]).shape == (0,)


def test_choice_matrix_reads_canonical_and_loose_strings_and_names_bad_ones():
    space = get_space("fbnet", num_classes=100)
    canonical = " ".join(["3"] * 21 + ["8"])
    loose = "  ".join(["03"] * 21 + ["8"])               # zero-padded, double spaces: decode's slow path
    m = space.choice_matrix([canonical, loose])
    assert m.shape == (2, 22) and (m[:, :21] == 3).all() and (m[:, 21] == 8).all()
    for bad, message in ((" ".join(["9"] * 22), "out of range"), (" ".join(["1"] * 21), "21 layer choices"),
                         (" ".join(["x"] + ["1"] * 21), "not a non-negative integer")):
        with pytest.raises(ValueError, match=message):
            space.choice_matrix([canonical, bad])


def test_predict_command_for_archs_files_and_timm_models(tmp_path, data, capsys):
    from predictors.predict import main as predict_main

    data.iloc[:600].to_csv(tmp_path / "dev.csv", index=False)
    train_main(["--space", "fbnet", "--num-classes", "100", "--table", str(tmp_path / "dev.csv"),
                "--target", "device_ms", "--out", str(tmp_path / "m")])
    model, _ = load(tmp_path / "m")
    archs = data.arch[600:603].tolist()
    capsys.readouterr()
    assert predict_main(["--model", str(tmp_path / "m"), "--arch", archs[0], "--arch", archs[1], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    got = [r["predicted_ms"] for r in res["predictions"]]
    np.testing.assert_allclose(got, model.predict(archs[:2]), rtol=1e-9)
    (tmp_path / "archs.txt").write_text("\n".join(archs) + "\n")
    assert predict_main(["--model", str(tmp_path / "m"), "--archs", str(tmp_path / "archs.txt"),
                         "--out", str(tmp_path / "pred.csv")]) == 0
    out = pd.read_csv(tmp_path / "pred.csv", dtype={"arch": str})
    assert out.arch.tolist() == archs and (out.predicted_ms > 0).all() and (out.flops > 0).all()
    capsys.readouterr()
    assert predict_main(["--model", str(tmp_path / "m"), "--arch", "1 2"]) == 2
    assert capsys.readouterr().err.startswith("error: --arch: arch '1 2': has 2 layer choices")
    assert predict_main(["--model", str(tmp_path / "nope"), "--arch", archs[0]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model: ") and "not a predictor folder" in err


def test_predict_prices_a_timm_network_from_its_blocks(tmp_path, capsys):
    """A mobilenet-space predictor (trained on the shipped H100 profile) costs timm's MobileNetV3-Large."""
    from predictors.predict import main as predict_main
    from search_spaces.blocks import count_macs
    from search_spaces.timm_import import network_def_from_timm

    assert train_main(["--profile", "gpu-h100-fp32-b1", "--out", str(tmp_path / "gpu")]) == 0
    capsys.readouterr()
    assert predict_main(["--model", str(tmp_path / "gpu"), "--timm-model", "mobilenetv3_large_100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["profile"] == "gpu-h100-fp32-b1@1" and res["blocks"] == 19
    assert res["flops"] == count_macs(network_def_from_timm("mobilenetv3_large_100"))
    assert 0 <= res["blocks_from_block_model"] < res["blocks"] and 0.1 < res["predicted_ms"] < 5
    low, high = res["interval_80pct_ms"]
    assert low <= res["predicted_ms"] <= high and res["network_correction"].startswith("generic")
    assert predict_main(["--model", str(tmp_path / "gpu"), "--timm-model", "resnet18"]) == 2
    assert capsys.readouterr().err.startswith("error: --timm-model: timm model resnet18: model class ResNet")


def test_generic_correction_learns_what_block_sums_miss_outside_the_space(tmp_path):
    """Networks that are not points of the space (random block definitions, timm models) are corrected by the
    generic network model: here every network runs 25 % slower than its block sum, and a held-out random network
    and a timm model are predicted so, after a save and a load too."""
    from search_spaces.blocks import layer_costs
    from search_spaces.random_defs import random_defs
    from search_spaces.timm_import import network_def_from_timm

    space = get_space("mobilenet")
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(60)))
    nets = random_defs("random", 41, seed=5)
    extra, held_out = nets[:40], [nets[40], network_def_from_timm("mnasnet_100")]
    cost = lambda lc: 0.01 + lc.macs * 1e-8   # noqa: E731
    table = {str(lc.key): cost(lc) for layers in ([space.layer_costs(space.decode(a)) for a in archs] +
                                                  [layer_costs(n) for n in extra + held_out]) for lc in layers}
    block_sum = lambda layers: sum(cost(lc) for lc in layers)   # noqa: E731
    y = [1.25 * block_sum(space.layer_costs(space.decode(a))) for a in archs]
    model = LGBMLatencyPredictor("mobilenet", block_table=table).fit(
        archs, y, extra=[(n, 1.25 * block_sum(layer_costs(n))) for n in extra])
    sums, pred, unseen = model.predict_defs(held_out)
    np.testing.assert_allclose(sums, [block_sum(layer_costs(n)) for n in held_out], rtol=1e-9)
    np.testing.assert_allclose(pred / sums, 1.25, rtol=0.05)
    assert unseen == [0, 0]
    save(model, tmp_path / "m", archs=archs, y=np.array(y))
    loaded, _ = load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_defs(held_out)[1], pred, rtol=1e-9)
    plain = LGBMLatencyPredictor("mobilenet", block_table=table, correction=False).fit(archs, y)
    np.testing.assert_allclose(plain.predict_defs(held_out)[1], sums, rtol=1e-9)


def test_a_same_padded_block_is_priced_from_its_measured_twin():
    """A tf_ port's strided blocks (TensorFlow 'same' padding) are missing from a table that has their
    symmetric-padded twins: with no padded block measured they cost exactly the twin (the model cannot tell them
    apart); once random padded networks are in the table (here padded blocks cost 40 % more), the twin's cost
    times the block model's ratio prices the pad."""
    from search_spaces.blocks import layer_costs
    from search_spaces.costs import unpadded_key
    from search_spaces.random_defs import random_defs
    from search_spaces.timm_import import network_def_from_timm

    space = get_space("mobilenet")
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(40)))
    tf_net = network_def_from_timm("tf_mobilenetv3_large_100")
    twin = network_def_from_timm("mobilenetv3_large_100")
    cost = lambda lc: (0.01 + lc.macs * 1e-8) * (1.4 if lc.key.same_pad else 1.0)   # noqa: E731
    y = [sum(cost(lc) for lc in space.layer_costs(space.decode(a))) for a in archs]
    base = [layer_costs(n) for n in random_defs("random", 40, seed=5) + [twin]] + \
        [space.layer_costs(space.decode(a)) for a in archs]
    padded_keys = [str(lc.key) for lc in layer_costs(tf_net) if lc.key.same_pad]
    for padded_nets, ratio in ((0, 1.0), (60, 1.4)):
        layers = base + [layer_costs(n) for n in random_defs("same", padded_nets, seed=6)]
        table = {str(lc.key): cost(lc) for ls in layers for lc in ls if str(lc.key) not in padded_keys}
        model = LGBMLatencyPredictor("mobilenet", block_table=table, correction=False).fit(archs, y)
        priced = model._fallback(padded_keys) / np.array([table[unpadded_key(k)] for k in padded_keys])
        np.testing.assert_allclose(priced, ratio, rtol=1e-12 if ratio == 1 else 0.05)
        sums, _, unseen = model.predict_defs([tf_net, twin])
        assert unseen == [len(padded_keys), 0]
        assert sums[0] > 1.05 * sums[1] if ratio > 1 else sums[0] == pytest.approx(sums[1], rel=1e-12)


def test_interval_widens_with_the_share_the_block_model_priced(tmp_path):
    """A network of measured blocks gets the generic correction's out-of-fold interval; one whose blocks the
    table lacks also gets the block model's (from folds that hold out whole block kinds), so it is wider; the
    figures survive a save and a load, and a predictor saved before `block_interval` existed does not widen."""
    from search_spaces.blocks import layer_costs
    from search_spaces.random_defs import random_defs

    space = get_space("mobilenet")
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_string(space.sample(rng)) for _ in range(60)))
    nets = random_defs("random", 42, seed=5)
    extra, unseen_net = nets[:40], nets[41]
    cost = lambda lc: 0.01 + lc.macs * 1e-8 * (1.3 if lc.key.op == "dsa" else 1.0)   # noqa: E731
    table = {str(lc.key): cost(lc) for layers in ([space.layer_costs(space.decode(a)) for a in archs] +
                                                  [layer_costs(n) for n in extra]) for lc in layers}
    y = [sum(cost(lc) for lc in space.layer_costs(space.decode(a))) for a in archs]
    model = LGBMLatencyPredictor("mobilenet", block_table=table).fit(
        archs, y, extra=[(n, sum(cost(lc) for lc in layer_costs(n))) for n in extra])
    low, high = model.block_interval_
    assert low < high
    seen, new = model.predict_interval([extra[0], unseen_net])
    pred = model.predict_defs([extra[0], unseen_net])[1]
    np.testing.assert_allclose(seen, pred[0] * np.exp(model.generic_interval_), rtol=1e-9)
    assert model.predict_defs([unseen_net])[2][0] > 0
    assert np.log(new[1] / new[0]) > np.log(seen[1] / seen[0])
    assert new[0] < pred[1] < new[1]
    save(model, tmp_path / "m", archs=archs, y=np.array(y))
    loaded, meta = load(tmp_path / "m")
    assert meta["block_interval"] == model.block_interval_
    np.testing.assert_allclose(loaded.predict_interval([unseen_net]), [new], rtol=1e-9)
    meta.pop("block_interval")
    meta["meta_sha256"] = meta_digest(meta)
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    older, _ = load(tmp_path / "m")
    np.testing.assert_allclose(older.predict_interval([unseen_net]), [pred[1] * np.exp(model.generic_interval_)],
                               rtol=1e-9)


def test_predictors_are_scikit_learn_estimators_and_a_loaded_one_saves_the_same_files(tmp_path, data, fitted):
    """`get_params` / `clone` work on every estimator (a clone refits to the same predictions); a predictor saved,
    loaded and saved again gives byte-identical files and identical predictions; a predictor fitted here cannot
    be saved without its training rows."""
    from sklearn.base import clone

    archs, y = list(data.arch), data.device_ms.to_numpy()
    params = fitted.get_params()
    assert params["space"] == "fbnet" and params["n_estimators"] == fitted.n_estimators
    twin = clone(fitted)
    assert twin.get_params() == params and not hasattr(twin, "lookup_")
    np.testing.assert_array_equal(twin.fit(archs[:800], y[:800]).predict(archs[800:]), fitted.predict(archs[800:]))
    for estimator in (FlopsLinear("fbnet", num_classes=100), LookupSum("fbnet", num_classes=100, overhead_ms=0.1)):
        assert clone(estimator).get_params() == estimator.get_params()
    assert clone(LookupSum("fbnet")).set_params(overhead_ms=0.2).overhead_ms == 0.2
    save(fitted, tmp_path / "a", archs=archs[:800], y=y[:800], profile={"name": "dev", "version": 1},
         extra={"note": "kept"})
    loaded, meta = load(tmp_path / "a")
    save(loaded, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and "meta.json" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    again, meta_b = load(tmp_path / "b")
    assert meta_b["note"] == "kept" and meta_b["profile"] == {"name": "dev", "version": 1}
    np.testing.assert_array_equal(again.predict(archs[800:]), loaded.predict(archs[800:]))
    np.testing.assert_allclose(loaded.predict(archs[800:]), fitted.predict(archs[800:]), rtol=1e-12)
    with pytest.raises(ValueError, match="needs its training rows"):
        save(twin, tmp_path / "c")
    with pytest.raises(ValueError, match="needs its training rows"):   # refitted: the folder no longer describes it
        save(again.fit(archs[:800], y[:800] * 2), tmp_path / "c")
