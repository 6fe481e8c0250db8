"""int8 post-training static quantization of an ONNX graph with onnxruntime: one recipe for every layer above.

QDQ format (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into int8 kernels), per-channel int8
weights, uint8 activations, MinMax activation ranges from calibration batches; the graph is pre-processed first
(`quant_pre_process`: BatchNorm folded into the convolutions, so the weights are quantized per output channel as
they run). `nas.compression` calibrates on an evaluator's training images (the accuracy of an int8 network);
the ``int8`` precision of the onnxruntime timing backend (`hardware_profiles.backends`) calibrates on seeded
random inputs, which give the same graph and kernels, hence the same latency.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.io import atomic_write


def quantize_onnx_int8(fp32: str | Path, out: str | Path, batches: Iterable[np.ndarray]) -> Path:
    """Quantize the ONNX graph `fp32` (one input, named ``input`` by `core.timing.export_onnx`) to int8 QDQ at
    `out` (written atomically), activation ranges calibrated on `batches` (arrays of the graph's input shape).

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

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # the quantizer logs advice on every call
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        atomic_write(out, lambda tmp: quantize_static(
            str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8))
    except Exception as err:   # noqa: BLE001 - say where it failed, whatever the quantizer raised
        raise RuntimeError(f"onnxruntime could not quantize {fp32}: {type(err).__name__}: {err}") from err
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    return out


def random_batches(shape: tuple[int, ...], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """`count` seeded standard-normal batches of `shape`: calibration for timing, where only the graph matters."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
