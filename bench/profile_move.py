"""Moving a profile to a new device: the old device's predictor as it is, and after a 10-network few-shot transfer.

    python bench/profile_move.py [--source gpu-h100-fp32-b1] [--target gpu-h200-fp32-b1] [--samples 10]
        [--draws 10]

A profile measured on one device predicts another of the same kind only roughly: the H100's predictor puts the
H200's networks a few per cent high. Re-measuring a whole profile on the new device takes its thousands of blocks;
timing a handful of networks there and adapting the old predictor (`predictors.transfer.few_shot`, what
`python -m predictors.train --init-from OLD --samples 10 --table TEN.csv --target median_ms` runs) is the
documented way. The bench trains the source predictor from `--source`'s tables, scores it on every network the
target profile measured, then `--draws` times adapts it from `--samples` random target networks and scores it on
the others: mean error and the shares within +-5 % and +-10 %.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="gpu-h100-fp32-b1", help="profile of the device the predictor comes from")
    p.add_argument("--target", default="gpu-h200-fp32-b1", help="profile whose measured networks are the truth")
    p.add_argument("--samples", type=int, default=10, help="target networks the transfer sees")
    p.add_argument("--draws", type=int, default=10)
    args = p.parse_args(argv)
    from hardware_profiles import get_profile
    from predictors.train import profile_predictor
    from predictors.transfer import few_shot

    source, _, _ = profile_predictor(get_profile(args.source))
    target = get_profile(args.target)
    nets = target.read_networks()
    archs, y = nets["arch"].astype(str).tolist(), nets["median_ms"].to_numpy(float)
    err = source.predict(archs) / y - 1
    print(f"{args.source}'s predictor on {len(y)} networks measured for {target.manifest.ref} "
          f"({target.manifest.device}): mean error {err.mean():+.3f}, within 10 % {np.mean(np.abs(err) <= .1):.2f}, "
          f"within 5 % {np.mean(np.abs(err) <= .05):.2f}")
    scores = []
    for draw in range(args.draws):
        pick = np.random.default_rng(draw).choice(len(y), args.samples, replace=False)
        rest = np.setdiff1d(np.arange(len(y)), pick)
        model, _ = few_shot([source], [archs[i] for i in pick], y[pick], source_names=[args.source], seed=draw)
        e = model.predict([archs[i] for i in rest]) / y[rest] - 1
        scores.append((e.mean(), np.mean(np.abs(e) <= .1), np.mean(np.abs(e) <= .05)))
    s = np.array(scores)
    print(f"after a few-shot transfer from {args.samples} of them ({args.draws} draws, scored on the other "
          f"{len(y) - args.samples}): mean error {s[:, 0].mean():+.3f}, within 10 % {s[:, 1].mean():.3f} "
          f"(lowest draw {s[:, 1].min():.2f}), within 5 % {s[:, 2].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
