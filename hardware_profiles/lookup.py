"""Lookup-table profiles: a network's latency is the sum of its layers' measured latencies.

Each block was timed alone, so each block time includes the runtime's fixed per-inference cost once; the manifest
records that cost (``options.overhead_ms``, the time of a trivial graph) and the sum counts it once in all:
``latency = overhead + sum(max(block - overhead, 0))``. What block sums still miss (fusion across layers, cache
effects) is the job of the learned network term in `predictors`.

One approximation: a classifier (final linear layer) whose class count was never measured is costed from a
measured classifier of the same input width and family, scaled by the ratio of outputs. Tables are measured at
one class count, while searches run at their dataset's; the classifier is a negligible share of a network.
"""
from __future__ import annotations

import re

from collections.abc import Hashable, Iterable
from pathlib import Path

from hardware_profiles import Estimate, HardwareProfile
from hardware_profiles.manifest import Manifest
from hardware_profiles.tables import read_table


_CLASSIFIER = re.compile(r"^classifier_.*_i(?P<cin>\d+)x1x1_o(?P<cout>\d+)x1x1_(?P<family>\w+)$")


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

    def __init__(self, manifest: Manifest, folder: Path):
        self.manifest, self.folder = manifest, Path(folder)
        self.name, self.description = manifest.ref, f"{manifest.device}, {manifest.runtime} ({manifest.kind})"
        if not manifest.tables.blocks:
            raise ValueError(f"{folder / 'manifest.yaml'}: tables.blocks: profile {manifest.ref} has no block table")
        table = read_table(self.folder / manifest.tables.blocks)
        self.block_ms: dict[str, float] = dict(zip(table["key"], table["median_ms"].astype(float)))
        self.overhead_ms = float(manifest.options.get("overhead_ms", 0.0))
        self._classifiers: dict[tuple[str, str], tuple[int, float]] = {}
        for key, ms in self.block_ms.items():
            m = _CLASSIFIER.match(key)
            if m:
                self._classifiers[(m["cin"], m["family"])] = (int(m["cout"]), ms)

    def _lookup(self, key: str) -> float | None:
        if key in self.block_ms:
            return self.block_ms[key]
        m = _CLASSIFIER.match(key)
        known = self._classifiers.get((m["cin"], m["family"])) if m else None
        if known is None:
            return None
        cout, ms = known
        o = self.overhead_ms
        return o + max(ms - o, 0.0) * int(m["cout"]) / cout

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys this table cannot cost."""
        return [k for k in keys if self._lookup(k) is None]

    def latency_of_keys(self, keys: list[str]) -> float:
        """Summed latency (ms) of a network given by its layers' cost keys."""
        missing = self.missing(keys)
        if missing:
            raise MissingKeys(f"profile {self.manifest.ref} has no measurement for {len(missing)} layer(s), e.g. "
                              f"{missing[0]}; measure them with: python -m hardware_profiles.measure --profile "
                              f"{self.manifest.name} --space {self.manifest.space or 'SPACE'}")
        o = self.overhead_ms
        return o + sum(max(self._lookup(k) - o, 0.0) for k in keys)

    def latency(self, space, arch: Hashable) -> Estimate:
        return Estimate(self.latency_of_keys(space.cost_keys(arch)))
