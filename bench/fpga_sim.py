"""Validate the analytic FPGA model against HW-NAS-Bench's FBNet FPGA latencies (`fpga_ms`).

Method: the 4,000 rows of ``shared/data/fbnet-latency/fbnet_latency.csv`` are split by a fixed seed into tuning
rows (default 500) and held-out rows (the rest). Each architecture is costed with the ``fbnet`` space's
`layer_costs` and `hardware_profiles.fpga.simulate`. Three configurations are scored on the held-out rows only:

- ``prior``: the ZC706 preset with the design knobs at their pre-calibration guesses (`PRIOR`);
- ``tuned``: the best point of a small grid over physically meaningful knobs (`GRID`), chosen by Spearman
  correlation on the tuning rows;
- ``preset``: the ``fpga-zc706-int8`` preset as shipped (its design knobs were calibrated by this script).

Reported per configuration: Spearman and Kendall rank correlation with `fpga_ms`, and the MAPE after one scale
factor (the geometric mean of measured / simulated over the tuning rows), since the model's absolute scale is a
different accelerator's. Also reported: the wall time to cost every network (layer lowering and simulation
timed separately, simulation from a cold cache).

**Energy** (issue 22): where the table has an FPGA energy column (``--energy-column``, by default the first column
named ``fpga_energy*``: HW-NAS-Bench's FPGA energy per network, in mJ), the simulator's energy per inference of the
shipped preset and of the tuned knobs is scored against it on the held-out rows the same way (rank correlation, the
MAPE after one scale fitted on the tuning rows; nothing else is tuned on energy). The table in ``../shared`` has
FPGA latency only, so there the script says the energy comparison was not made, and why.

Run: ``python bench/fpga_sim.py [--csv PATH] [--energy-column NAME] [--tune-rows 500] [--seed 0] [--json]``.
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


def _load(csv: Path, energy_column: str | None = None):
    """(archs, FPGA latency, FPGA energy or None, the energy column's name or None)."""
    import pandas as pd

    if not csv.is_file():
        sys.exit(f"{csv}: not found (pass --csv PATH to the HW-NAS-Bench FBNet latency table)")
    df = pd.read_csv(csv)
    missing = {"arch", "fpga_ms"} - set(df.columns)
    if missing:
        sys.exit(f"{csv}: missing column(s) {sorted(missing)}; expected 'arch' and 'fpga_ms'")
    if energy_column is not None and energy_column not in df.columns:
        sys.exit(f"{csv}: --energy-column: no column {energy_column!r}")
    column = energy_column or next((c for c in df.columns if str(c).startswith("fpga_energy")), None)
    energy = None
    if column is not None:
        energy = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(energy) & (energy > 0))
        if bad.any():
            row = int(np.argmax(bad))
            value = str(df[column].iloc[row])
            sys.exit(f"{csv}: line {row + 2}, column {column!r}: {value!r} is not a positive energy")
    return df["arch"].tolist(), df["fpga_ms"].to_numpy(dtype=float), energy, column


def _fbnet_space():
    from search_spaces import get_space

    try:
        return get_space("fbnet", num_classes=100)
    except ValueError:
        try:
            import search_spaces.fbnet  # noqa: F401  (registers "fbnet" if the package does not yet)
        except ImportError as err:
            sys.exit(f"the fbnet search space is not available ({err}); search_spaces/fbnet.py is needed")
        return get_space("fbnet", num_classes=100)


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


def run(csv: Path, tune_rows: int, seed: int, energy_column: str | None = None) -> dict:
    """Every figure the script reports, as a dict."""
    from hardware_profiles.fpga import get_fpga_config

    archs, y, energy, column = _load(csv, energy_column)
    space = _fbnet_space()
    t0 = time.perf_counter()
    nets = [space.layer_costs(space.decode(a)) for a in archs]
    t_lower = time.perf_counter() - t0
    preset = get_fpga_config("fpga-zc706-int8")
    t0 = time.perf_counter()
    _latencies(nets, preset)   # a fresh simulator each call: cold cache
    t_sim = time.perf_counter() - t0

    perm = np.random.default_rng(seed).permutation(len(archs))
    tune, held = perm[:tune_rows], perm[tune_rows:]
    tuned, tune_rho = _grid_search([nets[i] for i in tune], y[tune], preset)
    if energy is None:
        scored = {"not compared": f"{csv.name} has no FPGA energy column (fpga_energy*; HW-NAS-Bench's FPGA energy "
                                  "is not among its columns): the simulator's energy was not compared"}
    else:   # the knobs were chosen on latency; only one scale is fitted to the energy's tuning rows
        scored = {"column": column, **{name: _evaluate(nets, energy, tune, held, cfg, "energy_mj") for name, cfg in (
            ("preset", preset), ("tuned", preset.model_copy(update=tuned)))}}
    return {"energy": scored,
        "csv": str(csv), "rows": len(archs), "tune_rows": len(tune), "held_out_rows": len(held), "seed": seed,
        "timing_s": {"layer_costs": t_lower, "simulate_cold": t_sim, "networks": len(archs)},
        "prior": {"knobs": PRIOR, **_evaluate(nets, y, tune, held, preset.model_copy(update=PRIOR))},
        "tuned": {"knobs": tuned, "tuning_spearman": tune_rho,
                  **_evaluate(nets, y, tune, held, preset.model_copy(update=tuned))},
        "preset": {"knobs": {k: getattr(preset, k) for k in GRID}, **_evaluate(nets, y, tune, held, preset)},
    }


def _print(res: dict) -> None:
    t = res["timing_s"]
    print(f"{res['rows']} FBNet networks from {res['csv']}; tuning rows {res['tune_rows']}, held-out "
          f"{res['held_out_rows']} (seed {res['seed']})")
    print(f"costing {t['networks']} networks: layer_costs {t['layer_costs']:.2f} s, simulate (cold cache) "
          f"{t['simulate_cold']:.2f} s")
    print(f"{'config':8} {'spearman':>9} {'kendall':>8} {'MAPE(scaled)':>13} {'scale':>7}  knobs   (held-out rows)")
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
    for name in ("preset", "tuned"):
        r = e[name]
        print(f"{name:8} {r['spearman']:9.4f} {r['kendall']:8.4f} {100 * r['mape_scaled']:12.1f}% {r['scale']:7.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="HW-NAS-Bench FBNet latency table")
    ap.add_argument("--tune-rows", type=int, default=500, help="rows used for calibration (the rest is held out)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tuning / held-out split")
    ap.add_argument("--energy-column", help="the table's FPGA energy per network, mJ (default: the first column "
                    "named fpga_energy*, if any)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    res = run(args.csv, args.tune_rows, args.seed, args.energy_column)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)


if __name__ == "__main__":
    main()
