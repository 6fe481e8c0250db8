"""Shared fixtures: tiny assets live in tests/assets/, located relative to this file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).parent.parent

# Tests never phone home and never start W&B online.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")


def load_bench(name: str):
    """The module of ``bench/<name>.py`` (bench scripts are files, not a package), registered as ``bench_<name>``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def assets() -> Path:
    return ASSETS


def assert_batch_path_matches_per_arch(model, archs: list[str]) -> None:
    """A fitted latency predictor's choice-matrix batch path gives what one lowering per arch gives (to 1e-12)."""
    import numpy as np

    fast = model.predict_parts(archs)
    assert model._batch_[1] is not None                      # the space takes the choice-matrix path
    model._batch_ = (model.lookup_, None)                    # force the per-arch path
    slow = model.predict_parts(archs)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def counted_on_meta(build, shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs by torch's flop counter, parameters) of the module `build()` makes, built and run on the meta device
    (the counter needs shapes only)."""
    with torch.device("meta"):
        module = build().eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            module(torch.randn(shape))
    return fc.get_total_flops() // 2, sum(p.numel() for p in module.parameters())
