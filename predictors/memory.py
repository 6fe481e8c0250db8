"""Memory a network needs, predicted from its layer shapes before anything is built or run (issue 22).

    python -m predictors.memory --space S --arch ARCH [--batch B] [--space-options FILE] [--num-classes N]
        [--optimizer sgd|adam] [--engine fused|eager|onnxruntime] [--profile GPU-PROFILE] [--budget-gb GB] [--json]

**Inference** (`inference_memory`): the parameter bytes, and the peak activation memory at batch B, the most bytes
of tensors alive at once in execution order. Layers run one after another (`SearchSpace.layer_costs`), so between
two layers only the running activation is alive; inside a layer the model walks its convolutions (`ConvSpec`) in
order and holds, at each, its input and output, with the engine behaviour the deployment runtimes share:

- BatchNorm is folded into the convolution and the activation runs in place (onnxruntime fuses both; PyTorch's
  inference-mode graphs do too), so neither adds a tensor;
- a residual block keeps its input alive until the addition, which writes into one of its operands;
- squeeze-excite gates a tensor the size of the depthwise output into a new one;
- a layer whose convolutions are not one chain (ShuffleNet's two branches, split 1x1 convolutions) holds its input
  and output beside the largest convolution's, and one without a convolution (pooling, an addition) its input and
  output; an identity holds nothing more.

onnxruntime's CPU provider (``engine="onnxruntime"``) runs a graph of its own, blocked NCHWc layout and reorders
included, and its allocation planner hands freed buffers on across layers: `predictors.ort_memory` walks that
graph with the planner's rules, to the byte on 499 of 500 held-out networks against its allocator.

PyTorch in eager mode (``engine="eager"``, what `torch.cuda.max_memory_allocated` sees of a plain `model(x)`) does
none of the fusing: BatchNorm writes a new tensor beside its conv's output, an addition a new tensor beside both
operands, and a layer's input stays alive while it runs (its caller holds it); `layer_peak` says what that adds.
What the built network's forward methods keep beside a layer (the stem's output while the body runs, MuffNet's lists
of stage and unit outputs, NAS-Bench-201's nodes and the operands `functools.reduce` holds) each space says
(`SearchSpace.held_values`). The eager walk equals the tensors an eager forward pass holds on every space
(`hardware_profiles.memory.eager_tensor_bytes`, which traces them); a GPU adds cuDNN's workspace on top.

The network's input counts throughout (the caller holds it while the network runs), parameters do not count as
activations, and a layer's precision (`CostKey.precision`, a compression policy's) sets its bytes per value.
`channel_block` rounds channel counts up as a blocked layout stores them (onnxruntime's NCHWc on x86). Where the
layers are not one chain, the space says what else is alive beside each (`SearchSpace.held_values`: a NAS-Bench-201
cell's nodes until their last edge). What the walk does not model of an engine (the layout copies onnxruntime makes
around an addition, a concatenation or a shuffle) a learned correction fits to that engine's measurements
(`MemoryCorrection`). `bench/memory_energy.py` compares the figures with onnxruntime's allocator on this CPU
(`hardware_profiles.memory`).

**Training** (`training_memory`): weights, their gradients and the optimizer's state (SGD with momentum: one buffer
per weight; Adam: two), plus the activations the backward pass keeps at batch B (per convolution two tensors of its
output's size: BatchNorm's input and the in-place activation's output, which is also what the next convolution
keeps as its input; a third where the activation's gradient needs its input, as hard-swish's and swish's do; the
copy a channel shuffle makes between a grouped conv and a depthwise one, which the depthwise conv keeps; a layer
that joins branches (ShuffleNetV2's concatenation and shuffle) makes a new tensor, which the next layer keeps as its
input through the half it reads, unless a sum is made of it first; of a join's sums only the last is kept; a
max-pool keeps its indices and the next layer its output; the network's input; less what the walk of the layers in
order meets twice, a NAS-Bench-201 node that two pooling edges keep: `SearchSpace.saved_twice`). These rules match
the tensors autograd keeps (`hardware_profiles.memory.saved_tensor_bytes`) to within 2.5 % (NAS-Bench-201's cells
of only skips and ``none``: 9 %). The backward pass frees each layer's saved activations once done with them, and
each convolution's backward holds the gradient of its output while it makes that of its input: the step's peak is
the larger of all saved activations and, walking the convolutions, what is kept up to one plus its two gradients
(``transient_bytes``; where the early layers hold most of a network, as in NAS-Bench-Macro's that start with
identities, a GPU measured the step 6.8 % above the saved activations alone). On this CPU the figure is checked
against the allocator's peak over a real training step (`hardware_profiles.memory.torch_training_bytes`): the same
tensors a GPU step allocates, less cuDNN's workspace. A naive sum (weights plus every layer's output once) is given
beside it (`naive_training_bytes`) as the baseline the published estimators are compared with. The figure is affine
in the batch, so the largest batch that fits a budget is exact (`largest_batch`): what a search with
``constraints.on_train_memory: shrink`` trains a large candidate at. On a GPU, cuDNN's workspace comes on top: a
layer's, measured alone in a training step (`hardware_profiles.memory.cuda_train_workspace_bytes`), lifts the peak
where the backward pass reaches that layer (``workspace``; MobileNet's head at batch 512 on an H100: 2,400 MiB, the
5-8 % the saved activations alone miss). A GPU profile's workspace table holds it per layer and batch, with each
layer's inference workspace, which the eager walk adds for ``max_memory_mb`` on that profile
(`WorkspaceWalk`, `profile_workspace`, `profile_memory_model`).
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import InputError, cli_entry
from hardware_profiles.memory import TRAIN_COLUMN
from search_spaces.costs import PRECISION_BITS

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 1}   # per activation value, by a layer's precision
WEIGHT_BYTES = {p: bits / 8 for p, bits in PRECISION_BITS.items()}   # per weight: int4 packs two to a byte
OPTIMIZER_STATES = {"sgd": 1, "adam": 2}   # buffers per weight (SGD: its momentum)
ENGINES = ("fused", "eager", "onnxruntime")   # how an engine keeps inference tensors (`layer_peak`,
# `predictors.ort_memory`)
MIB = 2 ** 20
# a workspace table's training columns (`hardware_profiles.memory.TRAIN_COLUMN`), their batch as the group
TRAIN_COLUMN_PATTERN = re.compile("^" + re.escape(TRAIN_COLUMN).replace(r"\{\}", r"(\d+)") + "$")
KEEPS_INPUT = ("hard_swish", "swish")   # activations whose gradient needs their input (not run in place in training)
# What a layer without a convolution keeps for the backward pass, in values, from its input and output sizes: a
# max-pool its indices (int64: two float32s each), average pooling its input (PyTorch's backward reads it), an
# identity or a zero nothing, a BatchNorm-activation-pool head its BatchNorm input and activation output, anything
# else (an addition of branches: a new tensor the next layer keeps as its input) its output.
SAVED_WITHOUT_CONV = {"maxpool": lambda i, o: 3 * o, "avgpool": lambda i, o: i, "skip": lambda i, o: 0,
                      "zero": lambda i, o: 0, "head": lambda i, o: 2 * i}


@dataclass(frozen=True)
class InferenceMemory:
    """What one network needs to run at `batch` (bytes)."""

    param_bytes: int
    activation_bytes: int   # peak of the tensors alive at once, the input included
    peak_layer: int         # index in `layer_costs` of the layer where the peak falls
    batch: int
    engine: str = "fused"   # the walk that gave the figure (``onnxruntime`` falls back to ``fused``)

    @property
    def total_bytes(self) -> int:
        """Parameters plus the activation peak: what the device must hold."""
        return self.param_bytes + self.activation_bytes

    @property
    def total_mb(self) -> float:
        """`total_bytes` in MiB (the unit of ``constraints.max_memory_mb``)."""
        return self.total_bytes / MIB


@dataclass(frozen=True)
class TrainingMemory:
    """What one training step needs at `batch` (bytes; see the module)."""

    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    saved_activation_bytes: int
    batch: int
    naive_training_bytes: int
    transient_bytes: int = 0   # how far the backward pass lifts the peak above the saved activations: the
    # gradients a convolution reads and makes, a layer's cuDNN workspace, on what the layers up to it keep

    @property
    def total_bytes(self) -> int:
        return (self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.saved_activation_bytes
                + self.transient_bytes)

    @property
    def total_gb(self) -> float:
        """`total_bytes` in GiB (the unit of ``constraints.max_train_memory_gb``)."""
        return self.total_bytes / 2 ** 30


def _chain(convs) -> bool:
    """Whether the convolutions run one after another, each on the previous one's output."""
    return all(b.cin == a.cout and b.hw_in == a.hw_out for a, b in zip(convs, convs[1:]))


def layer_peak(layer, channel_block: int = 1, engine: str = "fused") -> int:
    """The most activation values alive at once while `layer` (a `LayerCost`) runs, at batch 1 (see the module).
    `channel_block`: channel counts rounded up to a multiple of it, as a blocked layout stores them (onnxruntime's
    NCHWc on x86: 16 channels with AVX-512, 8 with AVX2); the network's 3-channel input stays as it is.
    `engine`: ``fused`` (BatchNorm folded into the conv, activations and additions in place: onnxruntime, PyTorch's
    inference graphs) or ``eager`` (PyTorch eager mode: the layer's input alive throughout, since its caller holds
    it; BatchNorm's new tensor beside the conv's output; an addition's new tensor beside both operands; branches
    one after another, a finished one's output kept until the join, and a concatenation and its shuffle two tensors
    of the layer's output size)."""
    def size(c: int, hw: int) -> int:
        return (c if c <= 4 else -(-c // channel_block) * channel_block) * hw * hw

    if engine not in ("fused", "eager"):
        raise ValueError(f"engine {engine!r}: a layer's peak is walked for fused or eager (the onnxruntime walk "
                         "is the network's: predictors.ort_memory)")
    eager = engine == "eager"
    key = layer.key
    convs = [c for c in layer.convs if not (key.se and c.hw_in == c.hw_out == 1)]   # SE's convs act on a vector
    inp, out = size(key.in_shape[0], key.in_shape[1]), size(key.out_shape[0], key.out_shape[1])
    if not convs:
        return inp if key.op == "skip" and key.in_shape == key.out_shape else inp + out
    ins, outs = [size(c.cin, c.hw_in) for c in convs], [size(c.cout, c.hw_out) for c in convs]
    if not _chain(convs) or convs[0].cin != key.in_shape[0]:
        if not eager:
            return inp + out + max(i + o for i, o in zip(ins, outs))
        # branches run one after another, each finished one's output alive until the join (a concatenation and
        # its shuffle: two tensors of the layer's output size; an addition: the sum beside both operands)
        done, steps = 0, []
        for n, (i, o) in enumerate(zip(ins, outs)):
            opens = n == 0 or not _chain(convs[n - 1:n + 1])   # a branch's first conv reads the layer's input
            done += outs[n - 1] if opens and n else 0
            steps.append(done + max(0 if opens else i, o) + o)
        return inp + max(max(steps), (3 if key.skip else 2) * out)
    # the residual's operand, alive until the addition; in eager mode the caller's reference keeps any input alive
    kept = inp if key.skip or eager else 0
    steps = [i + o + (kept if n else 0) for n, (i, o) in enumerate(zip(ins, outs))]
    if eager:   # BatchNorm's (or a separate activation's) new tensor beside the conv's output
        steps += [kept + 2 * o for o in outs]
    if convs[0].hw_in != key.in_shape[1]:   # a layer that pools before its first conv (a classifier head)
        steps.append(inp + ins[0])
    if key.se and len(convs) > 1:   # the gate multiplies the depthwise output into a new tensor
        steps.append(2 * outs[1] + kept)
    if out > outs[-1]:   # a layer that ends past its last conv (pooling, a pad)
        steps.append(outs[-1] + out)
    if eager and key.skip:   # the addition's new tensor beside both operands
        steps.append(kept + 2 * out)
    return max(steps)


def _elems(shape: Sequence[int]) -> int:
    c, h, w = shape
    return c * h * w


def _weight_bytes(layers) -> int:
    return int(sum(lc.params * WEIGHT_BYTES.get(lc.key.precision, 4.0) for lc in layers))


def inference_memory(space, arch: Hashable, batch: int = 1, channel_block: int = 1,
                     engine: str = "fused", workspace: Mapping[str, int] | None = None) -> InferenceMemory:
    """Parameter bytes and peak activation bytes of `arch` at `batch` (see the module; `channel_block` and
    `engine`: `layer_peak`'s). ``engine="onnxruntime"`` walks the graph onnxruntime's CPU provider runs, with its
    allocation planner (`predictors.ort_memory`; `channel_block` is its NCHWc block, 1 where it has none, as off
    x86); a network that walk does not build (a layer it has no rule for, a quantized one) gets the fused walk.
    `workspace`: bytes a layer's kernels allocate beside its tensors while it runs, by its cost key (`str`), added
    to that layer's peak: cuDNN's workspace, as `cuda_workspace_bytes` measures it on a GPU
    at batch 1, so at batch 1 only (the other walks; layers it does not name add nothing).

    Raises:
        ValueError: `batch` is not positive, or an unknown engine.
    """
    if batch <= 0:
        raise ValueError(f"batch {batch}: expected a positive batch size")
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    layers = space.layer_costs(arch)
    held = _elems(space.input_shape(arch)[1:]) * 4   # the caller's input, alive throughout the run
    if engine == "onnxruntime":
        from predictors.ort_memory import NotModelled, ort_graph, plan_peak

        try:
            peak, top = plan_peak(ort_graph(space, arch, channel_block, layers))
        except NotModelled:
            engine = "fused"
        else:
            return InferenceMemory(_weight_bytes(layers), (held + peak) * batch, top, batch, engine)
    peaks = [layer_peak(lc, channel_block, engine) * BYTES.get(lc.key.precision, 4) for lc in layers]
    peaks[0] -= _elems(layers[0].key.in_shape) * BYTES.get(layers[0].key.precision, 4)   # that input, counted once
    # what the engine keeps beside each layer (eager: the stem's output, ...; a cell's nodes)
    beside = space.held_values(arch, engine, layers)
    peaks = [p + v * BYTES.get(lc.key.precision, 4) for p, v, lc in zip(peaks, beside, layers)]
    if workspace and batch == 1:
        peaks = [p + workspace.get(str(lc.key), 0) for p, lc in zip(peaks, layers)]
    top = max(range(len(peaks)), key=peaks.__getitem__)
    return InferenceMemory(_weight_bytes(layers), int((held + peaks[top]) * batch), top, batch, engine)


def training_memory(space, arch: Hashable, batch: int, optimizer: str = "sgd",
                    workspace: Mapping[str, int] | None = None) -> TrainingMemory:
    """Training-step memory of `arch` at `batch` in fp32 with `optimizer` (``sgd`` with momentum, ``adam``).
    The backward walk (see the module) lifts the peak above the saved activations by ``transient_bytes``.
    `workspace`: the largest cuDNN workspace each layer's training step allocates at this batch, by its cost key
    (`str`; `hardware_profiles.memory.cuda_layer_train_workspace` measures it on a GPU), which sits on top of what
    is kept up to that layer and its gradients (MobileNet's head convolution at batch 512 on an H100: 2,400 MiB,
    which the saved activations alone miss by 5-8 %). Layers it does not name add nothing.

    Raises:
        ValueError: `batch` is not positive, or an unknown optimizer.
    """
    if batch <= 0:
        raise ValueError(f"batch {batch}: expected a positive batch size")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZER_STATES)}")
    layers = space.layer_costs(arch)
    weights = sum(lc.params for lc in layers) * 4
    saved = _elems(space.input_shape(arch)[1:])   # the input, which the first convolution keeps
    steps = []   # the backward walk: (values kept up to a conv, its gradients' values, its layer's key)
    for n, lc in enumerate(layers):
        key = lc.key
        convs = [c for c in lc.convs if not (key.se and c.hw_in == c.hw_out == 1)]
        for i, c in enumerate(convs):
            out = c.cout * c.hw_out ** 2
            saved += 2 * out   # BatchNorm's input (the conv's output) and the in-place activation's output, which
            # is also the next conv's saved input
            if key.act in KEEPS_INPUT and key.op != "classifier" and (i < len(convs) - 1 or len(convs) == 1):
                saved += out   # an activation whose gradient needs its input cannot run in place
            if 1 < c.groups < c.cin and i + 1 < len(convs) and convs[i + 1].groups == convs[i + 1].cin > 1:
                saved += out   # the channel shuffle between a grouped conv and a depthwise one: a copy, which
                # the depthwise conv keeps
            # its backward holds the gradient of its output and makes that of its input (none for the image)
            steps.append((saved, out + (c.cin * c.hw_in ** 2 if n or i else 0), key))
        if key.se and len(convs) > 1:
            saved += convs[1].cout * convs[1].hw_out ** 2   # the gated tensor, the projection's input
        joins = bool(convs) and (not _chain(convs) or convs[-1].cout != key.out_shape[0])
        then_add = n + 1 < len(layers) and layers[n + 1].key.op == "add"
        if joins and not then_add:   # branches joined (a concatenation, a shuffle): a new tensor, which the next
            saved += _elems(key.out_shape)   # layer keeps as its input, unless a sum is made of it first
        if not convs and not (key.op == "add" and then_add):   # a sum another is added to is kept by nobody
            saved += SAVED_WITHOUT_CONV.get(key.op, lambda i, o: o)(_elems(key.in_shape), _elems(key.out_shape))
        if not convs and key.op not in ("skip", "zero"):   # pooling, an addition: its output's and input's gradients
            steps.append((saved, _elems(key.in_shape) + _elems(key.out_shape), key))
    saved -= space.saved_twice(arch)   # a tensor the walk met more than once (a cell's node several edges keep)
    workspace = workspace or {}
    peak = max((4 * batch * (min(k, saved) + grads) + workspace.get(str(key), 0) for k, grads, key in steps),
               default=0)
    naive = weights + 4 * batch * sum(_elems(lc.key.out_shape) for lc in layers)
    return TrainingMemory(weights, weights, OPTIMIZER_STATES[optimizer] * weights, 4 * batch * saved, batch, naive,
                          max(0, peak - 4 * batch * saved))


def largest_batch(space, arch: Hashable, limit_bytes: float, optimizer: str = "sgd",
                  workspace_at: Callable[[int], Mapping[str, int]] | None = None) -> int:
    """The largest batch size whose training step (`training_memory`) fits in `limit_bytes`; 0 when not even one
    sample does. Exact, not searched: the step's memory is affine in the batch (what is held per weight, plus the
    saved activations and the backward pass's gradients of each sample). `workspace_at`: each layer's cuDNN
    workspace at a batch (`WorkspaceWalk.train_workspace`), which is not affine and only adds:
    then the largest batch up to the affine answer whose step with it fits, by bisection (which assumes the step
    does not shrink as the batch grows: a layer's workspace can, 173 MiB at 32 and 37.5 MiB at 64 on an H100, but
    the saved activations grow by more)."""
    one = training_memory(space, arch, 1, optimizer)
    per_sample = one.saved_activation_bytes + one.transient_bytes
    top = max(0, int((limit_bytes - (one.total_bytes - per_sample)) // per_sample))
    if workspace_at is None:
        return top
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if training_memory(space, arch, mid, optimizer, workspace_at(mid)).total_bytes <= limit_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def memory_features(space, archs: Sequence[Hashable], channel_block: int = 1, engine: str = "fused") -> np.ndarray:
    """Features of a memory correction: the log of the analytic activation peak (column 0; `channel_block` and
    `engine`: `inference_memory`'s) and of the parameter bytes, the operator, channels and side of the peak's
    layer, then the space's encoding of each arch (`SearchSpace.encode`)."""
    from predictors.features import OPS

    rows = []
    for arch in archs:
        mem = inference_memory(space, arch, channel_block=channel_block, engine=engine)
        key = space.layer_costs(arch)[mem.peak_layer].key
        rows.append([np.log(mem.activation_bytes), np.log1p(mem.param_bytes), float(OPS.index(key.op))
                     if key.op in OPS else -1.0, key.in_shape[0], key.out_shape[0], key.in_shape[1]])
    return np.hstack([np.asarray(rows), np.asarray(space.encode(list(archs)), dtype=np.float64)])


class MemoryCorrection:
    """The analytic activation peak (`inference_memory`) fitted to one engine's measurements: LightGBM on
    `memory_features` predicts the log of measured / analytic, as the latency predictors' network correction
    does for their block sum. It learns what the analytic walk does not model of an engine (onnxruntime's blocked
    layout copies around an addition, a concatenation or a channel shuffle; NAS-Bench-201's cells, whose nodes are
    alive together); `bench/memory_energy.py` judges it on held-out networks.

    Args:
        space: the space the networks come from.
        channel_block: the analytic walk's `channel_block` (onnxruntime on x86: 16 with AVX-512, 8 with AVX2).
        engine: the analytic walk's `engine` (``onnxruntime`` for its CPU provider, ``eager`` for PyTorch eager
            mode; ``fused`` for tables measured before the onnxruntime walk).
    """

    def __init__(self, space, channel_block: int = 1, seed: int = 0, engine: str = "fused"):
        self.space, self.channel_block, self.seed, self.engine = space, channel_block, seed, engine
        self.booster = None

    def fit(self, archs: Sequence[Hashable], measured_bytes: Sequence[float]) -> MemoryCorrection:
        import lightgbm as lgb

        x = memory_features(self.space, archs, self.channel_block, self.engine)
        y = np.log(np.asarray(measured_bytes, float)) - x[:, 0]
        model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=8, min_child_samples=5,
                                  subsample=0.8, subsample_freq=1, random_state=self.seed, verbose=-1, n_jobs=1)
        self.booster = model.fit(x, y).booster_
        return self

    def predict(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Activation peak bytes of each arch: the analytic figure times the learned ratio."""
        x = memory_features(self.space, archs, self.channel_block, self.engine)
        return np.exp(x[:, 0] + self.booster.predict(x))


def profile_memory_correction(profile, space, seed: int = 0) -> MemoryCorrection:
    """A `MemoryCorrection` fitted to `profile`'s memory table (`hardware_profiles.memory` measures one), from the
    walk of the engine it was measured with (manifest options ``memory_engine``, ``memory_channel_block``), its
    archs read in `space`: what a recipe's ``max_memory_mb`` on that profile checks a candidate with.

    Raises:
        ValueError: the profile has no memory table, it is not the one the manifest recorded or cannot be read
            (`TableProfile.table`), it holds fewer than 5 networks, or an arch not of `space`.
    """
    m = profile.manifest
    if not getattr(m.tables, "memory", None):
        raise ValueError(f"{m.ref} has no memory table (python -m hardware_profiles.memory measures one)")
    table = profile.table("memory")
    if len(table) < 5:
        raise ValueError(f"{m.table_path(profile.folder, 'memory')}: a memory correction needs 5 or more networks "
                         f"(got {len(table)})")
    archs = [space.decode(str(a)) for a in table["arch"]]
    return MemoryCorrection(space, int(m.options.get("memory_channel_block", 1)), seed,
                            str(m.options.get("memory_engine", "fused"))).fit(
        archs, table["activation_bytes"].to_numpy(float))


def cuda_workspace_bytes(space, layers, log=lambda line: None) -> dict[str, int]:
    """Each distinct layer's workspace on this GPU at batch 1: the layer alone, run as
    `hardware_profiles.memory.cuda_memory_bytes` runs a network in eager inference (`cuda_layer_bytes`), less the
    tensors the eager walk counts for it (`workspace_of`): what cuDNN's algorithm for its convolutions allocates
    beside them. Keyed by the layer's cost key (`str`), for `inference_memory`'s ``workspace``."""
    from hardware_profiles.memory import cuda_layer_bytes

    return workspace_of(layers, cuda_layer_bytes(space, layers, log))


def workspace_of(layers, peaks: Mapping[str, int]) -> dict[str, int]:
    """What each layer (`LayerCost`) whose cost key `peaks` names holds beyond the tensors the eager walk counts for
    it (`layer_peak`), from its measured eager peak alone at batch 1 (`peaks`, by `str` of the key: a profile's
    workspace table); 0 where it holds nothing more."""
    return {str(lc.key): max(0, int(peaks[str(lc.key)]) - 4 * layer_peak(lc, engine="eager"))
            for lc in layers if str(lc.key) in peaks}


class WorkspaceWalk:
    """A GPU profile's memory model from its workspace table, no network measured and nothing fitted: for inference,
    the eager walk plus each layer's workspace (`workspace_of`); for training, each layer's cuDNN workspace in a
    training step (`train_workspace`, what `training_memory` adds). A layer the table does not name (a space option
    or a class count the profile was not measured with) is given the largest workspace of the layers of its operator
    the table names (the table's largest where it names none of them), a bound rather than a guess, and counted in
    `unmeasured`. Predicts as `MemoryCorrection` does.

    Args:
        space: the space the networks come from.
        peaks: each layer's eager peak alone at batch 1, by `str` of its cost key (the table's ``peak_bytes``).
        train: each layer's largest workspace in a training step, by batch size, then by key (its
            ``train_b<B>_bytes`` columns); empty where the table has none.
        ops: each key's operator (the table's ``op`` column); without it, the table's largest is every bound.
        inference: each key's inference workspace (`workspace_of` of the layers of the space the table was measured
            on: `profile_workspace`); without it, that of the layers of `space` the table names, where needed.
    """

    engine = "eager"

    def __init__(self, space, peaks: Mapping[str, int], train: Mapping[int, Mapping[str, int]] | None = None,
                 ops: Mapping[str, str] | None = None, inference: Mapping[str, int] | None = None):
        self.space, self.peaks, self.ops = space, dict(peaks), dict(ops or {})
        self.train = {int(b): dict(per) for b, per in sorted((train or {}).items())}
        self._inference = dict(inference) if inference is not None else None
        self.unmeasured: set[str] = set()

    def _bound(self, per: Mapping[str, int], lc) -> float:
        """The bound for a layer `per` does not name: the largest of its operator's layers there, else the
        largest of all."""
        same = [v for k, v in per.items() if self.ops.get(k) == lc.key.op]
        return max(same or per.values() or [0])

    def workspace(self, layers) -> dict[str, int]:
        """Each layer's inference workspace (bytes at batch 1, by `str` of its cost key); a bound where the table
        names none (see the class)."""
        missing = [lc for lc in layers if str(lc.key) not in self.peaks]
        if missing and self._inference is None:
            self._inference = workspace_of(self.space.enumerate_layers()[0], self.peaks)
        self.unmeasured |= {str(lc.key) for lc in missing}
        return {**workspace_of(layers, self.peaks),
                **{str(lc.key): int(self._bound(self._inference, lc)) for lc in missing}}

    def train_workspace(self, layers, batch: int) -> dict[str, int]:
        """Each layer's largest cuDNN workspace in a training step at `batch` (bytes, by `str` of its cost key), for
        `training_memory`'s ``workspace``: as measured where the table has the batch, else interpolated linearly
        between the two measured batches around it, and beyond them in proportion to the batch from the nearest
        (a workspace grows with the tensors it works on); a bound where the table names the layer not (see the
        class). cuDNN picks its algorithm in steps with the batch, so between two measured batches the figure can
        be high (MobileNet's head on an H100: 13 MiB at 256, 2,400 MiB at 512; at 384 the interpolation says 1,200
        and the step takes none). Empty when the table measured no training workspace."""
        if not self.train:
            return {}
        batches = list(self.train)
        lo = max((b for b in batches if b <= batch), default=None)
        hi = min((b for b in batches if b >= batch), default=None)

        def at(b: int, lc) -> float:
            per = self.train[b]
            return per[str(lc.key)] if str(lc.key) in per else self._bound(per, lc)

        out = {}
        for lc in layers:
            if str(lc.key) not in self.train[batches[0]]:
                self.unmeasured.add(str(lc.key))
            if lo is not None and hi is not None:
                v0, v1 = at(lo, lc), at(hi, lc)
                value = v0 if hi == lo else v0 + (v1 - v0) * (batch - lo) / (hi - lo)
            else:
                near = lo if hi is None else hi
                value = at(near, lc) * batch / near
            out[str(lc.key)] = int(round(value))
        return out

    def predict(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Activation peak bytes of each arch at batch 1: the eager walk, each layer's workspace added."""
        return np.asarray([inference_memory(self.space, a, engine="eager",
                                            workspace=self.workspace(self.space.layer_costs(a))).activation_bytes
                           for a in archs], float)


def profile_workspace(profile, space) -> WorkspaceWalk:
    """`profile`'s workspace table (`hardware_profiles.memory.workspace_table`) as a `WorkspaceWalk` on `space`; its
    training batches are those of its ``train_b<B>_bytes`` columns.

    Raises:
        ValueError: not a GPU profile, no workspace table, a damaged one (a training column holding a value that is
            not a finite non-negative number: the file, line and column named), or one that names no layer of
            `space`.
    """
    import pandas as pd

    from search_spaces import make_space

    m = profile.manifest
    if not getattr(m.tables, "workspace", None):
        if m.backend != "torch-cuda":
            raise ValueError(f"{m.ref} is a {m.backend} profile; workspace tables are measured on GPU (torch-cuda "
                             "fp32) profiles")
        raise ValueError(f"{m.ref} has no workspace table (python -m hardware_profiles.memory --profile {m.name} "
                         "--workspace measures one on its GPU)")
    try:
        table = profile.table("workspace")
    except InputError as err:
        raise ValueError(str(err)) from None
    path = m.table_path(profile.folder, "workspace")
    keys = table["key"].astype(str)
    train = {}
    for column in table.columns:
        match = TRAIN_COLUMN_PATTERN.match(str(column))
        if not match:
            continue
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{path}: line {row + 2 if path.suffix == '.csv' else row + 1}, column {column!r}: "
                             f"{str(table[column].iloc[row])!r} is not a workspace in bytes")
        train[int(match.group(1))] = dict(zip(keys, values.astype(np.int64)))
    ops = dict(zip(keys, table["op"].astype(str))) if "op" in table.columns else None
    peaks = dict(zip(keys, table["peak_bytes"].astype(np.int64)))
    measured_on = make_space(m.space, m.space_options, m.num_classes or 1000, source=f"{m.ref} manifest")
    model = WorkspaceWalk(space, peaks, train, ops, workspace_of(measured_on.enumerate_layers()[0], peaks))
    if not any(str(lc.key) in model.peaks for lc in space.layer_costs(space.smallest())):
        raise ValueError(f"{path}: names no layer of space {space.name} with these options (its profile was "
                         f"measured on {m.space} {m.space_options or ''})")
    return model


def profile_memory_model(profile, space, seed: int = 0):
    """What a recipe's ``max_memory_mb`` on `profile` checks a candidate with: the eager walk with the profile's
    layer workspace table where it has one (`profile_workspace`, exact on every network measured), else the
    correction fitted to its memory table (`profile_memory_correction`).

    Raises:
        ValueError: the profile has neither table, or one that cannot be used.
    """
    if getattr(profile.manifest.tables, "workspace", None):
        return profile_workspace(profile, space)
    return profile_memory_correction(profile, space, seed)


def main_report(space, arch: Hashable, batch: int, optimizer: str, engine: str = "fused",
                channel_block: int = 1, profile=None) -> dict:
    """The figures `python -m predictors.memory` prints; with a GPU `profile`'s workspace table
    (`WorkspaceWalk`), inference is the eager walk with each layer's workspace (which is
    measured at batch 1, so added at batch 1 only) and training adds each layer's training workspace."""
    layers = space.layer_costs(arch)
    inf = inference_memory(space, arch, batch, channel_block, engine,
                           profile.workspace(layers) if profile is not None else None)
    train = training_memory(space, arch, batch, optimizer,
                            profile.train_workspace(layers, batch) if profile is not None else None)
    return {"arch": space.to_string(arch), "batch": batch,
            "inference": {**{k: v for k, v in asdict(inf).items() if k != "batch"}, "total_mb": round(inf.total_mb, 3),
                          "channel_block": channel_block},
            "training": {**{k: v for k, v in asdict(train).items() if k != "batch"}, "optimizer": optimizer,
                         "total_gb": round(train.total_gb, 4)}}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import json

    from core.cli import ArgParser, read_space_options
    from search_spaces import make_space

    p = ArgParser(prog="python -m predictors.memory",
                  description="Inference and training memory of one architecture, predicted from its layer shapes.")
    p.add_argument("--space", required=True, help="registered search space")
    p.add_argument("--arch", required=True, help="the architecture's canonical string in that space")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--space-options", metavar="FILE", help="YAML file with the space's options")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZER_STATES), default="sgd",
                   help="the training optimizer's state per weight (default sgd: momentum)")
    p.add_argument("--engine", choices=ENGINES,
                   help="inference as an engine that fuses BatchNorm and runs activations in place (fused: "
                        "onnxruntime, TensorRT; the default), as PyTorch eager mode keeps tensors (eager), or as "
                        "onnxruntime's CPU provider runs its own graph with its allocation planner (onnxruntime); "
                        "eager with --profile")
    p.add_argument("--channel-block", type=int, metavar="N",
                   help="channels per block of a blocked layout: onnxruntime's NCHWc (default with --engine "
                        "onnxruntime: this machine's, 16 with AVX-512 and 8 with AVX2; 1: none, as off x86); "
                        "the other engines' walks round channels up to it (default 1)")
    p.add_argument("--profile", metavar="P", help="a GPU profile with a workspace table (gpu-h100-fp32-b1): add "
                   "each layer's cuDNN workspace, measured on its GPU, to both figures (inference as PyTorch eager "
                   "mode holds it)")
    p.add_argument("--budget-gb", type=float, metavar="GB",
                   help="also the largest batch size whose training step fits in this many GiB")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.batch <= 0:
        raise InputError(f"--batch: {args.batch}: expected a positive batch size")
    if args.budget_gb is not None and args.budget_gb <= 0:
        raise InputError(f"--budget-gb: {args.budget_gb}: expected a positive size in GiB")
    if args.channel_block is not None and args.channel_block <= 0:
        raise InputError(f"--channel-block: {args.channel_block}: expected a positive channel count")
    if args.profile is not None and args.engine not in (None, "eager"):
        raise InputError(f"--engine: {args.engine}: a GPU profile's workspace adds to PyTorch eager mode's tensors; "
                         "leave --engine out (or eager) with --profile")
    if args.profile is not None and args.channel_block not in (None, 1):
        raise InputError(f"--channel-block: {args.channel_block}: a GPU keeps no blocked layout; leave it out with "
                         "--profile")
    engine = args.engine or ("eager" if args.profile is not None else "fused")
    block = args.channel_block
    if block is None:
        from hardware_profiles.memory import ort_channel_block

        block = ort_channel_block() if engine == "onnxruntime" else 1
    space = make_space(args.space, read_space_options(args.space_options) or {}, args.num_classes,
                       source=args.space_options or "--space-options")
    try:
        arch = space.decode(args.arch)
    except ValueError as err:
        raise InputError(f"--arch: {err}") from None
    model = None
    if args.profile is not None:
        from hardware_profiles import get_profile

        try:
            model = profile_workspace(get_profile(args.profile), space)
        except ValueError as err:   # (InputError too: an unknown profile)
            raise InputError(f"--profile: {err}") from None
    report = main_report(space, arch, args.batch, args.optimizer, engine, block, model)
    if args.budget_gb is not None:
        at = None if model is None else (lambda b: model.train_workspace(space.layer_costs(arch), b))
        report["training"]["largest_batch"] = largest_batch(space, arch, args.budget_gb * 2 ** 30, args.optimizer, at)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    inf, train = report["inference"], report["training"]
    print(f"{report['arch']} at batch {args.batch}")
    rows = [("inference: parameters", inf["param_bytes"]),
            (f"inference: activation peak ({inf['engine']}{f', block {block}' if block > 1 else ''}"
             + (f", {args.profile} workspace" if model is not None and args.batch == 1 else
                ", workspace measured at batch 1, not added" if model is not None else "") + ")",
             inf["activation_bytes"]),
            ("inference: total", inf["param_bytes"] + inf["activation_bytes"]),
            ("training: weights", train["weight_bytes"]), ("training: gradients", train["gradient_bytes"]),
            (f"training: {args.optimizer} state", train["optimizer_bytes"]),
            ("training: saved activations", train["saved_activation_bytes"]),
            ("training: backward pass above them" + (" (+ cuDNN workspace)" if model is not None else ""),
             train["transient_bytes"]),
            ("training: total", round(train["total_gb"] * 2 ** 30)),
            ("training: naive sum (weights + outputs)", train["naive_training_bytes"])]
    width = max(52, *(len(name) for name, _ in rows))
    for name, value in rows:
        print(f"  {name:<{width}} {value / MIB:>12.3f} MiB")
    if args.budget_gb is not None:
        print(f"  {'training: largest batch within ' + format(args.budget_gb, 'g') + ' GiB':<{width}} "
              f"{train['largest_batch']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
