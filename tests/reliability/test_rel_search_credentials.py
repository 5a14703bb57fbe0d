"""Group 6b: no credentials in MLflow during a search on PostgreSQL.

The pipeline's steps run as the cluster runs them (``start_pipeline_run`` -> ``start_model_run`` ->
``search_step``, in process) with MLflow on an embedded SQLite store and the Optuna study in PostgreSQL, reached
through ``OPTUNA_STORAGE`` = a URL that carries a password (a role made for the test, with a random password that
appears nowhere else). Then every byte under the work folder (the MLflow database and its -wal/-journal files,
the artifact folder, the step's outputs: search summary, plots, trial folders) and everything the step printed is
scanned for the password, raw and URL-encoded: zero hits."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("psycopg2")

from _mlflow_helpers import quiet_mlflow, seed_store  # noqa: E402
from _rel import prepare_funnel  # noqa: E402

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.slow]
quiet_mlflow()

# URL-special characters on purpose: the URL carries it percent-encoded, the driver gets it decoded
PASSWORD = f"Pw-{uuid.uuid4().hex}!#/@:%"
N_TRIALS = 2
SPACE = {"common": {"embed_dim": [4, 8], "tower_dims": {"depth": 1, "widths": [8]}, "batch_size": 512}}


def _needles() -> list[bytes]:
    return [PASSWORD.encode(), urllib.parse.quote(PASSWORD, safe="").encode(),
            urllib.parse.quote_plus(PASSWORD).encode(), PASSWORD.split("!")[0].encode()]  # the random core too


def _scan(root: Path) -> dict[str, int]:
    """``{relative path: hits}`` for every file under ``root`` holding any needle."""
    hits = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        n = sum(data.count(needle) for needle in _needles())
        if n:
            hits[str(path.relative_to(root))] = n
    return hits


@pytest.fixture()
def optuna_url(postgres) -> str:
    """A database owned by a role of its own whose password is ``PASSWORD``; the URL carries the password."""
    import psycopg2
    from psycopg2 import sql

    suffix = uuid.uuid4().hex[:8]
    role, db = f"optuna_{suffix}", f"optuna_cred_{suffix}"
    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (PASSWORD,))
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
    conn.close()
    return f"postgresql+psycopg2://{role}:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{postgres.port}/{db}"


def test_scanner_finds_a_planted_password(tmp_path) -> None:
    """The scan below can fail: a password written anywhere, raw or URL-encoded, is found."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "raw.bin").write_bytes(b"\x00prefix" + PASSWORD.encode() + b"suffix")
    (tmp_path / "encoded.txt").write_text("postgresql://u:" + urllib.parse.quote(PASSWORD, safe="") + "@h/db")
    (tmp_path / "clean.txt").write_text("postgresql://u:***@h/db")
    assert set(_scan(tmp_path)) == {"a/raw.bin", "encoded.txt"}


@pytest.mark.parametrize("workers,source", [(1, "env"), (2, "env"), (1, "config")],
                         ids=["search_step, OPTUNA_STORAGE", "two worker processes, OPTUNA_STORAGE",
                              "search_step, URL written in the config"])
def test_search_on_postgres_leaves_no_password_in_mlflow_or_outputs(optuna_url, tmp_path, monkeypatch, capfd,
                                                                    workers, source) -> None:
    """``workers=1``: the pipeline's ``search_step`` in process. ``workers=2``: the same search through
    ``workflow.search.search(n_workers=2)``, whose worker processes get the URL through their environment
    and log their trials to MLflow themselves. ``source="config"``: no ``OPTUNA_STORAGE``; the URL is written
    straight into the config's ``search.storage`` (regression: the config, logged as params, a tag and
    ``config.json`` on the pipeline run, carried the password; ``steps.start_pipeline_run`` now masks it)."""
    import optuna
    from mlflow import MlflowClient

    from workflow import steps
    from workflow.search import search

    work = seed_store(tmp_path / "work")  # embedded MLflow store: work/mlflow.db, artifacts in work/mlartifacts
    prepared = prepare_funnel(tmp_path / "prepared")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"dataset": {"name": "synthetic-funnel"}, "tracking": {"experiment": "cred-scan"},
              "search": {"n_trials": N_TRIALS, "n_epoch": 1, "storage": None, "pruner": "none", "space": SPACE}}
    if source == "env":
        monkeypatch.setenv("OPTUNA_STORAGE", optuna_url)  # as the cluster's optuna-db Secret sets it
    else:
        monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
        config["search"]["storage"] = optuna_url
    steps.start_pipeline_run(config, work, "cred-run", experiment="cred-scan")
    model_run = steps.start_model_run("cred-run", "cred-scan", "shared_bottom", work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    if workers == 1:
        best = steps.search_step(prepared, "shared_bottom", work, model_run, dict(config["search"]), seed=3,
                                 device="cpu", run_name="cred-run")
    else:
        best = search(prepared, "shared_bottom", work / "search" / "shared_bottom", n_trials=N_TRIALS, n_epoch=1,
                      storage=steps.resolve_storage(config["search"]["storage"]), study_name="cred-run-shared_bottom",
                      pruner="none", search_space=SPACE, n_workers=2, threads=1, device="cpu", parent_run_id=model_run,
                      tracking_uri=uri, heartbeat_interval=2).best_params
    out, err = capfd.readouterr()

    # the search really ran in PostgreSQL through the password-carrying URL, and logged to MLflow
    study = optuna.load_study(study_name="cred-run-shared_bottom", storage=optuna_url)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == N_TRIALS
    assert best and "embed_dim" in best
    if workers == 2:  # the trials ran in the worker processes, not here
        import os
        assert os.getpid() not in {t.user_attrs["mtlp:owner"][1] for t in study.trials}
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("cred-scan")
    trial_runs = client.search_runs([exp.experiment_id], filter_string="tags.`mtlp.role` = 'trial'")
    assert len(trial_runs) == N_TRIALS and all(r.data.params for r in trial_runs)
    summary = json.loads((work / "search" / "shared_bottom" / "search_summary.json").read_text())
    assert summary["storage"].startswith("postgresql+psycopg2://optuna_") and ":***@" in summary["storage"]
    artifacts = list((work / "mlartifacts").rglob("search_summary.json"))
    assert artifacts, "the search summary was not logged as an artifact"
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`mtlp.role` = 'pipeline'")[0]
    logged = json.loads(parent.data.tags["mtlp.config"])["search"]["storage"]
    if source == "config":  # the config was logged, with the URL's password masked
        assert logged.startswith("postgresql+psycopg2://optuna_") and ":***@127.0.0.1:" in logged
        assert parent.data.params["config.search.storage"] == logged
    else:
        assert logged is None

    hits = _scan(work)
    files = sum(1 for p in work.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    print(f"{workers} worker(s), URL from {source}: scanned {files} files, {size} bytes under the work folder; "
          f"{len(out) + len(err)} characters printed; "
          f"hits: {hits}")
    assert hits == {}, f"password found in {hits}"
    printed = (out + err).encode()
    assert not any(needle in printed for needle in _needles()), "password printed by the step"
    assert ":***@" in err  # the progress line names the storage, masked
