"""Study bookkeeping: create / load a study with its stored settings, count its trials, fail stale ones.

This is the only module of ``workflow.search`` allowed Optuna's private API (pinned by
``tests/search/test_search_structure.py``). It needs it in one place: Optuna (5.1) gives the RDB storage a
heartbeat but not the journal file storage, so :class:`HeartbeatJournalStorage` adds one through Optuna's own
``BaseHeartbeat`` interface. With it both backends use the public machinery: ``Study.optimize`` beats from its
own thread and calls ``fail_stale_trials``, which fails stale trials and hands them to
``RetryHeartbeatStaleTrialCallback`` (one retry with the same params by default). Optuna's heartbeat thread ends
at the first exception a beat raises, so both storages here survive a failed beat and try the next one (the RDB
one logs it; the journal's fails only for a finished trial): a database restart must not leave a live trial
without beats, to be failed under its worker's feet.

Trials beyond the study's total (two workers raced for the last slot) are failed at once and carry the
``mtlp:surplus`` user attr; they are not counted as failed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..errors import first_line

SETTINGS_ATTR = "mtlp:settings"
SURPLUS_ATTR = "mtlp:surplus"
OVERSIZE_ATTR = "mtlp:oversize"  # a PRUNED trial skipped untrained: its model had more than search.max_params
CAPPED_ATTR = "mtlp:capped"  # a trial whose training search.trial_timeout stopped (its epochs then)
BUDGET_ATTR = "mtlp:budget_cut"  # on the study: the time budget stopped it short, {"timeout", "done", "target"}
HEARTBEAT_ATTR, OWNER_ATTR = "mtlp:heartbeat", "mtlp:owner"  # owner (user attr): [host, pid, trial number]
PARAMS_ATTR, EPOCHS_ATTR, MONITOR_ATTR = "params", "epochs_run", "val_monitor"

log = logging.getLogger(__name__)


def quiet_optuna() -> None:
    """Silence Optuna's experimental / future warnings and its per-trial INFO lines."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------------------------
# a heartbeat for the journal file storage
# ---------------------------------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(trial: Any, host: str) -> bool:
    """The trial's worker ran on this host and its process no longer exists (caught before the grace period)."""
    owner = trial.user_attrs.get(OWNER_ATTR) or trial.system_attrs.get(OWNER_ATTR)
    if not owner or owner[0] != host or int(owner[2]) != trial.number:  # a retry inherits the dead one's owner
        return False
    return int(owner[1]) != os.getpid() and not _pid_alive(int(owner[1]))


def _make_journal_class() -> type:
    # Private API, and why: Optuna 5.1's JournalStorage does not implement BaseHeartbeat (RDBStorage does), and
    # BaseHeartbeat lives in optuna.storages._heartbeat. Implementing its four methods is what lets
    # Study.optimize run the heartbeat thread and the public fail_stale_trials reap journal trials too.
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class _HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """A journal storage whose trials beat as a system attr (``mtlp:heartbeat``, time); stale: no beat for
        ``grace_period`` seconds, or the worker named by ``mtlp:owner`` (same host) is gone."""

        def __init__(self, backend: Any, heartbeat_interval: Optional[int], grace_period: Optional[int],
                     stale_callback: Optional[Callable[..., None]]) -> None:
            super().__init__(backend)
            self.heartbeat_interval = int(heartbeat_interval) if heartbeat_interval else None
            self.grace_period = float(grace_period or 4 * (self.heartbeat_interval or 15))
            self.stale_callback = stale_callback

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # the trial finished meanwhile: nothing left to keep alive
                return

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, host = time.time(), socket.gethostname()
            return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                    if _owner_gone(t, host) or now - _last_beat(t, now) > self.grace_period]

        def get_heartbeat_interval(self) -> Optional[int]:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> Optional[Callable[..., None]]:
            return self.stale_callback

    return _HeartbeatJournalStorage


def _last_beat(trial: Any, now: float) -> float:
    """The trial's last beat; a retried trial inherits the dead trial's attrs, so only beats after its start count."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    return max(float(trial.system_attrs.get(HEARTBEAT_ATTR, started)), started)


_JOURNAL_CLASS: Optional[type] = None
_RDB_CLASS: Optional[type] = None


def _make_rdb_class() -> type:
    from optuna.storages import RDBStorage

    class _SteadyHeartbeatRDBStorage(RDBStorage):
        """Optuna's RDB storage whose failed beat (the database restarting, a dropped connection) is logged, not
        raised: raising would end the trial's heartbeat thread for good."""

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except Exception as e:  # noqa: BLE001 - the next beat retries; the trial's own calls report errors
                log.warning("heartbeat of trial id %d failed (%s); retrying in %ss", trial_id, first_line(e, 200),
                            self.heartbeat_interval)

    return _SteadyHeartbeatRDBStorage


def rdb_storage(url: str, **kwargs: Any) -> Any:
    """Optuna's RDB storage (``RDBStorage(url, **kwargs)``) with a heartbeat that outlives a failed beat."""
    global _RDB_CLASS
    _RDB_CLASS = _RDB_CLASS or _make_rdb_class()
    return _RDB_CLASS(url, **kwargs)


def heartbeat_journal(path: Path, heartbeat_interval: Optional[int], grace_period: Optional[int],
                      max_retry: Optional[int]) -> Any:
    """A journal file storage with a heartbeat (``heartbeat_interval`` None: no beats, stale trials stay)."""
    global _JOURNAL_CLASS
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    _JOURNAL_CLASS = _JOURNAL_CLASS or _make_journal_class()
    path.parent.mkdir(parents=True, exist_ok=True)
    callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if max_retry else None
    return _JOURNAL_CLASS(JournalFileBackend(str(path)), heartbeat_interval, grace_period, callback)


def fail_stale(study: Any) -> None:
    """Fail the study's stale trials and queue their retries (Optuna's public call, for both backends)."""
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fail_stale_trials(study)


# ---------------------------------------------------------------------------------------------------------------
# pruner, sampler, create / load
# ---------------------------------------------------------------------------------------------------------------

_PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "median": ("MedianPruner", {"n_startup_trials": 5, "n_warmup_steps": 0}),
    "percentile": ("PercentilePruner", {"percentile": 25.0, "n_startup_trials": 5}),
    "asha": ("SuccessiveHalvingPruner", {"min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0}),
    "hyperband": ("HyperbandPruner", {"min_resource": 1, "reduction_factor": 3}),
    "none": ("NopPruner", {}),
}
_PRUNER_ALIASES = {"successive_halving": "asha", "sha": "asha", "nop": "none", "off": "none", "false": "none"}


def make_pruner(spec: Any, n_epoch: int) -> Any:
    """``"median"`` (default), ``"hyperband"``, ``"asha"`` (successive halving), ``"percentile"``, ``"none"``, a
    dict ``{"type": ..., **kwargs}`` or a ready ``optuna.pruners.BasePruner``."""
    import optuna

    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    if isinstance(spec, str) and spec.startswith("custom:"):
        return optuna.pruners.NopPruner()  # a pruner object given to search() lives only in that process
    kwargs = {k: v for k, v in spec.items() if k != "type"} if isinstance(spec, Mapping) else {}
    kind = str(spec.get("type", "median") if isinstance(spec, Mapping) else spec or "none").lower()
    kind = _PRUNER_ALIASES.get(kind, kind)
    if kind not in _PRUNERS:
        raise ValueError(f"unknown pruner {kind!r}; choose median, hyperband, asha, percentile or none")
    cls, defaults = _PRUNERS[kind]
    if kind == "hyperband":
        defaults = {**defaults, "max_resource": max(1, int(n_epoch))}
    return getattr(optuna.pruners, cls)(**{**defaults, **kwargs})


def make_sampler(settings: Mapping[str, Any], worker_index: int) -> Any:
    """TPE (default; constant liar so parallel workers spread out), random or NSGA-II; seeded per worker."""
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


def _pruner_for(settings: Mapping[str, Any]) -> Any:
    import optuna

    if len(settings["directions"]) != 1:
        return optuna.pruners.NopPruner()  # pruning is single-objective only
    return make_pruner(settings["pruner"], settings["n_epoch"])


def _check_same_study(study: Any, study_name: str, settings: Mapping[str, Any]) -> None:
    existing = study.user_attrs.get(SETTINGS_ATTR)
    for key in ("model_name", "metric_keys", "directions"):
        if existing.get(key) != settings.get(key):
            raise ValueError(f"study {study_name!r} exists with {key}={existing.get(key)!r}, this search asks "
                             f"for {settings.get(key)!r}; use another study name")
    if [d.name.lower() for d in study.directions] != list(settings["directions"]):
        raise ValueError(f"study {study_name!r} has directions {[d.name for d in study.directions]}, "
                         f"expected {settings['directions']}")


def create_or_load_study(storage: Any, study_name: str, settings: Mapping[str, Any], worker_index: int = 0) -> Any:
    """Create the study with ``settings`` stored on it, or load it (same model and objective required)."""
    import optuna

    quiet_optuna()
    study = optuna.create_study(storage=storage, study_name=study_name, directions=list(settings["directions"]),
                                sampler=make_sampler(settings, worker_index), pruner=_pruner_for(settings),
                                load_if_exists=True)
    if study.user_attrs.get(SETTINGS_ATTR) is None:
        study.set_user_attr(SETTINGS_ATTR, json.loads(json.dumps(dict(settings), default=str)))
    _check_same_study(study, study_name, settings)
    return study


def stored_settings(storage: Any, study_name: str) -> dict[str, Any]:
    """The settings ``create_or_load_study`` stored on the study."""
    import optuna

    settings = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(SETTINGS_ATTR)
    if settings is None:
        raise ValueError(f"study {study_name!r} was not created by workflow.search (no {SETTINGS_ATTR} attr)")
    return settings


def load_study(storage: Any, study_name: str, worker_index: int = 0) -> tuple[Any, dict[str, Any]]:
    """Load an existing study with the sampler and pruner its stored settings describe."""
    import optuna

    settings = stored_settings(storage, study_name)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(settings, worker_index),
                              pruner=_pruner_for(settings))
    return study, settings


# ---------------------------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------------------------

def claim(trial: Any) -> None:
    """Name the trial's worker (host, pid): who ran what, and how a dead worker's trial is told on this host."""
    trial.set_user_attr(OWNER_ATTR, [socket.gethostname(), os.getpid(), trial.number])


def is_oversize(trial: Any) -> bool:
    return trial.state.name == "PRUNED" and bool(trial.user_attrs.get(OVERSIZE_ATTR))


def mark_budget_cut(study: Any, timeout: float, done: int, target: int) -> None:
    """Record on the study that its time budget stopped it after ``done`` of ``target`` trials."""
    try:
        study.set_user_attr(BUDGET_ATTR, {"timeout": timeout, "done": done, "target": target})
    except Exception as e:  # noqa: BLE001 - the note is for the summary; the search itself is fine
        log.warning("could not record the search's budget cut: %s", first_line(e, 200))


def is_surplus(trial: Any) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR) or trial.system_attrs.get(SURPLUS_ATTR))


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    surplus: int = 0
    oversize: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        return self.complete + self.pruned


def study_counts(study: Any) -> Counts:
    """Trials per state; a surplus FAIL counts as ``surplus``, not ``failed``; an oversize PRUNED (skipped
    untrained for ``max_params``) as ``oversize``, not ``pruned`` (so not as done)."""
    c = Counts()
    for t in study.get_trials(deepcopy=False):
        name = t.state.name.lower() if t.state.name != "FAIL" else ("surplus" if is_surplus(t) else "failed")
        name = "oversize" if is_oversize(t) else name
        if name in ("complete", "pruned", "failed", "surplus", "oversize", "running", "waiting"):
            setattr(c, name, getattr(c, name) + 1)
    return c
