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
text + JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from predictors.io import save
from predictors.models import LGBMLatencyPredictor


def _table_profile(ref: str):
    """The `--profile` to train on: a profile with block and network tables."""
    from hardware_profiles import get_profile
    from hardware_profiles.lookup import TableProfile

    try:
        profile = get_profile(ref)
    except ValueError as err:
        raise SystemExit(f"error: --profile: {err}") from None
    if not isinstance(profile, TableProfile) or not profile.manifest.tables.networks:
        raise SystemExit(f"error: --profile: {ref} has no block and network tables to train on")
    return profile


def profile_predictor(profile, seed: int = 0) -> tuple[LGBMLatencyPredictor, list[str], np.ndarray]:
    """(predictor, archs, ms) fitted to a table profile: its block table is the block costs, its measured
    networks what the network correction learns from. Used by `--profile` and by recipes
    (`nas.latency_sources`)."""
    from hardware_profiles.tables import read_table

    m = profile.manifest
    nets = read_table(profile.folder / m.tables.networks)
    archs, y = nets["arch"].astype(str).tolist(), nets["median_ms"].to_numpy(float)
    model = LGBMLatencyPredictor(m.space, m.space_options, m.num_classes or 1000, block_table=profile.block_ms,
                                 overhead_ms=profile.overhead_ms, seed=seed).fit(archs, y)
    return model, archs, y


def _target_rows(args: argparse.Namespace, limit: int) -> tuple[list[str], np.ndarray]:
    """(archs, latencies) from `--table`/`--target`, at most `limit` random rows (0 = all)."""
    try:
        df = pd.read_csv(args.table)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: --table: cannot read {args.table} ({err})") from None
    for col in ("arch", args.target):
        if col not in df.columns:
            raise SystemExit(f"error: {args.table}: no column {col!r} (columns: {', '.join(df.columns)})")
    df = df[["arch", args.target]].dropna()
    if (df[args.target] <= 0).any():
        raise SystemExit(f"error: {args.table}: column {args.target!r} has non-positive latencies")
    if limit and len(df) > limit:
        df = df.sample(limit, random_state=args.seed)
    return df["arch"].astype(str).tolist(), df[args.target].to_numpy(float)


def transfer(args: argparse.Namespace) -> dict:
    """Few-shot: adapt the `--init-from` predictors to the table's device from `--samples` rows."""
    from predictors.io import PredictorFileError, load
    from predictors.transfer import few_shot

    if not (args.table and args.target and args.samples):
        raise SystemExit("error: --init-from needs --table, --target and --samples (the target's measurements)")
    dirs = [d for d in args.init_from.split(",") if d]
    sources, metas = [], []
    for d in dirs:
        try:
            model, meta = load(Path(d))
        except PredictorFileError as err:
            raise SystemExit(f"error: --init-from: {err}") from None
        sources.append(model)
        metas.append(meta)
    if args.space and args.space != sources[0].space:
        raise SystemExit(f"error: --space: {args.space} but the --init-from predictors are for {sources[0].space}")
    archs, y = _target_rows(args, args.samples)
    if len(archs) < args.samples:
        raise SystemExit(f"error: --samples: {args.table} has only {len(archs)} rows of {args.target!r}")
    names = [(m.get("profile") or {}).get("name") or Path(d).name for d, m in zip(dirs, metas)]
    try:
        model, fit = few_shot(sources, archs, y, source_names=names, seed=args.seed)
    except ValueError as err:
        raise SystemExit(f"error: --init-from: {err}") from None
    save(model, Path(args.out), archs=archs, y=y, profile=None, target=args.target,
         extra={"transfer": {**fit.as_dict(), "init_from": dirs, "samples": len(archs)}})
    return {"out": args.out, "samples": len(archs), "space": model.space, "target": args.target,
            "basis": dict(zip(fit.basis, fit.weights)), "constant_ms": fit.constant_ms,
            "loo_log_rmse": fit.loo_log_rmse}


def train(args: argparse.Namespace) -> dict:
    """Fit and save; returns a summary."""
    if args.init_from:
        return transfer(args)
    if args.profile:
        profile = _table_profile(args.profile)
        model, archs, y = profile_predictor(profile, args.seed)
        prof, target = {"name": profile.manifest.name, "version": profile.manifest.version}, "median_ms"
    else:
        if not (args.space and args.table and args.target):
            raise SystemExit("error: give --profile, or --space, --table and --target")
        archs, y = _target_rows(args, args.max_rows)
        options = yaml.safe_load(Path(args.space_options).read_text()) if args.space_options else {}
        model = LGBMLatencyPredictor(args.space, options, args.num_classes, seed=args.seed).fit(archs, y)
        prof, target = None, args.target
    save(model, Path(args.out), archs=archs, y=y, profile=prof, target=target)
    return {"out": args.out, "rows": len(archs), "space": model.space, "profile": prof, "target": target,
            "blocks": len(model.lookup_.costs_), "train_r2": model.score(archs, y)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m predictors.train", description=__doc__.splitlines()[0])
    p.add_argument("--profile")
    p.add_argument("--space")
    p.add_argument("--space-options")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--table")
    p.add_argument("--target")
    p.add_argument("--max-rows", type=int, default=0, help="train on at most this many rows (random)")
    p.add_argument("--init-from", help="comma-separated predictor folders of source devices (few-shot transfer)")
    p.add_argument("--samples", type=int, default=0, help="with --init-from: target rows to adapt on (random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    print(yaml.safe_dump(train(parse_args(argv)), sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
