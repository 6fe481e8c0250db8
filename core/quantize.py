"""int8 post-training static quantization of an ONNX graph with onnxruntime: one recipe for every layer above
(and PyTorch's PT2E flow, `quantize_pt2e`, where a network will run in PyTorch; `prepare_qat` and `convert_qat`
for quantization-aware training in that flow).

QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into int8 kernels), per-channel int8
weights, uint8 activations, MinMax activation ranges from calibration batches; the graph is pre-processed first
(`quant_pre_process`: BatchNorm folded into the convolutions, so the weights are quantized per output channel as
they run). `nas.compression` calibrates on an evaluator's training images (the accuracy of an int8 network);
the ``int8`` precision of the onnxruntime timing backend (`hardware_profiles.backends`) calibrates on seeded
random inputs, which give the same graph and kernels, hence the same latency.

A network may carry the names of the submodules to quantize in an ``int8_modules`` attribute (a compression
policy's int8 units, `search_spaces.policy`): `int8_plan` reads it, and everything that quantizes or times a
network quantizes exactly those (an empty tuple: nothing, the fp32 graph).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from core.io import atomic_write


def module_prefix(name: str, root=None) -> str:
    """The prefix of the ONNX node names of submodule `name` of `root` as PyTorch's TorchScript exporter scopes
    them: one scope per module called on the way down, each named by its qualified name from the last atom that is
    not a number (torch.onnx's own rule): ``blocks.2`` -> ``/blocks/blocks.2/``, ``backbone.stem`` ->
    ``/backbone/stem/``. A module without a forward of its own (a `ModuleList`, a `ModuleDict`, a plain
    `nn.Module` holding others) is never called, so it adds no scope: MuffNet's ``backbone.stages.1`` ->
    ``/backbone/stages.1/``. Without `root`, every module on the way counts as called (``""``, the whole network:
    ``/``). A module that has a forward but whose parent calls its children directly would be scoped wrongly;
    none of the spaces' networks has one (tests/test_policy.py checks every space's units against the export)."""
    from torch import nn

    parts = name.split(".") if name else []
    scopes, module = [], root
    for i, atom in enumerate(parts):
        module = module.get_submodule(atom) if module is not None else None
        if module is not None and type(module).forward is nn.Module.forward:
            continue
        start = max((j for j in range(i + 1) if not parts[j].isnumeric()), default=0)
        scopes.append(".".join(parts[start:i + 1]))
    return "/" + "".join(f"{scope}/" for scope in scopes)


def _unshare_initializers(model) -> None:
    """Give every node its own copy of each constant it reads (in place).

    PyTorch's exporter stores equal tensors once: the folded biases of an untrained network's convolutions are
    all zeros, so convolutions of one width share one bias. When only some units are quantized, the quantizer
    quantizes a shared constant for its int8 readers and hands the fp32 readers a DequantizeLinear of it; an fp32
    convolution whose bias is no longer a constant loses onnxruntime's blocked-layout (NCHWc) kernels, and a wide
    depthwise one then runs ten times slower (measured: the fp32 block after an int8 unit of NAS-Bench-Macro,
    0.07 -> 0.71 ms, making the network 1.6x slower than in fp32). A trained network rarely shares, so without
    this every policy would be timed, and its tables measured, slower than it ships."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    names, seen = set(inits) | {v.name for v in model.graph.value_info}, set()
    for node in model.graph.node:
        for j, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = next(n for k in range(len(names) + 1) if (n := f"{name}_copy{k}") not in names)
                names.add(copy.name)
                model.graph.initializer.append(copy)
                node.input[j] = copy.name
            seen.add(name)


def _fp32_nodes(prepared: Path, modules: Sequence[str], root=None) -> list[str]:
    """Names of the nodes of the graph at `prepared` outside every module of `modules` (submodules of the exported
    network `root`: `module_prefix`), after naming its
    unnamed nodes (the pre-processing leaves some, e.g. a decomposed hard-swish) after the node that feeds them,
    so each lands in its producer's module, and giving every node its own constants (`_unshare_initializers`);
    the graph is saved back so."""
    import onnx

    model = onnx.load(str(prepared))
    _unshare_initializers(model)
    producer = {out: node.name for node in model.graph.node for out in node.output}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            scope = producer.get(node.input[0], "") if node.input else ""
            node.name = f"{scope.rsplit('/', 1)[0]}/{node.op_type}_unnamed{i}"
            producer.update({out: node.name for out in node.output})
    onnx.save(model, str(prepared))
    prefixes = tuple(module_prefix(m, root) for m in modules)
    return [node.name for node in model.graph.node if not node.name.startswith(prefixes)]


def quantize_onnx_int8(fp32: str | Path, out: str | Path, batches: Iterable[np.ndarray],
                       modules: Sequence[str] | None = None, root=None) -> Path:
    """Quantize the ONNX graph `fp32` (one input, named ``input`` by `core.timing.export_onnx`) to int8 QDQ at
    `out` (written atomically), activation ranges calibrated on `batches` (arrays of the graph's input shape).

    With `modules` (names of submodules of the exported network, e.g. a compression policy's int8 units), only
    the nodes of those modules are quantized; the rest stay fp32, with a (de)quantization at each boundary. Pass
    the exported network as `root` so that the names are read as the exporter scoped them (`module_prefix`).

    Raises:
        RuntimeError: onnxruntime could not quantize it (its quantizer fails with bare assertions, e.g. on ranges
            that are not finite); the message says so.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    prepared = out.with_name(f".{out.name}.pre.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch, dtype=np.float32)}

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)   # the quantizer logs advice on every call
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        excluded = _fp32_nodes(prepared, modules, root) if modules is not None else []
        atomic_write(out, lambda tmp: quantize_static(
            str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded))
    except Exception as err:   # noqa: BLE001 - say where it failed, whatever the quantizer raised
        raise RuntimeError(f"onnxruntime could not quantize {fp32}: {type(err).__name__}: {err}") from err
    finally:
        logger.setLevel(level)
        prepared.unlink(missing_ok=True)
    return out


def int8_plan(module) -> tuple[str, ...] | None:
    """The submodules `module` asks to run int8 (its ``int8_modules``), or None when it does not say."""
    plan = getattr(module, "int8_modules", None)
    return None if plan is None else tuple(plan)


def int4_plan(module) -> tuple[str, ...]:
    """The submodules of `module` whose weights are 4-bit (its ``int4_modules``; a compression policy's int4
    units, which are in its int8 plan too)."""
    return tuple(getattr(module, "int4_modules", ()))


def round_weights(module, names: Sequence[str], bits: int = 4):
    """A copy of `module` whose convolution and linear weights inside the submodules `names` are rounded to
    `bits`-bit symmetric per-output-channel values (scale: the channel's largest magnitude over 2^(bits-1) - 1):
    what a `bits`-bit-weight accelerator computes with. BatchNorm folded in later scales whole output channels,
    so the values stay on a per-channel `bits`-bit grid, which the int8 quantizer then represents to within half
    an int8 step."""
    import copy

    import torch

    out = copy.deepcopy(module)
    levels = 2 ** (bits - 1) - 1
    prefixes = tuple(f"{n}." for n in names if n)
    with torch.no_grad():
        for name, sub in out.named_modules():
            inside = "" in names or any(f"{name}.".startswith(p) for p in prefixes)
            if inside and isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear)):
                w = sub.weight
                scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / levels
                shape = (-1,) + (1,) * (w.dim() - 1)
                w.copy_((w / scale.view(shape)).round().clamp(-levels, levels) * scale.view(shape))
    return out


def refuse_int8_plan(module, engine: str) -> None:
    """Raise `InputError` when `module` asks for int8 submodules (`int8_plan`) that `engine` cannot run."""
    from core.errors import InputError

    if int8_plan(module):
        raise InputError(f"{engine} cannot run a compression policy's int8 layers ({', '.join(int8_plan(module))}); "
                         "time them with onnxruntime-cpu")


def pt2e_flow() -> tuple:
    """torchao's PT2E pieces `quantize_pt2e` and `prepare_qat` use: (prepare_pt2e, prepare_qat_pt2e, convert_pt2e,
    X86InductorQuantizer, its default configuration); importing them is how a recipe checks that torchao works
    with this torch (`nas.checks`)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    return (prepare_pt2e, prepare_qat_pt2e, convert_pt2e, X86InductorQuantizer,
            get_default_x86_inductor_quantization_config)


def quantize_pt2e(model, example: np.ndarray, batches: Iterable[np.ndarray]):
    """`model` quantized to int8 by PyTorch's PT2E flow (the ``torchao`` package, not the deprecated eager
    ``torch.ao.quantization`` API): captured with `torch.export` at `example`'s shape, annotated by torchao's
    `X86InductorQuantizer` in its default configuration (int8 weights symmetric per output channel, uint8
    activations with ranges observed on `batches`, BatchNorm folded into the convolutions), converted. The result
    is a `torch.fx.GraphModule` that computes the int8 network in reference form (quantize/dequantize around each
    kernel), the numerics of the int8 kernels `torch.compile` lowers it to on x86. A network asking for only some
    int8 units (a compression policy) is refused: policies are timed and scored with onnxruntime.

    Raises:
        ModuleNotFoundError: torchao is not installed (the ``torchao`` extra).
    """
    import copy

    import torch

    prepare_pt2e, _, convert_pt2e, X86InductorQuantizer, config = pt2e_flow()
    refuse_int8_plan(model, "PT2E")
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        graph = torch.export.export(net, (torch.from_numpy(example),)).module()
        prepared = prepare_pt2e(graph, X86InductorQuantizer().set_global(config()))
        for batch in batches:
            prepared(torch.from_numpy(batch))
        return convert_pt2e(prepared)


def prepare_qat(model, example: np.ndarray):
    """`model` (a copy) ready for quantization-aware training in PyTorch's PT2E flow: captured with `torch.export`
    in training mode (any batch size; `example` gives the rest of the shape), then given torchao's fake-quantize
    nodes by `X86InductorQuantizer` in its QAT configuration (the same int8 scheme as `quantize_pt2e`; BatchNorm
    kept and folded into the convolutions as training goes, ranges tracked by moving averages, so no calibration
    set is needed). Train the result like the network itself (``.train()``/``.eval()`` work on it; in eval mode
    the ranges are frozen, so scoring it changes nothing), then `convert_qat` makes the int8 network. The same
    model and example give the same graph, so the state dict of a trained one loads into a fresh one (how an
    exported QAT network is remade, `nas.compression.export_int8`).

    Raises:
        ModuleNotFoundError: torchao is not installed (the ``torchao`` extra).
    """
    import copy
    import types

    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.fake_quantize import disable_observer, enable_observer

    _, prepare_qat_pt2e, _, X86InductorQuantizer, config = pt2e_flow()
    refuse_int8_plan(model, "PT2E")
    net = copy.deepcopy(model).train()
    graph = torch.export.export(net, (torch.from_numpy(example),),
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).module()
    prepared = prepare_qat_pt2e(graph, X86InductorQuantizer().set_global(config(is_qat=True)))
    allow_exported_model_train_eval(prepared)   # .train()/.eval() switch BatchNorm (export fixed the mode)
    set_mode = prepared.train

    def train(self, mode: bool = True):
        # the ranges are learnt in training only: in eval mode they are frozen, as BatchNorm's statistics are
        # (else scoring the graph on validation images would move them, and the int8 network would differ)
        set_mode(mode)
        self.apply(enable_observer if mode else disable_observer)
        return self

    prepared.train = types.MethodType(train, prepared)
    prepared.eval = types.MethodType(lambda self: self.train(False), prepared)
    return prepared


def convert_qat(prepared):
    """The int8 network of a graph `prepare_qat` made and training tuned (in reference form, as `quantize_pt2e`
    returns it); `prepared` is left in eval mode. It takes about 15 s on a 2-core CPU whatever the network:
    torchao folds BatchNorm by matching some 100 pattern graphs, each traced with `torch.export` anew."""
    import torch

    convert_pt2e = pt2e_flow()[2]
    prepared.eval()
    with torch.no_grad():
        return convert_pt2e(prepared)


def random_batches(shape: tuple[int, ...], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """`count` seeded standard-normal batches of `shape`: calibration for timing, where only the graph matters."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
