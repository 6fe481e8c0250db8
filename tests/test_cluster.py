"""Searches on a multi-node Ray cluster (`ray.cluster_utils.Cluster`: a head and worker nodes on this machine,
each a full set of Ray processes), driven as a user drives one: `python -m nas.run ... --set cluster.address=...`.

Trials cost a fixed sleep (the ``fixed_cost`` evaluator), so two cores host several nodes. The quick checks run
in CI; the fault drills (a node removed mid-search, the driver killed and resumed, a node joining) take a minute
or two and carry the ``cluster`` marker: ``python -m pytest -m cluster tests/test_cluster.py``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from core.errors import InputError
from nas.results import RunLog

RECIPE = REPO / "recipes" / "nb201_tabular.yaml"


def fixed_cost(seconds: float, **options) -> list[str]:
    """Overrides: the NB201 table search with trials that each sleep `seconds`."""
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    return ["--set", f"evaluator={{name: fixed_cost, options: {{seconds: {seconds}{extra}}}}}",
            "--set", "constraints.latency=[{profile: device, source: table, table: 'synthetic:nb201', "
                     "column: latency_ms, max_ms: 0.9}]",
            "--set", "output.export=false"]


def nas_run(out: Path, *args: str, wait: bool = True, timeout: float = 240):
    cmd = [sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(out), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def trials(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "results.csv", dtype={"node": str})
    return table[table.status != "rejected"]


def evaluated(out: Path) -> list[dict]:
    try:
        return [r for r in RunLog.load(out).rows if r["status"] != "rejected"]
    except InputError:
        return []


def start_cluster(workers: list[dict]):
    """A head that runs no trials (num_cpus 0) and the given worker nodes; returns (cluster, worker nodes)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(**w) for w in workers]
    cluster.wait_for_nodes()
    return cluster, nodes


@pytest.fixture(scope="module")
def cluster():
    """Two worker nodes of one CPU each; the second has a (logical) GPU."""
    cluster, nodes = start_cluster([{"num_cpus": 1}, {"num_cpus": 1, "num_gpus": 1}])
    yield cluster, [n.node_id[:12] for n in nodes]
    cluster.shutdown()


def test_trials_spread_over_the_nodes_and_a_run_resumes_from_shared_storage_alone(tmp_path, cluster):
    c, nodes = cluster
    out, shared = tmp_path / "run", tmp_path / "shared"
    args = [*fixed_cost(1.0), "--set", f"cluster.address={c.address}", "--set", "search.concurrency=auto",
            "--set", f"cluster.storage={shared}"]
    done = nas_run(out, *args, "--set", "search.budget=6")
    assert done.returncode == 0, done.stderr[-3000:]
    t = trials(out)
    assert len(t) == 6 and (t.status != "failed").all()
    assert set(t.node) == set(nodes)                     # both workers ran trials, the head (0 CPUs) none
    assert t.node_ip.notna().all()

    kept = evaluated(out)
    assert (shared / "run" / "results.csv").read_bytes() == (out / "results.csv").read_bytes()
    assert list((shared / "run" / "tune").glob("session1"))
    shutil.rmtree(out)                                   # the driver's machine is gone; another mounts `shared`
    again = nas_run(out, *args, "--set", "search.budget=8", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = evaluated(out)
    assert len(rows) == 8 and rows[:6] == kept and len({r["arch"] for r in rows}) == 8
    assert list((shared / "run" / "tune").glob("session2"))


def test_a_gpu_per_trial_places_every_trial_on_the_gpu_node(tmp_path, cluster):
    c, nodes = cluster
    out = tmp_path / "run"
    done = nas_run(out, *fixed_cost(0.2), "--set", f"cluster.address={c.address}", "--set", "search.budget=3",
                   "--set", "search.concurrency=1", "--set", "cluster.gpus_per_trial=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(trials(out).node) == {nodes[1]}


@pytest.mark.parametrize("setting, field", [("cluster.gpus_per_trial=2", "cluster.gpus_per_trial"),
                                            ("cluster.resources={fpga_board: 1}", "cluster.resources"),
                                            ("cluster.accelerator_type=H100", "cluster.accelerator_type")])
def test_resources_no_node_has_are_one_line_before_any_trial(cluster, setting, field):
    import ray

    from nas.recipe import read_recipe
    from nas.search import ClusterError, check_resources

    c, _ = cluster
    recipe = read_recipe(RECIPE, [f"cluster.address={c.address}", setting])
    ray.init(address=c.address, log_to_driver=False)
    try:
        with pytest.raises(ClusterError, match=rf"^{field}: a trial asks for .* no trial could start$"):
            check_resources(recipe)
        check_resources(read_recipe(RECIPE, [f"cluster.address={c.address}", "cluster.gpus_per_trial=1"]))
    finally:
        ray.shutdown()


def test_resources_are_checked_before_any_trial_in_one_line(tmp_path, cluster):
    c, _ = cluster
    out = tmp_path / "run"
    done = nas_run(out, *fixed_cost(0.2), "--set", f"cluster.address={c.address}",
                   "--set", "cluster.resources={fpga_board: 1}", "--set", "search.budget=2")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[-1].startswith(f"error: {RECIPE}: cluster.resources: a trial asks for 1 fpga_board"), lines[-1]
    assert not evaluated(out)


def test_an_unreachable_address_is_one_line_not_a_hang(tmp_path):
    start = time.monotonic()
    done = nas_run(tmp_path / "run", *fixed_cost(0.2), "--set", "cluster.address=127.0.0.1:9",
                   "--set", "cluster.connect_timeout=2", "--set", "search.budget=2", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {RECIPE}: cluster.address: no Ray cluster answers at 127.0.0.1:9"), last
    assert time.monotonic() - start < 100   # Ray's own connect retries for minutes


def test_a_hung_trial_is_stopped_at_the_timeout_and_the_search_goes_on(tmp_path, cluster):
    out = tmp_path / "run"
    done = nas_run(out, *fixed_cost(0.1, stall_fraction=0.3, stall_seconds=3600),
                   "--set", f"cluster.address={cluster[0].address}",
                   "--set", "search.trial_timeout=1.5", "--set", "search.budget=4", "--set", "search.concurrency=1",
                   "--set", "constraints.latency.0.max_ms=5")   # every candidate feasible: each one is evaluated
    assert done.returncode == 0, done.stderr[-3000:]
    t = trials(out)
    hung = t[t.status == "failed"]
    assert len(t) == 4 and 0 < len(hung) < 4
    assert hung.error.str.contains("TimeoutError: the trial ran past search.trial_timeout").all()
    assert (t[t.status != "failed"].accuracy.notna()).all()


def test_storage_that_cannot_be_written_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "run"
    done = nas_run(out, *fixed_cost(0.1), "--set", f"cluster.storage={tmp_path / 'file' / 'store'}",
                   "--set", "search.budget=2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {RECIPE}: cluster.storage: cannot write to "), last
    assert not out.exists()                         # nothing started: a plain rerun needs no --resume


def _wait_for(out: Path, proc, n: int, timeout: float = 180) -> list[dict]:
    """The run's evaluated rows once there are at least `n` (the run still going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = evaluated(out)
        if len(rows) >= n:
            return rows
        assert proc.poll() is None, f"the search ended early: {proc.stderr.read()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} trials after {timeout} s")


def _assert_whole(rows: list[dict], budget: int, kept: list[dict]) -> None:
    """The budget reached, no trial evaluated twice, none failed, the rows finished earlier unchanged."""
    assert len(rows) == budget and len({r["arch"] for r in rows}) == budget
    assert all(r["status"] != "failed" for r in rows), [r.get("error") for r in rows]
    assert rows[:len(kept)] == kept


@pytest.mark.cluster
def test_a_node_lost_mid_search_costs_no_trial_and_a_node_that_joins_gets_trials(tmp_path):
    cluster, (lost, _) = start_cluster([{"num_cpus": 1}, {"num_cpus": 1}])
    try:
        out = tmp_path / "run"
        # trials longer than a worker process takes to start (~5 s here): a trial whose actor is still starting
        # on the new node would otherwise take the actor a finishing trial leaves behind (Tune reuses actors)
        proc = nas_run(out, *fixed_cost(8.0), "--set", f"cluster.address={cluster.address}",
                       "--set", "search.concurrency=auto", "--set", "search.budget=8", wait=False)
        _wait_for(out, proc, 2)
        time.sleep(1.0)                             # both nodes are busy with their next trial
        kept = [r for r in RunLog.load(out).rows]
        cluster.remove_node(lost)                   # its trial in flight dies with it
        joined = cluster.add_node(num_cpus=1)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    finally:
        cluster.shutdown()
    rows = evaluated(out)
    _assert_whole(rows, 8, [r for r in kept if r["status"] != "rejected"])
    assert joined.node_id[:12] in {r["node"] for r in rows}


@pytest.mark.cluster
def test_a_killed_driver_resumes_against_the_same_cluster(tmp_path):
    cluster, _ = start_cluster([{"num_cpus": 1}, {"num_cpus": 1}])
    try:
        out = tmp_path / "run"
        args = [*fixed_cost(2.0), "--set", f"cluster.address={cluster.address}", "--set", "search.concurrency=auto",
                "--set", "search.budget=8"]
        args += ["--set", f"cluster.storage=file://{tmp_path / 'shared'}"]
        proc = nas_run(out, *args, wait=False)
        _wait_for(out, proc, 3)
        os.killpg(proc.pid, signal.SIGKILL)         # the driver and its children; the cluster stays up
        proc.wait()
        kept = evaluated(out)
        shutil.rmtree(out)                          # resumed from another machine: only the storage is shared
        done = nas_run(out, *args, "--resume")
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        cluster.shutdown()
    _assert_whole(evaluated(out), 8, kept)


def test_a_gpu_per_trial_on_a_machine_without_one_is_one_line_and_leaves_no_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    done = nas_run(out, *fixed_cost(0.1), "--set", "cluster.gpus_per_trial=1", "--set", "search.budget=2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {RECIPE}: cluster.gpus_per_trial: a trial asks for 1 GPU and this machine "
                           "has 0 in all; no trial could start"), last
    assert not out.exists()


@pytest.mark.parametrize("address, words", [("ray://10.0.0.1:10001", "ray:// (Ray Client) would run Ray Tune's loop"),
                                            ("head-without-port", "expected 'auto' or HOST:PORT")])
def test_addresses_a_run_cannot_use_are_refused_before_connecting(address, words):
    from nas.search import ClusterError, _check_reachable

    with pytest.raises(ClusterError, match=r"^cluster\.address: ") as err:
        _check_reachable(address, timeout=1)
    assert words in str(err.value)
