"""GPU timing with PyTorch: the forward pass captured once as a CUDA graph and replayed.

Eager timing on a GPU measures kernel-launch overhead, not the network (mobilenetv3_large at batch 1 on an H100:
about 3.5 ms eager against 0.57 ms as a CUDA graph), and deployment runtimes (TensorRT, torch.compile with
CUDA graphs) launch the whole graph at once; so every measurement here replays a captured graph, timed with CUDA
events, in the requested precision and memory format.
"""
from __future__ import annotations

from core.errors import InputError
from core.timing import summarise


def capture_graph(fn, x, warm: int = 3):
    """`fn(x)` captured once as a CUDA graph: (graph, the captured call's output, which each replay overwrites).

    `warm` calls run first on a side stream, as CUDA graph capture requires: cuDNN picks its algorithms (benchmark
    mode) and lazy initialisation happens there, not inside the capture. Call it under ``no_grad`` or
    ``inference_mode``; it is the one capture both `TorchCudaBackend` (the GPU profiles' tables) and the
    ``torch-cuda`` implementation (`hardware_profiles.select`) time, so the two measure the same thing."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warm):
            fn(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(x)
    return graph, out


def with_policy(model, precision: str):
    """`model` (already in `precision`, on its device) with a compression policy's 16-bit units running in their
    precision (`core.half.apply_half`); only on an fp32 network, where a unit left in fp32 means fp32. Returns (the
    model, the dtype of its input, None for `precision`'s): a 16-bit unit timed alone runs wholly in its dtype, on
    an input in it, with no cast (`core.half.whole_dtype`); a network with 16-bit units takes fp32 and casts where
    its precision changes.

    Raises:
        InputError: `model` names int8 units (no int8 kernels here), or 16-bit units while every layer already
            runs in the 16-bit `precision`.
    """
    import torch

    from core.half import apply_half, half_plan, whole_dtype
    from core.quantize import refuse_int8_plan

    refuse_int8_plan(model, "torch-cuda")
    if half_plan(model) and precision != "fp32":
        raise InputError(f"torch-cuda at precision {precision} runs every layer in {precision}; a compression "
                         "policy's fp16/bf16 units are timed inside an fp32 network: --precision fp32")
    dtype = whole_dtype(model)
    if dtype is not None:
        return model.to(dtype), dtype
    return apply_half(model), torch.float32 if half_plan(model) else None


def network_graph(module, input_shape: tuple[int, ...], precision: str, batch: int, channels_last: bool):
    """`module` as the GPU profiles run it (cuDNN's benchmark mode; `precision`, a compression policy's units in
    theirs: `with_policy`; channels-last for images where asked) captured as a CUDA graph (`capture_graph`) on a
    random input of `input_shape` at `batch`: (graph, model, input). The graph reads the model's weights and the
    input in place, so the caller keeps both alive while it replays. Shared by `TorchCudaBackend` (latency) and
    `hardware_profiles.energy.cuda_runner` (energy), so both run one thing."""
    import torch

    torch.backends.cudnn.benchmark = True
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    fmt = torch.channels_last if channels_last and len(input_shape) == 4 else torch.contiguous_format
    model, in_dtype = with_policy(module.eval().to("cuda", dtype).to(memory_format=fmt), precision)
    x = torch.randn((batch, *input_shape[1:]), device="cuda", dtype=in_dtype or dtype).to(memory_format=fmt)
    with torch.no_grad():
        graph, _ = capture_graph(model, x)
    return graph, model, x


class TorchCudaBackend:
    """Time modules on the current CUDA device with CUDA graphs.

    Args:
        precision: "fp32", "fp16" or "bf16" (weights and inputs).
        batch: batch size of the timed input.
        channels_last: NHWC memory format (what cuDNN's fastest convolutions use).
        warmup: graph replays before timing.
        repeats: timed replays; the median is reported.
    """

    runtime = "pytorch-cuda-graphs"

    def __init__(self, precision: str = "fp16", batch: int = 1, channels_last: bool = True, warmup: int = 20,
                 repeats: int = 100):
        import torch

        why = self.unavailable()
        if why:
            raise InputError(f"--backend torch-cuda: {why}")
        self.torch = torch
        if precision not in ("fp32", "fp16", "bf16"):
            raise InputError(f"--precision: {precision!r}: torch-cuda times fp32, fp16 or bf16")
        self.precision, self.batch, self.channels_last = precision, batch, channels_last
        self.warmup, self.repeats = warmup, repeats

    @staticmethod
    def unavailable() -> str | None:
        """Why this backend cannot time here (None: it can)."""
        import torch

        return None if torch.cuda.is_available() else "no CUDA device is available here (this machine has no GPU)"

    def describe(self) -> str:
        return (f"{self.torch.cuda.get_device_name()} (CUDA graph, {self.precision}, batch {self.batch}"
                f"{', channels-last' if self.channels_last else ''})")

    def version(self) -> str:
        return f"torch {self.torch.__version__}, CUDA {self.torch.version.cuda}"

    def measure(self, module, input_shape: tuple[int, ...]):
        """Latency statistics (ms per batch) of `module` on an input of `input_shape` with the batch replaced."""
        torch = self.torch
        graph, model, x = network_graph(module, input_shape, self.precision, self.batch, self.channels_last)
        for _ in range(self.warmup):
            graph.replay()
        torch.cuda.synchronize()
        times = []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(self.repeats):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        del graph, model, x
        return summarise(times, threads=0)
