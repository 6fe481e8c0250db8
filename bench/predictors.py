"""Predictor benchmark on networks never used in training.

    python bench/predictors.py [--csv PATH] [--train-rows 1000] [--json] [--study all|fbnet|nb201]

For each measured device column of the shared FBNet data (gold_6240, silver_4114, titan_rtx_1, 2080ti_1): train
`LGBMLatencyPredictor` on `--train-rows` random networks, score the remaining networks, and print the shares within
+-5% and +-10%, MAPE, Spearman and Kendall next to the lookup-table and FLOPs-linear baselines fitted on the same
rows. Also: batch prediction throughput on `--batch` random architectures (arch strings in, ms out: decoding and
encoding included) against the time to export and measure one network with onnxruntime, in the same run.
Few-shot transfer: for each target device (raspi4, pixel3, fpga, eyeriss, gold_6240, titan_rtx_1), predictors
trained on 1,000 networks of every source device (all other columns except the target's own hardware at other
batch sizes) are adapted from 10 and from 20 random target networks (never among the sources' 1,000), and ranked
against the remaining networks' measurements (Spearman, mean over `--fewshot-repeats` draws), next to FLOPs.
Goals (issue 4): at least 99 % of networks within +-10 % and 90 % within +-5 %; few-shot mean Spearman >= 0.95
with 10 and 20 samples (HELP reports 0.91 with 10).

NB201 leave-device-out transfer (`--study nb201`, data: `--nb201-csv`, NAS-Bench-201 latency from HELP): every one of
the 19 device settings in turn is the target; the sources are predictors trained (as `predictors.train --space
nb201 --table FILE --target COL` does) on 1,000 networks of every device of the *other* families (GPU, CPU,
phone), and `predictors.transfer.few_shot` adapts them from 5, 10 and 20 random target networks (never among the
sources' rows), `--nb201-repeats` seeded draws each. Scored on a fixed set of 3,000 other networks: Spearman and
the share within +-10 %, next to baselines fitted on the same rows: FLOPs (its ranking; a FLOPs-linear fit for the
+-10 % share), the best single source (the source whose 1-parameter scaling has the lowest leave-one-out error of
log latency on the target rows) and ridge regression over the sources' latencies (penalty chosen by leave-one-out).
Beside them, `full_table`: the target's own predictor trained on all its other networks (11,625, none scored), the
ceiling its timings allow. Phones are timed in whole milliseconds (pixel2 has 42 distinct values), so their rank
order is partly ties and noise, and no predictor reaches 0.96 there however many rows it gets. One device per family (`NB201_HELD_OUT`) was never looked at while the method was tuned; their figures are
printed apart. Tuning ran with `--nb201-tune` (those devices dropped entirely, as targets and as sources) and
`--seed 7` / `--seed 11` (other source rows, scored networks and draws than the default seed 0's). Goals (issue
15): with 10 rows, mean Spearman >= 0.96, >= 0.90 on every target and above ridge on every target (the issue
measured 0.856 before, ridge 0.872, HELP 0.946). Data: latency from HELP (Lee et al., NeurIPS 2021), cells of
NAS-Bench-201 (Dong & Yang, ICLR 2020); see the README beside the table.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CSV = REPO.parent / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"
NB201_CSV = REPO.parent / "shared" / "data" / "nb201-dev" / "nb201_dev.csv"
DEVICES = ("gold_6240_ms", "silver_4114_ms", "titan_rtx_1_ms", "2080ti_1_ms")
FEW_SHOT_TARGETS = ("raspi4_ms", "pixel3_ms", "fpga_ms", "eyeriss_ms", "gold_6240_ms", "titan_rtx_1_ms")


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


def _hardware(column: str) -> str:
    """The device of a latency column without its batch size: titan_rtx_32_ms -> titan_rtx."""
    return re.sub(r"(_(1|32|64))?_ms$", "", column)


def few_shot(df: pd.DataFrame, seed: int, repeats: int, samples=(10, 20)) -> list[dict]:
    from scipy.stats import spearmanr

    from predictors.models import LGBMLatencyPredictor
    from predictors.transfer import few_shot as adapt

    perm = np.random.default_rng(seed).permutation(len(df))
    src_rows, pool = df.iloc[perm[:1000]], df.iloc[perm[1000:]]
    hardware = {_hardware(c) for c in FEW_SHOT_TARGETS}
    names = [c for c in df.columns if c.endswith("_ms") and _hardware(c) not in hardware]
    sources = [LGBMLatencyPredictor("fbnet", num_classes=100, correction=False, seed=seed).fit(
        src_rows.arch.tolist(), src_rows[c]) for c in names]
    flops = np.array([sources[0].space_.flops(sources[0].space_.decode(a)) for a in pool.arch])
    rng, rows = np.random.default_rng(seed + 1), []
    for target in FEW_SHOT_TARGETS:
        y = pool[target].to_numpy()
        for n in samples:
            scores, chosen = [], []
            for _ in range(repeats):
                pick = rng.choice(len(pool), n, replace=False)
                rest = np.setdiff1d(np.arange(len(pool)), pick)
                model, fit = adapt(sources, pool.arch.iloc[pick].tolist(), y[pick], source_names=names, seed=seed)
                scores.append(spearmanr(model.predict(pool.arch.iloc[rest].tolist()), y[rest])[0])
                chosen += fit.sources
            common = pd.Series(chosen, dtype=str).value_counts().index[:2].tolist()
            rows.append({"target": target, "samples": n, "spearman": float(np.mean(scores)),
                         "spearman_min": float(np.min(scores)), "flops_spearman": float(spearmanr(flops, y)[0]),
                         "usual_sources": common})
    return rows


# ---- NB201 leave-device-out transfer -------------------------------------------------------------------------------
NB201_HARDWARE = {"1080ti": "gpu", "2080ti": "gpu", "titanx": "gpu", "titanxp": "gpu", "gold_6240": "cpu",
                  "silver_4114": "cpu", "silver_4210r": "cpu", "pixel2": "phone", "samsung_a50": "phone",
                  "samsung_s7": "phone", "essential_ph_1": "phone"}
NB201_HELD_OUT = ("titanxp", "silver_4210r", "samsung_s7")   # one per family, never looked at while tuning
NB201_METHODS = ("ours", "ridge", "best_source", "flops")   # fitted on each draw's target rows
NB201_CEILING = "full_table"   # fitted on every unscored network of the target: not a few-shot method


def nb201_hardware(column: str) -> str:
    """The device of an NB201 latency column: titanx_32_ms -> titanx, essential_ph_1_ms -> essential_ph_1."""
    for name in sorted(NB201_HARDWARE, key=len, reverse=True):
        if re.fullmatch(rf"{name}(_\d+)?_ms", column):
            return name
    raise ValueError(f"{column}: not a device column of the NB201 table")


def _loo_scale(p: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out mean squared error of log latency of the fit y = a * p (one parameter)."""
    py, pp = p @ y, p @ p
    a = (py - p * y) / np.maximum(pp - p * p, 1e-12)
    return float(np.mean(np.log(np.maximum(a * p, 1e-9) / y) ** 2))


def _fit_baselines(src: np.ndarray, flops: np.ndarray, pick: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions of every network by the baselines fitted on target rows `pick` (latencies `y`): `src` holds
    the sources' predicted latencies (networks, sources)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = min(range(src.shape[1]), key=lambda j: _loo_scale(src[pick, j], y))
    scale = src[pick, best] @ y / (src[pick, best] @ src[pick, best])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(src[pick], y)
    return {"ridge": ridge.predict(src), "best_source": scale * src[:, best],
            "flops": np.polyval(np.polyfit(flops[pick], y, 1), flops)}


def nb201_transfer(df: pd.DataFrame, seed: int, repeats: int, samples=(5, 10, 20), source_rows: int = 1000,
                   eval_rows: int = 3000, tune: bool = False) -> list[dict]:
    """The leave-device-out study (see the module): one row per (target, samples, method), means over draws.

    Args:
        tune: drop the held-out devices entirely (as targets and as sources): the setting to tune on.
    """
    cols = [c for c in df.columns if c.endswith("_ms") and not (tune and nb201_hardware(c) in NB201_HELD_OUT)]
    perm = np.random.default_rng(seed).permutation(len(df))
    src_rows, ev, pool = perm[:source_rows], perm[source_rows:source_rows + eval_rows], perm[source_rows + eval_rows:]
    archs = df.arch.astype(str).tolist()
    models, src_pred = _nb201_sources(df, cols, src_rows, seed)
    space = models[cols[0]].space_
    flops = np.array([space.flops(space.decode(a)) for a in archs], float)
    out = []
    for t, target in enumerate(cols):
        family = NB201_HARDWARE[nb201_hardware(target)]
        names = [c for c in cols if NB201_HARDWARE[nb201_hardware(c)] != family]
        study = {"archs": archs, "y": df[target].to_numpy(float), "ev": ev, "flops": flops, "names": names,
                 "sources": [models[c] for c in names], "src": np.column_stack([src_pred[c] for c in names])}
        ceiling = _nb201_ceiling(study, pool, seed)
        for n in samples:
            rng = np.random.default_rng([seed, t, n])
            scores = {m: [] for m in NB201_METHODS}
            for _ in range(repeats):
                for m, score in _nb201_draw(study, rng.choice(pool, n, replace=False), seed).items():
                    scores[m].append(score)
            split = "held-out" if nb201_hardware(target) in NB201_HELD_OUT else "dev"
            for m, vals in scores.items():
                sp, w10 = np.array(vals).T
                out.append({"target": target, "split": split, "samples": n, "method": m,
                            "spearman": float(sp.mean()), "spearman_min": float(sp.min()),
                            "within_10pct": float(w10.mean())})
            out.append({"target": target, "split": split, "samples": n, "method": NB201_CEILING,
                        "spearman": ceiling[0], "spearman_min": ceiling[0], "within_10pct": ceiling[1]})
    return out


def _nb201_ceiling(study: dict, pool: np.ndarray, seed: int) -> tuple[float, float]:
    """(Spearman, share within +-10 %) on the scored networks of the target's own predictor trained on all of
    `pool` (thousands of its networks): what its timings allow a predictor, the yardstick for the few-shot figures."""
    from scipy.stats import spearmanr

    from predictors.models import LGBMLatencyPredictor

    archs, y, ev = study["archs"], study["y"], study["ev"]
    model = LGBMLatencyPredictor("nb201", {}, 1000, seed=seed).fit([archs[i] for i in pool], y[pool])
    p = model.predict([archs[i] for i in ev])
    return float(spearmanr(p, y[ev])[0]), float(np.mean(np.abs(p / y[ev] - 1) <= 0.10))


def _nb201_sources(df: pd.DataFrame, cols: list[str], rows: np.ndarray, seed: int) -> tuple[dict, dict]:
    """({column: predictor}, {column: its predicted latency of every network}): one predictor per device, fitted
    to `rows` as `predictors.train --space nb201 --table FILE --target COL` fits it."""
    from predictors.models import LGBMLatencyPredictor

    archs = df.arch.astype(str).tolist()
    train = [archs[i] for i in rows]
    models = {c: LGBMLatencyPredictor("nb201", {}, 1000, seed=seed).fit(train, df[c].to_numpy(float)[rows])
              for c in cols}
    return models, {c: m.predict(archs) for c, m in models.items()}


def _nb201_draw(study: dict, pick: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """(Spearman, share within +-10 %) on the scored networks of our transfer and each baseline, all fitted on the
    target networks `pick`."""
    from scipy.stats import spearmanr

    from predictors.transfer import few_shot

    archs, y, ev = study["archs"], study["y"], study["ev"]
    model, _ = few_shot(study["sources"], [archs[i] for i in pick], y[pick], source_names=study["names"], seed=seed)
    preds = {"ours": model.predict([archs[i] for i in ev]),
             **{k: v[ev] for k, v in _fit_baselines(study["src"], study["flops"], pick, y[pick]).items()}}
    out = {}
    for m, p in preds.items():   # a constant prediction ranks nothing: Spearman 0, not NaN
        out[m] = (float(np.nan_to_num(spearmanr(p, y[ev])[0])), float(np.mean(np.abs(p / y[ev] - 1) <= 0.10)))
    out["flops"] = (float(spearmanr(study["flops"][ev], y[ev])[0]), out["flops"][1])   # FLOPs' own ranking
    return out


def print_nb201(rows: list[dict], repeats: int) -> None:
    """The study as two tables (Spearman, share within +-10 %) and means per split."""
    df = pd.DataFrame(rows)
    print(f"\nNB201 leave-device-out transfer (sources: the other families' devices, 1,000 networks each; "
          f"{repeats} draws of target networks; scored on 3,000 unseen networks):")
    for metric in ("spearman", "within_10pct"):
        wide = df.pivot_table(index=["split", "target", "samples"], columns="method", values=metric)
        print(f"\n{metric} (mean over draws):")
        print(wide[[*NB201_METHODS, NB201_CEILING]].to_string(float_format=lambda v: f"{v:.4f}"))
    wins = df[df.method == "ours"].set_index(["target", "samples"]).spearman > \
        df[df.method == "ridge"].set_index(["target", "samples"]).spearman
    means = df.pivot_table(index=["split", "samples"], columns="method", values=["spearman", "within_10pct"])
    print("\nmeans per split (dev: tuned on; held-out: never looked at while tuning):")
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))
    ours = df[df.method == "ours"]
    for n, part in ours.groupby("samples"):
        won = wins.xs(n, level=1)
        print(f"  {n} rows: ours mean Spearman {part.spearman.mean():.4f}, lowest target {part.spearman.min():.4f} "
              f"({part.loc[part.spearman.idxmin(), 'target']}), above ridge on {int(won.sum())} of {len(part)} "
              f"targets{' (not: ' + ', '.join(won.index[~won]) + ')' if not won.all() else ''}; "
              f"below 0.90: {', '.join(part.target[part.spearman < 0.90]) or 'none'}")
    print("  goals with 10 rows (issue 15): mean >= 0.96, every target >= 0.90 and above ridge")
    ceil = df[(df.method == NB201_CEILING) & (df.samples == df.samples.min())].set_index("target").spearman
    print(f"  {NB201_CEILING} (trained on every unscored network of the target): mean {ceil.mean():.4f}; "
          f"below 0.96 on {', '.join(f'{t} {v:.4f}' for t, v in ceil[ceil < 0.96].items()) or 'none'}")


def throughput(df: pd.DataFrame, batch: int, seed: int) -> dict:
    from core.timing import export_onnx, measure_latency
    from predictors.models import LGBMLatencyPredictor
    from search_spaces import get_space

    space = get_space("fbnet", num_classes=100)
    rng = np.random.default_rng(seed)
    archs = [space.to_string(space.sample(rng)) for _ in range(batch)]
    model = LGBMLatencyPredictor("fbnet", num_classes=100).fit(df.arch[:1000].tolist(), df.gold_6240_ms[:1000])
    times = []
    for _ in range(3):   # the first call also builds the per-(position, choice) cost tables
        start = time.perf_counter()
        model.predict(archs)
        times.append(time.perf_counter() - start)
    arch = space.decode(archs[0])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(space.build(arch), space.input_shape(arch), Path(tmp) / "m.onnx")
        measure_latency(path, space.input_shape(arch), threads=1, warmup=10, repeats=50)
        one_net = time.perf_counter() - start
    per_s = batch / float(np.median(times))
    return {"batch": batch, "archs_per_second": per_s, "archs_per_second_first_call": batch / times[0],
            "onnxruntime_seconds_per_network": one_net, "speedup_vs_measuring": per_s * one_net}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fewshot-repeats", type=int, default=10, help="random target draws per device and size")
    p.add_argument("--batch", type=int, default=100_000, help="random architectures in the throughput batch")
    p.add_argument("--study", choices=("all", "fbnet", "nb201"), default="all",
                   help="run only the FBNet studies (accuracy, few-shot, throughput) or the NB201 transfer study")
    p.add_argument("--nb201-csv", type=Path, default=NB201_CSV)
    p.add_argument("--nb201-repeats", type=int, default=10, help="random target draws per device and size")
    p.add_argument("--nb201-tune", action="store_true", help="drop the held-out devices entirely (as targets "
                   "and as sources): the setting the method was tuned on, with a --seed other than the default")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    res = {}
    if args.study in ("all", "fbnet"):
        df = pd.read_csv(args.csv)
        res.update({"accuracy": accuracy(df, args.train_rows, args.seed),
                    "few_shot": few_shot(df, args.seed, args.fewshot_repeats),
                    "throughput": throughput(df, args.batch, args.seed)})
    if args.study in ("all", "nb201"):
        res["nb201_transfer"] = nb201_transfer(pd.read_csv(args.nb201_csv), args.seed, args.nb201_repeats,
                                               tune=args.nb201_tune)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    if "accuracy" in res:
        print_fbnet(res, args, len(df))
    if "nb201_transfer" in res:
        print_nb201(res["nb201_transfer"], args.nb201_repeats)
    return 0


def print_fbnet(res: dict, args: argparse.Namespace, rows: int) -> None:
    """The FBNet studies' tables."""
    table = pd.DataFrame(res["accuracy"])[["device", "model", "within_5pct", "within_10pct", "mape", "spearman",
                                            "kendall", "rows"]]
    print(f"trained on {args.train_rows} networks, scored on the other {rows - args.train_rows}:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    fs = pd.DataFrame(res["few_shot"])
    print(f"\nfew-shot transfer (mean over {args.fewshot_repeats} draws of target networks):")
    print(fs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for n, part in fs.groupby("samples"):
        print(f"  {n} samples: mean Spearman {part.spearman.mean():.4f} over {len(part)} devices "
              f"(FLOPs alone {part.flops_spearman.mean():.4f}; goal 0.95, HELP 0.91 with 10)")
    t = res["throughput"]
    print(f"\nbatch prediction of {t['batch']:,} archs: {t['archs_per_second']:,.0f} archs/s "
          f"(median of 3; first call, building the cost tables: {t['archs_per_second_first_call']:,.0f}/s; "
          f"decode + encode + predict, 1 thread); measuring one network with onnxruntime: "
          f"{t['onnxruntime_seconds_per_network']:.2f} s; ratio {t['speedup_vs_measuring']:,.0f}x "
          f"(goal: 100,000 archs/s)")

if __name__ == "__main__":
    sys.exit(main())
