"""Many workers on one study in a real PostgreSQL: the total is global, numbers are unique, and a worker killed
mid-trial (SIGKILL) neither counts as complete nor stops a restarted study from reaching its total."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from _data_helpers import prepare_small_funnel
from workflow.search import search, study_counts

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPACE = {"common": {"embed_dim": [4, 8], "tower_dims": {"depth": 1, "widths": [8, 16]}, "batch_size": 256,
                    "weighting": ["equal", "uwl"]},
         "shared_bottom": {"bottom_dims": {"depth": [1, 2], "widths": [16, 32]}}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_small_funnel(tmp_path_factory.mktemp("search-par-data") / "prepared", seed=5)


def _load(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url)


def test_three_workers_on_one_postgres_study_finish_exactly_the_total(postgres, prepared, tmp_path) -> None:
    url = postgres.create_database(f"search_{uuid.uuid4().hex[:8]}")
    result = search(prepared, "shared_bottom", tmp_path, n_trials=6, n_epoch=1, storage=url, study_name="par",
                    pruner="none", search_space=SPACE, n_workers=3, threads=1, device="cpu", heartbeat_interval=2,
                    progress=False, plots=False)
    assert result.n_complete == 6 and result.n_failed == 0 and result.n_running == 0
    assert "mtlp-test-password" not in result.storage  # masked in what is shown and logged

    study = _load(url, "par")
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    # any extra trial is a surplus one (two workers racing for the last slot), failed at once and marked
    assert all(t.user_attrs.get("mtlp:surplus") for t in trials if t.state == TrialState.FAIL)
    pids = Counter(t.user_attrs["mtlp:owner"][1] for t in finished)
    assert len(pids) >= 2, f"trials were not shared between workers: {pids}"
    assert os.getpid() not in pids  # run by the worker processes, not by this one


# The killed worker's trials must last long enough to be caught mid-trial by a poller that reads PostgreSQL every
# 0.2 s: 4 epochs of 2,500 rows once took seconds, but a faster training step finished all three trials first.
WORKER_EPOCHS = 200


def _worker_cli(url: str, name: str, prepared: Path, work: Path, n_trials: int) -> list[str]:
    space = json.dumps(SPACE)
    return [sys.executable, "-m", "workflow.search", "run", "--model", "shared_bottom", "--prepared-dir",
            str(prepared), "--work-dir", str(work), "--storage", url, "--study-name", name, "--n-trials", str(n_trials),
            "--n-epoch", str(WORKER_EPOCHS), "--patience", str(WORKER_EPOCHS), "--pruner", "none", "--space", space,
            "--device", "cpu", "--threads", "1",
            "--heartbeat-interval", "1", "--grace-period", "4", "--quiet"]


def test_killed_worker_trial_is_failed_and_restart_reaches_the_total(postgres, prepared, tmp_path) -> None:
    url = postgres.create_database(f"search_{uuid.uuid4().hex[:8]}")
    name, total = "kill", 3
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    storage = optuna.storages.RDBStorage(url)  # tables made before the worker starts; one pool for polling
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(_worker_cli(url, name, prepared, tmp_path, total), cwd=REPO, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    victim = None
    deadline = time.monotonic() + 300
    try:
        while victim is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited early:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue  # not created yet
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # mid-trial: at least one epoch reported and more to come (no pruning, patience = epochs)
                if 1 <= len(t.intermediate_values) < WORKER_EPOCHS:
                    victim = t.number
                    break
        assert victim is not None, f"no running trial to kill:\n{log_path.read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    study = _load(url, name)
    killed = study.trials[victim]
    states = [(t.number, t.state.name, len(t.intermediate_values)) for t in study.trials]
    assert killed.state == TrialState.RUNNING, states  # the dead worker left it running
    before = study_counts(study)
    assert before.done < total

    result = search(prepared, "shared_bottom", tmp_path, n_trials=total, n_epoch=4, storage=url, study_name=name,
                    pruner="none", search_space=SPACE, device="cpu", threads=1, heartbeat_interval=1,
                    grace_period=4, progress=False, plots=False)
    study = _load(url, name)
    killed = study.trials[victim]
    states = [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in study.trials]
    assert killed.state == TrialState.FAIL, states  # never counted as complete
    assert result.n_complete + result.n_pruned == total and result.n_running == 0
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == total and victim not in {t.number for t in finished}
    # the killed trial was retried with the same params
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].params == killed.params, states
    assert retries[0].state == TrialState.COMPLETE, states
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
