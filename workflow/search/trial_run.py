"""One trial as a nested MLflow run under the model's run: its params, per-epoch metrics and outcome.

Logging never changes a trial's outcome: a failure to log is a warning.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

_STATE = {"FINISHED": "COMPLETE", "KILLED": "PRUNED"}  # MLflow run status -> Optuna trial state


def tracking_uri(uri: Optional[str]) -> str:
    """The explicit URI, else ``MLFLOW_TRACKING_URI``, else the one this process's MLflow is set to."""
    if uri:
        return uri
    import mlflow

    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


class TrialRuns:
    """Opens and closes the MLflow runs of trials under ``parent_run_id`` (one client per worker)."""

    def __init__(self, uri: Optional[str], parent_run_id: str, model_name: str) -> None:
        from ..tracking import client_for

        self.client = client_for(tracking_uri(uri))
        self.parent_run_id, self.model_name = parent_run_id, model_name

    def start(self, study_name: str, number: int, params: Mapping[str, Any]) -> tuple[str, Any]:
        """-> (run id, the trainer callback that logs each epoch to it)."""
        from ..tracking import MlflowCallback, create_child_run, log_params

        run_id = create_child_run(self.client, self.parent_run_id, f"{self.model_name}-trial-{number}", role="trial",
                                  tags={"mtlp.model_name": self.model_name, "optuna.study": study_name,
                                        "optuna.trial": number})
        log_params(self.client, run_id, {"trial_number": number, **params})
        return run_id, MlflowCallback(run_id, client=self.client, system_metrics=False)

    def finish(self, run_id: str, number: int, status: str, epochs: int,
               values: Optional[Sequence[float]]) -> None:
        """Log the epochs trained and the objective values, tag the trial's state, end the run with ``status``."""
        from mlflow.entities import Metric

        from ..tracking import end_run, retry_call

        try:
            now = int(time.time() * 1000)
            metrics = [Metric("trial/epochs_run", float(epochs), now, 0)]
            metrics += [Metric(f"trial/objective_{i}", float(v), now, 0) for i, v in enumerate(values or [])]
            retry_call(self.client.log_batch, run_id, metrics=metrics)
            retry_call(self.client.set_tag, run_id, "optuna.state", _STATE.get(status, "FAIL"))
        except Exception as e:
            log.warning("MLflow logging of trial %d failed: %s", number, e)
        end_run(self.client, run_id, status)

    def end_orphans(self, study: Any) -> list[str]:
        """End the MLflow runs of this study's trials that no live process will end: a trial that Optuna failed
        as stale (its worker was killed), or one the study no longer holds. Its run is still RUNNING under the
        model's run; it ends FAILED, tagged ``optuna.state`` FAIL. Trials RUNNING in the study (a live worker,
        here or in another pod) keep theirs. Returns the ids of the runs ended."""
        from optuna.trial import TrialState

        from ..tracking import TAGS, end_run, retry_call

        parent = retry_call(self.client.get_run, self.parent_run_id)
        safe = study.study_name.replace("'", "\\'")
        runs = retry_call(self.client.search_runs, [parent.info.experiment_id], max_results=5000,
                          filter_string=f"tags.`{TAGS['parent']}` = '{self.parent_run_id}' and "
                                        f"tags.`{TAGS['role']}` = 'trial' and tags.`optuna.study` = '{safe}' "
                                        "and attributes.status = 'RUNNING'")
        if not runs:
            return []
        alive = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))}
        ended = []
        for run in runs:
            number = run.data.tags.get("optuna.trial", "")
            if number.isdigit() and int(number) in alive:
                continue
            try:
                retry_call(self.client.set_tag, run.info.run_id, "optuna.state", "FAIL")
            except Exception as e:  # the run still ends below
                log.warning("could not tag the orphaned run of trial %s: %s", number, e)
            end_run(self.client, run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
        if ended:
            log.warning("ended %d MLflow trial run(s) left RUNNING by a killed worker (trials %s): FAILED",
                        len(ended), ", ".join(r.data.tags.get("optuna.trial", "?") for r in runs
                                              if r.info.run_id in ended))
        return ended
