"""Predictor benchmark on networks never used in training.

    python bench/predictors.py [--csv PATH] [--train-rows 1000] [--json]

For each measured device column of the shared FBNet data (gold_6240, silver_4114, titan_rtx_1, 2080ti_1): train
`LGBMLatencyPredictor` on `--train-rows` random networks, score the remaining networks, and print the shares within
+-5% and +-10%, MAPE, Spearman and Kendall next to the lookup-table and FLOPs-linear baselines fitted on the same
rows. Also: batch prediction throughput (architectures per second, decoding and encoding included) against the
time to measure one network with onnxruntime, in the same run.
Goals (issue 4): at least 99 % of networks within +-10 % and 90 % within +-5 %.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CSV = REPO.parent / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"
DEVICES = ("gold_6240_ms", "silver_4114_ms", "titan_rtx_1_ms", "2080ti_1_ms")


def accuracy(df: pd.DataFrame, train_rows: int, seed: int) -> list[dict]:
    from hardware_profiles.importer import error_report
    from predictors.models import FlopsLinear, LGBMLatencyPredictor, LookupSum

    perm = np.random.default_rng(seed).permutation(len(df))
    tr, te = df.iloc[perm[:train_rows]], df.iloc[perm[train_rows:]]
    rows = []
    for col in DEVICES:
        xtr, ytr, xte, yte = tr.arch.tolist(), tr[col].to_numpy(), te.arch.tolist(), te[col].to_numpy()
        for name, est in (("predictor", LGBMLatencyPredictor("fbnet", num_classes=100, seed=seed)),
                          ("lookup_table", LookupSum("fbnet", num_classes=100)),
                          ("flops_linear", FlopsLinear("fbnet", num_classes=100))):
            rows.append({"device": col, "model": name, **error_report(est.fit(xtr, ytr).predict(xte), yte)})
    return rows


def throughput(df: pd.DataFrame) -> dict:
    from nas.evaluation.latency import export_onnx, measure_latency
    from predictors.models import LGBMLatencyPredictor
    from search_spaces import get_space

    model = LGBMLatencyPredictor("fbnet", num_classes=100).fit(df.arch[:1000].tolist(), df.gold_6240_ms[:1000])
    archs = df.arch.tolist()
    start = time.perf_counter()
    model.predict(archs)
    per_s = len(archs) / (time.perf_counter() - start)
    space = get_space("fbnet", num_classes=100)
    arch = space.decode(archs[0])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(space.build(arch), space.input_shape(arch), Path(tmp) / "m.onnx")
        measure_latency(path, space.input_shape(arch), threads=1, warmup=10, repeats=50)
        one_net = time.perf_counter() - start
    return {"archs_per_second": per_s, "onnxruntime_seconds_per_network": one_net,
            "speedup_vs_measuring": per_s * one_net}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    df = pd.read_csv(args.csv)
    res = {"accuracy": accuracy(df, args.train_rows, args.seed), "throughput": throughput(df)}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    table = pd.DataFrame(res["accuracy"])[["device", "model", "within_5pct", "within_10pct", "mape", "spearman",
                                            "kendall", "rows"]]
    print(f"trained on {args.train_rows} networks, scored on the other {len(df) - args.train_rows}:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    t = res["throughput"]
    print(f"batch prediction: {t['archs_per_second']:,.0f} archs/s (decode + encode + predict, 1 process); "
          f"measuring one network with onnxruntime: {t['onnxruntime_seconds_per_network']:.2f} s; "
          f"ratio {t['speedup_vs_measuring']:,.0f}x (goal: 100,000 archs/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
