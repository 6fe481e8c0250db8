"""Latency tables: CSV or Parquet, read and written atomically.

A block table has one row per cost key (``key``, ``median_ms``, ``p10_ms``, ``p90_ms``, ``spread``, ...);
a network table one row per architecture (``arch``, ``median_ms``, ...). Tables users hand to a command line are
read by `read_latency_table` / `read_archs`, which check them row by row. A table being measured is written by
a `TableWriter`, which a killed measurement leaves readable and a continued one extends.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InputError
from core.io import atomic_write

BLOCK_COLUMNS = ["key", "median_ms", "mean_ms", "p10_ms", "p90_ms", "spread", "repeats", "attempts"]
NETWORK_COLUMNS = ["arch", "median_ms", "mean_ms", "p10_ms", "p90_ms", "spread", "repeats", "attempts"]
# networks outside the space: a name (random:SEED:I, timm:NAME@RES) and the NetworkDef as JSON
EXTRA_COLUMNS = ["network", "definition", *NETWORK_COLUMNS[1:]]
# arch strings are read as text: NAS-Bench-Macro's "00000012" would otherwise become the number 12
ARCH_AS_TEXT = {"arch": str}


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table (chosen by suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=ARCH_AS_TEXT)


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write `df` to CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


# --- tables a user hands to a command line ----------------------------------------------------------------------
# Every entry point that reads an (arch, latency) table or a list of arch strings goes through these, so a bad file
# gets the same one-line `InputError` everywhere: the file, the line (as an editor numbers it) and the column.


@dataclass
class ArchRows:
    """Arch strings read from a user's file, each with the line it came from (1-based, as an editor shows it),
    and, for latency tables, its value."""

    path: Path
    archs: list[str]
    lines: list[int]
    values: np.ndarray | None = None

    def where(self, i: int) -> str:
        """``FILE: line N`` of row `i`."""
        return f"{self.path}: line {self.lines[i]}"

    def decode(self, space) -> list:
        """The genotypes, or an `InputError` naming the file and line of the first string that does not decode."""
        out = []
        for i, string in enumerate(self.archs):
            try:
                out.append(space.decode(string))
            except ValueError as err:
                raise InputError(f"{self.where(i)}: {err}") from None
        return out


def _user_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_file():
        raise InputError(f"{path}: is a folder; expected a {what} file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; expected a {what}")
    return path


def read_user_table(path: str | Path, columns: Sequence[str], *, what: str = "table") -> pd.DataFrame:
    """A user's CSV or Parquet file with the given columns; its index is the line number of each row (CSV: the
    header is line 1; Parquet: rows count from 1).

    Raises:
        InputError: missing, empty, unreadable or header-only file, or a column missing (the columns present are
            listed).
    """
    path = _user_file(path, what)
    try:
        if path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            df.index = np.arange(1, len(df) + 1)
        else:
            df = pd.read_csv(path, skip_blank_lines=False, dtype=ARCH_AS_TEXT)
            df.index = np.arange(2, len(df) + 2)
            df = df.dropna(how="all")
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"{path}: cannot read the {what} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (columns: {', '.join(map(str, df.columns)) or 'none'})")
    if df.empty:
        raise InputError(f"{path}: no rows below the header; expected one row per architecture")
    return df


def read_latency_table(path: str | Path, target: str, *, duplicates: str = "error") -> ArchRows:
    """(arch, latency) rows of a user's table: `arch` strings and the positive numbers of column `target`.

    Rows whose `target` is empty (NaN) are skipped: benchmark tables have gaps. An arch listed twice with the same
    value is kept once; with different values it is refused (`duplicates="error"`) or averaged (``"mean"``).

    Raises:
        InputError: any `read_user_table` problem, a value that is not a number, not finite or not positive (with
            its line), no row with a value, or an arch listed twice with different values.
    """
    df = read_user_table(path, ["arch", target], what="latency table")
    path = Path(path)
    raw = df[target]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        line = bad.idxmax()
        raise InputError(f"{path}: line {line}, column {target!r}: {raw[line]!r} is not a number")
    values = values.astype(float)
    wrong = values.notna() & ~(np.isfinite(values) & (values > 0))
    if wrong.any():
        line = wrong.idxmax()
        raise InputError(f"{path}: line {line}, column {target!r}: {float(values[line]):g} is not a positive latency")
    no_arch = df["arch"].isna() & values.notna()
    if no_arch.any():
        raise InputError(f"{path}: line {no_arch.idxmax()}, column 'arch': empty")
    keep = values.notna()
    if not keep.any():
        raise InputError(f"{path}: column {target!r} has no values (every row is empty)")
    rows = pd.DataFrame({"arch": df["arch"][keep].astype(str).str.strip(), "v": values[keep]})
    rows["line"] = rows.index
    rows = _one_row_per_arch(rows, path, target, duplicates)
    return ArchRows(path, rows["arch"].tolist(), rows["line"].tolist(), rows["v"].to_numpy(float))


def _one_row_per_arch(rows: pd.DataFrame, path: Path, target: str, duplicates: str) -> pd.DataFrame:
    if not rows["arch"].duplicated().any():
        return rows
    groups = rows.groupby("arch", sort=False)
    spread = groups["v"].transform("max") / groups["v"].transform("min") - 1
    if duplicates == "error" and (spread > 1e-9).any():
        arch = rows["arch"][spread > 1e-9].iloc[0]
        lines = rows["line"][rows["arch"] == arch].tolist()
        vals = rows["v"][rows["arch"] == arch].tolist()
        n = int(rows.loc[spread > 1e-9, "arch"].nunique())
        raise InputError(f"{path}: column {target!r}: {n} arch(s) listed more than once with different values, "
                         f"e.g. lines {', '.join(map(str, lines))} ({', '.join(f'{v:g}' for v in vals)}); keep one "
                         "row per arch (e.g. the median of the measurements)")
    first = groups.head(1).index
    out = rows.loc[first].copy()
    out["v"] = groups["v"].mean().loc[out["arch"]].to_numpy()
    return out


def read_archs(path: str | Path) -> ArchRows:
    """Arch strings from a CSV (or Parquet) with an `arch` column, or a text file with one per line (blank lines
    and lines starting with ``#`` are skipped; line numbers count them)."""
    path = Path(path)
    if path.suffix in (".csv", ".parquet", ".pq"):
        df = read_user_table(path, ["arch"], what="arch file")
        empty = df["arch"].isna()
        if empty.any():
            raise InputError(f"{path}: line {empty.idxmax()}, column 'arch': empty")
        return ArchRows(path, df["arch"].astype(str).str.strip().tolist(), df.index.tolist())
    path = _user_file(path, "arch file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the arch file ({err})") from None
    pairs = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not pairs:
        raise InputError(f"{path}: no arch strings (only blank or # lines)")
    return ArchRows(path, [a for _, a in pairs], [n for n, _ in pairs])


ROUND_TRIP = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


class TableWriter:
    """Rows of one table, flushed atomically every `every_s` seconds (0: after every row) and at the end.

    A table left by a killed run is read back with its numbers exactly as written (round-trip float parsing), so
    rewriting it with new rows appended leaves the finished rows byte-identical.
    """

    def __init__(self, path: Path, columns: list[str], every_s: float):
        self.path, self.columns, self.every_s = path, columns, every_s
        self.df = self._read() if path.is_file() else pd.DataFrame(columns=columns)
        self.rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def _read(self) -> pd.DataFrame:
        try:
            if self.path.suffix == ".parquet":
                df = pd.read_parquet(self.path)
            else:
                df = pd.read_csv(self.path, dtype=ARCH_AS_TEXT, **ROUND_TRIP)
        except Exception as err:  # noqa: BLE001 - any parser failure is a damaged partial table
            raise InputError(f"{self.path}: cannot read the partial table to continue it ({type(err).__name__}); "
                             "delete it to measure its rows again") from None
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise InputError(f"{self.path}: no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))}); "
                             "delete it to measure its rows again")
        return df

    def done(self, column: str) -> set[str]:
        return set(self.df[column].astype(str)) | {str(r[column]) for r in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            new = pd.DataFrame(self.rows, columns=self.columns)
            self.df = new if self.df.empty else pd.concat([self.df, new], ignore_index=True)
            self.rows = []
        write_table(self.df, self.path)
        self._last = time.monotonic()
