"""Part 8: the model server under load, beside ``mlflow models serve``, on loopback, the same model, in one run.

One model (shared_bottom trained one epoch on Adult, exported, logged as the raw-rows pyfunc and registered as
``champion`` in a SQLite store) is served in turn by ``python -m workflow.serving.model_server`` (ours) and by
``mlflow models serve --env-manager local`` (MLflow's), one uvicorn worker each, on 127.0.0.1. ``clients``
threads, each on its own keep-alive connection, POST ``dataframe_split`` requests of raw Adult test rows (batch 1
and batch 100) as fast as answers come back, for ``seconds`` per cell or ``max_requests`` requests, whichever
ends first. Every answer is checked (HTTP 200 and one prediction per row): anything else counts as an error.
Reported per cell: requests, errors, rows/s, p50 / p99 latency, the load average; and ours / MLflow's rows/s.
The servers alternate (``rounds``; the order flips each round) so that load drifts hit both alike.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.environment import load_average
from pipeline.loopback import free_port

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench-serving"


def config(quick: bool) -> dict:
    return {"clients": 8, "batches": [1, 100], "seconds": 8.0 if quick else 20.0,
            "max_requests": 20000 if quick else 50000, "rounds": 1 if quick else 2, "warmup_requests": 20,
            "data_dir": os.environ.get("MTLP_SHARED_DATA", str(REPO.parent / "shared" / "data")) + "/adult"}


def build_model(work: Path, data_dir: Path, log) -> tuple[str, str]:
    """Prepare Adult, train shared_bottom one epoch, export, log the pyfunc and make it champion:
    ``(tracking URI, models:/bench-serving@champion)``."""
    from mlflow import MlflowClient

    from workflow import serving
    from workflow.data.datasets import adult
    from workflow.data.prepare import prepare
    from workflow.registry import promote_version, register_candidate
    from workflow.training.export import export
    from workflow.training.train import train

    prepare("adult", work / "prepared", data_dir=data_dir, seed=7)
    train(work / "prepared", "shared_bottom", work / "trained", n_epoch=1, device="cpu", progress=False)
    exported = export(work / "trained", work / "prepared")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    run_id = client.create_run(client.create_experiment("bench-serving",
                                                        artifact_location=(work / "artifacts").as_uri())).info.run_id
    example = adult.read_adult_file(Path(data_dir) / "adult.test").head(5).astype({c: "int64" for c in adult.DENSE})
    info = serving.log_candidate_model(client, run_id, exported.onnx_path, work / "trained" / "feature_spec.json",
                                       input_example=example)
    client.set_terminated(run_id)
    version = register_candidate(client, MODEL, info.model_uri, run_id=run_id, architecture="shared_bottom",
                                 test_metrics={}, test_score=0.0).version
    promote_version(client, MODEL, version, reason="bench", user="bench")
    log(f"model {MODEL} v{version} logged and promoted in {uri}")
    return uri, f"models:/{MODEL}@champion"


def bodies(data_dir: Path, batches: list[int]) -> dict[int, bytes]:
    from workflow.data.datasets import adult

    raw = adult.read_adult_file(Path(data_dir) / "adult.test").astype({c: "int64" for c in adult.DENSE})
    raw = raw.drop(columns=["income", "marital-status"])
    return {b: json.dumps({"dataframe_split": json.loads(raw.head(b).to_json(orient="split", index=False))}).encode()
            for b in batches}


def load(port: int, body: bytes, rows: int, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` threads POSTing ``body`` until ``seconds`` pass or ``max_requests`` have been sent."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []
    sent = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                if sent[0] >= max_requests:
                    break
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                ok = response.status == 200 and len(json.loads(answer)["predictions"]) == rows
                if not ok and not first_error:
                    first_error.append(f"HTTP {response.status}: {answer[:200]!r}")
            except Exception as e:  # a reset connection, a timeout: an error, and a new connection
                ok = False
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ok:
                latencies[i].append(time.perf_counter() - t0)
            else:
                errors[i] += 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array([x for part in latencies for x in part])
    return {"requests": int(sent[0]), "answered": int(len(lat)), "errors": int(sum(errors)),
            "first_error": first_error[0] if first_error else None, "seconds": round(wall, 2),
            "rows_s": float(len(lat) * rows / wall), "requests_s": float(len(lat) / wall),
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else None, "load": load_average()}


def _command(server: str, model_uri: str, port: int) -> list[str]:
    if server == "ours":
        from workflow import serving

        return serving.serve_command(model_uri, port)
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow), "models", "serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port), "-w", "1",
            "--env-manager", "local"]


def serve_and_load(server: str, model_uri: str, tracking_uri: str, cfg: dict, payloads: dict, work: Path,
                   log) -> list[dict]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log_path = work / f"{server}-{port}.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(_command(server, model_uri, port), stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=str(REPO), start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{server} server exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"{server} server did not answer /ping in 240 s")
                time.sleep(0.5)
        cells = []
        for batch in cfg["batches"]:
            load(port, payloads[batch], batch, 1, 60.0, cfg["warmup_requests"])  # warm-up, not counted
            cell = {"server": server, "batch": batch, "clients": cfg["clients"],
                    **load(port, payloads[batch], batch, cfg["clients"], cfg["seconds"], cfg["max_requests"])}
            log(f"{server} batch {batch}: {cell['rows_s']:,.0f} rows/s, p50 {cell['p50_ms']:.1f} ms, "
                f"p99 {cell['p99_ms']:.1f} ms, {cell['errors']} errors")
            cells.append(cell)
        return cells
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def summarise(cells: list[dict], batches: list[int]) -> dict:
    out = {}
    for b in batches:
        mine = [c for c in cells if c["batch"] == b and c["server"] == "ours"]
        theirs = [c for c in cells if c["batch"] == b and c["server"] == "mlflow"]
        ours_rows = float(np.median([c["rows_s"] for c in mine]))
        mlflow_rows = float(np.median([c["rows_s"] for c in theirs]))
        out[str(b)] = {"ours_rows_s": ours_rows, "mlflow_rows_s": mlflow_rows, "ratio": ours_rows / mlflow_rows,
                       "errors": int(sum(c["errors"] for c in mine + theirs))}
    return out


def run(cfg: dict, log) -> dict:
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        tracking_uri, model_uri = build_model(work, Path(cfg["data_dir"]), log)
        payloads = bodies(Path(cfg["data_dir"]), cfg["batches"])
        cells = []
        for r in range(cfg["rounds"]):
            order = ("ours", "mlflow") if r % 2 == 0 else ("mlflow", "ours")
            for server in order:
                cells += [dict(c, round=r) for c in serve_and_load(server, model_uri, tracking_uri, cfg, payloads,
                                                                   work, log)]
    return {"config": cfg, "cells": cells, "summary": summarise(cells, cfg["batches"])}
