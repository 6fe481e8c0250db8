"""Compression of a candidate before it is scored: ``compression:`` in a recipe (issue 21).

Searched networks ship quantized on the devices this project targets, and a network that is best in fp32 need not
be best after quantization (depthwise layers and squeeze-excite quantize badly), so a search can score every
candidate in the form it will ship:

- ``none`` (the default): the fp32 network, as before;
- ``int8``: after the evaluator has trained the candidate, post-training static quantization with onnxruntime
  (QDQ format, per-channel int8 weights, uint8 activations, MinMax ranges calibrated on `CALIBRATION_IMAGES` of
  the evaluator's *training* images, drawn with a fixed seed: `calibration_sample`), and the quantized model
  scored with onnxruntime on the evaluator's validation images. The row's ``accuracy`` is then the int8 accuracy
  (what the controller maximises); ``accuracy_fp32``, ``accuracy_drop`` (fp32 - int8) and ``quant_parity``
  (largest difference of the int8 logits from the fp32 ones on the first validation batch) stand beside it.
  With the recipe's ``quantizer: pt2e`` the int8 network is made by PyTorch's PT2E flow instead
  (`core.quantize.quantize_pt2e`: torchao's X86InductorQuantizer, same calibration images) and scored in PyTorch,
  for targets that run PyTorch; an evaluator with a quantization-aware budget (``qat_epochs``) fine-tunes the
  network with fake-quantize nodes first (`pt2e_int8`), and that training counts in the row's ``train_seconds``.

- ``search``: the policy is part of the genotype (`search_spaces.policy`: the space's ``compression`` option
  gives each stage or layer a precision); each candidate is scored as ``int8`` does with exactly its int8 units
  quantized (none: scored fp32, a drop of 0), and its latency is that of the same graph, so the search trades
  the accuracy drop of each unit against the time it saves. The columns are those of ``int8``. A policy for a GPU
  (fp16 / bf16 units) is scored with those units in 16-bit floats, run in PyTorch (`half_logits`).

Only evaluators that train a network and expose their data (`Evaluator.quantization_data`, e.g. ``proxy``) can
score it quantized; `nas.checks` refuses other pairings before a run starts. A quantized network whose outputs are
not finite fails its candidate with that reason, and the search goes on (`nas.trial.evaluate_candidate`).
"""
from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.io import atomic_write

METRICS = {"none": (), "int8": ("accuracy_fp32", "accuracy_drop", "quant_parity"),
           "search": ("accuracy_fp32", "accuracy_drop", "quant_parity")}
CALIBRATION_IMAGES = 128   # training images the activation ranges are calibrated on
BATCH = 64                 # images per onnxruntime call (the graph is exported at this fixed batch size)


def metrics_of(compression: str) -> tuple[str, ...]:
    """The results columns `compression` adds beside ``accuracy``."""
    return METRICS[compression]


def _arrays(data, what: str, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images as float32, labels) of the first `count` items of `data` (all when None); `what` names the set in
    the error when it is empty."""
    from nas.evaluation.proxy import iterate_batches

    images, labels = [], []
    for x, y in iterate_batches(data, BATCH, shuffle=False):
        images.append(x.numpy().astype(np.float32))
        labels.append(np.asarray(y))
        if count is not None and sum(map(len, images)) >= count:
            break
    if not images:
        raise ValueError(f"the {what} set is empty")
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def _batches(images: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(`size` images, how many of them are real) per step; the last batch is padded with copies of its first
    image to the graph's fixed batch size, and the padding's outputs are discarded."""
    for start in range(0, len(images), size):
        part = images[start:start + size]
        real = len(part)
        if real < size:
            part = np.concatenate([part, np.repeat(part[:1], size - real, axis=0)])
        yield part, real


def calibration_sample(calibration, count: int = CALIBRATION_IMAGES):
    """`count` images of the set `calibration` drawn with a fixed seed (kept in dataset order; all of them when it
    has no more). Not its first `count`: MNIST-5k and image folders are sorted by class, so those are one class,
    whose activation ranges clip every other class's. Until 2026-12-06 the first 128 were taken, all of them
    zeros on MNIST-5k; one NAS-Bench-Macro network scored 0.879 int8 against 0.963 fp32 so, and 0.962 int8 on
    this sample."""
    from torch.utils.data import Subset, TensorDataset

    n = len(calibration)
    if n <= count:
        return calibration
    pick = np.sort(np.random.default_rng(0).choice(n, count, replace=False))
    if isinstance(calibration, TensorDataset):
        return TensorDataset(*(t[pick] for t in calibration.tensors))
    return Subset(calibration, pick.tolist())


def calibration_batches(calibration, input_shape: tuple[int, ...], batch: int | None = None) -> list[np.ndarray]:
    """`CALIBRATION_IMAGES` images of `calibration` (`calibration_sample`) in full batches of `batch` (default:
    `BATCH`, or fewer when there are fewer images): what every int8 quantizer here calibrates on, without padding.

    Raises:
        ValueError: `calibration` is empty, or its images do not have the network's input shape.
    """
    images, _ = _arrays(calibration_sample(calibration), "calibration")
    if tuple(images.shape[1:]) != tuple(input_shape[1:]):
        raise ValueError(f"calibration images have shape {tuple(images.shape[1:])}, the network takes "
                         f"{tuple(input_shape[1:])}")
    size = min(batch or BATCH, len(images))
    return [part for part, real in _batches(images, size) if real == size]


def quantize_int8(model, calibration, input_shape: tuple[int, ...], folder: Path,
                  batch: int | None = None) -> tuple[Path, Path]:
    """Export `model` (fp32) and its int8 quantization (`core.quantize`, activation ranges on the first
    `CALIBRATION_IMAGES` images of `calibration`; only the submodules the model names in ``int8_modules`` where it
    names them, `core.quantize.int8_plan`, those it names in ``int4_modules`` with 4-bit weights) into `folder` as
    ``fp32.onnx`` (the network as it is quantized: int4 units' weights already rounded) and ``int8.onnx``, both at
    the fixed batch size `batch` (default: `BATCH`, or fewer when there are fewer images); returns their paths.

    Raises:
        ValueError: `calibration` is empty, or its images do not have the network's input shape.
    """
    from core.quantize import int4_plan, int8_plan, quantize_onnx_int8, round_weights
    from core.timing import export_onnx

    full = calibration_batches(calibration, input_shape, batch)
    plan = int8_plan(model)
    if int4_plan(model):   # 4-bit weights: rounded to their grid first, then quantized with the rest
        model = round_weights(model, int4_plan(model))
    fp32 = export_onnx(model, full[0].shape, folder / "fp32.onnx")
    return fp32, quantize_onnx_int8(fp32, folder / "int8.onnx", full, plan, model)


def export_int8(model, evaluator, input_shape: tuple[int, ...], folder: Path,
                quantizer: str = "onnxruntime") -> tuple[Path | None, str]:
    """The int8 model of an exported network, as the search scored it (same calibration), at batch size 1:
    (``folder/model.int8.onnx``, the model card's note on how it was made); (None, the note) for a policy that
    quantizes nothing (with 16-bit float units, the note says how to run them so). For `quantizer` ``pt2e``, whose
    file format (a `torch.export` archive) stores pickled example inputs, no int8 file is shipped and the note says
    how to remake it from the shipped weights; with quantization-aware fine-tuning (`Evaluator.qat_epochs`) it is
    made again as the search made it (CPU training is deterministic) and its weights, fake-quantize ranges included,
    ship as ``folder/model.qat.safetensors`` (the path returned)."""
    import shutil

    from core.half import half_plan
    from core.quantize import int8_plan

    if quantizer == "pt2e":
        how = ("int8: PyTorch PT2E (torchao's X86InductorQuantizer, default configuration: per-channel int8 "
               "weights, uint8 activations")
        then = "then torch.compile it for x86 int8 kernels (no .pt2 file is shipped: it would carry pickled data)"
        if evaluator.qat_epochs() is None:
            return None, (f"{how}, ranges on {CALIBRATION_IMAGES} training images drawn with seed 0, batches of "
                          f"{BATCH}); the accuracy is that int8 model's, accuracy_fp32 that of model.onnx. Remake it "
                          f"from model.safetensors with core.quantize.quantize_pt2e on the same images, {then}")
        from nas.export import save_weights

        calibration, _ = evaluator.quantization_data(input_shape[-1])
        example = calibration_batches(calibration, input_shape)[0]
        prepared, _ = qat_tuned(model, example, evaluator)
        path = save_weights(prepared, folder / "model.qat.safetensors", {})
        return path, (f"{how}) after {evaluator.qat_epochs():g} epochs of quantization-aware fine-tuning; the "
                      "accuracy is that int8 model's, accuracy_fp32 that of model.onnx. Remake it: "
                      "core.quantize.prepare_qat on the network of model.safetensors with an input batch of "
                      f"{tuple(example.shape)}, load_state_dict of model.qat.safetensors, core.quantize.convert_qat; "
                      f"{then}")

    plan, half = int8_plan(model), half_plan(model)
    if half and not plan:
        units = "; ".join(f"{p}: {', '.join(n for n, q in half.items() if q == p)}" for p in dict.fromkeys(
            half.values()))
        return None, (f"16-bit floats in the compression policy's units ({units}; the rest fp32). Run it as the "
                      "GPU profiles timed it: the model of Loading, moved to the GPU, then "
                      "`core.half.apply_half(model)` (those modules in 16 bits, a cast wherever the precision "
                      "changes, fp32 logits). The accuracy is that network's, run in PyTorch; accuracy_fp32 that of "
                      "model.onnx, the fp32 graph")
    if plan == ():
        return None, "compression policy: every unit fp32, so model.onnx is the network as scored"
    units = "" if plan is None else f" of {', '.join(plan)} (the compression policy's int8 units; the rest fp32)"
    calibration, _ = evaluator.quantization_data(input_shape[-1])
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        _, int8 = quantize_int8(model, calibration, input_shape, Path(tmp), batch=1)
        path = atomic_write(folder / "model.int8.onnx", lambda t: shutil.copyfile(int8, t))
    return path, (f"int8: model.int8.onnx, onnxruntime static quantization{units} (QDQ, per-channel int8 weights, "
                  f"uint8 activations, MinMax ranges on {CALIBRATION_IMAGES} training images drawn with seed 0); the "
                  "accuracy is the int8 model's, accuracy_fp32 that of model.onnx")


def onnx_logits(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """The model at `path` (fixed batch size) run with onnxruntime on `images`: logits, one row per image."""
    import onnxruntime as ort

    from core.timing import ort_session_options

    session = ort.InferenceSession(str(path), ort_session_options(threads), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[0]
    out = [session.run(None, {"input": part})[0][:real] for part, real in _batches(images, size)]
    return np.concatenate(out)


def pt2e_int8(model, batches: list[np.ndarray], evaluator=None) -> tuple[object, dict | None]:
    """`model` (fp32, trained) made int8 by PyTorch's PT2E flow: with quantization-aware fine-tuning where
    `evaluator` has a budget for it (`Evaluator.qat_epochs`: `core.quantize.prepare_qat`, trained by
    `Evaluator.fine_tune_quantized`, then `convert_qat`), else post-training (`core.quantize.quantize_pt2e`,
    activation ranges on the calibration `batches`, `calibration_batches`; the graph then takes their batch size).
    Returns the int8 graph and the fine-tuning's metrics (None without it); `model` itself is not changed."""
    from core.quantize import convert_qat, quantize_pt2e

    if evaluator is None or evaluator.qat_epochs() is None:
        return quantize_pt2e(model, batches[0], batches), None
    prepared, metrics = qat_tuned(model, batches[0], evaluator)
    return convert_qat(prepared), metrics


def qat_tuned(model, example: np.ndarray, evaluator) -> tuple[object, dict]:
    """A copy of `model` (fp32, trained) with fake-quantize nodes (`core.quantize.prepare_qat`, at `example`'s
    shape) fine-tuned by `evaluator` for its QAT budget (`Evaluator.fine_tune_quantized`): (the graph, not yet
    converted to int8; the fine-tuning's metrics)."""
    from core.quantize import prepare_qat

    prepared = prepare_qat(model, example)
    return prepared, evaluator.fine_tune_quantized(prepared, example.shape[-1])


def pt2e_logits(model, calibration, images: np.ndarray, evaluator=None) -> tuple[np.ndarray, dict | None]:
    """`model` (fp32) made int8 by `pt2e_int8` (calibrated on the same `CALIBRATION_IMAGES` training images as
    onnxruntime's, or fine-tuned quantization-aware) and run on `images`: (logits, one row per image; the
    fine-tuning's metrics or None).

    Raises:
        ValueError: `calibration` is empty, or its images do not have the network's input shape.
    """
    import torch

    full = calibration_batches(calibration, images.shape)
    int8, tuned = pt2e_int8(model, full, evaluator)
    with torch.no_grad():
        return np.concatenate([int8(torch.from_numpy(part)).numpy()[:real]
                               for part, real in _batches(images, len(full[0]))]), tuned


def half_logits(model, images: np.ndarray) -> np.ndarray:
    """A copy of `model` (fp32) with the 16-bit float units it names running in their precision (`core.half.
    apply_half`), run in PyTorch on `images`: logits, one row per image."""
    import copy

    import torch

    from core.half import apply_half

    half = apply_half(copy.deepcopy(model).eval())
    with torch.no_grad():
        return np.concatenate([half(torch.from_numpy(images[i:i + BATCH])).numpy()
                               for i in range(0, len(images), BATCH)])


def held_out_scores(model, evaluator, input_shape: tuple[int, ...], *, compression: str = "none",
                    quantizer: str = "onnxruntime", threads: int = 1) -> dict[str, float] | None:
    """`model` (trained, fp32) scored on the evaluator's held-out images (`Evaluator.held_out`: no trial trained or
    validated on them), or None where it has none: ``accuracy`` of the network as it ships (under `compression`
    ``int8`` or ``search``, quantized as `int8_scores` scores it: all of it, or its policy's units), ``accuracy_fp32``
    and ``images``. The search's own accuracy is the figure it picked its winner by, so it flatters the winner;
    this one does not."""
    import torch

    held = evaluator.held_out(input_shape[-1])
    if held is None:
        return None
    images, labels = _arrays(held, "held-out")
    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(images[i:i + BATCH])).numpy()
                                 for i in range(0, len(images), BATCH)])
    fp32 = float((logits.argmax(1) == labels).mean())
    shipped = fp32
    if compression != "none":   # scored on the images decoded above, not read from `held` a second time
        from torch.utils.data import TensorDataset

        decoded = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
        shipped = int8_scores(model, evaluator, input_shape, fp32, threads, quantizer, scored_on=decoded)["accuracy"]
    return {"accuracy": shipped, "accuracy_fp32": fp32, "images": len(labels)}


def int8_scores(model, evaluator, input_shape: tuple[int, ...], fp32_accuracy: float,
                threads: int = 1, quantizer: str = "onnxruntime", scored_on=None) -> dict[str, float]:
    """`model` (trained, fp32) quantized to int8 (all of it, or the int8 units it names) and scored on the
    evaluator's validation images (or on the labelled images `scored_on`, e.g. the evaluator's `held_out`):
    ``accuracy`` (int8), ``accuracy_fp32``, ``accuracy_drop`` and ``quant_parity``
    (see the module). `quantizer`: ``onnxruntime`` (QDQ, run by onnxruntime) or ``pt2e`` (PyTorch's PT2E flow,
    run in PyTorch: `pt2e_logits`). A policy's fp16/bf16 units run in PyTorch in their precision instead
    (`half_logits`; the columns mean the same, with the 16-bit network for the int8 one).

    Raises:
        ValueError: an empty or mis-shaped calibration set.
        FloatingPointError: the quantized network's outputs are not finite.
    """
    import torch

    from core.half import half_plan
    from core.quantize import int8_plan

    half = half_plan(model)
    if int8_plan(model) == () and not half:   # a policy with every unit in fp32: nothing to quantize
        return {"accuracy": float(fp32_accuracy), "accuracy_fp32": float(fp32_accuracy), "accuracy_drop": 0.0,
                "quant_parity": 0.0}
    calibration, validation = evaluator.quantization_data(input_shape[-1])
    images, labels = _arrays(validation if scored_on is None else scored_on,
                             "validation" if scored_on is None else "scoring")
    model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(images[:BATCH])).numpy()
    if not np.isfinite(reference).all():   # the quantizer would fail on NaN ranges with a bare assertion
        raise FloatingPointError("the network's outputs are not finite before quantization")
    tuned, what = None, "int8"
    if half:
        if int8_plan(model):
            raise ValueError("a policy with both int8 and 16-bit float units has no engine here to run it")
        logits, what = half_logits(model, images), "16-bit float"
    elif quantizer == "pt2e":
        logits, tuned = pt2e_logits(model, calibration, images, evaluator)
    else:
        with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
            _, int8 = quantize_int8(model, calibration, input_shape, Path(tmp))
            logits = onnx_logits(int8, images, threads)
    if not np.isfinite(logits).all():
        raise FloatingPointError(f"the {what} network's outputs are not finite")
    accuracy = float((logits.argmax(1) == labels).mean())
    return {"accuracy": accuracy, "accuracy_fp32": float(fp32_accuracy),
            "accuracy_drop": float(fp32_accuracy) - accuracy,
            "quant_parity": float(np.abs(logits[:len(reference)] - reference).max()),
            **({} if tuned is None else {"qat_seconds": tuned["train_seconds"]})}


# The row fields a compression can only lower: the figures `RunContext.precheck` gives before a trial.
COST_PREFIXES = ("latency_", "energy_", "memory_", "train_memory_")


def cost_figures(fields: dict) -> dict[str, float]:
    """The cost figures (`COST_PREFIXES`) among a candidate's row `fields`, as floats."""
    return {k: float(v) for k, v in fields.items() if k.startswith(COST_PREFIXES) and isinstance(v, (int, float))}


def _priced(costs: dict[str, float]) -> bool:
    """Whether the figures hold a latency (the static checks passed and a cheap source priced the proposal)."""
    return any(k.startswith("latency_") for k in costs)


def undo_steps(space) -> tuple[dict, dict]:
    """The two ways a unit's compression is undone (`PolicySpace.with_unit` arguments): its precision set to the
    least compressed of the choices, its keep ratio set to 1."""
    return {"precision": space.least_compressed}, {"keep": 1.0}


def undo_dominated(space, arch, precheck):
    """`arch` (a `search_spaces.policy.PolicyArch`) with each unit's compression undone where the search's own
    cheap figures say it buys nothing: unit by unit, its precision set to the least compressed of the choices, or
    its keep ratio to 1 (`PolicySpace.with_unit`), whenever that leaves every latency, energy and memory figure
    of `precheck(arch)` (the run's `RunContext.precheck`) no higher and breaks no limit the proposal met.

    Why: quantization and pruning cost accuracy (or at best nothing), so a unit compressed where its int8 kernels
    are no faster (small tensors on a CPU, where quantizing and dequantizing cost more than the int8 arithmetic
    saves) is dominated, and a search that trains it spends a trial on a network it should never ship. Only the
    search's figures are trusted: with no latency figure (no cheap source) nothing is undone.
    """
    violation, fields = precheck(arch)
    now = cost_figures(fields)
    if not _priced(now):
        return arch
    for unit in range(len(space.units)):
        for step in undo_steps(space):
            other = space.with_unit(arch, unit, **step)
            if other is None:
                continue
            other_violation, other_fields = precheck(other)
            costs = cost_figures(other_fields)
            if (other_violation is None or violation is not None) and \
                    all(costs.get(k, np.inf) <= v for k, v in now.items()):
                arch, violation, now = other, other_violation, costs
    return arch


def fit_limits(space, arch, precheck):
    """`arch` compressed until it meets the limits its cheap figures break, or `arch` itself where no compression
    of its units makes it meet them.

    Units are quantized first (to the most compressed precision of the choices), those whose quantization lowers
    the proposal's latency most (relative, summed over profiles) first, then, if that is not enough, pruned to the
    smallest keep ratio in the same order: pruning costs a proxy-trained network more accuracy than quantization.
    Why: a proposal over a latency limit is otherwise rejected unseen, although the network it names may ship
    within the limit compressed, as a whole-network int8 search ships it; the repair lets the controller's choice of
    network count. Only proposals priced by a cheap source are repaired (not those over a FLOPs or params limit).
    """
    violation, fields = precheck(arch)
    base = {k: v for k, v in cost_figures(fields).items() if k.startswith("latency_") and v > 0}
    if violation is None or not base:
        return arch

    def saving(other) -> float:
        costs = cost_figures(precheck(other)[1])
        return sum((v - costs.get(k, v)) / v for k, v in base.items())

    now = arch
    for step in ({"precision": space.most_compressed}, {"keep": min(space.keep_choices)}):
        options = [(u, space.with_unit(arch, u, **step)) for u in range(len(space.units))]
        ranked = sorted(((saving(o), u) for u, o in options if o is not None), key=lambda su: (-su[0], su[1]))
        for gain, unit in ranked:
            if gain <= 0:
                break
            now = space.with_unit(now, unit, **step) or now
            if precheck(now)[0] is None:
                return now
    return arch


def repaired(space, arch, precheck, how: str):
    """The proposal `arch` repaired as ``search.repair`` says (`how`: none, dominated or fit): ``dominated`` undoes
    compression that buys nothing (`undo_dominated`); ``fit`` also compresses a proposal over a limit until it
    meets it (`fit_limits`), then undoes what the fitting made dominated."""
    if how == "none":
        return arch
    precheck = functools.cache(precheck)   # both repairs price the proposal and some steps alike
    arch = undo_dominated(space, arch, precheck)
    if how == "fit":
        fitted = fit_limits(space, arch, precheck)
        if fitted != arch:
            arch = undo_dominated(space, fitted, precheck)
    return arch
