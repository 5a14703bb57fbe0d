"""The whole graph on KFP's local runner with the train step on 2 torchrun processes (gloo), one model."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.local import run_local


@pytest.mark.slow
def test_local_pipeline_with_two_training_processes(tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = load_config({
        "name": "ddp", "dataset": {"name": "synthetic-funnel", "options": {"n_rows": 3000, "n_users": 200, "n_items": 60}},
        "models": ["mmoe"], "search": {"n_trials": 1, "n_epoch": 1},
        "train": {"n_epoch": 1, "nproc_per_node": 2, "device": "cpu",
                  "params": {"mmoe": {"embed_dim": 4, "tower_dims": [8]}}},
        "tracking": {"experiment": "ddp-local"},
    })
    run = run_local(config, run_name="ddp-run", runs_root=tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{run.work_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ddp-local")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (model_run,) = [r for r in runs if r.data.tags.get("mtlp.role") == "model"]
    assert model_run.info.status == "FINISHED"
    assert "test/score" in model_run.data.metrics
    # rank 0 alone logged the epochs: one value for the one epoch
    assert [m.step for m in client.get_metric_history(model_run.info.run_id, "train/loss")] == [0]
    assert model_run.data.metrics["onnx/parity_max_abs_diff"] <= 1e-5
    assert len(client.search_model_versions(f"name='{config.registered_model}'")) == 1
