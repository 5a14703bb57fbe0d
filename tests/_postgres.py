"""The tests' throwaway PostgreSQL 15 on loopback: ``pipeline.loopback``'s server (the one the rehearsal starts),
skipped with the reason where the binaries are missing."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import pytest

from pipeline.loopback import PostgresServer, postgres_missing
from pipeline.loopback import postgres_server as _postgres_server

__all__ = ["PostgresServer", "postgres_server"]


@contextlib.contextmanager
def postgres_server(root: Optional[Path] = None) -> Iterator[PostgresServer]:
    why = postgres_missing()
    if why:
        pytest.skip(why)
    with _postgres_server(root, password="mtlp-test-password") as server:
        yield server
