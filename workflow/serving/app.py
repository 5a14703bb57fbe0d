"""The model server's ASGI app: MLflow's scoring protocol, answered by the version the alias follower holds now.

Routes and answers are those of MLflow's scoring server (``mlflow.pyfunc.scoring_server``): ``GET /ping`` and
``/health`` (200 once a version is loaded), ``POST /invocations`` with the same request formats, the same
predictions JSON and the same error answers (its own ``invocations`` function produces them), a 504 past
``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``. Two differences:

* **The version that answered.** Every response carries ``X-Model-Version`` (the registry version; empty for
  a URI without one), and ``GET /version`` answers JSON naming the model URI, the version served now, when it
  was loaded and MLflow's version (MLflow's own ``/version`` answers MLflow's version only).
* **Concurrent requests share a predict call.** A ``dataframe_split`` JSON request is parsed here and queued;
  the requests that arrive while a predict call runs are scored together in the next one (same columns only, up
  to ``max_batch_rows`` rows), and each gets its own rows back. The raw-rows pyfunc costs about the same for 1
  row as for 100 (docs/benchmarks.md, "Serving under load"), so this is where the throughput comes from. A
  batch that fails is re-run request by request through MLflow's own ``invocations``, so a bad request gets
  MLflow's exact error and does not fail its neighbours. Every other request (CSV, Parquet, ``inputs``,
  ``instances``, records, ``params``) goes through MLflow's ``invocations`` unchanged.

The version is read once when a request starts: a request in flight finishes on the version it started on,
however the alias moves meanwhile (:mod:`.follow`).
"""

from __future__ import annotations

import asyncio
import json
import os
from io import StringIO
from typing import Any, Optional

__all__ = ["ScoringApp", "Batcher", "VERSION_HEADER", "DEFAULT_MAX_BATCH_ROWS"]

VERSION_HEADER = b"x-model-version"
DEFAULT_MAX_BATCH_ROWS = 4096


class Batcher:
    """Scores queued requests of one model together: one predict call per group of requests with the same columns.

    A request is ``(columns, rows)`` as JSON gave them; a group's rows become one DataFrame, the predictions one
    list of records, and each request gets its own slice back."""

    def __init__(self, model: Any, max_rows: int = DEFAULT_MAX_BATCH_ROWS) -> None:
        self.model = model
        self.max_rows = max(int(max_rows), 1)
        self._pending: list[tuple[tuple, list, asyncio.Future]] = []
        self._draining = False
        self.calls = 0  # predict calls made (batches), for tests and the bench

    async def predict(self, columns: tuple, rows: list) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((columns, rows, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, n = [], 0
                while self._pending and (not batch or n + len(self._pending[0][1]) <= self.max_rows):
                    item = self._pending.pop(0)
                    batch.append(item)
                    n += len(item[1])
                groups: dict[tuple, list] = {}
                for item in batch:
                    groups.setdefault(item[0], []).append(item)
                for columns, items in groups.items():
                    await self._score(columns, items)
        finally:
            self._draining = False

    async def _score(self, columns: tuple, items: list) -> None:
        try:
            records = await asyncio.to_thread(self._predict_together, columns, [rows for _, rows, _ in items])
        except Exception as e:  # a bad request spoils the batch: its requests are answered one by one instead
            for _, _, future in items:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():  # the client may have gone (request timeout): nobody waits for it
                future.set_result(records[start:start + len(rows)])
            start += len(rows)

    def _predict_together(self, columns: tuple, parts: list) -> list:
        import pandas as pd

        self.calls += 1
        rows = parts[0] if len(parts) == 1 else [row for part in parts for row in part]
        frame = pd.DataFrame(rows, columns=list(columns))
        out = self.model.predict(frame)
        out = out if isinstance(out, pd.DataFrame) else pd.DataFrame(out)
        if len(out) != len(frame):
            raise ValueError(f"predict answered {len(out)} rows for {len(frame)}")
        return out.to_dict(orient="records")  # what MLflow's predictions_to_json writes for a DataFrame


def _fast_split(body: bytes, content_type: Optional[str]) -> Optional[tuple[tuple, list]]:
    """``(columns, rows)`` of a plain ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` JSON request;
    ``None`` for anything else (MLflow's own parsing then handles it, errors included)."""
    if content_type is None:
        return None
    mime, _, params = content_type.partition(";")
    if mime.strip() != "application/json" or params.strip().lower().replace(" ", "") not in ("", "charset=utf-8"):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or list(parsed) != ["dataframe_split"]:
        return None
    split = parsed["dataframe_split"]
    if not isinstance(split, dict) or set(split) != {"columns", "data"}:
        return None
    columns, data = split["columns"], split["data"]
    if not (isinstance(columns, list) and isinstance(data, list) and all(isinstance(c, str) for c in columns)
            and len(set(columns)) == len(columns) and all(isinstance(r, list) and len(r) == len(columns)
                                                          for r in data)):
        return None
    return tuple(columns), data


async def _respond(send: Any, status: int, body: bytes | str, media_type: str, version: str) -> None:
    body = body.encode() if isinstance(body, str) else body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()),
                            (VERSION_HEADER, version.encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> Optional[bytes]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class ScoringApp:
    """ASGI app over an :class:`~workflow.serving.follow.AliasFollower` (anything with ``current`` and
    ``model_uri``); ``current.batcher`` is this module's :class:`Batcher` for that version (set by the server)."""

    def __init__(self, follower: Any, timeout: Optional[float] = None) -> None:
        self.follower = follower
        if timeout is None:
            from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
            timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
        self.timeout = timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        served = self.follower.current  # read once: this request is answered by this version to the end
        version = served.version if served is not None else ""
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path in ("/ping", "/health") and method in ("GET", "HEAD"):
            await _respond(send, 200 if served is not None else 404, "\n", "application/json", version)
        elif path == "/version" and method in ("GET", "HEAD"):
            await _respond(send, 200, self._version_json(served), "application/json", version)
        elif path == "/invocations" and method == "POST":
            body = await _read_body(receive)
            if body is not None:
                await self._invocations(scope, body, served, send)
        elif path in ("/ping", "/health", "/version", "/invocations"):
            await _respond(send, 405, '{"detail":"Method Not Allowed"}', "application/json", version)
        else:
            await _respond(send, 404, '{"detail":"Not Found"}', "application/json", version)

    def _version_json(self, served: Any) -> str:
        import mlflow

        return json.dumps({"model_uri": self.follower.model_uri, "model_version": served.version if served else None,
                           "loaded_at": served.loaded_at if served else None, "mlflow_version": mlflow.__version__})

    async def _invocations(self, scope: dict, body: bytes, served: Any, send: Any) -> None:
        from mlflow.exceptions import MlflowException

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        content_type = headers.get("content-type")
        try:
            status, text, media = await asyncio.wait_for(self._score(served, body, content_type), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            status, text, media = 504, "Request processing time exceeded limit", "application/json"
        except MlflowException as e:
            status, text, media = e.get_http_status_code(), e.serialize_as_json(), "application/json"
        await _respond(send, status, text, media, served.version)

    async def _score(self, served: Any, body: bytes, content_type: Optional[str]) -> tuple[int, str, str]:
        from mlflow.pyfunc import scoring_server

        split = _fast_split(body, content_type)
        if split is not None:
            try:
                records = await served.batcher.predict(*split)
            except Exception:
                pass  # answered below by MLflow's own path, with its own error for this request
            else:
                out = StringIO()
                scoring_server.predictions_to_json(records, out)
                return 200, out.getvalue(), "application/json"
        if content_type is None:
            content_type = ""  # no Content-Type: MLflow's invocations answers 415, naming the types it takes
        result = await asyncio.to_thread(scoring_server.invocations, body, content_type, served.model,
                                         served.model.metadata.get_input_schema())
        return result.status, result.response, result.mimetype


def serving_environment() -> None:
    """What MLflow's ``init`` sets for a model served: models may read it (``_MLFLOW_IS_IN_SERVING_ENVIRONMENT``)."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"
