"""Accuracy report of a predictor on a table of measured networks, next to the FLOPs and lookup-table baselines.

    python -m predictors.evaluate --model DIR --table FILE.csv --target COLUMN [--json] [--plot FILE.png]

Prints RMSE, MAPE, the shares within +-5% and +-10%, Spearman and Kendall for the model, the lookup-table sum
(its block costs without the network correction) and the FLOPs-linear fit (both from the model's training data),
lists the worst cases and writes a predicted-vs-measured plot. Rows the model was trained on are left out and
counted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hardware_profiles.importer import error_report
from nas.io import atomic_write
from predictors.io import load


def report(model_dir: Path, table: pd.DataFrame, target: str) -> dict:
    """Metrics of model and baselines on `table` (training rows excluded), plus the worst cases."""
    model, meta = load(model_dir)
    seen = set(meta.get("train_archs", []))
    df = table[["arch", target]].dropna()
    overlap = int(df["arch"].isin(seen).sum())
    df = df[~df["arch"].isin(seen)]
    if df.empty:
        raise SystemExit(f"error: every row of the table was used to train {model_dir}")
    archs, y = df["arch"].astype(str).tolist(), df[target].to_numpy(float)
    lookup, pred, macs = model.predict_parts(archs)
    flops = np.polyval(meta["flops_linear"], macs)
    out = {"model": str(model_dir), "rows": len(y), "training_rows_skipped": overlap,
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m predictors.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="PNG path (default: <model>/eval_<target>.png)")
    args = p.parse_args(argv)
    table = pd.read_csv(args.table)
    if args.target not in table.columns or "arch" not in table.columns:
        raise SystemExit(f"error: {args.table}: needs columns 'arch' and {args.target!r}")
    res = report(Path(args.model), table, args.target)
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
