"""Predict latency with a trained predictor.

    python -m predictors.predict --model DIR --arch STRING [--arch STRING ...] [--json]
    python -m predictors.predict --model DIR --timm-model NAME [--resolution 224] [--num-classes N] [--json]
    python -m predictors.predict --model DIR --archs FILE --out FILE.csv

`--arch` takes canonical arch strings of the model's space; the prediction is the block sum times the network
correction, as in a search. `--timm-model` costs an existing timm MobileNet / MnasNet / FBNet / EfficientNet(-lite)
network from its block definition (`search_spaces.timm_import`, nothing downloaded): the sum of its blocks'
costs, where blocks missing from the model's table are costed by its block model and counted in
`blocks_from_block_model` (the network correction needs a point of the space, so it is not applied; a block far
outside the table, e.g. at another resolution, is an extrapolation and should be read as such). `--archs` costs
a file of arch strings (one per line, or a CSV with an `arch` column) in one batch. A refused model folder (see
`predictors.io.load`), an arch string the space cannot read or an unknown timm model exits with status 2 and one
line naming the flag, or the file and line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.cli import ArgParser
from core.errors import InputError, cli_entry
from hardware_profiles.drift import warn_runtime_drift
from predictors.io import load_flag


def _header(meta: dict, model_dir: str) -> dict:
    prof = meta.get("profile") or {}
    return {"model": model_dir, "profile": f"{prof.get('name')}@{prof.get('version')}" if prof else None,
            "target": meta.get("target"), "space": meta["params"]["space"]}


def predict_archs(model, archs: list[str], decoded: list | None = None) -> list[dict]:
    """One result per arch string of the model's space (`decoded`: their genotypes, if the caller has them;
    otherwise a string that does not decode is an `InputError` naming ``--arch``)."""
    space = model.space_
    if decoded is None:
        try:
            decoded = [space.decode(a) for a in archs]
        except ValueError as err:
            raise InputError(f"--arch: {err}") from None
    sums, pred, macs = model.predict_parts(archs)
    return [{"arch": a, "predicted_ms": float(p), "block_sum_ms": float(s), "flops": int(m),
             "params": int(space.params(d))} for a, d, s, p, m in zip(archs, decoded, sums, pred, macs)]


def predict_timm(model, name: str, resolution: int, num_classes: int | None) -> dict:
    """Latency of a timm model on the predictor's device: its block sum (blocks outside the table from the block
    model, counted), times the generic network correction when the predictor has one."""
    from search_spaces.blocks import layer_costs
    from search_spaces.timm_import import network_def_from_timm

    try:
        net = network_def_from_timm(name, num_classes=num_classes, resolution=resolution)
    except (ValueError, RuntimeError) as err:   # timm raises RuntimeError for an unknown model name
        raise InputError(f"--timm-model: {err}") from None
    sums, pred, unseen = model.predict_defs([net])
    layers = layer_costs(net)
    low, high = model.predict_interval([net], pred)[0]
    return {"timm_model": name, "resolution": resolution, "predicted_ms": float(pred[0]),
            "interval_80pct_ms": [float(low), float(high)],
            "block_sum_ms": float(sums[0]),
            "network_correction": "generic (features any network has)" if model.correction else "none",
            "flops": sum(lc.macs for lc in layers), "params": sum(lc.params for lc in layers), "blocks": len(layers),
            "blocks_from_block_model": unseen[0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgParser(prog="python -m predictors.predict", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="DIR", help="predictor folder (predictors.train --out)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", action="append", help="canonical arch string of the model's space (repeatable)")
    what.add_argument("--timm-model", metavar="NAME", help="timm model name, e.g. mobilenetv3_large_100")
    what.add_argument("--archs", type=Path, metavar="FILE", help="file of arch strings (one per line, # comments "
                      "and blank lines skipped; or a CSV with an `arch` column)")
    p.add_argument("--resolution", type=int, default=224, metavar="PIXELS",
                   help="input resolution for --timm-model (default: 224)")
    p.add_argument("--num-classes", type=int, metavar="N", help="classifier outputs for --timm-model (default: "
                   "timm's)")
    p.add_argument("--out", type=Path, metavar="FILE.csv", help="with --archs: CSV to write the predictions to "
                   "(default: print them)")
    p.add_argument("--json", action="store_true", help="print JSON (default: YAML)")
    return p.parse_args(argv)


def _file_predictions(model, path: Path) -> list[dict]:
    """Predictions for `--archs`; a line that is not an arch of the model's space is named with file and line."""
    from hardware_profiles.tables import read_archs

    rows = read_archs(path)
    return predict_archs(model, rows.archs, rows.decode(model.space_))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Print (or with `--out`, write) the predictions; a bad input is one ``error:`` line and status 2."""
    args = parse_args(argv)
    model, meta = load_flag("--model", args.model)
    warn_runtime_drift(meta.get("profile"))
    out = _header(meta, args.model)
    if args.timm_model:
        out.update(predict_timm(model, args.timm_model, args.resolution, args.num_classes))
    else:
        rows = _file_predictions(model, args.archs) if args.archs else predict_archs(model, args.arch)
        if args.out:
            from core.io import atomic_write

            atomic_write(args.out, lambda t: pd.DataFrame(rows).to_csv(t, index=False))
            print(f"wrote {len(rows)} predictions to {args.out}")
            return 0
        out["predictions"] = rows
    if args.json:
        print(json.dumps(out, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
    else:
        print(yaml.safe_dump(out, sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
