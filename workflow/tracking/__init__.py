"""MLflow tracking for the pipeline: where runs go, the parent/child run layout, and logging that never kills training.

Layout: one parent run per pipeline run (tagged with the pipeline run id, git commit, dataset, raw-file hashes
and the config), child runs per trained model and per search trial. Children name their parent through the
``mlflow.parentRunId`` tag, so a child can be created from another process or pod that only knows the parent's
run id. The library (``mtl_models``) stays free of MLflow: it only sees :class:`MlflowCallback`.

Default store (no server): ``sqlite:///<work_dir>/mlflow.db`` with artifacts in ``<work_dir>/mlartifacts``;
``MLFLOW_TRACKING_URI`` (or an explicit ``uri``) points at a tracking server instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

__all__ = [
    "TrackingUnavailable", "Tracking", "use_globally", "client_for", "open_client", "mask_credentials", "DEFAULT_DB", "DEFAULT_ARTIFACTS", "TAGS",
    "resolve_tracking_uri", "check_tracking_reachable", "setup_tracking", "get_or_create_experiment",
    "git_commit", "flatten_params", "log_params", "start_parent_run", "find_parent_run", "create_child_run",
    "child_run", "end_run", "end_open_runs", "MlflowCallback", "retry_call", "log_train_result", "log_artifact_files",
    "log_comparison", "log_search_plots", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND", "key_metrics",
    "log_ceiling", "ui_url",
]

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
MAX_PARAM_VALUE = 6000   # MLflow's param value limit
MAX_TAG_VALUE = 8000     # MLflow's run tag value limit
BATCH = 100              # params/tags per log_batch call

TAGS = {
    "pipeline_run_id": "mtlp.pipeline_run_id",
    "role": "mtlp.role",                 # pipeline | train | trial
    "git_commit": "mtlp.git_commit",
    "dataset": "mtlp.dataset",
    "raw_sha256": "mtlp.raw_sha256",     # JSON {file: sha256}
    "config": "mtlp.config",             # JSON, also logged as config.json
    "model_name": "mtlp.model_name",
    "parent": "mlflow.parentRunId",      # MLflow's own nesting tag
}


# MLflow's UI shows an experiment tagged with this kind in its model-training layout (runs table, charts), not
# the GenAI one (traces, overview); mlflow 3.17's JS names the value CUSTOM_MODEL_DEVELOPMENT
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# a runs-page view (metric columns shown, pipeline run unfolded) stored on the experiment; the UI loads it from
# ``?viewStateShareKey=mtlp`` (mlflow 3.17: experiment tag ``mlflow.sharedViewState.<key>``, plain JSON accepted)
VIEW_KEY = "mtlp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or used; raised before any training starts."""


# ---------------------------------------------------------------------------------------------------------------
# where runs go
# ---------------------------------------------------------------------------------------------------------------

def resolve_tracking_uri(work_dir: str | os.PathLike | None = None, uri: Optional[str] = None
                         ) -> tuple[str, Optional[str]]:
    """(tracking URI, artifact location for new experiments or None to let the server decide).

    Order: explicit ``uri``, then ``MLFLOW_TRACKING_URI``, then the embedded SQLite store in ``work_dir``.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        return uri, None
    if work_dir is None:
        raise TrackingUnavailable("no tracking URI: pass a work directory for the embedded store, or set "
                                  "MLFLOW_TRACKING_URI / --tracking-uri")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{work / DEFAULT_DB}", (work / DEFAULT_ARTIFACTS).as_uri()


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _mask_url(url: str) -> str:
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
        return _URL.sub(lambda m: _mask_url(m.group(0)), value)
    return value


def check_tracking_reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`TrackingUnavailable` with a clear message when ``uri`` cannot be used; return quietly if it can.

    HTTP(S): the server's ``/health`` and one cheap REST call must answer within ``timeout`` seconds.
    SQLite / file: the folder must be creatable and writable. Other database URIs: a connection must open.
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    shown = _mask_url(uri)
    if scheme in ("http", "https"):
        base = uri.rstrip("/")
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
        query = urllib.parse.urlencode({"experiment_name": "Default"})
        try:
            with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=timeout):
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
        return
    if scheme == "sqlite" or scheme in ("", "file"):
        if scheme == "sqlite":
            path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
            if not path or path == ":memory:":
                return
            folder = Path(path).parent
        else:
            folder = Path(urllib.parse.urlsplit(uri).path if scheme == "file" else uri)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".mtlp-write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise TrackingUnavailable(f"tracking store {shown}: folder {folder} is not writable ({e})") from None
        return
    if scheme.startswith(("postgresql", "mysql", "mssql")):
        try:
            import sqlalchemy
        except ImportError:  # pragma: no cover - mlflow depends on sqlalchemy
            return
        connect_args = {"connect_timeout": max(1, int(timeout))} if scheme.startswith(("postgresql", "mysql")) else {}
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except Exception as e:  # driver errors differ per database
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrackingUnavailable(f"tracking database {shown} is unreachable: {first}") from None
        return
    log.debug("no reachability check for tracking URI scheme %r", scheme)


@dataclass
class Tracking:
    """A configured tracking store and the experiment of this pipeline configuration."""

    uri: str
    experiment_id: str
    experiment_name: str
    client: Any  # mlflow.MlflowClient

    @property
    def registry_uri(self) -> str:
        return self.uri


def use_globally(uri: str) -> None:
    """Point MLflow's fluent API (model logging, ``models:/`` loading) at ``uri``.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; that is undone here, so the variable keeps
    meaning "the user chose a server" and a later embedded-store setup in the same process is not redirected.
    Pass URIs to subprocesses explicitly (``serving.serve_environment(tracking_uri=...)``).
    """
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def client_for(uri: str):
    """An ``MlflowClient`` for tracking and registry at ``uri``: the one way this package makes a client."""
    from mlflow import MlflowClient
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def open_client(work_dir: str | os.PathLike | None, uri: Optional[str] = None) -> tuple[Any, str]:
    """-> (client, resolved URI) for a step: ``uri`` if given, else the run folder's embedded store."""
    resolved, _ = resolve_tracking_uri(work_dir, uri or None)
    return client_for(resolved), resolved


def get_or_create_experiment(client: Any, name: str, artifact_location: Optional[str] = None) -> str:
    """The experiment's id; created if missing, restored if deleted, safe when two processes race to create it.

    An experiment without ``mlflow.experimentKind`` gets the model-training kind, so the UI opens on runs and
    their metrics; a kind someone chose in the UI is left alone."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as e:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingUnavailable(f"cannot create MLflow experiment {name!r}: {e.message}") from None
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


def ui_url(base: str, experiment_id: str, run_ids: Sequence[str] = ()) -> str:
    """The experiment's runs page in MLflow's UI (``base``: e.g. ``http://127.0.0.1:5000``) in the model-training
    layout: mlflow 3.17's sidebar switch (GenAI / Machine learning, default GenAI, remembered per browser) decides
    the layout over the experiment's kind tag, and ``workflowType`` in the URL sets it. With ``run_ids``: the
    compare page of those runs."""
    base = base.rstrip("/")
    if run_ids:
        runs = urllib.parse.quote(json.dumps(list(run_ids), separators=(",", ":")))
        exps = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
        return f"{base}/#/compare-runs?runs={runs}&experiments={exps}&workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def setup_tracking(experiment_name: str, work_dir: str | os.PathLike | None = None, uri: Optional[str] = None,
                   timeout: float = 10.0) -> Tracking:
    """Resolve the URI, check it answers (clear error otherwise), point MLflow at it and get the experiment."""
    import mlflow

    uri, artifact_location = resolve_tracking_uri(work_dir, uri)
    check_tracking_reachable(uri, timeout=timeout)
    use_globally(uri)
    client = client_for(uri)
    try:
        experiment_id = retry_call(get_or_create_experiment, client, experiment_name, artifact_location,
                                   attempts=3, backoff=0.5)
    except TrackingUnavailable:
        raise
    except Exception as e:
        raise TrackingUnavailable(f"tracking store {_mask_url(uri)} is not usable: {e}") from None
    return Tracking(uri=uri, experiment_id=experiment_id, experiment_name=experiment_name, client=client)


# ---------------------------------------------------------------------------------------------------------------
# retries
# ---------------------------------------------------------------------------------------------------------------

def retry_call(fn: Callable[..., Any], *args: Any, attempts: int = 4, backoff: float = 0.5, max_backoff: float = 8.0,
               sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried on any exception with exponential backoff; the last error propagates."""
    delay = backoff
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt >= attempts:
                raise
            log.debug("MLflow call %s failed (attempt %d/%d): %s", getattr(fn, "__name__", fn), attempt, attempts, e)
            sleep(min(delay, max_backoff))
            delay *= 2


# ---------------------------------------------------------------------------------------------------------------
# params and tags
# ---------------------------------------------------------------------------------------------------------------

def _param_value(value: Any) -> str:
    text = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
    return text[:MAX_PARAM_VALUE]


def flatten_params(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Nested dicts -> ``a.b.c`` keys; lists -> JSON (``[128, 64]``); values as MLflow-sized strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name, sep))
        else:
            out[name] = _param_value(value)
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Flattened params in batches of 100 (MLflow's limit), each batch retried."""
    from mlflow.entities import Param

    flat = flatten_params(params)
    items = [Param(k, v) for k, v in sorted(flat.items())]
    for chunk in _chunks(items, BATCH):
        retry_call(client.log_batch, run_id, params=list(chunk))


def _set_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items() if v is not None]
    for chunk in _chunks(items, BATCH):
        retry_call(client.log_batch, run_id, tags=list(chunk))


def git_commit(repo_dir: str | os.PathLike | None = None) -> Optional[str]:
    """HEAD's commit (with ``-dirty`` when the tree has changes), or None outside a git checkout."""
    cwd = str(repo_dir or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        commit = head.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------------

def find_parent_run(client: Any, experiment_id: str, pipeline_run_id: str) -> Optional[str]:
    """The parent run already created for ``pipeline_run_id`` (a retried step), if any."""
    safe = pipeline_run_id.replace("'", "\\'")
    runs = retry_call(client.search_runs, [experiment_id],
                      filter_string=f"tags.`{TAGS['pipeline_run_id']}` = '{safe}' and tags.`{TAGS['role']}` = 'pipeline'",
                      max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def start_parent_run(tracking: Tracking, pipeline_run_id: str, *, dataset: Optional[str] = None,
                     raw_sha256: Optional[Mapping[str, str]] = None, config: Optional[Mapping[str, Any]] = None,
                     git_commit_id: Optional[str] = None, run_name: Optional[str] = None,
                     extra_tags: Optional[Mapping[str, Any]] = None, reuse: bool = True) -> str:
    """Create (or, with ``reuse``, find) the pipeline run's parent run and return its id.

    The config is stored as a tag (JSON, truncated to MLflow's limit), as flattened ``config.*`` params and as
    the ``config.json`` artifact; raw-file hashes as one JSON tag and one tag per file.
    """
    client = tracking.client
    if reuse:
        existing = find_parent_run(client, tracking.experiment_id, pipeline_run_id)
        if existing:
            return existing
    commit = git_commit_id if git_commit_id is not None else git_commit()
    tags: dict[str, Any] = {TAGS["pipeline_run_id"]: pipeline_run_id, TAGS["role"]: "pipeline"}
    if commit:
        tags[TAGS["git_commit"]] = commit
        tags["mlflow.source.git.commit"] = commit.replace("-dirty", "")
    if dataset:
        tags[TAGS["dataset"]] = dataset
    if raw_sha256:
        tags[TAGS["raw_sha256"]] = json.dumps(dict(raw_sha256), sort_keys=True)
        for name, digest in raw_sha256.items():
            tags[f"{TAGS['raw_sha256']}.{name}"] = digest
    if config is not None:
        config = mask_credentials(config)
        tags[TAGS["config"]] = json.dumps(config, sort_keys=True, default=str)
    tags.update(extra_tags or {})
    tags = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items()}
    run = retry_call(client.create_run, tracking.experiment_id, tags=tags,
                     run_name=run_name or f"pipeline-{pipeline_run_id}")
    run_id = run.info.run_id
    if config is not None:
        log_params(client, run_id, flatten_params(config, prefix="config"))
        retry_call(client.log_text, run_id, json.dumps(config, indent=2, sort_keys=True, default=str), "config.json")
    return run_id


def create_child_run(client: Any, parent_run_id: str, run_name: str, role: str = "train",
                     tags: Optional[Mapping[str, Any]] = None) -> str:
    """A run nested under ``parent_run_id`` (same experiment); works from any process that knows the parent's id."""
    parent = retry_call(client.get_run, parent_run_id)
    all_tags = {TAGS["parent"]: parent_run_id, TAGS["role"]: role}
    if TAGS["pipeline_run_id"] in parent.data.tags:
        all_tags[TAGS["pipeline_run_id"]] = parent.data.tags[TAGS["pipeline_run_id"]]
    all_tags.update({k: str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()})
    run = retry_call(client.create_run, parent.info.experiment_id, tags=all_tags, run_name=run_name)
    return run.info.run_id


def end_run(client: Any, run_id: str, status: str = "FINISHED") -> None:
    try:
        retry_call(client.set_terminated, run_id, status=status)
    except Exception as e:  # ending a run must not hide the training's own outcome
        warnings.warn(f"could not mark MLflow run {run_id} {status}: {e}", RuntimeWarning, stacklevel=2)


def end_open_runs(client: Any, experiment_name: str, pipeline_run_id: str, status: str = "FAILED") -> list[str]:
    """End every run of one pipeline run (parent, model runs, trials) still RUNNING with ``status``; their ids.

    A task that dies (a bad input, Ctrl-C, SIGTERM, a kill) cannot end the runs it left open; the process that
    ran the graph does it here, so nothing stays RUNNING. Runs are found by their ``mtlp.pipeline_run_id`` tag.
    """
    exp = retry_call(client.get_experiment_by_name, experiment_name)
    if exp is None:
        return []
    safe = pipeline_run_id.replace("'", "\\'")
    runs = retry_call(client.search_runs, [exp.experiment_id], max_results=5000,
                      filter_string=f"tags.`{TAGS['pipeline_run_id']}` = '{safe}' and attributes.status = 'RUNNING'")
    for run in runs:
        end_run(client, run.info.run_id, status)
    return [run.info.run_id for run in runs]


@contextlib.contextmanager
def child_run(client: Any, parent_run_id: str, run_name: str, role: str = "train",
              tags: Optional[Mapping[str, Any]] = None) -> Iterator[str]:
    """``with child_run(client, parent, "mmoe") as run_id:``; FINISHED on success, FAILED on an exception."""
    run_id = create_child_run(client, parent_run_id, run_name, role, tags)
    try:
        yield run_id
    except KeyboardInterrupt:
        end_run(client, run_id, "KILLED")
        raise
    except BaseException:
        end_run(client, run_id, "FAILED")
        raise
    end_run(client, run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------------------------
# per-epoch logging from the trainer
# ---------------------------------------------------------------------------------------------------------------

def _system_metrics(trainer: Any = None) -> dict[str, float]:
    try:
        import psutil
    except ImportError:
        return {}
    out: dict[str, float] = {}
    with contextlib.suppress(Exception):
        out["system/cpu_utilization_percentage"] = float(psutil.cpu_percent(interval=None))
        vm = psutil.virtual_memory()
        out["system/system_memory_usage_percentage"] = float(vm.percent)
        out["system/process_rss_megabytes"] = psutil.Process().memory_info().rss / 2 ** 20
    with contextlib.suppress(Exception):
        import torch
        if torch.cuda.is_available():
            out["system/gpu_memory_allocated_megabytes"] = torch.cuda.memory_allocated() / 2 ** 20
            out["system/gpu_max_memory_allocated_megabytes"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


class MlflowCallback:
    """Trainer callback (the ``mtl_models.Callback`` contract) that logs each epoch's metrics to ``run_id``.

    Every logging call is retried (``retries`` extra attempts, exponential backoff from ``backoff`` seconds);
    when a batch still cannot be logged, the callback warns, counts it in ``failed_batches`` and training
    goes on. Non-finite values are logged as they are (MLflow stores NaN/inf) so a diverging run is visible.
    """

    def __init__(self, run_id: str, client: Any = None, tracking_uri: Optional[str] = None, retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 8.0, system_metrics: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.run_id = run_id
        self.client = client if client is not None else client_for(tracking_uri or _current_uri())
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.system_metrics = system_metrics
        self.sleep = sleep
        self.failed_batches = 0
        self.logged_steps: list[int] = []

    def _log(self, metrics: Mapping[str, float], step: int) -> bool:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not items:
            return True
        try:
            for i in range(0, len(items), 1000):
                retry_call(self.client.log_batch, self.run_id, metrics=items[i:i + 1000],
                           attempts=self.retries + 1, backoff=self.backoff, max_backoff=self.max_backoff,
                           sleep=self.sleep)
            return True
        except Exception as e:
            self.failed_batches += 1
            msg = (f"MLflow: could not log {len(items)} metrics for step {step} of run {self.run_id} after "
                   f"{self.retries + 1} attempts ({type(e).__name__}: {e}); training continues")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            return False

    def on_fit_start(self, trainer: Any) -> None:
        if self.system_metrics:
            with contextlib.suppress(Exception):
                import psutil
                psutil.cpu_percent(interval=None)  # primes the CPU counter

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        values = dict(metrics)
        if self.system_metrics:
            values.update(_system_metrics(trainer))
        if self._log(values, int(epoch)):
            self.logged_steps.append(int(epoch))

    def on_fit_end(self, trainer: Any) -> None:
        return None


def _current_uri() -> str:
    import mlflow
    return mlflow.get_tracking_uri()


# ---------------------------------------------------------------------------------------------------------------
# results, artifacts, plots
# ---------------------------------------------------------------------------------------------------------------

def log_artifact_files(client: Any, run_id: str, paths: Iterable[str | os.PathLike],
                       artifact_path: Optional[str] = None) -> None:
    """Existing files among ``paths`` -> the run's artifacts (retried)."""
    for p in paths:
        if p is not None and Path(p).is_file():
            retry_call(client.log_artifact, run_id, str(p), artifact_path)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def key_metrics(test_metrics: Mapping[str, Mapping[str, float]], test_score: Optional[float] = None) -> dict[str, float]:
    """Short names for the numbers a reader compares first: each task's AUC (classification) or RMSE (regression)
    as ``<task>_auc`` / ``<task>_rmse``, and ``score`` (the promotion metric, higher is better)."""
    out: dict[str, float] = {}
    for task, values in test_metrics.items():
        for name in ("auc", "rmse"):
            if _finite(values.get(name)):
                out[f"{task}_{name}"] = float(values[name])
    if test_score is not None and _finite(test_score):
        out["score"] = float(test_score)
    return out


def log_ceiling(client: Any, run_id: str, ceiling: Mapping[str, Any]) -> dict[str, float]:
    """The feature spec's ``ceiling`` (what the generator's true probabilities reach on the test rows) as
    ``ceiling/<task>_auc`` metrics on the pipeline's parent run, beside the models' ``<task>_auc/<model>``."""
    from mlflow.entities import Metric

    values = {f"ceiling/{task}_{name}": float(v) for task, ms in (ceiling or {}).get("metrics", {}).items()
              for name, v in ms.items() if _finite(v)}
    if values:
        now = int(time.time() * 1000)
        retry_call(client.log_batch, run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    return values


def _log_on_parent(client: Any, run_id: str, model_name: str, metrics: Mapping[str, float]) -> None:
    """A model run's key metrics on its parent as ``<metric>/<model>``: the parent's row in the runs table then
    compares the models side by side (same metric, adjacent columns) without expanding it."""
    from mlflow.entities import Metric

    parent = retry_call(client.get_run, run_id).data.tags.get(TAGS["parent"])
    if not parent or not metrics:
        return
    now = int(time.time() * 1000)
    retry_call(client.log_batch, parent, metrics=[Metric(f"{k}/{model_name}", v, now, 0) for k, v in metrics.items()])
    _share_view(client, parent, list(metrics))


def _share_view(client: Any, parent_run_id: str, short_names: Sequence[str]) -> None:
    """The experiment's shared runs view (:data:`VIEW_TAG`): the short-name metric columns, then the parent's
    ``<metric>/<model>`` and ``ceiling/*`` ones, with this pipeline run unfolded. Only a convenience: a failure
    to store it never stops training."""
    try:
        run = retry_call(client.get_run, parent_run_id)
        names = list(dict.fromkeys([*short_names, *sorted(run.data.metrics)]))
        state = {"selectedColumns": [f"metrics.`{n}`" for n in names], "runsExpanded": {parent_run_id: True}}
        retry_call(client.set_experiment_tag, run.info.experiment_id, VIEW_TAG, json.dumps(state)[:MAX_TAG_VALUE])
    except Exception as e:
        log.debug("could not store the shared runs view: %s", e)


def log_train_result(client: Any, run_id: str, result: Any, *, spec_path: str | os.PathLike | None = None,
                     onnx_path: str | os.PathLike | None = None, config: Optional[Mapping[str, Any]] = None,
                     prepared_dir: str | os.PathLike | None = None, plots: bool = True,
                     log_history: Optional[bool] = None, plot_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Params, final metrics, artifacts and plots of one ``workflow.training.train.TrainResult`` on its child run.

    ``log_history`` None: the per-epoch history is logged only when the run has none yet (no callback ran).
    With ``prepared_dir`` the ROC curves of the classification tasks are drawn from the test split.
    The key metrics also go under short names (:func:`key_metrics`: ``click_auc``, ``score``) on this run and as
    ``<name>/<model>`` on its parent run. Returns the final metrics as logged on this run.
    """
    from mlflow.entities import Metric

    client_params = {"model_name": result.model_name, **dict(result.params)}
    log_params(client, run_id, client_params)
    _set_tags(client, run_id, {TAGS["model_name"]: result.model_name})

    final: dict[str, float] = {}
    for task, values in result.test_metrics.items():
        for name, value in values.items():
            if _finite(value):
                final[f"test/{task}/{name}"] = float(value)
    final["test/score"] = float(result.test_score)
    short = key_metrics(result.test_metrics, result.test_score)
    final.update(short)
    final["best_epoch"] = float(result.best_epoch)
    final["best/val_monitor"] = float(result.best_score)
    final["n_parameters"] = float(result.n_parameters)
    final["train_seconds"] = float(result.train_seconds)
    now = int(time.time() * 1000)
    retry_call(client.log_batch, run_id, metrics=[Metric(k, v, now, 0) for k, v in final.items()])
    _log_on_parent(client, run_id, result.model_name, short)

    if log_history is None:
        log_history = not retry_call(client.get_metric_history, run_id, "train/loss")
    if log_history and result.history:
        items = []
        for step, row in enumerate(result.history):
            epoch = int(row.get("epoch", step))
            items += [Metric(k, float(v), now, epoch) for k, v in row.items()
                      if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(items), 1000):
            retry_call(client.log_batch, run_id, metrics=items[i:i + 1000])

    out_dir = Path(result.out_dir)
    spec_file = Path(spec_path) if spec_path else out_dir / "feature_spec.json"
    log_artifact_files(client, run_id, [spec_file, out_dir / "params.json", out_dir / "metrics.json"])
    onnx_file = Path(onnx_path) if onnx_path else out_dir / "model.onnx"
    log_artifact_files(client, run_id, [onnx_file], "onnx")
    if config is not None:
        retry_call(client.log_text, run_id, json.dumps(mask_credentials(config), indent=2, sort_keys=True, default=str),
                   "config.json")

    if plots:
        from ..reports import plots as plotting

        folder = Path(plot_dir) if plot_dir else out_dir / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        files = [plotting.training_curves(result.history, folder / "training_curves.png",
                                          title=f"{result.model_name}")]
        if prepared_dir is not None:
            files += plotting.roc_curves_for_result(result, prepared_dir, folder)
        log_artifact_files(client, run_id, files, "plots")
    return final


def log_comparison(client: Any, parent_run_id: str, results: Sequence[Any],
                   out_dir: str | os.PathLike, labels: Optional[Sequence[str]] = None,
                   reference: Optional[Mapping[str, float]] = None) -> Path:
    """Bar chart comparing the models of one pipeline run, plus a ``comparison.json``, on the parent run;
    ``reference`` ({``<task>/auc``: value}) draws e.g. the generator's ceiling."""
    from ..reports import plots as plotting

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(labels) if labels else [r.model_name for r in results]
    table = {name: {"test_score": r.test_score, **{f"{t}/{m}": v for t, ms in r.test_metrics.items()
                                                   for m, v in ms.items()}}
             for name, r in zip(names, results)}
    (out_dir / "comparison.json").write_text(json.dumps(table, indent=2, sort_keys=True))
    png = plotting.model_comparison(table, out_dir / "model_comparison.png", reference=reference)
    log_artifact_files(client, parent_run_id, [png, out_dir / "comparison.json"], "comparison")
    return png


def log_search_plots(client: Any, run_id: str, values: Sequence[Optional[float]], out_dir: str | os.PathLike,
                     maximize: bool = True, extra_files: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The search's plots on ``run_id`` (usually the parent run) under ``search/``: the objective per trial with
    the best-so-far line, plus any ``extra_files`` the search step drew itself (e.g. Optuna's matplotlib plots)."""
    from ..reports import plots as plotting

    out_dir = Path(out_dir)
    files = [plotting.search_history(values, out_dir / "search_history.png", maximize=maximize)]
    files += [Path(p) for p in extra_files]
    log_artifact_files(client, run_id, files, "search")
    return files
