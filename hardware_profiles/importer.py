"""Import a device from whole-network latencies: learn per-block costs, write an imported profile.

    python -m hardware_profiles.importer --profile NAME --space SPACE --table FILE.csv --target COLUMN
        [--holdout 0.25] [--device TEXT] [--source CITATION ...] [--root DIR]

For devices where only end-to-end latency can be timed (a phone, a board behind an app), each network's latency is
modelled as a fixed overhead plus the sum of its layers' costs, one unknown per distinct cost key; the costs are
fitted by non-negative least squares on the training rows and judged on held-out rows. The result is an ordinary
lookup-table profile (blocks.csv with the fitted costs, networks.csv with the training rows) whose manifest says
it was imported, from what, and how well the additive model fits (held-out error), and the SHA-256 of both tables.

The table is checked row by row first: a missing or malformed file, a latency that is not a positive number, an
arch listed twice with different latencies, or an arch string that does not decode is one ``error:`` line naming
the file and line (exit status 2), as is a `--holdout` that leaves too few training rows for the fit.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import lsq_linear

from core.cli import ArgParser, check_folder, check_range, read_space_options
from core.errors import InputError, cli_entry
from hardware_profiles.block_costs import BlockCosts
from hardware_profiles.manifest import BUILTIN_ROOT, Manifest, check_profile_name, table_hashes, write_manifest
from hardware_profiles.tables import ArchRows, read_latency_table, write_table
from search_spaces import make_space


@dataclass
class AdditiveFit:
    """Per-key costs and overhead fitted to whole-network latencies."""

    keys: list[str]
    cost_ms: np.ndarray
    overhead_ms: float

    @cached_property
    def costs(self) -> BlockCosts:
        """The fit as the block table every block sum of the project uses."""
        return BlockCosts(dict(zip(self.keys, self.cost_ms)), self.overhead_ms)

    def covers(self, keys: list[str]) -> bool:
        """Whether every key of a network can be costed from the fit."""
        return not self.costs.missing(keys)

    def predict(self, key_lists: list[list[str]]) -> np.ndarray:
        """Summed latency of networks given as lists of cost keys (unknown keys raise KeyError)."""
        return self.costs.sums(key_lists)


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


def _holdout_split(n: int, holdout: float, seed: int) -> np.ndarray:
    """Which of `n` rows are held out of the fit (seeded, so a re-run holds out the same rows)."""
    return np.random.default_rng(seed).random(n) < holdout


@dataclass
class ImportSettings:
    """What to import and how: one field per flag of the command line (``--space-options`` -> ``space_options``),
    with its default; `import_profile` takes it."""

    profile: str
    space: str
    table: str
    target: str
    space_options: str | None = None
    num_classes: int = 1000
    holdout: float = 0.25
    seed: int = 0
    device: str | None = None
    runtime: str = "unknown (imported measurements)"
    precision: str = "fp32"
    source: list[str] | None = None
    version: int = 1
    root: str = field(default_factory=lambda: str(BUILTIN_ROOT))


def _check_enough_rows(keys: list[list[str]], held: np.ndarray, args: ImportSettings) -> None:
    """The fit has one unknown per distinct cost key of the training rows plus the overhead; fewer training rows
    than unknowns leave the costs undetermined (any split fits), so refuse them and say how many are needed."""
    train = [k for k, h in zip(keys, held) if not h]
    unknowns = len({k for ks in train for k in ks}) + 1
    if len(train) < max(unknowns, 2):
        rows = (f"--holdout {args.holdout:g} leaves {len(train)} of the {len(keys)} rows of {args.table} to fit"
                if args.holdout > 0 else f"{args.table}: {len(train)} rows to fit")
        raise InputError(f"{rows}; the additive model has {unknowns} unknowns ({unknowns - 1} cost keys and the "
                         f"overhead) and needs at least {max(unknowns, 2)} training rows: "
                         f"{'lower --holdout or ' if args.holdout > 0 else ''}add rows")


def _fit_and_judge(keys: list[list[str]], y: np.ndarray, held: np.ndarray) -> tuple[AdditiveFit, dict[str, object]]:
    """Fit on the training rows; score the training rows, and the held-out rows the fit can cost."""
    fit = fit_additive([k for k, h in zip(keys, held) if not h], y[~held])
    report: dict[str, object] = {"train_rows": int((~held).sum()),
                                 "train": error_report(fit.predict([k for k, h in zip(keys, held) if not h]),
                                                       y[~held])}
    # held-out networks with a layer never seen in training cannot be costed by the table: reported, not scored
    scored_rows = np.array([h and fit.covers(k) for k, h in zip(keys, held)])
    report["holdout_uncovered"] = int(held.sum() - scored_rows.sum())
    if scored_rows.any():
        report["holdout"] = error_report(fit.predict([k for k, s in zip(keys, scored_rows) if s]), y[scored_rows])
    return fit, report


def _write_profile(args: ImportSettings, space, options: dict, rows: ArchRows, held: np.ndarray,
                   fit: AdditiveFit, report: dict) -> Path:
    """Write blocks.csv, networks.csv (the training rows) and the manifest with the tables' SHA-256."""
    folder = Path(args.root) / args.profile / str(args.version)
    blocks = pd.DataFrame({"key": fit.keys, "median_ms": fit.cost_ms + fit.overhead_ms, "fitted_cost_ms": fit.cost_ms})
    write_table(blocks, folder / "blocks.csv")
    train = pd.DataFrame({"arch": rows.archs, "median_ms": rows.values})[~held]
    write_table(train, folder / "networks.csv")
    scored = report.get("holdout", report["train"])
    source = Path(args.table).name
    manifest = Manifest(
        name=args.profile, version=args.version, kind="imported", device=args.device or args.profile,
        runtime=args.runtime, backend="none", precision=args.precision, batch=1, space=args.space,
        space_options=options, num_classes=args.num_classes,
        resolution=space.input_shape(space.smallest())[-1], tables={"blocks": "blocks.csv", "networks": "networks.csv"},
        options={"overhead_ms": fit.overhead_ms, "target_column": args.target, "source_table": source},
        how_measured=(f"imported: per-block costs fitted by non-negative least squares to {report['train_rows']} "
                      f"whole-network latencies ({args.target} of {source}); judged on "
                      f"{int(held.sum())} held-out networks (seed {args.seed})"),
        noise={"holdout_mape": scored["mape"], "holdout_within_5pct": scored["within_5pct"]},
        sources=list(args.source or []))
    manifest.table_sha256 = table_hashes(manifest, folder)   # the tables are final: record what they are
    return write_manifest(manifest, folder)


def check_args(args: ImportSettings) -> None:
    """Refuse bad flags before any file is read (`InputError` naming the flag)."""
    check_profile_name(args.profile)
    check_range(args, num_classes=1, version=1)
    if not 0 <= args.holdout < 1:
        raise InputError(f"--holdout: expected a share of the rows in [0, 1), got {args.holdout:g}")
    check_folder(args.root, "--root")


def import_profile(args: ImportSettings) -> dict[str, object]:
    """Fit, evaluate on held-out rows, and write the imported profile; returns the report.

    Raises:
        InputError: a bad flag, space options file or latency table (missing, malformed, a value that is not a
            positive number, an arch listed twice with different latencies, an arch string that does not decode:
            the file and line are named), or too few training rows for the fit.
    """
    check_args(args)
    options = read_space_options(args.space_options) or {}
    space = make_space(args.space, options, args.num_classes, source=args.space_options or "--space-options")
    rows = read_latency_table(args.table, args.target)
    keys = [space.cost_keys(g) for g in rows.decode(space)]
    held = _holdout_split(len(keys), args.holdout, args.seed)
    _check_enough_rows(keys, held, args)
    fit, report = _fit_and_judge(keys, rows.values, held)
    report = {"profile": f"{args.profile}@{args.version}", **report}
    report["folder"] = str(_write_profile(args, space, options, rows, held, fit, report).parent)
    return report


def parse_args(argv: list[str] | None = None) -> ImportSettings:
    """The command line (usage errors are `InputError`s)."""
    p = ArgParser(prog="python -m hardware_profiles.importer", description=__doc__.splitlines()[0])
    p.add_argument("--profile", metavar="NAME", required=True,
                   help="name of the profile to write (lower-case letters, digits, '.', '_', '-')")
    p.add_argument("--space", required=True, help="registered search space the table's arch strings belong to")
    p.add_argument("--space-options", metavar="FILE",
                   help="YAML file with the space's options (default: the space's defaults)")
    p.add_argument("--num-classes", metavar="N", type=int,
                   help="classifier outputs of the networks (default 1000)")
    p.add_argument("--table", metavar="FILE", required=True,
                   help="CSV (or Parquet) with an `arch` column in the space's canonical string and a latency "
                        "column; each arch once (rows with an empty latency are skipped)")
    p.add_argument("--target", metavar="COLUMN", required=True,
                   help="the table's latency column (ms, positive numbers)")
    p.add_argument("--holdout", metavar="SHARE", type=float,
                   help="share of rows kept out of the fit to judge it, in [0, 1) (default 0.25)")
    p.add_argument("--seed", metavar="N", type=int, help="seed of the held-out rows (default 0)")
    p.add_argument("--device", metavar="TEXT", help="device description for the manifest (default: the profile name)")
    p.add_argument("--runtime", metavar="TEXT",
                   help="runtime the latencies were measured with, for the manifest")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="numeric precision of the measured networks (default fp32)")
    p.add_argument("--source", metavar="TEXT", action="append",
                   help="citation of the data, for the manifest (repeatable)")
    p.add_argument("--version", metavar="N", type=int,
                   help="profile version to write (default 1; replaced if it exists)")
    p.add_argument("--root", metavar="DIR",
                   help="folder holding profiles; the profile goes to DIR/NAME/VERSION (default: the built-in "
                        "folder; add a folder of your own to HWNAS_PROFILE_PATH to load from it)")
    return p.parse_into(ImportSettings, argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    report = import_profile(parse_args(argv))
    print(yaml.safe_dump(report, sort_keys=False).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
