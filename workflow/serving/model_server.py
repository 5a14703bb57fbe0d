"""The model server: MLflow's scoring protocol behind a request-size cap, following the alias it serves.

``python -m workflow.serving.model_server -m models:/<name>@champion --port 8080`` answers like
``mlflow models serve --env-manager local`` (``/ping``, ``/health``, ``POST /invocations``, the same answers and
error messages: :mod:`.app` calls MLflow's own ``invocations``) and adds:

* **Following the alias** (:mod:`.follow`): every ``--follow-interval`` seconds (``$MTLP_FOLLOW_INTERVAL``,
  default 30; 0 never) the server asks the registry where the alias points; a new version is loaded, checked on
  the sample rows stored with it, and swapped in atomically; requests in flight finish on the old one. A version
  that fails its check is refused and logged; the old one keeps serving. ``X-Model-Version`` on every response
  and ``GET /version`` name the version that answered.
* **Concurrent requests scored together** (:mod:`.app`): ``dataframe_split`` requests that arrive while a predict
  call runs share the next one (up to ``--max-batch-rows``).
* **A maximum request body size.** A body larger than the cap is refused with HTTP 413 and an MLflow-style JSON
  error before the model sees it:

  * a ``Content-Length`` above the cap is refused up front: the body is never handed to MLflow;
  * a body without a length (chunked transfer), or longer than its ``Content-Length``, is counted while it
    arrives and refused once it passes the cap, so at most ``cap`` bytes (plus one chunk) are ever held.

  A refused body is read on and discarded (up to 64 MiB) before the 413 is sent, so that clients which write the
  whole body before reading (``urllib``) get the answer rather than a reset connection. The answer never quotes
  the request body. The cap is ``--max-request-bytes``, else the environment variable ``MTLP_MAX_REQUEST_BYTES``,
  else 16 MiB (``0`` turns it off). Accepted bodies are passed on unchanged, chunk by chunk.

No torch import: this module needs only MLflow, uvicorn and the model's own dependencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

from ..errors import cli_error
from .app import DEFAULT_MAX_BATCH_ROWS

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "MAX_BYTES_ENV", "FOLLOW_ENV", "BodySizeLimit", "max_request_bytes",
           "follow_interval", "build_app", "app_from_env", "main", "serve_command", "serve_environment"]

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_BYTES_ENV = "MTLP_MAX_REQUEST_BYTES"
MODEL_URI_ENV = "MTLP_SERVE_MODEL_URI"  # set by main() for uvicorn's workers
FOLLOW_ENV = "MTLP_FOLLOW_INTERVAL"
DEFAULT_FOLLOW_INTERVAL = 30.0
BATCH_ENV = "MTLP_MAX_BATCH_ROWS"
TOO_LARGE_CODE = "RESOURCE_LIMIT_EXCEEDED"  # an MLflow ErrorCode name; the HTTP status is 413
DRAIN_BYTES = 64 * 1024 * 1024  # a refused body is read and discarded up to this size before the 413 (see below)

log = logging.getLogger("workflow.serving.model_server")

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
N = TypeVar("N", int, float)


def _setting(value: Optional[str | int | float], flag: str, env: str, default: N, parse: Callable[[Any], N],
             unit: str, zero: str) -> N:
    """A server setting: ``value`` (from ``flag``) if given, else ``$env``, else ``default``; parsed, >= 0.
    The error names where the bad value came from, the flag or the variable."""
    source = flag
    if value is None:
        value, source = os.environ.get(env), env
    if value is None or value == "":
        return default
    try:
        parsed = parse(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be {unit}, got {value!r}") from None
    if not parsed >= 0:  # also refuses NaN
        raise ValueError(f"{source} must be >= 0 (0: {zero}), got {value!r}")
    return parsed


def max_request_bytes(value: Optional[str | int] = None) -> int:
    """The cap in bytes: ``value`` if given, else ``$MTLP_MAX_REQUEST_BYTES``, else 16 MiB. 0 = no cap."""
    return _setting(value, "--max-request-bytes", MAX_BYTES_ENV, DEFAULT_MAX_REQUEST_BYTES, int,
                    "a whole number of bytes", "no limit")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


async def _json_error(send: Send, status: int, error_code: str, message: str) -> None:
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: refuse HTTP request bodies larger than ``max_bytes`` with 413 (``max_bytes=0``: no cap).

    An accepted body is read here and then replayed to ``app`` message by message, so the app sees exactly what
    the client sent; MLflow's app reads whole bodies anyway, so this holds no more memory. A refused body is read
    on and thrown away (up to ``drain_bytes`` in all) before the 413 goes out: clients such as ``urllib`` send
    ``Connection: close`` and write the whole body before reading the answer, and uvicorn closes such a
    connection right after the answer, so answering mid-body would reset it and the client would see a broken
    pipe instead of the 413. Beyond ``drain_bytes`` (or a declared length above it) the 413 is sent at once.
    """

    def __init__(self, app: Callable, max_bytes: int, drain_bytes: int = DRAIN_BYTES) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.drain_bytes = max(int(drain_bytes), self.max_bytes)

    def _too_large(self, what: str) -> str:
        return (f"Request body too large: {what}; this server accepts at most {self.max_bytes} bytes "
                f"({_mib(self.max_bytes)}, set by --max-request-bytes or {MAX_BYTES_ENV}). "
                "Send fewer rows per request.")

    async def _refuse(self, scope: Scope, send: Send, what: str, received: int) -> None:
        log.warning("413 for %s: request body %s (%d bytes read), cap %d bytes", scope.get("path"), what, received,
                    self.max_bytes)
        await _json_error(send, 413, TOO_LARGE_CODE, self._too_large(what))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        refusal: Optional[str] = None
        lengths = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = max(int(v) for v in lengths)
            except ValueError:
                await _json_error(send, 400, "BAD_REQUEST", "Content-Length header is not a whole number")
                return
            if declared > self.max_bytes:
                refusal = f"Content-Length is {declared} bytes"
                if declared > self.drain_bytes:  # not worth reading: answer now
                    await self._refuse(scope, send, refusal, 0)
                    return

        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client went away; nothing to answer
                return
            received += len(message.get("body", b""))
            if refusal is None and received > self.max_bytes:  # chunked, or more than the Content-Length said
                refusal = f"more than {self.max_bytes} bytes received"
                messages.clear()
            if refusal is None:
                messages.append(message)
            elif received > self.drain_bytes:
                break
            if not message.get("more_body", False):
                break
        if refusal is not None:
            await self._refuse(scope, send, refusal, received)
            return

        replay = iter(messages)

        async def receive_again() -> Message:
            buffered = next(replay, None)
            return buffered if buffered is not None else await receive()

        await self.app(scope, receive_again, send)


def build_app(model_uri: str, max_bytes: Optional[int] = None, interval: float = 0,
              max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, follower: Any = None) -> Any:
    """The scoring app (:mod:`.app`) for ``model_uri`` behind the body cap. The first version is loaded and checked
    on its sample rows now (``VersionRefused`` if it fails: nothing to serve); for ``models:/<name>@<alias>`` and
    ``interval > 0`` the alias is then followed every ``interval`` seconds (:mod:`.follow`)."""
    from .app import Batcher, ScoringApp, serving_environment
    from .follow import AliasFollower

    def on_swap(served: Any) -> None:
        served.batcher = Batcher(served.model, max_batch_rows)

    serving_environment()
    follower = follower or AliasFollower(model_uri, interval, on_swap=on_swap)
    follower.on_swap = follower.on_swap or on_swap
    follower.start()
    cap = max_request_bytes() if max_bytes is None else max_bytes
    app = BodySizeLimit(ScoringApp(follower), cap)
    app.follower = follower
    return app


def follow_interval(value: Optional[str | float] = None) -> float:
    """Seconds between alias checks: ``value``, else ``$MTLP_FOLLOW_INTERVAL``, else 30. 0 = never re-check."""
    return _setting(value, "--follow-interval", FOLLOW_ENV, DEFAULT_FOLLOW_INTERVAL, float,
                    "a number of seconds", "never re-check the alias")


def app_from_env() -> Any:
    """uvicorn factory (each of ``--workers`` builds its own): the URI, cap and interval ``main`` resolved."""
    return build_app(os.environ[MODEL_URI_ENV], interval=follow_interval(),
                     max_batch_rows=int(os.environ.get(BATCH_ENV) or DEFAULT_MAX_BATCH_ROWS))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workflow.serving.model_server",
        description="Serve an MLflow pyfunc with MLflow's scoring protocol: a request body cap, concurrent "
                    "requests scored together, and a models:/<name>@<alias> URI followed as the alias moves.")
    p.add_argument("-m", "--model-uri", required=True, help="e.g. models:/<name>@champion, runs:/..., a folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=5000)
    p.add_argument("-w", "--workers", type=int, default=1)
    p.add_argument("-t", "--timeout", type=int, default=None,
                   help="seconds per request before a 504 (MLflow's MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, 60)")
    p.add_argument("--max-request-bytes", default=None,
                   help=f"largest accepted request body; default ${MAX_BYTES_ENV} or "
                        f"{DEFAULT_MAX_REQUEST_BYTES} (16 MiB); 0: no limit")
    p.add_argument("--follow-interval", default=None,
                   help=f"seconds between checks of the alias of a models:/<name>@<alias> URI; default "
                        f"${FOLLOW_ENV} or {DEFAULT_FOLLOW_INTERVAL:g}; 0: load once, never follow")
    p.add_argument("--max-batch-rows", type=int, default=None,
                   help=f"most rows scored in one predict call when concurrent requests are scored together "
                        f"(default ${BATCH_ENV} or {DEFAULT_MAX_BATCH_ROWS})")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cap = max_request_bytes(args.max_request_bytes)
        interval = follow_interval(args.follow_interval)
    except ValueError as err:
        return cli_error("workflow.serving.model_server", err)
    if args.workers < 1:
        return cli_error("workflow.serving.model_server", "--workers must be >= 1")
    if args.max_batch_rows is not None and args.max_batch_rows < 1:
        return cli_error("workflow.serving.model_server", "--max-batch-rows must be >= 1")

    import uvicorn

    from .follow import VersionRefused

    os.environ[MODEL_URI_ENV] = args.model_uri
    os.environ[MAX_BYTES_ENV] = str(cap)  # the workers read the resolved settings
    os.environ[FOLLOW_ENV] = str(interval)
    if args.max_batch_rows is not None:
        os.environ[BATCH_ENV] = str(args.max_batch_rows)
    if args.timeout is not None:
        os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(args.timeout)
    log.info("serving %s on %s:%d, %d worker(s), request bodies up to %s, %s", args.model_uri, args.host,
             args.port, args.workers, f"{cap} bytes" if cap else "any size (no cap)",
             f"alias checked every {interval:g}s" if interval else "not following any alias")
    try:
        uvicorn.run("workflow.serving.model_server:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, lifespan="off")
    except VersionRefused as err:
        print(f"workflow.serving.model_server: error: cannot serve {args.model_uri}: {err}", file=sys.stderr)
        return 1
    return 0


def serve_command(model_uri: str, port: int, host: str = "127.0.0.1", workers: int = 1,
                  max_request_bytes: Optional[int] = None, follow_interval: Optional[float] = None) -> list[str]:
    """The model server in this environment: ``python -m workflow.serving.model_server``, MLflow's scoring protocol
    (what ``mlflow models serve --env-manager local`` answers) behind a request body cap (413 above it; default
    ``$MTLP_MAX_REQUEST_BYTES`` or 16 MiB), following a ``models:/<name>@<alias>`` URI's alias
    (``follow_interval`` seconds, default ``$MTLP_FOLLOW_INTERVAL`` or 30)."""
    cmd = [sys.executable, "-m", "workflow.serving.model_server", "-m", model_uri, "--host", host, "-p", str(port),
           "-w", str(workers)]
    if max_request_bytes is not None:
        cmd += ["--max-request-bytes", str(max_request_bytes)]
    if follow_interval is not None:
        cmd += ["--follow-interval", str(follow_interval)]
    return cmd


def serve_environment(base: Optional[dict] = None, tracking_uri: Optional[str] = None) -> dict:
    """Environment for the serve command: this interpreter's ``bin`` first on PATH (as ``mlflow models serve``
    needs to find ``uvicorn``); ``tracking_uri`` for ``models:/`` URIs."""
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


if __name__ == "__main__":
    sys.exit(main())
