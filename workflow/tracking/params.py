"""Params and tags in MLflow's sizes: nested configs flattened to ``a.b.c`` keys, values truncated to MLflow's
limits, batches of 100; and the git commit a run came from.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from .retry import retry_call

__all__ = ["MAX_PARAM_VALUE", "MAX_TAG_VALUE", "flatten_params", "log_params", "set_tags", "git_commit"]


MAX_PARAM_VALUE = 6000   # MLflow's param value limit
MAX_TAG_VALUE = 8000     # MLflow's run tag value limit
BATCH = 100              # params/tags per log_batch call


def _param_value(value: Any) -> str:
    text = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
    return text[:MAX_PARAM_VALUE]


def flatten_params(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Nested dicts -> ``a.b.c`` keys; lists -> JSON (``[128, 64]``); values as MLflow-sized strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name, sep))
        else:
            out[name] = _param_value(value)
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Flattened params in batches of 100 (MLflow's limit), each batch retried."""
    from mlflow.entities import Param

    flat = flatten_params(params)
    items = [Param(k, v) for k, v in sorted(flat.items())]
    for chunk in _chunks(items, BATCH):
        retry_call(client.log_batch, run_id, params=list(chunk))


def set_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
    for chunk in _chunks(items, BATCH):
        retry_call(client.log_batch, run_id, tags=list(chunk))


def git_commit(repo_dir: str | os.PathLike | None = None) -> Optional[str]:
    """HEAD's commit (with ``-dirty`` when the tree has changes), or None outside a git checkout."""
    cwd = str(repo_dir or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        commit = head.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None

