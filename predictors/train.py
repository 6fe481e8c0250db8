"""Train a latency predictor.

    python -m predictors.train --profile NAME --out DIR
    python -m predictors.train --space SPACE --table FILE.csv --target COLUMN --out DIR
        [--space-options FILE.yaml] [--num-classes N] [--max-rows N] [--seed S]
    python -m predictors.train --init-from DIR[,DIR...] --samples N --table FILE.csv --target COLUMN --out DIR

From a profile, the block table gives the per-block costs and the profile's network table the whole-network
measurements the correction learns from. From your own CSV (an `arch` column in the space's canonical string and
a latency column), per-block costs are fitted to the networks first. With `--init-from`, predictors trained on
other devices (same space) are adapted to the target from `--samples` random rows of the table (few-shot transfer,
see `predictors/transfer.py`); the other rows stay unseen, for `predictors.evaluate`. The model folder is LightGBM
text + JSON; training is seeded, so the same command writes the same model.

A bad table, space, option file or folder exits with status 2 and one line naming the file (and line and column)
or the flag.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.cli import ArgParser, check_folder, check_range, read_space_options
from core.errors import InputError, cli_entry
from predictors.io import save
from predictors.models import LGBMLatencyPredictor
from search_spaces import make_space

MIN_ROWS = 5   # networks needed to fit from a table: block costs, then a correction cross-fitted over 5 folds


@dataclass
class TrainSettings:
    """What to train from and where to: one field per flag of the command line (``--max-rows`` -> ``max_rows``),
    with its default; `train` takes it (and hands a few-shot transfer, `--init-from`, to `transfer`)."""

    out: str
    profile: str | None = None
    space: str | None = None
    space_options: str | None = None
    num_classes: int = 1000
    table: str | None = None
    target: str | None = None
    max_rows: int = 0
    init_from: str | None = None
    samples: int = 0
    seed: int = 0


def _table_profile(ref: str):
    """The `--profile` to train on: a profile with block and network tables."""
    from hardware_profiles import get_profile
    from hardware_profiles.lookup import TableProfile

    try:
        profile = get_profile(ref)
    except ValueError as err:   # an unknown name (the valid ones listed), or a damaged manifest (named)
        raise InputError(f"--profile: {err}") from None
    if not isinstance(profile, TableProfile) or not profile.manifest.tables.networks:
        raise InputError(f"--profile: {ref} has no block and network tables to train on")
    return profile


def profile_predictor(profile, seed: int = 0) -> tuple[LGBMLatencyPredictor, list[str], np.ndarray]:
    """(predictor, archs, ms) fitted to a table profile: its block table is the block costs, its measured
    networks what the network correction learns from, and its extra networks (outside the space, if it has
    them) what the generic network model learns from too. Used by `--profile` and by recipes
    (`nas.latency_sources`)."""
    m = profile.manifest
    nets = profile.read_networks()   # verified against the manifest's SHA-256 before it is parsed
    archs, y = nets["arch"].astype(str).tolist(), nets["median_ms"].to_numpy(float)
    extra = [(net, ms) for _, net, ms in profile.read_extra()]
    model = LGBMLatencyPredictor(m.space, m.space_options, m.num_classes or 1000, block_table=profile.block_ms,
                                 overhead_ms=profile.overhead_ms, seed=seed).fit(archs, y, extra=extra)
    return model, archs, y


def _space(args: TrainSettings) -> tuple[object, dict]:
    """(space, options as given) of `--space`, `--space-options` and `--num-classes`; errors name the flag or the
    options file."""
    options = read_space_options(args.space_options) or {}
    return make_space(args.space, options, args.num_classes, source=args.space_options or "--space"), options


def _target_rows(args: TrainSettings, space, limit: int) -> tuple[list[str], np.ndarray]:
    """(archs, latencies) from `--table`/`--target`, checked row by row (every arch must decode in `space`), at
    most `limit` random rows (0 = all; seeded by `--seed`)."""
    from hardware_profiles.tables import read_latency_table

    rows = read_latency_table(args.table, args.target)
    rows.decode(space)
    archs, y = rows.archs, rows.values
    if limit and len(archs) > limit:
        pick = pd.Series(np.arange(len(archs))).sample(limit, random_state=args.seed).to_numpy()
        archs, y = [archs[i] for i in pick], y[pick]
    return archs, y


def _fit(args: TrainSettings, options: dict, archs: list[str], y: np.ndarray) -> LGBMLatencyPredictor:
    """The predictor fitted to the table's rows; too few rows, or rows the fit cannot use, name the table."""
    if len(archs) < MIN_ROWS:
        cut = f" (--max-rows {args.max_rows})" if args.max_rows and args.max_rows < MIN_ROWS else ""
        raise InputError(f"{args.table}: {len(archs)} network(s) with a value in column {args.target!r}{cut}; "
                         f"training needs at least {MIN_ROWS}")
    model = LGBMLatencyPredictor(args.space, options, args.num_classes, seed=args.seed)
    try:
        return model.fit(archs, y)
    except InputError as err:
        raise InputError(f"{args.table}: column {args.target!r}: {err}") from None


def _sources(args: TrainSettings) -> tuple[list[str], list, list[dict]]:
    """(folders, predictors, metadata) of `--init-from`; a folder `load` refuses is named in one line."""
    from predictors.io import load_flag

    dirs = [d for d in args.init_from.split(",") if d]
    if not dirs:
        raise InputError("--init-from: expected one or more predictor folders, separated by commas")
    loaded = [load_flag("--init-from", d) for d in dirs]
    return dirs, [model for model, _ in loaded], [meta for _, meta in loaded]


def transfer(args: TrainSettings) -> dict:
    """Few-shot: adapt the `--init-from` predictors to the table's device from `--samples` rows."""
    from predictors.transfer import few_shot

    if not (args.table and args.target and args.samples):
        raise InputError("--init-from needs --table, --target and --samples (the target's measurements)")
    dirs, sources, metas = _sources(args)
    if args.space and args.space != sources[0].space:
        raise InputError(f"--space: {args.space} but the --init-from predictors are for {sources[0].space}")
    archs, y = _target_rows(args, sources[0].space_, args.samples)
    if len(archs) < args.samples:
        raise InputError(f"--samples: {args.table} has only {len(archs)} rows of {args.target!r}, "
                         f"fewer than --samples {args.samples}")
    names = [(m.get("profile") or {}).get("name") or Path(d).name for d, m in zip(dirs, metas)]
    try:
        model, fit = few_shot(sources, archs, y, source_names=names, seed=args.seed)
    except ValueError as err:
        raise InputError(f"--init-from: {err}") from None
    save(model, Path(args.out), archs=archs, y=y, profile=None, target=args.target,
         extra={"transfer": {**fit.as_dict(), "init_from": dirs, "samples": len(archs)}})
    return {"out": args.out, "samples": len(archs), "space": model.space, "target": args.target,
            "basis": dict(zip(fit.basis, fit.weights)), "constant_ms": fit.constant_ms,
            "loo_log_rmse": fit.loo_log_rmse}


def train(args: TrainSettings) -> dict:
    """Fit and save; returns a summary. `--out` is checked first, so a long fit never ends unwritable."""
    check_range(args, num_classes=1, max_rows=0, samples=0)
    check_folder(args.out, "--out")
    if args.init_from:
        return transfer(args)
    if args.profile:
        from hardware_profiles.drift import profile_record

        profile = _table_profile(args.profile)
        model, archs, y = profile_predictor(profile, args.seed)
        prof, target = profile_record(profile.manifest), "median_ms"
    else:
        if not (args.space and args.table and args.target):
            raise InputError("give --profile, or --space, --table and --target")
        space, options = _space(args)
        archs, y = _target_rows(args, space, args.max_rows)
        model = _fit(args, options, archs, y)
        prof, target = None, args.target
    save(model, Path(args.out), archs=archs, y=y, profile=prof, target=target)
    prof = prof and {"name": prof["name"], "version": prof["version"]}
    return {"out": args.out, "rows": len(archs), "space": model.space, "profile": prof, "target": target,
            "blocks": len(model.lookup_.costs_), "train_r2": model.score(archs, y)}


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    p = ArgParser(prog="python -m predictors.train", description=__doc__.splitlines()[0])
    p.add_argument("--profile", metavar="NAME", help="train on a hardware profile's block and network tables (a "
                   "name or name@version, e.g. gpu-h100-fp32-b1); the table flags are then not used")
    p.add_argument("--space", metavar="SPACE", help="search space of the table's arch strings (fbnet, mobilenet, "
                   "nb201, muffnet, lrssd)")
    p.add_argument("--space-options", metavar="FILE.yaml", help="YAML mapping of the space's options (default: the "
                   "space's defaults)")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="classifier outputs of the space's networks (default: 1000)")
    p.add_argument("--table", metavar="FILE.csv", help="measured networks: an `arch` column (canonical strings of "
                   "the space) and the --target column; CSV or Parquet")
    p.add_argument("--target", metavar="COLUMN", help="latency column of --table, in ms (empty cells are skipped)")
    p.add_argument("--max-rows", type=int, metavar="N", help="train on at most N rows, picked at "
                   "random with --seed (default: 0 = all)")
    p.add_argument("--init-from", metavar="DIR[,DIR...]", help="comma-separated predictor folders of source "
                   "devices, same space (few-shot transfer; needs --table, --target and --samples)")
    p.add_argument("--samples", type=int, metavar="N", help="with --init-from: target rows to adapt "
                   "on, at least 3, picked at random with --seed")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the row sampling and of LightGBM "
                   "(default: 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the predictor into (made if "
                   "missing; a predictor already there is replaced)")
    return p.parse_into(TrainSettings, argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Train and save a predictor, print a YAML summary; a bad input is one ``error:`` line and status 2."""
    print(yaml.safe_dump(train(parse_args(argv)), sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
