"""Compression-aware search (issue 21): an fp32 search whose winner is quantized afterwards, against a search that
scores every candidate after int8 quantization (``compression: int8``) and one that searches the precision of each
unit (``compression: search``); same recipe, budget, seed and limits.

    python bench/compression.py [--recipe recipes/quickstart.yaml] [--seeds 0,1] [--budget 20] [--sampled 20]
        [--arms none,int8,search[,matched][,unrepaired][,lowest]] [--repair dominated|fit|none] [--matched-ratio 1]
        [--precisions fp32,int8] [--held-out]
        [--keep 1,0.75,0.5] [--set FIELD=VALUE ...] [--threads 1] [--no-cpu] [--pt2e] [--qat EPOCHS]
        [--block-tables FP32,INT8] [--work DIR] [--out FILE.json]
    python bench/compression.py --pool A.json,B.json    # the paired figures over the seeds of several runs

1. Per seed, three searches (`python -m nas.run RECIPE` with ``--set``): (a) ``compression: none``, its winner
   quantized afterwards exactly as `nas.compression` quantizes (same calibration images); (b) ``compression:
   int8``; (c) ``compression: search`` with ``space.options.compression: {precisions: [fp32, int8]}``
   (`--precisions`; ``int8,int4`` under an FPGA limit), a precision per unit in the genotype
   (`search_spaces.policy`), and with `--keep` a keep ratio per unit too (structured pruning of the expansion
   channels: each pruned candidate trained dense, pruned, fine-tuned, within one network's training budget), its
   latency limit on the network as it ships. With ``matched`` in `--arms` (after ``none``), (c') is (c) again
   under a limit equal to (a)'s winner as it ships: its int8 latency measured here before the search, on
   `local-cpu` (`local-cpu-2t` with `--threads 2`), or with `--no-cpu` (a simulator's limit) the search's own
   figure of it on the recipe's first latency profile: accuracy at equal latency, the issue's other goal.
   `--matched-ratio 0.7` puts that limit at 0.7x (a)'s latency instead: whether (c') reaches (a)'s accuracy
   there is the issue's first goal, asked of the search directly (a search for the most accurate network under a
   limit is not asked to be fast, so (c) at (a)'s own limit ends near it). With
   ``unrepaired``, (c0) is (c) with ``search.repair: none``: every proposal searched as the controller drew it,
   where (c) undoes a unit's compression that the search's own latency figures price at no gain
   (`nas.compression.undo_dominated`); `--repair fit` makes (c) and (c') also compress a proposal over the limit
   until it meets it (`nas.compression.fit_limits`). With ``lowest`` (after ``none``), (a') is (a)'s winner with
   every unit in the most compressed of `--precisions` (`lowest_everywhere`: int4 under ``int8,int4``), nothing
   searched or trained again: the compression a user without a policy search would try next.
2. Each winner: accuracy after quantization, fp32 accuracy, FLOPs, for a policy winner its compressed units and
   how many of them pay (`compressed_units`: "4-bit where it pays" on an FPGA), the search's latency figure per
   profile, and
   its latency on this CPU measured now with onnxruntime (`--threads`), fp32 (``model.onnx``) against int8 (QDQ;
   for (c) the graph as it ships: its int8 units quantized, the rest fp32), batch 1, in interleaved rounds.
   With `--pt2e`, the whole-network int8 winners ((a), (b)) are also quantized by PyTorch's PT2E flow (the
   recipe's ``quantizer: pt2e``: torchao, same calibration) and scored in PyTorch: the two int8 engines' accuracy
   on the same trained network. With `--qat EPOCHS`, the same winners are also fine-tuned quantization-aware for
   EPOCHS in that flow (the evaluator's ``qat_epochs``: fake-quantize nodes, its own training loop, a tenth of its
   learning rate) and scored int8; beside it, the control: the fp32 winner trained for the same extra EPOCHS at
   the same rate, then quantized post-training by PT2E, so that what quantization-aware training adds is told
   apart from what more training adds.
   With `--held-out` (and ``evaluator.options.limit`` below MNIST-5k's 5,000 images), each winner as it ships is
   also scored on the images that limit leaves out, which no search trained or validated on
   (`held_out_scores`): the search's own accuracy is what it picked its winner by, so it flatters every winner.
3. `--sampled` networks drawn from the recipe's space, fp32 against int8 latency the same way: how often int8 is
   slower than fp32 on this CPU (the reason to measure rather than assume); with `--block-tables`, the same per
   block type from two measured profiles of one space (``--precision int8`` and fp32 tables).
4. Paired over the seeds (`paired`): per arm against (a), the accuracy difference after compression (held out where
   measured) seed by seed, its mean with a 95 % t-interval and the seeds won, tied and lost, beside the latency
   ratio as shipped (geometric mean and range). One seed's two searches differ by a point or more on this proxy
   through which networks each happens to draw, so a mean over a few seeds says little without its interval.
   `--pool A.json,B.json` prints these figures over the seeds of several runs' ``--out`` files (each seed's arms
   measured together in its run; a seed in two files is refused).

The accuracy is the evaluator's (the recipe's proxy training on its dataset; the quickstart: MNIST-5k, one epoch),
on validation images no search trained on. Note that on a CPU profile the recipe's latency limit holds the fp32
network in (a) and (b), and the network as shipped in (c); an FPGA simulator prices every network at its weight
width (int8 in (a) and (b)).
"""
from __future__ import annotations

import argparse
import json
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


# The arms: the recipe's compression and its label.
ARMS = {"none": "(a) fp32 search, then int8", "int8": "(b) int8 search", "search": "(c) policy search",
        "matched": "(c') policy search at (a)'s int8 ms", "unrepaired": "(c0) policy search, repair: none",
        "lowest": "(a') fp32 search, then {lowest} everywhere"}
POLICY_ARMS = ("search", "matched", "unrepaired", "lowest")   # the arms whose winners carry a compression policy


def run_search(recipe: Path, run_dir: Path, compression: str, seed: int, budget: int,
               sets: tuple[str, ...] = (), precisions: str = "fp32,int8", keep: str = "1") -> dict:
    """One search (kept: a finished run folder is read back, not searched again), with the recipe overrides `sets`
    (``--set``) beside the arm's (arm c: the policy's `precisions` and `keep` ratios); its best.json."""
    if not (run_dir / "best.json").is_file():
        policy = ((f"space.options.compression={{precisions: [{', '.join(precisions.split(','))}], "
                   f"keep: [{', '.join(keep.split(','))}]}}",) if compression == "search" else ())
        cmd = [sys.executable, "-m", "nas.run", str(recipe), "--output", str(run_dir),
               *sum((["--set", o] for o in (f"compression={compression}", f"search.seed={seed}",
                                             f"search.budget={budget}", "tracking=none", *sets, *policy)), [])]
        if (run_dir / "state.json").is_file():
            cmd.append("--resume")
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "best.json").read_text())


def winner(run_dir: Path):
    """(run context, trained fp32 model, its input shape) of a run's exported best network."""
    from nas.context import RunContext
    from nas.export import load_weights
    from nas.recipe import read_recipe
    from nas.trial import build_seeded

    ctx = RunContext(read_recipe(run_dir / "recipe.yaml"))
    arch = (run_dir / "best" / "arch.txt").read_text().strip()
    genotype = ctx.space.decode(arch)
    model = build_seeded(ctx.space, genotype, ctx.recipe.search.seed)
    load_weights(model, run_dir / "best" / "weights.safetensors")
    return ctx, model.eval(), tuple(ctx.space.input_shape(genotype))


def lowest_everywhere(seed_a: tuple, recipe: Path, run_dir: Path, precisions: str, threads: int) -> tuple:
    """Arm (a'): (a)'s winner `seed_a` (run context, trained model, input shape, best.json's ``best``) with every
    unit in the most compressed of `precisions` (int4 under ``int8,int4``), the compression a user without a
    policy search would try next; nothing searched or trained again. Its context is (a)'s recipe as a policy
    search's (``compression: search`` with these precisions; `recipe`: (a)'s run's ``recipe.yaml``), opened in
    `run_dir`, so the run's cheap latency sources price the policy as they price (c)'s. Returns (that context, the
    marked model, the input shape, a best-like dict: ``arch`` as a policy string, the int8 scores, ``flops`` and
    the latency figures)."""
    import copy

    from nas.compression import int8_scores
    from nas.context import RunContext
    from nas.recipe import read_recipe

    _, model_a, shape, best_a = seed_a
    choices = precisions.split(",")
    ctx = RunContext(read_recipe(recipe, [
        "compression=search", f"space.options.compression={{precisions: [{', '.join(choices)}]}}"]))
    ctx.open(run_dir, log=lambda *a, **k: None)
    space = ctx.space
    policy = space.decode(f"{best_a['arch']}@{','.join([space.most_compressed] * len(space.units))}")
    model = space.mark(copy.deepcopy(model_a), policy)
    scores = int8_scores(model, ctx.evaluator, shape, best_a["accuracy"], threads)   # (a)'s search ran in fp32
    _, fields = ctx.precheck(policy)
    best = {"arch": space.to_string(policy), "flops": best_a["flops"], **scores,
            **{k: v for k, v in fields.items() if k.startswith("latency_")}}
    return ctx, model, shape, best


def compressed_units(ctx, run_dir: Path, arch: str) -> tuple[int, int]:
    """(compressed, paying) of a policy winner `arch`: how many of its units run below the least compressed
    precision of the choices or keep less than all their width (a unit doing both counts twice), and how many of
    those pay: undoing that one compression raises one of the run's own cheap cost figures (latency, energy,
    memory; `nas.compression` prices alike). On an FPGA profile, "4-bit where it pays" is every int4 unit paying."""
    from nas.compression import cost_figures, undo_steps

    if ctx.run_dir != Path(run_dir):   # arm (a')'s context is open there already (`lowest_everywhere`)
        ctx.open(run_dir, log=lambda *a, **k: None)
    space, policy = ctx.space, ctx.space.decode(arch)
    now = cost_figures(ctx.precheck(policy)[1])
    compressed = paying = 0
    for unit in range(len(space.units)):
        for step in undo_steps(space):
            other = space.with_unit(policy, unit, **step)
            if other is not None:
                costs = cost_figures(ctx.precheck(other)[1])
                compressed += 1
                paying += any(costs.get(k, -np.inf) > v for k, v in now.items())
    return compressed, paying


def matched_limit(run_dir: Path, seed_a: tuple | None, threads: int, ratio: float = 1.0,
                  no_cpu: bool = False) -> str:
    """The latency constraint of arm (c'): `ratio` times (a)'s winner `seed_a` (run context, model, input shape,
    best.json's ``best``) as it ships: its int8 latency measured here on the live profile of `threads`, or with
    `no_cpu` (a simulator's limit) (a)'s own figure on its recipe's first latency profile, priced the same way
    (``source`` kept). A run folder that has one already keeps it (a resumed search must keep its recipe, and
    the measurement would differ a little)."""
    import yaml

    saved = run_dir / "recipe.yaml"
    if saved.is_file():
        lat = yaml.safe_load(saved.read_text())["constraints"]["latency"][0]
        return f"{{profile: {lat['profile']}, max_ms: {lat['max_ms']}, source: {lat.get('source', 'predictor')}}}"
    if seed_a is None:
        raise SystemExit("--arms: matched needs arm none before it (its limit is (a)'s int8 latency)")
    if no_cpu:
        first = seed_a[0].recipe.constraints.latency[0]
        a_ms = float(seed_a[3][f"latency_{first.profile}"])
        return f"{{profile: {first.profile}, max_ms: {ratio * a_ms:.4f}, source: {first.source}}}"
    if threads not in (1, 2):
        raise SystemExit("--arms matched: --threads must be 1 or 2 (the live profiles local-cpu, local-cpu-2t)")
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-int8-") as tmp:
        a_ms = float(latency_pairs([seed_a[1:3]], calibration_of(seed_a[0]), threads, Path(tmp))[0, 1])
    return f"{{profile: {'local-cpu' if threads == 1 else 'local-cpu-2t'}, max_ms: {ratio * a_ms:.4f}}}"


def held_out_scores(ctx, model, shape: tuple, threads: int) -> dict[str, float]:
    """A winner scored on images its search never trained or validated on (`nas.compression.held_out_scores`: the
    evaluator's `held_out`, e.g. MNIST-5k's images its ``limit`` leaves out): int8 as it ships (all of it, or its
    policy's units, 4-bit weights rounded, exactly as the search scored it) and fp32 (the trained network in
    PyTorch). The search's own accuracy is the figure it picked its winner by, so it flatters the winner; an arm
    that scores more candidates near the top (a policy search scores several policies of one trained network) is
    flattered more.

    Raises:
        ValueError: the evaluator's data has no held-out images (e.g. MNIST-5k without a ``limit`` below 5,000).
    """
    from nas.compression import held_out_scores as scores_of

    scores = scores_of(model, ctx.evaluator, shape, compression="int8", threads=threads)
    if scores is None:
        raise ValueError(no_held_out(ctx.evaluator.options))
    return {"held-out int8 accuracy": scores["accuracy"], "held-out fp32 accuracy": scores["accuracy_fp32"],
            "held-out images": scores["images"]}


def check_held_out(recipe: Path, sets: tuple[str, ...]) -> None:
    """`--held-out` refused before any search runs when the recipe's evaluator (with the ``--set`` overrides) has no
    held-out images, rather than after the searches (`held_out_scores`)."""
    from nas.context import RunContext
    from nas.recipe import read_recipe

    evaluator = RunContext(read_recipe(recipe, list(sets))).evaluator
    if evaluator.held_out(8) is None:
        raise SystemExit(f"{recipe}: {no_held_out(evaluator.options)}")


def no_held_out(options) -> str:
    """The error of `--held-out` where the evaluator with these options has no held-out images."""
    return (f"--held-out: evaluator.options {getattr(options, 'dataset', '')} with limit "
            f"{getattr(options, 'limit', None)} leaves no image out (MNIST-5k: --set evaluator.options.limit below "
            "5000; an image folder: add a test/ folder)")


def held_columns(held_out: bool) -> list[str]:
    """The row's held-out columns (`held_out_scores`), if asked for."""
    return ["held-out int8 accuracy", "held-out fp32 accuracy", "held-out images"] if held_out else []


def qat_columns(epochs: float | None) -> list[str]:
    """The columns `--qat` adds (none without it)."""
    return [] if not epochs else [f"qat int8 accuracy (+{epochs:g} ep)", f"+{epochs:g} ep fp32, pt2e int8 accuracy",
                                  f"+{epochs:g} ep fp32 accuracy"]


def qat_scores(ctx, model, shape: tuple, fp32_accuracy: float, epochs: float, compression: str) -> dict:
    """`--qat`: PT2E int8 accuracy of `model` after `epochs` of quantization-aware fine-tuning, and of the
    control (`epochs` more fp32 training at the same rate, then PT2E post-training quantization), with the
    control's fp32 accuracy (`qat_columns`); NaN for a policy winner (its int8 units are scored with
    onnxruntime)."""
    import copy

    from nas.compression import int8_scores

    names = qat_columns(epochs)
    if compression == "search":
        return dict.fromkeys(names, np.nan)
    ev = ctx.evaluator
    tuned = type(ev)(ev.options.model_copy(update={"qat_epochs": epochs}), ev.seed)
    qat = int8_scores(model, tuned, shape, fp32_accuracy, quantizer="pt2e")["accuracy"]
    longer = copy.deepcopy(model)
    more = tuned.fine_tune_quantized(longer, shape[-1])   # the same schedule on the fp32 network
    ptq = int8_scores(longer.eval(), ev, shape, more["accuracy"], quantizer="pt2e")["accuracy"]
    return dict(zip(names, (qat, ptq, more["accuracy"])))


def calibration_of(ctx):
    """The calibration images of a run's evaluator (at the space's resolution)."""
    return ctx.evaluator.quantization_data(ctx.space.input_shape(ctx.space.smallest())[-1])[0]


def latency_pairs(models: list[tuple], calibration, threads: int, folder: Path) -> np.ndarray:
    """(fp32 ms, int8 ms) of every (model, input shape), batch 1, all timed in the same interleaved rounds (the
    smallest round median)."""
    from core.timing import measure_interleaved
    from nas.compression import quantize_int8

    paths, shapes = [], []
    for i, (model, shape) in enumerate(models):
        fp32, int8 = quantize_int8(model, calibration, shape, folder / str(i), batch=1)
        paths += [fp32, int8]
        shapes += [(1, *shape[1:])] * 2
    ms = measure_interleaved(paths, shapes, threads=threads, rounds=5, repeats=30).min(axis=1)
    return ms.reshape(-1, 2)


def _tables(fp32_ref: str, int8_ref: str, which: str, key: str) -> pd.DataFrame:
    """fp32 and int8 medians (ms) of the rows two measured profiles share, from their `which` table."""
    from hardware_profiles import get_profile

    fp32, int8 = (get_profile(r).table(which).set_index(key)["median_ms"] for r in (fp32_ref, int8_ref))
    both = pd.DataFrame({"fp32": fp32, "int8": int8}).dropna()
    if both.empty and which == "blocks":
        raise SystemExit(f"--block-tables: {fp32_ref} and {int8_ref} share no block")
    both["ratio"] = both["int8"] / both["fp32"]
    return both


def block_ratios(fp32_ref: str, int8_ref: str) -> pd.DataFrame:
    """int8 against fp32 latency per block type (kind, kernel, expansion: ``ir_k5_e6``) from two measured profiles
    of one space (`--block-tables`): blocks, how many are slower in int8, the median and range of int8 / fp32."""
    both = _tables(fp32_ref, int8_ref, "blocks", "key")
    parts = both.index.str.split("_")
    both["block type"] = [f"{p[0]}_{p[1]}_{p[3]}" for p in parts]
    return both.groupby("block type").agg(blocks=("ratio", "size"), slower=("ratio", lambda r: int((r > 1).sum())),
                                          median=("ratio", "median"), low=("ratio", "min"),
                                          high=("ratio", "max")).reset_index()


def resolution_ratios(fp32_ref: str, int8_ref: str) -> pd.DataFrame:
    """The same blocks grouped by the side of their input (the ``_iCxHxW_`` of a block key): summed fp32 and int8
    ms and their ratio, where int8 pays and where its quantize/dequantize steps cost more than it saves."""
    both = _tables(fp32_ref, int8_ref, "blocks", "key")
    both["input side"] = both.index.str.extract(r"_i\d+x(\d+)x\d+", expand=False).astype(int).to_numpy()
    out = both.groupby("input side").agg(blocks=("ratio", "size"), fp32_ms=("fp32", "sum"), int8_ms=("int8", "sum"))
    out["int8 / fp32"] = out["int8_ms"] / out["fp32_ms"]
    return out.reset_index().rename(columns={"fp32_ms": "fp32 ms (sum)", "int8_ms": "int8 ms (sum)"})


def network_ratios(fp32_ref: str, int8_ref: str) -> np.ndarray:
    """int8 / fp32 of the whole networks both profiles timed (same architecture strings)."""
    return _tables(fp32_ref, int8_ref, "networks", "arch")["ratio"].to_numpy()


def print_blocks(block_tables: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Print int8 against fp32 per block type, by input side and over whole networks, from two measured profiles
    (``FP32,INT8``, `--block-tables`); returns those three (`block_ratios`, `resolution_ratios`,
    `network_ratios`)."""
    refs = block_tables.split(",", 1)
    blocks, sides, nets = block_ratios(*refs), resolution_ratios(*refs), network_ratios(*refs)
    print(f"\nint8 / fp32 per block type, {block_tables} (measured tables; slower: ratio > 1)\n")
    print(markdown(blocks))
    print("\nby the side of a block's input (summed over the blocks)\n")
    print(markdown(sides))
    if len(nets):
        print(f"\nwhole networks both tables timed: int8 slower on {int((nets > 1).sum())} of {len(nets)}; "
              f"int8 / fp32 median x{np.median(nets):.3f}, range x{nets.min():.3f}-x{nets.max():.3f}")
    return blocks, sides, nets


def paired(df: pd.DataFrame) -> list[str]:
    """Each arm against the first (a) over the seeds both ran: the accuracy difference after compression (held out
    where the rows have it) with its mean, 95 % t-interval and seeds won / tied / lost, and the latency ratio as
    shipped on this CPU (geometric mean and range), as printable lines."""
    from scipy.stats import t as student

    acc = "held-out int8 accuracy" if df.get("held-out int8 accuracy", pd.Series(dtype=float)).notna().any() \
        else "int8 accuracy"
    arms = list(dict.fromkeys(df["arm"]))
    table = df.pivot(index="seed", columns="arm")
    lines = [f"paired over seeds, {acc} (difference against {arms[0]}; 95 % t-interval over the seeds):"]
    for arm in arms[1:]:
        both = table[[(acc, arms[0]), (acc, arm)]].dropna()
        diff = (both[(acc, arm)] - both[(acc, arms[0])]).to_numpy(dtype=float)
        n = len(diff)
        if n == 0:
            continue
        half = float(student.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        line = (f"  {arm}: {n} seeds, {diff.mean():+.4f} ({diff.mean() - half:+.4f} to {diff.mean() + half:+.4f}); "
                f"won {int((diff > 0).sum())}, tied {int((diff == 0).sum())}, lost {int((diff < 0).sum())}")
        if "int8 ms" in df.columns:
            ms = table[[("int8 ms", arms[0]), ("int8 ms", arm)]].loc[both.index].to_numpy(dtype=float)
            ratio = ms[:, 1] / ms[:, 0]
            if np.isfinite(ratio).all():
                line += (f"; latency as shipped x{np.exp(np.log(ratio).mean()):.3f} (x{ratio.min():.3f}-"
                         f"x{ratio.max():.3f})")
        lines.append(line)
    return lines


def pool(files: list[str]) -> pd.DataFrame:
    """The rows of several runs' ``--out`` files, one table (`SystemExit` 2 for a seed's arm in two files)."""
    frames = []
    for name in files:
        try:
            rows = json.loads(Path(name).read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"compression: --pool: {name}: not a bench/compression.py --out file ({err})", file=sys.stderr)
            raise SystemExit(2) from None
        frames.append(pd.DataFrame(rows).assign(file=name))
    df = pd.concat(frames, ignore_index=True)
    twice = df[df.duplicated(["seed", "arm"], keep=False)]
    if len(twice):
        row = twice.iloc[0]
        print(f"compression: --pool: seed {row['seed']}, {row['arm']} is in {', '.join(twice['file'].unique())}; "
              "pool runs of different seeds", file=sys.stderr)
        raise SystemExit(2)
    return df


def markdown(df: pd.DataFrame) -> str:
    """`df` as a Markdown table (numbers to 4 decimals)."""
    cells = [["-" if v is pd.NA else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
             for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "recipes" / "quickstart.yaml"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--arms", default="none,int8,search",
                   help="which of (a) none, (b) int8, (c) search, (c') matched, (c0) unrepaired, (a') lowest to run; "
                   "'' runs none (only --block-tables)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a recipe override for every arm (as nas.run --set), e.g. the latency limit")
    p.add_argument("--precisions", default="fp32,int8", help="the choices of arm (c)'s policy, e.g. int8,int4 "
                   "under an FPGA limit")
    p.add_argument("--keep", default="1", help="the keep ratios of arm (c)'s policy (structured pruning), e.g. "
                   "1,0.75,0.5; 1 alone: no pruning")
    p.add_argument("--repair", default="dominated", choices=["dominated", "fit", "none"],
                   help="search.repair of arms (c) and (c'); (c0) unrepaired is always none")
    p.add_argument("--matched-ratio", type=float, default=1.0, help="arm (c')'s limit as a multiple of (a)'s "
                   "winner's latency as shipped, e.g. 0.7: the issue's goal of (a)'s accuracy at 0.7x its latency")
    p.add_argument("--sampled", type=int, default=20, help="networks of the space timed fp32 against int8")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-cpu", action="store_true", help="time nothing on this CPU: the profiles' figures only "
                   "(e.g. under an FPGA simulator's limit)")
    p.add_argument("--block-tables", metavar="FP32,INT8", help="two measured profiles of one space, e.g. "
                   "x86-ort-t1-macro,x86-ort-int8-t1-macro: int8 against fp32 latency per block type")
    p.add_argument("--pt2e", action="store_true", help="also score each whole-network int8 winner ((a), (b)) with "
                   "PyTorch's PT2E quantizer (quantizer: pt2e; needs torchao): the two int8 engines side by side")
    p.add_argument("--qat", type=float, metavar="EPOCHS", help="also fine-tune each whole-network int8 winner "
                   "quantization-aware for EPOCHS (PT2E) and score it int8, beside the control: EPOCHS more fp32 "
                   "training, then PT2E post-training quantization")
    p.add_argument("--held-out", action="store_true", help="also score each winner on the evaluator's held-out "
                   "images (MNIST-5k's that evaluator.options.limit leaves out, so set it below 5000; an image "
                   "folder's test/): a figure no search picked its winner by")
    p.add_argument("--work", default="/tmp/hwnas-compression")
    p.add_argument("--out", help="write the figures here as JSON")
    p.add_argument("--pool", metavar="A.json,B.json", help="run nothing: the paired figures over the seeds of these "
                   "--out files")
    args = p.parse_args()
    if not args.arms:   # --arms "": no search, only the two tables side by side
        if not args.block_tables:
            raise SystemExit("--arms '': nothing to run without --block-tables FP32,INT8")
        print_blocks(args.block_tables)
        return
    if args.pool:
        df = pool(args.pool.split(","))
        print(f"# pooled: {args.pool}; seeds {', '.join(map(str, sorted(df['seed'].unique())))}\n")
        print("\n".join(paired(df)))
        return
    from nas.compression import int8_scores
    from nas.trial import build_seeded

    if args.held_out:
        check_held_out(Path(args.recipe), tuple(args.set))
    start, work = time.time(), Path(args.work)
    rows, models = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        seed_a = None
        for name in args.arms.split(","):
            arm, compression = ARMS[name], "search" if name in POLICY_ARMS else name
            keep = "-keep" + args.keep.replace(",", "_") if compression == "search" and args.keep != "1" else ""
            repair = "none" if name == "unrepaired" else args.repair
            if compression == "search" and name != "unrepaired" and repair != "dominated":
                keep += f"-{repair}"
            if name == "matched" and args.matched_ratio != 1:   # its own label and run folder
                arm = arm.replace("at (a)'s", f"at {args.matched_ratio:g}x (a)'s")
                keep += f"-x{args.matched_ratio:g}"
            run_dir = work / f"{name}{keep}-s{seed}"   # (a) and (b) are shared by runs with other --keep, --repair
            sets = tuple(args.set) + ((f"search.repair={repair}",) if compression == "search" else ())
            if name == "matched":   # (c) under a limit of (a)'s winner as it ships, measured here once
                limit = matched_limit(run_dir, seed_a, args.threads, args.matched_ratio, args.no_cpu)
                sets += (f"constraints.latency=[{limit}]",)
            if name == "lowest":   # (a)'s winner compressed further, in a folder of its own; no search
                if seed_a is None:
                    raise SystemExit("--arms: lowest needs arm none before it (it compresses (a)'s winner)")
                ctx, model, shape, best = lowest_everywhere(seed_a, work / f"none-s{seed}" / "recipe.yaml", run_dir,
                                                            args.precisions, args.threads)
                arm = arm.format(lowest=ctx.space.most_compressed)
            else:
                best = run_search(Path(args.recipe), run_dir, compression, seed, args.budget, sets,
                                  args.precisions, args.keep)["best"]
                ctx, model, shape = winner(run_dir)
            if compression == "none":   # quantized after the search, as the search would have
                scores = int8_scores(model, ctx.evaluator, shape, best["accuracy"], args.threads)
                seed_a = (ctx, model, shape, best)
            else:
                scores = {k: best[k] for k in ("accuracy", "accuracy_fp32", "accuracy_drop")}
            if args.pt2e:   # the same trained network and calibration, made int8 by PyTorch's PT2E flow
                scores["pt2e"] = (np.nan if compression == "search" else int8_scores(
                    model, ctx.evaluator, shape, scores["accuracy_fp32"], quantizer="pt2e")["accuracy"])
            if args.qat:   # quantization-aware fine-tuning against as much fp32 fine-tuning, both PT2E int8
                scores.update(qat_scores(ctx, model, shape, scores["accuracy_fp32"], args.qat, compression))
            if args.held_out:
                scores.update(held_out_scores(ctx, model, shape, args.threads))
            units = compressed_units(ctx, run_dir, best["arch"]) if compression == "search" else (np.nan,) * 2
            rows.append({"seed": seed, "arm": arm, "arch": best["arch"], "int8 accuracy": scores["accuracy"],
                         **({"pt2e int8 accuracy": scores["pt2e"]} if args.pt2e else {}),
                         **{k: scores[k] for k in qat_columns(args.qat)},
                         **{k: scores[k] for k in held_columns(args.held_out)},
                         "fp32 accuracy": scores["accuracy_fp32"], "drop": scores["accuracy_drop"],
                         "MFLOPs": best["flops"] / 1e6, "compressed units": units[0], "of which pay": units[1],
                         # the search's own figure per latency profile (exact for a simulator)
                         **{f"{k[len('latency_'):]} ms": v for k, v in best.items() if k.startswith("latency_")}})
            models.append((model, shape))
            print(f"seed {seed} {arm}: int8 accuracy {scores['accuracy']:.4f} (fp32 {scores['accuracy_fp32']:.4f}), "
                  f"{best['flops'] / 1e6:.2f} MFLOPs", file=sys.stderr)
    calibration, _ = ctx.evaluator.quantization_data(models[0][1][-1])
    rng = np.random.default_rng(0)
    sampled = []
    for i in range(args.sampled):
        arch = ctx.space.sample(rng)
        sampled.append((build_seeded(ctx.space, arch, 0).eval(), tuple(ctx.space.input_shape(arch))))
    if args.no_cpu:   # the profiles' figures only (a simulator's are exact); nothing timed here
        ms = np.full((len(models) + len(sampled), 2), np.nan)
    else:
        with tempfile.TemporaryDirectory(prefix="hwnas-bench-int8-") as tmp:
            ms = latency_pairs(models + sampled, calibration, args.threads, Path(tmp))
    df = pd.DataFrame(rows)
    df[["compressed units", "of which pay"]] = df[["compressed units", "of which pay"]].astype("Int64")
    if not args.no_cpu:
        df["fp32 ms"], df["int8 ms"] = ms[:len(rows), 0], ms[:len(rows), 1]
        df["int8 / fp32"] = df["int8 ms"] / df["fp32 ms"]
    where = ("latency: the search's figure per profile, nothing timed here" if args.no_cpu else
             f"latency on this CPU, onnxruntime, {args.threads} thread(s), batch 1")
    policy = f"arm (c) precisions {args.precisions}" + (f", keep {args.keep}" if args.keep != "1" else "") + \
        f", search.repair {args.repair}"
    print(f"# Compression-aware search: {Path(args.recipe).name}, budget {args.budget}, seeds {args.seeds}; {policy}; "
          f"{where}\n")
    print(markdown(df.drop(columns="arch")))
    profiles = [c for c in df.columns if c.endswith(" ms") and c not in ("fp32 ms", "int8 ms")]
    cpu = [] if args.no_cpu else ["int8 ms"]
    pt2e = (["pt2e int8 accuracy"] if args.pt2e else []) + qat_columns(args.qat) + held_columns(args.held_out)[:2]
    means = df.groupby("arm", sort=False)[["int8 accuracy", *pt2e, "fp32 accuracy", *cpu, *profiles,
                                           "MFLOPs"]].mean()
    print("\n" + markdown(means.reset_index()))
    base = means.iloc[0]
    for label, ours in means.iloc[1:].iterrows():
        gain = ours["int8 accuracy"] - base["int8 accuracy"]
        held = (f" (held out: {ours['held-out int8 accuracy'] - base['held-out int8 accuracy']:+.4f})"
                if args.held_out else "")
        parts = ([] if args.no_cpu else [f"measured as shipped x{ours['int8 ms'] / base['int8 ms']:.3f} (this CPU)"])
        parts += [f"{c[:-3]} x{ours[c] / base[c]:.3f}" for c in profiles]
        print(f"\n{label} against {means.index[0]}: accuracy after compression {gain:+.4f}{held}; latency "
              f"{', '.join(parts)}")
    print("\n" + "\n".join(paired(df)))
    for label, part in df.dropna(subset=["compressed units"]).groupby("arm", sort=False):
        print(f"{label}: {part['of which pay'].sum()} of its winners' {part['compressed units'].sum()} compressed "
              "units pay (undoing that one compression raises a cost figure of the run)")
    ratio = ms[len(rows):, 1] / ms[len(rows):, 0]
    if len(ratio):
        fp32 = np.percentile(ms[len(rows):, 0], [10, 50, 90])
        print(f"sampled networks of the space: int8 slower than fp32 on {int((ratio > 1).sum())} of {len(ratio)}; "
              f"int8 / fp32 median x{np.median(ratio):.3f}, range x{ratio.min():.3f}-x{ratio.max():.3f}; their fp32 "
              f"latency median {fp32[1]:.4f} ms ({fp32[0]:.4f}-{fp32[2]:.4f}, 10th-90th percentile: where a limit "
              "binds)")
    blocks, sides, nets = print_blocks(args.block_tables) if args.block_tables else (None, None, None)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "recipe": args.recipe, "budget": args.budget, "precisions": args.precisions, "keep": args.keep,
            "repair": args.repair, "matched_ratio": args.matched_ratio,
            "sets": args.set, "rows": json.loads(df.to_json(orient="records")),
            "sampled_int8_over_fp32": ratio.tolist(),
            "blocks": None if blocks is None else blocks.to_dict("records"),
            "block_sides": None if blocks is None else sides.to_dict("records"),
            "networks_int8_over_fp32": None if blocks is None else nets.tolist(), "seconds": time.time() - start},
            indent=1, default=str))


if __name__ == "__main__":
    main()
