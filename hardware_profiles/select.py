"""Select the fastest implementation of one network on this machine: every engine and setting, measured alike.

    python -m hardware_profiles.select (--arch ARCH --space S [--space-options F] | --run RUN_DIR
        | --timm-model NAME[@RES] | --onnx FILE) --device cpu|cuda [--threads T] [--out DIR]
        [--implementations a,b[k=v,...]] [--precision fp32|any] [--rounds R] [--warmup W] [--repeats N] [--margin M]

Every available implementation (`hardware_profiles.implementations`) with every one of its settings is prepared
once (exported, optimised, compiled), its output checked against PyTorch's fp32 output, and then all are timed in
interleaved rounds: each round times every candidate in turn (`--repeats` runs, the median kept), so machine drift
lands on all alike; a candidate's figure is its smallest round median, its spread the range of its round medians
over that. The fastest wins, unless it beats the device's default engine (the one its profiles are measured with)
by less than `--margin`, in which case the default stays: a change of engine is not worth noise.

`--out` (default ``plans/<network>``) receives:
- ``plan.json``: the chosen implementation with its settings, latency, spread and parity error, the default's
  figures and every runner-up with its ratio to the best (`Plan`; read it with `Plan.read`);
- ``plan.md``: the same as a table;
- ``artifact/``: the winner's deployable files (ONNX + session options, OpenVINO IR, or safetensors weights) and
  ``run_plan.py``, a snippet that loads and runs them;
- ``measurements.json``: the measurements so far, written after each one; re-running the same command continues
  from it (a candidate that failed is not tried again).

An engine whose package is missing is skipped with a note naming the extra that installs it; one that cannot
export or run the network, or whose outputs differ beyond the tolerance of its precision, is recorded as such and
never chosen. Bad input (a model file that is not ONNX, ``--device cuda`` without a GPU, an unknown implementation)
is one ``error:`` line with exit status 2; so is an engine that failed on the network, after the plan is written
from the others.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.cli import ArgParser, check_folder, check_range, read_space_options
from core.errors import InputError, cli_entry
from core.io import atomic_write_json, atomic_write_text
from hardware_profiles.implementations import (TOLERANCE, Candidate, ImplementationSpec, Network, get_implementation,
                                               implementations, parity_error, parse_specs)

PLAN_FORMAT = "hwnas-plan/1"


@dataclass
class SelectSettings:
    """One field per flag of the command line, with its default (``select_for(SelectSettings(...))`` runs as the
    command does)."""

    arch: str | None = None
    space: str | None = None
    space_options: str | None = None
    num_classes: int = 1000
    run: str | None = None
    timm_model: str | None = None
    onnx: str | None = None
    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    out: str | None = None
    implementations: str | None = None
    precision: str = "any"
    rounds: int = 5
    warmup: int = 10
    repeats: int = 30
    margin: float = 0.03


@dataclass
class Entry:
    """One candidate's outcome: ``ok`` (timed), ``mismatch`` (outputs beyond tolerance), ``failed`` (could not be
    prepared or run) or ``skipped`` (engine not installed, or not applicable to the network)."""

    implementation: str
    settings: dict[str, Any]
    status: str = "ok"
    reason: str | None = None
    precision: str = "fp32"
    parity_error: float | None = None
    tolerance: float | None = None
    prepare_seconds: float | None = None
    round_ms: list[float] = field(default_factory=list)
    latency_ms: float | None = None
    spread: float | None = None
    ratio_to_best: float | None = None

    @property
    def key(self) -> str:
        return Candidate(self.implementation, self.settings).key

    def summarise(self) -> None:
        """`latency_ms` (smallest round median) and `spread` ((largest - smallest) / smallest) from `round_ms`."""
        if self.status == "ok" and self.round_ms:
            low, high = min(self.round_ms), max(self.round_ms)
            self.latency_ms, self.spread = low, (high - low) / low if low > 0 else 0.0


@dataclass
class Plan:
    """A deployment plan for one network on one device (``plan.json``)."""

    network: dict[str, Any]
    device: str
    threads: int
    machine: dict[str, Any]
    protocol: dict[str, Any]
    entries: list[Entry]
    chosen: str | None = None          # key of the chosen entry
    default: str | None = None         # key of the device's default engine
    why: str = ""
    operator_choices: dict[str, list[str]] = field(default_factory=dict)
    artifact: list[str] = field(default_factory=list)
    format: str = PLAN_FORMAT

    def entry(self, key: str | None) -> Entry | None:
        return next((e for e in self.entries if e.key == key), None)

    @property
    def best(self) -> Entry | None:
        return self.entry(self.chosen)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen_entry"] = asdict(self.best) if self.best else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        d = {k: v for k, v in d.items() if k != "chosen_entry"}
        return cls(**{**d, "entries": [Entry(**e) for e in d["entries"]]})

    @classmethod
    def read(cls, path: str | Path) -> Plan:
        """The plan in ``plan.json`` (or a folder holding one); `InputError` naming the file otherwise."""
        path = Path(path)
        path = path / "plan.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != PLAN_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {PLAN_FORMAT}")
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise InputError(f"{path}: not a deployment plan ({err})") from None

    def table(self) -> str:
        """Markdown table of the entries, fastest first."""
        lines = ["| implementation | settings | status | latency ms | spread | x best | parity |",
                 "|---|---|---|---|---|---|---|"]
        for e in self.entries:
            mark = " **chosen**" if e.key == self.chosen else (" (default)" if e.key == self.default else "")
            settings = ", ".join(f"{k}={v}" for k, v in sorted(e.settings.items()))
            fig = (f"{e.latency_ms:.4g} | {e.spread:.1%} | {e.ratio_to_best:.2f}" if e.latency_ms is not None
                   else "- | - | -")
            par = f"{e.parity_error:.1e}" if e.parity_error is not None else "-"
            status = e.status if e.status == "ok" else f"{e.status}: {e.reason}"
            lines.append(f"| {e.implementation}{mark} | {settings} | {status} | {fig} | {par} |")
        return "\n".join(lines)


def fingerprint(network: Network, settings: SelectSettings) -> str:
    """What a continued selection must match: the network, its input, the device, threads and timing protocol."""
    data = {"network": network.recipe, "shape": list(network.input_shape), "device": settings.device,
            "threads": settings.threads, "warmup": settings.warmup, "repeats": settings.repeats,
            "precision": settings.precision}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


class Selection:
    """The candidates of one network: prepared, checked and timed in interleaved rounds, kept in
    ``measurements.json`` after every measurement so an interrupted selection continues where it stopped."""

    def __init__(self, network: Network, candidates: list[Candidate], settings: SelectSettings,
                 out: Path | None = None, skipped: list[Entry] | None = None, log=print):
        self.network, self.settings, self.out, self.log = network, settings, out, log
        self.fp = fingerprint(network, settings)
        self.entries = {c.key: Entry(c.implementation, c.settings, precision=c.precision,
                                     tolerance=TOLERANCE[c.precision]) for c in candidates}
        for e in skipped or []:
            self.entries.setdefault(e.key, e)
        self._load()
        self.runners: dict[str, Any] = {}
        self._dynamo_saved: tuple[int, bool] | None = None

    @property
    def state_path(self) -> Path | None:
        return self.out / "measurements.json" if self.out else None

    def _load(self) -> None:
        path = self.state_path
        if path is None or not path.is_file():
            return
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot continue from it ({err}); delete it to start again") from None
        if state.get("fingerprint") != self.fp:
            raise InputError(f"--out: {self.out} holds measurements of another network or protocol; choose another "
                             "folder, or delete its measurements.json")
        try:
            loaded = [Entry(**d) for d in state["entries"]]
        except (KeyError, TypeError) as err:
            raise InputError(f"{path}: cannot continue from it (not this version's measurements: {err}); delete it "
                             "to start again") from None
        for e in loaded:
            if e.key in self.entries and e.status != "skipped":
                self.entries[e.key] = e

    def _save(self) -> None:
        if self.state_path is not None:
            atomic_write_json(self.state_path, {"fingerprint": self.fp,
                                                "entries": [asdict(e) for e in self.entries.values()]})

    def prepare(self, workdir: Path) -> None:
        """Prepare and parity-check every candidate that still has rounds to time (a continued selection keeps
        the parity error it recorded); failures are recorded, never raised."""
        reference = self.network.reference()
        self._compile_scope(open_=True)
        for key, e in self.entries.items():
            if e.status != "ok" or len(e.round_ms) >= self.settings.rounds:
                continue
            impl = get_implementation(e.implementation)
            start = time.perf_counter()
            try:
                runner = impl.prepare(self.network, e.settings, workdir)
                e.parity_error = parity_error(runner.output(), reference)
            except InputError as err:   # not applicable (a PyTorch engine given an ONNX file)
                e.status, e.reason = "skipped", str(err)
                continue
            except Exception as err:  # noqa: BLE001 - an engine's failure is a result, not a crash
                e.status, e.reason = "failed", _one_line(err)
                self.log(f"error: {key}: cannot run this network ({e.reason})")
                self._save()
                continue
            e.prepare_seconds = round(time.perf_counter() - start, 3)
            if e.parity_error > e.tolerance:
                e.status = "mismatch"
                e.reason = f"outputs differ from the fp32 reference by {e.parity_error:.2g} (tolerance {e.tolerance:g})"
                runner.close()
                self.log(f"note: {key}: {e.reason}; never chosen")
            else:
                self.runners[key] = runner
            self._save()

    def measure(self) -> None:
        """Time every prepared candidate in interleaved rounds up to ``--rounds`` (each round starts with a
        different candidate, so none is always timed first), saving after each measurement."""
        s = self.settings
        keys = list(self.runners)
        todo = sum(max(0, s.rounds - len(self.entries[k].round_ms)) for k in keys)
        warmed: set[str] = set()
        with tqdm(total=todo, desc="timing", unit="run", file=sys.stderr, disable=todo == 0) as bar:
            for r in range(s.rounds):
                order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
                for key in order:
                    e, runner = self.entries[key], self.runners[key]
                    if len(e.round_ms) > r:
                        continue
                    if key not in warmed:
                        for _ in range(s.warmup):
                            runner()
                        warmed.add(key)
                    e.round_ms.append(float(np.median(runner.time(s.repeats))) * 1e3)
                    self._save()
                    bar.update(1)

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners.clear()
        self._compile_scope(open_=False)

    def _compile_scope(self, open_: bool) -> None:
        """Room in TorchDynamo's cache for every ``torch.compile`` candidate of this selection, and no silent
        fallback to eager.

        Dynamo keeps compiled entries per code object: every copy of a network (and every timm network of one class:
        mobilenetv2, mnasnet, efficientnet_lite0 and fbnet are all timm's ``EfficientNet.forward``) adds an entry to
        the same cache, and past ``recompile_limit`` (8) Dynamo runs the frame *eagerly* with only a warning, so
        later compiled candidates were timed as eager PyTorch. Opening, the cache is emptied
        (``torch._dynamo.reset()``: a selection holds no compiled candidate of an earlier one) and the limit raised
        to the candidates' count, with ``fail_on_recompile_limit_hit`` so that a frame that still overflows fails
        its candidate instead of being timed eager; closing empties the cache again and restores the settings."""
        compiled = 0
        if open_:
            compiled = sum(1 for e in self.entries.values()
                           if getattr(get_implementation(e.implementation), "mode", None) == "compile")
        if (open_ and not compiled) or (not open_ and self._dynamo_saved is None):
            return
        import torch._dynamo

        cfg = torch._dynamo.config
        torch._dynamo.reset()
        if open_:
            self._dynamo_saved = (cfg.recompile_limit, cfg.fail_on_recompile_limit_hit)
            cfg.recompile_limit = max(cfg.recompile_limit, compiled + 1)
            cfg.fail_on_recompile_limit_hit = True
        else:
            cfg.recompile_limit, cfg.fail_on_recompile_limit_hit = self._dynamo_saved
            self._dynamo_saved = None


def choose(entries: list[Entry], default: str | None, margin: float) -> tuple[str | None, str]:
    """(key of the chosen entry, why): the fastest ``ok`` entry, unless it beats the default by less than
    `margin` (a fraction of the default's latency), in which case the default."""
    ok = [e for e in entries if e.status == "ok" and e.latency_ms is not None]
    if not ok:
        return None, "no implementation ran this network within tolerance"
    best = min(ok, key=lambda e: e.latency_ms)
    base = next((e for e in ok if e.key == default), None)
    if base is None:
        return best.key, "fastest (the default engine did not run)"
    if best.key == base.key:
        return best.key, "fastest, and the default engine"
    gain = 1 - best.latency_ms / base.latency_ms
    if gain < margin:
        return base.key, (f"the default: the fastest ({best.key}) is only {gain:.1%} faster, under the "
                          f"{margin:.0%} margin")
    return best.key, f"fastest: {gain:.1%} faster than the default engine"


def _candidates(settings: SelectSettings, network: Network) -> tuple[list[Candidate], list[Entry], str | None]:
    """(candidates to measure, entries skipped with the reason, key of the device's default engine)."""
    if settings.implementations:
        chosen = parse_specs(settings.implementations, threads=settings.threads)
        wrong = [s.implementation.name for s in chosen if s.implementation.device != settings.device]
        if wrong:
            raise InputError(f"--implementations: {', '.join(wrong)} do not run on --device {settings.device}")
    else:
        chosen = [ImplementationSpec(impl) for impl in implementations(settings.device)]
    cands, skipped = [], []
    for spec in chosen:
        why = spec.implementation.unavailable()
        if why:
            skipped.append(Entry(spec.implementation.name, {}, status="skipped", reason=why))
            continue
        cands += [c for c in spec.candidates(settings.threads)
                  if settings.precision == "any" or c.precision == settings.precision]
    default = next((i.default(settings.threads).key for i in implementations(settings.device)
                    if i.default_for_device and not i.unavailable()), None)
    return cands, skipped, default


def _torch_threads(n: int | None = None) -> int:
    """PyTorch's intra-op thread count (set to `n` when given)."""
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def select(network: Network, settings: SelectSettings, out: Path | None = None, log=print) -> Plan:
    """Measure every candidate implementation of `network` and choose one (see the module docstring); with `out`,
    write the plan, its table and the winner's artifact there, continuing an earlier selection in it.

    Raises:
        InputError: an unknown implementation, one for another device, or ``--device cuda`` without a GPU.
    """
    from hardware_profiles.backends import machine_info

    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here")
    cands, skipped, default = _candidates(settings, network)
    for e in skipped:
        log(f"note: {e.implementation} skipped: {e.reason}")
    with tempfile.TemporaryDirectory(prefix="hwnas-select-") as tmp:
        sel = Selection(network, cands, settings, out, skipped, log)
        threads = _torch_threads()
        try:
            sel.prepare(Path(tmp))
            sel.measure()
        finally:
            sel.close()
            _torch_threads(threads)   # the PyTorch engines set the process's thread count; the caller's comes back
        entries = list(sel.entries.values())
        for e in entries:
            e.summarise()
        chosen, why = choose(entries, default, settings.margin)
        best = next((e.latency_ms for e in entries if e.key == chosen), None)
        for e in entries:
            e.ratio_to_best = e.latency_ms / best if best and e.latency_ms is not None else None
        entries.sort(key=lambda e: (e.latency_ms is None, e.latency_ms or 0.0))
        names = {e.implementation for e in entries}
        plan = Plan(network={**network.recipe, "input_shape": list(network.input_shape)}, device=settings.device,
                    threads=settings.threads, machine=machine_info("torch-cuda" if settings.device == "cuda"
                                                                   else "onnxruntime-cpu"),
                    protocol={"rounds": settings.rounds, "warmup": settings.warmup, "repeats": settings.repeats,
                              "margin": settings.margin, "precision": settings.precision,
                              "figure": "smallest median over interleaved rounds"},
                    entries=entries, chosen=chosen, default=default, why=why,
                    operator_choices={n: get_implementation(n).operator_choices() for n in sorted(names)})
        if out is not None:
            write_plan(plan, network, out, Path(tmp))
    return plan


def write_plan(plan: Plan, network: Network, out: Path, workdir: Path) -> None:
    """``plan.json``, ``plan.md`` and the chosen implementation's ``artifact/`` into `out`."""
    best = plan.best
    folder = out / "artifact"
    shutil.rmtree(folder, ignore_errors=True)   # a continued selection may choose another engine: no stale files
    if best is not None:
        folder.mkdir(parents=True)
        plan.artifact = [f"artifact/{f}" for f in
                         get_implementation(best.implementation).save(network, best.settings, folder, workdir)]
    atomic_write_json(out / "plan.json", plan.to_dict())
    text = (f"# Deployment plan: {network_label(network.recipe)}\n\nDevice {plan.device}, {plan.threads} thread(s). "
            f"Chosen: **{plan.chosen}** ({plan.why}).\n\n{plan.table()}\n")
    atomic_write_text(out / "plan.md", text)


def load_network(s: SelectSettings) -> Network:
    """The network the flags name, with its input shape at ``--batch``.

    Raises:
        InputError: none or several of --arch/--run/--timm-model/--onnx, a space or arch that does not decode, an
            unknown timm model, a file that is not ONNX, a folder that is not a finished run.
    """
    given = [f for f in ("arch", "run", "timm_model", "onnx") if getattr(s, f)]
    if len(given) != 1:
        raise InputError("give exactly one of --arch (with --space), --run, --timm-model, --onnx")
    if s.onnx:
        return _onnx_network(Path(s.onnx), s.batch)
    if s.timm_model:
        import timm

        name, _, res = s.timm_model.partition("@")
        try:
            model = timm.create_model(name, pretrained=False)
        except (RuntimeError, ValueError) as err:
            raise InputError(f"--timm-model: {err}") from None
        size = int(res) if res.isdigit() else model.default_cfg.get("input_size", (3, 224, 224))[-1]
        return Network((s.batch, 3, size, size), {"timm_model": name, "resolution": size}, module=model.eval())
    if s.run:
        space, arch, module = _run_network(Path(s.run))
    else:
        if not s.space:
            raise InputError("--arch: needs --space (the search space the arch string belongs to)")
        from search_spaces import make_space

        space = make_space(s.space, read_space_options(s.space_options), s.num_classes)
        try:
            arch = space.decode(s.arch)
        except ValueError as err:
            raise InputError(f"--arch: {err}") from None
        module = space.build(arch)
    from core.half import half_plan
    from core.quantize import int8_plan

    if int8_plan(module):
        raise InputError(f"{'--run' if s.run else '--arch'}: the network's compression policy quantizes "
                         f"{', '.join(int8_plan(module))}; the engines are compared on fp32 networks (its quantized "
                         "form is the run's best/model.int8.onnx)")
    if half_plan(module):
        raise InputError(f"{'--run' if s.run else '--arch'}: the network's compression policy runs "
                         f"{', '.join(half_plan(module))} in 16-bit floats; the engines are compared on fp32 "
                         "networks (the GPU engines try fp16 and bf16 for the whole network)")
    shape = tuple(space.input_shape(arch))
    recipe = {"space": space.name, "options": space.options.model_dump(mode="json"), "num_classes": space.num_classes,
              "arch": space.to_string(arch)}
    return Network((s.batch, *shape[1:]), recipe, module=module.eval())


def _run_network(run_dir: Path):
    """(space, arch, module with its weights) of a finished run's best network: ``best/space.json`` (the space
    and its options, written by the export), ``best/arch.txt`` and ``best/weights.safetensors``, checked against
    the folder's SHA256SUMS (`IntegrityError` for a damaged file)."""
    from core.io import verify_sha256sums
    from search_spaces import make_space

    best = run_dir / "best"
    if not (best / "arch.txt").is_file():
        raise InputError(f"--run: {run_dir} is not a finished run (best/arch.txt expected)")
    if not (best / "space.json").is_file():
        raise InputError(f"--run: {best / 'space.json'} is missing (exported by an older version); give the network "
                         f"as --arch $(cat {best / 'arch.txt'}) --space NAME --space-options FILE")
    verify_sha256sums(best, [n for n in ("space.json", "arch.txt", "weights.safetensors") if (best / n).is_file()])
    try:
        spec = json.loads((best / "space.json").read_text(encoding="utf-8"))
        space = make_space(spec.get("name"), spec.get("options"), spec.get("num_classes"),
                           source=best / "space.json", name_field=f"{best / 'space.json'}: name")
        arch = space.decode((best / "arch.txt").read_text(encoding="utf-8").strip())
    except ValueError as err:   # JSON, the space's options, the arch string
        raise InputError(f"--run: {best}: {err}") from None
    module = space.build(arch)
    weights = best / "weights.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(weights)), strict=True)
    return space, arch, module


def _onnx_network(path: Path, batch: int) -> Network:
    import onnx

    if not path.is_file():
        raise InputError(f"--onnx: {path}: not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 - onnx raises several kinds for a file that is not a model
        raise InputError(f"--onnx: {path}: not an ONNX model ({_one_line(err)})") from None
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else (batch if i == 0 else 0) for i, d in enumerate(dims))
    if 0 in shape:
        raise InputError(f"--onnx: {path}: its input has a dynamic dimension other than the batch; export it with "
                         "a fixed input shape")
    return Network(shape, {"onnx": path.name}, onnx_path=path)


def parse_args(argv: list[str] | None = None) -> SelectSettings:
    p = ArgParser(prog="python -m hardware_profiles.select", description=__doc__.splitlines()[0])
    what = p.add_argument_group("the network (one of)")
    what.add_argument("--arch", help="arch string of --space")
    what.add_argument("--space", help="search space of --arch")
    what.add_argument("--space-options", metavar="FILE.yaml", help="the space's options (YAML)")
    what.add_argument("--num-classes", type=int, help="classes of the --arch network (default 1000)")
    what.add_argument("--run", metavar="RUN_DIR", help="a finished search: its best network, with its weights")
    what.add_argument("--timm-model", metavar="NAME[@RES]", help="a timm model (random weights)")
    what.add_argument("--onnx", metavar="FILE", help="an ONNX model (engines that read ONNX only)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where it runs (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads every engine may use (default 1)")
    p.add_argument("--batch", type=int, help="batch size of the timed input (default 1)")
    p.add_argument("--out", metavar="DIR", help="plan folder (default plans/<network>); an existing one continues")
    p.add_argument("--implementations", metavar="A,B", help="only these implementations (default: all of --device); "
                   "NAME[key=value,...] keeps only its candidates with those settings, e.g. "
                   "torch-cuda-compile[mode=reduce-overhead]")
    p.add_argument("--precision", choices=["any", "fp32", "tf32", "fp16", "bf16"],
                   help="only candidates of this precision (default any: half precisions too, within tolerance)")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 5)")
    p.add_argument("--warmup", type=int, help="untimed runs before a candidate's first round (default 10)")
    p.add_argument("--repeats", type=int, help="timed runs per round; the median is kept (default 30)")
    p.add_argument("--margin", type=float, help="least gain over the default engine to leave it (default 0.03)")
    s = p.parse_into(SelectSettings, argv)
    check_range(s, threads=1, batch=1, rounds=1, warmup=0, repeats=1, margin=0, num_classes=1)
    return s


def network_label(recipe: dict[str, Any]) -> str:
    """A short name of a network: the timm model, the ONNX file, or the space and arch string."""
    return recipe.get("timm_model") or recipe.get("onnx") or f"{recipe['space']} {recipe['arch']}"


def default_out(network: Network) -> Path:
    r = network.recipe
    name = r.get("timm_model") or (Path(r["onnx"]).stem if "onnx" in r else
                                   f"{r['space']}_{hashlib.sha256(r['arch'].encode()).hexdigest()[:6]}")
    return Path("plans") / name


@cli_entry
def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    network = load_network(s)
    out = check_folder(s.out or default_out(network), "--out")
    out.mkdir(parents=True, exist_ok=True)
    plan = select(network, s, out, log=lambda line: print(line, file=sys.stderr))
    print(plan.table())
    print(f"chosen: {plan.chosen} ({plan.why}); plan in {out / 'plan.json'}")
    failed = [e for e in plan.entries if e.status == "failed"]
    if plan.chosen is None:
        raise InputError(f"no implementation ran this network within tolerance; see {out / 'plan.md'}")
    if failed:
        raise InputError(f"{len(failed)} candidate(s) could not run this network ({failed[0].key}: "
                         f"{failed[0].reason}); the plan in {out / 'plan.json'} is from the others")
    return 0


if __name__ == "__main__":
    sys.exit(main())
