"""MLflow tracking for the pipeline: where runs go (:mod:`.uri`, :mod:`.store`), the parent/child run layout
(:mod:`.runs`), params and tags (:mod:`.params`), per-epoch logging that never kills training (:mod:`.callback`),
results and figures (:mod:`.results`) and what the UI shows first (:mod:`.ui`).

Default store (no server): ``sqlite:///<work_dir>/mlflow.db`` with artifacts in ``<work_dir>/mlartifacts``;
``MLFLOW_TRACKING_URI`` (or an explicit ``uri``) points at a tracking server instead.
"""

from .callback import MlflowCallback
from .params import flatten_params, git_commit, log_params
from .results import (key_metrics, log_artifact_files, log_ceiling, log_comparison, log_search_plots, log_train_result,
                      search_budget_notes)
from .retry import retry_call
from .runs import TAGS, child_run, create_child_run, end_open_runs, end_run, find_parent_run, start_parent_run
from .store import Tracking, client_for, get_or_create_experiment, open_client, setup_tracking, use_globally
from .ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, VIEW_TAG, ui_url
from .uri import DEFAULT_ARTIFACTS, DEFAULT_DB, TrackingUnavailable, check_tracking_reachable, mask_credentials, \
    resolve_tracking_uri

__all__ = [
    "TrackingUnavailable", "Tracking", "use_globally", "client_for", "open_client", "mask_credentials", "DEFAULT_DB",
    "DEFAULT_ARTIFACTS", "TAGS", "resolve_tracking_uri", "check_tracking_reachable", "setup_tracking",
    "get_or_create_experiment", "git_commit", "flatten_params", "log_params", "start_parent_run", "find_parent_run",
    "create_child_run", "child_run", "end_run", "end_open_runs", "MlflowCallback", "retry_call", "log_train_result",
    "log_artifact_files", "log_comparison", "log_search_plots", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND",
    "VIEW_TAG", "key_metrics", "log_ceiling", "ui_url", "search_budget_notes",
]
