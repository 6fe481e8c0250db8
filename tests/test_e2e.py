"""End to end through Ray Tune: the tiny recipe runs, reports, exports; a killed run resumes losslessly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ASSETS, REPO
from core.errors import InputError
from nas.results import RunLog


def nas_run(*args: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **popen)


def test_tiny_recipe_end_to_end_through_ray_tune(tmp_path):
    out = tmp_path / "run"
    # two trials at a time, one CPU each: the adapter must keep in-flight candidates apart
    proc = nas_run("--output", str(out), "--set", "tracking=wandb", "--set", "search.concurrency=2",
                   "--set", "cluster.cpus_per_trial=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    evaluated = table[table.status != "rejected"]
    assert len(evaluated) == 4
    assert set(table.status) <= {"ok", "infeasible", "failed", "rejected"}
    assert (table.loc[table.status == "rejected", "flops"] > 1.2e5).all()
    assert (evaluated.flops.dropna() <= 1.2e5).all()   # FLOPs checked before any trial was spent
    ok = table[table.status == "ok"]
    assert ok.accuracy.between(0, 1).all() and (ok["latency_local-cpu"] > 0).all()
    summary = json.loads((out / "best.json").read_text())
    top = ok[ok.accuracy == ok.accuracy.max()]
    assert summary["best"]["arch"] == top.loc[top.flops.idxmin(), "arch"]   # ties go to fewer FLOPs
    assert summary["export"]["onnx_max_abs_diff"] < 1e-4
    for name in ("weights.safetensors", "model.onnx", "arch.txt", "MODEL_CARD.md"):
        assert (out / "best" / name).stat().st_size > 0
        assert f"  {name}\n" in (out / "best" / "SHA256SUMS").read_text()   # written last, covers every file
    card = (out / "best" / "MODEL_CARD.md").read_text()
    assert summary["best"]["arch"] in card
    # latency came from the calibrated predictor; the exported network was measured, both in the card
    lat = summary["export"]["latency"]["local-cpu"]
    assert lat["source"] == "predictor" and lat["measured_ms"] > 0
    assert lat["search_ms"] == pytest.approx(summary["best"]["latency_local-cpu"])
    assert "latency local-cpu (ms, predicted)" in card and "latency local-cpu (ms, measured)" in card
    # tiny.yaml's limit of 400 leaves 4,600 MNIST-5k images that no trial saw: the export is scored on them too
    held = summary["export"]["held_out"]
    assert held["images"] == 4600 and 0 <= held["accuracy"] == held["accuracy_fp32"] <= 1
    assert "| accuracy (held out) |" in card and "4,600 images, the MNIST-5k images that limit 400 leaves" in card
    assert f"held out: accuracy={held['accuracy']:.4f} on 4,600 images" in proc.stdout
    assert (out / "predictors" / "local-cpu" / "calibration.csv").is_file()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "W&B must log an offline run"
    assert "best feasible" in proc.stdout
    from nas.search import ray_temp_dir

    assert len(str(out.resolve())) > 40 and not ray_temp_dir(out).exists()   # the short fallback folder, removed


def test_exported_onnx_matches_the_saved_weights(tmp_path):
    """The exported files reload into the same network: safetensors into the space's build, ONNX in onnxruntime."""
    import onnxruntime as ort
    import torch

    from nas.export import load_weights
    from nas.checks import load_recipe
    from search_spaces import get_space

    out = tmp_path / "run"
    proc = nas_run("--output", str(out), "--set", "search.budget=1", "--set", "controller={name: random}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe = load_recipe(ASSETS / "tiny.yaml")
    space = get_space("mobilenet", recipe.space.options, num_classes=10)
    arch = space.decode((out / "best" / "arch.txt").read_text().strip())
    model = load_weights(space.build(arch), out / "best" / "weights.safetensors").eval()
    x = np.random.default_rng(0).standard_normal(space.input_shape(arch)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "best" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # the model card's own loading snippet works as written, from inside the export folder
    card = (out / "best" / "MODEL_CARD.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    cwd = os.getcwd()
    try:
        os.chdir(out / "best")
        scope: dict = {}
        exec(snippet, scope)   # noqa: S102 - executing our own generated documentation
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        np.testing.assert_allclose(scope["model"](torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    # the held-out accuracy in best.json is the shipped weights' on the images the evaluator leaves out
    from nas.context import RunContext
    from nas.recipe import read_recipe

    images, labels = RunContext(read_recipe(out / "recipe.yaml")).evaluator.held_out(16).tensors
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    assert json.loads((out / "best.json").read_text())["export"]["held_out"]["accuracy"] == pytest.approx(accuracy)


def _rows(run: Path) -> list[dict]:
    """The run's ledger rows as saved so far (snapshot and journal, `RunLog.load`); none before the first save."""
    try:
        return RunLog.load(run).rows
    except InputError:
        return []


def _evaluated(run: Path) -> list[dict]:
    return [r for r in _rows(run) if r["status"] != "rejected"]


def _kill_ray_of(run: Path) -> None:
    """Kill Ray processes left by a killed driver (found by their session folder under this run)."""
    from nas.search import ray_temp_dir

    marker = str(ray_temp_dir(run))
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if "ray" in cmd and marker in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_killed_run_resumes_without_losing_or_repeating_trials(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "nas.run", str(ASSETS / "tiny.yaml"), "--output", str(out),
            "--set", "search.budget=6"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while len(_evaluated(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)   # the driver and everything in its session, mid-search
    proc.wait()
    _kill_ray_of(out)
    before = _evaluated(out)
    assert 2 <= len(before) < 6, "the run must be killed mid-way for this test to mean anything"

    resumed = nas_run("--output", str(out), "--set", "search.budget=6", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _evaluated(out)
    assert len(after) == 6
    assert after[:len(before)] == before            # finished trials kept as they were, not re-run
    archs = [r["arch"] for r in after]
    assert len(set(archs)) == len(archs)            # nothing evaluated twice
    assert len(pd.read_csv(out / "results.csv").query("status != 'rejected'")) == 6
    assert not (out / "wandb").exists()             # tracking: none writes no W&B run

    again = nas_run("--output", str(out), "--set", "search.budget=6", "--resume")   # nothing left to do
    assert again.returncode == 0 and _evaluated(out) == after


TABULAR = ["--set", "controller={name: rl, options: {batch_size: 2}}", "--set", "search.concurrency=1",
           "--set", "output.export=false", "--set", "search.budget=12"]


def _kill_when(out: Path, ready, what: str) -> None:
    """Start the tabular search (resuming when `out` holds a run), SIGKILL it and its Ray processes as soon as
    `ready(rows)` holds, and leave the run folder as the kill left it."""
    resume = ["--resume"] if (out / "state.json").is_file() else []
    proc = subprocess.Popen([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                             "--output", str(out), *TABULAR, *resume], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if (out / "state.json").is_file() and ready(_rows(out)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the search ended before the kill point ({what})"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _kill_ray_of(out)


def test_a_search_killed_three_times_ends_as_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                           "--output", str(whole), *TABULAR], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    kept = []
    for what, ready in (("during setup, before any trial", lambda rows: not rows),
                        ("mid-search", lambda rows: len([r for r in rows if r["status"] != "rejected"]) >= 3),
                        ("near the end", lambda rows: len([r for r in rows if r["status"] != "rejected"]) >= 8)):
        _kill_when(killed, ready, what)
        rows = _rows(killed)
        assert rows[:len(kept)] == kept, f"rows finished before the kill {what} changed"
        kept = rows
    resumed = subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                              "--output", str(killed), *TABULAR, "--resume"], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((killed / "state.json").read_text())["rows"]
    assert final[:len(kept)] == kept
    expected = json.loads((whole / "state.json").read_text())["rows"]
    outcome = lambda rows: [(r["arch"], r["status"], r.get("accuracy")) for r in rows]   # noqa: E731
    assert outcome(final) == outcome(expected)    # nothing lost, nothing redone, the same search


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    first = subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                            "--output", str(out), *TABULAR[:-2], "--set", "search.budget=3"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    return out


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_ledger_is_refused_in_one_line_on_resume(tmp_path, small_run, damage):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("state.json", "recipe.yaml"):   # all a resume reads before it would start Ray
        (out / name).write_bytes((small_run / name).read_bytes())
    path = out / "state.json"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":   # a digit of an accuracy: still valid JSON, only the checksum can tell
        at = data.index(b'"accuracy": ') + len(b'"accuracy": ')
        path.write_bytes(data[:at] + bytes([ord("1") if data[at] != ord("1") else ord("2")]) + data[at + 1:])
    else:
        path.unlink()
    again = subprocess.run([sys.executable, "-m", "nas.run", str(REPO / "recipes" / "nb201_tabular.yaml"),
                            "--output", str(out), *TABULAR[:-2], "--set", "search.budget=4", "--resume"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 1 and "Traceback" not in again.stderr, again.stderr[-2000:]
    words = {"truncate": "not a readable run ledger", "flip": "SHA-256 mismatch", "delete": "no run to resume"}
    assert lines[0].startswith("error: ") and str(out) in lines[0] and words[damage] in lines[0], lines[0]
