"""The gradient-boosted baseline (``train.baselines: [gbdt]``): HistGradientBoosting per task on the prepared splits,
its run beside the models' in MLflow, its row in the summary, the config key and the graph task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from workflow import steps


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two classification tasks a tree splits well, a low- and a high-cardinality sparse column, a dense one."""
    import pandas as pd

    from workflow.data.datasets.base import RawTables, TableSchema, build_from_raw
    from workflow.data.encoders import LabelSpec
    from workflow.data.prepare import write_outputs

    rng = np.random.default_rng(0)
    n = 1500
    frame = pd.DataFrame({"city": rng.choice(["a", "b", "c", "d"], n), "user": rng.integers(0, 400, n).astype(str),
                          "age": rng.integers(18, 80, n).astype(float)})
    frame["click"] = ((frame.age > 45) ^ (frame.city == "a") ^ (rng.random(n) < 0.1)).astype(int)
    frame["buy"] = ((frame.city.isin(["b", "c"])) & (rng.random(n) < 0.7)).astype(int)
    schema = TableSchema(sparse=["city", "user"], dense=["age"], labels=[LabelSpec("click", "classification", "click"),
                                                                       LabelSpec("buy", "classification", "buy")])
    out = tmp_path_factory.mktemp("gbdt") / "prepared"
    write_outputs(build_from_raw("small", RawTables(schema=schema, train=frame, test=None, test_fraction=0.3),
                                 seed=0, val_fraction=0.1), out)
    return out


def test_gbdt_baseline_scores_each_task_with_the_models_metrics(prepared) -> None:
    from workflow.training.gbdt import gbdt_baseline

    result = gbdt_baseline(prepared, seed=0, threads=1)  # one OpenMP thread: no spinning on a shared machine
    assert list(result.test_metrics) == ["click", "buy"]
    # the models' metrics, each with its 95 % interval (no gauc: this data names no user column)
    assert set(result.test_metrics["click"]) == {f"{m}{end}" for m in ("auc", "logloss", "calibration", "ece")
                                                 for end in ("", "_lo", "_hi")}
    assert result.test_metrics["click"]["auc"] > 0.85 and result.test_metrics["buy"]["auc"] > 0.75  # learnable
    for task in ("click", "buy"):
        m = result.test_metrics[task]
        assert m["auc_lo"] < m["auc"] < m["auc_hi"] and m["auc_hi"] - m["auc_lo"] < 0.15  # 450 test rows
        assert m["logloss_lo"] < m["logloss"] < m["logloss_hi"]
    assert result.test_score == pytest.approx((result.test_metrics["click"]["auc"] + result.test_metrics["buy"]["auc"]) / 2)
    assert result.categorical == ["city"]  # 400 users exceed the trees' 255 categories: fed as ids
    flat = result.flat()
    assert flat["click/auc"] == result.test_metrics["click"]["auc"] and flat["test_score"] == result.test_score


def test_gbdt_step_logs_a_baseline_run_and_the_summary_prints_its_row(prepared, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from workflow import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "run"
    parent = steps.start_pipeline_run({"tracking": {"experiment": "e"}, "dataset": {"name": "small"}}, work, "r1")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):  # no OpenMP spinning on a shared machine
        flat = steps.gbdt_step(prepared, parent, work, seed=0)
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id],
                              filter_string=f"tags.`{tracking.TAGS['role']}` = 'baseline'")
    assert len(runs) == 1 and runs[0].info.run_name == "gbdt" and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[tracking.TAGS["parent"]] == parent
    assert runs[0].data.metrics["test/click/auc"] == flat["click/auc"]
    assert runs[0].data.metrics["test/click/auc_lo"] == flat["click/auc_lo"] < flat["click/auc"]
    assert runs[0].data.metrics["test_score"] == flat["test_score"]

    results = {"mmoe": {"click/auc": 0.61, "buy/auc": 0.7, "test_score": 0.655}}
    decision = {"decision": "no_champion", "candidate_version": "1", "champion_version": None, "current_champion": "1"}
    text = steps.summary_step(parent, results, decision, "m", work, tmp_path / "summary.md", baselines={"gbdt": flat})
    lines = text.splitlines()
    assert lines[2].startswith("| mmoe | 0.6550 |")
    with_interval = {t: f"{flat[t + '/auc']:.4f} [{flat[t + '/auc_lo']:.4f}, {flat[t + '/auc_hi']:.4f}]"
                     for t in ("buy", "click")}  # read against the models' rows, as theirs are
    assert lines[3] == (f"| gbdt baseline (HistGradientBoosting) | {flat['test_score']:.4f} | {with_interval['buy']} | "
                        f"{with_interval['click']} |")


def test_baselines_config_key() -> None:
    assert load_config({"train": {"baselines": ["single_task", "gbdt"]}}).train.baselines == ["single_task", "gbdt"]
    assert load_config({}).train.baselines == []
    with pytest.raises(ConfigError, match=r"train.baselines: unknown baseline 'xgboost'; choose from \['single_task', 'gbdt'\]"):
        load_config({"train": {"baselines": ["xgboost"]}})
    with pytest.raises(ConfigError, match="unknown key.*train.single_task_baselines"):
        load_config({"train": {"single_task_baselines": True}})  # the former key: now baselines: [single_task]


def test_graph_has_the_gbdt_task_only_when_asked() -> None:
    from kfp import compiler

    from pipeline.graph import build_pipeline

    def tasks(config: dict) -> dict:
        import tempfile
        from pathlib import Path

        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "p.yaml"
            compiler.Compiler().compile(build_pipeline(load_config(config)), str(path))
            return next(yaml.safe_load_all(path.read_text()))["root"]["dag"]["tasks"]  # then platform specs

    asked = tasks({"train": {"baselines": ["gbdt"]}})
    assert "baseline-gbdt" in asked
    summary_inputs = asked["summarize-run"]["inputs"]["parameters"]["baselines_json"]
    assert summary_inputs["taskOutputParameter"]["producerTask"] == "baseline-gbdt"
    assert "baseline-gbdt" not in tasks({})
    assert json.loads(json.dumps(asked["baseline-gbdt"]["inputs"]["parameters"]["seed"]))  # the training seed rides in
