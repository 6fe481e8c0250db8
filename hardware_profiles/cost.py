"""Cost architectures on a profile.

    python -m hardware_profiles.cost --profile NAME --space SPACE --archs FILE --out FILE [--space-options FILE]

`--archs` is a text file with one canonical arch string per line (blank lines and ``#`` comments allowed), or a
CSV with an `arch` column. The output CSV has `arch`, `latency_ms` (and `energy_mj` where the profile models
energy), `flops` and `params`. The space's options default to those the profile's tables were built with.

Bad input (a missing or malformed file, an arch string that does not decode, a layer the profile's table lacks,
an unknown profile or space, an output that cannot be written) is one ``error:`` line naming the file and line,
with exit status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from core.cli import ArgParser, check_output, check_range, read_space_options
from core.errors import InputError, cli_entry
from hardware_profiles import get_profile
from hardware_profiles.lookup import MissingKeys
from hardware_profiles.tables import ArchRows, read_archs, write_table
from search_spaces import make_space


def cost_archs(profile_ref: str, space_name: str, archs: ArchRows | list[str], space_options: dict | None = None,
               num_classes: int | None = None, *, options_source: str | Path = "--space-options") -> pd.DataFrame:
    """One row per arch: latency (and energy) on the profile, FLOPs and params.

    Args:
        profile_ref: profile name or name@version.
        space_name: registered search space the arch strings belong to.
        archs: arch strings, with the lines they came from (`read_archs`) or a plain list.
        space_options: the space's options (None: the profile's, when its tables were built for this space).
        num_classes: classifier outputs (None: the profile's, else 1000).
        options_source: where `space_options` came from, named when the space rejects them.

    Raises:
        InputError: unknown profile or space, options the space rejects, an arch string that does not decode or
            has a layer the profile cannot cost (the file and line are named).
    """
    try:
        profile = get_profile(profile_ref)
    except InputError as err:
        raise InputError(f"--profile: {err}") from None
    manifest = getattr(profile, "manifest", None)
    same_space = manifest is not None and manifest.space == space_name
    source = options_source
    if space_options is None:
        space_options = manifest.space_options if same_space else {}
        folder = getattr(profile, "folder", None)
        source = f"{folder / 'manifest.yaml' if folder else profile_ref}: space_options" if same_space else source
    num_classes = num_classes or (manifest.num_classes if same_space else None) or 1000
    space = make_space(space_name, space_options, num_classes, source=source)
    if not isinstance(archs, ArchRows):
        archs = ArchRows(Path("--archs"), list(archs), list(range(1, len(archs) + 1)))
    genotypes = archs.decode(space)
    rows = []
    with tqdm(total=len(genotypes), desc=f"costing on {profile_ref}", unit="arch", file=sys.stderr) as bar:
        for i, arch in enumerate(genotypes):   # (the bar is closed before an error line is printed)
            try:
                est = profile.latency(space, arch)
            except MissingKeys as err:
                raise InputError(f"{archs.where(i)}: {err}") from None
            row = {"arch": archs.archs[i], "latency_ms": est.median_ms, "flops": space.flops(arch),
                   "params": space.params(arch)}
            if getattr(est, "energy_mj", None) is not None:
                row["energy_mj"] = est.energy_mj
            rows.append(row)
            bar.update()
    return pd.DataFrame(rows)


def parse_args(argv: list[str] | None = None):
    """The command line (usage errors are `InputError`s)."""
    p = ArgParser(prog="python -m hardware_profiles.cost", description=__doc__.splitlines()[0])
    p.add_argument("--profile", metavar="NAME", required=True,
                   help="hardware profile: a name (newest version) or NAME@VERSION; a live profile (local-cpu) "
                        "times every arch here")
    p.add_argument("--space", required=True, help="registered search space the arch strings belong to")
    p.add_argument("--archs", metavar="FILE", required=True,
                   help="arch strings: a text file, one per line (# comments and blank lines skipped), or a CSV "
                        "with an `arch` column")
    p.add_argument("--out", metavar="FILE", required=True, help="output table: .csv, or .parquet (written atomically)")
    p.add_argument("--space-options", metavar="FILE",
                   help="YAML file with the space's options (default: the profile's, when its "
                        "tables were built for --space; else the space's defaults)")
    p.add_argument("--num-classes", metavar="N", type=int,
                   help="classifier outputs of the networks (default: the profile's, else 1000)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_range(args, num_classes=1)
    out = check_output(args.out, "--out")
    options = read_space_options(args.space_options)
    table = cost_archs(args.profile, args.space, read_archs(args.archs), options, args.num_classes,
                       options_source=args.space_options or "--space-options")
    write_table(table, out)
    print(f"wrote {len(table)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
