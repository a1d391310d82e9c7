"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (see its README.md): env FINETUNER_DATA, else ../shared/data
    next to the repository. Tests that need it are skipped when it is absent."""
    env = os.environ.get("FINETUNER_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder not found: {path} (set FINETUNER_DATA)")
    return path
