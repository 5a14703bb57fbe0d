"""``mtlp runs`` (issue 29, point 2): the pipeline runs of the runs root's store side by side, each model's val and
test score and version, and which version was champion after each run (a manual promotion between runs shows)."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import quiet_mlflow, seed_store  # noqa: E402

from pipeline.cli import main  # noqa: E402
from workflow import registry, steps, tracking  # noqa: E402
from workflow.tracking import local_store  # noqa: E402

quiet_mlflow()
EXP, MODEL = "loop", "loop-model"


def _pipeline_run(root, run_name: str, scores: dict, uri: str) -> dict:
    """One pipeline run through the graph's step functions, without training: each model run gets its scores."""
    work = root / run_name
    work.mkdir()
    parent = steps.start_pipeline_run({"tracking": {"experiment": EXP}}, work, run_name, tracking_uri=uri)
    client = tracking.client_for(uri)
    versions = []
    for model, (val, test) in scores.items():
        run_id = steps.start_model_run(run_name, EXP, model, work, uri)
        client.log_metric(run_id, "val/score", val)
        client.log_metric(run_id, "test/score", test)
        versions.append(str(registry.register_candidate(
            client, MODEL, f"runs:/{run_id}/model", run_id=run_id, architecture=model,
            test_metrics={"click": {"auc": test}}, test_score=test, val_score=val, pipeline_run_id=run_name,
            eval_data_id="same").version))
        tracking.end_run(client, run_id, "FINISHED")
    decision = steps.promote_step(versions, MODEL, work, tracking_uri=uri)
    tracking.end_run(client, parent, "FINISHED")
    return decision


def test_runs_lists_each_runs_models_and_the_champion_after_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "mtlp-runs"
    seed_store(root)
    uri = local_store.run_store_uri("mtlp-runs")
    _pipeline_run(root, "run-1", {"mmoe": (0.6700, 0.7010), "ple": (0.6740, 0.6990)}, uri)
    _pipeline_run(root, "run-2", {"mmoe": (0.6720, 0.7050), "aitm": (0.6730, 0.7000)}, uri)  # kept: ple v2 better
    _pipeline_run(root, "run-3", {"esmm": (0.6800, 0.7100)}, uri)  # promoted: esmm v5
    registry.rollback(tracking.client_for(uri), MODEL, reason="incident", user="ops")  # back to ple v2
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip() == f"store {uri}"  # (an earlier test's unfinished progress line may leave spaces before it)
    assert lines[1].split() == ["pipeline", "run", "started", "(UTC)", "status", "model", "version", "val_score",
                                "test_score"]
    body = [line.split() for line in lines[2:]]
    assert ["experiment", EXP, "(registered", "model", f"{MODEL})"] in body
    i1 = next(i for i, w in enumerate(body) if w[:1] == ["run-1"])
    assert body[i1][3:] == ["FINISHED", "ple", "v2*", "0.6740", "0.6990"]  # best val_score first, champion marked
    assert body[i1 + 1] == ["mmoe", "v1", "0.6700", "0.7010"]
    assert body[i1 + 2] == ["champion", "after", "this", "run:", "ple", "(v2)", "(from", "this", "run)"]
    i2 = next(i for i, w in enumerate(body) if w[:1] == ["run-2"])
    assert body[i2][3:] == ["FINISHED", "aitm", "v4", "0.6730", "0.7000"]
    assert body[i2 + 2] == ["champion", "after", "this", "run:", "ple", "(v2)", "(from", "another", "run)"]
    i3 = next(i for i, w in enumerate(body) if w[:1] == ["run-3"])
    assert body[i3][3:] == ["FINISHED", "esmm", "v5*", "0.6800", "0.7100"]
    assert f"champion of {MODEL} now: v2" in lines  # the rollback after run 3


def test_runs_without_a_store_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert capsys.readouterr().err.startswith("mtlp runs: error: no MLflow store found (no mtlp-runs/mlflow.db")
    assert list(tmp_path.iterdir()) == []


def test_runs_lists_a_run_that_registered_nothing_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    seed_store(tmp_path / "mtlp-runs")
    (tmp_path / "mtlp-runs" / "first").mkdir()
    steps.start_pipeline_run({"tracking": {"experiment": EXP}}, tmp_path / "mtlp-runs" / "first", "first",
                             tracking_uri=local_store.run_store_uri("mtlp-runs"))
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[4].split()[:1] == ["first"] and out[4].split()[3:] == ["RUNNING", "(no", "model", "finished)", "-", "-", "-"]
    assert out[5].split() == ["champion", "after", "this", "run:", "none", "(no", "promotion", "recorded)"]
