"""Processes and HTTP for the tests that start servers (MLflow, the model server): a free loopback port, a server
in its own process group stopped on exit, waiting for it to answer, a POST that returns errors as values."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Optional

from pipeline import loopback
from pipeline.loopback import free_port, wait_http  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[1]


def background(cmd: list[str], log_path: Path, env: Optional[dict] = None):
    """``pipeline.loopback.background`` run from the repository root."""
    return loopback.background(cmd, log_path, env, cwd=REPO)


def post(url: str, body: bytes, content_type: str = "application/json", timeout: float = 120) -> tuple[int, bytes]:
    """POST ``body``; ``(status, response body)`` for 2xx and HTTP errors alike."""
    import urllib.error

    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def mlflow_bin() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
