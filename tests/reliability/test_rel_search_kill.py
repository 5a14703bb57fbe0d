"""``mtlp run`` killed with SIGKILL (its whole process group, as a pod eviction) in the middle of a search trial,
then re-run with the same run name: the re-run exits 0, Optuna fails the dead trial and reruns it, and the MLflow
run the killed trial had opened ends FAILED instead of staying RUNNING forever (issue 36). No run of the store
is left RUNNING."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import yaml

from _rel import PY, TINY_FUNNEL, env, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

N_TRIALS = 2
CONFIG = {"name": "kill", "dataset": {"name": "synthetic-funnel", "options": dict(TINY_FUNNEL)},
          "models": ["shared_bottom"], "search": {"n_trials": N_TRIALS, "n_epoch": 4, "pruner": "none"},
          "train": {"n_epoch": 1, "device": "cpu",
                    "params": {"shared_bottom": {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [8]}}},
          "tracking": {"experiment": "kill-local"}}

_RUNNING_TRIAL = ("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                  "where t.key = 'mtlp.role' and t.value = 'trial' and r.status = 'RUNNING'")


def _store(root: Path) -> Optional[Path]:
    """The run's SQLite MLflow store, wherever the runs root keeps it."""
    found = sorted(root.rglob("mlflow.db"))
    return found[0] if found else None


def _running_trial(root: Path) -> Optional[str]:
    db = _store(root)
    if db is None:
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(_RUNNING_TRIAL).fetchone()
    except sqlite3.Error:  # the store is being created
        return None
    return row[0] if row else None


def _cmd(config: Path, root: Path) -> list[str]:
    return [PY, "-m", "pipeline.cli", "run", "--config", str(config), "--run-name", "k1", "--runs-root", str(root)]


def test_a_trial_killed_mid_search_ends_failed_on_rerun(tmp_path) -> None:
    from mlflow import MlflowClient

    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root, log1 = tmp_path / "runs", tmp_path / "first.log"
    with open(log1, "wb") as f:
        proc = subprocess.Popen(_cmd(config, root), cwd=tmp_path, env=env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        killed = wait_for(lambda: _running_trial(root), 120, "a search trial's MLflow run", proc, log1, interval=0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its warm worker and the trial's task: nothing can clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    store = f"sqlite:///{_store(root)}"
    client = MlflowClient(store, store)
    assert client.get_run(killed).info.status == "RUNNING"  # what the kill leaves behind

    second = subprocess.run(_cmd(config, root), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    run = client.get_run(killed)
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL", (run.info.status, run.data.tags)
    runs = client.search_runs([client.get_experiment_by_name("kill-local").experiment_id], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    trials = [r for r in runs if r.data.tags.get("mtlp.role") == "trial"]
    assert sum(r.info.status == "FINISHED" for r in trials) == N_TRIALS  # the killed trial was run again, once
    assert {r.data.tags["mtlp.role"]: r.info.status for r in runs if r.data.tags["mtlp.role"] != "trial"} == \
        {"pipeline": "FINISHED", "model": "FINISHED"}
