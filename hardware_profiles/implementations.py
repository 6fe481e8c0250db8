"""Implementations: the engines, with their settings, that one network can be deployed with on one device.

The same network runs at very different speeds depending on the engine and its settings, and each engine only picks
among its own kernels; so the project measures across engines. An *implementation* is a registered engine for a
device kind (``cpu`` or ``cuda``) with a grid of *settings* (its `variants`): one (implementation, settings) pair is
a `Candidate`. Each implementation can

- `prepare` a network (`Network`: a PyTorch module and/or an ONNX file) into a `Runner` that runs it on a fixed
  input, once compiled/optimised;
- give the runner's output, which `parity_error` compares with PyTorch's fp32 output (the tolerance follows the
  precision the settings ask for);
- time it (`Runner.time`: wall clock on a CPU, CUDA events on a GPU), which `hardware_profiles.select` does in
  interleaved rounds, the project's timing protocol;
- `save` the deployable artifact with a runnable snippet.

Registered (`IMPLEMENTATIONS`):

| name | device | engine | settings searched |
|---|---|---|---|
| ``onnxruntime-cpu`` | cpu | onnxruntime (CPU profiles' engine) | opt level basic/extended/all; sequential/parallel |
| ``openvino-cpu`` | cpu | OpenVINO (extra ``openvino``) | precision f32, bf16 where the CPU has it |
| ``torch-cpu-eager`` | cpu | PyTorch eager | channels-last or not |
| ``torch-cpu-compile`` | cpu | ``torch.compile`` (inductor; needs a C++ compiler) | channels-last or not |
| ``torch-cuda-eager`` | cuda | PyTorch eager | fp32/tf32/fp16/bf16, channels-last |
| ``torch-cuda`` | cuda | CUDA graph replay (the GPU profiles' engine) | fp32/tf32/fp16/bf16, channels-last |
| ``torch-cuda-compile`` | cuda | ``torch.compile`` | reduce-overhead/max-autotune, fp32/tf32/fp16/bf16 |

Operator-level choices (`Implementation.operator_choices`, recorded in every plan): onnxruntime's ``all`` level adds
the NCHWc layout transformation (convolutions, depthwise ones included, run in a blocked layout), so comparing
``all`` with ``extended`` decides it per network; OpenVINO's precision hint is searched, its per-layer kernel choice
is the plugin's own; on CUDA cuDNN's benchmark mode is on for every candidate (cuDNN times its algorithms per
convolution shape), and channels-last decides which convolution kernels cuDNN can use. Not searched: per-layer
precision, onnxruntime's individual graph transformers, inductor's own autotuning knobs beyond its mode, TensorRT.

Threads are fixed by the caller (the profile's or ``--threads``), never searched: a plan is for a thread budget.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.registry import Registry

IMPLEMENTATIONS: Registry[Implementation] = Registry("implementation")
TOLERANCE = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 3e-2, "bf16": 1e-1}
"""Largest parity error (`parity_error`) accepted per precision: fp32 engines reorder sums and fuse operators
(about 1e-6 on a CPU, up to 1e-4 on a GPU), TF32 convolutions keep 10 mantissa bits (1e-3 seen on an H200, so 1e-3
would refuse them), half precisions lose digits over a network's depth."""


@dataclass(frozen=True)
class Candidate:
    """One implementation with one choice of settings: what a plan's entry names."""

    implementation: str
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        """A stable name, e.g. ``onnxruntime-cpu[execution_mode=sequential,opt_level=all,threads=1]``."""
        return f"{self.implementation}[{','.join(f'{k}={v}' for k, v in sorted(self.settings.items()))}]"

    @property
    def precision(self) -> str:
        """fp32, tf32, fp16 or bf16: what the parity tolerance follows (OpenVINO names it ``inference_precision``)."""
        ov = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}.get(self.settings.get("inference_precision", ""))
        return self.settings.get("precision") or ov or "fp32"


@dataclass
class Network:
    """The network an implementation deploys: a PyTorch module and/or an ONNX file, with its input shape (batch
    first) and how to rebuild it (`recipe`, shown in the snippets: ``{"space": ..., "arch": ...}``,
    ``{"timm_model": ...}`` or ``{"onnx": ...}``)."""

    input_shape: tuple[int, ...]
    recipe: dict[str, Any]
    module: Any = None
    onnx_path: Path | None = None
    _input: np.ndarray | None = field(default=None, repr=False)
    _reference: np.ndarray | None = field(default=None, repr=False)

    @property
    def input(self) -> np.ndarray:
        """The fixed input every candidate runs on (standard normal, seed 0, float32)."""
        if self._input is None:
            self._input = np.random.default_rng(0).standard_normal(self.input_shape, dtype=np.float32)
        return self._input

    def onnx(self, workdir: Path) -> Path:
        """The network as an ONNX file (exported once into `workdir` from the module when not given)."""
        if self.onnx_path is not None:
            return self.onnx_path
        path = Path(workdir) / "model.onnx"
        if not path.is_file():
            from core.timing import export_onnx

            export_onnx(self.module, self.input_shape, path)
        return path

    def torch_module(self, what: str):
        """The PyTorch module; `InputError` when the network is only an ONNX file."""
        if self.module is None:
            raise InputError(f"{what} runs a PyTorch module; this network is an ONNX file")
        return self.module

    def reference(self) -> np.ndarray:
        """What the outputs are checked against: PyTorch fp32 on the CPU, or, for an ONNX file, onnxruntime with
        graph optimisations off."""
        if self._reference is None:
            if self.module is not None:
                import torch

                with torch.inference_mode():
                    out = self.module.eval().float()(torch.from_numpy(self.input))
                self._reference = _first(out).detach().cpu().float().numpy()
            else:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                opts.log_severity_level = 3
                sess = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
                self._reference = sess.run(None, {sess.get_inputs()[0].name: self.input})[0]
        return self._reference


def _first(out: Any):
    """The first tensor of a network's output (a detector returns several)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def parity_error(out: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference over the largest absolute reference value (inf for a shape mismatch or a
    non-finite output)."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != reference.shape or not np.isfinite(out).all():
        return float("inf")
    return float(np.abs(out - reference).max() / max(float(np.abs(reference).max()), 1e-12))


class Runner(ABC):
    """A prepared network: `__call__` runs one inference on the fixed input and waits for it."""

    @abstractmethod
    def __call__(self) -> None: ...

    @abstractmethod
    def output(self) -> np.ndarray:
        """The output of one inference, as float32 numpy (for the parity check)."""

    def time(self, repeats: int) -> list[float]:
        """Seconds of each of `repeats` single inferences, each timed alone."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self()
            times.append(time.perf_counter() - start)
        return times

    def close(self) -> None:
        """Free what the runner holds (sessions, GPU memory)."""


class Implementation(ABC):
    """An engine on one device kind. Subclasses set the class attributes and implement the abstract methods."""

    name: str = ""
    device: str = "cpu"
    engine: str = ""
    package: str | None = None       # module the engine needs
    extra: str | None = None         # the project's optional extra that installs it
    default_for_device: bool = False  # the engine the device's profiles are measured with

    def unavailable(self) -> str | None:
        """Why this implementation cannot run here (None: it can)."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return (f"needs the {self.package} package: pip install -e \".[{self.extra}]\"" if self.extra
                    else f"needs the {self.package} package")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "no CUDA device is available here"
        return None

    @abstractmethod
    def variants(self, threads: int) -> list[dict[str, Any]]:
        """The settings tried for a thread budget, the default first."""

    def default(self, threads: int) -> Candidate:
        return Candidate(self.name, self.variants(threads)[0])

    def candidates(self, threads: int) -> list[Candidate]:
        return [Candidate(self.name, s) for s in self.variants(threads)]

    @abstractmethod
    def prepare(self, network: Network, settings: dict[str, Any], workdir: Path) -> Runner:
        """The network made ready to run with `settings` (exported, optimised, compiled, warmed once)."""

    @abstractmethod
    def save(self, network: Network, settings: dict[str, Any], folder: Path, workdir: Path) -> list[str]:
        """Write the deployable artifact and ``run_plan.py`` (a snippet that loads and runs it) into `folder`;
        returns the files written."""

    def operator_choices(self) -> list[str]:
        """The per-operator choices this engine makes, and whether the selection searches them."""
        return []


def register_implementation(cls: type[Implementation]) -> type[Implementation]:
    """Register an instance of `cls` under its `name`."""
    IMPLEMENTATIONS.register(cls.name)(cls())
    return cls


def implementations(device: str) -> list[Implementation]:
    """The registered implementations of a device kind, the default engine first."""
    found = [impl for name in IMPLEMENTATIONS.names() if (impl := IMPLEMENTATIONS.get(name)).device == device]
    return sorted(found, key=lambda impl: not impl.default_for_device)


def get_implementation(name: str, field_name: str = "--implementations") -> Implementation:
    """The registered implementation `name`; `InputError` naming `field_name` and the valid names otherwise."""
    if name not in IMPLEMENTATIONS:
        raise InputError(f"{field_name}: unknown implementation {name!r}; expected one of: "
                         f"{', '.join(IMPLEMENTATIONS.names())}")
    return IMPLEMENTATIONS.get(name)


@dataclass(frozen=True)
class ImplementationSpec:
    """An item of ``--implementations``: an implementation and, optionally, settings its candidates must have
    (``torch-cuda-compile[mode=reduce-overhead]``; the syntax of a candidate's key, so a key from a plan can be
    given back)."""

    implementation: Implementation
    only: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        return self.implementation.name + (f"[{','.join(f'{k}={v}' for k, v in self.only)}]" if self.only else "")

    def candidates(self, threads: int) -> list[Candidate]:
        return [c for c in self.implementation.candidates(threads)
                if all(str(c.settings.get(k)) == v for k, v in self.only)]


def parse_specs(text: str, field_name: str = "--implementations", threads: int = 1) -> list[ImplementationSpec]:
    """``A,B[key=value,...],...`` as `ImplementationSpec` items (commas inside brackets belong to the settings).

    Raises:
        InputError: an unknown implementation, a malformed item, or settings no candidate of it has (naming the
            values it has).
    """
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            items, cur = items + [cur], ""
            continue
        depth += (ch == "[") - (ch == "]")
        cur += ch
    specs = []
    for item in (i.strip() for i in items + [cur] if i.strip()):
        name, bracket, rest = item.partition("[")
        impl = get_implementation(name.strip(), field_name)
        pairs = [p.partition("=") for p in rest.removesuffix("]").split(",") if p.strip()] if bracket else []
        if bracket and (not rest.endswith("]") or not pairs or any(not eq for _, eq, _ in pairs)):
            raise InputError(f"{field_name}: {item!r}: expected {impl.name}[key=value,...]")
        spec = ImplementationSpec(impl, tuple((k.strip(), v.strip()) for k, _, v in pairs))
        # an engine not installed is checked no further here: the selection skips it, naming its extra
        if spec.only and not impl.unavailable() and not spec.candidates(threads):
            have = sorted({f"{k}={v}" for c in impl.candidates(threads) for k, v in c.settings.items()})
            raise InputError(f"{field_name}: {item!r} matches none of {impl.name}'s settings ({', '.join(have)})")
        specs.append(spec)
    return specs


def _write_snippet(folder: Path, body: str) -> str:
    (folder / "run_plan.py").write_text('"""Run the selected implementation (written by hardware_profiles.select)."""'
                                        f"\n{body.strip()}\n", encoding="utf-8")
    return "run_plan.py"


def _rebuild_lines(recipe: dict[str, Any]) -> str:
    """Python lines that rebuild a PyTorch network as `model` from its recipe, weights from the safetensors file."""
    if "timm_model" in recipe:
        build = f"import timm\nmodel = timm.create_model({recipe['timm_model']!r}, pretrained=False)"
    else:
        build = ("from search_spaces import make_space\n"
                 f"space = make_space({recipe['space']!r}, {recipe.get('options') or {}!r}, "
                 f"{recipe.get('num_classes', 1000)!r})\n"
                 f"model = space.build(space.decode({recipe['arch']!r}))")
    return (f"import torch\nfrom safetensors.torch import load_file\n{build}\n"
            "model.load_state_dict(load_file('weights.safetensors'))\nmodel.eval()")


def _save_weights(network: Network, folder: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in network.module.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    return "weights.safetensors"


# --- onnxruntime ------------------------------------------------------------------------------------------------

class _OrtRunner(Runner):
    def __init__(self, session, feed: dict[str, np.ndarray]):
        self.session, self.feed = session, feed

    def __call__(self) -> None:
        self.session.run(None, self.feed)

    def output(self) -> np.ndarray:
        return self.session.run(None, self.feed)[0]


def ort_session_options(settings: dict[str, Any]):
    """onnxruntime `SessionOptions` for a candidate's settings (what a plan's snippet sets too)."""
    from core.timing import ort_session_options as options

    return options(settings["threads"], settings["opt_level"], settings["execution_mode"])


@register_implementation
class OnnxRuntimeCpu(Implementation):
    name, device, engine, default_for_device = "onnxruntime-cpu", "cpu", "onnxruntime", True

    def variants(self, threads: int) -> list[dict[str, Any]]:
        modes = ["sequential", "parallel"] if threads > 1 else ["sequential"]
        return [{"opt_level": level, "execution_mode": mode, "threads": threads}
                for mode in modes for level in ("all", "extended", "basic")]

    def prepare(self, network: Network, settings: dict[str, Any], workdir: Path) -> Runner:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(network.onnx(workdir)), ort_session_options(settings),
                                    providers=["CPUExecutionProvider"])
        return _OrtRunner(sess, {sess.get_inputs()[0].name: network.input})

    def save(self, network: Network, settings: dict[str, Any], folder: Path, workdir: Path) -> list[str]:
        shutil.copyfile(network.onnx(workdir), folder / "model.onnx")
        level = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
        parallel = settings["execution_mode"] == "parallel"
        snippet = f"""
import numpy as np
import onnxruntime as ort

opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.{level[settings['opt_level']]}
opts.execution_mode = ort.ExecutionMode.{'ORT_PARALLEL' if parallel else 'ORT_SEQUENTIAL'}
opts.intra_op_num_threads = {settings['threads']}
opts.inter_op_num_threads = {settings['threads'] if parallel else 1}
session = ort.InferenceSession("model.onnx", opts, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal({tuple(network.input_shape)!r}, dtype=np.float32)
print(session.run(None, {{session.get_inputs()[0].name: x}})[0].shape)
"""
        return ["model.onnx", _write_snippet(folder, snippet)]

    def operator_choices(self) -> list[str]:
        return ["opt_level all adds the NCHWc layout transformation (convolutions, depthwise included, in a blocked "
                "layout) to extended's fusions: searched, by comparing all with extended",
                "Conv+BatchNorm+activation fusion (basic/extended): searched through opt_level",
                "per-node kernel choice: onnxruntime's own, not searched"]


# --- OpenVINO ---------------------------------------------------------------------------------------------------

class _OpenVinoRunner(Runner):
    def __init__(self, compiled, x: np.ndarray):
        self.request, self.x = compiled.create_infer_request(), x

    def __call__(self) -> None:
        self.request.infer({0: self.x})

    def output(self) -> np.ndarray:
        self.request.infer({0: self.x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


@register_implementation
class OpenVinoCpu(Implementation):
    """OpenVINO's CPU plugin, reading the ONNX file with its runtime's ONNX frontend (not ``convert_model``, whose
    conversion tool sends telemetry where a user has opted in)."""

    name, device, engine, package, extra = "openvino-cpu", "cpu", "OpenVINO", "openvino", "openvino"

    def variants(self, threads: int) -> list[dict[str, Any]]:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precisions = ["f32", "bf16"] if "BF16" in caps else ["f32"]
        return [{"hint": "LATENCY", "inference_precision": p, "threads": threads} for p in precisions]

    @staticmethod
    def config(settings: dict[str, Any]) -> dict[str, Any]:
        return {"PERFORMANCE_HINT": settings["hint"], "INFERENCE_NUM_THREADS": settings["threads"],
                "INFERENCE_PRECISION_HINT": settings["inference_precision"], "NUM_STREAMS": 1}

    def prepare(self, network: Network, settings: dict[str, Any], workdir: Path) -> Runner:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(network.onnx(workdir))), "CPU", self.config(settings))
        return _OpenVinoRunner(compiled, network.input)

    def save(self, network: Network, settings: dict[str, Any], folder: Path, workdir: Path) -> list[str]:
        import openvino as ov

        ov.save_model(ov.Core().read_model(str(network.onnx(workdir))), str(folder / "model.xml"),
                      compress_to_fp16=False)
        snippet = f"""
import numpy as np
import openvino as ov

core = ov.Core()
compiled = core.compile_model(core.read_model("model.xml"), "CPU", {self.config(settings)!r})
request = compiled.create_infer_request()
x = np.random.default_rng(0).standard_normal({tuple(network.input_shape)!r}, dtype=np.float32)
request.infer({{0: x}})
print(request.get_output_tensor(0).data.shape)
"""
        return ["model.xml", "model.bin", _write_snippet(folder, snippet)]

    def operator_choices(self) -> list[str]:
        return ["inference precision f32 or bf16 (bf16 only where the CPU has it): searched",
                "per-layer kernel and layout choice: the CPU plugin's own, not searched"]


# --- PyTorch ----------------------------------------------------------------------------------------------------

class _TorchRunner(Runner):
    """A module (maybe compiled) on a fixed input; on CUDA, timed with CUDA events, optionally as a CUDA graph."""

    def __init__(self, fn: Callable, x, cuda: bool, threads: int = 0, graph: bool = False, tf32: bool = False):
        import torch

        self.torch, self.fn, self.x, self.cuda, self.threads, self.tf32 = torch, fn, x, cuda, threads, tf32
        self.graph = None
        self._flags()
        with torch.inference_mode():
            if graph:
                from hardware_profiles.cuda import capture_graph

                self.graph, self.out = capture_graph(fn, x)
            else:
                for _ in range(2):   # compile / lazy initialisation happens here, not in the first timed run
                    self.out = fn(x)
        self._sync()

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def _flags(self) -> None:
        """The process-wide settings this candidate runs under, set before each run (others change them between):
        CPU threads; on CUDA whether convolutions and matmuls may use TF32 (PyTorch's own default allows it in
        cuDNN convolutions; ``fp32`` here means no TF32, ``tf32`` means both)."""
        if self.threads:
            self.torch.set_num_threads(self.threads)
        if self.cuda:
            self.torch.backends.cudnn.allow_tf32 = self.torch.backends.cuda.matmul.allow_tf32 = self.tf32

    def _run(self):
        self._flags()
        with self.torch.inference_mode():
            if self.graph is not None:
                self.graph.replay()
                return self.out
            return self.fn(self.x)

    def __call__(self) -> None:
        self._run()
        self._sync()

    def output(self) -> np.ndarray:
        out = _first(self._run())
        self._sync()
        return out.detach().float().cpu().numpy()

    def time(self, repeats: int) -> list[float]:
        if not self.cuda:
            return super().time(repeats)
        torch = self.torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeats):
            start.record()
            self._run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return times

    def close(self) -> None:
        self.graph = self.fn = self.x = self.out = None
        if self.cuda:
            self.torch.cuda.empty_cache()


class _TorchImplementation(Implementation):
    """PyTorch on a device: eager, CUDA graph replay or ``torch.compile``; a copy of the module per candidate."""

    mode: str = "eager"        # eager | graph | compile

    def _module(self, network: Network, settings: dict[str, Any]):
        import copy

        import torch

        dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
                 "bf16": torch.bfloat16}[settings.get("precision", "fp32")]
        fmt = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
        device = "cuda" if self.device == "cuda" else "cpu"
        module = copy.deepcopy(network.torch_module(self.name)).eval().to(device, dtype).to(memory_format=fmt)
        x = torch.from_numpy(network.input).to(device, dtype)
        if len(network.input_shape) == 4:
            x = x.contiguous(memory_format=fmt)
        return module, x

    def prepare(self, network: Network, settings: dict[str, Any], workdir: Path) -> Runner:
        import torch

        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            torch.set_num_threads(settings["threads"])
        module, x = self._module(network, settings)
        fn = module
        if self.mode == "compile":
            fn = torch.compile(module, mode=settings.get("mode"), dynamic=False)
        return _TorchRunner(fn, x, cuda=self.device == "cuda", threads=settings.get("threads", 0),
                            graph=self.mode == "graph", tf32=settings.get("precision") == "tf32")

    def save(self, network: Network, settings: dict[str, Any], folder: Path, workdir: Path) -> list[str]:
        """The weights (safetensors) and a snippet that rebuilds, converts and runs the network: ``torch.export``'s
        .pt2 and TorchScript files hold pickles, which this project never hands out."""
        files = [_save_weights(network, folder)]
        names = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}
        dtype = f"torch.{names[settings.get('precision', 'fp32')]}"
        device = "cuda" if self.device == "cuda" else "cpu"
        fmt = "torch.channels_last" if settings.get("channels_last") else "torch.contiguous_format"
        lines = [_rebuild_lines(network.recipe),
                 f"model = model.to({device!r}, {dtype}).to(memory_format={fmt})",
                 f"x = torch.randn({tuple(network.input_shape)!r}, device={device!r}, dtype={dtype})"
                 f".contiguous(memory_format={fmt})"]
        if device == "cpu":
            lines.insert(1, f"torch.set_num_threads({settings['threads']})")
        if device == "cuda":
            tf32 = settings.get("precision") == "tf32"
            lines.insert(1, "torch.backends.cudnn.benchmark = True\n"
                         f"torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = {tf32}")
        if self.mode == "compile":
            lines.append(f"model = torch.compile(model, mode={settings.get('mode')!r}, dynamic=False)")
        if self.mode == "graph":
            lines.append("with torch.inference_mode():\n    for _ in range(3):\n        model(x)\n"
                         "    graph = torch.cuda.CUDAGraph()\n    with torch.cuda.graph(graph):\n"
                         "        out = model(x)\n    graph.replay()\n    torch.cuda.synchronize()\nprint(out.shape)")
        else:
            lines.append("with torch.inference_mode():\n    print(model(x).shape)")
        return files + [_write_snippet(folder, "\n".join(lines))]


@register_implementation
class TorchCpuEager(_TorchImplementation):
    name, device, engine = "torch-cpu-eager", "cpu", "PyTorch eager"

    def variants(self, threads: int) -> list[dict[str, Any]]:
        return [{"channels_last": cl, "threads": threads} for cl in (False, True)]

    def operator_choices(self) -> list[str]:
        return ["channels-last memory format (oneDNN's NHWC convolutions): searched",
                "per-operator kernels: PyTorch's (oneDNN), not searched"]


@register_implementation
class TorchCpuCompile(_TorchImplementation):
    name, device, engine, mode = "torch-cpu-compile", "cpu", "torch.compile (inductor)", "compile"

    def unavailable(self) -> str | None:
        if shutil.which("c++") is None and shutil.which("g++") is None:
            return "torch.compile on a CPU needs a C++ compiler (g++) on the PATH"
        return super().unavailable()

    def variants(self, threads: int) -> list[dict[str, Any]]:
        return [{"channels_last": cl, "threads": threads} for cl in (False, True)]

    def operator_choices(self) -> list[str]:
        return ["operator fusion and generated C++ kernels: inductor's own, not searched",
                "channels-last memory format: searched"]


def _cuda_variants() -> list[dict[str, Any]]:
    """Precision x memory format; first TF32 channels-last, as the GPU profiles are measured (PyTorch's defaults,
    which let cuDNN convolutions use TF32, and ``--channels-last``)."""
    return [{"precision": p, "channels_last": cl}
            for p in ("tf32", "fp32", "fp16", "bf16") for cl in (True, False)]


_CUDA_CHOICES = ["cudnn.benchmark on for every candidate: cuDNN times its algorithms per convolution shape",
                 "channels-last (NHWC) memory format: searched",
                 "precision fp32/tf32/fp16/bf16 for the whole network: searched (per-layer precision is not)"]


@register_implementation
class TorchCudaEager(_TorchImplementation):
    name, device, engine = "torch-cuda-eager", "cuda", "PyTorch eager"

    def variants(self, threads: int) -> list[dict[str, Any]]:
        return _cuda_variants()

    def operator_choices(self) -> list[str]:
        return list(_CUDA_CHOICES)


@register_implementation
class TorchCudaGraphs(TorchCudaEager):
    """The GPU profiles' engine (`hardware_profiles.cuda.TorchCudaBackend`): one CUDA graph replayed; the same
    settings as eager."""

    name, engine, mode, default_for_device = "torch-cuda", "CUDA graph replay", "graph", True


@register_implementation
class TorchCudaCompile(_TorchImplementation):
    name, device, engine, mode = "torch-cuda-compile", "cuda", "torch.compile (inductor)", "compile"

    def variants(self, threads: int) -> list[dict[str, Any]]:
        return [{"mode": m, "precision": p, "channels_last": cl} for m in ("reduce-overhead", "max-autotune")
                for p in ("tf32", "fp32", "fp16", "bf16") for cl in (True, False)]

    def operator_choices(self) -> list[str]:
        return [*_CUDA_CHOICES, "max-autotune: inductor times Triton and cuBLAS/cuDNN kernels per operator "
                "(its own search, not ours)"]
