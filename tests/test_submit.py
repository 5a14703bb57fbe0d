"""`mtlp submit` against a local fake of the KFP REST API: the requests it sends, and the URL it prints."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.submit import submit


class FakeKfpApi(BaseHTTPRequestHandler):
    """Answers the v2beta1 calls kfp.Client makes to create a run; records every request."""

    requests: list = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        self._reply({"experiments": [], "total_size": 0} if "/experiments" in self.path else {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-42", "display_name": body.get("display_name")})
        elif self.path.endswith("/runs"):
            self._reply({"run_id": "run-1234", "display_name": body.get("display_name")})
        else:
            self._reply({})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def fake_kfp():
    FakeKfpApi.requests = []
    server = HTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", FakeKfpApi.requests
    server.shutdown()


def test_submit_sends_the_compiled_pipeline_and_returns_the_run_url(fake_kfp) -> None:
    host, requests = fake_kfp
    config = load_config({"image": "reg.example/mtl:1", "models": ["mmoe", "esmm"]})
    url = submit(config, host, experiment="ranking", run_name="nightly-1",
                 arguments={"tracking_uri": "http://mlflow.mtlp.svc:5000"})
    assert url == f"{host}/#/runs/details/run-1234"

    posts = {path: body for method, path, body in requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "ranking"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly-1" and run["experiment_id"] == "exp-42"
    assert run["service_account"] == "mtl-pipeline-runner"
    assert set(run["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}  # the Kubernetes settings travel too
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert "secretAsEnv" in json.dumps(run["pipeline_spec"]["platform_spec"])
    assert spec["pipelineInfo"]["name"] == "mtl-pipeline"
    assert spec["root"]["inputDefinitions"]["parameters"]["models"]["defaultValue"] == ["mmoe", "esmm"]
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == "reg.example/mtl:1"
    params = run["runtime_config"]["parameters"]
    assert params["run_name"] == "nightly-1"
    assert params["tracking_uri"] == "http://mlflow.mtlp.svc:5000"


def test_cli_submit_prints_the_url(fake_kfp, capsys) -> None:
    host, requests = fake_kfp
    assert main(["submit", "--host", host, "--experiment", "e", "--run-name", "cli-run"]) == 0
    assert f"{host}/#/runs/details/run-1234" in capsys.readouterr().out
    assert any(m == "POST" and p.endswith("/runs") and b["display_name"] == "cli-run" for m, p, b in requests)


def test_cli_rejects_a_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [mmoe, tower_of_babel]\n")
    assert main(["compile", "--config", str(bad), "-o", str(tmp_path / "p.yaml")]) == 2
    assert "unknown model 'tower_of_babel'" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()
