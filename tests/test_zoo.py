"""Model-zoo releases (`python -m nas.zoo`): a tiny search released with every file, loaded by name (ours and
timm's) matching its ONNX graph, refused when tampered with, released again idempotently, verified, and bad input
as one line with exit status 2."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ASSETS, REPO
from core.errors import IntegrityError
from core.io import write_sha256sums

LATENCY = "[{profile: local-cpu, max_ms: 50, calibration: 6}, {profile: fpga-zc706-int8, max_ms: 5, source: profile}]"
FILES = {"weights.safetensors", "model.onnx", "arch.txt", "recipe.yaml", "card.json", "MODEL_CARD.md", "SHA256SUMS"}


def zoo_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.zoo", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny search (latency on this CPU by predictor and on the FPGA simulator), one network of it
    final-trained."""
    out = tmp_path_factory.mktemp("zoo") / "run"
    proc = subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
                           "--set", "tracking=none", "--set", "search.budget=3", "--set",
                           f"constraints.latency={LATENCY}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def zoo(run):
    """The run's two best networks released as v1."""
    folder = run.parent / "zoo"
    proc = zoo_cli("release", run, "--zoo", folder, "--version", "v1", "--top", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (exit status 2); progress bars may precede it."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr[-2000:]
    return lines[0]


def networks(zoo) -> list[dict]:
    return json.loads((zoo / "zoo.json").read_text())["networks"]


def test_release_writes_every_file_a_card_with_provenance_and_the_index(run, zoo):
    index, compared = json.loads((zoo / "zoo.json").read_text()), 0
    assert [r["version"] for r in index["releases"]] == ["v1"] and len(index["networks"]) == 2
    for entry in index["networks"]:
        folder = zoo / entry["path"]
        assert FILES <= {p.name for p in folder.iterdir()}
        listed = {line.split()[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
        assert listed == {p.name for p in folder.iterdir()} - {"SHA256SUMS"}
        card = json.loads((folder / "card.json").read_text())
        assert card["name"] == entry["name"] and entry["name"].startswith("tiny_")
        assert (folder / "arch.txt").read_text().strip() == card["arch"] == entry["arch"]
        assert card["accuracy"]["weights"] == "search proxy training"
        assert "validation split" in card["accuracy"]["split"] and len(card["provenance"]["dataset"]["sha256"]) == 64
        assert card["provenance"]["project"]["git_commit"] and card["provenance"]["search"]["budget"] == 3
        assert card["onnx"]["max_abs_diff"] <= 1e-4
        held = card["accuracy"]["held_out"]   # tiny.yaml's limit leaves 4,600 images no trial saw
        assert held["images"] == 4600 and "leaves out" in held["split"] and 0 <= held["value"] <= 1
        assert f"| accuracy (top-1, held out) | {held['value']:.4g} |" in (folder / "MODEL_CARD.md").read_text()
        best = json.loads((run / "best.json").read_text())
        if card["arch"] == best["best"]["arch"]:   # the same weights the run exported, on the same images
            assert held["value"] == pytest.approx(best["export"]["held_out"]["accuracy"])
            compared += 1
        cpu, fpga = card["latency"]["local-cpu"], card["latency"]["fpga-zc706-int8"]
        assert cpu["obtained"] == "measured" and cpu["search_source"] == "predicted" and cpu["measured_ms"] > 0
        assert cpu["search_vs_measured"] == pytest.approx(cpu["search_ms"] / cpu["measured_ms"] - 1)
        assert cpu["runtime"] == "onnxruntime" and cpu["threads"] == 1 and cpu["batch"] == 1
        assert cpu["measured_on"] == cpu["device"] and fpga["measured_on"] is None   # a live profile is this machine
        assert fpga["obtained"] == "simulated" and fpga["measured_ms"] == pytest.approx(fpga["search_ms"])
        for name in ("card.json", "MODEL_CARD.md", "recipe.yaml"):   # no path of the releasing machine
            text = (folder / name).read_text()
            assert str(run.parent) not in text and str(REPO) not in text and "/tmp/" not in text, name
    assert compared == 1   # the run's best is one of the two released
    readme = (zoo / "README.md").read_text()
    assert all(f"`{n['name']}`" in readme and n["card"] in readme for n in index["networks"])
    assert {p.name for p in (zoo / "plots").iterdir()} == {"local-cpu.png", "fpga-zc706-int8.png"}


def test_create_model_and_timm_load_the_release_and_match_its_onnx_graph(zoo):
    import onnxruntime as ort
    import timm

    import nas.zoo

    entry = networks(zoo)[0]
    ours = nas.zoo.create_model(entry["name"], pretrained=True, zoo=zoo)
    theirs = timm.create_model(f"hwnas_{entry['name']}", pretrained=True)
    assert f"hwnas_{entry['name']}" in timm.list_models("hwnas_*", pretrained=True)
    assert theirs.pretrained_cfg["file"].endswith("weights.safetensors")
    session = ort.InferenceSession(str(zoo / entry["path"] / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, *json.loads((zoo / entry["path"] / "card.json").read_text())["space"]["input_shape"][1:])
    want = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(ours(x[:1]).numpy(), want, atol=1e-4)
        np.testing.assert_allclose(theirs(x[:1]).numpy(), want, atol=1e-4)
    fresh = nas.zoo.create_model(entry["name"], pretrained=False, zoo=zoo)
    with torch.no_grad():
        assert not np.allclose(fresh(x[:1]).numpy(), want, atol=1e-4)   # the weights are what made it match
    with pytest.raises(nas.zoo.ZooError, match="no network 'nope'"):
        nas.zoo.create_model("nope", zoo=zoo)
    with pytest.raises(nas.zoo.ZooError, match="num_classes=3"):
        nas.zoo.create_model(entry["name"], zoo=zoo, num_classes=3)


def test_a_flipped_byte_in_the_weights_is_refused(zoo, tmp_path):
    import nas.zoo

    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    entry = networks(copy)[0]
    weights = copy / entry["path"] / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="weights.safetensors"):
        nas.zoo.create_model(entry["name"], zoo=copy)
    proc = zoo_cli("verify", copy)
    assert "weights.safetensors" in error_line(proc)
    write_sha256sums(copy / entry["path"])   # sums made to match: the card's record of the weights still refuses
    with pytest.raises(IntegrityError, match="differs from the weights its card.json records"):
        nas.zoo.create_model(entry["name"], zoo=copy)


def test_releasing_again_is_idempotent_and_a_version_is_never_overwritten(run, zoo):
    import nas.zoo

    before = {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()}
    proc = zoo_cli("release", run, "--zoo", zoo, "--version", "v1", "--top", "2")
    assert proc.returncode == 0 and "0 network(s), 2 already there" in proc.stdout
    assert {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()} == before
    best = networks(zoo)[0]
    from nas.train import main as train_main   # final training gives the best network other weights

    assert train_main([str(run), "--arch", best["arch"], "--epochs", "0.25", "--device", "cpu"]) == 0
    proc = zoo_cli("release", run, "--zoo", zoo, "--version", "v1", "--top", "1")
    assert "never overwritten" in error_line(proc)
    assert {p: p.read_bytes() for p in zoo.rglob("*") if p.is_file()} == before
    proc = zoo_cli("release", run, "--zoo", zoo, "--version", "v2", "--top", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["version"] for r in json.loads((zoo / "zoo.json").read_text())["releases"]] == ["v1", "v2"]
    card = json.loads((zoo / "v2" / best["name"] / "card.json").read_text())
    assert card["accuracy"]["weights"] == "final training" and (zoo / "v2" / best["name"] / "curve.csv").is_file()
    assert card["provenance"]["training"]["options"]["epochs"] == 0.25
    proc = zoo_cli("release", run, "--zoo", run.parent / "final-zoo", "--version", "v1", "--top", "3", "--rank",
                   "final")   # only the final-trained network is ranked
    assert proc.returncode == 0 and [n["arch"] for n in networks(run.parent / "final-zoo")] == [best["arch"]]
    newest = nas.zoo.create_model(best["name"], zoo=zoo)
    assert newest.zoo_card["version"] == "v2"
    assert nas.zoo.create_model(f"{best['name']}@v1", zoo=zoo).zoo_card["version"] == "v1"


def test_verify_passes_on_a_fresh_release_and_flags_a_card_with_a_wrong_latency(zoo, tmp_path):
    proc = zoo_cli("verify", zoo, "--profile", "fpga-zc706-int8")   # the simulator: the same figure every time
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "fpga-zc706-int8: card" in proc.stdout and "0 flagged" in proc.stdout
    copy = tmp_path / "zoo"
    shutil.copytree(zoo, copy)
    entry = networks(copy)[0]
    folder = copy / entry["path"]
    card = json.loads((folder / "card.json").read_text())
    card["latency"]["fpga-zc706-int8"]["measured_ms"] *= 1.5
    (folder / "card.json").write_text(json.dumps(card))
    proc = zoo_cli("verify", copy)   # edited without its SHA256SUMS: refused as damaged
    assert "card.json" in error_line(proc)
    write_sha256sums(folder)   # edited consistently: the figure itself is flagged
    proc = zoo_cli("verify", copy, "--profile", "fpga-zc706-int8")
    assert proc.returncode == 1 and f"{entry['name']}@v1: FLAGGED" in proc.stdout and "-33.3%" in proc.stdout


def test_a_release_that_fails_half_way_leaves_no_network_folder(run, tmp_path, monkeypatch):
    from nas.zoo import release as rel

    def broken(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(rel, "onnx_parity", broken)
    with pytest.raises(RuntimeError):
        rel.release(rel.ReleaseSettings(run_dir=str(run), zoo=str(tmp_path / "zoo"), version="v1", top=1))
    assert not list((tmp_path / "zoo").rglob("card.json")) and not list((tmp_path / "zoo" / "v1").iterdir())


@pytest.mark.parametrize("case, message", [
    ("unfinished", "best.json: missing: the search has not finished"),
    ("not_a_run", "not a run directory of a search"),
    ("bad_version", "--version 'v 1'"),
    ("not_a_zoo", "not a zoo (no zoo.json) and not empty"),
    ("bad_pareto", "--pareto edgegpu: not a latency profile of the run"),
    ("no_final", "--rank final: no network of"),
])
def test_bad_release_input_is_one_line_and_exit_status_2(run, tmp_path, case, message):
    args = [run, "--zoo", tmp_path / "zoo", "--version", "v1"]
    if case == "unfinished":
        shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("best.json"))
        args[0] = tmp_path / "run"
    elif case == "not_a_run":
        args[0] = tmp_path
    elif case == "no_final":
        shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("final"))
        args[0] = tmp_path / "run"
        args += ["--rank", "final"]
    elif case == "bad_version":
        args[4] = "v 1"
    elif case == "not_a_zoo":
        (tmp_path / "zoo").mkdir()
        (tmp_path / "zoo" / "notes.txt").write_text("mine")
    else:
        args += ["--pareto", "edgegpu"]
    proc = zoo_cli("release", *args)
    assert message in error_line(proc)


def test_pareto_release_takes_the_front_of_each_profile(run, tmp_path):
    import pandas as pd

    from nas.objectives import pareto_mask

    proc = zoo_cli("release", run, "--zoo", tmp_path / "zoo", "--version", "v1", "--pareto", "local-cpu", "flops")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(run / "results.csv")
    ok = table[table["status"] == "ok"]
    want = set()
    for col in ("latency_local-cpu", "flops"):
        want |= set(ok["arch"][pareto_mask(ok["accuracy"].to_numpy(), ok[col].to_numpy())])
    assert {n["arch"] for n in networks(tmp_path / "zoo")} == want


def test_release_measures_extra_profiles_the_search_did_not_use(run, tmp_path):
    proc = zoo_cli("release", run, "--zoo", tmp_path / "zoo", "--version", "v1", "--measure", "local-cpu-2t",
                   "--measure", "fpga-zcu102-int8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((tmp_path / "zoo" / networks(tmp_path / "zoo")[0]["path"] / "card.json").read_text())
    assert list(card["latency"]) == ["local-cpu", "fpga-zc706-int8", "local-cpu-2t", "fpga-zcu102-int8"]
    two, zcu = card["latency"]["local-cpu-2t"], card["latency"]["fpga-zcu102-int8"]
    assert two["obtained"] == "measured" and two["threads"] == 2 and two["search_ms"] is None and two["ms"] > 0
    assert zcu["obtained"] == "simulated" and zcu["search_source"] == "not searched on"
    assert "local-cpu-2t.png" in {p.name for p in (tmp_path / "zoo" / "plots").iterdir()}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_release_refuses_to_measure_a_profile_this_machine_cannot_run(run, tmp_path):
    proc = zoo_cli("release", run, "--zoo", tmp_path / "zoo", "--version", "v1", "--measure", "gpu-h200-fp32-b1")
    assert "--measure gpu-h200-fp32-b1: this machine cannot measure it" in error_line(proc)
    assert not (tmp_path / "zoo" / "v1").exists()


def test_verify_and_list_refuse_a_folder_that_is_not_a_zoo(tmp_path):
    for command in ("verify", "list"):
        proc = zoo_cli(command, tmp_path)
        assert "not a zoo (zoo.json missing)" in error_line(proc)


def test_a_release_logs_its_networks_as_wandb_artifacts_linked_to_the_search_run(run, tmp_path):
    import os

    from test_tracking import wandb_records

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "wandb_id.txt").write_text("abc12345\n")   # as a tracked search leaves it
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    proc = subprocess.run([sys.executable, "-m", "nas.zoo", "release", str(copy), "--zoo", str(tmp_path / "zoo"),
                           "--version", "v1", "--top", "2", "--tracking", "wandb"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run_file] = (tmp_path / "zoo").glob("wandb/offline-run-*/run-*.wandb")
    records = list(wandb_records(run_file))
    [wandb_run] = [r.run for r in records if r.HasField("run")]
    assert wandb_run.job_type == "release" and wandb_run.project == "hwnas"
    arts = {a.name: a for a in (r.artifact for r in records if r.HasField("artifact")) if a.type == "model"}
    assert set(arts) == {n["name"] for n in networks(tmp_path / "zoo")}
    for name, art in arts.items():
        folder = tmp_path / "zoo" / "v1" / name
        assert "v1" in art.aliases and {c.path for c in art.manifest.contents} == {p.name for p in folder.iterdir()}
        meta = json.loads(art.metadata)
        assert meta["search_run"] == {"id": "abc12345", "project": "hwnas", "name": "tiny"}
        assert meta["latency_obtained"] == {"local-cpu": "measured", "fpga-zc706-int8": "simulated"}
    proc = zoo_cli("release", copy, "--zoo", tmp_path / "zoo", "--version", "v1", "--top", "2", "--tracking", "wandb")
    assert proc.returncode == 0 and len(list((tmp_path / "zoo").glob("wandb/offline-run-*"))) == 1   # nothing new


def test_the_shipped_zoo_loads_by_name_and_matches_its_onnx_graphs():
    import onnxruntime as ort
    import timm

    import nas.zoo

    index = json.loads((nas.zoo.SHIPPED_ZOO / "zoo.json").read_text())
    assert {n["task"] for n in index["networks"]} == {"classification", "detection"}
    size = sum(p.stat().st_size for p in nas.zoo.SHIPPED_ZOO.rglob("*") if p.is_file())
    assert size < 25 << 20   # small enough to live in git
    for entry in index["networks"]:
        assert f"hwnas_{entry['name']}" in timm.list_models("hwnas_*", pretrained=True)   # registered at import
        model = nas.zoo.create_model(f"{entry['name']}@{entry['version']}")
        folder = nas.zoo.SHIPPED_ZOO / entry["path"]
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        x = torch.randn(1, *model.zoo_card["space"]["input_shape"][1:])
        with torch.no_grad():
            want = model(x)
        want = want if isinstance(want, tuple) else (want,)
        for got, ours in zip(session.run(None, {session.get_inputs()[0].name: x.numpy()}), want, strict=True):
            np.testing.assert_allclose(got, ours.numpy(), atol=1e-4)
        assert model.zoo_card["accuracy"]["weights"] == "final training"
