"""The pipeline's step functions (components.steps) without KFP: run layout, idempotency, storage, reports."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from components import steps


@pytest.fixture()
def work_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    return tmp_path / "run"


def client_for(work_dir) -> MlflowClient:
    # registry pinned too: another test in this process may have set MLflow's global registry URI
    return MlflowClient(tracking_uri=f"sqlite:///{work_dir / 'mlflow.db'}", registry_uri=f"sqlite:///{work_dir / 'mlflow.db'}")


def test_pipeline_and_model_runs_are_found_again_on_a_rerun(work_dir) -> None:
    config = {"tracking": {"experiment": "exp-a"}, "dataset": {"name": "adult"}}
    parent = steps.start_pipeline_run(config, work_dir, "nightly")
    assert steps.start_pipeline_run(config, work_dir, "nightly") == parent
    assert steps.start_pipeline_run(config, work_dir, "other") != parent

    mmoe = steps.start_model_run("nightly", "exp-a", "mmoe", work_dir)
    assert steps.start_model_run("nightly", "exp-a", "mmoe", work_dir) == mmoe
    ple = steps.start_model_run("nightly", "exp-a", "ple", work_dir)
    assert ple != mmoe
    client = client_for(work_dir)
    for run_id in (mmoe, ple):
        tags = client.get_run(run_id).data.tags
        assert tags["mlflow.parentRunId"] == parent and tags["mtlp.role"] == "model"
    with pytest.raises(RuntimeError, match="no pipeline run 'never-started'"):
        steps.start_model_run("never-started", "exp-a", "mmoe", work_dir)


def test_storage_resolution(monkeypatch) -> None:
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert steps.resolve_storage(None) is None
    assert steps.resolve_storage("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(RuntimeError, match=r"\$OPTUNA_STORAGE is not set"):
        steps.resolve_storage("env")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://secret@db/optuna")
    monkeypatch.setenv("MY_DB", "postgresql://other@db/optuna")
    assert steps.resolve_storage("") == "postgresql://secret@db/optuna"
    assert steps.resolve_storage("env") == "postgresql://secret@db/optuna"
    assert steps.resolve_storage("env:MY_DB") == "postgresql://other@db/optuna"


def test_evaluate_report_and_summary(work_dir, tmp_path) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    metrics = {"model_name": "mmoe", "best_epoch": 3, "test_score": 0.8,
               "test_metrics": {"click": {"auc": 0.75, "logloss": 0.5}, "conversion": {"auc": 0.85, "logloss": 0.1}}}
    (trained / "metrics.json").write_text(json.dumps(metrics))
    flat = steps.evaluate_step(trained, tmp_path / "r.html", tmp_path / "r.md")
    assert flat == {"click/auc": 0.75, "click/logloss": 0.5, "conversion/auc": 0.85, "conversion/logloss": 0.1,
                    "test_score": 0.8}
    assert "0.8500" in (tmp_path / "r.html").read_text() and "| click/auc | 0.7500 |" in (tmp_path / "r.md").read_text()

    parent = steps.start_pipeline_run({"tracking": {"experiment": "exp-b"}}, work_dir, "r1")
    text = steps.summary_step(parent, {"mmoe": flat, "esmm": {**flat, "test_score": 0.9}},
                              {"current_champion": "2", "candidate_version": "2", "decision": "promoted"},
                              "m", work_dir, tmp_path / "summary.md")
    rows = [line for line in text.splitlines() if line.startswith("| mmoe") or line.startswith("| esmm")]
    assert rows[0].startswith("| esmm | 0.9000") and rows[1].startswith("| mmoe | 0.8000")  # best first
    assert "version 2" in text and "mlflow ui --backend-store-uri sqlite:///" in text
    assert (work_dir / "summary.md").read_text() == text
    client = client_for(work_dir)
    assert client.get_run(parent).info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(parent, "comparison")}
    assert logged == {"comparison/model_comparison.png"}
