"""The whole graph on KFP's local runner with embedded defaults, checked through MlflowClient.

One run serves two acceptance checks: the graph end to end (issue 7) and the train step on 2 torchrun
processes (gloo) inside a local pipeline run (issue 11); a pipeline run is minutes of CPU, so not twice.
"""

from __future__ import annotations

import json

import pytest

from pipeline.config import load_config
from pipeline.local import run_local

MODELS = ["mmoe", "esmm"]
N_TRIALS = 2


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # two training processes on two cores
        yield mp


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, monkeypatch_module):
    config = load_config({
        "name": "ci", "dataset": {"name": "synthetic-funnel", "options": {"n_rows": 3000, "n_users": 200, "n_items": 60}},
        "models": MODELS, "search": {"n_trials": N_TRIALS, "n_epoch": 1},
        "train": {"n_epoch": 1, "nproc_per_node": 2, "device": "cpu",
                  "params": {m: {"embed_dim": 4, "tower_dims": [8]} for m in MODELS}},
        "tracking": {"experiment": "ci-local"},
    })
    return config, run_local(config, run_name="ci-run", runs_root=tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
def test_local_run_logs_registers_and_promotes(local_run) -> None:
    from components.tracking import client_for

    config, run = local_run
    # registry pinned too: an earlier test in this process may have pointed MLflow's global registry elsewhere
    client = client_for(f"sqlite:///{run.work_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ci-local")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    parents = [r for r in runs if r.data.tags.get("mtlp.role") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["mtlp.dataset"] == "synthetic-funnel"
    assert parent.info.status == "FINISHED"

    model_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                  and r.data.tags.get("mtlp.role") == "model"]
    assert sorted(r.info.run_name for r in model_runs) == sorted(MODELS)
    for model_run in model_runs:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == model_run.info.run_id]
        assert len(trials) >= N_TRIALS, f"{model_run.info.run_name}: one child run per trial"
        assert model_run.data.metrics["onnx/parity_max_abs_diff"] <= 1e-5
        # 2 training processes, but rank 0 alone logged: one value for the one epoch
        history = client.get_metric_history(model_run.info.run_id, "train/loss")
        assert [m.step for m in history] == [0]
        assert "test/score" in model_run.data.metrics
        assert model_run.info.status == "FINISHED"
        assert all(by_id[t.info.run_id].info.status in ("FINISHED", "KILLED", "FAILED") for t in trials)

    name = config.registered_model
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.tags["mtlp.architecture"] for v in versions) == sorted(MODELS)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version in {v.version for v in versions}

    onnx_files = list(run.work_dir.rglob("model.onnx"))
    assert len(onnx_files) >= len(MODELS)
    summary = (run.work_dir / "summary.md").read_text()
    assert all(m in summary for m in MODELS) and "Champion" in summary
