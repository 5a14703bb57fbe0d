"""Storage strings (the one ``env:`` resolver) and the journal storage's heartbeat through Optuna's public calls."""

from __future__ import annotations

import os
import socket
import time

import optuna
import pytest
from optuna.trial import TrialState

from workflow import steps
from workflow.search import open_storage, resolve_storage
from workflow.search.cli import main
from workflow.search.storage import absolute, describe_storage, journal_path
from workflow.search.study import HEARTBEAT_ATTR, OWNER_ATTR, claim, fail_stale


def test_env_storage_resolves_from_the_named_variable(monkeypatch) -> None:
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv("MY_DB", "postgresql://u:pw@h/db")
    assert resolve_storage("env:MY_DB") == "postgresql://u:pw@h/db"
    assert resolve_storage(None) is None
    assert resolve_storage("envfile.log") == "envfile.log"  # a journal path that merely starts with "env"
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://x@h/o")
    assert resolve_storage("") == "postgresql://x@h/o"
    assert resolve_storage("", env_default=False) is None
    with pytest.raises(RuntimeError, match=r"\$NOPE is not set"):
        resolve_storage("env:NOPE")


def test_steps_resolve_storage_is_the_search_one(monkeypatch) -> None:
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://a@h/o")
    monkeypatch.delenv("NOPE", raising=False)
    assert steps.resolve_storage("env") == resolve_storage("env") == "postgresql://a@h/o"
    with pytest.raises(RuntimeError, match=r"\$NOPE"):
        steps.resolve_storage("env:NOPE")


def test_cli_names_the_unset_storage_variable(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(SystemExit, match=r"--storage: .*\$NOPE is not set"):
        main(["worker", "--storage", "env:NOPE", "--study-name", "s", "--prepared-dir", str(tmp_path),
              "--work-dir", str(tmp_path)])


def test_journal_paths_and_masked_urls(tmp_path) -> None:
    assert journal_path(None, tmp_path) == tmp_path / "optuna_journal.log"
    assert journal_path("journal:/x/j.log", None).as_posix() == "/x/j.log"
    assert journal_path("postgresql://u:pw@h/db", None) is None
    assert absolute(None, tmp_path) == f"journal:{(tmp_path / 'optuna_journal.log').resolve()}"
    assert describe_storage("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def test_journal_trials_beat_while_they_run(tmp_path) -> None:
    storage = open_storage(None, tmp_path, heartbeat_interval=1)
    study = optuna.create_study(storage=storage, study_name="beat")
    seen = {}

    def objective(trial: optuna.Trial) -> float:
        claim(trial)
        time.sleep(1.3)  # long enough for a second beat
        seen.update(study.trials[trial.number].system_attrs, owner=study.trials[trial.number].user_attrs[OWNER_ATTR])
        return 0.0

    before = time.time()
    study.optimize(objective, n_trials=1)
    assert seen["owner"] == [socket.gethostname(), os.getpid(), 0]
    assert before + 0.9 < seen[HEARTBEAT_ATTR] <= time.time()  # the second beat, about 1 s after the first


def test_journal_trial_without_a_beat_is_failed_after_the_grace_period_and_retried(tmp_path) -> None:
    planted = open_storage(None, tmp_path, heartbeat_interval=None)
    study = optuna.create_study(storage=planted, study_name="stale")
    trial = study.ask()  # RUNNING, owned by a worker on another host: only its heartbeat can tell
    trial.suggest_int("x", 1, 9)
    trial.set_user_attr(OWNER_ATTR, ["elsewhere", 1, trial.number])
    reaper = optuna.load_study(study_name="stale", storage=open_storage(None, tmp_path, heartbeat_interval=1,
                                                                       grace_period=1, max_retry=1))
    fail_stale(reaper)
    assert reaper.trials[0].state == TrialState.RUNNING  # still within the grace period
    time.sleep(1.2)
    fail_stale(reaper)
    states = [t.state for t in reaper.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert reaper.trials[1].params == reaper.trials[0].params
    assert reaper.trials[1].system_attrs["failed_trial"] == 0


def test_rdb_heartbeat_outlives_a_failed_beat(tmp_path, monkeypatch) -> None:
    """Optuna's heartbeat thread ends at a beat's first exception; one beat lost to a database restart used to
    leave the trial without beats, so another worker failed it while it still trained."""
    import sqlalchemy.exc

    beats = []
    original = optuna.storages.RDBStorage.record_heartbeat

    def flaky(self, trial_id: int) -> None:
        beats.append(time.time())
        if len(beats) == 2:  # the database is restarting
            raise sqlalchemy.exc.OperationalError("INSERT INTO trial_heartbeats", {}, Exception("connection refused"))
        original(self, trial_id)

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", flaky)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=1, grace_period=2), study_name="rdb")
    reaper = optuna.load_study(study_name="rdb", storage=open_storage(url, heartbeat_interval=1, grace_period=2))

    def objective(trial: optuna.Trial) -> float:
        time.sleep(3.5)  # past the grace period after the lost beat
        fail_stale(reaper)
        return 1.0

    study.optimize(objective, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert len(beats) >= 4  # the thread went on beating after the failed one


def test_a_worker_whose_trial_was_failed_meanwhile_goes_on(tmp_path) -> None:
    """Another worker failed this worker's trial as stale: the result cannot be stored (Optuna raises), the
    queued retry runs it again, and this worker carries on with the next trial."""
    import subprocess
    import sys

    from workflow.search.workers import reaped_while_running, run_one_trial

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = optuna.create_study(storage=open_storage(None, tmp_path, heartbeat_interval=1), study_name="reaped")
    reaper = optuna.load_study(study_name="reaped", storage=open_storage(None, tmp_path, heartbeat_interval=1))

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("x", 1, 9)
        trial.set_user_attr(OWNER_ATTR, [socket.gethostname(), int(gone.stdout), trial.number])  # a dead owner
        fail_stale(reaper)
        return 1.0

    run_one_trial(study, objective, [])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params
    assert not reaped_while_running(ValueError("unrelated")) and not reaped_while_running(AssertionError())
