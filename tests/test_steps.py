"""The pipeline's step functions (workflow.steps) without KFP: run layout, idempotency, storage, reports."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from workflow import steps


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
    # named after the pipeline run too: runs of several pipeline runs in one store stay apart in the UI
    assert [client.get_run(r).info.run_name for r in (mmoe, ple)] == ["nightly/mmoe", "nightly/ple"]
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


def test_report_and_summary(work_dir, tmp_path) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    metrics = {"model_name": "mmoe", "best_epoch": 3, "test_score": 0.8,
               "test_metrics": {"click": {"auc": 0.75, "logloss": 0.5}, "conversion": {"auc": 0.85, "logloss": 0.1}}}
    (trained / "metrics.json").write_text(json.dumps(metrics))
    flat = steps.report_step(trained, tmp_path / "r.html", tmp_path / "r.md")
    assert flat == {"click/auc": 0.75, "click/logloss": 0.5, "conversion/auc": 0.85, "conversion/logloss": 0.1,
                    "test_score": 0.8}
    assert "0.8500" in (tmp_path / "r.html").read_text() and "| click/auc | 0.7500 |" in (tmp_path / "r.md").read_text()

    parent = steps.start_pipeline_run({"tracking": {"experiment": "exp-b"}}, work_dir, "r1")
    text = steps.summary_step(parent, {"mmoe": flat, "esmm": {**flat, "test_score": 0.9}},
                              {"current_champion": "2", "candidate_version": "2", "decision": "promoted"},
                              "m", work_dir, tmp_path / "summary.md")
    rows = [line for line in text.splitlines() if line.startswith("| mmoe") or line.startswith("| esmm")]
    assert rows[0].startswith("| esmm | 0.9000") and rows[1].startswith("| mmoe | 0.8000")  # best first
    assert "Champion of `m`: version (v2) is now champion" in text  # no such version registered: no architecture
    assert f"MLflow store: `sqlite:///{work_dir.resolve() / 'mlflow.db'}`" in text
    assert "ceiling" not in text  # the spec attached to this parent run has none
    assert (work_dir / "summary.md").read_text() == text
    client = client_for(work_dir)
    assert client.get_run(parent).info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(parent, "comparison")}
    assert logged == {"comparison/model_comparison.png", "comparison/comparison.json"}


def test_the_decision_in_plain_words() -> None:
    names = {"3": "mmoe", "5": "ple"}
    base = {"metric": "test_score", "margin": 0.002, "candidate_version": "5"}
    assert steps.describe_decision({**base, "decision": "no_champion", "champion_version": None,
                                    "candidate_score": 0.67}, names) == "ple (v5) is now champion: there was none"
    assert steps.describe_decision({**base, "decision": "rejected", "champion_version": "3", "candidate_score": 0.671,
                                    "champion_score": 0.675}, names) == \
        "kept mmoe (v3): ple (v5) scored test_score 0.6710 < 0.6750 + margin 0.002"
    assert steps.describe_decision({**base, "decision": "promoted", "champion_version": "3", "candidate_score": 0.69,
                                    "champion_score": 0.675}, names) == \
        "ple (v5) is now champion: test_score 0.6900 >= mmoe (v3)'s 0.6750 + margin 0.002"
    assert steps.describe_decision({**base, "decision": "rejected", "champion_version": "5", "candidate_score": 0.69,
                                    "champion_score": 0.69}, names).startswith("kept ple (v5): the run's best")
    assert steps.describe_decision({**base, "metric": "val_score", "decision": "unscored", "champion_version": None},
                                   names) == "no champion: ple (v5) has no val_score (a validation metric is undefined, e.g. one class only)"


def test_summary_shows_the_ceiling_row_when_the_spec_has_one(work_dir, tmp_path) -> None:
    """The prepare step of synthetic data writes the ceiling into feature_spec.json; the summary reads it from the
    spec attached to the parent run and prints it beside the models."""
    from workflow import tracking

    results = {"mmoe": {"click/auc": 0.61, "conversion/auc": 0.7, "test_score": 0.655},
               "ple": {"click/auc": 0.63, "conversion/auc": 0.72, "test_score": 0.675}}
    ceiling = {"split": "test", "source": "the generator's true click and conversion probabilities",
               "metrics": {"click": {"auc": 0.6812}, "conversion": {"auc": 0.7433}}}
    parent = steps.start_pipeline_run({"tracking": {"experiment": "exp-c"}}, work_dir, "r2")
    spec = tmp_path / "feature_spec.json"
    spec.write_text(json.dumps({"dataset": "synthetic-funnel", "ceiling": ceiling}))
    client = client_for(work_dir)
    tracking.log_artifact_files(client, parent, [spec], "data")
    decision = {"decision": "no_champion", "candidate_version": "1", "champion_version": None, "current_champion": "1"}
    text = steps.summary_step(parent, results, decision, "m", work_dir, tmp_path / "summary.md")
    lines = text.splitlines()
    assert lines[0] == "| model | test_score | click/auc | conversion/auc |"
    assert lines[2].startswith("| ple | 0.6750") and lines[3].startswith("| mmoe | 0.6550")
    assert lines[4] == "| true probabilities (ceiling) |  | 0.6812 | 0.7433 |"
    assert "the generator's true click and conversion probabilities, on the same test rows" in text
    assert text.count("true probabilities (ceiling)") == 1


@pytest.mark.slow  # a real train step with MLflow logging: 39 s on the shared, loaded 2-core machine
def test_train_step_leaves_plots_and_val_score_for_the_report(work_dir, tmp_path) -> None:
    from workflow.data.prepare import prepare

    prepared = tmp_path / "prepared"
    prepare("synthetic-funnel", prepared, seed=3, options={"n_rows": 6000, "n_users": 300, "n_items": 100})
    steps.start_pipeline_run({"tracking": {"experiment": "exp-c"}}, work_dir, "r2")
    run_id = steps.start_model_run("r2", "exp-c", "shared_bottom", work_dir)
    params = {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [4], "batch_size": 512}
    result = steps.train_step(prepared, "shared_bottom", tmp_path / "trained", run_id, work_dir, fixed_params=params,
                              n_epoch=2, patience=1, seed=1)
    saved = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert saved["val_score"] == pytest.approx(result.val_score) and 0.0 < result.val_score < 1.0
    plots = sorted(p.name for p in (tmp_path / "trained" / "plots").glob("*.png"))
    assert plots == ["roc_click.png", "roc_conversion.png", "training_curves.png"]
    steps.report_step(tmp_path / "trained", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and 'alt="roc_click"' in page
    logged = {a.path for a in client_for(work_dir).list_artifacts(run_id, "plots")}
    assert "plots/training_curves.png" in logged
