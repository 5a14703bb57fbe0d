"""A throwaway PostgreSQL 15 server on loopback for tests that need a real database.

The server refuses to run as root, so when the tests run as root it is started as the ``postgres``
user in a folder that user owns. Skip (with the reason) where the binaries are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

__all__ = ["PostgresServer", "postgres_server", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL cannot run as root and runuser is missing")
    return [runuser, "-u", "postgres", "--"] + cmd


class PostgresServer:
    """initdb + pg_ctl start in a temp dir; ``url(db)`` gives a SQLAlchemy URL; ``restart()`` for fault tests."""

    def __init__(self, root: Path) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if shutil.which(tool) is None:
                pytest.skip(f"PostgreSQL server binary {tool!r} not found on PATH")
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user, self.password = "mtlp", "mtlp-test-password"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        pwfile = root / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(_as_postgres(["initdb", "-D", str(self.data), "-U", self.user, "-A", "md5",
                                     f"--pwfile={pwfile}", "-E", "UTF8"]),
                       check=True, capture_output=True, text=True)
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args]),
                       check=True, capture_output=True, text=True)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c max_connections=200 -c fsync=off"
        self._pg_ctl("-o", opts, "-l", str(self.root / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server(root: Optional[Path] = None) -> Iterator[PostgresServer]:
    with tempfile.TemporaryDirectory(prefix="mtlp-pg-") as tmp:
        server = PostgresServer(Path(root or tmp))
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop("immediate")
