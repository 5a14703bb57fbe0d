"""The model server follows the alias it serves (workflow/serving/follow.py, app.py).

Slow test: a real ``mlflow server`` on loopback holding three versions of one model (two trained candidates and a
third whose ONNX file is broken), and ``python -m workflow.serving.model_server`` serving ``@champion`` with a
1-second interval. A promotion is answered by the new version within the interval (plus load), the broken version
is refused while the old one keeps answering, a rollback is followed. Fast tests: a request in flight finishes on
the version it started on; the settings' parsing."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import embedded_pipeline, quiet_mlflow, raw_test_rows  # noqa: E402
from _registry_server import log_version, mlflow_server, server_env  # noqa: E402
from _servers import background, free_port, wait_http  # noqa: E402

from workflow import serving  # noqa: E402
from workflow.serving import app as scoring_app  # noqa: E402
from workflow.serving import follow, model_server  # noqa: E402

quiet_mlflow()
MODEL = "follow-me"
INTERVAL = 1.0


def _version_of(url: str, body: bytes) -> tuple[str, np.ndarray]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        preds = json.loads(r.read())["predictions"]
        return r.headers["X-Model-Version"], np.array([[p["income"], p["never_married"]] for p in preds])


def _wait_for_version(url: str, body: bytes, want: str, limit: float, start: float) -> float:
    """Seconds from ``start`` (a ``perf_counter`` reading) until a response names ``want`` (fails after ``limit``)."""
    while time.perf_counter() - start < limit:
        if _version_of(url, body)[0] == want:
            return time.perf_counter() - start
        time.sleep(0.05)
    pytest.fail(f"the server did not answer with version {want} within {limit}s")


@pytest.mark.slow
def test_server_follows_promotion_refuses_a_broken_version_and_follows_rollback(adult_dir, tmp_path_factory,
                                                                                tmp_path):
    from mlflow import MlflowClient

    from workflow import registry

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    raw = raw_test_rows(adult_dir, nrows=16)
    body = json.dumps({"dataframe_split": json.loads(raw.to_json(orient="split", index=False))}).encode()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    with mlflow_server(tmp_path / "registry") as (url, _):
        client = MlflowClient(url, url)
        exp = client.create_experiment("follow")
        versions, expected = [], {}
        for cand, onnx in [(c, run.work / c.model_name / "model.onnx") for c in run.candidates] + [(None, broken)]:
            spec = run.work / run.candidates[0].model_name / "feature_spec.json"
            versions.append(log_version(client, exp, MODEL, onnx, spec, raw.head(5)))
        first, second, bad = versions
        import mlflow
        mlflow.set_tracking_uri(url)
        for v in (first, second):
            expected[v] = mlflow.pyfunc.load_model(f"models:/{MODEL}/{v}").predict(raw).to_numpy()
        assert not np.allclose(expected[first], expected[second])  # the answer tells the versions apart
        registry.promote_version(client, MODEL, first, reason="test: first champion", user="ci")

        port = free_port()
        served = f"http://127.0.0.1:{port}"
        log = tmp_path / "serve.log"
        cmd = serving.serve_command(f"models:/{MODEL}@champion", port, follow_interval=INTERVAL)
        with background(cmd, log, env=server_env({"MLFLOW_TRACKING_URI": url})) as proc:
            wait_http(f"{served}/ping", proc, 180, log)
            version, got = _version_of(served, body)
            assert version == first and np.abs(got - expected[first]).max() <= 1e-6
            assert json.loads(urllib.request.urlopen(f"{served}/version").read())["model_version"] == first

            # promote: answered by the new version within the interval (+ download, load and check)
            start = time.perf_counter()
            registry.promote_version(client, MODEL, second, reason="test: promote", user="ci")
            promoted = time.perf_counter()  # the alias has moved (the call also takes and frees the promotion lock)
            took = _wait_for_version(served, body, second, INTERVAL + 30, promoted)
            _, got = _version_of(served, body)
            assert np.abs(got - expected[second]).max() <= 1e-6
            print(f"promotion: `promote_version` took {promoted - start:.2f}s; first answer from version {second} "
                  f"{took:.2f}s after it returned (interval {INTERVAL}s)")

            # a broken version is refused: the old one keeps answering, the log says why
            registry.promote_version(client, MODEL, bad, reason="test: broken", user="ci")
            deadline = time.time() + 60
            while f"refused version {bad}" not in log.read_text() and time.time() < deadline:
                assert _version_of(served, body)[0] == second
                time.sleep(0.2)
            text = log.read_text()
            assert re.search(rf"refused version {bad} of models:/{MODEL}@champion: it could not be loaded: .*; "
                             rf"still serving version {second}", text), text[-3000:]
            for _ in range(3):
                time.sleep(INTERVAL)
                version, got = _version_of(served, body)
                assert version == second and np.abs(got - expected[second]).max() <= 1e-6
            assert text.count(f"refused version {bad}") == 1  # not retried every interval
            print(next(line for line in text.splitlines() if f"refused version {bad}" in line))

            # rollback (to the version before the broken one's promotion: the second): then to the first
            start = time.perf_counter()
            client.set_registered_model_alias(MODEL, "champion", first)
            took_back = _wait_for_version(served, body, first, INTERVAL + 30, start)
            _, got = _version_of(served, body)
            assert np.abs(got - expected[first]).max() <= 1e-6
            assert proc.poll() is None
            print(f"rollback to version {first} answered after {took_back:.2f}s")


class _SlowModel:
    """A pyfunc stand-in whose predict waits until released; answers ``value`` per row."""

    def __init__(self, value: float, gate: threading.Event | None = None) -> None:
        self.value, self.gate, self.started = value, gate, threading.Event()
        self.metadata = SimpleNamespace(get_input_schema=lambda: None)

    def predict(self, frame):
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return pd.DataFrame({"p": [self.value] * len(frame)})


def _served(version: str, model) -> SimpleNamespace:
    return SimpleNamespace(version=version, model=model, loaded_at=0.0, batcher=scoring_app.Batcher(model))


def _request(app, body: bytes):
    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": [(b"content-type", b"application/json")]}
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    async def run():
        await app(scope, receive, send)
        return sent
    return run()


def test_a_request_in_flight_finishes_on_the_version_it_started_on():
    gate = threading.Event()
    old = _SlowModel(0.25, gate)
    follower = SimpleNamespace(current=_served("7", old), model_uri="models:/m@champion")
    app = scoring_app.ScoringApp(follower, timeout=30)
    body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}).encode()

    async def scenario():
        in_flight = asyncio.ensure_future(_request(app, body))
        while not old.started.is_set():
            await asyncio.sleep(0.01)
        follower.current = _served("8", _SlowModel(0.75))  # the swap, while version 7 is predicting
        after = await _request(app, body)
        gate.set()
        return await in_flight, after

    before, after = asyncio.run(scenario())
    for sent, version, value in [(before, b"7", 0.25), (after, b"8", 0.75)]:
        assert sent[0]["status"] == 200 and (b"x-model-version", version) in sent[0]["headers"]
        assert json.loads(sent[1]["body"]) == {"predictions": [{"p": value}, {"p": value}]}


def test_concurrent_requests_share_one_predict_call_and_get_their_own_rows():
    class Echo(_SlowModel):
        def predict(self, frame):
            return pd.DataFrame({"p": frame["a"].astype(float) * 10})

    model = Echo(0)
    follower = SimpleNamespace(current=_served("1", model), model_uri="m")
    app = scoring_app.ScoringApp(follower, timeout=30)
    bodies = [json.dumps({"dataframe_split": {"columns": ["a"], "data": [[i], [i + 0.5]]}}).encode()
              for i in range(6)]

    async def scenario():
        return await asyncio.gather(*[_request(app, b) for b in bodies])

    answers = asyncio.run(scenario())
    for i, sent in enumerate(answers):
        assert json.loads(sent[1]["body"]) == {"predictions": [{"p": i * 10.0}, {"p": (i + 0.5) * 10}]}
    assert follower.current.batcher.calls < len(bodies)  # scored together, not one call per request


def test_alias_uri_and_interval_settings(monkeypatch):
    assert follow.parse_alias_uri("models:/adult-mtl@champion") == ("adult-mtl", "champion")
    assert follow.parse_alias_uri("models:/adult-mtl/3") is None and follow.parse_alias_uri("runs:/x/m") is None
    monkeypatch.delenv("MTLP_FOLLOW_INTERVAL", raising=False)
    assert model_server.follow_interval() == 30.0 and model_server.follow_interval("2.5") == 2.5
    monkeypatch.setenv("MTLP_FOLLOW_INTERVAL", "0")
    assert model_server.follow_interval() == 0.0
    monkeypatch.setenv("MTLP_FOLLOW_INTERVAL", "soon")
    with pytest.raises(ValueError, match="MTLP_FOLLOW_INTERVAL must be a number of seconds, got 'soon'"):
        model_server.follow_interval()
    with pytest.raises(ValueError, match=">= 0"):
        model_server.follow_interval("-1")
    cmd = serving.serve_command("models:/m@champion", 8123, follow_interval=5)
    assert cmd[cmd.index("--follow-interval") + 1] == "5"
