"""Serving: the champion's pyfunc is self-contained (raw rows, ONNX, no torch, no repo on sys.path) and
the model server (``workflow.serving.model_server``: MLflow's scoring app behind a body cap) answers REST requests with
raw Adult rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import MODEL_NAME, embedded_pipeline, quiet_mlflow, raw_test_rows  # noqa: E402

from workflow import serving# noqa: E402

quiet_mlflow()


def test_spec_package_is_a_verbatim_copy(tmp_path):
    from pathlib import Path

    pkg = serving.build_spec_package(tmp_path)
    src = Path(serving.__file__).resolve().parents[1] / "data"
    for name in ("feature_spec.py", "encoders.py", "errors.py"):
        assert (pkg / name).read_bytes() == (src / name).read_bytes()


def test_signature_uses_raw_types(adult_dir, tmp_path_factory):
    from workflow.data.feature_spec import FeatureSpec
    from _mlflow_helpers import prepared_adult

    spec = FeatureSpec.load(prepared_adult(adult_dir, tmp_path_factory.getbasetemp()) / "feature_spec.json")
    sig = serving.raw_signature(spec, raw_test_rows(adult_dir, nrows=3))
    types = {c.name: c.type.name for c in sig.inputs.inputs}
    assert types["workclass"] == "string" and types["age"] == "long" and types["capital-gain"] == "long"
    assert "income" not in types and "marital-status" not in types  # label sources are not inputs
    assert [c.name for c in sig.outputs.inputs] == ["income", "never_married"]
    # without raw rows, the spec's statistics decide: Adult's numbers are whole, so a JSON client may send 39
    from_spec = serving.raw_signature(spec)
    assert {c.name: c.type.name for c in from_spec.inputs.inputs} == types
    example = serving.example_rows(spec)
    assert example["age"].dtype.kind == "i" and example["workclass"].iloc[0] == spec.features[0].vocabulary[0]


@pytest.mark.slow
def test_champion_loads_without_torch_or_project_code(adult_dir, tmp_path_factory, tmp_path):
    """A fresh interpreter outside the repo, with torch and the project made unimportable, loads the champion."""
    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    raw = raw_test_rows(adult_dir, nrows=200)
    raw.to_csv(tmp_path / "rows.csv", index=False)
    code = (
        "import sys, json\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'workflow', 'mtl_models'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.path = [p for p in sys.path if 'work/main' not in p or 'site-packages' in p]\n"
        "import mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "rows = pd.read_csv(sys.argv[2], keep_default_na=False)\n"
        "print(json.dumps(m.predict(rows).to_numpy().tolist()))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": run.tracking.uri, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code, f"models:/{MODEL_NAME}@champion", str(tmp_path / "rows.csv")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    import mlflow
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").predict(raw).to_numpy()
    assert got.shape == (200, 2) and np.abs(got - expected).max() <= 1e-6


def _served_champion_answers_raw_rows(url, proc, adult_dir, tmp_path_factory) -> None:
    """64 raw test rows (with `?` cells) over HTTP get the trainer's predictions; missing columns get a 400."""
    from mlflow import MlflowClient

    from workflow.training.evaluate import predict_prepared

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    client = MlflowClient(run.tracking.uri, run.tracking.uri)
    version = str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    cand = next(c for c in run.candidates if c.version == version)
    raw = raw_test_rows(adult_dir, nrows=64)
    assert (raw == "?").any().any()
    body = {"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}
    assert proc.poll() is None
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        answer = json.loads(r.read())
    bad = dict(body)
    bad["dataframe_split"] = {"columns": ["age"], "data": [[30]]}
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(bad).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=60)
    assert err.value.code == 400  # missing raw columns are the client's error, not a crash
    preds = answer["predictions"]
    assert len(preds) == 64 and set(preds[0]) == {"income", "never_married"}
    got = np.array([[p["income"], p["never_married"]] for p in preds])
    expected = predict_prepared(run.work / cand.model_name, run.prepared, split="test")[:64]
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.slow
def test_model_server_answers_raw_rows(adult_dir, tmp_path_factory, champion_server):
    url, proc, _, _ = champion_server  # workflow.serving.model_server, shared with the reliability suite
    _served_champion_answers_raw_rows(url, proc, adult_dir, tmp_path_factory)


@pytest.mark.slow
def test_plain_mlflow_models_serve_answers_raw_rows(adult_dir, tmp_path_factory, tmp_path):
    from _mlflow_helpers import serve_champion

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    with serve_champion(run, tmp_path / "serve.log", plain_mlflow=True) as (url, proc):
        _served_champion_answers_raw_rows(url, proc, adult_dir, tmp_path_factory)


NUMERIC_NAMES_SCHEMA = """
sparse: [101, 109_14, 205]          # unquoted: YAML alone would read 109_14 as 10914
dense: [numerical_1, numerical_2]
labels:
  - {column: click, task_type: classification}
  - {column: conversion, task_type: classification}
"""


@pytest.mark.slow  # trains, exports and logs a model (timing in docs/mlflow.md)
def test_numeric_category_ids_score_as_pandas_reads_them(shared_data, tmp_path):
    """Columns named 101 / 109_14 / 205 holding integer ids (the AliExpress sample's values), named unquoted in the
    schema: the prepare step records them as ``long``, and the logged pyfunc scores the rows ``pd.read_csv`` gives
    (int64), with the same predictions as the ids spelled as strings."""
    import mlflow
    import pandas as pd

    from workflow import tracking
    from workflow.training.export import export
    from workflow.training.train import train

    sample = pd.read_csv(shared_data / "aliexpress" / "aliexpress_train_sample.csv")
    names = {"categorical_1": "101", "categorical_7": "109_14", "categorical_9": "205"}
    frame = sample.rename(columns=names)[[*names.values(), "numerical_1", "numerical_2", "click", "conversion"]]
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "schema.yaml").write_text(NUMERIC_NAMES_SCHEMA)
    from workflow.data.prepare import prepare

    spec = prepare("csv", tmp_path / "prepared", seed=3,
                   options={"path": str(tmp_path / "data.csv"), "schema": str(tmp_path / "schema.yaml")})
    assert spec.source_columns == ["101", "109_14", "205", "numerical_1", "numerical_2"]
    assert spec.raw_types == {"101": "long", "109_14": "long", "205": "long", "numerical_1": "double",
                              "numerical_2": "double"}
    types = {c.name: c.type.name for c in serving.raw_signature(spec).inputs.inputs}
    assert types == spec.raw_types

    train(tmp_path / "prepared", "shared_bottom", tmp_path / "trained", n_epoch=1, device="cpu", progress=False)
    exported = export(tmp_path / "trained", tmp_path / "prepared")
    trk = tracking.setup_tracking("numeric-ids", tmp_path / "work")
    run_id = trk.client.create_run(trk.experiment_id).info.run_id
    info = serving.log_candidate_model(trk.client, run_id, exported.onnx_path, tmp_path / "trained" / "feature_spec.json")
    model = mlflow.pyfunc.load_model(info.model_uri)

    rows = pd.read_csv(tmp_path / "data.csv").drop(columns=["click", "conversion"])
    assert rows["101"].dtype == np.int64
    scored = model.predict(rows)
    assert scored.shape == (len(rows), 2) and np.isfinite(scored.to_numpy()).all()
    as_text = model.unwrap_python_model().predict(None, rows.astype({c: str for c in names.values()}))
    np.testing.assert_allclose(scored.to_numpy(), as_text.to_numpy(), rtol=0, atol=0)
    # the ids matter: an unseen id (reserved embedding 0) changes the scores
    unseen = model.predict(rows.assign(**{"101": 10**9}))
    assert not np.allclose(unseen.to_numpy(), scored.to_numpy())


def test_loading_the_served_model_class_prints_no_mlflow_type_hint_warning():
    """`mtlp compare` and the model server load the pyfunc class: MLflow warned on stderr, once per load, that
    ``predict`` had no type hints. A ``pd.DataFrame`` hint is one MLflow infers no schema from: silent, and the
    input handling is unchanged (a dict of columns is still accepted, as before)."""
    import subprocess
    code = ("import warnings, mlflow.pyfunc\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from workflow.serving.pyfunc_model import RawRowsMultiTaskModel\n"
            "print(len([x for x in w if 'type hint' in str(x.message)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "0", out.stdout + out.stderr
