"""Import a device from whole-network latencies: learn per-block costs, write an imported profile.

    python -m hardware_profiles.importer --profile NAME --space SPACE --table FILE.csv --target COLUMN
        [--holdout 0.25] [--device TEXT] [--source CITATION ...] [--root DIR]

For devices where only end-to-end latency can be timed (a phone, a board behind an app), each network's latency is
modelled as a fixed overhead plus the sum of its layers' costs, one unknown per distinct cost key; the costs are
fitted by non-negative least squares on the training rows and judged on held-out rows. The result is an ordinary
lookup-table profile (blocks.csv with the fitted costs, networks.csv with the training rows) whose manifest says
it was imported, from what, and how well the additive model fits (held-out error).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import lsq_linear

from hardware_profiles.manifest import BUILTIN_ROOT, Manifest, write_manifest
from hardware_profiles.tables import write_table


@dataclass
class AdditiveFit:
    """Per-key costs and overhead fitted to whole-network latencies."""

    keys: list[str]
    cost_ms: np.ndarray
    overhead_ms: float

    def covers(self, keys: list[str]) -> bool:
        """Whether every key of a network was seen in the fit."""
        known = set(self.keys)
        return all(k in known for k in keys)

    def predict(self, key_lists: list[list[str]]) -> np.ndarray:
        """Summed latency of networks given as lists of cost keys (unknown keys raise KeyError)."""
        index = {k: i for i, k in enumerate(self.keys)}
        return np.array([self.overhead_ms + sum(self.cost_ms[index[k]] for k in keys) for keys in key_lists])


def fit_additive(key_lists: list[list[str]], latency_ms: np.ndarray) -> AdditiveFit:
    """Non-negative least squares: latency ~ overhead + sum of per-key costs (keys counted with multiplicity).

    Keys present in every network with the same count are indistinguishable from the overhead; NNLS then picks
    one non-negative split, which predicts networks of the same space equally well.
    """
    keys = sorted({k for ks in key_lists for k in ks})
    index = {k: i for i, k in enumerate(keys)}
    x = np.zeros((len(key_lists), len(keys) + 1))
    x[:, -1] = 1.0
    for r, ks in enumerate(key_lists):
        for k in ks:
            x[r, index[k]] += 1
    scale = float(np.median(latency_ms)) or 1.0   # conditioning: solve in units of the median latency
    sol = lsq_linear(x, np.asarray(latency_ms, float) / scale, bounds=(0, np.inf), method="bvls")
    coef = sol.x * scale
    return AdditiveFit(keys, coef[:-1], float(coef[-1]))


def error_report(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAPE, shares within 5% / 10%, and rank agreement of predicted against measured latencies."""
    from scipy.stats import kendalltau, spearmanr

    rel = np.abs(pred - true) / true
    return {"mape": float(rel.mean()), "within_5pct": float((rel <= 0.05).mean()),
            "within_10pct": float((rel <= 0.10).mean()), "spearman": float(spearmanr(pred, true)[0]),
            "kendall": float(kendalltau(pred, true)[0]), "rows": int(len(true))}


def import_profile(args: argparse.Namespace) -> dict[str, object]:
    """Fit, evaluate on held-out rows, and write the imported profile; returns the report."""
    from search_spaces import get_space

    options = yaml.safe_load(Path(args.space_options).read_text()) if args.space_options else {}
    space = get_space(args.space, options, num_classes=args.num_classes)
    table = pd.read_csv(args.table)
    for column in ("arch", args.target):
        if column not in table.columns:
            raise SystemExit(f"error: {args.table}: no column {column!r} (columns: {', '.join(table.columns)})")
    table = table[["arch", args.target]].dropna()
    rng = np.random.default_rng(args.seed)
    held = rng.random(len(table)) < args.holdout
    keys = [space.cost_keys(space.decode(a)) for a in table["arch"]]
    y = table[args.target].to_numpy(float)
    fit = fit_additive([k for k, h in zip(keys, held) if not h], y[~held])
    report = {"profile": f"{args.profile}@{args.version}", "train_rows": int((~held).sum()),
              "train": error_report(fit.predict([k for k, h in zip(keys, held) if not h]), y[~held])}
    # held-out networks with a layer never seen in training cannot be costed by the table: reported, not scored
    scored_rows = np.array([h and fit.covers(k) for k, h in zip(keys, held)])
    report["holdout_uncovered"] = int(held.sum() - scored_rows.sum())
    if scored_rows.any():
        report["holdout"] = error_report(fit.predict([k for k, s in zip(keys, scored_rows) if s]), y[scored_rows])
    folder = Path(args.root) / args.profile / str(args.version)
    blocks = pd.DataFrame({"key": fit.keys, "median_ms": fit.cost_ms + fit.overhead_ms, "fitted_cost_ms": fit.cost_ms})
    write_table(blocks, folder / "blocks.csv")
    write_table(table[~held].rename(columns={args.target: "median_ms"}), folder / "networks.csv")
    scored = report.get("holdout", report["train"])
    manifest = Manifest(
        name=args.profile, version=args.version, kind="imported", device=args.device or args.profile,
        runtime=args.runtime, backend="none", precision=args.precision, batch=1, space=args.space,
        space_options=options, num_classes=args.num_classes,
        resolution=space.input_shape(space.smallest())[-1], tables={"blocks": "blocks.csv", "networks": "networks.csv"},
        options={"overhead_ms": fit.overhead_ms, "target_column": args.target, "source_table": Path(args.table).name},
        how_measured=(f"imported: per-block costs fitted by non-negative least squares to {report['train_rows']} "
                      f"whole-network latencies ({args.target} of {Path(args.table).name}); judged on "
                      f"{int(held.sum())} held-out networks (seed {args.seed})"),
        noise={"holdout_mape": scored["mape"], "holdout_within_5pct": scored["within_5pct"]},
        sources=list(args.source or []))
    write_manifest(manifest, folder)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hardware_profiles.importer", description=__doc__.splitlines()[0])
    p.add_argument("--profile", required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--space-options")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--table", required=True, help="CSV with an `arch` column in the space's canonical string")
    p.add_argument("--target", required=True, help="latency column (ms)")
    p.add_argument("--holdout", type=float, default=0.25, help="share of rows kept out of the fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="device description")
    p.add_argument("--runtime", default="unknown (imported measurements)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"])
    p.add_argument("--source", action="append", help="citation of the data (repeatable)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--root", default=str(BUILTIN_ROOT))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    report = import_profile(parse_args(argv))
    print(yaml.safe_dump(report, sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
