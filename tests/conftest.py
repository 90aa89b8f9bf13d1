"""Shared test fixtures. Test data lives in tests/data (see its README for origins)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real test data."""
    return DATA
