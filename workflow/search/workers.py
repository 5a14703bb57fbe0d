"""Workers: the loop that runs trials until the study's total is reached, in this process or in subprocesses.

``n_trials`` is the study's total of finished trials (COMPLETE + PRUNED), not a count per worker: before it asks
for a trial a worker checks that a slot is free, and waits while the last slots run elsewhere (they may die
and need a re-run). Other processes or pods join with ``python -m workflow.search worker``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import chain
from .objective import Objective
from .progress import Progress
from .storage import PathLike, absolute, is_url, open_storage
from .study import fail_stale, load_study, mark_budget_cut, quiet_optuna, stored_settings, study_counts

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_OVERSIZE_IN_A_ROW = 50
log = logging.getLogger(__name__)


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _open_for_worker(storage: Any, study_name: str, work_dir: Path, heartbeat_interval: Optional[int],
                     grace_period: Optional[int], max_retry: Optional[int]) -> Any:
    """Open a storage string with the heartbeat settings the study was created with (unless overridden)."""
    if not isinstance(storage, (str, type(None))):
        return storage
    stored = stored_settings(open_storage(storage, work_dir, heartbeat_interval=None), study_name)
    return open_storage(storage, work_dir, heartbeat_interval=heartbeat_interval or stored.get("heartbeat_interval"),
                        grace_period=grace_period or stored.get("grace_period"),
                        max_retry=stored.get("max_retry", 1) if max_retry is None else max_retry)


def run_worker(storage: Any, study_name: str, prepared_dir: PathLike, work_dir: PathLike,
               n_trials: Optional[int] = None, worker_index: int = 0, device: str = "auto",
               tracking_uri: Optional[str] = None, parent_run_id: Optional[str] = None, progress: bool = True,
               threads: Optional[int] = None, poll_interval: float = 1.0, max_consecutive_failures: int = 5,
               keep_trial_dirs: bool = False, heartbeat_interval: Optional[int] = None,
               grace_period: Optional[int] = None, max_retry: Optional[int] = None) -> int:
    """Work on an existing study until it has ``n_trials`` finished trials (default: the study's own total).

    ``storage``: a storage object or a storage string (heartbeat settings default to the study's).
    Returns the number of trials this worker ran.
    """
    quiet_optuna()
    set_threads(threads)
    storage = _open_for_worker(storage, study_name, Path(work_dir), heartbeat_interval, grace_period, max_retry)
    study, settings = load_study(storage, study_name, worker_index)
    return work_loop(study, settings, prepared_dir, Path(work_dir), n_trials, device, tracking_uri, parent_run_id,
                     progress, poll_interval, max_consecutive_failures, keep_trial_dirs)


def work_loop(study: Any, settings: Mapping[str, Any], prepared_dir: PathLike, work_dir: Path,
              n_trials: Optional[int], device: str, tracking_uri: Optional[str], parent_run_id: Optional[str],
              progress: bool, poll_interval: float = 1.0, max_consecutive_failures: int = 5,
              keep_trial_dirs: bool = False) -> int:
    """Run trials one at a time until the study's total is done, or until the settings' ``timeout`` (seconds from
    this loop's start) has passed: then no trial starts and the study is marked as cut by its time budget; returns
    how many trials this loop ran. Trials skipped for ``max_params`` are not counted; 50 of them in a row stop the
    loop with an error naming the bound."""
    target = int(n_trials or settings["n_trials"])
    timeout = settings.get("timeout")
    deadline = time.monotonic() + float(timeout) if timeout else None
    objective = Objective(settings, Path(prepared_dir), Path(work_dir), target, device, tracking_uri, parent_run_id,
                          keep_trial_dirs)
    callbacks = [Progress(settings["model_name"], target, progress)]
    ran, failures, oversize = 0, 0, 0
    while True:
        reap(study, objective.runs)
        c = study_counts(study)
        if c.done >= target:
            return ran
        if deadline is not None and time.monotonic() >= deadline:
            mark_budget_cut(study, float(timeout), c.done, target)
            return ran
        if c.waiting == 0 and c.done + c.running >= target:
            time.sleep(poll_interval)  # the last slots are running elsewhere; they may still fail
            continue
        run_one_trial(study, objective, callbacks)
        ran += 1
        after = study_counts(study)
        failures = failures + 1 if after.failed > c.failed else 0
        oversize = oversize + 1 if after.oversize > c.oversize else 0
        if oversize >= MAX_OVERSIZE_IN_A_ROW:
            raise RuntimeError(f"search.max_params {settings.get('max_params')}: {oversize} sampled "
                               f"{settings['model_name']} models in a row had more parameters; raise it or narrow "
                               "search.space")
        if failures >= max_consecutive_failures:
            raise RuntimeError(f"{failures} trials in a row failed in this worker; see the log above "
                               f"(study {study.study_name!r})")


def reap(study: Any, runs: Optional[Any]) -> None:
    """Fail the study's stale trials (a killed worker's) and end the MLflow runs those trials had opened
    (``runs``: the :class:`~workflow.search.trial_run.TrialRuns` of this search, None without tracking)."""
    fail_stale(study)
    if runs is None:
        return
    try:
        runs.end_orphans(study)
    except Exception as e:  # noqa: BLE001 - the search goes on; the next reap (or the search's end) tries again
        log.warning("could not end the MLflow runs of stale trials: %s", e)


def reaped_while_running(exc: BaseException) -> bool:
    """Whether ``exc`` says this worker's trial had already been failed by another worker (it went stale while
    it ran): Optuna refuses the result (``ValueError: Cannot tell a FAIL trial``, in Optuna 5.1 masked by an
    ``AssertionError`` when the objective had succeeded), or a report to it (``UpdateFinishedTrialError``)."""
    from optuna.exceptions import UpdateFinishedTrialError

    return any(isinstance(e, UpdateFinishedTrialError)
               or (isinstance(e, ValueError) and str(e).startswith("Cannot tell a FAIL trial")) for e in chain(exc))


def run_one_trial(study: Any, objective: Any, callbacks: list[Any]) -> None:
    """One trial. If another worker failed it as stale meanwhile, its queued retry will run it again: this
    worker logs that and goes on instead of dying."""
    try:
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    except (ValueError, AssertionError) as e:
        if not reaped_while_running(e):
            raise
        log.warning("a trial of this worker was failed as stale by another worker while it ran (its heartbeat "
                    "was lost); its retry runs it again")


def worker_cmd(storage: str, study_name: str, prepared_dir: PathLike, work_dir: PathLike, n_trials: int,
               index: int, device: str, tracking_uri: Optional[str], parent_run_id: Optional[str],
               threads: Optional[int], progress: bool) -> list[str]:
    """The command line of one local worker process."""
    cmd = [sys.executable, "-m", "workflow.search", "worker", "--storage", storage, "--study-name", study_name,
           "--prepared-dir", str(prepared_dir), "--work-dir", str(work_dir), "--n-trials", str(n_trials),
           "--worker-index", str(index), "--device", device]
    optional = {"--tracking-uri": tracking_uri, "--parent-run-id": parent_run_id, "--threads": threads}
    cmd += [x for flag, value in optional.items() if value for x in (flag, str(value))]
    return cmd if progress else cmd + ["--quiet"]


def _worker_env(storage: str) -> tuple[str, dict[str, str]]:
    """(the storage argument, the environment): a database URL (with its password) travels in the environment."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if not is_url(storage):
        return storage, env
    env["MTLP_SEARCH_STORAGE"] = storage
    return "env:MTLP_SEARCH_STORAGE", env


def _wait_all(procs: list[subprocess.Popen]) -> None:
    """Wait for every worker; on an interrupt stop them all first. A non-zero exit raises."""
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


def launch_workers(n_workers: int, storage: Optional[str], study_name: str, prepared_dir: PathLike,
                   work_dir: PathLike, n_trials: int, device: str = "auto", tracking_uri: Optional[str] = None,
                   parent_run_id: Optional[str] = None, threads: Optional[int] = None, progress: bool = True,
                   wait: bool = True) -> list[subprocess.Popen]:
    """Start ``n_workers`` local worker processes on an existing study (``wait``: until all exit; a non-zero
    exit raises). Each gets ``threads`` torch threads (default: the CPUs shared out)."""
    work_dir = Path(work_dir)
    storage_arg, env = _worker_env(absolute(storage, work_dir))
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, n_workers))
    procs = [subprocess.Popen(worker_cmd(storage_arg, study_name, Path(prepared_dir).resolve(), work_dir.resolve(),
                                         n_trials, i, device, tracking_uri, parent_run_id, threads, progress),
                              cwd=str(REPO_ROOT), env=env)
             for i in range(n_workers)]
    if wait:
        _wait_all(procs)
    return procs
