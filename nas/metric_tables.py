"""Metric tables: accuracy and latency per architecture, read from a file instead of measured.

A metric table is a CSV or Parquet file with an ``arch`` column (canonical arch strings of the recipe's space)
and numeric metric columns, e.g. accuracy per dataset and latency per device, as NAS-Bench-201 and HW-NAS-Bench
publish them; the ``tabular`` evaluator and ``source: table`` latency constraints read them through here.

``synthetic:nb201[:SEED]`` in place of a path is a synthetic table over the 15,625 NAS-Bench-201 cells, made in
memory (`nas.synthetic_nb201`): a test landscape, never evidence of how a method does on real data.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import InputError
from nas.synthetic_nb201 import synthetic_nb201

SYNTHETIC_PREFIX = "synthetic:"


class TableError(InputError):
    """A metric table that cannot be used; one line naming the file and the column."""


def read_metric_table(path: str) -> pd.DataFrame:
    """The table at `path` (CSV, or Parquet by suffix) indexed by ``arch``, or a synthetic one.

    Raises:
        TableError: missing file, no ``arch`` column, or an arch listed twice.
    """
    if path.startswith(SYNTHETIC_PREFIX):
        return _synthetic(path)
    file = Path(path)
    if not file.is_file():
        raise TableError(f"{path}: metric table not found")
    return _read_file(str(file.resolve()), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_file(path: str, mtime_ns: int) -> pd.DataFrame:
    try:
        # arch strings stay strings: NAS-Bench-Macro's "00000000" would otherwise be read as the number 0
        table = (pd.read_parquet(path) if path.endswith((".parquet", ".pq"))
                 else pd.read_csv(path, dtype={"arch": str}))
    except Exception as err:  # noqa: BLE001 - any reader error is a bad file for the user
        raise TableError(f"{path}: cannot read the metric table ({type(err).__name__}: {err})") from None
    if "arch" not in table.columns:
        raise TableError(f"{path}: no 'arch' column (columns: {', '.join(map(str, table.columns))})")
    table["arch"] = table["arch"].astype(str)
    dup = table["arch"].duplicated()
    if dup.any():
        raise TableError(f"{path}: arch {table['arch'][dup].iloc[0]!r} is listed more than once")
    return table.set_index("arch")


def metric_column(table: pd.DataFrame, path: str, column: str, field: str) -> pd.Series:
    """A numeric column of a metric table (`TableError` naming the file, the recipe field and the columns)."""
    if column not in table.columns:
        raise TableError(f"{path}: {field}: no column {column!r} (columns: {', '.join(map(str, table.columns))})")
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().all():
        raise TableError(f"{path}: {field}: column {column!r} has no numeric values")
    return values


def check_space(table: pd.DataFrame, path: str, space: Any, field: str, *, min_rows: int | None = None,
                sample: int = 2000) -> None:
    """Refuse a metric table whose arch strings are not architectures of `space` (a table of another space, or
    of other space options), before any trial looks one up.

    Args:
        table: the table, indexed by arch string in file order.
        path: where it came from, for the message.
        space: the recipe's search space.
        field: the recipe field naming the table.
        min_rows: None: every checked row must decode (lookups); N: at least N of them (a surrogate skips the rest).
        sample: rows checked (the first ones); decoding all of a 15,625-row table would take seconds.

    Raises:
        TableError: naming the table, the line of the first string that does not decode, and why.
    """
    first_bad, good = None, 0
    for i, string in enumerate(table.index[:sample]):
        try:
            space.decode(string)
            good += 1
        except ValueError as err:
            first_bad = first_bad or (i, string, err)
    if first_bad is None or (min_rows is not None and good >= min(min_rows, len(table))):
        return
    i, string, err = first_bad
    line = f"line {i + 2}" if not path.startswith(SYNTHETIC_PREFIX) and not path.endswith((".parquet", ".pq")) \
        else f"row {i + 1}"
    raise TableError(f"{path}: {field}: {line}: not an architecture of space {space.name!r} ({err}); is this a "
                     "table of another space or other space options?")


def lookup(values: pd.Series, where: str, arch: str) -> float:
    """The table's figure for `arch` (`KeyError` naming `where` the figure comes from when it has no row)."""
    try:
        return float(values.at[arch])
    except KeyError:
        raise KeyError(f"{arch!r} has no row in {where}") from None


def table_path(path: str) -> str:
    """`path` as the table loaders take it: a synthetic spec (checked) as is, a file as an absolute path (trials
    may run in another working directory)."""
    if path.startswith(SYNTHETIC_PREFIX):
        _parse_synthetic(path)
        return path
    return str(Path(path).expanduser().resolve())


def _parse_synthetic(spec: str) -> tuple[str, int]:
    name, _, seed = spec.removeprefix(SYNTHETIC_PREFIX).partition(":")
    if name != "nb201" or (seed and not seed.isdigit()):
        raise TableError(f"unknown synthetic table {spec!r}; expected 'synthetic:nb201' or 'synthetic:nb201:SEED'")
    return name, int(seed or 0)


def _synthetic(spec: str) -> pd.DataFrame:
    return synthetic_nb201(_parse_synthetic(spec)[1]).set_index("arch")
