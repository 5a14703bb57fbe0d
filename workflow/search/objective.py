"""What one trial does: sample params, train, report each epoch to the pruner, return the objective.

Objective
    ``"mean"`` (default): the trainer's ``val/monitor``, the mean over tasks of AUC and of -RMSE (higher is better).
    A task name: that task's AUC (maximised) or RMSE (minimised); a full key such as ``val/income/logloss``
    also works. Multi-objective: one objective per task (AUC up, RMSE down) at the trial's best epoch.
    Pruning is single-objective only.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .space import SearchSpace
from .study import CAPPED_ATTR, EPOCHS_ATTR, MONITOR_ATTR, OVERSIZE_ATTR, PARAMS_ATTR, SURPLUS_ATTR, claim, is_oversize
from .trial_run import TrialRuns

Values = Union[float, list[float]]


class SurplusTrial(Exception):
    """A trial that found the study's total already reached or claimed; recorded as FAIL and not counted."""


def objective_target(objective: str, multi: bool, task_names: Sequence[str], task_types: Sequence[str]
                     ) -> tuple[list[str], list[str]]:
    """-> (metric keys, directions), one per objective; the direction comes from the trainer's Monitor."""
    from mtl_models.trainer import higher_is_better

    def task_key(name: str) -> str:
        kind = task_types[list(task_names).index(name)]
        return f"val/{name}/" + ("auc" if kind == "classification" else "rmse")

    if multi:
        keys = [task_key(n) for n in task_names]
    elif objective in ("mean", "val/monitor"):
        keys = ["val/monitor"]
    elif objective in task_names:
        keys = [task_key(objective)]
    elif objective.startswith("val/") and objective.split("/")[1] in task_names:
        keys = [objective]
    else:
        raise ValueError(f"objective {objective!r}: use 'mean', one of the tasks {list(task_names)} "
                         "or a key like 'val/<task>/<metric>'")
    return keys, ["maximize" if higher_is_better(k) else "minimize" for k in keys]


class PruningCallback:
    """Trainer callback: reports the objective per epoch and raises ``optuna.TrialPruned`` when the pruner says so.

    ``prune=False`` (multi-objective) only counts epochs. ``epochs`` is the number of epochs trained.
    """

    def __init__(self, trial: Any, key: str, prune: bool = True) -> None:
        self.trial, self.key, self.prune = trial, key, prune
        self.epochs = 0

    def on_fit_start(self, trainer: Any) -> None:
        return None

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        self.epochs += 1
        if not self.prune:
            return
        value = float(metrics[self.key])
        self.trial.report(value, int(epoch))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.key}={value:.5f})")

    def on_fit_end(self, trainer: Any) -> None:
        return None


def trial_values(result: Any, keys: Sequence[str], directions: Sequence[str]) -> Values:
    """The objective value(s) of a finished training run."""
    if len(keys) > 1:  # the kept model's point: every task's metric at the best epoch
        ok = 0 <= result.best_epoch < len(result.history)
        best = result.history[result.best_epoch] if ok else {}
        return [float(best.get(k, math.nan)) for k in keys]
    if keys[0] == "val/monitor":
        return float(result.best_score)
    series = [float(h[keys[0]]) for h in result.history if keys[0] in h]  # a named task: its best over epochs
    pick = max if directions[0] == "maximize" else min
    return pick(series) if series else math.nan


def check_slot(trial: Any, target: int) -> None:
    """Surplus when this trial is not among the first ``target`` trials that can still count."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    numbers = sorted(t.number for t in trial.study.get_trials(deepcopy=False, states=live)
                     if not is_oversize(t))  # skipped for their size: they hold no slot
    if trial.number in numbers and numbers.index(trial.number) >= target:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise SurplusTrial(f"trial {trial.number}: the study's {target} trials are already taken")


class TrialCap:
    """Trainer callback: after the epoch in which the trial passed ``seconds``, stop its training (the best epoch
    so far is kept and scored, as when patience runs out) and mark the trial ``mtlp:capped``."""

    def __init__(self, trial: Any, seconds: float) -> None:
        import time

        self.trial, self.seconds, self.clock, self.start = trial, float(seconds), time.monotonic, time.monotonic()

    def on_fit_start(self, trainer: Any) -> None:
        self.start = self.clock()

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        from mtl_models.trainer.callbacks import StopTraining

        if self.clock() - self.start >= self.seconds:
            self.trial.set_user_attr(CAPPED_ATTR, int(epoch) + 1)
            raise StopTraining(f"search.trial_timeout {self.seconds:g} s reached after epoch {epoch}")

    def on_fit_end(self, trainer: Any) -> None:
        return None


def count_parameters(prepared_dir: Path, model_name: str, params: Mapping[str, Any]) -> int:
    """How many parameters ``model_name`` with ``params`` has on this data (built, not trained)."""
    from ..training.artifacts import read_spec
    from ..training.model_factory import build_model, resolve_params

    model = build_model(model_name, read_spec(prepared_dir), resolve_params(model_name, params))
    return sum(p.numel() for p in model.parameters())


class Objective:
    """The callable ``study.optimize`` runs: one trial trains ``settings["model_name"]`` with sampled params."""

    def __init__(self, settings: Mapping[str, Any], prepared_dir: Path, work_dir: Path, target: int,
                 device: str, tracking_uri: Optional[str], parent_run_id: Optional[str], keep_trial_dirs: bool) -> None:
        self.settings = settings
        self.space = SearchSpace(settings["model_name"], settings["space"])
        self.prepared_dir, self.work_dir, self.target = prepared_dir, work_dir, int(target)
        self.device, self.keep = device, keep_trial_dirs
        self.keys: list[str] = list(settings["metric_keys"])
        self.runs = TrialRuns(tracking_uri, parent_run_id, settings["model_name"]) if parent_run_id else None

    def __call__(self, trial: Any) -> Values:
        import optuna

        claim(trial)
        check_slot(trial, self.target)
        params = self.space.sample(trial)
        trial.set_user_attr(PARAMS_ATTR, params)
        self._check_size(trial, params)
        prune_cb = PruningCallback(trial, self.keys[0], prune=len(self.keys) == 1)
        run_id, log_cb = self.runs.start(trial.study.study_name, trial.number, params) if self.runs else (None, None)
        out_dir = self.work_dir / "trials" / f"trial_{trial.number:05d}"
        status, values = "FAILED", None
        try:
            # the pruning callback goes last: it may raise TrialPruned, after the epoch has been logged
            values = self._train(trial, params, out_dir, [cb for cb in (log_cb, prune_cb) if cb is not None])
            status = "FINISHED"
            return values
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            self._close(trial, prune_cb.epochs, run_id, status, values, out_dir)

    def _check_size(self, trial: Any, params: Mapping[str, Any]) -> None:
        """A model over ``max_params`` is skipped untrained: PRUNED (the sampler learns to avoid it), not counted."""
        import optuna

        bound = self.settings.get("max_params")
        if not bound:
            return
        n = count_parameters(self.prepared_dir, self.settings["model_name"], params)
        if n > int(bound):
            trial.set_user_attr(OVERSIZE_ATTR, n)
            raise optuna.TrialPruned(f"{n} parameters > search.max_params {int(bound)}")

    def _train(self, trial: Any, params: Mapping[str, Any], out_dir: Path, callbacks: list[Any]) -> Values:
        from ..training.train import train

        s = self.settings
        if s.get("trial_timeout"):
            callbacks = [*callbacks, TrialCap(trial, float(s["trial_timeout"]))]
        result = train(self.prepared_dir, s["model_name"], out_dir, params=params, n_epoch=int(s["n_epoch"]),
                       patience=int(s["patience"]), device=self.device, seed=int(s.get("train_seed", 42)),
                       callbacks=callbacks, progress=False)
        trial.set_user_attr(MONITOR_ATTR, float(result.best_score))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        return trial_values(result, self.keys, s["directions"])

    def _close(self, trial: Any, epochs: int, run_id: Optional[str], status: str, values: Optional[Values],
               out_dir: Path) -> None:
        try:
            trial.set_user_attr(EPOCHS_ATTR, epochs)
        except Exception:  # the storage went away: the trial's own error says more
            pass
        if run_id is not None:
            self.runs.finish(run_id, trial.number, status, epochs,
                             values if isinstance(values, list) else None if values is None else [values])
        if not self.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
