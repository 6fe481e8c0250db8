"""How often a 16-bit block is slower than its fp32 twin in a GPU policy table (issue 21).

    python bench/half_blocks.py [--profiles gpu-h100-policy-b1,gpu-h100-policy-b32] [--precision fp16]

A policy table (`bench/gpu_policy_profiles.sh`) times every block in each precision; this pairs each block in
`--precision` with the same block in fp32 (TF32 convolutions on GPUs that have them) and prints, per block type,
how many are slower and the median ratio: the reason to price a policy from measurements rather than assume that
half precision is faster.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware_profiles import get_profile  # noqa: E402
from search_spaces.costs import parse_cost_key  # noqa: E402


def ratios(blocks: pd.DataFrame, precision: str) -> pd.DataFrame:
    """(op, ratio of the block's median in `precision` to its fp32 twin's) for every block that has both."""
    ms = dict(zip(blocks.key, blocks.median_ms))
    rows = []
    for key in blocks.key:
        cost = parse_cost_key(key)
        twin = str(dataclasses.replace(cost, precision="fp32"))
        if cost.precision == precision and twin in ms:
            rows.append((cost.op, ms[key] / ms[twin]))
    return pd.DataFrame(rows, columns=["op", "ratio"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="gpu-h100-policy-b1,gpu-h100-policy-b32")
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16"])
    args = p.parse_args()
    print(f"{args.precision} against fp32 per block (each block timed alone, as the table holds it)")
    print(f"{'profile':<22} {'op':<10} {'blocks':>6} {'slower':>6} {'median ratio':>12} {'min':>6} {'max':>6}")
    for name in args.profiles.split(","):
        df = ratios(get_profile(name).table("blocks"), args.precision)
        for op, g in [("all", df), *df.groupby("op")]:
            print(f"{name:<22} {op:<10} {len(g):>6} {int((g.ratio > 1).sum()):>6} {g.ratio.median():>12.3f} "
                  f"{g.ratio.min():>6.2f} {g.ratio.max():>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
