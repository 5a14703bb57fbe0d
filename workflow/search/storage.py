"""Where a study lives: the one home of storage strings (journal paths, database URLs, ``env:`` indirection).

``None`` / ``"journal"``: a journal file in the work directory (no server; safe for several processes on one
machine). ``journal:PATH`` or a plain path: that journal file. A URL (``postgresql://...``, ``sqlite:///...``):
Optuna's RDB storage, so workers in other processes or pods can join. ``env`` / ``env:VAR``: the URL held in an
environment variable (keeps passwords off command lines and pipeline parameters).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
JOURNAL_FILE = "optuna_journal.log"
DEFAULT_ENV = "OPTUNA_STORAGE"  # on the cluster, Kubernetes puts the optuna-db Secret here


def is_url(storage: str) -> bool:
    return "://" in storage


def _env_var(storage: str) -> Optional[str]:
    """The variable an ``env`` / ``env:VAR`` storage names, else None."""
    if storage == "env":
        return DEFAULT_ENV
    return storage[len("env:"):] if storage.startswith("env:") else None


def resolve_storage(storage: Optional[str], env_default: bool = True) -> Optional[str]:
    """The storage string to open: ``env`` / ``env:VAR`` replaced by that variable's value.

    Empty: ``$OPTUNA_STORAGE`` when ``env_default`` and it is set, else None (the journal file in the work dir).
    A named variable that is not set is an error naming it.
    """
    if not storage:
        return (os.environ.get(DEFAULT_ENV) or None) if env_default else None
    var = _env_var(storage)
    if var is None:
        return storage
    value = os.environ.get(var)
    if not value:
        raise RuntimeError(f"search storage is {storage!r} but ${var} is not set (is the Secret mounted?)")
    return value


def journal_path(storage: Optional[str], work_dir: Optional[PathLike]) -> Optional[Path]:
    """The journal file a storage string means, or None for a database URL."""
    if storage is None or storage == "journal":
        if work_dir is None:
            raise ValueError("the embedded journal storage needs a work directory")
        return Path(work_dir) / JOURNAL_FILE
    if storage.startswith("journal:"):
        return Path(storage[len("journal:"):])
    return None if is_url(storage) else Path(storage)


def absolute(storage: Optional[str], work_dir: PathLike) -> str:
    """The storage as another process started elsewhere can open it (a journal becomes ``journal:ABS_PATH``)."""
    path = journal_path(storage, work_dir)
    return f"journal:{path.resolve()}" if path is not None else str(storage)


def describe_storage(storage: Optional[str], work_dir: Optional[PathLike] = None) -> str:
    """The storage as it may be shown or logged (database password masked)."""
    path = journal_path(storage, work_dir)
    if path is not None:
        return f"journal:{path.resolve()}"
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def _rdb_kwargs(url: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                max_retry: Optional[int]) -> dict[str, Any]:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {} if url.startswith("sqlite") else {"engine_kwargs": {"pool_pre_ping": True}}
    if heartbeat_interval:
        kwargs.update(heartbeat_interval=int(heartbeat_interval),
                      grace_period=int(grace_period or 4 * int(heartbeat_interval)),
                      heartbeat_stale_trial_callback=(RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                                                      if max_retry else None))
    return kwargs


def _open_rdb(url: str, kwargs: dict[str, Any], attempts: int) -> Any:
    """Creating the tables is retried: workers that start together race on it."""
    from .study import rdb_storage

    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return rdb_storage(url, **kwargs)
        except Exception as e:
            if attempt >= attempts:
                raise
            log.info("opening Optuna storage failed (attempt %d/%d): %s", attempt, attempts, e)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def open_storage(storage: Any, work_dir: Optional[PathLike] = None, heartbeat_interval: Optional[int] = 15,
                 grace_period: Optional[int] = None, max_retry: Optional[int] = 1, attempts: int = 5) -> Any:
    """An Optuna storage for a storage string (a storage object passes through), with a heartbeat.

    ``heartbeat_interval`` seconds between beats; a trial is stale after ``grace_period`` (default 4x the
    interval) and is then failed and retried up to ``max_retry`` times (0: only failed). Both backends.
    """
    from .study import heartbeat_journal, quiet_optuna

    quiet_optuna()
    if not isinstance(storage, (str, type(None))):
        return storage
    path = journal_path(storage, work_dir)
    if path is not None:
        return heartbeat_journal(path, heartbeat_interval, grace_period, max_retry)
    url = "postgresql://" + storage[len("postgres://"):] if storage.startswith("postgres://") else storage
    return _open_rdb(url, _rdb_kwargs(url, heartbeat_interval, grace_period, max_retry), attempts)
