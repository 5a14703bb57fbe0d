"""What MLflow's UI shows first: the experiment in the model-training layout, a shared runs view with the key
metric columns, and links to the runs page or the compare page.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any, Sequence

__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KIND", "VIEW_KEY", "VIEW_TAG", "ui_url", "share_view"]

from .params import MAX_TAG_VALUE
from .retry import retry_call

log = logging.getLogger("workflow.tracking")


# MLflow's UI shows an experiment tagged with this kind in its model-training layout (runs table, charts), not
# the GenAI one (traces, overview); mlflow 3.17's JS names the value CUSTOM_MODEL_DEVELOPMENT
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# a runs-page view (metric columns shown, pipeline run unfolded) stored on the experiment; the UI loads it from
# ``?viewStateShareKey=mtlp`` (mlflow 3.17: experiment tag ``mlflow.sharedViewState.<key>``, plain JSON accepted)
VIEW_KEY = "mtlp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


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



def share_view(client: Any, parent_run_id: str, short_names: Sequence[str]) -> None:
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
