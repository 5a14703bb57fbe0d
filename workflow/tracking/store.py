"""The configured tracking store: the one MLflow client getter, MLflow's fluent API pointed at a store, and the
experiment (created, restored or found) that a pipeline configuration logs into.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from .retry import retry_call
from .ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from .uri import TrackingUnavailable, check_tracking_reachable, mask_url, resolve_tracking_uri

__all__ = ["Tracking", "use_globally", "client_for", "open_client", "get_or_create_experiment", "setup_tracking"]


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



def setup_tracking(experiment_name: str, work_dir: str | os.PathLike | None = None, uri: Optional[str] = None,
                   timeout: float = 10.0) -> Tracking:
    """Resolve the URI, check it answers (clear error otherwise), point MLflow at it and get the experiment."""
    import mlflow

    from .local_store import ready_sqlite

    uri, artifact_location = resolve_tracking_uri(work_dir, uri)
    check_tracking_reachable(uri, timeout=timeout)
    ready_sqlite(uri)  # a SQLite store shared by several runs: created once, under a file lock, in WAL mode
    use_globally(uri)
    client = client_for(uri)
    try:
        experiment_id = retry_call(get_or_create_experiment, client, experiment_name, artifact_location,
                                   attempts=3, backoff=0.5)
    except TrackingUnavailable:
        raise
    except Exception as e:
        raise TrackingUnavailable(f"tracking store {mask_url(uri)} is not usable: {e}") from None
    return Tracking(uri=uri, experiment_id=experiment_id, experiment_name=experiment_name, client=client)

