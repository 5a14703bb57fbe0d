"""Runs the same graph on this machine with KFP's local runner and embedded defaults.

Each task runs in its own process on this machine (no containers, no cluster), forked from a warm worker
that imported torch and MLflow once (``pipeline.warm_worker``); MLflow is the runs root's SQLite store
(``<runs_root>/mlflow.db``, shared by every run under it: ``workflow.tracking.local_store``) and Optuna a journal
file inside ``<runs_root>/<run_name>/``. Each task's output goes to its own log file in
``<run>/logs/``; temporary files go to ``<run>/tmp/``, removed when the run ends.

A run that fails (a task's error, Ctrl-C, SIGTERM) ends its MLflow runs that are still open as FAILED and
raises :class:`PipelineFailed` with the failing step's own message and its log file.
"""

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from .config import ConfigError, PipelineConfig
from .containers import TASK_WORK_DIR, ContainerSettings, check_services
from .graph import build_pipeline
from .local_tasks import LocalTasks, warm_local_runner
from .task_console import TaskConsole, TaskFailure

__all__ = ["LocalRun", "PipelineFailed", "run_local", "new_run_name", "run_folder", "DEFAULT_RUNS_ROOT"]

DEFAULT_RUNS_ROOT = Path("mtlp-runs")


@dataclass
class LocalRun:
    run_name: str
    work_dir: Path
    seconds: float
    summary: str
    task_seconds: list = field(default_factory=list)  # (component function, seconds it ran)
    logs_dir: Optional[Path] = None
    tracking_uri: str = ""  # where it logged; "" = its own store, <work_dir>/mlflow.db


class PipelineFailed(RuntimeError):
    """A local run that did not finish: ``failure`` is the task that failed first (None when none did, e.g. an
    interrupt before any task ended), ``ended_runs`` the MLflow runs it ended FAILED."""

    def __init__(self, message: str, work_dir: Path, failure: Optional[TaskFailure] = None,
                 ended_runs: Optional[list[str]] = None) -> None:
        super().__init__(message)
        self.work_dir, self.failure, self.ended_runs = work_dir, failure, list(ended_runs or [])


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_name(run_name: str) -> str:
    """A run name is one folder name under the runs root: no separators, no ``..``, not absolute."""
    if not _RUN_NAME.match(run_name or "") or ".." in run_name:
        raise ConfigError(f"run name {run_name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                          "(no path separators or '..'), at most 128 characters")
    return run_name


def new_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def run_folder(run_name: str, runs_root: os.PathLike | str = DEFAULT_RUNS_ROOT) -> Path:
    """The run's folder, checked to lie inside the runs root (e.g. not through a symlink pointing elsewhere)."""
    work_dir = (Path(runs_root) / check_run_name(run_name)).resolve()
    if work_dir.parent != Path(runs_root).resolve():
        raise ConfigError(f"run folder {work_dir} is outside the runs root {Path(runs_root).resolve()}")
    return work_dir


@contextlib.contextmanager
def _interruptible(tasks: LocalTasks) -> Iterator[None]:
    """Ctrl-C or SIGTERM stop the running tasks and start no new one, then interrupt the run (KeyboardInterrupt
    naming the signal), so that the run's MLflow runs are ended FAILED before the process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        tasks.abort()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _run_temp_dir(path: Path) -> Iterator[None]:
    """Temporary files of this process and of every task (``TMPDIR``, e.g. KFP's ``mktemp -d`` per cold task) go
    to ``path``, removed afterwards: a run leaves nothing behind in /tmp."""
    path.mkdir(parents=True, exist_ok=True)
    before, cached = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(path), None
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = cached
        shutil.rmtree(path, ignore_errors=True)


def _end_open_runs(config: PipelineConfig, work_dir: Path, run_name: str, store: str) -> list[str]:
    """Mark the run's MLflow runs that are still open FAILED; [] when there is no store yet or it cannot be reached."""
    from workflow import tracking

    try:
        uri, _ = tracking.resolve_tracking_uri(work_dir, store or None)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            return []  # the run failed before its start step: no store to mend (and none to create)
        return tracking.end_open_runs(tracking.client_for(uri), config.tracking.experiment, run_name, "FAILED")
    except Exception as exc:  # noqa: BLE001 - the run's own failure is what the user must see
        warnings.warn(f"could not mark the MLflow runs of {run_name} FAILED: {exc}", RuntimeWarning, stacklevel=2)
        return []


def run_local(config: PipelineConfig, run_name: Optional[str] = None, runs_root: os.PathLike | str = DEFAULT_RUNS_ROOT,
              caching: bool = True, warm_worker: bool = True, parallel_tasks: int = 1,
              verbose: bool = False, containers: Optional[ContainerSettings] = None) -> LocalRun:
    """Run the whole graph locally; a second call with the same ``run_name`` reuses what finished (caching).

    ``warm_worker=False`` starts each task as a fresh interpreter, as KFP's local runner does by itself (and
    then runs independent branches side by side, whatever ``parallel_tasks`` says). ``parallel_tasks``: how
    many tasks of independent branches (the models) run at once; 1 lets each use every core. ``verbose``: every
    task's output on stdout; else one line per task start and end plus the search's and training's progress.
    ``containers``: every task runs in the image under podman (``pipeline.containers``), its work directory in its
    own ``/tmp``; MLflow must then be a server and the study a database.
    """
    from kfp import local

    from workflow.tracking.local_store import record_store, run_store_uri

    if containers is not None:
        check_services(config.tracking.uri, config.search.storage)
    run_name = run_name or new_run_name()
    work_dir = run_folder(run_name, runs_root)
    work_dir.mkdir(parents=True, exist_ok=True)
    # one store per runs root (mtlp-runs/mlflow.db) unless the config names one or asks for isolation
    store = run_store_uri(runs_root, config.tracking.uri, config.tracking.isolated)
    record_store(work_dir, store, config.tracking.experiment)
    logs_dir = work_dir / "logs"
    console = TaskConsole(verbose=verbose)
    error: Optional[BaseException] = None
    # the worker starts importing now, while KFP initialises and the graph is built
    with _run_temp_dir(work_dir / "tmp"), warm_local_runner(parallel_tasks=parallel_tasks, log_dir=logs_dir,
                                                            console=console, warm=warm_worker, containers=containers,
                                                            root=work_dir / "kfp", run_name=run_name) as tasks:
        # the tasks' command runs `python3`: make it this interpreter's environment
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "kfp"),
                   workspace_root=str(work_dir / "tmp" / "kfp-workspace"), enable_caching=caching,
                   cache_root=str(work_dir / "kfp-cache"), raise_on_error=True)
        # The same graph carries cluster settings (resources, display names, the image) that the local runner
        # ignores by design; its per-task warnings about them say nothing the user can act on.
        warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=r".*non-Python base image.*")
        pipeline_func = build_pipeline(config, local=True)
        start = time.perf_counter()
        try:
            with _interruptible(tasks):
                task = pipeline_func(run_name=run_name, tracking_uri=store,
                                     work_dir=TASK_WORK_DIR if containers is not None else str(work_dir))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the tasks are stopped
            error = exc
        seconds = time.perf_counter() - start
    if error is not None:  # every task has stopped (the worker kills what still ran): end what they left open
        ended = _end_open_runs(config, work_dir, run_name, store)
        failure = tasks.failures[0] if tasks.failures else None
        if failure is None or isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise error
        raise PipelineFailed(failure.message, work_dir, failure, ended) from error
    summary = task.outputs["Output"] if hasattr(task, "outputs") and "Output" in getattr(task, "outputs", {}) else ""
    if containers is not None:  # the summary task wrote its copy in its own container; its artifact is here
        written = sorted((work_dir / "kfp").glob("*/summarize-run/summary"), key=lambda p: p.stat().st_mtime)
        if written:
            shutil.copyfile(written[-1], work_dir / "summary.md")
    return LocalRun(run_name=run_name, work_dir=work_dir, seconds=seconds, summary=str(summary),
                    task_seconds=list(tasks.task_seconds), logs_dir=logs_dir, tracking_uri=store)
