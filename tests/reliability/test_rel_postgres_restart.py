"""Group 3: PostgreSQL restarted while 3 search workers share one study: the workers reconnect or exit with a
clear error, and re-running the study reaches exactly the requested total (no trial lost or counted twice)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from _rel import PY, REPO, env, prepare_funnel, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

SPACE = {"common": {"embed_dim": [4], "tower_dims": {"depth": 1, "widths": [8]}, "batch_size": 64,
                    "weighting": ["equal"]}, "shared_bottom": {"bottom_dims": {"depth": 1, "widths": [8, 16]}}}
TOTAL = 6


def _worker(url: str, prepared: Path, work: Path) -> list[str]:
    return [PY, "-m", "workflow.search", "run", "--model", "shared_bottom", "--prepared-dir", str(prepared),
            "--work-dir", str(work), "--storage", url, "--study-name", "pgr", "--n-trials", str(TOTAL),
            "--n-epoch", "3", "--pruner", "none", "--space", json.dumps(SPACE), "--device", "cpu", "--threads", "1",
            "--heartbeat-interval", "1", "--grace-period", "4", "--quiet"]


def test_postgres_restart_during_three_workers(postgres, tmp_path) -> None:
    from workflow.search import search

    prepared = prepare_funnel(tmp_path / "prepared")
    url = postgres.create_database(f"rel_{uuid.uuid4().hex[:8]}")
    storage = optuna.storages.RDBStorage(url)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "wb") as f:
            procs.append(subprocess.Popen(_worker(url, prepared, tmp_path / f"w{i}"), cwd=REPO, env=env(), stdout=f,
                                          stderr=subprocess.STDOUT))
    try:
        def one_done():
            try:
                study = optuna.load_study(study_name="pgr", storage=storage)
            except KeyError:
                return False
            return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        wait_for(one_done, 300, "a first complete trial", interval=0.5)
        postgres.restart()  # the workers' connections drop mid-study
        exits = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    for code, text in zip(exits, texts):
        # each worker either finished its share after reconnecting, or failed with a message (no silent hang)
        assert code == 0 or (code == 3 and "lost the connection to the study database" in text), text[-2000:]

    time.sleep(1)
    result = search(prepared, "shared_bottom", tmp_path / "final", n_trials=TOTAL, n_epoch=3, storage=url,
                    study_name="pgr", pruner="none", search_space=SPACE, device="cpu", threads=1,
                    heartbeat_interval=1, grace_period=4, progress=False, plots=False)
    study = optuna.load_study(study_name="pgr", storage=optuna.storages.RDBStorage(url))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == TOTAL and result.n_complete + result.n_pruned == TOTAL and result.n_running == 0
    assert all(t.value is not None for t in finished if t.state == TrialState.COMPLETE)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert not ({t.number for t in failed} & {t.number for t in finished})
    print(f"exit codes {exits}; trials {len(trials)}: {len(finished)} finished, {len(failed)} failed")


def test_lost_database_error_is_found_behind_optunas_masking_error() -> None:
    """Regression: a worker whose PostgreSQL restarted died with Optuna's 'UnboundLocalError: updated_state'
    traceback; the CLI now finds the database error behind it and says what happened (exit 3)."""
    import sqlalchemy.exc

    from workflow.search.cli import storage_failure as _storage_failure

    try:
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("server closed the connection"))
        except sqlalchemy.exc.OperationalError:
            raise UnboundLocalError("cannot access local variable 'updated_state'")
    except UnboundLocalError as masked:
        assert isinstance(_storage_failure(masked), sqlalchemy.exc.OperationalError)
    assert _storage_failure(ValueError("unrelated")) is None
