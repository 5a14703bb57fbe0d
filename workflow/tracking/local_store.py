"""One local MLflow store per runs root: every ``mtlp run`` under ``mtlp-runs/`` logs into ``mtlp-runs/mlflow.db``
(artifacts in ``mtlp-runs/mlartifacts``), so runs compare in one UI and the registered model, its versions and
its champion carry over from run to run, as ``mlruns/`` does for MLflow users. A run that asks for isolation
(``tracking.isolated``) keeps its own store in its folder, as before.

Each run folder records where its run logged (``tracking.json``: the URI, credentials masked, and the
experiment), so ``mtlp ui <run>`` finds the store of a run that logged to the shared store, to its own, or to
``tracking.uri``.

Several processes write one SQLite file at once (two runs, a UI, ``mtlp promote``): the store is created and
migrated under a file lock (two fresh runs would otherwise race MLflow's schema migration), and it is switched to
SQLite's write-ahead log, so readers never block the writer and a writer waits for another (MLflow's engine waits
on a busy database; each step's MLflow calls are retried on top, :mod:`.retry`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterator, Optional

from .uri import DEFAULT_DB, mask_url

__all__ = ["STORE_RECORD", "root_store_uri", "run_store_uri", "record_store", "read_store_record", "sqlite_path",
           "store_lock", "ready_sqlite", "stores_under", "holds_registered_model", "store_of_run", "experiment_id"]

STORE_RECORD = "tracking.json"


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI; None for any other store (or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


def root_store_uri(runs_root: str | os.PathLike) -> str:
    """The shared store of every run under ``runs_root``."""
    return f"sqlite:///{(Path(runs_root).resolve() / DEFAULT_DB)}"


def run_store_uri(runs_root: str | os.PathLike, configured: Optional[str] = None, isolated: bool = False) -> str:
    """Where a local run logs: ``configured`` (``tracking.uri``), else ``MLFLOW_TRACKING_URI``, else ``""`` for an
    isolated run (the steps then use the run folder's own store), else the runs root's shared store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri or isolated:
        return uri
    return root_store_uri(runs_root)


def record_store(work_dir: str | os.PathLike, uri: str, experiment: str) -> Path:
    """Write ``<work_dir>/tracking.json``: the run's store (masked) and experiment."""
    path = Path(work_dir) / STORE_RECORD
    store = uri or f"sqlite:///{Path(work_dir).resolve() / DEFAULT_DB}"
    path.write_text(json.dumps({"tracking_uri": mask_url(store), "experiment": experiment}, indent=2) + "\n")
    return path


def read_store_record(folder: str | os.PathLike) -> Optional[dict]:
    """The run folder's ``tracking.json``, or None (a run from before it was written, or not a run folder)."""
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads((Path(folder) / STORE_RECORD).read_text()))
    return None


@contextlib.contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` (``fcntl.flock``: released when the process dies)."""
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ready_sqlite(uri: str) -> None:
    """Create and migrate a SQLite store once, under :func:`store_lock`, in WAL mode; nothing for other stores."""
    db = sqlite_path(uri)
    if db is None:
        return
    with store_lock(db):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates the tracking tables
        client.search_registered_models(max_results=1)
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")


def stores_under(runs_root: str | os.PathLike) -> list[Path]:
    """Every SQLite store under ``runs_root``: the shared one first, then the runs' own, newest change first."""
    root = Path(runs_root)
    own = sorted(root.glob(f"*/{DEFAULT_DB}"), key=lambda p: p.stat().st_mtime, reverse=True)
    shared = [root / DEFAULT_DB] if (root / DEFAULT_DB).is_file() else []
    return shared + own


def holds_registered_model(db: Path, name: str) -> bool:
    """Whether the SQLite store ``db`` has a registered model ``name`` (read directly: no MLflow import)."""
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            return conn.execute("SELECT 1 FROM registered_models WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False


def store_of_run(folder: str | os.PathLike) -> tuple[str, Optional[str]]:
    """(store URI, experiment or None) a run folder logged to: its ``tracking.json``, else its own ``mlflow.db``
    (a run from before the record, or an isolated one). FileNotFoundError when it has neither."""
    folder = Path(folder)
    record = read_store_record(folder)
    if record and record.get("tracking_uri"):
        return str(record["tracking_uri"]), record.get("experiment")
    if (folder / DEFAULT_DB).is_file():
        return f"sqlite:///{(folder / DEFAULT_DB).resolve()}", None
    raise FileNotFoundError(f"{folder} has no {STORE_RECORD} or {DEFAULT_DB}: not the folder of an mtlp run")


def experiment_id(db: Path, name: Optional[str]) -> Optional[str]:
    """The id of experiment ``name`` in the SQLite store ``db`` (None: the newest experiment other than Default);
    None when there is none (read directly: no MLflow import)."""
    query, args = (("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (name,))
                   if name else ("SELECT experiment_id FROM experiments WHERE name != 'Default' AND lifecycle_stage = "
                                 "'active' ORDER BY creation_time DESC LIMIT 1", ()))
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            row = conn.execute(query, args).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None
