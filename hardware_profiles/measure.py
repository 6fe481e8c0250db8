"""Measure a profile's tables: per-block latency for the layers a space can produce, plus whole networks.

    python -m hardware_profiles.measure --profile NAME --space SPACE [--networks N] [--backend onnxruntime-cpu]
        [--threads T] [--sample K] [--space-options FILE.yaml] [--root DIR]
        [--random-networks N] [--plain-networks N] [--mixed-networks N] [--same-pad-networks N]
        [--timm-models NAME[@RES],...]

Each block (cost key) is built alone and timed: warm-up runs, then the median of repeats; a measurement whose
spread (p90-p10)/median exceeds `--max-spread` is re-measured (up to `--attempts` times) and the least noisy one
kept. N whole networks sampled from the space (seeded) are timed the same way; they are what predictors train and
are judged on. Networks outside the space can be timed too, into a third table (`extra.csv`: name, the network's
definition as JSON, timings), with their blocks added to the block table: `--random-networks N` random
MobileNet-family networks (`search_spaces.random_defs`), `--plain-networks N` random MobileNetV1/LCNet-like plain
stacks of depthwise-separable blocks, `--mixed-networks N` random MixNet-like (mixed depthwise kernels) and
MobileNetV4-like (`uir` blocks) networks, `--same-pad-networks N` random networks with TensorFlow 'same' padding
(timm's tf_ ports), and `--timm-models` named timm models. They are what lets a
predictor trained from the profile cost networks that are not points of its space (`predictors.predict
--timm-model`): the block model gets neighbours for their blocks, the generic network model examples of whole
networks. The manifest records the machine, the runtime, the noise and, once the tables are final, their
SHA-256.

Killed jobs lose nothing: each row is written to its table atomically as soon as it is measured (``--flush-seconds
0``, the default), and re-running the same command continues the newest version of the profile in ``--root`` (or,
without ``--root``, wherever it is found): measured keys and networks are kept byte for byte and never measured
again. Bad input (flags, the space options file, a folder that is a file, a profile measured with other settings)
is one ``error:`` line with exit status 2.

Nothing here is x86-specific: on an aarch64 board the same command with ``--backend onnxruntime-cpu`` builds an
ARM table (install the project there with ``pip install -e .``; onnxruntime publishes aarch64 wheels).
"""
from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from core.cli import ArgParser, check_folder, check_range, read_space_options
from core.errors import InputError, cli_entry
from hardware_profiles.backends import (BACKENDS, backend_device, machine_info, make_backend, measure_in_rounds,
                                       measure_stable, preheat_backend)
from hardware_profiles.manifest import (BUILTIN_ROOT, Manifest, check_profile_name, discover, read_manifest, resolve,
                                        table_hashes, verify_tables, write_manifest)
from hardware_profiles.tables import BLOCK_COLUMNS, EXTRA_COLUMNS, NETWORK_COLUMNS, TableWriter
from search_spaces import make_space


@dataclass
class MeasureSettings:
    """What to measure and how: one field per flag of the command line (``--max-spread`` -> ``max_spread``),
    with its default; `measure_profile` and `check_profile` take it, so code calls them as the command line does."""

    profile: str
    space: str | None = None
    check: int = 0
    space_options: str | None = None
    num_classes: int = 1000
    networks: int = 50
    random_networks: int = 0
    plain_networks: int = 0
    mixed_networks: int = 0
    same_pad_networks: int = 0
    timm_models: list[str] = field(default_factory=list)
    sample: int = 0
    backend: str = "onnxruntime-cpu"
    threads: int = 1
    precision: str = "fp32"
    batch: int = 1
    channels_last: bool = False
    warmup: int = 10
    repeats: int = 50
    max_spread: float = 0.15
    attempts: int = 3
    rounds: int = 1
    preheat: float = 0.0
    chunk: int = 32
    seed: int = 0
    flush_seconds: float = 0.0
    device: str | None = None
    root: str | None = None
    new_version: bool = False


def _row(name: str, value: str, stats, attempts: int) -> dict[str, Any]:
    return {name: value, "median_ms": stats.median_ms, "mean_ms": stats.mean_ms, "p10_ms": stats.p10_ms,
            "p90_ms": stats.p90_ms, "spread": stats.spread, "repeats": stats.repeats, "attempts": attempts}


# floats read back exactly as written, so a continued table keeps its rows byte for byte: pandas 3 parses them so by
# default and deprecates the option (a Pandas4Warning), pandas 2 needs it
def _versions(root: Path, name: str) -> dict[int, Path]:
    """Versions of profile `name` under `root` that have a manifest (a folder without one is a start that was
    killed before its manifest was written, and is reused)."""
    folder = root / name
    return {int(p.parent.name): p.parent for p in folder.glob("*/manifest.yaml") if p.parent.name.isdigit()}


def _threads(args: MeasureSettings) -> int:
    """The thread count a profile records: the CPU backends' ``--threads``, 0 on a GPU."""
    return args.threads if backend_device(args.backend) == "cpu" else 0


def _open_profile(args: MeasureSettings, backend, space_options: dict) -> tuple[Manifest, Path]:
    """The profile folder to measure into: the newest version in `--root` (or, without `--root`, the newest one
    found on the profile path), continued; or a new version when there is none or `--new-version` asks for one."""
    root = Path(args.root) if args.root else BUILTIN_ROOT
    versions = _versions(root, args.profile)
    existing = versions[max(versions)] if versions else (None if args.root else resolve(args.profile))
    if existing is not None and not args.new_version:
        return _continued(args, existing, space_options), existing
    known = set(versions) | (set(discover().get(args.profile, {})) if not args.root else set())
    version = 1 + max(known, default=0)
    manifest = Manifest(
        name=args.profile, version=version, kind="measured", device=args.device or platform.node() or "unknown",
        runtime=backend.runtime, runtime_version=backend.version(), backend=args.backend,
        precision=args.precision, batch=args.batch, threads=_threads(args),
        tables={"blocks": "blocks.csv", "networks": "networks.csv"},
        options={"channels_last": args.channels_last} if backend_device(args.backend) == "cuda" else {})
    return manifest, root / args.profile / str(version)


def _continued(args: MeasureSettings, folder: Path, space_options: dict) -> Manifest:
    """The manifest of a profile to continue, once it is known to be a measured profile of the same setup whose
    tables (if it was finished) are the ones recorded. Its hashes are dropped: the tables are partial again."""
    manifest = read_manifest(folder / "manifest.yaml")
    where = f"{manifest.ref} in {folder}"
    if manifest.kind != "measured":
        raise InputError(f"--profile: {where} is {manifest.kind}, not measured; choose another name")
    threads = _threads(args)
    wanted = {"space": args.space, "space_options": space_options, "num_classes": args.num_classes,
              "backend": args.backend, "precision": args.precision, "batch": args.batch, "threads": threads}
    for name, value in wanted.items():
        recorded = getattr(manifest, name)
        if recorded is not None and recorded != value and not (name == "space_options" and not manifest.space):
            flag = {"space_options": "space-options", "num_classes": "num-classes"}.get(name, name)
            raise InputError(f"--{flag}: {where} was measured with {name} {recorded!r}, not {value!r}; measure "
                             "into another profile name, or start one with --new-version")
    verify_tables(manifest, folder)
    manifest.table_sha256 = {}
    return manifest


# what each backend can time of a compression policy's units (`search_spaces.policy`)
POLICY_PRECISIONS = {"onnxruntime-cpu": ("fp32", "int8"), "torch-cuda": ("fp32", "fp16", "bf16")}


def _space(args: MeasureSettings):
    """The space to measure and its options (`InputError` for a bad name, file or option, or a compression policy
    the backend cannot time)."""
    options = read_space_options(args.space_options) or {}
    space = make_space(args.space, options, args.num_classes, source=args.space_options or "--space-options")
    policy = getattr(space.options, "compression", None)
    if policy is not None:
        runs = POLICY_PRECISIONS.get(args.backend, ("fp32",))
        bad = [p for p in policy.precisions if p not in runs]
        if bad:
            raise InputError(f"--space-options: compression.precisions: --backend {args.backend} cannot time "
                             f"{bad[0]} units (it times {', '.join(runs)})")
        if args.backend == "torch-cuda" and args.precision != "fp32":
            raise InputError(f"--precision {args.precision}: a compression policy's units are timed inside an fp32 "
                             "network (a unit left in fp32 runs in fp32): --precision fp32")
    return space, options


def _sample_networks(space, n: int, seed: int) -> list[str]:
    """`n` distinct architectures, the same list for the same seed (so a resumed run continues it)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    for _ in range(100 * n):
        if len(seen) >= n:
            break
        seen.setdefault(space.to_string(space.sample(rng)), None)
    return list(seen)


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files a killed run left half-written beside its tables (the tables themselves are always whole)."""
    for name in ("blocks.csv", "networks.csv", "extra.csv", "manifest.yaml"):
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _measure_rows(writer: TableWriter, column: str, items: list[tuple[str, Callable[[], Any], tuple[int, ...]]],
                  backend, args: MeasureSettings, desc: str, fields: Callable[[str], dict] | None = None) -> None:
    """Measure each (name, build, shape) not yet in the table, writing rows as they come (with `--rounds` > 1,
    a chunk of `--chunk` items at a time, timed in interleaved rounds); rows measured before an error or an
    interrupt are written too. `fields(name)`: more columns of a row."""
    from tqdm import tqdm

    done = writer.done(column)
    todo = [item for item in items if item[0] not in done]
    more = fields or (lambda name: {})
    try:
        with tqdm(total=len(todo), desc=desc, unit=column, file=sys.stderr) as bar:
            if args.rounds == 1:
                for name, build, shape in todo:
                    stats, n = measure_stable(backend, build, shape, args.max_spread, args.attempts)
                    writer.add({**_row(column, name, stats, n), **more(name)})
                    bar.update(1)
                return
            for start in range(0, len(todo), args.chunk):
                chunk = todo[start:start + args.chunk]
                for (name, _, _), stats in zip(chunk, measure_in_rounds(backend, [(b, s) for _, b, s in chunk],
                                                                         args.rounds)):
                    writer.add({**_row(column, name, stats, args.rounds), **more(name)})
                bar.update(len(chunk))
    finally:
        writer.flush()


def _block_items(args: MeasureSettings, space) -> tuple[list, bool]:
    """(items to measure, whether they are every layer of the space) for the block table."""
    layers, exact = space.enumerate_layers()
    if args.sample and args.sample < len(layers):
        idx = np.random.default_rng(args.seed).choice(len(layers), args.sample, replace=False)
        layers, exact = [layers[i] for i in sorted(idx)], False
    items = [(str(lc.key), lambda key=lc.key: space.build_layer(key), (1, *lc.key.in_shape)) for lc in layers]
    return items, exact


def _network_items(args: MeasureSettings, space) -> list:
    """Items to measure for the network table: the seeded sample, the same list on every run."""
    items = []
    for arch in _sample_networks(space, args.networks, args.seed):
        genotype = space.decode(arch)
        items.append((arch, lambda g=genotype: space.build(g), space.input_shape(genotype)))
    return items


def _extra_defs(args: MeasureSettings) -> list[tuple[str, Any]]:
    """(name, NetworkDef) of the networks outside the space to time (`--random-networks`, `--plain-networks`,
    `--mixed-networks`, `--same-pad-networks`, `--timm-models`)."""
    from search_spaces.random_defs import random_defs
    from search_spaces.timm_import import network_def_from_timm

    out = [(f"{kind}:{args.seed}:{i}", net) for kind, n in _random_counts(args).items()
           for i, net in enumerate(random_defs(kind, n, args.seed, args.num_classes))]
    for spec in args.timm_models:
        name, _, res = spec.partition("@")
        try:
            net = network_def_from_timm(name, num_classes=args.num_classes, resolution=int(res or 224))
        except (ValueError, RuntimeError) as err:   # timm raises RuntimeError for an unknown name
            raise InputError(f"--timm-models: {spec}: {err}") from None
        out.append((f"timm:{name}@{net.resolution}", net))
    return out


def _random_counts(args: MeasureSettings) -> dict[str, int]:
    """How many random networks of each `search_spaces.random_defs.GENERATORS` kind the flags ask for."""
    return {"random": args.random_networks, "plain": args.plain_networks, "mixed": args.mixed_networks,
            "same": args.same_pad_networks}


def _extra_block_items(extra: list[tuple[str, Any]], seen: set[str]) -> list:
    """Block items for the layers of the extra networks that the space's items do not cover."""
    from search_spaces.blocks import build_layer, layer_costs

    items = {}
    for _, net in extra:
        for lc in layer_costs(net):
            key = str(lc.key)
            if key not in seen and key not in items:
                items[key] = (key, lambda k=lc.key: build_layer(k), (1, *lc.key.in_shape))
    return list(items.values())


def _measure_extra(args: MeasureSettings, manifest: Manifest, folder: Path, extra: list, backend) -> pd.DataFrame:
    """Time the extra networks whole into the `extra` table (name, definition JSON, timing columns)."""
    from search_spaces.blocks import build_network, network_def_to_json

    manifest.tables.extra = manifest.tables.extra or "extra.csv"
    writer = TableWriter(folder / manifest.tables.extra, EXTRA_COLUMNS, args.flush_seconds)
    defs = dict(extra)
    items = [(name, lambda net=net: build_network(net), (1, net.in_chans, net.resolution, net.resolution))
             for name, net in extra]
    _measure_rows(writer, "network", items, backend, args, f"{manifest.ref} extra networks",
                  lambda name: {"definition": network_def_to_json(defs[name])})
    return writer.df


def measure_profile(args: MeasureSettings) -> dict[str, Any]:
    """Measure blocks and networks into the profile; returns figures for the report.

    Raises:
        InputError: a bad setting (named as its flag), space options file or profile folder.
    """
    check_args(args)
    backend = make_backend(args.backend, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           precision=args.precision, batch=args.batch, channels_last=args.channels_last)
    space, space_options = _space(args)
    manifest, folder = _open_profile(args, backend, space_options)
    manifest.space, manifest.space_options, manifest.num_classes = args.space, space_options, args.num_classes
    manifest.machine = machine_info(args.backend)
    layers = space.enumerate_layers()[0]
    resolutions = {lc.key.in_shape[1] for lc in layers if lc.key.op == "stem"}
    manifest.resolution = resolutions.pop() if len(resolutions) == 1 else None
    write_manifest(manifest, folder)   # first, so a killed run leaves a profile that the next run continues
    _remove_stale_temp_files(folder)
    preheat_backend(args.backend, args.preheat, args.threads)
    start = time.perf_counter()
    items, exact = _block_items(args, space)
    extra = _extra_defs(args)
    items += _extra_block_items(extra, {name for name, _, _ in items})
    blocks = TableWriter(folder / manifest.tables.blocks, BLOCK_COLUMNS, args.flush_seconds)
    _measure_rows(blocks, "key", items, backend, args, f"{manifest.ref} blocks")
    block_seconds = time.perf_counter() - start
    overhead_ms = manifest.options.get("overhead_ms")
    if overhead_ms is None:   # a continued profile keeps its own: it is taken off every block, most timed with it
        import torch

        overhead_ms = backend.measure(torch.nn.ReLU(), (1, 3, 8, 8)).median_ms
    nets = TableWriter(folder / manifest.tables.networks, NETWORK_COLUMNS, args.flush_seconds)
    _measure_rows(nets, "arch", _network_items(args, space), backend, args, f"{manifest.ref} networks")
    extra_df = _measure_extra(args, manifest, folder, extra, backend) if extra or manifest.tables.extra else None
    _finish_manifest(args, manifest, blocks.df, nets.df, overhead_ms, exact, extra_df)
    manifest.table_sha256 = table_hashes(manifest, folder)   # the tables are final: record what they are
    write_manifest(manifest, folder)
    return {"profile": manifest.ref, "folder": str(folder), "blocks": len(blocks.df), "complete": exact,
            "networks": len(nets.df), "extra_networks": 0 if extra_df is None else len(extra_df),
            "block_seconds": block_seconds, "seconds": time.perf_counter() - start,
            **manifest.noise}


def _finish_manifest(args: MeasureSettings, manifest: Manifest, blocks: pd.DataFrame, nets: pd.DataFrame,
                     overhead_ms: float, exact: bool, extra: pd.DataFrame | None = None) -> None:
    """Record the overhead, the noise and how the tables were measured."""
    manifest.options = {**manifest.options, "overhead_ms": overhead_ms}
    manifest.noise = {"median_relative_spread_blocks": float(blocks["spread"].median()) if len(blocks) else 0.0,
                      "median_relative_spread_networks": float(nets["spread"].median()) if len(nets) else 0.0,
                      **({"remeasured_share": float((blocks["attempts"] > 1).mean()) if len(blocks) else 0.0}
                         if args.rounds == 1 else {})}
    timing = (f"{args.warmup} warm-up runs, median of {args.repeats} timed runs, re-measured up to "
              f"{args.attempts} times while (p90-p10)/median > {args.max_spread}" if args.rounds == 1 else
              f"{args.warmup} warm-up runs, then {args.rounds} interleaved rounds over chunks of {args.chunk} items "
              f"(each round the median of {args.repeats} timed runs), the smallest round median kept; spread = "
              "(largest - smallest round median) / smallest")
    manifest.how_measured = (f"{timing}; blocks: "
                             f"{'all' if exact else 'a sample of'} {len(blocks)} layers of space {args.space}, "
                             f"each timed alone; networks: {len(nets)} sampled with seed {args.seed}")
    if extra is not None and len(extra):
        names = extra["network"].astype(str)
        from search_spaces.random_defs import GENERATORS

        timm = sorted(n.split(":", 1)[1] for n in names if n.startswith("timm:"))
        drawn = [f"{count} {GENERATORS[kind].description}" for kind in GENERATORS
                 if (count := int(names.str.startswith(f"{kind}:").sum()))]
        parts = ([", ".join(drawn) + f" (search_spaces.random_defs, seed {args.seed})"] if drawn else []) + \
            ([f"timm models {', '.join(timm)}"] if timm else [])
        manifest.how_measured += "; extra networks outside the space, timed whole and their blocks alone: " + \
            ", ".join(parts)
        manifest.noise["median_relative_spread_extra"] = float(extra["spread"].median())


def parse_args(argv: list[str] | None = None) -> MeasureSettings:
    """The command line (usage errors are `InputError`s)."""
    p = ArgParser(prog="python -m hardware_profiles.measure", description=__doc__.splitlines()[0])
    _what_flags(p)
    _how_flags(p)
    return p.parse_into(MeasureSettings, argv)


def _what_flags(p: ArgParser) -> None:
    """Flags saying what is measured: the profile, the space, its networks and the networks outside it."""
    p.add_argument("--profile", metavar="NAME", required=True,
                   help="profile name (lower-case letters, digits, '.', '_', '-'); its newest version is continued "
                        "if it exists")
    p.add_argument("--space", help="registered search space whose layers and networks are timed (required unless "
                   "--check)")
    p.add_argument("--check", metavar="N", type=int,
                   help="measure nothing new: re-measure N of the profile's networks here with its settings (in "
                        "max(--rounds, 3) interleaved rounds) and say whether its table still holds (exit 0) or "
                        "has drifted (exit 1); --profile may then be NAME@VERSION")
    p.add_argument("--space-options", metavar="FILE",
                   help="YAML file with the space's options (default: the space's defaults)")
    p.add_argument("--num-classes", metavar="N", type=int,
                   help="classifier outputs of the networks (default 1000)")
    p.add_argument("--networks", metavar="N", type=int, help="whole networks to time (default 50)")
    p.add_argument("--random-networks", metavar="N", type=int,
                   help="also time N random MobileNet-family networks outside the space (whole, and their blocks "
                        "alone; seeded by --seed): what lets a predictor cost networks that are not points of the "
                        "space, such as timm models (default 0)")
    p.add_argument("--plain-networks", metavar="N", type=int,
                   help="also time N random plain stacks of depthwise-separable blocks, MobileNetV1/LCNet-like "
                        "(search_spaces.random_defs.random_plain_def; seeded by --seed), the same way (default 0)")
    p.add_argument("--mixed-networks", metavar="N", type=int,
                   help="also time N random MixNet-like (mixed depthwise kernels) and MobileNetV4-like (uir blocks) "
                        "networks (random_mixed_def; seeded by --seed), the same way (default 0)")
    p.add_argument("--same-pad-networks", metavar="N", type=int,
                   help="also time N random networks with TensorFlow 'same' padding, as timm's tf_ ports have "
                        "(random_same_pad_def; seeded by --seed), the same way (default 0)")
    p.add_argument("--timm-models", metavar="NAME[@RES]", type=lambda v: [t for t in v.split(",") if t],
                   help="comma-separated timm models to time the same way (e.g. mobilenetv2_100@160,mnasnet_100); "
                        "keep the models you will judge the predictor on out")
    p.add_argument("--sample", metavar="N", type=int,
                   help="time only this many blocks, sampled with --seed (default 0 = every layer of the space)")


def _how_flags(p: ArgParser) -> None:
    """Flags saying how it is measured: the backend and its settings, the protocol, where the profile goes."""
    p.add_argument("--backend", choices=BACKENDS,
                   help="what times the modules: onnxruntime on this CPU (default), PyTorch CUDA graphs on the GPU, or "
                   "another implementation (hardware_profiles.implementations) with its default settings")
    p.add_argument("--threads", metavar="N", type=int, help="CPU threads of a CPU backend (default 1)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="numeric precision (torch-cuda: fp32/fp16/bf16; onnxruntime-cpu: fp32, or int8: each "
                   "network and block quantized first, static QDQ with per-channel weights)")
    p.add_argument("--batch", metavar="N", type=int,
                   help="batch size (torch-cuda; onnxruntime-cpu measures batch 1)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (torch-cuda)")
    p.add_argument("--warmup", metavar="N", type=int, help="untimed runs before timing (default 10)")
    p.add_argument("--repeats", metavar="N", type=int,
                   help="timed runs; their median is the figure (default 50)")
    p.add_argument("--max-spread", metavar="RATIO", type=float,
                   help="re-measure while (p90-p10)/median is above this (default 0.15)")
    p.add_argument("--attempts", metavar="N", type=int,
                   help="measurements at most per block or network; the least noisy is kept (default 3)")
    p.add_argument("--rounds", metavar="R", type=int,
                   help="time each chunk of --chunk items in R interleaved rounds and keep each item's smallest "
                        "round median (default 1: one measurement per item, re-measured while noisy). On a shared "
                        "or virtual machine a measurement can run 20-40 %% slow for minutes; rounds spread that "
                        "over all items and the smallest median repeats")
    p.add_argument("--preheat", metavar="SECONDS", type=float,
                   help="onnxruntime-cpu: keep the measuring cores busy this long before timing, so rows are timed "
                        "in the machine's sustained state rather than its first minutes (default 0)")
    p.add_argument("--chunk", metavar="N", type=int,
                   help="items timed together with --rounds > 1; a killed run loses at most one chunk (default 32)")
    p.add_argument("--seed", metavar="N", type=int,
                   help="seed of the block sample and the networks (default 0)")
    p.add_argument("--flush-seconds", metavar="S", type=float,
                   help="write the tables at least this often (default 0: after every row, so a killed run "
                        "loses nothing; S > 0 writes less often and may measure up to S seconds of rows again)")
    p.add_argument("--device", metavar="TEXT", help="device description for the manifest (default: host name)")
    p.add_argument("--root", metavar="DIR",
                   help="folder holding profiles: the profile is continued from, or written to, "
                        "DIR/NAME/VERSION (default: continue it wherever it is found on the profile "
                        "path, else write to the built-in folder)")
    p.add_argument("--new-version", action="store_true", help="start a new version instead of continuing")


def check_args(args: MeasureSettings) -> None:
    """Refuse bad flags before anything is measured (`InputError` naming the flag)."""
    if args.check:
        check_range(args, check=1, rounds=1, seed=0, preheat=0)
        return
    if not args.space:
        raise InputError("the following arguments are required: --space")
    check_profile_name(args.profile)
    check_range(args, num_classes=1, networks=0, random_networks=0, plain_networks=0, mixed_networks=0,
                same_pad_networks=0, rounds=1, chunk=1, sample=0, threads=1, batch=1, warmup=0, repeats=1,
                max_spread=0, attempts=1, flush_seconds=0, preheat=0)
    if args.batch != 1 and args.backend == "onnxruntime-cpu":
        raise InputError("--batch: the onnxruntime-cpu backend measures batch 1")
    if args.root:
        check_folder(args.root, "--root")


def check_profile(args: MeasureSettings) -> tuple[dict[str, Any], bool]:
    """`--check N`: re-measure N of the profile's networks with its settings; (report, whether it holds)."""
    from hardware_profiles import get_profile
    from hardware_profiles.drift import check_verdict, installed_version
    from hardware_profiles.lookup import TableProfile

    check_args(args)
    profile = get_profile(args.profile)
    m = getattr(profile, "manifest", None)
    if not isinstance(profile, TableProfile) or not m.tables.networks:
        raise InputError(f"--check: profile {args.profile} has no network table to check against")
    if m.kind != "measured" or m.backend not in BACKENDS:
        raise InputError(f"--check: profile {m.ref} is {m.kind} ({m.backend}); only profiles measured with "
                         f"one of {', '.join(BACKENDS)} can be re-measured")
    nets = profile.read_networks()
    pick = np.sort(np.random.default_rng(args.seed).choice(len(nets), min(args.check, len(nets)), replace=False))
    archs, table = nets["arch"].astype(str).to_numpy()[pick], nets["median_ms"].to_numpy(float)[pick]
    space = make_space(m.space, m.space_options, m.num_classes or 1000, source=f"{m.ref} manifest")
    backend = make_backend(m.backend, threads=m.threads or 1, warmup=args.warmup, repeats=args.repeats,
                           precision=m.precision, batch=m.batch, channels_last=bool(m.options.get("channels_last", False)))
    genotypes = [space.decode(a) for a in archs]
    preheat_backend(m.backend, args.preheat, m.threads or 1)
    stats = measure_in_rounds(backend, [(lambda g=g: space.build(g), space.input_shape(g)) for g in genotypes],
                              max(args.rounds, 3))
    measured = np.array([s.median_ms for s in stats])
    verdict = check_verdict(table, measured, m.noise.get("median_relative_spread_networks", 0.0))
    here = machine_info(m.backend)
    report = {"profile": m.ref, "runtime": f"{m.runtime} {m.runtime_version} (recorded); "
                                           f"{installed_version(m.runtime) or 'not here'} (installed)",
              "machine": f"{m.machine.get('cpu', '?')} (recorded); {here.get('gpu') or here.get('cpu', '?')} (here)",
              **verdict, "verdict": ("holds" if verdict["holds"] else "drifted") + f": measured / table median "
              f"{verdict['median_ratio']:.3f}, tolerance +-{verdict['tolerance']:.3f}",
              "networks_checked": [{"arch": a, "table_ms": float(t), "measured_ms": float(x)}
                                   for a, t, x in zip(archs, table, measured)]}
    return report, verdict["holds"]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Measure a profile (or with --check, re-measure some of its networks): 0 done (or the profile holds), 1 the
    profile has drifted, 2 bad input."""
    args = parse_args(argv)
    if args.check:
        report, holds = check_profile(args)
        print(yaml.safe_dump(report, sort_keys=False).strip())
        return 0 if holds else 1
    report = measure_profile(args)
    print(yaml.safe_dump(report, sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
