"""Memory measured where the network runs (issue 22): onnxruntime's CPU allocator, read from its profile (inference),
glibc's allocator over a PyTorch training step (`torch_training_bytes`), the tensors autograd keeps for the
backward pass (`saved_tensor_bytes`), and the tensors an eager forward pass holds (`eager_tensor_bytes`).

    python -m hardware_profiles.memory --profile P [--networks N] [--workspace]

measures a profile's networks with its own engine into its memory table (`memory_table`: ``memory.csv``, `arch`
and `activation_bytes`), which a recipe's ``max_memory_mb`` in a latency entry on that profile is corrected by
(`predictors.memory.profile_memory_correction`). On a GPU profile, ``--workspace`` measures instead every layer of
its space alone (`workspace_table`: ``workspace.csv``, the block table of memory): what each layer's cuDNN
algorithms allocate beside its tensors, in inference at batch 1 and in a training step at several batches, which the
walks of `predictors.memory` add per layer (`profile_memory_model`, ``constraints.train_memory_profile``): in
inference to within 0.1 % of every network measured, with no network measured.

onnxruntime's profiler (1.23 and later) records, after every kernel, the bytes its allocator has handed out
(``mem_bytes_requested_in_use``: requested sizes, before the arena's rounding). The activation peak of one run is the
largest of those figures less what was in use before the first kernel (what the session holds between runs), plus
the input tensor, which the caller owns. Memory patterns (onnxruntime's preallocation of one block per run after the
first) are turned off, so every run allocates and frees as the graph executes and the figure is the same each run.
`predictors.memory.inference_memory` predicts this figure from layer shapes; `bench/memory_energy.py` compares them.
"""
from __future__ import annotations

import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from core.errors import InputError, cli_entry

FIELD = "mem_bytes_requested_in_use"


def onnx_activation_bytes(path: str | Path, input_shape: tuple[int, ...], threads: int = 1) -> int:
    """Peak activation bytes of one run of the ONNX model at `path` on onnxruntime's CPU provider (see the module),
    the input included.

    Raises:
        InputError: this onnxruntime's profiler does not report memory.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hwnas-memory-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_mem_pattern = False
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random(input_shape, dtype=np.float32)
        name = session.get_inputs()[0].name
        session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e["args"] for e in events if e.get("cat") == "Node" and FIELD in e.get("args", {})]
    if not nodes:
        raise InputError(f"onnxruntime {ort.__version__} does not report memory in its profile; measuring "
                         "inference memory needs onnxruntime 1.23 or later")
    first = nodes[0]
    before = int(first[FIELD]) - int(first.get("mem_requested_in_use_delta", 0))
    return max(int(n[FIELD]) for n in nodes) - before + x.nbytes


def _malloc_in_use():
    """A function returning the bytes glibc's malloc has handed out (`mallinfo2`: in arenas and mmapped), or None
    where the C library has no `mallinfo2` (not glibc 2.33+)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd
    return in_use


def torch_training_bytes(model, input_shape: tuple[int, ...], batch: int, optimizer: str = "sgd",
                         classes: int = 10) -> int:
    """Peak bytes one training step of `model` (PyTorch, CPU, fp32) allocates beyond what it holds between steps
    (the weights and the optimizer's state): gradients, saved activations and the backward pass's transients, read
    from glibc's allocator after every operator. A first step runs untimed so the optimizer's state exists.

    Raises:
        InputError: the C library cannot report its allocations (`mallinfo2`: glibc 2.33 or later).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    in_use = _malloc_in_use()
    if in_use is None:
        raise InputError("measuring training memory on the CPU needs glibc's mallinfo2 (glibc 2.33 or later)")

    class Peak(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, in_use())
            return out

    step = training_step(model, input_shape, batch, optimizer, classes, "cpu")
    base = in_use()
    with Peak() as tracker:
        step()
    return tracker.peak - base


def saved_tensor_bytes(model, input_shape: tuple[int, ...], batch: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass over one forward pass of `model` in training mode
    (PyTorch, CPU, fp32) at `batch`: each storage counted once, however many operations keep it or a view of it;
    the parameters and buffers left out. Exact, and the same on any device: the part of a training step's memory
    that `predictors.memory.training_memory` calls saved activations, without the allocator's transients or a
    GPU's workspace."""
    import torch

    held = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    x = torch.randn((batch, *input_shape[1:]), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(kept.values())


def eager_tensor_bytes(model, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """Peak bytes of the tensors one eager inference of `model` (PyTorch, CPU, fp32, no gradients) holds at once,
    the input included: every operator's output from when it is made until the last reference to its storage goes
    (views count with their base), the parameters and buffers left out, and nothing of what an operator allocates
    and frees inside itself (a convolution's workspace, a weight reorder). What `torch.cuda.max_memory_allocated`
    counts of the same forward pass, less cuDNN's workspace and the allocator's rounding, on any machine:
    `predictors.memory.inference_memory` with ``engine="eager"`` predicts it."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    x = torch.randn((batch, *input_shape[1:]), generator=torch.Generator().manual_seed(0))
    held = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers(), x)}
    live: dict[int, list] = {}   # storage address -> [bytes, ids of the tensors on it]
    state = {"now": 0, "peak": 0}

    def release(ptr: int, ident: int) -> None:
        entry = live.get(ptr)
        if entry is not None:
            entry[1].discard(ident)
            if not entry[1]:
                state["now"] -= entry[0]
                del live[ptr]

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in held | {0}:
                    continue
                ptr = t.untyped_storage().data_ptr()
                if ptr not in live:
                    live[ptr] = [t.untyped_storage().nbytes(), set()]
                    state["now"] += live[ptr][0]
                live[ptr][1].add(id(t))
                weakref.finalize(t, release, ptr, id(t))
            state["peak"] = max(state["peak"], state["now"])
            return out

    model.eval()
    with torch.no_grad(), Trace():
        model(x)
    return state["peak"] + x.nbytes


def training_step(model, input_shape: tuple[int, ...], batch: int, optimizer: str, classes: int, device: str):
    """A function running one training step of `model` (fp32, `optimizer`: ``sgd`` with momentum or ``adam``) on a
    seeded batch on `device`, after a first step has run, so the optimizer's state exists and the gradients are
    cleared (what a training loop holds between steps)."""
    import torch

    model.train()
    opt = (torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((batch, *input_shape[1:]), generator=g, device=device)
    y = torch.randint(0, classes, (batch,), generator=g, device=device)
    loss = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    return step


def cuda_memory_bytes(model, input_shape: tuple[int, ...], batch: int, train: bool, classes: int = 10) -> int:
    """Peak bytes PyTorch's CUDA allocator hands out, beyond what it held before, over one inference of `model`
    (``train=False``: moved to the GPU first, so its weights are what it held before) or one training step with
    SGD and momentum (``train=True``: the weights, momentum and a first step's state held before; the step's
    gradients, saved activations and cuDNN's workspace measured): `torch.cuda.max_memory_allocated`, fp32."""
    import torch

    model = model.to("cuda")
    if not train:
        x = torch.randn((batch, *input_shape[1:]), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        model.eval()
        with torch.inference_mode():
            model(x)   # cuDNN's algorithms chosen before the measured run
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            model(x)
            torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base + x.nbytes
    step = training_step(model, input_shape, batch, "sgd", classes, "cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _per_layer(space, layers, measure, log) -> dict[str, int]:
    """`measure(module, input_shape, layer)` of each distinct layer (`LayerCost`) of `layers` built alone
    (`SearchSpace.build_layer`), keyed by its cost key (`str`), the allocator's cache emptied after each."""
    import torch

    out: dict[str, int] = {}
    for lc in layers:
        key = str(lc.key)
        if key not in out:
            out[key] = int(measure(space.build_layer(lc.key), (1, *lc.key.in_shape), lc))
            torch.cuda.empty_cache()
            log(f"{key}: {out[key]} bytes")
    return out


def cuda_layer_bytes(space, layers, log=lambda line: None) -> dict[str, int]:
    """Each distinct layer (`LayerCost`) of `layers` built alone and run as `cuda_memory_bytes` runs a network in
    eager inference at batch 1, its input included: keyed by its cost key (`str`).
    `predictors.memory.cuda_workspace_bytes` takes the tensors the eager walk counts off it."""
    return _per_layer(space, layers, lambda module, shape, lc: cuda_memory_bytes(module, shape, 1, train=False), log)


CONV_WORKSPACE_FRAME = "run_conv_plan"   # where PyTorch's cuDNN convolutions allocate their workspace (C++ frame)


def cuda_train_workspace_bytes(module, input_shape: tuple[int, ...], batch: int, input_grad: bool = True) -> int:
    """The largest cuDNN workspace one training step of `module` (forward, then backward from a gradient of ones,
    fp32) allocates at `batch`: the allocations PyTorch's allocator traced from inside its cuDNN convolution
    (`CONV_WORKSPACE_FRAME`), after a first step has chosen the algorithms. `input_grad`: whether the step makes
    the input's gradient (not for a network's stem, which reads the image). A workspace can dwarf the layer's
    tensors at a large batch (2,400 MiB for the weight gradient of MobileNet's 1x1 head convolution, after the
    global pool, at batch 512 on an H100; 13 MiB at 256).

    Raises:
        RuntimeError: the trace has no C++ frames to read (a PyTorch built without them).
    """
    import torch

    module = module.to("cuda").train()
    x = torch.randn((batch, *input_shape[1:]), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    x.requires_grad_(input_grad)

    def step() -> None:
        out = module(x)
        out.backward(torch.ones_like(out))

    step()
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=200_000, context="alloc", stacks="all")
    try:
        step()
        torch.cuda.synchronize()
        trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    allocs = [e for e in trace if e["action"] == "alloc"]
    if allocs and not any(f.get("name", "").startswith("c10::") for e in allocs for f in e.get("frames", ())):
        raise RuntimeError("the allocator's trace has no C++ frames: cannot tell cuDNN's workspace apart")
    return max((e["size"] for e in allocs if any(CONV_WORKSPACE_FRAME in f.get("name", "")
                                                  for f in e.get("frames", ()))), default=0)


def cuda_layer_train_workspace(space, layers, batch: int, log=lambda line: None) -> dict[str, int]:
    """`cuda_train_workspace_bytes` of each distinct layer of `layers` at `batch`, by its cost key (`str`): what
    `predictors.memory.training_memory`'s ``workspace`` takes."""
    return _per_layer(space, layers, lambda module, shape, lc: cuda_train_workspace_bytes(
        module, shape, batch, input_grad=lc.key.op != "stem"), log)


MEMORY_BACKENDS = {"onnxruntime-cpu": "onnxruntime", "torch-cuda": "eager"}   # what measures a memory table, and
# the walk (`predictors.memory.inference_memory`'s engine) its correction starts from


@functools.cache
def ort_channel_block() -> int:
    """onnxruntime's NCHWc block on this CPU: 16 channels with AVX-512, 8 with AVX2 (its MLAS kernels), 1 where it
    has no blocked layout (an older x86, ARM). Read once: a search asks it for every proposal's memory check."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return 16 if " avx512f" in flags else 8 if " avx2" in flags else 1


def memory_table(profile, archs: list[str], log=lambda line: None):
    """The activation peak at batch 1 of each network `archs` names (strings of the profile's space), measured
    with the profile's engine: onnxruntime's CPU allocator (`onnx_activation_bytes`) for an onnxruntime profile,
    `torch.cuda.max_memory_allocated` of an eager forward pass (`cuda_memory_bytes`) for a torch-cuda one; and the
    manifest options that say how (``memory_method``, ``memory_engine``, ``memory_channel_block``).

    Raises:
        InputError: the profile's backend measures no memory, or a torch-cuda profile on a machine without CUDA.
    """
    import pandas as pd
    import torch
    from tqdm import tqdm

    from core.timing import export_onnx
    from search_spaces import make_space

    m = profile.manifest
    if m.backend not in MEMORY_BACKENDS:
        raise InputError(f"--profile: {m.ref} was measured with {m.backend}; memory tables are measured for "
                         f"{' and '.join(MEMORY_BACKENDS)} profiles")
    if m.precision != "fp32":
        raise InputError(f"--profile: {m.ref} runs in {m.precision}; memory tables are measured for fp32 profiles")
    if m.backend == "torch-cuda" and not torch.cuda.is_available():
        raise InputError(f"--profile: {m.ref} is a GPU profile and this machine has no CUDA device")
    space = make_space(m.space, m.space_options, m.num_classes or 1000, source=f"{m.ref} manifest")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwnas-memory-") as tmp:
        for i, text in enumerate(tqdm(archs, desc=f"{m.ref}: memory", unit="net")):
            arch = space.decode(text)
            shape = space.input_shape(arch)
            if m.backend == "torch-cuda":
                peak = cuda_memory_bytes(space.build(arch), shape, 1, train=False)
            else:
                peak = onnx_activation_bytes(export_onnx(space.build(arch).eval(), shape, Path(tmp) / f"{i}.onnx"),
                                             shape, max(m.threads, 1))
            rows.append({"arch": text, "activation_bytes": int(peak)})
            log(f"{i + 1}/{len(archs)} {text}: {peak / 2 ** 20:.3f} MiB")
    how = ("onnxruntime CPU allocator's peak (profile memory statistics), batch 1" if m.backend != "torch-cuda" else
           f"torch.cuda.max_memory_allocated of an eager forward pass on {torch.cuda.get_device_name()}, batch 1")
    options = {"memory_method": how, "memory_engine": MEMORY_BACKENDS[m.backend],
               "memory_channel_block": ort_channel_block() if m.backend != "torch-cuda" else 1}
    return pd.DataFrame(rows, columns=["arch", "activation_bytes"]), options


TRAIN_COLUMN = "train_b{}_bytes"   # a workspace table's column: each layer's training workspace at that batch
# the batches a workspace table measures training workspace at by default: cuDNN's choice of algorithm, and so its
# workspace, changes in steps with the batch (MobileNet's head conv: 13 MiB at 256, 2,400 MiB at 512 on an H100), so
# the batches people train at are measured rather than interpolated
TRAIN_BATCHES = (8, 16, 32, 64, 128, 256, 512, 1024)


def workspace_table(profile, train_batches=TRAIN_BATCHES, log=lambda line: None):
    """Every layer of a GPU profile's space (`SearchSpace.enumerate_layers`) measured alone on this GPU
    (`cuda_layer_bytes`), as a table of ``key``, ``op`` (its operator) and ``peak_bytes``, with a column per batch
    of `train_batches` (``train_b<B>_bytes``): the largest cuDNN workspace the layer's training step allocates at
    that batch (`cuda_train_workspace_bytes`); and the manifest options that say how (``workspace_method``, the GPU,
    cuDNN's version, ``workspace_train_batches``).

    Raises:
        InputError: not a torch-cuda fp32 profile, no CUDA device, or a space that cannot build single layers.
    """
    import pandas as pd
    import torch
    from tqdm import tqdm

    from search_spaces import make_space

    m = profile.manifest
    if m.backend != "torch-cuda" or m.precision != "fp32":
        raise InputError(f"--profile: {m.ref} is a {m.backend} {m.precision} profile; layer workspace tables are "
                         "measured for torch-cuda fp32 profiles")
    if not torch.cuda.is_available():
        raise InputError(f"--profile: {m.ref} is a GPU profile and this machine has no CUDA device")
    space = make_space(m.space, m.space_options, m.num_classes or 1000, source=f"{m.ref} manifest")
    layers, exact = space.enumerate_layers()
    try:
        peaks = cuda_layer_bytes(space, tqdm(layers, desc=f"{m.ref}: layer memory", unit="layer"), log)
        train = {TRAIN_COLUMN.format(b): cuda_layer_train_workspace(
            space, tqdm(layers, desc=f"{m.ref}: training workspace at batch {b}", unit="layer"), b, log)
            for b in train_batches}
    except NotImplementedError as err:
        raise InputError(f"--profile: {m.ref}: {err}") from None
    how = (f"each of {'all' if exact else 'a sample of'} {len(peaks)} layers of space {m.space} alone on "
           f"{torch.cuda.get_device_name()}: torch.cuda.max_memory_allocated of an eager forward pass at batch 1; "
           "the largest cuDNN workspace of a training step (fp32) at each batch of workspace_train_batches")
    options = {"workspace_method": how, "workspace_cudnn": str(torch.backends.cudnn.version()),
               "workspace_torch": torch.__version__, "workspace_train_batches": list(train_batches)}
    ops = {str(lc.key): lc.key.op for lc in layers}
    table = pd.DataFrame({"key": list(peaks), "op": [ops[k] for k in peaks], "peak_bytes": list(peaks.values()),
                          **{c: [per[k] for k in peaks] for c, per in train.items()}})
    return table, options


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from core.cli import ArgParser
    from hardware_profiles import get_profile
    from hardware_profiles.lookup import TableProfile
    from hardware_profiles.manifest import attach_table, resolve

    p = ArgParser(prog="python -m hardware_profiles.memory",
                  description="Measure the inference memory of a profile's networks into its memory table.")
    p.add_argument("--profile", required=True, help="a measured onnxruntime-cpu or torch-cuda profile with a "
                   "networks table (its networks are measured)")
    p.add_argument("--networks", type=int, help="how many of its networks (default all)")
    p.add_argument("--workspace", action="store_true", help="measure every layer of a GPU profile's space alone "
                   "into its workspace table instead (what cuDNN allocates beside each layer's tensors)")
    p.add_argument("--train-batches", default=",".join(map(str, TRAIN_BATCHES)), metavar="B,B,...",
                   help="with --workspace: the batch sizes each layer's training workspace is measured at (default "
                   "the powers of two from 8 to 1024)")
    args = p.parse_args(argv)
    if args.networks is not None and args.networks <= 0:
        raise InputError(f"--networks: {args.networks}: expected a positive count")
    profile = get_profile(args.profile)
    if args.workspace:
        if not isinstance(profile, TableProfile):
            raise InputError(f"--profile: {args.profile} is not a measured profile")
        try:
            batches = sorted({int(b) for b in args.train_batches.split(",") if b.strip()})
        except ValueError:
            raise InputError(f"--train-batches: {args.train_batches!r}: expected batch sizes such as 32,128,512") \
                from None
        if not batches or batches[0] <= 0:
            raise InputError(f"--train-batches: {args.train_batches!r}: expected positive batch sizes")
        table, options = workspace_table(profile, batches)
        path = attach_table(resolve(args.profile), table, "workspace", options)
        print(f"{len(table)} layers -> {path}")
        return 0
    if not isinstance(profile, TableProfile) or not profile.manifest.tables.networks:
        raise InputError(f"--profile: {args.profile} is not a measured profile with a networks table")
    archs = profile.read_networks()["arch"].astype(str).tolist()[:args.networks]
    table, options = memory_table(profile, archs)
    path = attach_table(resolve(args.profile), table, "memory", options)
    print(f"{len(table)} networks -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
