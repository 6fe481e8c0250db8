"""Lookup-table profiles: a network's latency is the sum of its layers' measured latencies.

Each block was timed alone, so each block time includes the runtime's fixed per-inference cost once; the manifest
records that cost (``options.overhead_ms``, the time of a trivial graph) and the sum counts it once in all:
``latency = overhead + sum(max(block - overhead, 0))`` (`hardware_profiles.block_costs`, which also prices a
classifier of an unmeasured class count). What block sums still miss (fusion across layers, cache effects) is the
job of the learned network term in `predictors`.

Tables are checked before they are trusted: a table whose SHA-256 the manifest records is verified before it is
parsed (`TableProfile.table`), and a table that cannot be read or lacks its columns is one `InputError` line.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from hardware_profiles.backends import BACKENDS, exported_ms, make_backend, unavailable
from hardware_profiles.base import Estimate, HardwareProfile
from hardware_profiles.block_costs import BlockCosts
from hardware_profiles.manifest import Manifest, ManifestError, TableName, verify_tables
from hardware_profiles.tables import read_table
from search_spaces.blocks import NetworkDef, network_def_from_json


_KEY_COLUMN = {"blocks": "key", "networks": "arch", "extra": "network", "energy": "arch", "memory": "arch",
               "workspace": "key"}
_VALUE_COLUMN = {"blocks": "median_ms", "networks": "median_ms", "extra": "median_ms", "energy": "energy_mj",
                 "memory": "activation_bytes", "workspace": "peak_bytes"}


class MissingKeys(KeyError):
    """The table lacks layers of the network asked for."""

    def __str__(self) -> str:
        return str(self.args[0])


class TableProfile(HardwareProfile):
    """Latency from a profile's block table.

    Args:
        manifest: the profile's manifest (its `tables.blocks` names the table).
        folder: the folder holding the manifest and tables.
    """

    cheap = True

    def __init__(self, manifest: Manifest, folder: Path):
        self.manifest, self.folder = manifest, Path(folder)
        self.name, self.description = manifest.ref, f"{manifest.device}, {manifest.runtime} ({manifest.kind})"
        if not manifest.tables.blocks:
            raise ManifestError(f"{self.folder / 'manifest.yaml'}: tables.blocks: profile {manifest.ref} has no "
                                "block table")
        verify_tables(manifest, self.folder, ("networks",))   # damage shows when the profile loads, not later
        table = self.table("blocks")   # (verifies the block table itself)
        self.block_ms: dict[str, float] = dict(zip(table["key"], table["median_ms"].astype(float)))
        self.overhead_ms = float(manifest.options.get("overhead_ms", 0.0))
        self.costs = BlockCosts.measured(self.block_ms, self.overhead_ms)

    def table(self, which: TableName) -> pd.DataFrame:
        """The profile's table `which` (``"blocks"``, ``"networks"``, ``"extra"``, ``"energy"``, ``"memory"`` or
        ``"workspace"``), verified against the manifest's SHA-256 (when it records one) before it is parsed; what
        every reader of a profile's tables should call.

        Raises:
            ManifestError: the profile has no such table.
            IntegrityError: the file is missing or not the one recorded.
            InputError: it cannot be read, lacks its key or value column (``median_ms``; ``energy_mj``,
                ``activation_bytes``, ``peak_bytes``), or holds a value that is not a finite number (the line is
                named).
        """
        path = self.manifest.table_path(self.folder, which)
        if path is None:
            raise ManifestError(f"{self.folder / 'manifest.yaml'}: tables.{which}: profile {self.manifest.ref} "
                                f"has no {which} table")
        verify_tables(self.manifest, self.folder, (which,))
        try:
            df = read_table(path)
        except Exception as err:  # noqa: BLE001 - any parser failure is a damaged file for the user
            raise InputError(f"{path}: cannot read the {which} table of profile {self.manifest.ref} "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        value = _VALUE_COLUMN[which]
        for column in (_KEY_COLUMN[which], value):
            if column not in df.columns:
                raise InputError(f"{path}: no column {column!r} (columns: {', '.join(map(str, df.columns))})")
        bad = ~np.isfinite(pd.to_numeric(df[value], errors="coerce").to_numpy(float))
        if bad.any():   # (fitted tables may hold -1e-19 for a zero cost: the sums clip at zero, so sign is not checked)
            row = int(np.argmax(bad))
            line = row + 2 if path.suffix == ".csv" else row + 1
            raise InputError(f"{path}: line {line}, column {value!r}: {str(df[value].iloc[row])!r} is not "
                             "a finite number")
        return df

    def read_networks(self) -> pd.DataFrame:
        """The measured networks (``arch``, ``median_ms``, ...), verified; what predictors train on."""
        return self.table("networks")

    def read_extra(self) -> list[tuple[str, NetworkDef, float]]:
        """(name, definition, median ms) of the measured networks outside the space (none if the profile has no
        such table); what a predictor's network model learns networks-in-general from."""
        if not self.manifest.tables.extra:
            return []
        df, path = self.table("extra"), self.manifest.table_path(self.folder, "extra")
        out = []
        for i, (name, text, ms) in enumerate(zip(df["network"], df["definition"], df["median_ms"].astype(float))):
            try:
                out.append((str(name), network_def_from_json(text), ms))
            except ValueError as err:
                raise InputError(f"{path}: line {i + 2}, column 'definition': {err}") from None
        return out

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys this table cannot cost."""
        return self.costs.missing(keys)

    def latency_of_keys(self, keys: list[str]) -> float:
        """Summed latency (ms) of a network given by its layers' cost keys (`BlockCosts.sums`)."""
        missing = self.missing(keys)
        if missing:
            raise MissingKeys(f"profile {self.manifest.ref} has no measurement for {len(missing)} layer(s), e.g. "
                              f"{missing[0]}; measure them with: python -m hardware_profiles.measure --profile "
                              f"{self.manifest.name} --space {self.manifest.space or 'SPACE'}")
        return float(self.costs.sums([keys])[0])

    def latency(self, space, arch: Hashable) -> Estimate:
        return Estimate(self.latency_of_keys(space.cost_keys(arch)))

    def measure_exported(self, space, arch: Hashable, rounds: int = 2) -> tuple[float | None, str]:
        """The network timed here with the backend and settings the table was measured with (the smaller median
        of 2 interleaved rounds), where this machine has that backend."""
        m = self.manifest
        if m.backend not in BACKENDS:
            return None, f"not measured: {m.ref} was {m.kind} ({m.device}); it cannot be timed on this machine"
        why = unavailable(m.backend)
        if why:
            return None, f"not measured: {m.ref} is timed with {m.backend}, and {why}"
        backend = make_backend(m.backend, threads=m.threads or 1, precision=m.precision, batch=m.batch,
                               channels_last=bool(m.options.get("channels_last", True)))
        return exported_ms(backend, space, arch, rounds), (f"measured on this machine with {backend.describe()}, smallest median of {rounds} rounds (the "
                           f"table was measured on: {m.device})")
