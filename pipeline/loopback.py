"""Throwaway servers on 127.0.0.1, for the rehearsal (``pipeline.rehearsal``), the tests and the benchmarks: a free
port, a server process stopped with its whole process group, waiting for it to answer HTTP, and a PostgreSQL in a
temporary folder.

PostgreSQL refuses to run as root: as root, its server runs as the ``postgres`` user (``runuser``), in a folder
that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["free_port", "background", "wait_http", "postgres_missing", "PostgresServer", "postgres_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def background(cmd: list[str], log_path: Path, env: Optional[dict] = None,
               cwd: Optional[Path] = None) -> Iterator[subprocess.Popen]:
    """``cmd`` in its own process group, its output in ``log_path``. On exit the whole group gets SIGTERM, then,
    once ``cmd``'s own process has ended (at most 15 s later), SIGKILL for whatever of the group is left: a
    server's workers can outlive its first process."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: Optional[Path] = None) -> None:
    """Until ``url`` answers 200; raises when ``proc`` exits first or ``timeout`` seconds pass (with the end of
    the server's log, where there is one)."""
    def log_tail() -> str:
        return f":\n{log_path.read_text(errors='replace')[-3000:]}" if log_path and log_path.exists() else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}{log_tail()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s{log_tail()}")


def postgres_missing() -> str:
    """Why no PostgreSQL server can start here, in one line; empty when one can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(tool) is None:
            return f"PostgreSQL's {tool} is not on PATH (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "PostgreSQL cannot run as root and runuser is missing"
    return ""


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """``initdb`` and ``pg_ctl start`` in ``root``: user ``mtlp`` with ``password``, md5 authentication, on a free
    port of 127.0.0.1. ``create_database(name)`` gives a SQLAlchemy URL; ``restart()`` is for fault tests."""

    def __init__(self, root: Path, password: str = "mtlp-password") -> None:
        why = postgres_missing()
        if why:
            raise FileNotFoundError(why)
        self.root, self.data, self.port = root, root / "data", free_port()
        self.user, self.password = "mtlp", password
        pwfile = root / "pw"
        pwfile.write_text(password)
        if os.geteuid() == 0:
            for path in (root, pwfile):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run(_as_postgres(["initdb", "-D", str(self.data), "-U", self.user, "-A", "md5",
                                     f"--pwfile={pwfile}", "-E", "UTF8"]), check=True, capture_output=True, text=True)
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args]),
                       check=True, capture_output=True, text=True)

    def start(self) -> None:
        # fsync off: the server and its data are thrown away afterwards; a crash test kills processes, not power
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                "-c max_connections=200 -c fsync=off")
        self._pg_ctl("-o", opts, "-l", str(self.root / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server(root: Optional[Path] = None, password: str = "mtlp-password") -> Iterator[PostgresServer]:
    """A :class:`PostgresServer` in ``root`` (default: a temporary folder, removed afterwards), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="mtlp-pg-") as tmp:
        server = PostgresServer(Path(root or tmp), password)
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop("immediate")
