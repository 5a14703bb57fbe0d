"""The run layout: one parent run per pipeline run (tagged with the pipeline run id, git commit, dataset, raw-file
hashes and the config), child runs per model and per search trial. Children name their parent through the
``mlflow.parentRunId`` tag, so a child can be created from any process or pod that only knows the parent's id.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any, Iterator, Mapping, Optional

from .params import MAX_TAG_VALUE, flatten_params, git_commit, log_params
from .retry import retry_call
from .store import Tracking
from .uri import mask_credentials

__all__ = ["TAGS", "find_parent_run", "start_parent_run", "create_child_run", "end_run", "end_open_runs", "child_run"]


TAGS = {
    "pipeline_run_id": "mtlp.pipeline_run_id",
    "role": "mtlp.role",                 # pipeline | train | trial
    "git_commit": "mtlp.git_commit",
    "dataset": "mtlp.dataset",
    "raw_sha256": "mtlp.raw_sha256",     # JSON {file: sha256}
    "config": "mtlp.config",             # JSON, also logged as config.json
    "model_name": "mtlp.model_name",
    "parent": "mlflow.parentRunId",      # MLflow's own nesting tag
    "search_budget": "mtlp.search.budget",  # on a model run: what the search budget did, in words
}


def find_parent_run(client: Any, experiment_id: str, pipeline_run_id: str) -> Optional[str]:
    """The parent run already created for ``pipeline_run_id`` (a retried step), if any."""
    safe = pipeline_run_id.replace("'", "\\'")
    runs = retry_call(client.search_runs, [experiment_id],
                      filter_string=f"tags.`{TAGS['pipeline_run_id']}` = '{safe}' and tags.`{TAGS['role']}` = 'pipeline'",
                      max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def _parent_tags(pipeline_run_id: str, commit: Optional[str], dataset: Optional[str],
                 raw_sha256: Optional[Mapping[str, str]], config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The parent run's tags: pipeline run id, role, commit, dataset, raw-file hashes (JSON + one per file), config."""
    tags: dict[str, Any] = {TAGS["pipeline_run_id"]: pipeline_run_id, TAGS["role"]: "pipeline"}
    if commit:
        tags[TAGS["git_commit"]] = commit
        tags["mlflow.source.git.commit"] = commit.replace("-dirty", "")
    if dataset:
        tags[TAGS["dataset"]] = dataset
    if raw_sha256:
        tags[TAGS["raw_sha256"]] = json.dumps(dict(raw_sha256), sort_keys=True)
        tags.update({f"{TAGS['raw_sha256']}.{name}": digest for name, digest in raw_sha256.items()})
    if config is not None:
        tags[TAGS["config"]] = json.dumps(config, sort_keys=True, default=str)
    return tags


def start_parent_run(tracking: Tracking, pipeline_run_id: str, *, dataset: Optional[str] = None,
                     raw_sha256: Optional[Mapping[str, str]] = None, config: Optional[Mapping[str, Any]] = None,
                     git_commit_id: Optional[str] = None, run_name: Optional[str] = None,
                     extra_tags: Optional[Mapping[str, Any]] = None, reuse: bool = True) -> str:
    """Create (or, with ``reuse``, find) the pipeline run's parent run and return its id.

    The config (passwords masked) is stored as a tag (JSON, truncated to MLflow's limit), as flattened
    ``config.*`` params and as the ``config.json`` artifact; raw-file hashes as one JSON tag and one tag per file.
    """
    client = tracking.client
    existing = find_parent_run(client, tracking.experiment_id, pipeline_run_id) if reuse else None
    if existing:
        return existing
    config = mask_credentials(config) if config is not None else None
    commit = git_commit_id if git_commit_id is not None else git_commit()
    tags = {**_parent_tags(pipeline_run_id, commit, dataset, raw_sha256, config), **(extra_tags or {})}
    tags = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items()}
    run = retry_call(client.create_run, tracking.experiment_id, tags=tags,
                     run_name=run_name or f"pipeline-{pipeline_run_id}")
    if config is not None:
        log_params(client, run.info.run_id, flatten_params(config, prefix="config"))
        retry_call(client.log_text, run.info.run_id, json.dumps(config, indent=2, sort_keys=True, default=str),
                   "config.json")
    return run.info.run_id


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
