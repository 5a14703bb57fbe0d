"""Retrying MLflow calls: a store that blips (a server restart, a locked SQLite file) must not fail a step.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

__all__ = ["retry_call"]

log = logging.getLogger("workflow.tracking")


def retry_call(fn: Callable[..., Any], *args: Any, attempts: int = 4, backoff: float = 0.5, max_backoff: float = 8.0,
               sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried on any exception with exponential backoff; the last error propagates."""
    delay = backoff
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt >= attempts:
                raise
            log.debug("MLflow call %s failed (attempt %d/%d): %s", getattr(fn, "__name__", fn), attempt, attempts, e)
            sleep(min(delay, max_backoff))
            delay *= 2

