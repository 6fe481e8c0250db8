"""Cluster benchmark: how a search scales over Ray nodes, and whether the driver's own work per trial stays flat up
to 10,000 finished trials.

    python bench/cluster.py [--nodes 1,2,4] [--seconds 2] [--trials-per-node 8] [--max-trials 10000]
                            [--controllers random,evolution,rl] [--trial-seconds 60] [--out FILE.json] [--quick]

A. Scaling. For each k in `--nodes`, a Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head node with
   no CPUs and k worker nodes of one CPU each, all on loopback) runs `recipes/nb201_tabular.yaml` through
   `python -m nas.run`, exactly as a user would, with `--set cluster.address=...`, random search, concurrency k and
   the ``fixed_cost`` evaluator: each trial sleeps `--seconds`, then looks its accuracy up in the synthetic NB201
   table, so the trials' cost is fixed and two cores can host any k. The budget is `--trials-per-node` x k, so an
   ideal run takes the same time for every k. From the run's `best.json` and `results.csv`: trials per minute over
   Tune's trial phase (`tune_seconds`, worker start-up included) against the ideal 60 k / seconds; the time a worker
   slot spent not evaluating, per trial (tune_seconds x k / trials - mean eval_seconds); the steady-state time per
   trial of one slot (the slope of each node's finish times, from the rows' `node` and `finished_at`, 1 s
   resolution), which leaves worker start-up out; and the driver process's CPU time (`os.wait4`), whose slope over
   the k runs bounds the driver's CPU per trial from above (larger runs also last longer).
B. Driver work per trial, in this process, no Ray: the loop `nas.controllers.tune_adapter.ControllerSearcher`
   runs per trial (`Proposer.next`, `RunLog.complete`, `controller.tell`, `controller.state_dict`,
   `RunLog.checkpoint`) on the NB201 space with the synthetic table as the objective, timed part by part over
   windows of 100 trials ending at 100, 1k, 2.5k, 5k, 7.5k and 10k finished trials. Between windows the loop only
   asks, records and tells (no state_dict, no checkpoint): a full loop with surrogate-steered controllers takes
   ~3.5 min per controller on 2 cores, and skipping what is not measured changes no controller state. Each window
   starts from a fresh snapshot (`RunLog.save`), so its checkpoints are journal appends with a one-trial delta, as
   in a real run. The baseline, in the same run: the naive ledger that rewrites everything per trial, i.e. one
   `RunLog.save` (snapshot of state.json + results.csv) at each mark (median of 3 timings). A snapshot is also
   what the journal costs once per max(64, rows / 2) checkpoints, so the amortised ledger cost = mean append +
   snapshot / max(64, rows / 2). (Checked once against the full loop, checkpointing every trial: evolution's ask,
   state_dict and ledger figures at 10k trials came within 10% of these.)
C. A 64-node projection from A and B (printed, with its assumptions).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.io import atomic_write_json  # noqa: E402

RECIPE = REPO / "recipes" / "nb201_tabular.yaml"
LATENCY = '[{profile: device, source: table, table: "synthetic:nb201", column: latency_ms, max_ms: 0.9}]'
MARKS = (100, 1_000, 2_500, 5_000, 7_500, 10_000)
WINDOW = 100
PROJECTED_NODES = 64
PARTS = {"ask": "ask", "tell": "tell", "state": "state_dict", "ledger_amortised": "ledger"}   # B: what may grow


# ---- A: scaling over Ray nodes -----------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_cluster(workers: int):
    """A loopback Ray cluster: a head with no CPUs (so no trial runs there) and `workers` one-CPU nodes; shut
    down on leaving, errors included."""
    from ray.cluster_utils import Cluster

    logging.getLogger("ray").setLevel(logging.WARNING)   # Cluster announces each new head address at INFO
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def search_command(address: str, workers: int, seconds: float, budget: int, run_dir: Path) -> list[str]:
    """The `nas.run` command line a user would type for this benchmark's search."""
    sets = [f"cluster.address={address}", f"evaluator={{name: fixed_cost, options: {{seconds: {seconds}}}}}",
            f"constraints.latency={LATENCY}", f"search.budget={budget}", f"search.concurrency={workers}",
            "controller={name: random}", "output.export=false", "tracking=none"]
    return [sys.executable, "-m", "nas.run", str(RECIPE), "--output", str(run_dir),
            *(arg for s in sets for arg in ("--set", s))]


def run_search(command: list[str], log_path: Path) -> tuple[float, float]:
    """Run `command` from the repository root; returns (wall seconds, CPU seconds of the process and what it
    waited for). A failed run stops the benchmark with the tail of its output."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"nas.run failed (exit {proc.returncode}):\n  {' '.join(command)}\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def slot_seconds(trials: pd.DataFrame) -> tuple[float, float] | None:
    """Seconds a worker slot takes per trial once running, with its standard error: the slope of each node's finish
    times over its trial count, pooled over the nodes (a node's first finish carries its start-up only in the
    intercept). The residuals' variance is taken as at least that of rounding to whole seconds (`finished_at`'s
    resolution), which perfectly regular trials would otherwise hide. None when no trial names its node (every one
    crashed) or with too few trials per node."""
    if trials["node"].isna().all():
        return None
    when = pd.to_datetime(trials["finished_at"])
    finished = (when - when.min()).dt.total_seconds()
    xs, ys = [], []
    for _, times in finished.groupby(trials["node"]):
        y = np.sort(times.to_numpy())
        xs.append(np.arange(len(y)) - (len(y) - 1) / 2)
        ys.append(y - y.mean())
    x, y = np.concatenate(xs), np.concatenate(ys)
    dof = len(x) - len(xs) - 1
    if x @ x == 0 or dof < 1:
        return None
    slope = float(x @ y / (x @ x))
    variance = max(np.sum((y - slope * x) ** 2) / dof, 1 / 12)   # at least whole-second rounding's variance
    return slope, float(np.sqrt(variance / (x @ x)))


def scaling_figures(run_dir: Path, workers: int, seconds: float) -> dict:
    """Throughput and idle time of one run, from its `best.json` and `results.csv` (see the module)."""
    import json

    summary = json.loads((run_dir / "best.json").read_text())
    rows = pd.read_csv(run_dir / "results.csv")
    trials = rows[rows["status"] != "rejected"]
    n, tune_s = len(trials), summary["timings"]["tune_seconds"]
    eval_mean = float(trials["eval_seconds"].mean())
    rate, ideal = 60 * n / tune_s, 60 * workers / seconds
    used = int(trials["node"].dropna().nunique())
    slot, slot_se = slot_seconds(trials) or (None, None)
    return {"nodes": workers, "trials": n, "rejected_free": int(len(rows) - n), "tune_seconds": tune_s,
            "ray_start_seconds": summary["timings"]["ray_start_seconds"], "wall_seconds": summary["wall_seconds"],
            "eval_seconds_mean": eval_mean, "trials_per_minute": rate, "ideal_per_minute": ideal,
            "efficiency": rate / ideal, "idle_per_trial_seconds": tune_s * workers / n - eval_mean,
            "nodes_used": used, "slot_seconds_per_trial": slot, "slot_standard_error": slot_se,
            "steady_idle_per_trial_seconds": None if slot is None else slot - eval_mean,
            "steady_efficiency": None if slot is None else eval_mean / slot,
            "fixed_seconds": None if slot is None else tune_s - n / used * slot}


def part_a(node_counts: list[int], seconds: float, per_node: int) -> dict:
    """Scaling figures per node count, and the driver's CPU per trial (slope over the runs)."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        for k in node_counts:
            t0 = time.perf_counter()
            with ray_cluster(k) as cluster:
                start_s = time.perf_counter() - t0
                run_dir = Path(tmp) / f"nodes{k}"
                command = search_command(cluster.address, k, seconds, per_node * k, run_dir)
                process_s, cpu_s = run_search(command, Path(tmp) / f"nodes{k}.log")
                row = scaling_figures(run_dir, k, seconds)
            runs.append({**row, "cluster_start_seconds": start_s, "process_seconds": process_s,
                         "driver_cpu_seconds": cpu_s})
            print(f"  {k} node(s): {row['trials']} trials in {row['tune_seconds']:.1f} s", file=sys.stderr)
    trials = [r["trials"] for r in runs]
    slope = (float(np.polyfit(trials, [r["driver_cpu_seconds"] for r in runs], 1)[0])
             if len(set(trials)) > 1 else None)
    return {"seconds": seconds, "trials_per_node": per_node, "runs": runs, "driver_cpu_per_trial_seconds": slope,
            "command": " ".join(command)}


def print_scaling(a: dict) -> None:
    base = a["runs"][0]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    def idle(r):
        v = r["steady_idle_per_trial_seconds"]
        return "-" if v is None else f"{v:+.2f}±{r['slot_standard_error']:.2f}"

    print(f"\nA. Scaling over Ray nodes (loopback cluster on this machine; fixed_cost trials of {a['seconds']:g} s, "
          f"{a['trials_per_node']} per node, random search)")
    print(f"{'nodes':>5} {'trials':>6} {'used':>4} {'tune s':>7} {'trials/min':>10} {'ideal':>6} {'eff':>5} "
          f"{'speed-up':>8} {'idle/trial s':>12} {'slot s':>6} {'st.eff':>6} {'st.idle s':>10} {'fixed s':>7} "
          f"{'cpu s':>6}")
    for r in a["runs"]:
        print(f"{r['nodes']:>5} {r['trials']:>6} {f(r['nodes_used'], 'd'):>4} {r['tune_seconds']:>7.1f} "
              f"{r['trials_per_minute']:>10.1f} {r['ideal_per_minute']:>6.0f} {r['efficiency']:>5.2f} "
              f"{r['trials_per_minute'] / base['trials_per_minute']:>7.2f}x {r['idle_per_trial_seconds']:>12.2f} "
              f"{f(r['slot_seconds_per_trial'], '.2f'):>6} {f(r['steady_efficiency'], '.2f'):>6} {idle(r):>10} "
              f"{f(r['fixed_seconds'], '.1f'):>7} {r['driver_cpu_seconds']:>6.1f}")
    print("eff = trials/min over ideal (60 x nodes / seconds); speed-up = trials/min against the first row; "
          "idle/trial = tune_seconds x nodes / trials - mean eval_seconds (worker start-up included); used = "
          "distinct Ray nodes in results.csv; slot = seconds per trial on one node once "
          "running (slope of its finish times, 1 s resolution, pooled); st.eff = mean eval_seconds / slot; "
          "st.idle = slot - mean eval_seconds, with the slope's standard error; fixed = tune_seconds - trials / used "
          "x slot (start-up and tail); cpu = the nas.run process's CPU time")
    if a["driver_cpu_per_trial_seconds"] is not None and a["driver_cpu_per_trial_seconds"] <= 0:
        print(f"driver CPU per trial: not resolved (the slope over the runs is "
              f"{a['driver_cpu_per_trial_seconds'] * 1e3:.0f} ms: start-up costs varied more than the trials added)")
    elif a["driver_cpu_per_trial_seconds"] is not None:
        print(f"driver CPU per trial (slope of cpu s over trials; an upper bound: larger runs also last longer, and "
              f"Tune's polling costs CPU per second): {a['driver_cpu_per_trial_seconds'] * 1e3:.0f} ms")


# ---- B: the driver's own work per trial ----------------------------------------------------------------------------
class DriverLoop:
    """The per-trial loop of `ControllerSearcher` on NB201 with the synthetic table as the objective, in-process."""

    def __init__(self, controller_name: str, run_dir: Path):
        from nas.controllers import make_controller
        from nas.controllers.proposer import Proposer
        from nas.evaluation import make_evaluator
        from nas.results import RunLog
        from search_spaces import get_space

        self.space = get_space("nb201", num_classes=10)
        self.controller = make_controller(controller_name, self.space, {}, seed=0)
        self.evaluator = make_evaluator("tabular", {"path": "synthetic:nb201"})
        self.ledger = RunLog(run_dir, profiles=["device"])
        self.ledger.save()
        self.proposer = Proposer(self.controller, self.ledger, lambda arch: (None, {"flops": 1, "params": 1}))
        self.done = 0

    def step(self, checkpoint: bool) -> dict[str, float | bool]:
        """One trial; with `checkpoint`, also the state_dict and ledger checkpoint. Returns each part's seconds
        (and whether the checkpoint was a snapshot)."""
        t = [time.perf_counter()]
        string, asked = self.proposer.next()
        t.append(time.perf_counter())
        acc = self.evaluator.estimate(string)["accuracy"]
        t.append(time.perf_counter())
        row = self.ledger.complete(string, f"t{self.done}", {"status": "ok", "accuracy": acc, "flops": 1,
                                                              "params": 1, "feasible": True}, False)
        t.append(time.perf_counter())
        self.controller.tell(asked, row)
        t.append(time.perf_counter())
        self.done += 1
        parts = {"ask": t[1] - t[0], "record": t[3] - t[2], "tell": t[4] - t[3]}
        if checkpoint:
            state = self.controller.state_dict()
            t.append(time.perf_counter())
            self.ledger.checkpoint(state, [])
            t.append(time.perf_counter())
            parts.update(state=t[5] - t[4], checkpoint=t[6] - t[5],
                         snapshot=not self.ledger.journal_path.exists())   # a snapshot removes the journal
        return parts

    def snapshot_seconds(self, repeats: int = 3) -> float:
        """One full rewrite (what a naive ledger does per trial: state.json + results.csv), the median of
        `repeats` timings: a single one can catch a pause of the disk or the garbage collector."""
        state = self.controller.state_dict()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.ledger.save(state, [])
            times.append(time.perf_counter() - t0)
        return float(np.median(times))


def window_figures(steps: list[dict], rows: int, snapshot_s: float) -> dict:
    """Mean seconds per part over a window, the ledger's mean / max / amortised cost, and the naive baseline."""
    from nas.results import RunLog

    mean = {k: float(np.mean([s[k] for s in steps])) for k in ("ask", "tell", "record", "state")}
    ckpt = np.array([s["checkpoint"] for s in steps])
    appends = np.array([s["record"] + s["checkpoint"] for s in steps if not s["snapshot"]])
    amortised = float(appends.mean()) + snapshot_s / max(RunLog.MIN_JOURNAL, rows // 2)
    total = mean["ask"] + mean["tell"] + mean["state"] + amortised
    return {**mean, "checkpoint_mean": float(ckpt.mean()), "checkpoint_max": float(ckpt.max()),
            "snapshots_in_window": int(sum(s["snapshot"] for s in steps)), "ledger_amortised": amortised,
            "naive_ledger": mean["record"] + snapshot_s, "naive_ratio": (mean["record"] + snapshot_s) / amortised,
            "driver_per_trial": total}


def driver_work(controller_name: str, marks: list[int]) -> dict:
    """Window figures at each mark for one controller; stops early (and says where) if the space runs dry."""
    from nas.controllers.proposer import SpaceExhausted

    out: dict = {"controller": controller_name, "windows": {}, "stopped_at": None}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cluster-bench-ledger-") as tmp:
        loop = DriverLoop(controller_name, Path(tmp))
        try:
            for mark in marks:
                while loop.done < mark - WINDOW:
                    loop.step(checkpoint=False)
                loop.ledger.save(loop.controller.state_dict(), [])   # the window starts from a fresh snapshot
                steps = [loop.step(checkpoint=True) for _ in range(mark - loop.done)]
                out["windows"][mark] = window_figures(steps, loop.done, loop.snapshot_seconds())
        except SpaceExhausted as err:
            out["stopped_at"] = loop.done
            print(f"  {controller_name}: stopped after {loop.done} trials: {err}", file=sys.stderr)
    out["seconds"] = time.perf_counter() - t0
    print(f"  {controller_name}: {loop.done} trials in {out['seconds']:.0f} s", file=sys.stderr)
    return out


def growth(windows: dict) -> tuple[int, list[str]]:
    """The reference mark (1,000 finished trials, past the controllers' warm-up; else the first) and the parts whose
    time per trial at the last mark is over twice theirs there (and 0.1 ms more): work that grows with the trials."""
    ref = 1_000 if 1_000 in windows else next(iter(windows))
    first, last = windows[ref], list(windows.values())[-1]
    grown = [f"{name} {last[k] / first[k]:.1f}x" for k, name in PARTS.items()
             if last[k] > 2 * first[k] and last[k] - first[k] > 1e-4]
    return ref, grown


def print_driver(results: list[dict]) -> None:
    print(f"\nB. Driver work per trial vs finished trials (in-process, NB201, mean over the {WINDOW} trials before "
          "each mark; ms)")
    for res in results:
        stop = f" (stopped after {res['stopped_at']} trials: space exhausted)" if res["stopped_at"] else ""
        print(f"\n{res['controller']}{stop}")
        if not res["windows"]:
            continue
        ref, grown = growth(res["windows"])
        print(f"{'trials':>7} {'ask':>7} {'tell':>7} {'state':>7} {'ckpt':>7} {'ckpt max':>8} {'snaps':>5} "
              f"{'ledger am.':>10} {'total':>7} {'vs ' + format(ref, ','):>8} {'naive':>7} {'naive/am.':>9}")
        for mark, w in res["windows"].items():
            print(f"{mark:>7} {w['ask'] * 1e3:>7.2f} {w['tell'] * 1e3:>7.2f} {w['state'] * 1e3:>7.2f} "
                  f"{w['checkpoint_mean'] * 1e3:>7.2f} {w['checkpoint_max'] * 1e3:>8.2f} "
                  f"{w['snapshots_in_window']:>5} {w['ledger_amortised'] * 1e3:>10.2f} "
                  f"{w['driver_per_trial'] * 1e3:>7.2f} "
                  f"{w['driver_per_trial'] / res['windows'][ref]['driver_per_trial']:>7.1f}x "
                  f"{w['naive_ledger'] * 1e3:>7.1f} {w['naive_ratio']:>8.1f}x")
        last = list(res["windows"])[-1]
        print(f"grows from {ref:,} to {last:,} trials: {', '.join(grown)}" if grown else
              f"flat from {ref:,} to {last:,} trials (no part over 2x)")
    print("ask = Proposer.next (retries on known archs included); state = controller.state_dict; ckpt = "
          "RunLog.checkpoint, mean and max in the window (snaps: snapshots among them); ledger am. = complete + "
          "mean journal append + snapshot / max(64, rows/2); total = ask + tell + state + ledger am.; naive = "
          "complete + a full RunLog.save at the mark (median of 3), over ledger am.")


# ---- C: the projection ---------------------------------------------------------------------------------------------
def projection(a: dict | None, b: list[dict], trial_seconds: float) -> list[str]:
    """What a 64-node run with trials of `trial_seconds` would spend where, extrapolated from A and B."""
    rate = PROJECTED_NODES / trial_seconds
    lines = [f"C. Projection: {PROJECTED_NODES} nodes, one trial each at a time, trials of {trial_seconds:g} s -> "
             f"the driver handles {rate:.2f} trials/s."]
    for res in (r for r in b if r["windows"]):
        mark, w = list(res["windows"].items())[-1]
        per = w["driver_per_trial"]
        lines.append(f"- {res['controller']}: {per * 1e3:.1f} ms of driver work per trial at {mark:,} finished "
                     f"trials (B) -> {per * rate:.1%} of one driver core; the driver would saturate one core with "
                     f"trials of {per * PROJECTED_NODES:.2f} s or less.")
    if a is not None:
        cpu = a["driver_cpu_per_trial_seconds"]
        if cpu is not None and cpu > 0:   # a slope at or below zero resolves nothing (print_scaling says so)
            lines.append(f"- Ray Tune and nas.run together (A, random search; driver CPU slope, an upper bound): "
                         f"{cpu * 1e3:.0f} ms per trial -> {cpu * rate:.1%} of one core, before the controller's "
                         "own work above.")
        last = a["runs"][-1]
        idle, fixed = last["steady_idle_per_trial_seconds"], last["fixed_seconds"]
        if idle is not None:
            bound = max(idle + 2 * last["slot_standard_error"], 0)   # what the data do not rule out
            lines.append(f"- Worker idle time (A, {last['nodes']} nodes, steady state): {idle:+.2f} s per trial "
                         f"(+2 standard errors: {bound:.2f} s) -> at most {bound / (trial_seconds + bound):.1%} "
                         f"of each worker's time at {trial_seconds:g} s trials; plus a fixed {fixed:.0f} s per run "
                         "(worker start-up and tail), "
                         f"{fixed / (fixed + 10_000 / PROJECTED_NODES * trial_seconds):.1%} of a 10,000-trial run.")
        lines.append(f"- Whole trial phase in A at {last['nodes']} nodes: {last['idle_per_trial_seconds']:.2f} s idle "
                     f"per trial over {last['trials']} trials; {last['nodes_used'] or '-'} of {last['nodes']} nodes "
                     "ran trials.")
    nodes = f"at most {a['runs'][-1]['nodes']} nodes" if a else "no Ray nodes (part A was skipped)"
    lines.append("These are extrapolations from figures measured on one 2-core machine: the nodes were processes "
                 "on loopback (no network latency, no shared file system, worker start-up competing for the same "
                 f"2 cores), {nodes}; a real 64-node run adds network round trips per trial and Tune's scheduling "
                 "over 64 nodes, which nothing here measured.")
    return lines


# ---- the command line ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="1,2,4", help="worker node counts for part A (comma-separated; '' skips A)")
    ap.add_argument("--seconds", type=float, default=2.0, help="A: each trial's fixed cost (a sleep)")
    ap.add_argument("--trials-per-node", type=int, default=8, help="A: budget = this x the node count")
    ap.add_argument("--max-trials", type=int, default=10_000, help="B: finished trials to go up to (0 skips B)")
    ap.add_argument("--controllers", default="random,evolution,rl", help="B: controllers (default options)")
    ap.add_argument("--trial-seconds", type=float, default=60.0, help="C: trial length of the projected run")
    ap.add_argument("--quick", action="store_true", help="smoke run: nodes 1,2, 4 trials per node, max-trials 1000")
    ap.add_argument("--out", type=Path, default=None, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.trials_per_node, args.max_trials = "1,2", 4, 1_000
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.out is not None:
        from core.io import check_output

        check_output(args.out, "--out")
    node_counts = [int(k) for k in args.nodes.split(",") if k.strip()]
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    t0 = time.perf_counter()
    if node_counts:
        out["scaling"] = part_a(node_counts, args.seconds, args.trials_per_node)
    if args.max_trials > 0:
        marks = [m for m in MARKS if m < args.max_trials] + [args.max_trials]
        out["driver"] = [driver_work(name, marks) for name in args.controllers.split(",")]
    out["seconds"] = time.perf_counter() - t0
    if "scaling" in out:
        print_scaling(out["scaling"])
        print(f"command (per node count k): {out['scaling']['command']}")
    if "driver" in out:
        print_driver(out["driver"])
        out["projection"] = projection(out.get("scaling"), out["driver"], args.trial_seconds)
        print("\n" + "\n".join(out["projection"]))
    print(f"\n({out['seconds']:.0f} s)")
    if args.out is not None:
        atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
