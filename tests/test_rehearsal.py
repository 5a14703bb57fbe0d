"""The rehearsal (``make rehearsal``): every task of the graph in the project image under podman, against
``mlflow server`` and the study on a loopback PostgreSQL, two search workers per study. Slow; skipped, with the
reason, where podman, the image (``make image``) or PostgreSQL is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _missing() -> str:
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install -y podman runc)"
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"PostgreSQL's {tool} is not on PATH"
    from pipeline.image import default_image
    image = default_image()
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        return f"the project image {image} is not built (make image)"
    return ""


def test_the_rehearsal_runs_every_task_in_a_container(tmp_path) -> None:
    why = _missing()
    if why:
        pytest.skip(why)
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(conf)),
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "pipeline.rehearsal", "--runs-root", str(tmp_path / "runs")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "every MLflow run FINISHED, one child run per trial, champion alias set" in text
    containers = int(re.search(r"(\d+) containers of \S+ ran the tasks", text).group(1))
    # start, prepare, promote, summary + per model (2): model run, 2 search workers, search, train, report,
    # export, register
    assert containers == 4 + 2 * 8, text[-3000:]
    assert "| shared_bottom |" in text and "| mmoe |" in text
