"""``mtlp run`` stopped by SIGTERM (to the CLI alone, as a supervisor does) or Ctrl-C (SIGINT to the whole
terminal group) during the search: it exits at once with one line, stops every task, and leaves no MLflow run
RUNNING (issue 19, point 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from _rel import PY, TINY_FUNNEL, env, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CONFIG = {"name": "stop", "dataset": {"name": "synthetic-funnel", "options": dict(TINY_FUNNEL)},
          "models": ["shared_bottom"], "search": {"n_trials": 50, "n_epoch": 2},
          "train": {"n_epoch": 1, "device": "cpu"}, "tracking": {"experiment": "stop-local"}}


def _searching(work: Path) -> bool:
    logs = list((work / "logs").glob("*-search_model-*.log"))
    return bool(logs) and "[search shared_bottom] trial 0" in logs[0].read_text()


@pytest.mark.parametrize("how", ["SIGTERM to the CLI", "Ctrl-C to the group"])
def test_an_interrupted_run_stops_its_tasks_and_ends_its_runs_failed(how, tmp_path) -> None:
    from mlflow import MlflowClient

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    work = tmp_path / "runs" / "r1"
    with open(tmp_path / "out.log", "wb") as out, open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen([PY, "-m", "pipeline.cli", "run", "--config", str(config), "--run-name", "r1",
                                 "--runs-root", "runs"], cwd=tmp_path, env=env(), stdout=out, stderr=err,
                                start_new_session=True)
    try:
        wait_for(lambda: _searching(work), 300, "the search's first trial", proc, tmp_path / "out.log", interval=0.2)
        if how.startswith("SIGTERM"):
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = (tmp_path / "err.log").read_text().splitlines()
    signame = "SIGTERM" if how.startswith("SIGTERM") else "SIGINT"
    assert code == (143 if signame == "SIGTERM" else 130), lines
    assert len(lines) == 1 and lines[0].startswith(f"mtlp run: interrupted ({signame})"), lines
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the worker and its task are gone with the CLI
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the run outlived it")
    store = f"sqlite:///{work.parent / 'mlflow.db'}"  # the runs root's shared store
    client = MlflowClient(store, store)
    runs = client.search_runs([client.get_experiment_by_name("stop-local").experiment_id])
    status = {r.data.tags["mtlp.role"]: r.info.status for r in runs if r.data.tags["mtlp.role"] != "trial"}
    assert status == {"pipeline": "FAILED", "model": "FAILED"}
    assert all(r.info.status != "RUNNING" for r in runs) and len(runs) >= 3  # the trial that ran ended too
    assert not (work / "tmp").exists()
