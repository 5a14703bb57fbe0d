"""Helpers shared by the reliability suite: subprocess environment, tiny prepared data, polling."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TINY_FUNNEL = {"n_rows": 3000, "n_users": 200, "n_items": 60}


def env(**extra: str) -> dict[str, str]:
    """A child's environment: the repo importable, one thread (deterministic on CPU, light on a shared box)."""
    out = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONUNBUFFERED": "1"}
    out.update(extra)
    return out


def wait_for(predicate: Callable[[], object], timeout: float, what: str, proc=None, log: Path | None = None,
             interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def prepare_funnel(out: Path, seed: int = 5) -> Path:
    from workflow.data.prepare import prepare
    prepare("synthetic-funnel", out, seed=seed, options=dict(TINY_FUNNEL))
    return out
