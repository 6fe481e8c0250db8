"""Cost architectures on a profile.

    python -m hardware_profiles.cost --profile NAME --space SPACE --archs FILE --out FILE [--space-options FILE]

`--archs` is a text file with one canonical arch string per line, or a CSV with an `arch` column. The output CSV
has `arch`, `latency_ms` (and `energy_mj` where the profile models energy), `flops` and `params`. The space's
options default to those the profile's tables were built with.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

from hardware_profiles import get_profile
from hardware_profiles.tables import write_table


def read_archs(path: Path) -> list[str]:
    """Arch strings from a CSV with an `arch` column or a plain list, one per line."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: --archs: {path} not found")
    if path.suffix == ".csv":
        table = pd.read_csv(path)
        if "arch" not in table.columns:
            raise SystemExit(f"error: {path}: no `arch` column (columns: {', '.join(table.columns)})")
        return table["arch"].astype(str).tolist()
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def cost_archs(profile_ref: str, space_name: str, archs: list[str], space_options: dict | None = None,
               num_classes: int | None = None) -> pd.DataFrame:
    """One row per arch: latency (and energy) on the profile, FLOPs and params."""
    from search_spaces import get_space

    try:
        profile = get_profile(profile_ref)
    except ValueError as err:
        raise SystemExit(f"error: --profile: {err}") from None
    manifest = getattr(profile, "manifest", None)
    same_space = manifest is not None and manifest.space == space_name
    if space_options is None:
        space_options = manifest.space_options if same_space else {}
    num_classes = num_classes or (manifest.num_classes if same_space else None) or 1000
    space = get_space(space_name, space_options, num_classes=num_classes)
    rows = []
    for i, string in enumerate(tqdm(archs, desc=f"costing on {profile_ref}", unit="arch", file=sys.stderr)):
        try:
            arch = space.decode(string)
        except ValueError as err:
            raise SystemExit(f"error: --archs: line {i + 1}: {err}") from None
        est = profile.latency(space, arch)
        row = {"arch": string, "latency_ms": est.median_ms, "flops": space.flops(arch), "params": space.params(arch)}
        if getattr(est, "energy_mj", None) is not None:
            row["energy_mj"] = est.energy_mj
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hardware_profiles.cost", description=__doc__.splitlines()[0])
    p.add_argument("--profile", required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--archs", required=True, help="arch strings: text file, one per line, or CSV with `arch`")
    p.add_argument("--out", required=True, help="output CSV or Parquet")
    p.add_argument("--space-options", help="YAML file with the space's options (default: the profile's)")
    p.add_argument("--num-classes", type=int)
    args = p.parse_args(argv)
    options = yaml.safe_load(Path(args.space_options).read_text()) if args.space_options else None
    table = cost_archs(args.profile, args.space, read_archs(Path(args.archs)), options, args.num_classes)
    write_table(table, Path(args.out))
    print(f"wrote {len(table)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
