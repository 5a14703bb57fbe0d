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


@pytest.fixture(scope="session")
def champion_server(adult_dir: Path, tmp_path_factory):
    """One model server (``workflow.serving.model_server``: MLflow's scoring app + body cap) of the embedded pipeline's
    champion for the session (tests/test_serving.py and
    tests/reliability/test_rel_serving_inputs.py share it): ``(base_url, proc, pipeline run, log path)``."""
    pytest.importorskip("mlflow")
    from _mlflow_helpers import embedded_pipeline, serve_champion

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    log = tmp_path_factory.mktemp("champion-serve") / "serve.log"
    with serve_champion(run, log) as (url, proc):
        yield url, proc, run, log


# Files that start first: the rehearsal runs every task of a pipeline in containers for minutes, three times the
# next longest file. Under `make test`'s two workers (pytest-xdist, whole files each), a long file that starts
# last keeps one worker busy after the other has run out of work.
FIRST_FILES = ("test_rehearsal.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in FIRST_FILES)  # stable: the order stays within each group
