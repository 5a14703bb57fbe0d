"""The search step: an Optuna study per model over its search space, with pruning, many workers and resume.

Storage
    ``storage=None``: a journal file in the work directory (``optuna_journal.log``; no server; safe for several
    processes on one machine). A database URL (``postgresql://...``, ``sqlite:///...``) uses Optuna's RDB storage
    with a heartbeat, so workers in other processes or pods can join the same study.

Resume and the total
    A study with the same name resumes: finished trials stay. ``n_trials`` is the study's total of finished trials
    (COMPLETE + PRUNED), not a count per worker: before it asks for a trial a worker checks that a slot is free,
    and a trial that finds itself beyond the total (two workers raced for the last slot) stops at once and is
    recorded as FAIL with the ``mtlp:surplus`` system attr (not counted as failed in the summary).
    A trial whose worker died is detected by its heartbeat going stale (RDB: Optuna's heartbeat; journal: a
    heartbeat system attr written by a thread, plus a same-host pid check), failed, and retried once with the same
    params (``max_retry``). Its own record stays FAIL, so it never counts as complete.

Objective
    ``"mean"`` (default): the trainer's ``val/monitor``, the mean over tasks of AUC and of -RMSE (higher is better).
    A task name: that task's AUC (maximised) or RMSE (minimised); a full key such as ``val/income/logloss``
    also works. ``multi_objective=True``: one objective per task (AUC up, RMSE down) at the trial's best epoch,
    and the Pareto front of trials comes back in ``SearchResult.pareto``. Pruning is single-objective only.

Each trial trains with ``workflow.training.train.train`` (fast in-memory loaders, no progress bars), reports its
objective per epoch to the pruner, and, with ``parent_run_id``, is a nested MLflow run with its params and
per-epoch metrics. The summary (JSON) and plots go to ``work_dir`` and, with MLflow, to the model's run.

CLI: ``python -m workflow.search run ...`` (one or ``--n-workers`` local processes) and
``python -m workflow.search worker --storage URL --study-name NAME --prepared-dir D --work-dir W`` to join a
study from another process or pod (the study carries its own settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .space import SearchSpace, build_space

__all__ = ["SearchResult", "search", "run_worker", "launch_workers", "open_storage", "create_or_load_study",
           "make_pruner", "summarize", "study_counts", "dominates", "main", "JOURNAL_FILE", "SUMMARY_FILE"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
JOURNAL_FILE = "optuna_journal.log"
SUMMARY_FILE = "search_summary.json"
SETTINGS_ATTR = "mtlp:settings"
SURPLUS_ATTR = "mtlp:surplus"
HEARTBEAT_ATTR, OWNER_ATTR = "mtlp:heartbeat", "mtlp:owner"  # owner: [host, pid, trial number]
PARAMS_ATTR, EPOCHS_ATTR, MONITOR_ATTR = "params", "epochs_run", "val_monitor"


class SurplusTrial(Exception):
    """A trial that found the study's total already reached or claimed; recorded as FAIL and not counted."""


# ---------------------------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    model_name: str
    study_name: str
    storage: str                      # password masked
    directions: list[str]
    objective: str
    n_trials: int                     # the total asked for (COMPLETE + PRUNED)
    best_params: dict[str, Any]       # flat, resolved: feed these to workflow.training.train.train
    best_value: Optional[float]       # single objective: the best trial's value; multi: None
    best_values: Optional[list[float]]
    best_trial_number: Optional[int]
    n_complete: int
    n_pruned: int
    n_failed: int                     # failed trials, surplus ones excluded
    n_running: int
    epochs_spent: int                 # epochs trained over all finished trials
    pareto: list[dict[str, Any]] = field(default_factory=list)
    summary_path: Optional[Path] = None
    plot_paths: list[Path] = field(default_factory=list)
    work_dir: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary_path"] = str(self.summary_path) if self.summary_path else None
        d["plot_paths"] = [str(p) for p in self.plot_paths]
        d["work_dir"] = str(self.work_dir) if self.work_dir else None
        return d


# ---------------------------------------------------------------------------------------------------------------
# storage, pruner, sampler, study
# ---------------------------------------------------------------------------------------------------------------

def _quiet_optuna() -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _is_url(storage: str) -> bool:
    return "://" in storage


def _journal_path(storage: Optional[str], work_dir: Optional[PathLike]) -> Optional[Path]:
    if storage is None or storage == "journal":
        if work_dir is None:
            raise ValueError("the embedded journal storage needs a work directory")
        return Path(work_dir) / JOURNAL_FILE
    if storage.startswith("journal:"):
        return Path(storage[len("journal:"):])
    if not _is_url(storage):
        return Path(storage)  # a plain path: a journal file
    return None


def describe_storage(storage: Optional[str], work_dir: Optional[PathLike] = None) -> str:
    """The storage as it may be shown or logged (database password masked)."""
    path = _journal_path(storage, work_dir) if storage is None or not _is_url(storage) else None
    if path is not None:
        return f"journal:{path.resolve()}"
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def open_storage(storage: Optional[str], work_dir: Optional[PathLike] = None, heartbeat_interval: Optional[int] = 15,
                 grace_period: Optional[int] = None, max_retry: Optional[int] = 1, attempts: int = 5):
    """An Optuna storage: a journal file (None / ``journal:PATH`` / a path) or an RDB URL with a heartbeat.

    RDB: ``heartbeat_interval`` seconds between beats, a trial is stale after ``grace_period`` (default 4x the
    interval) and is then retried up to ``max_retry`` times (0: only failed). Creating the tables is retried,
    since workers that start together race on it.
    """
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    _quiet_optuna()
    if not isinstance(storage, (str, type(None))):
        return storage  # already a storage object
    path = _journal_path(storage, work_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    url = storage
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}} if not url.startswith("sqlite") else {}
    if heartbeat_interval:
        kwargs.update(heartbeat_interval=int(heartbeat_interval),
                      grace_period=int(grace_period or 4 * int(heartbeat_interval)),
                      heartbeat_stale_trial_callback=(RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                                                      if max_retry else None))
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return RDBStorage(url, **kwargs)
        except Exception as e:  # e.g. two workers creating the tables at once
            if attempt >= attempts:
                raise
            log.info("opening Optuna storage failed (attempt %d/%d): %s", attempt, attempts, e)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def make_pruner(spec: Any, n_epoch: int):
    """``"median"`` (default), ``"hyperband"``, ``"asha"`` (successive halving), ``"percentile"``, ``"none"``, a
    dict ``{"type": ..., **kwargs}`` or a ready ``optuna.pruners.BasePruner``."""
    import optuna

    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    if spec is None:
        spec = "none"
    if isinstance(spec, str) and spec.startswith("custom:"):
        # a pruner object given to search() lives only in that process; elsewhere (summary) none is needed
        return optuna.pruners.NopPruner()
    kwargs: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        spec = spec.get("type", "median")
    kind = str(spec).lower()
    if kind == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 0, **kwargs})
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**{"percentile": 25.0, "n_startup_trials": 5, **kwargs})
    if kind in ("asha", "successive_halving", "sha"):
        return optuna.pruners.SuccessiveHalvingPruner(**{"min_resource": 1, "reduction_factor": 3,
                                                        "min_early_stopping_rate": 0, **kwargs})
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": max(1, int(n_epoch)),
                                                 "reduction_factor": 3, **kwargs})
    if kind in ("none", "nop", "off", "false"):
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {spec!r}; choose median, hyperband, asha, percentile or none")


def _make_sampler(settings: Mapping[str, Any], worker_index: int):
    import optuna

    seed = settings.get("seed")
    seed = None if seed is None else int(seed) + 1000 * int(worker_index)
    kind = str(settings.get("sampler", "tpe")).lower()
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind in ("nsga2", "nsgaii"):
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind != "tpe":
        raise ValueError(f"unknown sampler {kind!r}; choose tpe, random or nsga2")
    n_startup = int(settings.get("n_startup_trials") or max(3, min(10, int(settings["n_trials"]) // 3)))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=True,
                                      multivariate=True, group=True)


def _objective_target(objective: str, multi: bool, task_names: Sequence[str], task_types: Sequence[str]
                      ) -> tuple[list[str], list[str]]:
    """-> (metric keys, directions), one per objective."""
    from mtl_models.trainer import higher_is_better

    def task_key(name: str) -> str:
        t = task_types[list(task_names).index(name)]
        return f"val/{name}/" + ("auc" if t == "classification" else "rmse")

    def direction(key: str) -> str:
        return "maximize" if higher_is_better(key) else "minimize"

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
    return keys, [direction(k) for k in keys]


def _spec_tasks(prepared_dir: PathLike) -> tuple[list[str], list[str]]:
    from ..data.feature_spec import FeatureSpec

    path = Path(prepared_dir) / "feature_spec.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    spec = FeatureSpec.load(path)
    return list(spec.label_names), list(spec.task_types)


def create_or_load_study(storage: Any, study_name: str, settings: Mapping[str, Any], worker_index: int = 0):
    """Create the study with ``settings`` stored on it, or load it (same model and objective required)."""
    import optuna

    pruner = make_pruner(settings["pruner"], settings["n_epoch"]) if len(settings["directions"]) == 1 \
        else optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, directions=list(settings["directions"]),
                                sampler=_make_sampler(settings, worker_index), pruner=pruner, load_if_exists=True)
    existing = study.user_attrs.get(SETTINGS_ATTR)
    if existing is None:
        study.set_user_attr(SETTINGS_ATTR, json.loads(json.dumps(dict(settings), default=str)))
    else:
        for key in ("model_name", "metric_keys", "directions"):
            if existing.get(key) != settings.get(key):
                raise ValueError(f"study {study_name!r} exists with {key}={existing.get(key)!r}, this search asks "
                                 f"for {settings.get(key)!r}; use another study name")
    if [d.name.lower() for d in study.directions] != list(settings["directions"]):
        raise ValueError(f"study {study_name!r} has directions {[d.name for d in study.directions]}, "
                         f"expected {settings['directions']}")
    return study


def load_study(storage: Any, study_name: str, worker_index: int = 0):
    """Load an existing study with the sampler and pruner its stored settings describe."""
    import optuna

    bare = optuna.load_study(study_name=study_name, storage=storage)
    settings = bare.user_attrs.get(SETTINGS_ATTR)
    if settings is None:
        raise ValueError(f"study {study_name!r} was not created by workflow.search (no {SETTINGS_ATTR} attr)")
    pruner = make_pruner(settings["pruner"], settings["n_epoch"]) if len(settings["directions"]) == 1 \
        else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=_make_sampler(settings, worker_index), pruner=pruner)
    return study, settings


# ---------------------------------------------------------------------------------------------------------------
# counting, stale trials, heartbeat
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Counts:
    complete: int
    pruned: int
    failed: int
    surplus: int
    running: int
    waiting: int

    @property
    def done(self) -> int:
        return self.complete + self.pruned


def study_counts(study: Any) -> Counts:
    from optuna.trial import TrialState

    c = dict(complete=0, pruned=0, failed=0, surplus=0, running=0, waiting=0)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["surplus" if t.system_attrs.get(SURPLUS_ATTR) else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    return Counts(**c)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_stale_journal(study: Any, grace_period: float, max_retry: Optional[int]) -> list[int]:
    """Journal storage: fail RUNNING trials whose heartbeat is older than ``grace_period`` seconds or whose
    worker (same host) is gone, and retry each once more with its params. Returns the failed trial numbers."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    now, host, failed = time.time(), socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a retried trial inherits the dead trial's system attrs: only beats after its own start count
        started = t.datetime_start.timestamp() if t.datetime_start else now
        beat = max(float(t.system_attrs.get(HEARTBEAT_ATTR, started)), started)
        owner = t.system_attrs.get(OWNER_ATTR)
        dead = bool(owner) and owner[0] == host and int(owner[2]) == t.number and int(owner[1]) != os.getpid() \
            and not _pid_alive(int(owner[1]))
        if not dead and now - beat <= grace_period:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        log.warning("trial %d: worker gone (heartbeat %.0fs old); marked FAIL", t.number, now - float(beat))
        if max_retry:
            RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, study._storage.get_trial(t._trial_id))
    return failed


def _fail_stale(study: Any, settings: Mapping[str, Any]) -> None:
    from optuna.storages import fail_stale_trials

    if _uses_journal(study):
        interval = float(settings.get("heartbeat_interval") or 15)
        grace = float(settings.get("grace_period") or 4 * interval)
        _fail_stale_journal(study, grace, settings.get("max_retry", 1))
    else:
        fail_stale_trials(study)


class _JournalHeartbeat:
    """Writes ``mtlp:heartbeat`` on the trial every ``interval`` seconds from a thread (journal storage only;
    Optuna's RDB storage has its own heartbeat)."""

    def __init__(self, study: Any, trial_id: int, interval: float) -> None:
        self.study, self.trial_id, self.interval = study, trial_id, float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mtlp-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.study._storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            except Exception as e:  # the trial finished meanwhile (or the storage is gone)
                log.debug("heartbeat of trial id %d stopped: %s", self.trial_id, e)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "_JournalHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _uses_journal(study: Any) -> bool:
    from optuna.storages import JournalStorage

    return isinstance(study._storage, JournalStorage)


# ---------------------------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------------------------

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


class _Objective:
    def __init__(self, settings: Mapping[str, Any], prepared_dir: Path, work_dir: Path, target: int,
                 device: str, tracking_uri: Optional[str], parent_run_id: Optional[str], keep_trial_dirs: bool) -> None:
        self.settings = settings
        self.space = SearchSpace(settings["model_name"], settings["space"])
        self.prepared_dir, self.work_dir, self.target = prepared_dir, work_dir, int(target)
        self.device, self.keep = device, keep_trial_dirs
        self.keys: list[str] = list(settings["metric_keys"])
        self.multi = len(self.keys) > 1
        self.parent_run_id = parent_run_id
        self.client = None
        if parent_run_id:
            from ..tracking import client_for

            self.client = client_for(_tracking_uri(tracking_uri))

    def _check_slot(self, trial: Any) -> None:
        """Surplus when this trial is not among the first ``target`` trials that can still count."""
        from optuna.trial import TrialState

        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        numbers = sorted(t.number for t in trial.study.get_trials(deepcopy=False, states=live))
        if trial.number in numbers and numbers.index(trial.number) >= self.target:
            trial.study._storage.set_trial_system_attr(trial._trial_id, SURPLUS_ATTR, True)
            raise SurplusTrial(f"trial {trial.number}: the study's {self.target} trials are already taken")

    def __call__(self, trial: Any) -> Any:
        import optuna

        from ..training.train import train

        study = trial.study
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, [socket.gethostname(), os.getpid(), trial.number])
        self._check_slot(trial)
        params = self.space.sample(trial)
        trial.set_user_attr(PARAMS_ATTR, params)
        prune_cb = PruningCallback(trial, self.keys[0], prune=not self.multi)
        callbacks: list[Any] = []
        run_id = None
        if self.client is not None:
            from ..tracking import MlflowCallback, create_child_run, log_params

            run_id = create_child_run(self.client, self.parent_run_id, f"{self.settings['model_name']}-trial-{trial.number}",
                                      role="trial", tags={"mtlp.model_name": self.settings["model_name"],
                                                          "optuna.study": study.study_name,
                                                          "optuna.trial": trial.number})
            log_params(self.client, run_id, {"trial_number": trial.number, **params})
            callbacks.append(MlflowCallback(run_id, client=self.client, system_metrics=False))
        callbacks.append(prune_cb)  # last: it may raise TrialPruned, after the epoch has been logged
        out_dir = self.work_dir / "trials" / f"trial_{trial.number:05d}"
        heartbeat = _JournalHeartbeat(study, trial._trial_id, float(self.settings.get("heartbeat_interval") or 15)) \
            if _uses_journal(study) else None
        status, values = "FAILED", None
        try:
            if heartbeat:
                heartbeat.__enter__()
            result = train(self.prepared_dir, self.settings["model_name"], out_dir, params=params,
                           n_epoch=int(self.settings["n_epoch"]), patience=int(self.settings["patience"]),
                           device=self.device, seed=int(self.settings.get("train_seed", 42)),
                           callbacks=callbacks, progress=False)
            best = result.history[result.best_epoch] if 0 <= result.best_epoch < len(result.history) else {}
            trial.set_user_attr(MONITOR_ATTR, float(result.best_score))
            trial.set_user_attr("best_epoch", int(result.best_epoch))
            if self.multi:  # the kept model's point: every task's metric at the best epoch
                values = [float(best.get(k, math.nan)) for k in self.keys]
            elif self.keys[0] == "val/monitor":
                values = float(result.best_score)
            else:  # a named task: its best value over the epochs trained
                series = [float(h[self.keys[0]]) for h in result.history if self.keys[0] in h]
                pick = max if self.settings["directions"][0] == "maximize" else min
                values = pick(series) if series else math.nan
            status = "FINISHED"
            return values
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            if heartbeat:
                heartbeat.__exit__(None, None, None)
            try:
                trial.set_user_attr(EPOCHS_ATTR, prune_cb.epochs)
            except Exception:
                pass
            if run_id is not None:
                from ..tracking import end_run, retry_call

                try:
                    from mlflow.entities import Metric

                    now = int(time.time() * 1000)
                    metrics = [Metric("trial/epochs_run", float(prune_cb.epochs), now, 0)]
                    if values is not None:
                        vals = values if isinstance(values, list) else [values]
                        metrics += [Metric(f"trial/objective_{i}", float(v), now, 0) for i, v in enumerate(vals)]
                    retry_call(self.client.log_batch, run_id, metrics=metrics)
                    retry_call(self.client.set_tag, run_id, "optuna.state",
                               {"FINISHED": "COMPLETE", "KILLED": "PRUNED"}.get(status, "FAIL"))
                except Exception as e:  # logging must not change the trial's outcome
                    log.warning("MLflow logging of trial %d failed: %s", trial.number, e)
                end_run(self.client, run_id, status)
            if not self.keep:
                shutil.rmtree(out_dir, ignore_errors=True)


class _Progress:
    def __init__(self, model_name: str, target: int, enabled: bool) -> None:
        self.model_name, self.target, self.enabled = model_name, target, enabled

    def __call__(self, study: Any, trial: Any) -> None:
        if not self.enabled:
            return
        c = study_counts(study)
        value = ("-" if trial.values is None else
                 ", ".join(f"{v:.4f}" for v in trial.values))
        best = ""
        if len(study.directions) == 1 and c.complete:
            try:
                best = f" best={study.best_value:.4f} (#{study.best_trial.number})"
            except ValueError:
                pass
        extra = f" after {len(trial.intermediate_values)} epoch(s)" if trial.state.name == "PRUNED" else ""
        print(f"[search {self.model_name}] trial {trial.number} {trial.state.name}{extra} value={value} | "
              f"{c.done}/{self.target} done (complete {c.complete}, pruned {c.pruned}, failed {c.failed}, "
              f"running {c.running}){best}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------------------------

def run_worker(storage: Any, study_name: str, prepared_dir: PathLike, work_dir: PathLike,
               n_trials: Optional[int] = None, worker_index: int = 0, device: str = "auto",
               tracking_uri: Optional[str] = None, parent_run_id: Optional[str] = None, progress: bool = True,
               threads: Optional[int] = None, poll_interval: float = 1.0, max_consecutive_failures: int = 5,
               keep_trial_dirs: bool = False, heartbeat_interval: Optional[int] = None,
               grace_period: Optional[int] = None, max_retry: Optional[int] = None) -> int:
    """Work on an existing study until it has ``n_trials`` finished trials (default: the study's own total).

    ``storage``: a storage object or the string given to :func:`open_storage` (heartbeat settings default to the
    study's). Waits while the remaining slots are held by running trials (they may die and need a re-run).
    Returns the number of trials this worker ran.
    """
    import optuna
    import torch

    _quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads:
        torch.set_num_threads(int(threads))
    work_dir = Path(work_dir)
    if isinstance(storage, (str, type(None))):
        probe_storage = open_storage(storage, work_dir, heartbeat_interval=None)
        _, stored = load_study(probe_storage, study_name)
        storage = open_storage(storage, work_dir,
                               heartbeat_interval=heartbeat_interval or stored.get("heartbeat_interval"),
                               grace_period=grace_period or stored.get("grace_period"),
                               max_retry=stored.get("max_retry", 1) if max_retry is None else max_retry)
    study, settings = load_study(storage, study_name, worker_index)
    return _work_loop(study, settings, prepared_dir, work_dir, n_trials, device, tracking_uri, parent_run_id,
                      progress, poll_interval, max_consecutive_failures, keep_trial_dirs)


def _work_loop(study: Any, settings: Mapping[str, Any], prepared_dir: PathLike, work_dir: Path,
               n_trials: Optional[int], device: str, tracking_uri: Optional[str], parent_run_id: Optional[str],
               progress: bool, poll_interval: float = 1.0, max_consecutive_failures: int = 5,
               keep_trial_dirs: bool = False) -> int:
    target = int(n_trials or settings["n_trials"])
    objective = _Objective(settings, Path(prepared_dir), Path(work_dir), target, device, tracking_uri, parent_run_id,
                           keep_trial_dirs)
    progress_cb = _Progress(settings["model_name"], target, progress)
    ran, failures = 0, 0
    while True:
        _fail_stale(study, settings)
        c = study_counts(study)
        if c.done >= target:
            break
        if c.waiting == 0 and c.done + c.running >= target:
            time.sleep(poll_interval)  # the last slots are running elsewhere; they may still fail
            continue
        before = c.failed
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress_cb], gc_after_trial=True)
        ran += 1
        failures = failures + 1 if study_counts(study).failed > before else 0
        if failures >= max_consecutive_failures:
            raise RuntimeError(f"{failures} trials in a row failed in this worker; see the log above "
                               f"(study {study.study_name!r})")
    return ran


def _resolve_env_storage(storage: Optional[str]) -> Optional[str]:
    """``env:NAME`` -> the URL in environment variable NAME (keeps passwords off command lines)."""
    if storage and storage.startswith("env:"):
        name = storage[4:]
        if name not in os.environ:
            raise SystemExit(f"--storage {storage}: environment variable {name} is not set")
        return os.environ[name]
    return storage


def _worker_cmd(storage: str, study_name: str, prepared_dir: PathLike, work_dir: PathLike, n_trials: int,
                index: int, device: str, tracking_uri: Optional[str], parent_run_id: Optional[str],
                threads: Optional[int], progress: bool) -> list[str]:
    cmd = [sys.executable, "-m", "workflow.search", "worker", "--storage", storage, "--study-name", study_name,
           "--prepared-dir", str(prepared_dir), "--work-dir", str(work_dir), "--n-trials", str(n_trials),
           "--worker-index", str(index), "--device", device]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    if threads:
        cmd += ["--threads", str(threads)]
    if not progress:
        cmd += ["--quiet"]
    return cmd


def launch_workers(n_workers: int, storage: Optional[str], study_name: str, prepared_dir: PathLike,
                   work_dir: PathLike, n_trials: int, device: str = "auto", tracking_uri: Optional[str] = None,
                   parent_run_id: Optional[str] = None, threads: Optional[int] = None, progress: bool = True,
                   wait: bool = True) -> list[subprocess.Popen]:
    """Start ``n_workers`` local worker processes on an existing study (``wait``: until all exit; a non-zero
    exit raises). Each gets ``threads`` torch threads (default: the CPUs shared out)."""
    work_dir = Path(work_dir)
    storage_arg = storage if storage is not None else f"journal:{(work_dir / JOURNAL_FILE).resolve()}"
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, n_workers))
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if _is_url(storage_arg):  # the database URL (with its password) travels in the environment, not in argv
        env["MTLP_SEARCH_STORAGE"] = storage_arg
        storage_arg = "env:MTLP_SEARCH_STORAGE"
    procs = [subprocess.Popen(_worker_cmd(storage_arg, study_name, Path(prepared_dir).resolve(), work_dir.resolve(),
                                          n_trials, i, device, tracking_uri, parent_run_id, threads, progress),
                              cwd=root, env=env)
             for i in range(n_workers)]
    if not wait:
        return procs
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        raise RuntimeError(f"search workers exited with errors: {bad}")
    return procs


# ---------------------------------------------------------------------------------------------------------------
# summary, plots, Pareto front
# ---------------------------------------------------------------------------------------------------------------

def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and strictly better in one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def _plots(study: Any, settings: Mapping[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(settings["metric_keys"])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    paths: list[Path] = []

    def save(name: str, draw: Any) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else (ax.flat[0].figure if hasattr(ax, "flat") else plt.gcf())
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            paths.append(out_dir / name)
        except Exception as e:  # too few trials, a constant parameter...
            log.info("plot %s skipped: %s", name, e)
        finally:
            plt.close("all")

    if len(keys) == 1:
        save("optimization_history.png", lambda: ovm.plot_optimization_history(study, target_name=keys[0]))
        if len(complete) >= 2:
            save("param_importances.png", lambda: ovm.plot_param_importances(study, target_name=keys[0]))
        save("intermediate_values.png", lambda: ovm.plot_intermediate_values(study))
    else:
        for i, key in enumerate(keys):
            tag = key.split("/")[1]
            save(f"optimization_history_{tag}.png",
                 lambda i=i, key=key: ovm.plot_optimization_history(study, target=lambda t: t.values[i],
                                                                    target_name=key))
            if len(complete) >= 2:
                save(f"param_importances_{tag}.png",
                     lambda i=i, key=key: ovm.plot_param_importances(study, target=lambda t: t.values[i],
                                                                     target_name=key))
        if len(keys) in (2, 3):
            save("pareto_front.png", lambda: ovm.plot_pareto_front(study, target_names=keys))
    return paths


def summarize(study: Any, settings: Mapping[str, Any], work_dir: PathLike, storage_desc: str,
              n_trials: Optional[int] = None, plots: bool = True) -> SearchResult:
    """The study's outcome; writes ``search_summary.json`` and the plots into ``work_dir``."""
    from optuna.trial import TrialState

    from ..training.model_factory import resolve_params

    work_dir = Path(work_dir)
    c = study_counts(study)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    epochs = sum(int(t.user_attrs.get(EPOCHS_ATTR, len(t.intermediate_values))) for t in trials
                 if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    directions = list(settings["directions"])
    multi = len(directions) > 1
    best_trial, best_value, best_values, pareto = None, None, None, []
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and all(math.isfinite(v) for v in t.values)]
    if multi:
        front = [t for t in complete if not any(dominates(o.values, t.values, directions) for o in complete)]
        pareto = [{"number": t.number, "values": list(t.values), "val_monitor": t.user_attrs.get(MONITOR_ATTR),
                   "params": t.user_attrs.get(PARAMS_ATTR, {})} for t in sorted(front, key=lambda t: t.number)]
        if front:  # the model to train: the front's best mean score
            best_trial = max(front, key=lambda t: t.user_attrs.get(MONITOR_ATTR, -math.inf))
            best_values = list(best_trial.values)
    elif complete:
        pick = max if directions[0] == "maximize" else min
        best_trial = pick(complete, key=lambda t: t.values[0])
        best_value = float(best_trial.values[0])
        best_values = [best_value]
    space = SearchSpace(settings["model_name"], settings["space"])
    if best_trial is not None:
        flat = best_trial.user_attrs.get(PARAMS_ATTR) or space.params_of(best_trial.params)
        best_params = resolve_params(settings["model_name"], flat)
    else:
        best_params = resolve_params(settings["model_name"], None)
    result = SearchResult(
        model_name=settings["model_name"], study_name=study.study_name, storage=storage_desc,
        directions=directions, objective=str(settings["objective"]), n_trials=int(n_trials or settings["n_trials"]),
        best_params=best_params, best_value=best_value, best_values=best_values,
        best_trial_number=best_trial.number if best_trial is not None else None,
        n_complete=c.complete, n_pruned=c.pruned, n_failed=c.failed, n_running=c.running, epochs_spent=epochs,
        pareto=pareto, work_dir=work_dir)
    if plots:
        result.plot_paths = _plots(study, settings, work_dir / "plots")
    summary = result.to_dict()
    summary.update(metric_keys=settings["metric_keys"], n_surplus=c.surplus, n_finished=len(finished),
                   search_space=settings["space"], pruner=settings["pruner"], n_epoch=settings["n_epoch"],
                   trials=[{"number": t.number, "state": t.state.name,
                            "values": list(t.values) if t.values is not None else None,
                            "epochs_run": t.user_attrs.get(EPOCHS_ATTR), "params": t.params,
                            "retry_of": t.system_attrs.get("failed_trial"),
                            "surplus": bool(t.system_attrs.get(SURPLUS_ATTR, False))} for t in trials],
                   written_at=datetime.now().isoformat(timespec="seconds"))
    path = work_dir / SUMMARY_FILE
    from ..data.feature_spec import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=2, default=str))
    result.summary_path = path
    return result


def _tracking_uri(tracking_uri: Optional[str]) -> str:
    """The explicit URI, else ``MLFLOW_TRACKING_URI``, else the one this process's MLflow is set to."""
    if tracking_uri:
        return tracking_uri
    import mlflow

    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def _log_to_mlflow(result: SearchResult, tracking_uri: Optional[str], parent_run_id: str, work_dir: Path) -> None:
    from ..tracking import client_for, log_artifact_files, retry_call

    client = client_for(_tracking_uri(tracking_uri))
    log_artifact_files(client, parent_run_id, [result.summary_path], "search")
    log_artifact_files(client, parent_run_id, result.plot_paths, "search/plots")
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = {"search/n_complete": result.n_complete, "search/n_pruned": result.n_pruned,
               "search/n_failed": result.n_failed, "search/epochs_spent": result.epochs_spent}
    if result.best_value is not None:
        metrics["search/best_value"] = result.best_value
    retry_call(client.log_batch, parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    retry_call(client.set_tag, parent_run_id, "mtlp.search.study", result.study_name)
    if result.best_trial_number is not None:
        retry_call(client.set_tag, parent_run_id, "mtlp.search.best_trial", str(result.best_trial_number))


# ---------------------------------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------------------------------

def search(prepared_dir: PathLike, model_name: str, work_dir: PathLike, n_trials: int = 20, n_epoch: int = 5,
           patience: int = 3, storage: Optional[str] = None, study_name: Optional[str] = None,
           pruner: Any = "median", objective: str = "mean", multi_objective: bool = False, seed: Optional[int] = 42,
           search_space: Optional[Mapping[str, Any]] = None, n_workers: int = 1, device: str = "auto",
           parent_run_id: Optional[str] = None, tracking_uri: Optional[str] = None, heartbeat_interval: int = 15,
           grace_period: Optional[int] = None, max_retry: int = 1, sampler: str = "tpe",
           n_startup_trials: Optional[int] = None, threads: Optional[int] = None, progress: bool = True,
           keep_trial_dirs: bool = False, plots: bool = True) -> SearchResult:
    """Search ``model_name``'s hyperparameters; returns the study's outcome with ``best_params`` for training.

    ``n_trials`` is the study's total (resuming counts the trials already finished). ``n_workers > 1`` runs
    local worker processes (other processes or pods may join with ``python -m workflow.search worker``).
    ``search_space``: the config's overrides (see :mod:`workflow.search.space`).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    if n_epoch < 1:
        raise ValueError("n_epoch must be >= 1")
    if n_workers > 1 and not isinstance(pruner, (str, Mapping, type(None))):
        raise ValueError("a pruner object cannot be shared with worker processes; give its name or a dict")
    space = build_space(model_name, search_space)
    task_names, task_types = _spec_tasks(prepared_dir)
    if parent_run_id:
        tracking_uri = _tracking_uri(tracking_uri)  # workers get the concrete URI
    if multi_objective and len(task_names) < 2:
        raise ValueError("multi_objective needs at least two tasks")
    keys, directions = _objective_target(objective, multi_objective, task_names, task_types)
    study_name = study_name or f"{model_name}-search"
    settings = {"model_name": model_name, "objective": objective, "metric_keys": keys, "directions": directions,
                "n_trials": int(n_trials), "n_epoch": int(n_epoch), "patience": int(patience),
                "pruner": pruner if isinstance(pruner, (str, Mapping, type(None))) else f"custom:{type(pruner).__name__}",
                "space": space.to_dict(), "seed": seed, "train_seed": 42 if seed is None else int(seed),
                "sampler": sampler, "n_startup_trials": n_startup_trials,
                "heartbeat_interval": int(heartbeat_interval), "grace_period": grace_period, "max_retry": max_retry}
    store = open_storage(storage, work_dir, heartbeat_interval, grace_period, max_retry)
    study = create_or_load_study(store, study_name, settings)
    if not isinstance(pruner, (str, Mapping, type(None))) and len(directions) == 1:
        study.pruner = pruner  # a pruner object only lives in this process
    desc = describe_storage(storage, work_dir)
    if progress:
        c = study_counts(study)
        print(f"[search {model_name}] study {study_name!r} on {desc}: {c.done}/{n_trials} trials done, "
              f"{len(space.searched())} hyperparameters searched, objective {keys} ({directions}), "
              f"{n_workers} worker(s)", file=sys.stderr, flush=True)
    if n_workers <= 1:
        import optuna
        import torch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if threads:
            torch.set_num_threads(int(threads))
        _work_loop(study, settings, prepared_dir, work_dir, n_trials, device, tracking_uri, parent_run_id, progress,
                   keep_trial_dirs=keep_trial_dirs)
    else:
        if storage is not None and not _is_url(storage):
            storage = f"journal:{Path(_journal_path(storage, work_dir)).resolve()}"
        launch_workers(n_workers, storage, study_name, prepared_dir, work_dir, n_trials, device=device,
                       tracking_uri=tracking_uri, parent_run_id=parent_run_id, threads=threads, progress=progress)
    with contextlib.suppress(OSError):
        (work_dir / "trials").rmdir()  # only when empty (kept trial folders stay)
    study, _ = load_study(store, study_name)
    result = summarize(study, settings, work_dir, desc, n_trials=n_trials, plots=plots)
    if parent_run_id:
        try:
            _log_to_mlflow(result, tracking_uri, parent_run_id, work_dir)
        except Exception as e:
            log.warning("could not log the search summary to MLflow run %s: %s", parent_run_id, e)
    if progress:
        best = f"best {result.best_value:.4f} (trial {result.best_trial_number})" if result.best_value is not None \
            else f"Pareto front of {len(result.pareto)}"
        print(f"[search {model_name}] done: {result.n_complete} complete, {result.n_pruned} pruned, "
              f"{result.n_failed} failed, {result.epochs_spent} epochs; {best}", file=sys.stderr, flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow.search", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--prepared-dir", required=True)
        sp.add_argument("--work-dir", required=True)
        sp.add_argument("--storage", default=None, help="journal:PATH, a database URL, or env:VAR holding the URL "
                                                        "(default: a journal file in the work dir)")
        sp.add_argument("--study-name", default=None)
        sp.add_argument("--n-trials", type=int, default=None, help="the study's total of finished trials")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--tracking-uri", default=None)
        sp.add_argument("--parent-run-id", default=None)
        sp.add_argument("--threads", type=int, default=None, help="torch threads per worker")
        sp.add_argument("--quiet", action="store_true")

    run = sub.add_parser("run", help="create or resume a study and run it to its total")
    common(run)
    run.add_argument("--model", required=True)
    run.add_argument("--n-epoch", type=int, default=5)
    run.add_argument("--patience", type=int, default=3)
    run.add_argument("--pruner", default="median")
    run.add_argument("--objective", default="mean")
    run.add_argument("--multi-objective", action="store_true")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--space", default=None, help="JSON (or a path to JSON/YAML) with search space overrides")
    run.add_argument("--n-workers", type=int, default=1)
    run.add_argument("--heartbeat-interval", type=int, default=15)
    run.add_argument("--grace-period", type=int, default=None)

    worker = sub.add_parser("worker", help="join an existing study (its settings come from the study)")
    common(worker)
    worker.add_argument("--worker-index", type=int, default=None)
    return p


def _load_space(text: Optional[str]) -> Optional[dict]:
    if not text:
        return None
    path = Path(text)
    if path.is_file():
        raw = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            return yaml.safe_load(raw)
        return json.loads(raw)
    return json.loads(text)


def _storage_failure(exc: BaseException) -> Optional[BaseException]:
    """The database error behind ``exc``, if any (Optuna can mask it, e.g. with an UnboundLocalError raised
    while it handles the lost connection)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg2")):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except Exception as exc:  # noqa: BLE001 - a lost study database gets a message, everything else re-raises
        db = _storage_failure(exc)
        if db is None:
            raise
        first = (str(db).strip().splitlines() or [type(db).__name__])[0]
        print(f"workflow.search: error: lost the connection to the study database ({type(db).__name__}: "
              f"{first[:200]}). Finished trials are saved; the interrupted trial is failed and retried when the "
              "study is re-run with the same --study-name.", file=sys.stderr)
        return 3


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    args.storage = _resolve_env_storage(args.storage)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "run":
        result = search(args.prepared_dir, args.model, args.work_dir, n_trials=args.n_trials or 20,
                        n_epoch=args.n_epoch, patience=args.patience, storage=args.storage, study_name=args.study_name,
                        pruner=args.pruner, objective=args.objective, multi_objective=args.multi_objective,
                        seed=args.seed, search_space=_load_space(args.space), n_workers=args.n_workers,
                        device=args.device, parent_run_id=args.parent_run_id, tracking_uri=args.tracking_uri,
                        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                        threads=args.threads, progress=not args.quiet)
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    if args.study_name is None:
        raise SystemExit("worker: --study-name is required")
    index = args.worker_index if args.worker_index is not None else os.getpid() % 10_000
    ran = run_worker(args.storage, args.study_name, args.prepared_dir, args.work_dir, n_trials=args.n_trials,
                     worker_index=index, device=args.device, tracking_uri=args.tracking_uri,
                     parent_run_id=args.parent_run_id, progress=not args.quiet, threads=args.threads)
    log.info("worker %s ran %d trials", index, ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
