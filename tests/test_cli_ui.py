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


def _execv_of(monkeypatch, args, capsys) -> tuple[list[str], str]:
    """(the mlflow ui command ``mtlp ui`` would become, the line it printed) without starting it."""
    import os

    seen: list = []

    def fake_execv(path, argv):
        seen.append(list(argv))

    monkeypatch.setattr(os, "execv", fake_execv)
    assert main(["ui", *args]) == 0
    return (seen[0] if seen else []), capsys.readouterr().out.strip()


def _store(db: Path, experiment: str) -> str:
    import contextlib
    import sqlite3

    from mlflow import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    exp_id = MlflowClient(f"sqlite:///{db}").create_experiment(experiment)
    with contextlib.closing(sqlite3.connect(db)) as conn:  # MLflow's engine leaves the file in a consistent state
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    return exp_id


@pytest.mark.slow
def test_ui_finds_the_store_each_run_logged_to_and_prints_the_runs_url(tmp_path, monkeypatch, capsys) -> None:
    """No argument: the runs root's shared store, on the newest run's experiment; a run folder: the store its
    tracking.json names (the shared one, another SQLite file set as tracking.uri, a server), else its own
    mlflow.db (a run from before). The URL printed opens the experiment's runs in the model-training layout."""
    from workflow.tracking.local_store import record_store

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "mtlp-runs"
    shared_id = _store(root / "mlflow.db", "shared-exp")
    (root / "run-1").mkdir()
    record_store(root / "run-1", f"sqlite:///{(root / 'mlflow.db').resolve()}", "shared-exp")
    runs_url = (f"http://127.0.0.1:5000/#/experiments/{shared_id}/runs?workflowType=machine_learning"
                "&viewStateShareKey=mtlp")
    for args in ([], ["mtlp-runs/run-1"], ["run-1"]):
        command, line = _execv_of(monkeypatch, args, capsys)
        assert line == f"MLflow UI for mtlp-runs/mlflow.db at {runs_url} (Ctrl-C stops it)"
        assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{(root / 'mlflow.db').resolve()}"
    other = tmp_path / "elsewhere" / "mlflow.db"  # tracking.uri set to another store
    other_id = _store(other, "mine")
    (root / "run-2").mkdir()
    record_store(root / "run-2", f"sqlite:///{other}", "mine")
    command, line = _execv_of(monkeypatch, ["mtlp-runs/run-2"], capsys)
    assert line.startswith(f"MLflow UI for elsewhere/mlflow.db at http://127.0.0.1:5000/#/experiments/{other_id}/runs")
    (root / "run-3").mkdir()
    record_store(root / "run-3", "https://mlflow.example.com", "team")
    command, line = _execv_of(monkeypatch, ["mtlp-runs/run-3"], capsys)
    assert command == [] and line.startswith("mtlp-runs/run-3 logged to the tracking server https://mlflow.example.com")
    old_id = _store(root / "run-0" / "mlflow.db", "old")  # a run folder from before: its own store, no record
    command, line = _execv_of(monkeypatch, ["mtlp-runs/run-0"], capsys)
    assert line.startswith(f"MLflow UI for mtlp-runs/run-0/mlflow.db at http://127.0.0.1:5000/#/experiments/{old_id}/")
    assert main(["ui", "mtlp-runs/nothing"]) == 2
    assert "no run folder mtlp-runs/nothing" in capsys.readouterr().err


@pytest.mark.slow
def test_ui_serves_the_newest_runs_store(tmp_path) -> None:
    from mlflow import MlflowClient

    store = tmp_path / "mtlp-runs" / "run-1" / "mlflow.db"
    store.parent.mkdir(parents=True)
    exp_id = MlflowClient(f"sqlite:///{store}").create_experiment("seen-in-the-ui")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == (
            f"MLflow UI for mtlp-runs/run-1/mlflow.db at http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?"
            "workflowType=machine_learning&viewStateShareKey=mtlp (Ctrl-C stops it)")
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
        proc.wait(timeout=120)  # the server and its workers stop slowly on a loaded machine
