"""Group 5b: bad serving requests. Each case POSTs to ``/invocations`` of the champion served by
``python -m workflow.serving.model_server`` (MLflow's scoring app behind our 16 MiB body cap; the session's
``champion_server``, shared with ``tests/test_serving.py``) and must get the status and message below; afterwards
the same server still answers a valid request with 200 and one prediction per row, per task."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit
from dataclasses import dataclass
from typing import Callable

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import quiet_mlflow, raw_test_rows  # noqa: E402
from _servers import post  # noqa: E402

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
quiet_mlflow()

N_ROWS = 8
OVERSIZED = 50 * 1024 * 1024  # bytes
CAP = 16 * 1024 * 1024  # workflow.serving.model_server's default MTLP_MAX_REQUEST_BYTES
TOO_LARGE = "Request body too large"


@dataclass
class Case:
    id: str
    body: Callable[[dict], bytes]  # good "dataframe_split" payload -> request body
    status: int
    message: str  # substring of the answer's message
    error: bool = True  # an MLflow JSON error answer ({"error_code", "message"}); False: predictions
    error_code: tuple = ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")  # both are HTTP 400
    chunked: bool = False  # sent with Transfer-Encoding: chunked (no Content-Length)


def _split(good: dict, edit: Callable[[list, list], None]) -> bytes:
    columns, data = list(good["columns"]), [list(r) for r in good["data"]]
    edit(columns, data)
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def _drop(column: str):
    def edit(columns, data):
        i = columns.index(column)
        del columns[i]
        for row in data:
            del row[i]
    return edit


def _rename(column: str, to: str):
    def edit(columns, data):
        columns[columns.index(column)] = to
    return edit


def _set(column: str, value):
    def edit(columns, data):
        i = columns.index(column)
        for row in data:
            row[i] = value
    return edit


def _add(column: str, value):
    def edit(columns, data):
        columns.append(column)
        for row in data:
            row.append(value)
    return edit


def _padded(good: dict, size: int = OVERSIZED) -> bytes:
    """A valid request grown to ``size`` bytes by a key the scoring server does not read."""
    head = json.dumps({"dataframe_split": good})[:-1] + ', "padding": "'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def _post_chunked(url: str, body: bytes, chunk: int = 1024 * 1024, timeout: float = 120) -> tuple[int, bytes]:
    """POST ``body`` in 1 MiB chunks with ``Transfer-Encoding: chunked`` and no ``Content-Length``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path, body=(body[i:i + chunk] for i in range(0, len(body), chunk)),
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                     encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


CASES = [
    Case("columns: one missing", lambda g: _split(g, _drop("age")), 400, "missing inputs ['age']"),
    Case("columns: unknown name instead of a known one", lambda g: _split(g, _rename("hours-per-week", "hours")),
         400, "missing inputs ['hours-per-week']"),
    Case("types: string where a number is expected", lambda g: _split(g, _set("age", "thirty")), 400,
         "Failed to convert column age to type 'int64'"),
    Case("types: null where a number is expected", lambda g: _split(g, _set("age", None)), 400,
         "Failed to convert column age to type 'int64'"),
    # regression: was 200, the object spelled "{'a': 1}" and scored as an unseen workclass (workflow/serving/pyfunc_model.py)
    Case("types: a JSON object in a string cell", lambda g: _split(g, _set("workclass", {"a": 1})), 400,
         "column 'workclass' holds a dict in row 0: raw rows take one number or string per cell"),
    Case("body: empty", lambda g: b"", 400, "Ensure that input is a valid JSON formatted string"),
    Case("body: malformed JSON", lambda g: b'{"dataframe_split": {"columns": ["age"', 400,
         "Ensure that input is a valid JSON formatted string"),
    Case("body: JSON without dataframe_split/records/instances/inputs", lambda g: b'{"rows": []}', 400,
         "dataframe_split"),
    # regression: was 200 (MLflow's scoring server has no size cap); workflow.serving.model_server refuses it up front
    Case("body: 50 MB (over the 16 MiB cap)", _padded, 413, "Content-Length is 52428800 bytes",
         error_code=("RESOURCE_LIMIT_EXCEEDED",)),
    # regression: was 400 quoting the whole 50 MB body back; now refused before MLflow parses (and echoes) it
    Case("body: 50 MB, malformed JSON", lambda g: b'{"dataframe_split": "' + b"x" * OVERSIZED, 413,
         "Content-Length is 52428821 bytes", error_code=("RESOURCE_LIMIT_EXCEEDED",)),
    Case("body: 50 MB chunked, no Content-Length (counted while streaming)", _padded, 413,
         f"more than {CAP} bytes received", error_code=("RESOURCE_LIMIT_EXCEEDED",), chunked=True),
    Case("body: 15 MiB valid request (under the cap)", lambda g: _padded(g, 15 * 1024 * 1024), 200, "", False),
    Case("body: 15 MiB valid request, chunked (under the cap)", lambda g: _padded(g, 15 * 1024 * 1024), 200, "",
         False, chunked=True),
    Case("columns: unknown extra column beside the known ones (ignored)", lambda g: _split(g, _add("zodiac", "leo")),
         200, "", False),
]


@pytest.fixture(scope="module")
def good(adult_dir) -> dict:
    raw = raw_test_rows(adult_dir, nrows=N_ROWS)
    return json.loads(raw.to_json(orient="split", index=False))


def _assert_serves(url: str, good: dict) -> None:
    status, body = post(f"{url}/invocations", json.dumps({"dataframe_split": good}).encode())
    assert status == 200, body[:2000]
    preds = json.loads(body)["predictions"]
    assert len(preds) == N_ROWS and all(set(p) == {"income", "never_married"} for p in preds)
    assert all(0.0 <= p[k] <= 1.0 for p in preds for k in p)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_gets_a_clear_4xx_and_the_server_stays_up(champion_server, good, case: Case):
    url, proc, _, log = champion_server
    body = case.body(good)
    started = time.monotonic()
    status, answer = (_post_chunked if case.chunked else post)(f"{url}/invocations", body)
    elapsed = time.monotonic() - started
    assert proc.poll() is None, log.read_text()[-3000:]
    assert status == case.status, (status, answer[:2000])
    if case.error:
        error = json.loads(answer)
        print(f"{case.id}: {error['error_code']}: {error['message'][:300]!r}")
        assert error["error_code"] in case.error_code, error
        assert case.message in error["message"], error["message"][:2000]
        if status == 413:
            assert TOO_LARGE in error["message"] and f"at most {CAP} bytes" in error["message"]
            assert "MTLP_MAX_REQUEST_BYTES" in error["message"] and b"xxxxxxxx" not in answer
        assert len(answer) < 100_000  # no body echoed back (MLflow quotes a malformed body: kept under the cap)
    else:
        preds = json.loads(answer)["predictions"]
        assert len(preds) == N_ROWS and set(preds[0]) == {"income", "never_married"}
    print(f"{case.id}: {status} in {elapsed:.2f} s ({len(body)} bytes in, {len(answer)} bytes out)")
    _assert_serves(url, good)


def test_number_where_a_string_is_expected_is_an_unseen_category(champion_server, good):
    """MLflow's schema enforcement accepts 7 for the ``string`` column ``workclass`` (no 4xx); the feature spec
    spells it "7", an unseen category, so the row is scored exactly as with a missing workclass ("?")."""
    url, proc, _, _ = champion_server
    answers = []
    for value in (7, "?"):
        status, answer = post(f"{url}/invocations", _split(good, _set("workclass", value)))
        assert status == 200, answer[:2000]
        answers.append([[p["income"], p["never_married"]] for p in json.loads(answer)["predictions"]])
    assert len(answers[0]) == N_ROWS and answers[0] == answers[1]
    assert proc.poll() is None
    _assert_serves(url, good)


def test_the_cap_is_configurable_through_the_environment(champion_server, good, tmp_path):
    """A second server of the same champion with ``MTLP_MAX_REQUEST_BYTES=4096``: the 8-row request (under 4 KiB)
    is served, the same request padded to 5000 bytes gets the 413, plain and chunked."""
    from _mlflow_helpers import MODEL_NAME
    from _servers import background, free_port, wait_http

    from workflow import serving

    _, _, run, _ = champion_server
    port = free_port()
    env = serving.serve_environment(tracking_uri=run.tracking.uri)
    env["MTLP_MAX_REQUEST_BYTES"] = "4096"
    log = tmp_path / "serve-4k.log"
    with background(serving.serve_command(f"models:/{MODEL_NAME}@champion", port), log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", proc, 180, log)
        small = json.dumps({"dataframe_split": good}).encode()
        assert len(small) < 4096
        _assert_serves(url, good)
        for send in (post, _post_chunked):
            status, answer = send(f"{url}/invocations", _padded(good, 5000))
            assert status == 413, answer[:2000]
            assert "at most 4096 bytes" in json.loads(answer)["message"]
        _assert_serves(url, good)
        assert proc.poll() is None
    assert "request bodies up to 4096 bytes" in log.read_text()
    assert "413 for /invocations" in log.read_text()
