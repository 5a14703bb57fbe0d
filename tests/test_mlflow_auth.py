"""The cluster's MLflow authentication, on a real ``mlflow server --app-name basic-auth`` on loopback, its users and
grants made by deploy/k8s/mlflow/mlflow_users.py (what the mlflow-users Job runs): anonymous requests get 401, a
reader browses but cannot register a version or move an alias (403), a promoter moves the champion with
``mtlp promote``, and ``mtlp run`` with the pipeline's credentials runs the whole graph (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("flask_wtf")  # mlflow[auth]: the basic-auth app needs it

from _registry_server import ADMIN, mlflow_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "authdemo"
MODEL = f"{EXPERIMENT}-model"  # pipeline.config's registered model name for this experiment
PIPELINE = ("pipeline", "pipeline-pass-0001")
PEOPLE = "# name:password:role\nalice:alice-pass-0001:promoter\nbob:bob-pass-0001:reader\n"
RUN_CONFIG = {"name": "auth", "dataset": {"name": "synthetic-funnel",
                                          "options": {"n_rows": 3000, "n_users": 100, "n_items": 40}},
              "models": ["shared_bottom"], "search": {"n_trials": 1, "n_epoch": 1},
              "train": {"n_epoch": 1, "device": "cpu",
                        "params": {"shared_bottom": {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [8]}}},
              "tracking": {"experiment": EXPERIMENT}}


def _users_module():
    spec = importlib.util.spec_from_file_location("mlflow_users", REPO / "deploy/k8s/mlflow/mlflow_users.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as(user: tuple[str, str] | None, url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = url
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user
    return env


def _request(url: str, method: str, path: str, user=None, body: dict | None = None) -> tuple[int, str]:
    import requests

    r = requests.request(method, url + path, auth=user, timeout=60,
                         **({"json": body} if body is not None else {}))
    return r.status_code, r.text.strip()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """The server, with the pipeline user, a promoter (alice) and a reader (bob); one version of the model,
    registered by the pipeline from one of its runs. ``(url, version, run id)``."""
    folder = tmp_path_factory.mktemp("auth-mlflow")
    with mlflow_server(folder, auth=True) as (url, _):
        users = _users_module()
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
        try:
            users.setup(url, MODEL, EXPERIMENT, PIPELINE, users.read_people(PEOPLE), log=lambda _: None)
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = PIPELINE
            from mlflow import MlflowClient

            client = MlflowClient(url, url)
            run = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id)
            client.set_terminated(run.info.run_id)
            version = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/model",
                                                  run_id=run.info.run_id).version
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        yield url, str(version), run.info.run_id


def test_people_file_errors_name_the_line():
    users = _users_module()
    assert users.read_people(PEOPLE) == [("alice", "alice-pass-0001", "promoter"), ("bob", "bob-pass-0001", "reader")]
    with pytest.raises(users.SetupError, match="people file line 2: role 'admin' for 'carol' is not one of"):
        users.read_people("alice:a:promoter\ncarol:c:admin\n")
    with pytest.raises(users.SetupError, match="line 1: expected name:password:role, got 2 field"):
        users.read_people("dave:only-a-password\n")


@pytest.mark.slow
def test_anonymous_gets_401_and_a_reader_browses_but_cannot_register_or_move_an_alias(auth_server):
    url, version, run_id = auth_server
    status, text = _request(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={MODEL}")
    assert status == 401 and "You are not authenticated" in text
    status, _ = _request(url, "POST", "/api/2.0/mlflow/registered-models/alias",
                         body={"name": MODEL, "alias": "champion", "version": version})
    assert status == 401
    assert _request(url, "GET", "/health")[0] == 200  # probes need no credentials

    bob = ("bob", "bob-pass-0001")
    status, text = _request(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={MODEL}", user=bob)
    assert status == 200 and json.loads(text)["registered_model"]["name"] == MODEL
    assert _request(url, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", user=bob)[0] == 200
    status, text = _request(url, "POST", "/api/2.0/mlflow/model-versions/create", user=bob,
                            body={"name": MODEL, "source": f"runs:/{run_id}/model", "run_id": run_id})
    assert (status, text) == (403, "Permission denied")
    status, text = _request(url, "POST", "/api/2.0/mlflow/registered-models/alias", user=bob,
                            body={"name": MODEL, "alias": "champion", "version": version})
    assert (status, text) == (403, "Permission denied")
    assert _request(url, "GET", f"/api/2.0/mlflow/registered-models/get?name={MODEL}", user=("bob", "wrong"))[0] == 401


@pytest.mark.slow
def test_mtlp_promote_by_a_promoter_works_and_by_a_reader_fails(auth_server, tmp_path):
    url, version, _ = auth_server
    cmd = [sys.executable, "-m", "pipeline.cli", "promote", "--model", MODEL, "--version", version,
           "--reason", "auth test", "--tracking-uri", url]
    denied = subprocess.run(cmd, cwd=REPO, env=_as(("bob", "bob-pass-0001"), url), capture_output=True, text=True,
                            timeout=300)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr + denied.stdout
    done = subprocess.run(cmd, cwd=REPO, env=_as(("alice", "alice-pass-0001"), url), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow import MlflowClient

    os.environ.update({"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": "bob-pass-0001"})
    try:
        assert str(MlflowClient(url, url).get_model_version_by_alias(MODEL, "champion").version) == version
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME"), os.environ.pop("MLFLOW_TRACKING_PASSWORD")


@pytest.mark.slow
def test_mtlp_run_with_the_pipeline_credentials_runs_the_whole_graph(auth_server, tmp_path):
    import yaml

    url, _, _ = auth_server
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(RUN_CONFIG))
    env = {**_as(PIPELINE, url), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", "c.yaml", "--run-name", "a1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    from mlflow import MlflowClient

    os.environ.update({"MLFLOW_TRACKING_USERNAME": PIPELINE[0], "MLFLOW_TRACKING_PASSWORD": PIPELINE[1]})
    try:
        client = MlflowClient(url, url)
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert any(v.tags.get("mtlp.architecture") == "shared_bottom" for v in versions)
        assert client.get_model_version_by_alias(MODEL, "challenger") is not None
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME"), os.environ.pop("MLFLOW_TRACKING_PASSWORD")
