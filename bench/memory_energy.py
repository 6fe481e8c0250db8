"""Memory and energy budgets, predicted against measured (issue 22), on this CPU.

    python bench/memory_energy.py [--spaces mobilenet,macro,fbnet,muffnet,nb201] [--networks 100]
        [--train-networks 20] [--batches 8,32] [--seed 0] [--gpu] [--out FILE.json]

1. **Inference memory.** `--networks` distinct networks per space (seeded), each exported to ONNX and run once by
   onnxruntime's CPU provider, whose profile gives its allocator's peak (`hardware_profiles.memory.
   onnx_activation_bytes`). Against it: the analytic activation peak from the layer shapes
   (`predictors.memory.inference_memory`), the same with channels rounded to onnxruntime's blocked layout
   (`--channel-block`, default 16 with AVX-512 and 8 without), a learned correction of that figure
   (`MemoryCorrection`: fitted on the first half of the networks, judged on the second), the walk of the graph
   onnxruntime runs with its allocation planner (``engine="onnxruntime"``, `predictors.ort_memory`: nothing fitted;
   also how many networks it predicts to the byte) and the naive figure (input plus the largest layer's input and
   output, nothing about what stays alive). Median and 90th-percentile relative error, on the held-out half for
   every method. Goal: <= 5 % median, <= 10 % p90.
2. **Training memory.** `--train-networks` networks per space at each of `--batches`, one PyTorch training step
   each (SGD with momentum, fp32, this CPU), glibc's allocator read after every operator (`hardware_profiles.
   memory.torch_training_bytes`): weights, gradients and momentum plus that step's peak, against
   `predictors.memory.training_memory` and the naive sum (weights plus every layer's output once). Also: how
   many networks would run out of memory under a budget set to the prediction (measured above predicted), and
   with a 10 % margin. The same tensors a GPU step allocates, less cuDNN's workspace; the GPU figure
   (`torch.cuda.max_memory_allocated`) needs the lent GPU.
3. **Energy.** What this machine exposes: RAPL (`/sys/class/powercap`) or not, and the FPGA simulator's energy per
   inference for the same networks where the space runs on it (its model, not a measurement).
4. **On a GPU** (`--gpu`, the lent device; `bench/gpu_memory_energy.sh` runs it there): inference and training
   memory (batch 32, 128, 512) from `torch.cuda.max_memory_allocated` against predicted (inference also with each
   layer's cuDNN workspace measured alone, `predictors.memory.cuda_workspace_bytes`), and NVML energy per
   inference at batch 1 and 32 (two passes: their spread is the repeatability) with the energy predictor's error
   on the held-out half. Training is also predicted with each distinct layer's cuDNN workspace in a training step
   at that batch, measured alone (`hardware_profiles.memory.cuda_layer_train_workspace`; column ``+ workspace``).
5. **A GPU profile's workspace table** (`--profile-workspace P`, on a GPU): the table as a search uses it, on
   networks of its space it did not measure: inference at batch 1 and training at `--between-batches`, those the
   table did not measure interpolated.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.io import atomic_write_json  # noqa: E402
from hardware_profiles.memory import ort_channel_block  # noqa: E402

CLASSES = {"mobilenet": 1000, "macro": 10, "fbnet": 100, "muffnet": 10, "nb201": 10}


def sample(space, n: int, seed: int) -> list:
    rng, seen = np.random.default_rng(seed), {}
    for _ in range(100 * n):
        if len(seen) >= n:
            break
        arch = space.sample(rng)
        seen.setdefault(space.to_string(arch), arch)
    return list(seen.values())


def errors(predicted, measured) -> dict[str, float]:
    e = np.abs(np.asarray(predicted, float) / np.asarray(measured, float) - 1)
    return {"median": float(np.median(e)), "p90": float(np.percentile(e, 90)), "n": int(len(e))}


def naive_inference(space, arch) -> int:
    """Input plus the largest layer's input and output: the figure without any liveness."""
    layers = space.layer_costs(arch)
    held = int(np.prod(space.input_shape(arch)[1:]))
    return 4 * (held + max(int(np.prod(lc.key.in_shape)) + int(np.prod(lc.key.out_shape)) for lc in layers))


def inference_part(name: str, archs: list, block: int, seed: int) -> dict:
    from tqdm import tqdm

    from core.timing import export_onnx
    from hardware_profiles.memory import eager_tensor_bytes, onnx_activation_bytes
    from predictors.memory import MemoryCorrection, inference_memory
    from search_spaces import get_space

    space = get_space(name, {}, num_classes=CLASSES[name])
    traced = [eager_tensor_bytes(space.build(a), space.input_shape(a)) for a in archs]   # PyTorch eager
    measured = []
    with tempfile.TemporaryDirectory(prefix="hwnas-mem-") as tmp:
        for i, arch in enumerate(tqdm(archs, desc=f"{name}: onnxruntime memory", unit="net", file=sys.stderr)):
            path = export_onnx(space.build(arch).eval(), space.input_shape(arch), Path(tmp) / f"{i}.onnx")
            measured.append(onnx_activation_bytes(path, space.input_shape(arch)))
    measured = np.asarray(measured, float)
    half = len(archs) // 2
    train, test = archs[:half], archs[half:]
    plain = [inference_memory(space, a).activation_bytes for a in test]
    blocked = [inference_memory(space, a, channel_block=block).activation_bytes for a in test]
    corrected = MemoryCorrection(space, block, seed).fit(train, measured[:half]).predict(test)
    # the walk of onnxruntime's own graph and planner (`predictors.ort_memory`): nothing fitted, so every network
    ort = np.asarray([inference_memory(space, a, channel_block=block, engine="onnxruntime").activation_bytes
                      for a in archs], float)
    return {"space": name, "networks": len(archs), "held_out": len(test),
            "measured_mib_median": float(np.median(measured) / 2 ** 20),
            "measured": dict(zip((space.to_string(a) for a in archs), map(int, measured))),
            "analytic": errors(plain, measured[half:]), f"analytic_block{block}": errors(blocked, measured[half:]),
            "corrected": errors(corrected, measured[half:]),
            "onnxruntime": errors(ort[half:], measured[half:]), "onnxruntime_all": errors(ort, measured),
            "onnxruntime_exact": int((ort == measured).sum()),
            "naive": errors([naive_inference(space, a) for a in test], measured[half:]),
            "eager_walk_vs_trace": errors([inference_memory(space, a, engine="eager").activation_bytes
                                           for a in archs], traced)}


def training_figures(measured, predicted, naive, archs: list[str], with_workspace=None) -> dict:
    """A training table's cell: predicted and naive bytes against measured (median / p90 error), the measured
    median, and how many networks measured above the prediction, then above it plus 10 %; the same for the
    prediction with each layer's cuDNN workspace (`with_workspace`, on a GPU). Each network's string and measured
    bytes are kept (``measured``), so a later version of the prediction is judged on them again without the device
    (`--rescore`)."""
    m, p = np.asarray(measured, float), np.asarray(predicted, float)
    out = {"predicted": errors(p, m), "naive": errors(naive, m), "measured_mib_median": float(np.median(m) / 2 ** 20),
           "out_of_memory_at_predicted": int((m > p).sum()),
           "out_of_memory_at_predicted_plus_10pct": int((m > 1.1 * p).sum()), "n": len(m),
           "measured": dict(zip(archs, map(int, measured)))}
    if with_workspace is not None:
        w = np.asarray(with_workspace, float)
        out["workspace"] = {**errors(w, m), "out_of_memory": int((m > w).sum()),
                            "out_of_memory_plus_10pct": int((m > 1.1 * w).sum())}
    return out


TRAINING_HEADER = (f"{'space':<10} {'batch':>5} {'MiB':>8} {'predicted':>17} {'naive':>17} {'OOM at pred.':>12} "
                   f"{'at +10 %':>8}")
WORKSPACE_HEADER = f" {'+ workspace':>17} {'OOM at pred.':>12} {'at +10 %':>8}"


def training_line(space: str, batch, r: dict) -> str:
    """One row of a training table (`TRAINING_HEADER`, and `WORKSPACE_HEADER` where the cell has the prediction
    with each layer's workspace) from `training_figures`."""
    line = (f"{space:<10} {batch:>5} {r['measured_mib_median']:>8.1f} {r['predicted']['median']:>7.1%} / "
            f"{r['predicted']['p90']:>6.1%} {r['naive']['median']:>7.1%} / {r['naive']['p90']:>6.1%} "
            f"{r['out_of_memory_at_predicted']:>7}/{r['n']:<4} {r['out_of_memory_at_predicted_plus_10pct']:>5}")
    if "workspace" in r:
        w = r["workspace"]
        line += (f"    {w['median']:>7.1%} / {w['p90']:>6.1%} {w['out_of_memory']:>7}/{r['n']:<4} "
                 f"{w['out_of_memory_plus_10pct']:>5}")
    return line


def rescored(space, batch: int, cell: dict, workspace_for=None) -> dict:
    """A kept training cell (``measured``: each network's bytes) judged with today's `training_memory`, and with the
    workspace `workspace_for(arch)` gives (bytes by layer key) where it is given (`training_figures`)."""
    from predictors.memory import training_memory

    archs = [space.decode(a) for a in cell["measured"]]
    figures = [training_memory(space, a, batch) for a in archs]
    return training_figures(list(cell["measured"].values()), [t.total_bytes for t in figures],
                            [t.naive_training_bytes for t in figures], list(cell["measured"]),
                            None if workspace_for is None else
                            [training_memory(space, a, batch, workspace=workspace_for(a)).total_bytes for a in archs])


def rescore(path: str) -> int:
    """The training tables of a finished run (`--out` FILE, this CPU's and the GPU's) with the predictions of the
    code as it is now, on the measurements the file keeps: how a change of `training_memory` does on a device that
    is not at hand. Cells written before the measurements were kept are named and left out."""
    import json

    from predictors.memory import inference_memory
    from search_spaces import get_space

    result = json.loads(Path(path).read_text())
    tables = {"this CPU": result.get("training", {}),
              "the GPU": {n: {k.removeprefix("training_b"): c for k, c in per.items() if k.startswith("training_b")}
                          for n, per in result.get("gpu", {}).items()}}
    for name, r in result.get("gpu", {}).items():   # inference on the GPU: the walks, no correction refitted
        if "measured" in r.get("inference", {}):
            space = get_space(name, {}, num_classes=CLASSES[name])
            pairs = [(space.decode(a), m) for a, m in r["inference"]["measured"].items()]
            measured = [m for _, m in pairs]
            cells = {engine: errors([inference_memory(space, a, engine=engine).activation_bytes for a, _ in pairs],
                                    measured) for engine in ("fused", "eager")}
            print(f"{name:<10} GPU inference, all {len(pairs)} networks: " +
                  ", ".join(f"{e} walk {c['median']:.1%} / {c['p90']:.1%}" for e, c in cells.items()))
    pw = result.get("profile_workspace")
    if pw:   # a GPU profile's workspace table as a search uses it (`profile_workspace_part`), as the table is now
        from hardware_profiles import get_profile
        from predictors.memory import profile_workspace

        profile = get_profile(pw["profile"])   # the version measured
        space = get_space(profile.manifest.space, profile.manifest.space_options,
                          num_classes=profile.manifest.num_classes or 1000)
        model = profile_workspace(profile, space)
        print(f"\n{pw['profile']}'s workspace table on {pw['networks']} networks ({path}), training predicted now "
              f"against measured then (median / p90)\n{TRAINING_HEADER}{WORKSPACE_HEADER}")
        for key, cell in pw.items():
            if key.startswith("training_b"):
                batch = int(key.removeprefix("training_b"))
                print(training_line(pw["space"], batch, rescored(
                    space, batch, cell, lambda a: model.train_workspace(space.layer_costs(a), batch))))
    for where, spaces in tables.items():
        if not spaces:
            continue
        print(f"\nTraining memory on {where} ({path}), predicted now against measured then (median / p90)\n"
              f"{TRAINING_HEADER}{WORKSPACE_HEADER if where == 'the GPU' else ''}")
        for name, cells in spaces.items():
            space = get_space(name, {}, num_classes=CLASSES[name])
            for batch, cell in cells.items():
                if "measured" not in cell:
                    print(f"{name:<10} {batch:>5} no per-network measurements kept in this file")
                    continue
                ws = cell.get("workspace_layers")
                print(training_line(name, batch, rescored(space, int(batch), cell,
                                                          None if ws is None else lambda a: ws)))
    return 0


def training_part(name: str, archs: list, batches: list[int]) -> dict:
    import torch
    from tqdm import tqdm

    from hardware_profiles.memory import torch_training_bytes
    from predictors.memory import training_memory
    from search_spaces import get_space

    torch.manual_seed(0)
    space = get_space(name, {}, num_classes=CLASSES[name])
    out = {}
    for batch in batches:
        measured, predicted, naive = [], [], []
        for arch in tqdm(archs, desc=f"{name}: training step at batch {batch}", unit="net", file=sys.stderr):
            t = training_memory(space, arch, batch)
            step = torch_training_bytes(space.build(arch), space.input_shape(arch), batch, classes=CLASSES[name])
            measured.append(t.weight_bytes + t.optimizer_bytes + step)   # held between steps + the step's peak
            predicted.append(t.total_bytes)
            naive.append(t.naive_training_bytes)
        out[str(batch)] = training_figures(measured, predicted, naive, [space.to_string(a) for a in archs])
    return out


def gpu_training_cell(space, archs: list, batch: int, classes: int, workspace_for) -> dict:
    """On a CUDA device, one training table's cell: each network's step at `batch` (SGD with momentum, fp32;
    `torch.cuda.max_memory_allocated` plus the weights and momentum held between steps) against `training_memory`,
    and against it with the workspace `workspace_for(arch)` gives (bytes by layer key), and the naive sum
    (`training_figures`); a network the device cannot hold is counted in ``device_oom`` and left out."""
    import torch
    from tqdm import tqdm

    from hardware_profiles.memory import cuda_memory_bytes
    from predictors.memory import training_memory

    m, p, pw, naive, done, oom = [], [], [], [], [], 0
    for a in tqdm(archs, desc=f"{space.name}: GPU training at batch {batch}", file=sys.stderr):
        t = training_memory(space, a, batch)
        try:
            step = cuda_memory_bytes(space.build(a), space.input_shape(a), batch, train=True, classes=classes)
        except torch.cuda.OutOfMemoryError:
            oom += 1
            continue
        finally:
            torch.cuda.empty_cache()
        m.append(t.weight_bytes + t.optimizer_bytes + step)
        p.append(t.total_bytes)
        pw.append(training_memory(space, a, batch, workspace=workspace_for(a)).total_bytes)
        naive.append(t.naive_training_bytes)
        done.append(space.to_string(a))
    return {**training_figures(m, p, naive, done, pw), "device_oom": oom}


def gpu_memory_part(name: str, archs: list, batches: list[int], seed: int) -> dict:
    """On a CUDA device, PyTorch eager in fp32: inference memory at batch 1 (`torch.cuda.max_memory_allocated` over
    a forward pass, the input included) against the analytic figure (the fused walk, and the eager one), the eager
    walk's correction fitted on the first half and the naive figure, all judged on the second half; each network's
    measured bytes are kept (``measured``); and one training step (SGD with momentum) per batch size,
    weights and momentum plus the step's peak, against `training_memory` and the naive sum. A network the device
    cannot hold is counted in ``device_oom`` and left out of the errors."""
    import torch
    from tqdm import tqdm

    from hardware_profiles.memory import cuda_layer_train_workspace, cuda_memory_bytes
    from predictors.memory import MemoryCorrection, cuda_workspace_bytes, inference_memory
    from search_spaces import get_space

    torch.manual_seed(0)
    space = get_space(name, {}, num_classes=CLASSES[name])
    measured = np.asarray([cuda_memory_bytes(space.build(a), space.input_shape(a), 1, train=False)
                           for a in tqdm(archs, desc=f"{name}: GPU inference memory", file=sys.stderr)], float)
    half = len(archs) // 2
    train, test = archs[:half], archs[half:]
    eager = MemoryCorrection(space, 1, seed, engine="eager").fit(train, measured[:half])
    # each distinct layer alone on this GPU: cuDNN's workspace beside the tensors the eager walk counts
    layers = [lc for a in archs for lc in space.layer_costs(a)]
    workspace = cuda_workspace_bytes(space, layers)
    with_workspace = np.asarray([inference_memory(space, a, engine="eager", workspace=workspace).activation_bytes
                                 for a in archs], float)
    out: dict = {"device": torch.cuda.get_device_name(), "networks": len(archs), "held_out": len(test),
                 "inference_mib_median": float(np.median(measured) / 2 ** 20), "inference": {
                     "analytic": errors([inference_memory(space, a).activation_bytes for a in test], measured[half:]),
                     "eager": errors([inference_memory(space, a, engine="eager").activation_bytes for a in test],
                                     measured[half:]),
                     "corrected": errors(eager.predict(test), measured[half:]),
                     "workspace": errors(with_workspace[half:], measured[half:]),
                     "workspace_all": errors(with_workspace, measured), "workspace_layers": workspace,
                     "naive": errors([naive_inference(space, a) for a in test], measured[half:]),
                     "measured": dict(zip((space.to_string(a) for a in archs), map(int, measured)))}}
    for batch in batches:
        # each distinct layer's training step alone at this batch: the largest cuDNN workspace it allocates
        train_ws = cuda_layer_train_workspace(space, layers, batch)
        out[f"training_b{batch}"] = {**gpu_training_cell(space, archs, batch, CLASSES[name], lambda a: train_ws),
                                     "workspace_layers": train_ws}
    return out


def profile_workspace_part(profile_name: str, n: int, batches: list[int], seed: int) -> dict:
    """On a CUDA device: a GPU profile's workspace table (`predictors.memory.profile_workspace`) as a search uses it,
    on `n` networks of its space none of which it measured: inference at batch 1 (the eager walk with each layer's
    workspace) against `torch.cuda.max_memory_allocated`, and a training step at each of `batches` against
    `training_memory` with the table's training workspace, interpolated where the table did not measure the batch
    (``constraints.train_memory_profile``), and without it."""
    import torch
    from tqdm import tqdm

    from hardware_profiles import get_profile
    from hardware_profiles.memory import cuda_memory_bytes
    from predictors.memory import profile_workspace
    from search_spaces import get_space

    profile = get_profile(profile_name)
    m = profile.manifest
    space = get_space(m.space, m.space_options, num_classes=m.num_classes or 1000)
    model = profile_workspace(profile, space)
    archs = sample(space, n, seed)
    measured = [cuda_memory_bytes(space.build(a), space.input_shape(a), 1, train=False)
                for a in tqdm(archs, desc=f"{profile_name}: inference", file=sys.stderr)]
    predicted = model.predict(archs)
    out = {"profile": m.ref, "space": m.space, "device": torch.cuda.get_device_name(), "networks": len(archs),
           "table_batches": sorted(model.train), "inference": {
               **errors(predicted, measured), "worst": float(np.max(np.abs(predicted / np.asarray(measured) - 1))),
               "measured": dict(zip((space.to_string(a) for a in archs), map(int, measured)))}}
    for batch in batches:
        out[f"training_b{batch}"] = gpu_training_cell(space, archs, batch, m.num_classes or 1000,
                                                      lambda a: model.train_workspace(space.layer_costs(a), batch))
    out["unmeasured_layers"] = len(model.unmeasured)
    return out


def gpu_energy_part(name: str, archs: list, batches: list[int], min_seconds: float, idle_seconds: float,
                    idle_w: float | None = None) -> dict:
    """On a CUDA device: NVML energy per inference of each network replayed as the GPU profiles time it (CUDA
    graph, fp32, channels-last), at each batch size, two passes of at least `min_seconds`, less the idle power
    (`idle_w`, or read over `idle_seconds` before the first network: once for every batch, since a GPU still
    cools down from the last table; `hardware_profiles.energy.energy_table`); the passes' spread is the
    repeatability. The energy predictor is fitted on the first half and judged on the second. A GPU whose counter
    cannot be read gives the reason instead."""
    from hardware_profiles.energy import cuda_runner, energy_table, find_counter, idle_power
    from predictors.energy import EnergyPredictor
    from search_spaces import get_space

    try:
        counter = find_counter("cuda")
    except Exception as err:  # noqa: BLE001 - reported, the memory figures stand
        return {"not measured": str(err)}
    space = get_space(name, {}, num_classes=CLASSES[name])
    if idle_w is None:
        idle_w = idle_power(counter, idle_seconds)
        print(f"{name}: idle power {idle_w:.1f} W over {idle_seconds:g} s", file=sys.stderr)
    out: dict = {"method": counter.method, "idle_w": idle_w}
    for batch in batches:
        items = [(space.to_string(a), lambda a=a: cuda_runner(space.build(a), space.input_shape(a), "fp32", batch,
                                                               True)) for a in archs]
        table = energy_table(items, counter, min_seconds=min_seconds, idle_w=idle_w,
                             log=lambda line: print(f"{name} batch {batch}: {line}", file=sys.stderr))
        mj = table.energy_mj.to_numpy(float)
        half = len(archs) // 2
        fitted = EnergyPredictor(space).fit(archs[:half], mj[:half]).predict(archs[half:])
        out[f"b{batch}"] = {"networks": len(archs), "median_mj": float(np.median(mj)), "min_mj": float(mj.min()),
                            "max_mj": float(mj.max()), "idle_w_median": float(table.idle_w.median()),
                            "pass_spread_median": float(table.spread.median()),
                            "pass_spread_p90": float(table.spread.quantile(0.9)),
                            "predictor": errors(fitted, mj[half:])}
    return out


def energy_part(spaces: dict[str, list]) -> dict:
    from hardware_profiles import get_profile
    from search_spaces import get_space

    rapl = sorted(str(p) for p in Path("/sys/class/powercap").glob("intel-rapl:*")) \
        if Path("/sys/class/powercap").exists() else []
    out = {"rapl": rapl or "not exposed on this machine (no /sys/class/powercap; usual in VMs)"}
    fpga = get_profile("fpga-zc706-int8")
    for name, archs in spaces.items():
        space = get_space(name, {}, num_classes=CLASSES[name])
        try:
            mj = [fpga.latency(space, a).energy_mj for a in archs]
        except Exception as err:  # noqa: BLE001 - a space the simulator cannot run is reported, not fatal
            out[name] = f"fpga-zc706-int8: {type(err).__name__}: {err}"[:200]
            continue
        out[name] = {"fpga-zc706-int8 energy mJ median": float(np.median(mj)), "min": float(np.min(mj)),
                     "max": float(np.max(mj))}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spaces", default="mobilenet,macro,fbnet,muffnet,nb201")
    p.add_argument("--networks", type=int, default=100)
    p.add_argument("--train-networks", type=int, default=20)
    p.add_argument("--batches", default="8,32")
    p.add_argument("--channel-block", type=int, default=ort_channel_block())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="",
                   help="comma-separated parts to skip: inference, training, energy, gpu-memory, gpu-energy")
    p.add_argument("--gpu", action="store_true", help="also the GPU part (a CUDA device): memory of --gpu-networks "
                   "per space (training at --gpu-batches), energy of --energy-networks in --energy-spaces")
    p.add_argument("--gpu-networks", type=int, default=50)
    p.add_argument("--gpu-batches", default="32,128,512")
    p.add_argument("--energy-spaces", default="mobilenet,nb201", help="spaces whose energy is measured ('' for none)")
    p.add_argument("--energy-networks", type=int, default=40)
    p.add_argument("--energy-min-seconds", type=float, default=2.0, help="each energy pass lasts at least this")
    p.add_argument("--energy-idle-seconds", type=float, default=5.0, help="idle power read once over this")
    p.add_argument("--profile-workspace", metavar="PROFILE", help="on a GPU: a GPU profile's workspace table as a "
                   "search uses it, on --gpu-networks networks of its space, training at --between-batches")
    p.add_argument("--between-batches", default="64,256", help="training batches for --profile-workspace (those "
                   "its table did not measure are interpolated)")
    p.add_argument("--out", help="write the figures here as JSON")
    p.add_argument("--rescore", metavar="FILE", help="measure nothing: the training tables of FILE (a run's --out) "
                   "with today's predictions")
    args = p.parse_args()
    if args.profile_workspace and not args.gpu:
        p.error("--profile-workspace: measures on a GPU; add --gpu")
    try:
        between = [int(b) for b in args.between_batches.split(",")]
    except ValueError:
        p.error(f"--between-batches: {args.between_batches!r}: expected batch sizes such as 64,256")
    if args.rescore:
        return rescore(args.rescore)
    from search_spaces import get_space

    names = args.spaces.split(",")
    skip = set(filter(None, args.skip.split(",")))
    batches = [int(b) for b in args.batches.split(",")]
    archs = {n: sample(get_space(n, {}, num_classes=CLASSES[n]), args.networks, args.seed) for n in names}
    result: dict = {"channel_block": args.channel_block, "seed": args.seed}
    if "inference" not in skip:
        result["inference"] = [inference_part(n, archs[n], args.channel_block, args.seed) for n in names]
        print(f"\nInference memory, onnxruntime CPU (its allocator's peak) against predicted; error on the held-out "
              f"half (median / p90); onnxruntime: the walk of its graph and planner (exact: networks predicted to the "
              f"byte, of all); last column: the eager walk against the tensors PyTorch eager mode holds (traced, "
              f"every network)\n{'space':<10} {'nets':>5} {'MiB':>7} {'analytic':>15} "
              f"{'block ' + str(args.channel_block):>15} {'corrected':>15} {'onnxruntime':>15} {'exact':>7} "
              f"{'naive':>15} {'eager walk':>15}")
        for r in result["inference"]:
            cells = [f"{r[k]['median']:>6.1%} / {r[k]['p90']:>6.1%}" for k in (
                "analytic", f"analytic_block{args.channel_block}", "corrected", "onnxruntime", "naive",
                "eager_walk_vs_trace")]
            print(f"{r['space']:<10} {r['held_out']:>5} {r['measured_mib_median']:>7.2f} {' '.join(cells[:4])} "
                  f"{r['onnxruntime_exact']:>3}/{r['networks']:<3} {' '.join(cells[4:])}")
    if "training" not in skip:
        result["training"] = {n: training_part(n, archs[n][:args.train_networks], batches) for n in names}
        print(f"\nTraining memory, one PyTorch step on this CPU (weights + momentum + the step's allocator peak) "
              f"against predicted (median / p90 error)\n{TRAINING_HEADER}")
        for n, per in result["training"].items():
            for b, r in per.items():
                print(training_line(n, b, r))
    if "energy" not in skip:
        result["energy"] = energy_part({n: archs[n][:args.train_networks] for n in names})
        print(f"\nEnergy: RAPL: {result['energy']['rapl']}")
        for n in names:
            print(f"  {n}: {result['energy'][n]}")
    if args.gpu:
        gpu_batches = [int(b) for b in args.gpu_batches.split(",")]
        gpu_names = [] if "gpu-memory" in skip else names
        result["gpu"] = {n: gpu_memory_part(n, archs[n][:args.gpu_networks], gpu_batches, args.seed) for n in gpu_names}
    if result.get("gpu"):
        print(f"\nOn the GPU ({next(iter(result['gpu'].values()))['device']}), PyTorch's allocator against predicted "
              f"(eager: the walk of what eager mode holds; corrected: that walk fitted to the first half; "
              f"+ workspace: the walk plus each layer's cuDNN workspace measured alone on this GPU), error on the "
              f"held-out half (median / p90)\n{'space':<10} {'nets':>5} {'MiB':>7} {'analytic':>15} "
              f"{'eager':>15} {'corrected':>15} {'+ workspace':>15} {'naive':>15}")
        for n, r in result["gpu"].items():
            cells = [r["inference"][k] for k in ("analytic", "eager", "corrected", "workspace", "naive")]
            print(f"{n:<10} {r['held_out']:>5} {r['inference_mib_median']:>7.2f} " +
                  " ".join(f"{c['median']:>6.1%} / {c['p90']:>6.1%}" for c in cells))
        print(f"\nTraining memory, one PyTorch step on the GPU (weights + momentum + the step's peak) against "
              f"predicted (median / p90); + workspace: with each layer's cuDNN workspace in training, measured alone"
              f"\n{TRAINING_HEADER}{WORKSPACE_HEADER} {'device OOM':>10}")
        for n, r in result["gpu"].items():
            for b in gpu_batches:
                t = r[f"training_b{b}"]
                print(f"{training_line(n, b, t)} {t['device_oom']:>10}")
    if args.gpu and args.profile_workspace:
        r = result["profile_workspace"] = profile_workspace_part(args.profile_workspace, args.gpu_networks, between,
                                                                 args.seed)
        print(f"\n{r['profile']}'s workspace table ({r['space']}, training workspace measured at batches "
              f"{', '.join(map(str, r['table_batches']))}) on {r['networks']} networks it did not measure, on "
              f"{r['device']}: inference at batch 1 {r['inference']['median']:.1%} / {r['inference']['p90']:.1%}; "
              f"training (predicted: saved activations only; + workspace: the table's, interpolated)\n"
              f"{TRAINING_HEADER}{WORKSPACE_HEADER}")
        for b in between:
            print(training_line(r["space"], b, r[f"training_b{b}"]))
    if args.gpu and "gpu-energy" not in skip:
        energy_spaces = [n for n in args.energy_spaces.split(",") if n]
        result["gpu_energy"], idle = {}, None   # the idle power read once, before the first network
        for n in energy_spaces:
            result["gpu_energy"][n] = gpu_energy_part(n, archs[n][:args.energy_networks], [1, 32],
                                                      args.energy_min_seconds, args.energy_idle_seconds, idle)
            idle = result["gpu_energy"][n].get("idle_w", idle)
        print(f"\nGPU energy per inference (NVML, idle power off; two passes) and the energy predictor's error on "
              f"the held-out half\n{'space':<10} {'batch':>5} {'nets':>5} {'median mJ':>10} {'range mJ':>17} "
              f"{'idle W':>7} {'pass spread':>15} {'predictor':>15}")
        for n, r in result["gpu_energy"].items():
            if "not measured" in r:
                print(f"{n:<10} not measured: {r['not measured']}")
                continue
            for b in (1, 32):
                e = r[f"b{b}"]
                print(f"{n:<10} {b:>5} {e['networks']:>5} {e['median_mj']:>10.3f} "
                      f"{e['min_mj']:>8.3f}-{e['max_mj']:<8.3f} {e['idle_w_median']:>7.1f} "
                      f"{e['pass_spread_median']:>6.1%} / {e['pass_spread_p90']:>6.1%} "
                      f"{e['predictor']['median']:>6.1%} / {e['predictor']['p90']:>6.1%}")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
