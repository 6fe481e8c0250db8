"""The run's review: the plots of `nas.report` on a hand-made results table, and a tiny search's offline W&B run
read back from disk (trials table, plots, predictor figures, the exported network as a model artifact)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import ASSETS
from test_e2e import nas_run

PNG = b"\x89PNG\r\n\x1a\n"
TWO_PROFILES = ["constraints.latency=[{profile: local-cpu, max_ms: 5}, {profile: x86-ort-t1, max_ms: 20}]"]


@pytest.fixture
def recipe():
    from nas.recipe import read_recipe

    return read_recipe(ASSETS / "tiny.yaml", TWO_PROFILES)


@pytest.fixture
def table() -> pd.DataFrame:
    """Seven candidates, in the order they finished: every status, feasible accuracies 0.5 then 0.7."""
    rows = [  # index, status, accuracy, flops, latency on local-cpu, on x86-ort-t1
        (0, "rejected", None, 2.0e5, None, None),
        (1, "failed", None, 1.0e5, 3.0, 10.0),
        (2, "ok", 0.5, 0.9e5, 2.0, 12.0),
        (3, "infeasible", 0.9, 1.1e5, 6.0, 15.0),
        (4, "infeasible", None, 1.0e5, 8.0, None),
        (5, "ok", 0.7, 1.1e5, 4.0, 18.0),
        (6, "ok", 0.6, 0.8e5, 1.0, 9.0),
    ]
    t = pd.DataFrame(rows, columns=["index", "status", "accuracy", "flops", "latency_local-cpu",
                                    "latency_x86-ort-t1"])
    t["arch"] = [f"arch{i}" for i in t["index"]]
    return t


def test_cost_axes_name_every_latency_profile_then_flops(recipe):
    from nas.report import cost_axes, cost_axis

    axes = cost_axes(recipe)
    assert list(axes) == ["local-cpu", "x86-ort-t1", "flops"]
    assert axes["x86-ort-t1"] == ("latency_x86-ort-t1", "latency on x86-ort-t1 (ms)", 20)
    assert axes["flops"][0] == "flops" and axes["flops"][2] == 1.2e5
    assert cost_axis(recipe) == axes["local-cpu"]   # pareto.png's axis, as before


def test_a_pareto_plot_per_cost_the_first_copied_from_pareto_png(recipe, table, tmp_path):
    from matplotlib.image import imread

    from nas.report import pareto_plot, pareto_plots

    main = pareto_plot(recipe, table, tmp_path / "pareto.png")
    plots = pareto_plots(recipe, table, tmp_path / "plots", drawn=main)
    assert {k: p.name for k, p in plots.items()} == {"local-cpu": "pareto_local-cpu.png",
                                                     "x86-ort-t1": "pareto_x86-ort-t1.png",
                                                     "flops": "pareto_flops.png"}
    assert plots["local-cpu"].read_bytes() == main.read_bytes()   # the same axis: copied, not drawn again
    images = {k: p.read_bytes() for k, p in plots.items()}
    assert all(b.startswith(PNG) for b in images.values()) and len(set(images.values())) == 3
    assert imread(plots["flops"]).shape[:2] == (540, 840)   # 7 x 4.5 inches at 120 dpi
    assert not list((tmp_path / "plots").glob(".*"))        # atomic writes leave no temp file


def test_progress_is_the_best_feasible_accuracy_so_far(recipe, table, tmp_path):
    from nas.report import progress_plot, trials_in_order

    t = trials_in_order(table.sample(frac=1, random_state=0))   # rows in any order: the index orders them
    assert t["trial"].tolist() == [1, 2, 3, 4, 5, 6]           # the rejected candidate cost no trial
    assert t["index"].tolist() == [1, 2, 3, 4, 5, 6]
    # an infeasible 0.9 never counts; NaN before the first feasible trial
    np.testing.assert_array_equal(t["best"].to_numpy(), [np.nan, 0.5, 0.5, 0.5, 0.7, 0.7])
    assert progress_plot(recipe, table, tmp_path / "progress.png").read_bytes().startswith(PNG)


def _source(profile: str, predict, profile_obj=None, predictor_path: str | None = None):
    """A `PredictorSource` of `profile` whose predictor answers `predict(archs)`."""
    from nas.latency_sources import PredictorSource
    from nas.recipe import LatencyConstraint

    model = SimpleNamespace(predict=lambda archs: np.array([predict(a) for a in archs], float), saved_meta_=None)
    return PredictorSource(LatencyConstraint(profile=profile, predictor=predictor_path), profile_obj, model, "test")


def test_predictor_evidence_from_calibration_timings(tmp_path):
    from nas.report import predictor_evidence, predictor_plot

    folder = tmp_path / "predictors" / "local-cpu"
    folder.mkdir(parents=True)
    measured = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 5.0}
    rows = [{"arch": a, "round": k, "median_ms": ms * (1 + k)} for k in (1, 0) for a, ms in measured.items()]
    pd.DataFrame(rows).to_csv(folder / "calibration.csv", index=False)   # the fit took each arch's smaller median
    predicted = {"a": 1.1, "b": 1.8, "c": 4.4, "d": 5.0}
    sources = {"local-cpu": _source("local-cpu", predicted.get),
               "other": SimpleNamespace(predictor=None)}                   # not a predictor: no evidence
    exported = {"local-cpu": {"search_ms": 3.0, "measured_ms": 2.5}}
    [ev] = predictor_evidence(tmp_path, sources, exported)
    order = np.argsort(ev.measured)
    np.testing.assert_allclose(ev.measured[order], [1, 2, 4, 5])
    np.testing.assert_allclose(ev.predicted[order], [1.1, 1.8, 4.4, 5.0])
    assert ev.what.startswith("4 calibration networks")
    err = ev.errors()
    assert err["mape"] == pytest.approx((0.1 + 0.1 + 0.1 + 0) / 4)
    assert err["spearman"] == pytest.approx(1.0) and err["rows"] == 4
    assert err["exported_error"] == pytest.approx(3.0 / 2.5 - 1)
    assert predictor_plot(ev, tmp_path / "plots" / "predictor_local-cpu.png").read_bytes().startswith(PNG)


def test_predictor_evidence_per_engine_with_the_candidates_measured_before_export(tmp_path):
    from nas.latency_sources import ImplementationSource
    from nas.recipe import LatencyConstraint
    from nas.report import predictor_evidence, predictor_plot

    timings = {"ort": {"a": 1.0, "b": 2.0, "c": 3.0}, "ov": {"a": 0.5, "b": 2.5, "c": 2.0}}
    for engine, ms in timings.items():
        folder = tmp_path / "predictors" / "local-cpu" / engine
        folder.mkdir(parents=True)
        pd.DataFrame([{"arch": a, "round": 0, "median_ms": v} for a, v in ms.items()]).to_csv(
            folder / "calibration.csv", index=False)
    parts = {"ort": _source("local-cpu", lambda a: {"a": 1.0, "b": 2.0, "c": 3.0, "x": 1.5, "y": 9.0}[a]),
             "ov": _source("local-cpu", lambda a: {"a": 0.5, "b": 2.5, "c": 2.0, "x": 1.8, "y": 1.0}[a])}
    lat = LatencyConstraint(profile="local-cpu", max_ms=2.0, implementation="best", implementations=["ort", "ov"])
    sources = {"local-cpu": ImplementationSource(lat, parts, "test")}
    pd.DataFrame([{"arch": "x", "measured_local-cpu": 2.0, "implementation_local-cpu": "ort"},    # held out
                  {"arch": "y", "measured_local-cpu": 1.25, "implementation_local-cpu": "ov"}]).to_csv(
        tmp_path / "verification.csv", index=False)
    exported = {"local-cpu": {"search_ms": 1.0, "measured_ms": 1.25, "implementation": "ov"}}
    ort, ov = predictor_evidence(tmp_path, sources, exported)
    assert (ort.profile, ov.profile) == ("local-cpu/ort", "local-cpu/ov")
    assert ort.errors()["mape"] == pytest.approx(0) and ov.errors()["mape"] == pytest.approx(0)
    np.testing.assert_allclose(ort.held_out, [[1.5], [2.0]])          # x, measured with ort: 25 % under
    np.testing.assert_allclose(ov.held_out, [[1.0], [1.25]])
    assert ort.errors()["held_out_mape"] == pytest.approx(0.25) and ov.errors()["held_out_mape"] == pytest.approx(0.2)
    assert ort.exported == (None, None) and ov.exported == (1.0, 1.25)   # the star on the engine that won it
    assert predictor_plot(ov, tmp_path / "ov.png").read_bytes().startswith(PNG)


def test_predictor_evidence_from_a_profile_network_table_or_none(tmp_path):
    from hardware_profiles import get_profile
    from nas.report import predictor_evidence, predictor_plot

    profile = get_profile("x86-ort-t1")
    nets = profile.read_networks()
    truth = dict(zip(nets["arch"].astype(str), nets["median_ms"].astype(float)))
    sources = {"x86-ort-t1": _source("x86-ort-t1", lambda a: 1.2 * truth[a], profile),
               "given": _source("given", lambda a: 1.0, None, predictor_path="elsewhere")}
    table_ev, none_ev = predictor_evidence(tmp_path, sources, {"given": {"search_ms": 1.0, "measured_ms": None}})
    assert len(table_ev.measured) == len(nets) and f"of {profile.name}'s table" in table_ev.what
    assert table_ev.errors()["mape"] == pytest.approx(0.2)
    assert table_ev.exported == (None, None) and "exported_error" not in table_ev.errors()
    assert len(none_ev.measured) == 0 and none_ev.what == "no measured networks kept with this predictor"
    assert none_ev.errors() == {}   # nothing measured: no figures, and no exported point without a measurement
    for ev in (table_ev, none_ev):
        assert predictor_plot(ev, tmp_path / f"{ev.profile}.png").read_bytes().startswith(PNG)


def test_log_model_artifact_names_and_files(tmp_path):
    from nas.tracking import artifact_name, log_model_artifact

    assert artifact_name("tiny run/2: best") == "tiny-run-2-best"
    folder = tmp_path / "best"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt", ".a.txt.123.tmp"):
        (folder / name).write_text(name)
    logged = []
    run = SimpleNamespace(log_artifact=lambda art, aliases: logged.append((art, aliases)))
    art = log_model_artifact(run, folder, "tiny: best", {"accuracy": float("nan"), "n": 1}, aliases=("best",))
    assert logged == [(art, ["best"])]
    assert art.type == "model" and art.name == "tiny-best" and art.metadata == {"accuracy": None, "n": 1}
    assert sorted(art.manifest.entries) == ["a.txt", "sub/b.txt"]   # the temp file of a killed write left out


# ---- a tiny search tracked offline, read back from disk --------------------------------------------------------

def wandb_records(path: Path):
    """The protobuf records of a W&B run file (``run-<id>.wandb``), checksums verified.

    The file is a LevelDB-style log (W&B's Go core writes it; wandb 0.2x+ has no Python reader): a 7-byte header
    (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each a 7-byte header (CRC-32 of the type
    byte and data, length, type: 1 full, 2 first, 3 middle, 4 last) and its data; a block's tail shorter than a
    header is padding. A record is one full chunk or a first..last run of chunks: a `wandb_internal_pb2.Record`.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, head = path.read_bytes(), 32768, 7
    assert struct.unpack("<4sHB", data[:head]) == (b":W&B", 0xBEE1, 0)
    pos, parts = head, b""
    while pos + head <= len(data):
        if block - pos % block < head:
            pos += block - pos % block
            continue
        crc, size, kind = struct.unpack("<IHB", data[pos:pos + head])
        chunk, pos = data[pos + head:pos + head + size], pos + head + size
        if kind == 0 and size == 0:   # zero fill after the last record
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: chunk checksum at byte {pos}"
        parts += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record
            parts = b""


def _items(items) -> dict:
    """History or summary items as a nested dict of their JSON values."""
    out: dict = {}
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A 3-trial search of the tiny recipe (6 calibration networks) tracked by W&B offline; W&B's own folders
    (artifact staging, cache, settings) are kept in the test's tmp folder."""
    tmp = tmp_path_factory.mktemp("tracked")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp / "wandb-data"),
           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-config")}
    out = tmp / "run"
    proc = nas_run("--output", str(out), "--set", "tracking=wandb", "--set", "search.budget=3", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_the_offline_run_holds_the_review_of_the_search(tracked_run):
    from nas.tracking import search_run_ref

    out = tracked_run
    summary = json.loads((out / "best.json").read_text())
    [run_file] = out.glob("wandb/offline-run-*/run-*.wandb")
    files = run_file.parent / "files"
    records = list(wandb_records(run_file))
    kinds = [r.WhichOneof("record_type") for r in records]
    [run] = [r.run for r in records if r.HasField("run")]
    ref = search_run_ref(out)
    assert (ref.id, ref.project, ref.name) == (run.run_id, run.project, "tiny") == (run_file.stem[4:], "hwnas", "tiny")
    config = {u.key: json.loads(u.value_json) for u in run.config.update}   # the recipe as config
    assert kinds[-1] == "exit" and config["name"] == "tiny" and config["search"]["budget"] == 3

    history = _items(i for r in records if r.HasField("history") for i in r.history.item)
    plots = {"pareto/local-cpu": "pareto_local-cpu.png", "pareto/flops": "pareto_flops.png",
             "predictor/local-cpu": "predictor_local-cpu.png", "progress": "progress.png"}
    for key, name in plots.items():   # each plot logged as an image: the very file the run folder holds
        assert history[key]["_type"] == "image-file", key
        assert (files / history[key]["path"]).read_bytes() == (out / "plots" / name).read_bytes(), key
    assert (out / "plots" / "pareto_local-cpu.png").read_bytes() == (out / "pareto.png").read_bytes()

    trials = json.loads((files / history["trials"]["path"]).read_text())   # the trials table, every figure
    logged = pd.DataFrame(trials["data"], columns=trials["columns"])
    results = pd.read_csv(out / "results.csv")
    assert list(logged.columns) == list(results.columns) and "latency_local-cpu" in logged.columns
    assert sorted(logged["arch"]) == sorted(results["arch"])
    ok = results[results.status == "ok"]
    assert sorted(logged.loc[logged.status == "ok", "accuracy"].astype(float)) == sorted(ok.accuracy)

    final = _items(u for r in records if r.HasField("summary") for u in r.summary.update)
    assert final["best_arch"] == summary["best"]["arch"]
    assert 0 <= final["predictor/local-cpu/mape"] < 1 and final["predictor/local-cpu/rows"] == 6
    lat = summary["export"]["latency"]["local-cpu"]
    assert final["predictor/local-cpu/exported_error"] == pytest.approx(lat["search_ms"] / lat["measured_ms"] - 1)


def test_the_exported_network_is_a_model_artifact_of_the_run(tracked_run):
    out = tracked_run
    summary = json.loads((out / "best.json").read_text())
    [run_file] = out.glob("wandb/offline-run-*/run-*.wandb")
    [art] = [r.artifact for r in wandb_records(run_file) if r.HasField("artifact") and r.artifact.type == "model"]
    assert art.name == "tiny-best" and {"best", "latest"} <= set(art.aliases)
    best = sorted(p.name for p in (out / "best").iterdir())
    assert {"weights.safetensors", "model.onnx", "arch.txt", "MODEL_CARD.md", "SHA256SUMS"} <= set(best)
    entries = {c.path: c for c in art.manifest.contents}
    assert sorted(entries) == best
    for name, entry in entries.items():   # W&B's digest is the base64 MD5 of the file's bytes
        assert entry.digest == base64.b64encode(hashlib.md5((out / "best" / name).read_bytes()).digest()).decode()
    meta = json.loads(art.metadata)
    assert meta["arch"] == summary["best"]["arch"] == (out / "best" / "arch.txt").read_text().strip()
    assert meta["figures"]["accuracy"] == summary["best"]["accuracy"]
    lat = summary["export"]["latency"]
    assert meta["figures"]["latency local-cpu (ms, measured)"] == lat["local-cpu"]["measured_ms"]
    assert meta["latency"] == lat and meta["notes"]["search space"] == "mobilenet"
    assert meta["search_run"] == {"id": run_file.stem[4:], "project": "hwnas", "name": "tiny"}


def test_tracking_none_writes_the_plots_too(tracked_run, tmp_path):
    """`finish` with tracking off (and no export) still draws every plot; the predictor's has no exported point."""
    from nas.checks import load_run
    from nas.pipeline import finish
    from nas.results import RunLog
    from nas.tracking import NoTracker

    run = tmp_path / "run"
    shutil.copytree(tracked_run / "predictors", run / "predictors")   # the run's predictor: nothing re-measured
    for name in ("state.json", "recipe.yaml"):
        shutil.copyfile(tracked_run / name, run / name)
    ctx = load_run(run / "recipe.yaml", ["tracking=none", "output.export=false"]).open(run)
    recipe = ctx.recipe
    summary = finish(recipe, run, ctx, RunLog.load(run), NoTracker())
    assert "export" not in summary and not (run / "wandb").exists()
    names = sorted(p.name for p in (run / "plots").iterdir())
    assert names == ["pareto_flops.png", "pareto_local-cpu.png", "predictor_local-cpu.png", "progress.png"]
    assert (run / "pareto.png").read_bytes() == (tracked_run / "pareto.png").read_bytes()
