"""Detection benchmark: the searched detector against a fixed SSDLite-style baseline, same training budget.

    python bench/detection.py [--run DIR | --arch STRING] [--epochs 10] [--seeds 1] [--resolution 128]
                              [--threads 2] [--latency-threads 1] [--latency-rounds 3] [--json]

The searched detector is the best of an `lrssd` run (``--run``, default the output folder of
``recipes/lrssd_detection.yaml``; its recipe gives the space options) or an arch string (``--arch``, with the
recipe's space options). The baseline is SSDLite-style: a MobileNetV2 (width 1.0) backbone built by timm (random
init, as every network here: nothing is downloaded) with the standard SSDLite head, i.e. 6 levels (3 extra
layers), no fusion, one depthwise-separable prediction layer per level, 6 anchors per location, expressed as the
head ``l6_none_sep_k3_w128_a6``. Both are trained from the same seed with the same epochs, batch size and
learning rate on the embedded synthetic dataset and evaluated on its validation split (COCO mAP@0.5 and
mAP@[.5:.95], pycocotools), and both are timed on this CPU as ONNX graphs in onnxruntime (batch 1, 1 thread as
the recipe's ``local-cpu`` profile; the smallest median of 3 interleaved rounds).
Ratios are searched / baseline. One short training run's mAP@0.5 varies with its seed (sd about 0.03 for the
recipe's detectors), so `--seeds N` trains each model N times (seeds 0..N-1: initial weights and data order) and
reports the mean and standard deviation. With ``--run``, the search's own figure for the arch is printed too: one
run, the best of the search's trials, so it is biased upwards against the mean.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.timing import measure_module_latency  # noqa: E402
from nas.evaluation import make_evaluator  # noqa: E402
from search_spaces import get_space  # noqa: E402
from search_spaces.heads.detector import Detector  # noqa: E402
from search_spaces.heads.lrssd import HeadArch, LRSSDHead, level_sizes  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "lrssd_detection.yaml"
BASELINE_HEAD = HeadArch(6, "none", False, 3, 128, 6)


class TimmFeatures(torch.nn.Module):
    """A timm ``features_only`` model returning its last three maps (strides 8, 16, 32) as a list."""

    def __init__(self, name: str):
        super().__init__()
        import timm

        self.net = timm.create_model(name, pretrained=False, features_only=True, out_indices=(2, 3, 4))
        self.channels = list(self.net.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


def baseline(num_classes: int, resolution: int, min_scale: float, max_scale: float) -> Detector:
    """MobileNetV2 + SSDLite head (see the module)."""
    from search_spaces.heads.anchors import make_anchors

    backbone = TimmFeatures("mobilenetv2_100")
    head = LRSSDHead(BASELINE_HEAD, backbone.channels, num_classes)
    sizes = level_sizes(resolution, BASELINE_HEAD.levels)
    return Detector(backbone, head, make_anchors([(s, s) for s in sizes], BASELINE_HEAD.anchors, min_scale, max_scale))


def searched(args: argparse.Namespace, num_classes: int):
    """(space, arch string, the search's own figures for it or None) of the searched detector."""
    import pandas as pd

    from nas.checks import load_recipe

    run = Path(args.run) if args.run else None
    recipe_path = run / "recipe.yaml" if run is not None and (run / "recipe.yaml").is_file() else RECIPE
    recipe = load_recipe(recipe_path)
    if args.arch:
        arch = args.arch
    else:
        run = run or recipe.output_dir()
        best = run / "best" / "arch.txt"
        if not best.is_file():
            sys.exit(f"{best}: no searched detector; run `python -m nas.run {RECIPE.relative_to(Path.cwd())}` "
                     "first, or pass --run DIR / --arch STRING")
        arch = best.read_text().strip()
    options = dict(recipe.space.options)
    options["resolution"] = args.resolution
    found = None
    if run is not None and (run / "results.csv").is_file():
        rows = pd.read_csv(run / "results.csv", dtype={"arch": str})
        ok = rows[(rows.arch == arch) & (rows.status == "ok")]
        if len(ok):
            found = {"map50": float(ok.map50.iloc[0]), "map": float(ok["map"].iloc[0]),
                     "trials": int((rows.status == "ok").sum())}
    return get_space(recipe.space.name, options, num_classes=num_classes), arch, found


def train(name: str, build, evaluator_options: dict, seeds: int, resolution: int) -> tuple[dict, torch.nn.Module]:
    """Train `build()` once per seed: (mean and sd of its scores, FLOPs and params; the last model trained)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    runs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build()
        t0 = time.perf_counter()
        scores = make_evaluator("detection", evaluator_options, seed=seed).evaluate(model, resolution)
        runs.append({"seed": seed, "map50": scores["map50"], "map": scores["map"],
                     "train_seconds": time.perf_counter() - t0})
        print(f"  {name} seed {seed}: mAP@0.5 {scores['map50']:.3f} ({runs[-1]['train_seconds']:.0f} s)", flush=True)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    out = {"model": name, "runs": runs, "flops": counter.get_total_flops() // 2,
           "params": sum(p.numel() for p in model.parameters())}
    for key in ("map50", "map"):
        values = np.array([r[key] for r in runs])
        out[key], out[f"{key}_sd"] = float(values.mean()), float(values.std(ddof=1)) if seeds > 1 else None
    return out, model


def latencies(models: list[torch.nn.Module], resolution: int, threads: int, rounds: int) -> list[float]:
    """Median ms of each model, timed in `rounds` interleaved rounds, the smallest median kept: on a shared or
    virtual machine one model's median can move by half between two minutes, and interleaving keeps such drift
    from landing on one model only (the calibration's protocol, `nas.latency_sources`)."""
    best = [float("inf")] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            lat = measure_module_latency(m.eval(), (1, 3, resolution, resolution), threads=threads, repeats=50,
                                         min_seconds=1.0)
            best[i] = min(best[i], lat.median_ms)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="run folder of an lrssd search (default: the lrssd_detection recipe's)")
    ap.add_argument("--arch", help="detector arch string instead of a run's best")
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch training threads")
    ap.add_argument("--latency-threads", type=int, default=1,
                    help="onnxruntime threads for the latency figures (1: the recipe's local-cpu profile)")
    ap.add_argument("--latency-rounds", type=int, default=3, help="interleaved timing rounds; the smallest median "
                    "of each model is kept")
    ap.add_argument("--seeds", type=int, default=1, help="training runs per model (seeds 0..N-1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    options = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads}
    num_classes = make_evaluator("detection", options).num_classes()
    space, arch, found = searched(args, num_classes)
    if found is not None:
        print(f"the search scored it mAP@0.5 {found['map50']:.3f} in one training run, the best of "
              f"{found['trials']} trials: a maximum over noisy runs, so expect its mean over seeds to be lower")
    print(f"searched: {arch}\nbaseline: MobileNetV2 + SSDLite head ({BASELINE_HEAD})\n"
          f"training each {args.seeds}x for {args.epochs:g} epochs on the synthetic dataset at {args.resolution}px",
          flush=True)
    trained = [train("searched", lambda: space.build(space.decode(arch)), options, args.seeds, args.resolution),
               train("ssdlite-mbv2", lambda: baseline(num_classes, args.resolution, space.options.anchor_min_scale,
                                                      space.options.anchor_max_scale),
                     options, args.seeds, args.resolution)]
    rows = [row for row, _ in trained]
    for row, ms in zip(rows, latencies([m for _, m in trained], args.resolution, args.latency_threads,
                                       args.latency_rounds)):
        row["latency_ms"] = ms
    print(f"  latency ({args.latency_threads} onnxruntime thread(s), smallest median of {args.latency_rounds} "
          f"interleaved rounds): " + ", ".join(f"{r['model']} {r['latency_ms']:.2f} ms" for r in rows), flush=True)
    s, b = rows
    ratio = {k: (s[k] / b[k] if b[k] else None) for k in ("map50", "map", "latency_ms", "flops", "params")}
    out = {"arch": arch, "search": found, "epochs": args.epochs, "seeds": args.seeds, "resolution": args.resolution,
           "latency_threads": args.latency_threads, "rows": rows, "ratio": ratio}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"\n{'model':<14}{'mAP@0.5':>15}{'mAP':>15}{'latency ms':>12}{'MFLOPs':>9}{'params M':>10}"
              f"   (mean +- sd over {args.seeds} seed{'s' * (args.seeds > 1)})")
        for r in rows:
            maps = "".join(f"{r[k]:>9.3f}" + (f" +-{r[k + '_sd']:.3f}" if r[k + "_sd"] is not None else " " * 6)
                           for k in ("map50", "map"))
            print(f"{r['model']:<14}{maps}{r['latency_ms']:>12.2f}{r['flops'] / 1e6:>9.1f}{r['params'] / 1e6:>10.2f}")
        cells = "".join(f"{(ratio[k] if ratio[k] is not None else float('nan')):>{w}.2f}"
                        for k, w in (("map50", 15), ("map", 15), ("latency_ms", 12), ("flops", 9), ("params", 10)))
        print(f"{'ratio':<14}{cells}")
    return out


if __name__ == "__main__":
    main()
