"""Shared by the MLflow tests: quiet MLflow, one prepared Adult per test process, a tiny two-model pipeline run
driven through the graph's own step functions (``workflow.steps``) and the checks of what it left in the
tracking store and the registry (the same checks for every backend)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from _servers import background, free_port, mlflow_bin, wait_http

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "adult-mtl"
MODELS = {
    "shared_bottom": {"embed_dim": 4, "bottom_dims": [16], "tower_dims": [8], "batch_size": 4096, "lr": 0.01},
    "mmoe": {"embed_dim": 4, "n_expert": 2, "expert_dims": [16], "tower_dims": [8], "batch_size": 4096, "lr": 0.01},
}
N_EPOCH = 2


def quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    for name in ("mlflow", "alembic", "mlflow.store.db.utils", "mlflow.models", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.ERROR)


_PREPARED: dict[str, Path] = {}
_TEMPLATE_DB: list[Path] = []


def seed_store(work_dir: Path) -> Path:
    """Copy an already-migrated empty ``mlflow.db`` into ``work_dir`` (creating the schema is slow: docs/mlflow.md)."""
    import shutil
    import tempfile

    from mlflow import MlflowClient

    if not _TEMPLATE_DB:
        folder = Path(tempfile.mkdtemp(prefix="mtlp-mlflow-template-"))
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        MlflowClient(uri, uri).search_experiments()  # creates and migrates the tables
        MlflowClient(uri, uri).search_registered_models()
        _TEMPLATE_DB.append(folder / "mlflow.db")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE_DB[0], work_dir / "mlflow.db")
    return work_dir


def embedded_tracking(work_dir: Path, experiment: str, monkeypatch: Any) -> Any:
    """``workflow.tracking.setup_tracking`` on a fresh embedded store in ``work_dir``, whatever
    ``MLFLOW_TRACKING_URI`` the calling shell has set (the registry follows the tracking store)."""
    from workflow import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.setup_tracking(experiment, work_dir=seed_store(work_dir))


def store_with_versions(folder: Path, model: str, n_versions: int) -> tuple[Path, str]:
    """An embedded store in ``folder`` holding registered model ``model`` with ``n_versions`` versions and no
    aliases; ``(work dir, sqlite URI)``."""
    from mlflow import MlflowClient

    work = seed_store(folder / "store")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model(model)
    for _ in range(n_versions):
        client.create_model_version(model, source=str(folder / "model"), run_id=None)
    return work, uri


def prepared_adult(adult_dir: Path, root: Path) -> Path:
    """Prepare Adult once per test process (the files are read-only afterwards)."""
    if "adult" not in _PREPARED:
        from workflow.data.prepare import prepare

        out = root / "prepared-adult"
        prepare("adult", out, data_dir=adult_dir, seed=7)
        _PREPARED["adult"] = out
    return _PREPARED["adult"]


def raw_test_rows(adult_dir: Path, nrows: Optional[int] = None) -> pd.DataFrame:
    """Raw ``adult.test`` rows as a client sends them: the data package's reader (strings as the file spells them,
    ``?`` kept), its numeric columns as numbers."""
    from workflow.data.datasets import adult

    frame = adult.read_adult_file(adult_dir / "adult.test")
    frame = frame.head(nrows) if nrows is not None else frame
    return frame.astype({c: "int64" for c in adult.DENSE})


@dataclass
class Candidate:
    """One model of the run as the steps left it: its run, training result, version and logged model."""
    model_name: str
    run_id: str
    result: Any          # workflow.training.train.TrainResult, from train_step
    version: str         # from register_step
    model_uri: str       # the registered version's source: the logged pyfunc, models:/m-...
    val_score: float     # metrics.json's val_score (what promotion selected on)


@dataclass
class PipelineRun:
    tracking: Any
    parent_run_id: str
    pipeline_run_id: str
    candidates: list
    decision: dict       # promote_step's answer
    prepared: Path
    work: Path
    summary: str


def _model_branch(trk: Any, work: Path, prepared: Path, name: str, params: dict, pipeline_run_id: str,
                  raw_example: pd.DataFrame) -> Candidate:
    """One per-model branch of the graph: start_model_run -> train -> export -> register (evaluate runs beside)."""
    from workflow import steps

    run_id = steps.start_model_run(pipeline_run_id, trk.experiment_name, name, work, trk.uri)
    result = steps.train_step(prepared, name, work / name, run_id, work, fixed_params=params, n_epoch=N_EPOCH,
                              patience=N_EPOCH, device="cpu", seed=3, tracking_uri=trk.uri)
    steps.export_step(work / name, prepared, run_id, work, trk.uri)
    version = steps.register_step(work / name, run_id, MODEL_NAME, work, pipeline_run_id, trk.uri,
                                  input_example=raw_example)
    saved = json.loads((work / name / "metrics.json").read_text())
    source = trk.client.get_model_version(MODEL_NAME, version).source
    return Candidate(name, run_id, result, version, source, float(saved.get("val_score", float("nan"))))


def run_pipeline(trk: Any, adult_dir: Path, work: Path, raw_example: pd.DataFrame,
                 pipeline_run_id: str = "pr-0001") -> PipelineRun:
    """The graph's steps, in its order, on Adult: start -> prepare -> per model (start_model_run, train, evaluate,
    export, register) -> promote -> summary; the same functions the KFP components call (pipeline/ops.py)."""
    from workflow import steps

    config = {"tracking": {"experiment": trk.experiment_name}, "dataset": {"name": "adult", "seed": 7},
              "models": MODELS, "train": {"n_epoch": N_EPOCH, "patience": N_EPOCH},
              "promotion": {"metric": "val_score", "margin": 0.0}}
    parent = steps.start_pipeline_run(config, work, pipeline_run_id, trk.uri, trk.experiment_name)
    prepared = work / "prepared"
    steps.prepare_step("adult", prepared, str(adult_dir), 7, 0.1, {}, parent, work, trk.uri)
    cands, results = [], {}
    for name, params in MODELS.items():
        cands.append(_model_branch(trk, work, prepared, name, params, pipeline_run_id, raw_example))
        results[name] = steps.report_step(work / name, work / f"{name}.html")
    decision = steps.promote_step([c.version for c in cands], MODEL_NAME, work, tracking_uri=trk.uri,
                                  prepared_dir=prepared, promotion={"rule": "paired"})
    summary = steps.summary_step(parent, results, decision, MODEL_NAME, work, work / "summary-out.md", trk.uri)
    return PipelineRun(trk, parent, pipeline_run_id, cands, decision, prepared, work, summary)


def _artifact_paths(client: Any, run_id: str, path: Optional[str] = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out |= _artifact_paths(client, run_id, item.path)
        else:
            out.add(item.path)
    return out


def check_layout(run: PipelineRun) -> None:
    """Parent/child runs, params, per-epoch history, artifacts, versions with tags, aliases, promotion tags."""
    from mlflow import MlflowClient

    client = MlflowClient(run.tracking.uri, run.tracking.uri)
    parent = _check_parent(client, run)
    for cand in run.candidates:
        _check_model_run(client, run, parent, cand)
        _check_version(client, run, cand)
    _check_promotion(client, run)


def _check_parent(client: Any, run: PipelineRun) -> Any:
    from workflow import tracking

    parent = client.get_run(run.parent_run_id)
    tags = parent.data.tags
    assert tags[tracking.TAGS["pipeline_run_id"]] == run.pipeline_run_id
    assert tags[tracking.TAGS["dataset"]] == "adult"
    sha = json.loads(tags[tracking.TAGS["raw_sha256"]])
    assert sha["adult.test"] == "ceb625d3b5aeddf1e04cd5eec3268e18af4140fbde5a853a11223deeebcfe0f5"
    assert len(tags[tracking.TAGS["git_commit"]].split("-")[0]) == 40
    assert json.loads(tags[tracking.TAGS["config"]])["models"]["mmoe"]["n_expert"] == 2
    assert parent.data.params["config.models.shared_bottom.bottom_dims"] == "[16]"
    assert parent.info.status == "FINISHED"
    parent_files = _artifact_paths(client, run.parent_run_id)
    assert {"config.json", "comparison/model_comparison.png", "comparison/comparison.json"} <= parent_files
    children = client.search_runs([run.tracking.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.parent_run_id}'")
    assert sorted(c.data.tags[tracking.TAGS["model_name"]] for c in children) == sorted(MODELS)
    return parent


def _check_history(client: Any, cand: Candidate) -> None:
    """One point per epoch for losses, validation metrics and weights, the values the trainer saw."""
    for key in ("train/loss", "train/income/loss", "train/never_married/loss", "val/income/auc",
                "val/never_married/logloss", "val/monitor", "weight/income", "weight/never_married"):
        history = client.get_metric_history(cand.run_id, key)
        assert sorted(m.step for m in history) == [h.get("epoch", i) for i, h in enumerate(cand.result.history)]
        assert len(history) == N_EPOCH, key
    want = {m.step: m.value for m in client.get_metric_history(cand.run_id, "train/loss")}
    for i, h in enumerate(cand.result.history):
        assert want[h.get("epoch", i)] == pytest_approx(h["train/loss"])


def _check_model_run(client: Any, run: PipelineRun, parent: Any, cand: Candidate) -> None:
    from workflow import tracking

    child = client.get_run(cand.run_id)
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == run.parent_run_id
    assert child.data.tags[tracking.TAGS["pipeline_run_id"]] == run.pipeline_run_id
    params = child.data.params
    for key, value in MODELS[cand.model_name].items():
        assert params[key] == (json.dumps(value) if isinstance(value, list) else str(value)), key
    assert params["weighting"] == "equal" and params["model_name"] == cand.model_name  # resolved defaults too
    _check_history(client, cand)
    metrics = child.data.metrics
    for task in ("income", "never_married"):
        assert metrics[f"test/{task}/auc"] == pytest_approx(cand.result.test_metrics[task]["auc"])
        assert f"test/{task}/logloss" in metrics
        # each value's 95 % interval beside it, for test and for the restored checkpoint's validation rows
        assert metrics[f"test/{task}/auc_lo"] < metrics[f"test/{task}/auc"] < metrics[f"test/{task}/auc_hi"]
        val = cand.result.val_metrics[task]
        assert metrics[f"val/{task}/auc_lo"] == pytest_approx(val["auc_lo"]) and f"val/{task}/ece_hi" in metrics
        history = client.get_metric_history(cand.run_id, f"val/{task}/auc_hi")
        assert [h.step for h in history] == [cand.result.best_epoch]
    assert metrics["test/score"] == pytest_approx(cand.result.test_score)
    assert metrics["val/score"] == pytest_approx(cand.val_score)
    # the key metrics under short names on the model run, and per model on the parent (the runs table's row)
    assert metrics["income_auc"] == metrics["test/income/auc"] and metrics["score"] == metrics["test/score"]
    assert parent.data.metrics[f"income_auc/{cand.model_name}"] == metrics["income_auc"]
    assert any(k.startswith("system/") for k in metrics)  # psutil is installed here
    files = _artifact_paths(client, cand.run_id)
    # the config lives on the parent run (config.json above); the model run holds what its steps wrote
    assert {"feature_spec.json", "params.json", "metrics.json", "onnx/model.onnx",
            "plots/training_curves.png", "plots/roc_income.png", "plots/roc_never_married.png"} <= files, files


def _check_version(client: Any, run: PipelineRun, cand: Candidate) -> None:
    from workflow import registry

    mv = client.get_model_version(MODEL_NAME, cand.version)
    assert mv.run_id == cand.run_id
    assert mv.tags[registry.TAG["architecture"]] == cand.model_name
    assert mv.tags[registry.TAG["pipeline_run_id"]] == run.pipeline_run_id
    assert float(mv.tags["metric.test_score"]) == pytest_approx(cand.result.test_score)
    assert float(mv.tags["metric.val_score"]) == pytest_approx(cand.val_score)
    assert float(mv.tags["metric.test/income/auc"]) == pytest_approx(cand.result.test_metrics["income"]["auc"])
    model = client.get_logged_model(cand.model_uri.split("/", 1)[1])
    assert model.source_run_id == cand.run_id and model.experiment_id == run.tracking.experiment_id


def _check_promotion(client: Any, run: PipelineRun) -> None:
    """The challenger is the newest version; the champion the best on validation, its test score reported."""
    from workflow import registry

    versions = [c.version for c in run.candidates]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == max(versions, key=int)
    best = max(run.candidates, key=lambda c: c.val_score)  # selected on validation
    assert run.decision["promoted"] and run.decision["decision"] == "no_champion"
    assert run.decision["metric"] == "val_score" and run.decision["candidate_score"] == pytest_approx(best.val_score)
    assert run.decision["candidate_test_score"] == pytest_approx(best.result.test_score)  # reported
    assert f"(test_score, reported: candidate {best.result.test_score:.4f})" in run.summary
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == best.version
    assert client.get_model_version(MODEL_NAME, best.version).tags[registry.TAG["decision"]] == "no_champion"
    # the paired rule scored the best two through their logged models and says whether they can be told apart
    runner_up = sorted(run.candidates, key=lambda c: c.val_score)[-2]
    assert run.decision["rule"] == "paired" and run.decision["top_two"] in run.summary
    assert run.decision["top_two"].startswith(f"{best.model_name} (v{best.version}), the run's best by val_score, ")
    assert f"the runner-up {runner_up.model_name} (v{runner_up.version}) on the validation rows: " in run.decision["top_two"]


def pytest_approx(x: float):
    import pytest
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def check_champion_parity(run: PipelineRun, adult_dir: Path) -> None:
    """Champion pyfunc on raw adult.test rows == the trainer's predictions on the prepared test split."""
    import mlflow

    from workflow.training.evaluate import predict_prepared

    from workflow.tracking import use_globally

    use_globally(run.tracking.uri)
    raw = raw_test_rows(adult_dir)
    assert (raw == "?").any().any()  # raw rows with missing values, as in the file
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    version = str(mlflow.MlflowClient(run.tracking.uri).get_model_version_by_alias(MODEL_NAME, "champion").version)
    cand = next(c for c in run.candidates if c.version == version)
    got = champion.predict(raw)
    assert list(got.columns) == ["income", "never_married"]
    expected = predict_prepared(run.work / cand.model_name, run.prepared, split="test")
    assert got.shape == expected.shape == (len(raw), 2)
    assert float(np.abs(got.to_numpy() - expected).max()) <= 1e-5

    # unseen categories behave like missing ones (id 0), as in the feature spec
    rows = raw.head(20).copy()
    unseen, missing = rows.copy(), rows.copy()
    unseen["workclass"], missing["workclass"] = "Astronaut", "?"
    unseen["native-country"], missing["native-country"] = "Atlantis", "?"
    a, b = champion.predict(unseen).to_numpy(), champion.predict(missing).to_numpy()
    assert np.array_equal(a, b)
    assert not np.allclose(a, champion.predict(rows).to_numpy())


def check_promotion_rules(run: PipelineRun) -> None:
    """With the two real candidates: worse does not move the champion, better does, rollback restores."""
    from mlflow import MlflowClient

    from workflow import registry

    client = MlflowClient(run.tracking.uri, run.tracking.uri)
    worse, better = sorted(run.candidates, key=lambda c: c.val_score)  # the guard compares on validation
    assert worse.val_score < better.val_score
    assert registry.champion_version(client, MODEL_NAME) == better.version
    d = registry.promote(client, MODEL_NAME, worse.version, user="ci")
    assert not d.promoted and d.decision == "rejected"
    assert registry.champion_version(client, MODEL_NAME) == better.version
    tags = client.get_model_version(MODEL_NAME, worse.version).tags
    assert float(tags[registry.TAG["candidate_score"]]) == pytest_approx(worse.val_score)
    assert float(tags[registry.TAG["champion_score"]]) == pytest_approx(better.val_score)
    assert tags[registry.TAG["decision"]] == "rejected" and tags[registry.TAG["by"]] == "ci"

    # make the worse one champion by hand, then the better one wins the guarded promotion
    registry.promote_version(client, MODEL_NAME, worse.version, reason="test: force the worse model", user="ci")
    assert registry.champion_version(client, MODEL_NAME) == worse.version
    d = registry.promote(client, MODEL_NAME, better.version, user="ci")
    assert d.promoted and d.decision == "promoted" and d.champion_version == worse.version
    assert registry.champion_version(client, MODEL_NAME) == better.version

    restored = registry.rollback(client, MODEL_NAME, reason="test: regression in prod", user="oncall")
    assert restored == worse.version == registry.champion_version(client, MODEL_NAME)
    rm = client.get_registered_model(MODEL_NAME)
    last = json.loads(rm.tags[registry.TAG["last_action"]])
    assert last["action"] == "rollback" and last["by"] == "oncall" and last["reason"] == "test: regression in prod"
    assert last["previous"] == better.version and last["at"]
    assert client.get_model_version(MODEL_NAME, better.version).tags["mtlp.rollback.by"] == "oncall"


# ---- the champion behind a server ----------------------------------------------------------------------------

@contextlib.contextmanager
def serve_champion(run: PipelineRun, log_path: Path, timeout: float = 180, plain_mlflow: bool = False):
    """``python -m workflow.serving.model_server`` (MLflow's scoring app behind the body cap) of
    ``models:/adult-mtl@champion`` on a free loopback port, answering ``/ping``; with ``plain_mlflow`` MLflow's
    own ``mlflow models serve --env-manager local`` instead. Yields ``(base_url, proc)``, stops the server on exit."""
    from workflow import serving

    port = free_port()
    env = serving.serve_environment(tracking_uri=run.tracking.uri)
    uri = f"models:/{MODEL_NAME}@champion"
    cmd = (mlflow_bin() + ["models", "serve", "-m", uri, "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"]
           if plain_mlflow else serving.serve_command(uri, port))
    with background(cmd, log_path, env=env) as proc:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout, log_path)
        yield f"http://127.0.0.1:{port}", proc


_EMBEDDED: list[PipelineRun] = []


def embedded_pipeline(adult_dir: Path, root: Path) -> PipelineRun:
    """The two-model pipeline run on the embedded store, once per test process (tracking + serving tests)."""
    if not _EMBEDDED:
        from workflow import tracking

        work = seed_store(root / "embedded-work")
        trk = tracking.setup_tracking("adult-mtl-embedded", work_dir=work)
        _EMBEDDED.append(run_pipeline(trk, adult_dir, work, raw_test_rows(adult_dir, nrows=5)))
    from workflow.tracking import use_globally
    use_globally(_EMBEDDED[0].tracking.uri)  # other tests may have pointed MLflow elsewhere meanwhile
    return _EMBEDDED[0]
