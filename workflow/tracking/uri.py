"""Where runs go and whether that store answers: the tracking URI (explicit, ``MLFLOW_TRACKING_URI``, or the
embedded SQLite store of a work directory), its credentials masked for logs, and a reachability check that fails
before any training starts.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import first_line

__all__ = ["DEFAULT_DB", "DEFAULT_ARTIFACTS", "TrackingUnavailable", "resolve_tracking_uri", "mask_credentials",
           "mask_url", "check_tracking_reachable"]

log = logging.getLogger("workflow.tracking")

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or used; raised before any training starts."""


def resolve_tracking_uri(work_dir: str | os.PathLike | None = None, uri: Optional[str] = None
                         ) -> tuple[str, Optional[str]]:
    """(tracking URI, artifact location for new experiments or None to let the server decide).

    Order: explicit ``uri``, then ``MLFLOW_TRACKING_URI``, then the embedded SQLite store in ``work_dir``. A SQLite
    store keeps its artifacts beside it (``<folder of mlflow.db>/mlartifacts``), whoever named it.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        db = uri[len("sqlite:///"):].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
        if db and db != ":memory:":
            return uri, (Path(db).resolve().parent / DEFAULT_ARTIFACTS).as_uri()
        return uri, None
    if work_dir is None:
        raise TrackingUnavailable("no tracking URI: pass a work directory for the embedded store, or set "
                                  "MLFLOW_TRACKING_URI / --tracking-uri")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{work / DEFAULT_DB}", (work / DEFAULT_ARTIFACTS).as_uri()


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL: hide the credentials part, if any, wholesale
        return re.sub(r"://[^/@\s]*@", "://***@", url)
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def mask_credentials(value: Any) -> Any:
    """``value`` (a config: mappings, lists, strings) with the password of every URL in it replaced by ``***``.

    Every config this module logs (params, the config tag, ``config.json``) goes through this: a database URL
    with its password written straight into the config (``search.storage``, ``tracking.uri``) must not end up
    in the tracking store. The run itself keeps using the real URL."""
    if isinstance(value, Mapping):
        return {k: mask_credentials(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_credentials(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _URL.sub(lambda m: mask_url(m.group(0)), value)
    return value


def check_tracking_reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`TrackingUnavailable` with a clear message when ``uri`` cannot be used; return quietly if it can.

    HTTP(S): the server's ``/health`` and one cheap REST call must answer within ``timeout`` seconds.
    SQLite / file: the folder must be creatable and writable. Other database URIs: a connection must open.
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_health(uri.rstrip("/"), mask_url(uri), timeout)
        _check_rest(uri.rstrip("/"), mask_url(uri), timeout)
    elif scheme in ("sqlite", "", "file"):
        folder = _store_folder(uri, scheme)
        if folder is not None:
            _check_writable(folder, mask_url(uri))
    elif scheme.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri, scheme, timeout)
    else:
        log.debug("no reachability check for tracking URI scheme %r", scheme)


def _check_health(base: str, shown: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {shown} answered /health with HTTP {r.status}")
    except urllib.error.HTTPError as e:
        raise TrackingUnavailable(f"MLflow tracking server {shown} answered /health with HTTP {e.code}; "
                                  "is this an MLflow server?") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(f"MLflow tracking server {shown} is unreachable ({reason}); start it, or "
                                  "unset MLFLOW_TRACKING_URI to use the embedded SQLite store") from None


def _credentials() -> dict[str, str]:
    """The Authorization header MLflow's client sends: MLFLOW_TRACKING_USERNAME/PASSWORD (basic), else TOKEN."""
    import base64

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check_rest(base: str, shown: str, timeout: float) -> None:
    query = urllib.parse.urlencode({"experiment_name": "Default"})
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", headers=_credentials())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise TrackingUnavailable(f"MLflow tracking server {shown} refused the request (HTTP {e.code}): "
                                      "check MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN") from None
        if e.code != 404:  # 404 = no such experiment: the API answers
            raise TrackingUnavailable(f"MLflow tracking server {shown} REST API failed with HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise TrackingUnavailable(f"MLflow tracking server {shown} REST API is unreachable "
                                  f"({getattr(e, 'reason', e)})") from None


def _store_folder(uri: str, scheme: str) -> Optional[Path]:
    """The folder a SQLite / file store writes to; None for an in-memory or unnamed SQLite database."""
    if scheme != "sqlite":
        return Path(urllib.parse.urlsplit(uri).path if scheme == "file" else uri)
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    return None if not path or path == ":memory:" else Path(path).parent


def _check_writable(folder: Path, shown: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mtlp-write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise TrackingUnavailable(f"tracking store {shown}: folder {folder} is not writable ({e})") from None


def _check_database(uri: str, scheme: str, timeout: float) -> None:
    import sqlalchemy

    connect_args = {"connect_timeout": max(1, int(timeout))} if scheme.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as e:  # driver errors differ per database
        raise TrackingUnavailable(f"tracking database {mask_url(uri)} is unreachable: {first_line(e)}") from None
