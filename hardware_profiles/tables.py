"""Latency tables: CSV or Parquet, read and written atomically.

A block table has one row per cost key (``key``, ``median_ms``, ``p10_ms``, ``p90_ms``, ``spread``, ...);
a network table one row per architecture (``arch``, ``median_ms``, ...).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nas.io import atomic_write

BLOCK_COLUMNS = ["key", "median_ms", "mean_ms", "p10_ms", "p90_ms", "spread", "repeats", "attempts"]
NETWORK_COLUMNS = ["arch", "median_ms", "mean_ms", "p10_ms", "p90_ms", "spread", "repeats", "attempts"]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table (chosen by suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write `df` to CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
