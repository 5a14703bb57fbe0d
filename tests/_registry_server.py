"""A real ``mlflow server`` on loopback (optionally with MLflow's basic-auth app) and registered versions of the
embedded pipeline's models in it: the follow-the-alias and authentication tests share these."""

from __future__ import annotations

import configparser
import contextlib
import os
from pathlib import Path
from typing import Optional

from _servers import background, free_port, mlflow_bin, wait_http

ADMIN = ("admin", "admin-password-1234")
SHIPPED_AUTH_INI = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "mlflow" / "basic_auth.ini"


def auth_ini(folder: Path) -> str:
    """The cluster's basic-auth settings (``deploy/k8s/mlflow/basic_auth.ini``: default permission, credential cache),
    with this server's user store and admin in place of the cluster's database and Secret."""
    shipped = configparser.ConfigParser()
    shipped.read(SHIPPED_AUTH_INI)
    options = {**shipped["mlflow"], "database_uri": f"sqlite:///{folder / 'auth.db'}",
               "admin_username": ADMIN[0], "admin_password": ADMIN[1]}
    return "[mlflow]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())


def server_env(extra: Optional[dict] = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra or {})
    return env


@contextlib.contextmanager
def mlflow_server(folder: Path, auth: bool = False, workers: int = 1):
    """``mlflow server`` over a fresh SQLite store in ``folder``, proxying artifacts; with ``auth`` the basic-auth
    app (its users in ``folder/auth.db``, admin ``ADMIN``, the rest as the cluster's
    deploy/k8s/mlflow/basic_auth.ini says). Yields ``(url, log path)``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-server.log"
    cmd = mlflow_bin() + ["server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                          "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", str(workers),
                          "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    extra = {}
    if auth:
        ini = folder / "basic_auth.ini"
        ini.write_text(auth_ini(folder))
        cmd += ["--app-name", "basic-auth"]
        extra["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        extra["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-secret-key-not-for-production"
    with background(cmd, log, env=server_env(extra)) as proc:
        wait_http(url + "/health", proc, 240, log)
        yield url, log


def log_version(client, experiment_id: str, name: str, onnx_path: Path, spec_path: Path, raw_example,
                architecture: str = "test") -> str:
    """Log the raw-rows pyfunc of ``onnx_path`` in a new run of ``client``'s server and register it; the version."""
    from workflow import serving
    from workflow.registry import register_candidate

    run_id = client.create_run(experiment_id).info.run_id
    info = serving.log_candidate_model(client, run_id, onnx_path, spec_path, input_example=raw_example)
    client.set_terminated(run_id)
    version = register_candidate(client, name, info.model_uri, run_id=run_id, architecture=architecture,
                                 test_metrics={}, test_score=0.5, val_score=0.5)
    return str(version.version)
