"""Drift: does a measured profile still describe this machine and runtime?

A profile's tables are timings of one runtime version on one machine. A new onnxruntime (or PyTorch) release
changes kernels and fusions, and a machine that moved to other hardware, or a host that got busier, changes all
timings. Two checks, both cheap:

- `runtime_drift(record)`: the runtime version a predictor's profile was measured with, against the one installed
  here; `predictors.predict` prints its one-line warning.
- `check_profile(...)` (``python -m hardware_profiles.measure --profile NAME --check N``): re-measures N of the
  profile's networks here with its settings and says whether the table still holds: the median ratio of measured
  to table latency against the noise the profile recorded.

Moving a profile to a new device is a few-shot transfer, not a re-measurement: measure 10 networks there and
`python -m predictors.train --init-from OLD_PREDICTOR --table TEN.csv ...` (see the README).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

CHECK_FLOOR = 0.05   # a median ratio within +-5 % holds however quiet the profile's own timings were


def profile_record(manifest) -> dict[str, Any]:
    """What a predictor records of the profile it was trained on: name, version, runtime, its version, backend,
    device and machine (`predictors.io.save` stores it in meta.json)."""
    return {"name": manifest.name, "version": manifest.version, "runtime": manifest.runtime,
            "runtime_version": manifest.runtime_version, "backend": manifest.backend, "device": manifest.device,
            "machine": dict(manifest.machine)}


def installed_version(runtime: str) -> str | None:
    """Version of `runtime` installed here, in the form manifests record it (onnxruntime's version; for CUDA
    graphs "torch X, CUDA Y", only where a GPU is visible); None if this machine does not run it."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime

            return onnxruntime.__version__
        if runtime == "pytorch-cuda-graphs":
            import torch

            return f"torch {torch.__version__}, CUDA {torch.version.cuda}" if torch.cuda.is_available() else None
    except ImportError:
        return None
    return None


def runtime_drift(record: dict[str, Any] | None) -> str | None:
    """A one-line warning when the predictor's profile was measured with another version of a runtime that is
    installed here; None when they agree, or when the profile is not of a runtime this machine runs (imported,
    simulated, another device's)."""
    if not record or not record.get("runtime_version"):
        return None
    here = installed_version(str(record.get("runtime")))
    if here is None or here == record["runtime_version"]:
        return None
    return (f"warning: profile {record.get('name')}@{record.get('version')} was measured with {record['runtime']} "
            f"{record['runtime_version']}, and {here} is installed here: its latencies may have moved (check: "
            f"python -m hardware_profiles.measure --profile {record.get('name')} --check 10)")


def warn_runtime_drift(record: dict[str, Any] | None) -> None:
    """Print `runtime_drift`'s warning, if any, on stderr."""
    line = runtime_drift(record)
    if line:
        print(line, file=sys.stderr)


def check_verdict(table_ms: np.ndarray, measured_ms: np.ndarray, recorded_spread: float) -> dict[str, Any]:
    """Whether a profile holds: the median of measured / table latency within max(`CHECK_FLOOR`, the profile's
    recorded median spread) of 1. Per-network ratios scatter with the machine's noise; a runtime or machine
    change moves them all, which is what the median sees."""
    ratio = np.asarray(measured_ms, float) / np.asarray(table_ms, float)
    tolerance = max(CHECK_FLOOR, float(recorded_spread))
    median = float(np.median(ratio))
    return {"networks": int(len(ratio)), "median_ratio": median, "tolerance": tolerance,
            "within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.10)), "holds": bool(abs(median - 1) <= tolerance)}
