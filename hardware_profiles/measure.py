"""Measure a profile's tables: per-block latency for the layers a space can produce, plus whole networks.

    python -m hardware_profiles.measure --profile NAME --space SPACE [--networks N] [--backend onnxruntime-cpu]
        [--threads T] [--sample K] [--space-options FILE.yaml] [--root DIR]

Each block (cost key) is built alone and timed: warm-up runs, then the median of repeats; a measurement whose
spread (p90-p10)/median exceeds `--max-spread` is re-measured (up to `--attempts` times) and the least noisy one
kept. N whole networks sampled from the space (seeded) are timed the same way; they are what predictors train and
are judged on. Rows are flushed to the tables atomically as they come, so a killed run resumes where it stopped
(measured keys and networks are skipped). The manifest records the machine, the runtime and the noise.

Nothing here is x86-specific: on an aarch64 board the same command with ``--backend onnxruntime-cpu`` builds an
ARM table (install the project there with ``pip install -e .``; onnxruntime publishes aarch64 wheels).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hardware_profiles.manifest import BUILTIN_ROOT, Manifest, read_manifest, resolve, write_manifest
from hardware_profiles.tables import BLOCK_COLUMNS, NETWORK_COLUMNS, read_table, write_table


def machine_info(backend: str) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"arch": platform.machine(), "system": platform.system(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    import onnxruntime
    import torch

    info.update(onnxruntime=onnxruntime.__version__, torch=torch.__version__)
    if backend == "torch-cuda" and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


class OnnxCpuBackend:
    """onnxruntime CPU provider: fixed intra-op threads, sequential execution, fp32."""

    runtime = "onnxruntime"

    def __init__(self, threads: int, warmup: int, repeats: int):
        self.threads, self.warmup, self.repeats = threads, warmup, repeats

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def measure(self, module, input_shape: tuple[int, ...]):
        from nas.evaluation.latency import export_onnx, measure_latency

        with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
            path = export_onnx(module, input_shape, Path(tmp) / "m.onnx")
            return measure_latency(path, input_shape, threads=self.threads, warmup=self.warmup,
                                   repeats=self.repeats)


def make_backend(args: argparse.Namespace):
    """The measuring backend the arguments ask for."""
    if args.backend == "onnxruntime-cpu":
        return OnnxCpuBackend(args.threads, args.warmup, args.repeats)
    if args.backend == "torch-cuda":
        from hardware_profiles.cuda import TorchCudaBackend

        return TorchCudaBackend(precision=args.precision, batch=args.batch, channels_last=args.channels_last,
                                warmup=args.warmup, repeats=args.repeats)
    raise SystemExit(f"error: --backend: {args.backend!r} cannot measure; expected onnxruntime-cpu or torch-cuda")


def measure_stable(backend, build: Callable[[], Any], shape: tuple[int, ...], max_spread: float,
                   attempts: int) -> tuple[Any, int]:
    """Measure; re-measure while the spread is above `max_spread`; keep the least noisy result."""
    best, n = None, 0
    for n in range(1, attempts + 1):
        stats = backend.measure(build(), shape)
        if best is None or stats.spread < best.spread:
            best = stats
        if stats.spread <= max_spread:
            break
    return best, n


def _row(name: str, value: str, stats, attempts: int) -> dict[str, Any]:
    return {name: value, "median_ms": stats.median_ms, "mean_ms": stats.mean_ms, "p10_ms": stats.p10_ms,
            "p90_ms": stats.p90_ms, "spread": stats.spread, "repeats": stats.repeats, "attempts": attempts}


class TableWriter:
    """Rows of one table, flushed atomically every `every_s` seconds and at the end."""

    def __init__(self, path: Path, columns: list[str], every_s: float):
        self.path, self.columns, self.every_s = path, columns, every_s
        self.df = read_table(path) if path.is_file() else pd.DataFrame(columns=columns)
        self.rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def done(self, column: str) -> set[str]:
        return set(self.df[column].astype(str))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            new = pd.DataFrame(self.rows, columns=self.columns)
            self.df = new if self.df.empty else pd.concat([self.df, new], ignore_index=True)
            self.rows = []
        write_table(self.df, self.path)
        self._last = time.monotonic()


def _open_profile(args: argparse.Namespace, backend) -> tuple[Manifest, Path]:
    """The profile folder to measure into: the existing newest version, or a new one."""
    existing = resolve(args.profile)
    if existing is not None and not args.new_version:
        manifest = read_manifest(existing / "manifest.yaml")
        if manifest.kind != "measured":
            raise SystemExit(f"error: --profile: {manifest.ref} is {manifest.kind}, not measured")
        return manifest, existing
    version = 1 + max((int(p.name) for p in (Path(args.root) / args.profile).glob("*") if p.name.isdigit()),
                      default=0)
    folder = Path(args.root) / args.profile / str(version)
    manifest = Manifest(
        name=args.profile, version=version, kind="measured", device=args.device or platform.node() or "unknown",
        runtime=backend.runtime, runtime_version=backend.version(), backend=args.backend,
        precision=args.precision, batch=args.batch, threads=args.threads if args.backend == "onnxruntime-cpu" else 0,
        tables={"blocks": "blocks.csv", "networks": "networks.csv"},
        options={"channels_last": args.channels_last} if args.backend == "torch-cuda" else {})
    return manifest, folder


def _space(args: argparse.Namespace):
    from search_spaces import get_space

    options = {}
    if args.space_options:
        options = yaml.safe_load(Path(args.space_options).read_text()) or {}
    try:
        return get_space(args.space, options, num_classes=args.num_classes), options
    except ValueError as err:
        raise SystemExit(f"error: --space: {err}") from None


def _sample_networks(space, n: int, seed: int) -> list[str]:
    """`n` distinct architectures, the same list for the same seed (so a resumed run continues it)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    for _ in range(100 * n):
        if len(seen) >= n:
            break
        seen.setdefault(space.to_string(space.sample(rng)), None)
    return list(seen)


def measure_profile(args: argparse.Namespace) -> dict[str, Any]:
    """Measure blocks and networks into the profile; returns figures for the report."""
    from tqdm import tqdm

    backend = make_backend(args)
    space, space_options = _space(args)
    manifest, folder = _open_profile(args, backend)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.space, manifest.space_options, manifest.num_classes = args.space, space_options, args.num_classes
    manifest.machine = machine_info(args.backend)
    write_manifest(manifest, folder)
    start = time.perf_counter()
    layers, exact = space.enumerate_layers()
    resolutions = {lc.key.in_shape[1] for lc in layers if lc.key.op == "stem"}
    manifest.resolution = resolutions.pop() if len(resolutions) == 1 else None
    if args.sample and args.sample < len(layers):
        idx = np.random.default_rng(args.seed).choice(len(layers), args.sample, replace=False)
        layers, exact = [layers[i] for i in sorted(idx)], False
    blocks = TableWriter(folder / manifest.tables.blocks, BLOCK_COLUMNS, args.flush_seconds)
    todo = [lc for lc in layers if str(lc.key) not in blocks.done("key")]
    for lc in tqdm(todo, desc=f"{manifest.ref} blocks", unit="block", file=sys.stderr):
        shape = (1, *lc.key.in_shape)
        stats, n = measure_stable(backend, lambda: space.build_layer(lc.key), shape, args.max_spread,
                                  args.attempts)
        blocks.add(_row("key", str(lc.key), stats, n))
    blocks.flush()
    block_seconds = time.perf_counter() - start
    import torch

    overhead = backend.measure(torch.nn.ReLU(), (1, 3, 8, 8))
    nets = TableWriter(folder / manifest.tables.networks, NETWORK_COLUMNS, args.flush_seconds)
    archs = [a for a in _sample_networks(space, args.networks, args.seed) if a not in nets.done("arch")]
    for arch in tqdm(archs, desc=f"{manifest.ref} networks", unit="net", file=sys.stderr):
        genotype = space.decode(arch)
        stats, n = measure_stable(backend, lambda: space.build(genotype), space.input_shape(genotype),
                                  args.max_spread, args.attempts)
        nets.add(_row("arch", arch, stats, n))
    nets.flush()
    manifest.options = {**manifest.options, "overhead_ms": overhead.median_ms}
    manifest.noise = {"median_relative_spread_blocks": float(blocks.df["spread"].median()),
                      "median_relative_spread_networks": float(nets.df["spread"].median()) if len(nets.df) else 0.0,
                      "remeasured_share": float((blocks.df["attempts"] > 1).mean())}
    manifest.how_measured = (f"{args.warmup} warm-up runs, median of {args.repeats} timed runs, re-measured up "
                             f"to {args.attempts} times while (p90-p10)/median > {args.max_spread}; blocks: "
                             f"{'all' if exact else 'a sample of'} {len(blocks.df)} layers of space {args.space}, "
                             f"each timed alone; networks: {len(nets.df)} sampled with seed {args.seed}")
    write_manifest(manifest, folder)
    return {"profile": manifest.ref, "folder": str(folder), "blocks": len(blocks.df), "complete": exact,
            "networks": len(nets.df), "block_seconds": block_seconds, "seconds": time.perf_counter() - start,
            **manifest.noise}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hardware_profiles.measure", description=__doc__.splitlines()[0])
    p.add_argument("--profile", required=True, help="profile name (continued if it exists)")
    p.add_argument("--space", required=True, help="registered search space")
    p.add_argument("--space-options", help="YAML file with the space's options")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--networks", type=int, default=50, help="whole networks to time (default 50)")
    p.add_argument("--sample", type=int, default=0, help="time only this many blocks (0 = all)")
    p.add_argument("--backend", default="onnxruntime-cpu", choices=["onnxruntime-cpu", "torch-cuda"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--max-spread", type=float, default=0.15)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flush-seconds", type=float, default=5.0, help="write tables at least this often")
    p.add_argument("--device", help="device description for the manifest (default: host name)")
    p.add_argument("--root", default=str(BUILTIN_ROOT), help="folder holding profiles (default: built-in)")
    p.add_argument("--new-version", action="store_true", help="start a new version instead of continuing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch != 1 and args.backend == "onnxruntime-cpu":
        raise SystemExit("error: --batch: the onnxruntime-cpu backend measures batch 1")
    report = measure_profile(args)
    print(yaml.safe_dump(report, sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
