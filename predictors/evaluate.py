"""Accuracy report of a predictor on a table of measured networks, next to the FLOPs and lookup-table baselines.

    python -m predictors.evaluate --model DIR --table FILE.csv --target COLUMN [--json] [--plot FILE.png]

Prints RMSE, MAPE, the shares within +-5% and +-10%, Spearman and Kendall for the model, the lookup-table sum
(its block costs without the network correction) and the FLOPs-linear fit (both from the model's training data),
lists the worst cases and writes a predicted-vs-measured plot. Rows the model was trained on are left out and
counted. A refused model folder (see `predictors.io.load`) or a bad table exits with status 2 and one line naming
the file (and line and column).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from core.cli import ArgParser
from core.errors import InputError, cli_entry
from core.io import atomic_write
from hardware_profiles.importer import error_report
from predictors.io import load_flag


def measured_rows(model, table: Path, target: str):
    """The table's (arch, latency) rows, checked row by row; every arch must be a string of the model's space
    (`InputError` naming the file and line of the first that is not)."""
    from hardware_profiles.tables import read_latency_table

    rows = read_latency_table(table, target)
    rows.decode(model.space_)
    return rows


def report(model_dir: Path, table: Path, target: str) -> dict:
    """Metrics of model and baselines on `table`'s `target` column (training rows excluded), plus the worst cases.

    Raises:
        InputError: the model folder is refused, the table is bad (file, line, column named), or every row of it
            was used to train the model.
    """
    model, meta = load_flag("--model", model_dir)
    rows = measured_rows(model, table, target)
    seen = set(meta["train_archs"])
    keep = [i for i, a in enumerate(rows.archs) if a not in seen]
    if not keep:
        raise InputError(f"{table}: every row with a value in column {target!r} ({len(rows.archs)}) was used to "
                         f"train {model_dir}; evaluate on networks it has not seen")
    archs, y = [rows.archs[i] for i in keep], rows.values[keep]
    lookup, pred, macs = model.predict_parts(archs)
    flops = np.polyval(meta["flops_linear"], macs)
    out = {"model": str(model_dir), "rows": len(y), "training_rows_skipped": len(rows.archs) - len(keep),
           "predictor": _metrics(pred, y), "lookup_table": _metrics(lookup, y), "flops_linear": _metrics(flops, y)}
    err = np.abs(pred - y) / y
    worst = np.argsort(-err)[:10]
    out["worst"] = [{"arch": archs[i], "measured_ms": float(y[i]), "predicted_ms": float(pred[i]),
                     "error": float(err[i])} for i in worst]
    out["_arrays"] = (y, pred, lookup, flops)
    return out


def _metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    return {"rmse_ms": float(np.sqrt(np.mean((pred - y) ** 2))), **error_report(pred, y)}


def plot(y: np.ndarray, pred: np.ndarray, lookup: np.ndarray, flops: np.ndarray, path: Path, title: str) -> Path:
    """Predicted against measured latency, with the +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.scatter(y, flops, s=5, alpha=0.3, c="tab:gray", label="FLOPs-linear")
    ax.scatter(y, lookup, s=5, alpha=0.4, c="tab:orange", label="lookup-table sum")
    ax.scatter(y, pred, s=6, alpha=0.6, c="tab:blue", label="predictor")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    xs = np.linspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="k", alpha=0.08, label="+-10%")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgParser(prog="python -m predictors.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="DIR", help="predictor folder (predictors.train --out)")
    p.add_argument("--table", required=True, metavar="FILE.csv", help="measured networks: an `arch` column "
                   "(canonical strings of the model's space) and the --target column; CSV or Parquet")
    p.add_argument("--target", required=True, metavar="COLUMN", help="measured latency column of --table, in ms "
                   "(empty cells are skipped)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: a table)")
    p.add_argument("--plot", metavar="FILE.png", help="where to write the predicted-vs-measured plot "
                   "(default: <model>/eval_<target>.png)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Print the report (and write the plot); a bad input is one ``error:`` line and status 2."""
    args = parse_args(argv)
    res = report(Path(args.model), Path(args.table), args.target)
    arrays = res.pop("_arrays")
    res["plot"] = str(plot(*arrays, Path(args.plot or Path(args.model) / f"eval_{args.target}.png"),
                           f"{args.model} on {Path(args.table).name}:{args.target}"))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['rows']} networks ({res['training_rows_skipped']} training rows skipped)")
    print(f"{'':14}{'RMSE ms':>9}{'MAPE':>8}{'<=5%':>8}{'<=10%':>8}{'Spearman':>10}{'Kendall':>9}")
    for name in ("predictor", "lookup_table", "flops_linear"):
        r = res[name]
        print(f"{name:14}{r['rmse_ms']:9.4f}{100 * r['mape']:7.2f}%{100 * r['within_5pct']:7.1f}%"
              f"{100 * r['within_10pct']:7.1f}%{r['spearman']:10.4f}{r['kendall']:9.4f}")
    print("worst cases:")
    for w in res["worst"][:5]:
        print(f"  {w['error']:6.1%}  measured {w['measured_ms']:.4f}  predicted {w['predicted_ms']:.4f}  {w['arch']}")
    print(f"plot: {res['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
