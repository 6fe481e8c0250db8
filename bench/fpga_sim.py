"""Validate the analytic FPGA model against HW-NAS-Bench's FPGA figures: its FBNet latencies (`fpga_ms`), and any
table of FBNet or NAS-Bench-201 networks with FPGA latency or energy columns.

Method: the rows of the table (by default the 4,000 of ``shared/data/fbnet-latency/fbnet_latency.csv``) are split by a
fixed seed into tuning rows (default 500) and held-out rows (the rest). Each architecture is costed with its space's
`layer_costs` (``fbnet``, or ``nb201`` for NAS-Bench-201's cell strings: ``--space``, told apart by the strings when
not given) and `hardware_profiles.fpga.simulate`. Three configurations are scored on the held-out rows only:

- ``prior``: the ZC706 preset with the design knobs at their pre-calibration guesses (`PRIOR`);
- ``tuned``: the best point of a small grid over physically meaningful knobs (`GRID`), chosen by Spearman
  correlation on the tuning rows;
- ``preset``: the ``fpga-zc706-int8`` preset as shipped (its design knobs were calibrated by this script on the
  FBNet table).

Reported per configuration: Spearman and Kendall rank correlation with the table's latency, and the MAPE after one
scale factor (the geometric mean of measured / simulated over the tuning rows), since the model's absolute scale is
a different accelerator's. Also reported: the wall time to cost every network (layer lowering and simulation timed
separately, simulation from a cold cache).

Columns: ``arch``; the latency (``--latency-column``, by default ``fpga_ms``, else the first column named
``fpga_latency*``: HW-NAS-Bench's own name), in ms; the energy (``--energy-column``, by default the first column
named ``fpga_energy*``), in mJ per network. A table may hold either or both.

**Energy** (issue 22): where the table has an FPGA energy column, the simulator's energy per inference of the
shipped preset and (when the table has latency too) of the knobs tuned on latency is scored against it on the
held-out rows the same way (rank correlation, the MAPE after one scale fitted on the tuning rows; nothing else is
tuned on energy). The table in ``../shared`` has FPGA latency only, so there the script says the energy comparison
was not made, and why.

NAS-Bench-201 (``--space nb201``): HW-NAS-Bench measured its cells per dataset, so ``--dataset`` sets the network the
figures are for: ``cifar10`` (10 classes, 32 px), ``cifar100`` (100 classes, 32 px; the default) or
``ImageNet16-120`` (120 classes, 16 px).

Bad input (a missing file or column, an architecture string its space cannot read, a latency or energy that is not
a positive number) is one line naming the file, line and column, exit status 2.

Run: ``python bench/fpga_sim.py [--csv PATH] [--space auto|fbnet|nb201] [--dataset NAME] [--latency-column NAME]
[--energy-column NAME] [--tune-rows 500] [--seed 0] [--json]``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet-latency" / "fbnet_latency.csv"

# Design knobs before calibration: a 16 x pe_out array, depthwise on one input lane per channel, 10 us per layer.
PRIOR = {"pe_in": 16, "depthwise_mapping": "channel", "depthwise_efficiency": 1.0, "grouped_efficiency": 0.8,
         "layer_overhead_cycles": 2000, "identity_dram_passes": 2.0}
# Physically meaningful alternatives for each knob (288 points with the prior's values among them).
GRID = {"pe_in": [8, 16, 32, 64], "depthwise_mapping": ["channel", "window"], "depthwise_efficiency": [0.5, 1.0],
        "grouped_efficiency": [0.5, 0.8, 1.0], "layer_overhead_cycles": [0, 500, 2000],
        "identity_dram_passes": [0.0, 2.0]}


# HW-NAS-Bench's NAS-Bench-201 figures are per dataset: the classes and input resolution each was measured at.
NB201_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}


class BadTable(ValueError):
    """A table the script cannot score: the message names the file, and the line and column where there is one."""


def _positive(df, csv: Path, column: str, what: str) -> np.ndarray:
    """The column as floats, every one a positive finite number (else `BadTable` at the first that is not)."""
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row = int(np.argmax(bad))
        raise BadTable(f"{csv}: line {row + 2}, column {column!r}: {str(df[column].iloc[row])!r} is not a positive "
                       f"{what}")
    return values


def _column(df, csv: Path, named: str | None, option: str, defaults: tuple[str, ...], prefix: str) -> str | None:
    """The column `named` (which must exist), else the first of `defaults` present, else the first starting with
    `prefix`, else None."""
    if named is not None:
        if named not in df.columns:
            raise BadTable(f"{csv}: {option}: no column {named!r}")
        return named
    return next((c for c in defaults if c in df.columns), None) or next(
        (c for c in df.columns if str(c).startswith(prefix)), None)


def _load(csv: Path, energy_column: str | None = None, latency_column: str | None = None) -> dict:
    """The table's architecture strings and FPGA figures: ``archs``, ``latency`` / ``energy`` (arrays, or None where
    the table has no such column) and the names of those columns."""
    import pandas as pd

    if not csv.is_file():
        raise BadTable(f"{csv}: not found (pass --csv PATH to a table of FPGA figures, e.g. HW-NAS-Bench's)")
    df = pd.read_csv(csv)
    if "arch" not in df.columns:
        raise BadTable(f"{csv}: no column 'arch' (the networks' architecture strings)")
    lat = _column(df, csv, latency_column, "--latency-column", ("fpga_ms",), "fpga_latency")
    energy = _column(df, csv, energy_column, "--energy-column", (), "fpga_energy")
    if lat is None and energy is None:
        raise BadTable(f"{csv}: no FPGA column: expected a latency ('fpga_ms' or 'fpga_latency*', ms) or an energy "
                       f"('fpga_energy*', mJ), or name one with --latency-column / --energy-column")
    if len(df) < 3:
        raise BadTable(f"{csv}: {len(df)} row(s); at least 3 are needed to tune on some and score the rest")
    return {"archs": [str(a) for a in df["arch"]],
            "latency": None if lat is None else _positive(df, csv, lat, "latency"), "latency_column": lat,
            "energy": None if energy is None else _positive(df, csv, energy, "energy"), "energy_column": energy}


def _space_name(archs: list[str]) -> str:
    """``nb201`` for NAS-Bench-201's cell strings (``|op~0|+|...|``), else ``fbnet``."""
    return "nb201" if archs and archs[0].startswith("|") else "fbnet"


def _space(name: str, dataset: str = "cifar100"):
    """The search space HW-NAS-Bench's figures of `name` are for (FBNet at 100 classes; NAS-Bench-201 per `dataset`)."""
    from search_spaces import get_space

    if name == "nb201":
        classes, resolution = NB201_DATASETS[dataset]
        return get_space("nb201", {"resolution": resolution}, num_classes=classes)
    return get_space("fbnet", num_classes=100)


def _networks(space, archs: list[str], csv: Path) -> list:
    """Each architecture's layer costs (`BadTable` naming the first string its space cannot read)."""
    nets = []
    for row, arch in enumerate(archs):
        try:
            nets.append(space.layer_costs(space.decode(arch)))
        except (ValueError, KeyError, IndexError) as err:
            raise BadTable(f"{csv}: line {row + 2}, column 'arch': {arch!r} is not an architecture of the "
                           f"{space.name} space ({err})") from None
    return nets


def _latencies(nets: list, cfg, what: str = "latency_ms") -> np.ndarray:
    from hardware_profiles.fpga import FpgaSimulator

    sim = FpgaSimulator(cfg)
    return np.array([getattr(sim(layers), what) for layers in nets])


def _scores(pred: np.ndarray, true: np.ndarray, scale: float) -> dict:
    from scipy.stats import kendalltau, spearmanr

    return {"spearman": float(spearmanr(pred, true).statistic), "kendall": float(kendalltau(pred, true).statistic),
            "mape_scaled": float(np.mean(np.abs(pred * scale - true) / true)), "scale": scale}


def _evaluate(nets: list, y: np.ndarray, tune: np.ndarray, held: np.ndarray, cfg, what: str = "latency_ms") -> dict:
    pred = _latencies(nets, cfg, what)
    scale = float(np.exp(np.mean(np.log(y[tune] / pred[tune]))))   # fitted on tuning rows only
    return _scores(pred[held], y[held], scale)


def _grid_search(nets: list, y: np.ndarray, base) -> tuple[dict, float]:
    """Best knob setting by Spearman on the given (tuning) networks."""
    from scipy.stats import spearmanr

    best, best_rho = {}, -2.0
    for values in itertools.product(*GRID.values()):
        knobs = dict(zip(GRID, values))
        rho = float(spearmanr(_latencies(nets, base.model_copy(update=knobs)), y).statistic)
        if rho > best_rho:
            best, best_rho = knobs, rho
    return best, best_rho


def run(csv: Path, tune_rows: int, seed: int, energy_column: str | None = None, *, space: str = "auto",
        dataset: str = "cifar100", latency_column: str | None = None) -> dict:
    """Every figure the script reports, as a dict (`BadTable` for a table it cannot score)."""
    from hardware_profiles.fpga import get_fpga_config

    table = _load(csv, energy_column, latency_column)
    archs, y, energy = table["archs"], table["latency"], table["energy"]
    name = _space_name(archs) if space == "auto" else space
    if not 0 < tune_rows < len(archs):
        raise BadTable(f"{csv}: --tune-rows {tune_rows}: must leave rows on both sides of {len(archs)}")
    t0 = time.perf_counter()
    nets = _networks(_space(name, dataset), archs, csv)
    t_lower = time.perf_counter() - t0
    preset = get_fpga_config("fpga-zc706-int8")
    t0 = time.perf_counter()
    _latencies(nets, preset)   # a fresh simulator each call: cold cache
    t_sim = time.perf_counter() - t0

    perm = np.random.default_rng(seed).permutation(len(archs))
    tune, held = perm[:tune_rows], perm[tune_rows:]
    res = {"csv": str(csv), "space": name, "dataset": dataset if name == "nb201" else None, "rows": len(archs),
           "tune_rows": len(tune), "held_out_rows": len(held), "seed": seed,
           "timing_s": {"layer_costs": t_lower, "simulate_cold": t_sim, "networks": len(archs)}}
    tuned = None
    if y is None:
        res["latency"] = {"not compared": f"{csv.name} has no FPGA latency column (fpga_ms or fpga_latency*): the "
                                          "design knobs were not tuned, the preset's are used"}
    else:
        tuned, tune_rho = _grid_search([nets[i] for i in tune], y[tune], preset)
        res["latency"] = {"column": table["latency_column"]}
        res["prior"] = {"knobs": PRIOR, **_evaluate(nets, y, tune, held, preset.model_copy(update=PRIOR))}
        res["tuned"] = {"knobs": tuned, "tuning_spearman": tune_rho,
                        **_evaluate(nets, y, tune, held, preset.model_copy(update=tuned))}
        res["preset"] = {"knobs": {k: getattr(preset, k) for k in GRID}, **_evaluate(nets, y, tune, held, preset)}
    if energy is None:
        res["energy"] = {"not compared": f"{csv.name} has no FPGA energy column (fpga_energy*; HW-NAS-Bench's FPGA "
                                         "energy is not among its columns): the simulator's energy was not compared"}
    else:   # the knobs were chosen on latency; only one scale is fitted to the energy's tuning rows
        configs = [("preset", preset)] + ([("tuned", preset.model_copy(update=tuned))] if tuned is not None else [])
        res["energy"] = {"column": table["energy_column"],
                         **{label: _evaluate(nets, energy, tune, held, cfg, "energy_mj") for label, cfg in configs}}
    return res


def _print(res: dict) -> None:
    t = res["timing_s"]
    what = "FBNet networks" if res["space"] == "fbnet" else f"NAS-Bench-201 cells ({res['dataset']})"
    print(f"{res['rows']} {what} from {res['csv']}; tuning rows {res['tune_rows']}, held-out "
          f"{res['held_out_rows']} (seed {res['seed']})")
    print(f"costing {t['networks']} networks: layer_costs {t['layer_costs']:.2f} s, simulate (cold cache) "
          f"{t['simulate_cold']:.2f} s")
    header = f"{'config':8} {'spearman':>9} {'kendall':>8} {'MAPE(scaled)':>13} {'scale':>7}"
    lat = res["latency"]
    if "not compared" in lat:
        print(f"latency: {lat['not compared']}")
    else:
        print(f"latency against {lat['column']!r} (held-out rows)")
        print(f"{header}  knobs")
        for name in ("prior", "tuned", "preset"):
            r = res[name]
            print(f"{name:8} {r['spearman']:9.4f} {r['kendall']:8.4f} {100 * r['mape_scaled']:12.1f}% "
                  f"{r['scale']:7.2f}  {r['knobs']}")
        print(f"(tuned: grid of {int(np.prod([len(v) for v in GRID.values()]))} points, best Spearman on tuning rows "
              f"{res['tuned']['tuning_spearman']:.4f})")
    e = res["energy"]
    if "not compared" in e:
        print(f"energy: {e['not compared']}")
        return
    print(f"energy per inference against {e['column']!r} (held-out rows)")
    print(header)
    for name in ("preset", "tuned"):
        if name in e:
            r = e[name]
            print(f"{name:8} {r['spearman']:9.4f} {r['kendall']:8.4f} {100 * r['mape_scaled']:12.1f}% "
                  f"{r['scale']:7.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="a table of FPGA figures (default: HW-NAS-Bench's "
                    "FBNet latency table in ../shared)")
    ap.add_argument("--space", choices=["auto", "fbnet", "nb201"], default="auto",
                    help="the networks' space (auto: nb201 for cell strings '|op~0|+|...|', else fbnet)")
    ap.add_argument("--dataset", choices=list(NB201_DATASETS), default="cifar100",
                    help="NAS-Bench-201 only: the dataset the table's figures were measured for")
    ap.add_argument("--tune-rows", type=int, default=500, help="rows used for calibration (the rest is held out)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tuning / held-out split")
    ap.add_argument("--latency-column", help="the table's FPGA latency per network, ms (default: fpga_ms, else the "
                    "first column named fpga_latency*)")
    ap.add_argument("--energy-column", help="the table's FPGA energy per network, mJ (default: the first column "
                    "named fpga_energy*, if any)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        res = run(args.csv, args.tune_rows, args.seed, args.energy_column, space=args.space, dataset=args.dataset,
                  latency_column=args.latency_column)
    except BadTable as err:
        print(f"fpga_sim: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)


if __name__ == "__main__":
    main()
