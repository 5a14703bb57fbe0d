"""Runs the same graph on this machine with KFP's local runner and embedded defaults.

Each task runs in its own process on this machine (no containers, no cluster), forked from a warm worker
that imported torch and MLflow once (``pipeline.warm_worker``); MLflow is a SQLite store and Optuna a
journal file, both inside ``<runs_root>/<run_name>/``.
"""

import contextlib
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .config import ConfigError, PipelineConfig
from .graph import build_pipeline
from .warm_worker import warm_local_runner

__all__ = ["LocalRun", "run_local", "DEFAULT_RUNS_ROOT"]

DEFAULT_RUNS_ROOT = Path("mtlp-runs")


@dataclass
class LocalRun:
    run_name: str
    work_dir: Path
    seconds: float
    summary: str
    task_seconds: list = field(default_factory=list)  # (component function, seconds it ran); warm worker only


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_name(run_name: str) -> str:
    """A run name is one folder name under the runs root: no separators, no ``..``, not absolute."""
    if not _RUN_NAME.match(run_name or "") or ".." in run_name:
        raise ConfigError(f"run name {run_name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                          "(no path separators or '..'), at most 128 characters")
    return run_name


def _new_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def run_local(config: PipelineConfig, run_name: Optional[str] = None, runs_root: os.PathLike | str = DEFAULT_RUNS_ROOT,
              caching: bool = True, warm_worker: bool = True, parallel_tasks: int = 1) -> LocalRun:
    """Run the whole graph locally; a second call with the same ``run_name`` reuses what finished (caching).

    ``warm_worker=False`` starts each task as a fresh interpreter, as KFP's local runner does by itself (and
    then runs independent branches side by side, whatever ``parallel_tasks`` says). ``parallel_tasks``: how
    many tasks of independent branches (the models) run at once; 1 lets each use every core.
    """
    from kfp import local

    run_name = check_run_name(run_name or _new_run_name())
    work_dir = (Path(runs_root) / run_name).resolve()
    if work_dir.parent != Path(runs_root).resolve():  # e.g. a symlinked run folder pointing elsewhere
        raise ConfigError(f"run folder {work_dir} is outside the runs root {Path(runs_root).resolve()}")
    work_dir.mkdir(parents=True, exist_ok=True)
    # the worker starts importing now, while KFP initialises and the graph is built
    with warm_local_runner(parallel_tasks=parallel_tasks) if warm_worker else contextlib.nullcontext() as worker:
        # the tasks' command runs `python3`: make it this interpreter's environment
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "kfp"),
                   enable_caching=caching, cache_root=str(work_dir / "kfp-cache"), raise_on_error=True)
        # The same graph carries cluster settings (resources, display names, the image) that the local runner
        # ignores by design; its per-task warnings about them say nothing the user can act on.
        warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=r".*non-Python base image.*")
        pipeline_func = build_pipeline(config, local=True)
        start = time.perf_counter()
        task = pipeline_func(run_name=run_name, work_dir=str(work_dir))
        seconds = time.perf_counter() - start
    summary = task.outputs["Output"] if hasattr(task, "outputs") and "Output" in getattr(task, "outputs", {}) else ""
    return LocalRun(run_name=run_name, work_dir=work_dir, seconds=seconds, summary=str(summary),
                    task_seconds=list(worker.task_seconds) if worker is not None else [])
