"""Shared fixtures: tiny assets live in tests/assets/, located relative to this file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).parent.parent

# Tests never phone home and never start W&B online.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def assets() -> Path:
    return ASSETS
