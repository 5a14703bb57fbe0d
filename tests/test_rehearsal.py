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


@pytest.mark.timeout(1800)  # the suite's 900 s per test is for tests that start no containers
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


def test_a_failing_step_in_a_container_gives_the_one_line_error(tmp_path) -> None:
    why = _missing()
    if why:
        pytest.skip(why)
    import yaml
    config = yaml.safe_load((REPO / "configs" / "rehearsal.yaml").read_text())
    config["dataset"]["options"]["ctr"] = 1.5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(conf)), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "pipeline.rehearsal", "--config", str(tmp_path / "bad.yaml"),
                          "--runs-root", str(tmp_path / "runs"), "--run-name", "bad"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("mtlp run: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "mtlp run: error: prepare_data: synthetic-funnel: ctr must be in (0, 1), got 1.5 (task log: "), errors
    assert "the failed run's MLflow runs: {'FAILED': 1}" in out.stdout  # the parent run, ended by mtlp run
