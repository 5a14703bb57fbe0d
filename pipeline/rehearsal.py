"""The cluster path rehearsed on one machine (``make rehearsal``, ``python -m pipeline.rehearsal``).

Starts, on loopback, a PostgreSQL server with two databases and ``mlflow server`` on one of them (as
``deploy/k8s/mlflow`` runs it); the Optuna study lives in the other. Then runs ``mtlp run --containers``: every
task of the compiled graph in the project image under podman, as its non-root user with a read-only root file
system, reaching both servers over the network, credentials in the environment variables the cluster's Secrets
fill (``MLFLOW_TRACKING_URI``, ``OPTUNA_STORAGE``). Afterwards it checks what the cluster would show: every MLflow
run of the pipeline run FINISHED, a champion alias on the registered model, each search's trials one child run
each. Prints the wall time, the number of containers and the summary; exit status: the run's, or 1 when a check
fails. ``--keep`` leaves the servers running (their URLs are printed) to look at the MLflow UI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .loopback import background, free_port, postgres_server, wait_http

__all__ = ["postgres", "mlflow_server", "check_runs", "run_statuses", "main"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "rehearsal.yaml"
PG_PASSWORD = "rehearsal-password"


@contextlib.contextmanager
def postgres(databases: Sequence[str]) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL on 127.0.0.1 (``pipeline.loopback``) holding ``databases``; yields ``{database:
    SQLAlchemy URL}``. Missing binaries: ``FileNotFoundError`` saying which."""
    with postgres_server(password=PG_PASSWORD) as server:
        yield {name: server.create_database(name) for name in databases}


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log_path: Path, timeout: float = 180) -> Iterator[str]:
    """``mlflow server`` on ``backend_uri`` (artifacts proxied, stored in ``artifacts``); yields its URL."""
    port = free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
           str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with background(cmd, log_path, env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout, log_path)
        yield url


def run_statuses(uri: str, experiment: str, run_name: str) -> dict[str, int]:
    """How many runs of the pipeline run are in each status, e.g. ``{"FAILED": 2}``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000,
                              filter_string=f"tags.`mtlp.pipeline_run_id` = '{run_name}'") if exp else []
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def check_runs(uri: str, experiment: str, registered_model: str, run_name: str, n_trials: int) -> list[str]:
    """What the cluster would show, as a list of problems (empty: all good): every run of the pipeline run
    FINISHED, a champion alias, per model exactly ``n_trials`` finished trial runs."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return [f"no experiment {experiment!r} on {uri}"]
    runs = client.search_runs([exp.experiment_id], max_results=5000,
                              filter_string=f"tags.`mtlp.pipeline_run_id` = '{run_name}'")
    problems = [f"run {r.info.run_name} is {r.info.status}" for r in runs
                if r.info.status != "FINISHED" and r.data.tags.get("mtlp.role") != "trial"]
    problems += [f"trial run {r.info.run_name} is RUNNING" for r in runs if r.info.status == "RUNNING"]
    for model in sorted({r.data.tags.get("mtlp.model_name") for r in runs if r.data.tags.get("mtlp.role") == "model"}):
        done = [r for r in runs if r.data.tags.get("mtlp.role") == "trial" and r.data.tags.get("mtlp.model_name") == model
                and r.info.status in ("FINISHED", "KILLED")]
        if len(done) != n_trials or len({r.data.tags.get("optuna.trial") for r in done}) != len(done):
            problems.append(f"{model}: {len(done)} finished trial runs, expected {n_trials} distinct")
    try:
        client.get_model_version_by_alias(registered_model, "champion")
    except Exception as e:  # noqa: BLE001 - reported as a problem
        problems.append(f"no champion alias on {registered_model}: {str(e).splitlines()[0]}")
    return problems


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.rehearsal", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline config (default: configs/rehearsal.yaml)")
    p.add_argument("--run-name", default="rehearsal")
    p.add_argument("--runs-root", default="mtlp-runs")
    p.add_argument("--image", help="the project image (default: this commit's, as `make image` tags it)")
    p.add_argument("--keep", action="store_true", help="leave the servers running until Ctrl-C")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .config import load_config
    from .local import run_folder

    args = _parser().parse_args(argv)
    config = load_config(args.config)
    work = run_folder(args.run_name, args.runs_root)
    services = work.parent / f".{args.run_name}-services"
    shutil.rmtree(services, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--containers", "--config", args.config,
           "--run-name", args.run_name, "--runs-root", args.runs_root] + (["--image", args.image] if args.image else [])
    with postgres(["mlflow", "optuna"]) as dbs, \
            mlflow_server(dbs["mlflow"], services / "artifacts", services / "mlflow.log") as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OPTUNA_STORAGE": dbs["optuna"],
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        print(f"rehearsal: MLflow server {uri} on PostgreSQL; study database on the same server", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, env=env, check=False).returncode
        wall = time.perf_counter() - start
        print(f"rehearsal: `mtlp run --containers` exited {code} after {wall:.0f} s", flush=True)
        if code != 0:
            statuses = run_statuses(uri, config.tracking.experiment, args.run_name)
            print(f"rehearsal: the failed run's MLflow runs: {statuses}", flush=True)
            return code
        problems = check_runs(uri, config.tracking.experiment, config.registered_model, args.run_name,
                              config.search.n_trials)
        for problem in problems:
            print(f"rehearsal: check failed: {problem}", file=sys.stderr)
        if not problems:
            print("rehearsal: every MLflow run FINISHED, one child run per trial, champion alias set", flush=True)
        if args.keep:
            print(f"rehearsal: servers kept: MLflow UI {uri} (Ctrl-C stops them)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
