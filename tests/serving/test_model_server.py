"""workflow.serving.model_server: the request body cap (ASGI middleware) in front of MLflow's scoring app.

The middleware is driven here with hand-made ASGI messages (no model, no socket); the served champion is tested
through HTTP in tests/test_serving.py and tests/reliability/test_rel_serving_inputs.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from workflow.serving import model_server
from workflow import serving
from workflow.serving.model_server import BodySizeLimit, max_request_bytes


class Recorder:
    """An ASGI app that reads the whole body and answers 200 with its length; records what it received."""

    def __init__(self):
        self.calls = 0
        self.chunks: list[bytes] = []

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = json.dumps({"length": sum(map(len, self.chunks))}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _drive(app, chunks: list[bytes], content_length: int | None = None, scope_type: str = "http"):
    """Run one request through ``app``; ``(status, json body or None, number of receive() calls)``."""
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": scope_type, "method": "POST", "path": "/invocations", "headers": headers}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []
    reads = [0]

    async def receive():
        reads[0] += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, None, reads[0]
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body), reads[0]


def test_content_length_over_the_cap_is_refused_without_reaching_the_app():
    inner = Recorder()
    chunks = [b"x" * 500] * 3
    status, answer, reads = _drive(BodySizeLimit(inner, 1000), chunks, content_length=1500)
    assert status == 413 and inner.calls == 0
    assert reads == 3  # the refused body is drained (read and dropped) before the answer, for urllib-like clients
    assert answer["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert "Content-Length is 1500 bytes" in answer["message"] and "at most 1000 bytes" in answer["message"]
    assert "MTLP_MAX_REQUEST_BYTES" in answer["message"] and "xxx" not in answer["message"]


def test_content_length_beyond_the_drain_limit_is_answered_without_reading():
    inner = Recorder()
    status, answer, reads = _drive(BodySizeLimit(inner, 1000, drain_bytes=4000), [b"x" * 500], content_length=5000)
    assert status == 413 and reads == 0 and inner.calls == 0
    assert "Content-Length is 5000 bytes" in answer["message"]


def test_streamed_body_is_counted_and_refused_once_past_the_cap():
    inner = Recorder()
    chunks = [b"a" * 400] * 10  # 4000 bytes, no Content-Length (chunked transfer)
    status, answer, reads = _drive(BodySizeLimit(inner, 1000), chunks)
    assert status == 413 and inner.calls == 0 and reads == 10
    assert "more than 1000 bytes received" in answer["message"] and "aaa" not in answer["message"]
    # draining stops at drain_bytes: here after the chunk that passes 2000 bytes
    inner = Recorder()
    status, answer, reads = _drive(BodySizeLimit(inner, 1000, drain_bytes=2000), chunks)
    assert status == 413 and inner.calls == 0 and reads == 6


def test_a_lying_small_content_length_is_still_counted():
    inner = Recorder()
    status, answer, _ = _drive(BodySizeLimit(inner, 1000), [b"b" * 600, b"b" * 600], content_length=10)
    assert status == 413 and inner.calls == 0 and answer["error_code"] == "RESOURCE_LIMIT_EXCEEDED"


@pytest.mark.parametrize("chunks,length", [([b"c" * 1000], 1000), ([b"c" * 300, b"", b"c" * 700], None),
                                           ([b""], 0), ([b""], None)])
def test_bodies_up_to_the_cap_reach_the_app_unchanged(chunks, length):
    inner = Recorder()
    status, answer, _ = _drive(BodySizeLimit(inner, 1000), chunks, content_length=length)
    assert status == 200 and inner.calls == 1
    assert inner.chunks == chunks and answer == {"length": sum(map(len, chunks))}


def test_bad_content_length_is_a_400():
    inner = Recorder()
    app = BodySizeLimit(inner, 1000)
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [(b"content-length", b"12x")]}
    sent = []

    async def send(m):
        sent.append(m)

    async def receive():  # pragma: no cover - must not be called
        raise AssertionError("body read")

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and inner.calls == 0
    assert json.loads(sent[1]["body"])["error_code"] == "BAD_REQUEST"


def test_zero_cap_and_non_http_scopes_pass_through():
    inner = Recorder()
    status, answer, _ = _drive(BodySizeLimit(inner, 0), [b"d" * 5000], content_length=5000)
    assert status == 200 and answer == {"length": 5000}
    inner = Recorder()
    assert _drive(BodySizeLimit(inner, 10), [], scope_type="lifespan")[0] is None and inner.calls == 1


def test_client_gone_mid_body_gets_no_answer_and_the_app_is_not_called():
    inner = Recorder()

    async def run():
        sent = []
        messages = [{"type": "http.request", "body": b"e" * 10, "more_body": True}, {"type": "http.disconnect"}]

        async def receive():
            return messages.pop(0)

        async def send(m):
            sent.append(m)

        await BodySizeLimit(inner, 1000)({"type": "http", "path": "/", "headers": []}, receive, send)
        return sent

    assert asyncio.run(run()) == [] and inner.calls == 0


def test_cap_from_argument_environment_or_default(monkeypatch):
    monkeypatch.delenv("MTLP_MAX_REQUEST_BYTES", raising=False)
    assert max_request_bytes() == 16 * 1024 * 1024 == model_server.DEFAULT_MAX_REQUEST_BYTES
    monkeypatch.setenv("MTLP_MAX_REQUEST_BYTES", "2048")
    assert max_request_bytes() == 2048
    assert max_request_bytes("4096") == 4096 and max_request_bytes(0) == 0
    monkeypatch.setenv("MTLP_MAX_REQUEST_BYTES", "16MB")
    with pytest.raises(ValueError, match="MTLP_MAX_REQUEST_BYTES must be a whole number of bytes, got '16MB'"):
        max_request_bytes()
    with pytest.raises(ValueError, match=">= 0"):
        max_request_bytes("-1")


def test_cli_refuses_a_bad_cap_before_loading_anything(capsys):
    assert model_server.main(["-m", "models:/nothing@champion", "--max-request-bytes", "lots"]) == 2
    assert "--max-request-bytes must be a whole number of bytes, got 'lots'" in capsys.readouterr().err


def test_serve_command_runs_the_capped_server():
    cmd = serving.serve_command("models:/m@champion", 8123, max_request_bytes=1024)
    assert cmd[1:3] == ["-m", "workflow.serving.model_server"]
    assert cmd[cmd.index("-m", 3) + 1] == "models:/m@champion" and cmd[cmd.index("-p") + 1] == "8123"
    assert cmd[cmd.index("--max-request-bytes") + 1] == "1024"
    assert "--max-request-bytes" not in serving.serve_command("models:/m@champion", 8123)


def test_model_server_imports_no_torch():
    """The serving process stays torch-free (ONNX Runtime pyfunc): the server's modules, the encoders and MLflow's
    scoring app (the serving image has no torch: deploy/Dockerfile's `serving` target checks the same imports)."""
    import subprocess
    import sys

    code = ("import sys, workflow.serving, workflow.serving.model_server, workflow.serving.app, workflow.serving.follow\n"
            "import workflow.data.encoders, workflow.data.feature_spec, mlflow.pyfunc.scoring_server\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mtl_models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
