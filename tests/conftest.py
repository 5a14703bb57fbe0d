"""Shared fixtures: the read-only datasets beside the checkout and a loopback PostgreSQL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets test modules import tests/_*.py helpers

from _postgres import postgres_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTLP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set MTLP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def adult_dir(shared_data: Path) -> Path:
    return shared_data / "adult"


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session; each test creates its own database on it."""
    with postgres_server() as server:
        yield server
