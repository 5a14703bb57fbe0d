"""``mtlp ui``: the MLflow UI on a run's store, as the end of ``mtlp run`` prints it (issue 19, point 5)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_ui_without_a_run_says_how_to_name_one(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2
    assert capsys.readouterr().err.strip() == ("mtlp ui: error: no run with an MLflow store under mtlp-runs: name "
                                               "a run folder, e.g. mtlp ui mtlp-runs/<run>")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ui_serves_the_newest_runs_store(tmp_path) -> None:
    from mlflow import MlflowClient

    store = tmp_path / "mtlp-runs" / "run-1" / "mlflow.db"
    store.parent.mkdir(parents=True)
    MlflowClient(f"sqlite:///{store}").create_experiment("seen-in-the-ui")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == (f"MLflow UI for mtlp-runs/run-1 at http://127.0.0.1:{port} "
                                                  "(Ctrl-C stops it)")
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=seen-in-the-ui"
        deadline, body = time.monotonic() + 120, ""
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert '"name": "seen-in-the-ui"' in body or '"name":"seen-in-the-ui"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
