"""The search step: create or resume a model's study, run its trials (here or in worker processes), summarise."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from . import progress as say
from .objective import objective_target
from .space import SearchSpace, build_space
from .storage import PathLike, describe_storage, open_storage
from .study import create_or_load_study, load_study, quiet_optuna
from .summary import SearchResult, log_to_mlflow, summarize
from .trial_run import tracking_uri as resolve_uri
from .trial_run import TrialRuns
from .workers import launch_workers, reap, set_threads, work_loop

log = logging.getLogger(__name__)


def _load_spec(prepared_dir: PathLike) -> Any:
    """The prepared data's ``FeatureSpec`` (the default search space is fitted to it)."""
    from ..data.feature_spec import FeatureSpec

    path = Path(prepared_dir) / "feature_spec.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    return FeatureSpec.load(path)


def _spec_tasks(prepared_dir: PathLike, model_name: str) -> tuple[list[str], list[str]]:
    """The prepared data's tasks, once ``model_name`` is known to be scored on its labels (before any trial)."""
    from ..training.evaluate import check_scored_on_labels
    from ..training.model_factory import build_model

    spec = _load_spec(prepared_dir)
    check_scored_on_labels(build_model(model_name, spec), model_name, prepared_dir, spec)
    return list(spec.label_names), list(spec.task_types)


def _check_args(n_trials: int, n_epoch: int, n_workers: int, pruner: Any) -> None:
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    if n_epoch < 1:
        raise ValueError("n_epoch must be >= 1")
    if n_workers > 1 and not _shareable(pruner):
        raise ValueError("a pruner object cannot be shared with worker processes; give its name or a dict")


def _shareable(pruner: Any) -> bool:
    """A pruner given by name or dict can be stored on the study; an object lives only in this process."""
    return isinstance(pruner, (str, Mapping, type(None)))


def _settings(model_name: str, objective: str, multi_objective: bool, prepared_dir: PathLike, space: SearchSpace,
              **rest: Any) -> dict[str, Any]:
    """What the study stores about itself, so that any worker can join it with nothing else."""
    task_names, task_types = _spec_tasks(prepared_dir, model_name)
    if multi_objective and len(task_names) < 2:
        raise ValueError("multi_objective needs at least two tasks")
    keys, directions = objective_target(objective, multi_objective, task_names, task_types)
    pruner, seed = rest.pop("pruner"), rest["seed"]
    return {"model_name": model_name, "objective": objective, "metric_keys": keys, "directions": directions,
            "pruner": pruner if _shareable(pruner) else f"custom:{type(pruner).__name__}",
            "space": space.to_dict(), "train_seed": 42 if seed is None else int(seed), **rest}


def _run_trials(study: Any, settings: Mapping[str, Any], storage: Optional[str], prepared_dir: PathLike,
                work_dir: Path, n_workers: int, **kw: Any) -> None:
    """Run the study to its total in this process (one worker) or in ``n_workers`` local processes."""
    if n_workers <= 1:
        set_threads(kw.pop("threads"))
        work_loop(study, settings, prepared_dir, work_dir, settings["n_trials"], kw["device"], kw["tracking_uri"],
                  kw["parent_run_id"], kw["progress"], keep_trial_dirs=kw["keep_trial_dirs"])
        return
    kw.pop("keep_trial_dirs")
    launch_workers(n_workers, storage, study.study_name, prepared_dir, work_dir, settings["n_trials"], **kw)


def search(prepared_dir: PathLike, model_name: str, work_dir: PathLike, n_trials: int = 20, n_epoch: int = 5,
           patience: int = 3, storage: Optional[str] = None, study_name: Optional[str] = None,
           pruner: Any = "median", objective: str = "mean", multi_objective: bool = False, seed: Optional[int] = 42,
           search_space: Optional[Mapping[str, Any]] = None, n_workers: int = 1, device: str = "auto",
           parent_run_id: Optional[str] = None, tracking_uri: Optional[str] = None, heartbeat_interval: int = 15,
           grace_period: Optional[int] = None, max_retry: int = 1, sampler: str = "tpe",
           n_startup_trials: Optional[int] = None, threads: Optional[int] = None, progress: bool = True,
           keep_trial_dirs: bool = False, plots: bool = True, timeout: Optional[float] = None,
           trial_timeout: Optional[float] = None, max_params: Optional[int] = None) -> SearchResult:
    """Search ``model_name``'s hyperparameters; returns the study's outcome with ``best_params`` for training.

    ``n_trials`` is the study's total (resuming counts the trials already finished). ``n_workers > 1`` runs
    local worker processes (other processes or pods may join with ``python -m workflow.search worker``).
    ``search_space``: the config's overrides (see :mod:`workflow.search.space`). ``storage``: see
    :mod:`workflow.search.storage`; a dead worker's trial is failed after ``grace_period`` seconds without a
    heartbeat and retried ``max_retry`` times.

    Budget (each None: no bound): ``timeout`` seconds for the search (each worker starts no trial after it: Optuna's
    ``timeout``), ``trial_timeout`` seconds per trial (its training stops after the epoch that passes it, keeping
    the best epoch so far), ``max_params``: a sampled model with more parameters is skipped untrained (PRUNED, not
    counted towards ``n_trials``). The result says when the time budget cut the search short.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    _check_args(n_trials, n_epoch, n_workers, pruner)
    space = build_space(model_name, search_space, data=_load_spec(prepared_dir))
    if space.widened and progress:
        say.say(model_name, f"the config's search space reaches beyond the default at {space.widened} "
                            "(applied as written; docs/search.md)")
    tracking_uri = resolve_uri(tracking_uri) if parent_run_id else tracking_uri  # workers get the concrete URI
    settings = _settings(model_name, objective, multi_objective, prepared_dir, space, n_trials=int(n_trials),
                         n_epoch=int(n_epoch), patience=int(patience), pruner=pruner, seed=seed, sampler=sampler,
                         n_startup_trials=n_startup_trials, heartbeat_interval=int(heartbeat_interval),
                         grace_period=grace_period, max_retry=max_retry, timeout=timeout,
                         trial_timeout=trial_timeout, max_params=max_params)
    quiet_optuna()
    store = open_storage(storage, work_dir, heartbeat_interval, grace_period, max_retry)
    study = create_or_load_study(store, study_name or f"{model_name}-search", settings)
    if not _shareable(pruner) and len(settings["directions"]) == 1:
        study.pruner = pruner  # a pruner object only lives in this process
    desc = describe_storage(storage, work_dir)
    if progress:
        say.opening(study, model_name, desc, n_trials, len(space.searched()), settings["metric_keys"],
                    settings["directions"], n_workers)
    _run_trials(study, settings, storage, prepared_dir, work_dir, n_workers, device=device, threads=threads,
                tracking_uri=tracking_uri, parent_run_id=parent_run_id, progress=progress,
                keep_trial_dirs=keep_trial_dirs)
    return _finish(store, study.study_name, settings, work_dir, desc, plots, parent_run_id, tracking_uri, progress)


def _finish(store: Any, study_name: str, settings: Mapping[str, Any], work_dir: Path, desc: str, plots: bool,
            parent_run_id: Optional[str], tracking_uri: Optional[str], progress: bool) -> SearchResult:
    """Summarise the study (reloaded: workers may have changed it) and log the summary to the model's run."""
    with contextlib.suppress(OSError):
        (work_dir / "trials").rmdir()  # only when empty (kept trial folders stay)
    study, _ = load_study(store, study_name)
    reap(study, TrialRuns(tracking_uri, parent_run_id, settings["model_name"]) if parent_run_id else None)
    result = summarize(study, settings, work_dir, desc, n_trials=settings["n_trials"], plots=plots)
    if parent_run_id:
        try:
            log_to_mlflow(result, tracking_uri, parent_run_id)
        except Exception as e:
            log.warning("could not log the search summary to MLflow run %s: %s", parent_run_id, e)
    if progress:
        say.closing(result)
    return result
