"""Package a searched network for hand-off: weights, ONNX graph, architecture string and a model card.

Weights are stored as safetensors (no pickle), with the architecture string in the file's metadata so a weights
file found on its own still says what to build. Every file is written to a temporary name and renamed, so an
interrupted export never leaves a half-written file under the final name.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from core.io import atomic_write, atomic_write_text, verify_sha256sums
from core.timing import export_onnx


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Save `model.state_dict()` as safetensors, atomically.

    Args:
        model: network whose state is saved.
        path: destination ``.safetensors`` file.
        metadata: string key/values stored in the file header.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage; independent contiguous copies avoid both.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict into `model` (strict: every key must match).

    Args:
        model: network built from the same architecture string.
        path: ``.safetensors`` file written by `export_network` or `save_weights`.

    Returns:
        `model`, for chaining.
    """
    from safetensors.torch import load_file

    verify_sha256sums(Path(path).parent, [Path(path).name])   # an exported folder carries SHA256SUMS
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


SPACE_PLACEHOLDER = "space = ...  # the search space the run searched: search_spaces.get_space(name, options)"


def format_figure(value: object) -> str:
    """Human-readable cell for the model card: thousands separators for big numbers, 4 significant digits else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def model_card(
    arch: str, figures: dict[str, object], input_shape: tuple[int, ...], *, title: str,
    extra: dict[str, str] | None = None, space_code: str = SPACE_PLACEHOLDER,
) -> str:
    """Markdown model card text.

    Args:
        arch: canonical architecture string.
        figures: measured figures (accuracy, FLOPs, params, latency per profile, ...), shown in a table.
        input_shape: full input shape including batch.
        title: heading of the card.
        extra: further key/values listed at the end.
        space_code: the Python line that recreates the search space (`space = get_space(...)`).

    Returns:
        The card as a Markdown string.
    """
    lines = [f"# {title}", "", "## Architecture", "", "```", arch, "```", ""]
    lines += ["## Figures", "", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {key} | {format_figure(value)} |" for key, value in figures.items()]
    shape = "x".join(str(d) for d in input_shape)
    lines += ["", "## Input", "", f"`float32` tensor of shape `{shape}` (N, C, H, W).", ""]
    lines += [
        "## Loading", "", "```python",
        "from safetensors.torch import load_file",
        space_code,
        f"model = space.build(space.decode({arch!r}))",
        'model.load_state_dict(load_file("weights.safetensors"))',
        "model.eval()",
        "```", "",
        "`model.onnx` holds the same network for onnxruntime; `arch.txt` holds the architecture string.",
    ]
    if extra:
        lines += ["", "## Notes", ""] + [f"- **{key}**: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def export_network(
    model: nn.Module,
    input_shape: tuple[int, ...],
    out_dir: Path,
    *,
    arch: str,
    figures: dict[str, object],
    title: str = "Searched network",
    extra: dict[str, str] | None = None,
    space_code: str = SPACE_PLACEHOLDER,
) -> dict[str, Path]:
    """Write weights, ONNX graph, architecture string and model card for one network.

    Args:
        model: trained network (left in the training/eval mode it had).
        input_shape: full input shape including batch, e.g. ``(1, 3, 32, 32)``.
        out_dir: directory to write into; created if missing, existing files of the same names replaced.
        arch: canonical architecture string; stored in ``arch.txt``, the card and the safetensors metadata.
        figures: measured figures for the card's table.
        title: card heading.
        extra: further key/values for the card.
        space_code: the Python line that recreates the search space, shown in the card's loading snippet.

    Returns:
        ``{"weights", "onnx", "arch", "card"}`` -> path written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "weights": save_weights(model, out_dir / "weights.safetensors", {"arch": arch}),
        "onnx": export_onnx(model, input_shape, out_dir / "model.onnx"),
        "arch": atomic_write_text(out_dir / "arch.txt", arch + "\n"),
        "card": atomic_write_text(
            out_dir / "MODEL_CARD.md", model_card(arch, figures, input_shape, title=title, extra=extra,
                                                    space_code=space_code)
        ),
    }


def onnx_parity(
    model: nn.Module, onnx_path: str | Path, input_shape: tuple[int, ...], *, seed: int = 0, n: int = 2
) -> float:
    """Largest absolute difference between PyTorch (eval mode) and onnxruntime outputs on random inputs (every
    output of a model that returns several, e.g. a detector's logits and box deltas).

    Args:
        model: the network that was exported; its training/eval mode is restored afterwards.
        onnx_path: the exported graph.
        input_shape: full input shape including batch.
        seed: seed of the random inputs.
        n: number of random inputs tried.

    Returns:
        The maximum absolute difference over all inputs and outputs.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        with torch.no_grad():
            for _ in range(n):
                x = rng.standard_normal(input_shape, dtype=np.float32)
                expected = model(torch.from_numpy(x))
                expected = expected if isinstance(expected, (tuple, list)) else (expected,)
                for want, got in zip(expected, session.run(None, {name: x}), strict=True):
                    worst = max(worst, float(np.max(np.abs(want.numpy() - got))))
    finally:
        model.train(was_training)
    return worst
