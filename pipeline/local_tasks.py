"""KFP's local runner with our task launcher: each task a fork of the warm worker (or, when that cannot run it,
KFP's own fresh interpreter), its output in its own log file and on the :class:`TaskConsole`."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .containers import ContainerSettings, container_name, run_task
from .kfp_launcher import launcher_or_reason
from .task_console import Task, TaskConsole, TaskFailure, describe, failure, follow
from .warm_worker import PRELOAD, WarmWorker

__all__ = ["LocalTasks", "warm_local_runner"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _run_cold(full_command: list[str], env_vars: Optional[dict], task: Task, console: TaskConsole,
              running: set) -> int:
    """KFP's own launcher (a fresh interpreter), with the output going to the task's log like a warm task's."""
    env = {**os.environ, **(env_vars or {})}
    with open(task.log, "ab") as log:
        proc = subprocess.Popen(full_command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    running.add(proc)
    try:
        follow(task, lambda: proc.poll() is not None, console)
    finally:
        _stop(proc)  # interrupted while it ran: it goes down with the run
        running.discard(proc)
    return proc.wait()


FINAL_ERRORS = ("DataError", "ConfigError")  # a step's errors that a retry cannot mend


class FinalTaskError(RuntimeError):
    """A task failed with a data or config error: the run ends at once (no retry; exit status 2)."""


class LocalTasks:
    """Every KFP task of a local run, started through :func:`warm_local_runner`: their log files, how long each
    ran, which failed. ``worker`` is the warm worker, or None when every task starts cold. ``containers``: every
    task runs in the image under podman instead (``pipeline.containers``), the pipeline root ``root`` mounted."""

    def __init__(self, worker: Optional[WarmWorker], log_dir: Path, console: TaskConsole,
                 containers: Optional[ContainerSettings] = None, root: Optional[Path] = None,
                 run_name: str = "run") -> None:
        self.worker, self.log_dir, self.console = worker, log_dir, console
        self.containers, self.root, self.run_name = containers, root, run_name
        self.task_seconds: list[tuple[str, float]] = []  # (component function, seconds it ran), in finishing order
        self.failures: list[TaskFailure] = []
        self.logs: list[Path] = []
        self.aborted = False
        self._index = itertools.count(1)
        self._cold: set[subprocess.Popen] = set()

    def abort(self) -> None:
        """Stop every running task and start no new one (the run is being interrupted). KFP's orchestrator waits
        for the tasks of parallel branches before it lets an interrupt through: they must end, not wait."""
        self.aborted = True
        if self.worker is not None:
            with contextlib.suppress(OSError, ValueError):
                self.worker.proc.stdin.close()  # the worker kills its running tasks and exits
        for proc in list(self._cold):
            _stop(proc)

    @property
    def proc(self) -> subprocess.Popen:
        return self.worker.proc

    def alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def _new_task(self, args: Sequence[str]) -> Task:
        function, model = describe(args)
        index = next(self._index)
        stem = f"{index:02d}-{function}" + (f"-{re.sub(r'[^A-Za-z0-9._-]', '_', model)}" if model else "")
        log = self.log_dir / f"{stem}.log"
        log.write_bytes(b"")
        self.logs.append(log)
        return Task(index, function, model, log, self.log_dir / f".{stem}.error.json")

    def launch(self, full_command: list[str], env_vars: Optional[dict] = None) -> int:
        """KFP's ``run_local_subprocess``: a fork of the warm worker when the command is KFP's launcher, else
        (or with no worker) KFP's own launcher; a fallback says why, once per run."""
        if self.aborted:
            return 1
        parsed, reason = launcher_or_reason(full_command)
        if self.worker is not None and parsed is None and self.containers is None:
            self.console.note_once(f"a task runs with KFP's own launcher (a fresh interpreter, slower): {reason}")
        elif self.worker is not None and not self.worker.alive():
            self.console.note_once("the warm worker has exited (code "
                                   f"{self.worker.proc.poll()}); the remaining tasks run with KFP's own launcher")
        task = self._new_task(parsed[1] if parsed else list(full_command))
        began, shown = time.perf_counter(), False

        def started() -> None:  # a task that would start after the run was interrupted is not announced
            nonlocal began, shown
            began = time.perf_counter()
            if not self.aborted:
                shown = True
                self.console.started(task)

        code: Optional[int] = None
        try:
            if self.containers is not None:
                started()
                code = run_task(self.containers, container_name(self.run_name, task.log.stem), self.root,
                                full_command, env_vars, task.log,
                                lambda cmd: _run_cold(cmd, None, task, self.console, self._cold),
                                self.console.note_once)
            elif parsed is not None and self.alive():
                code = self.worker.run(parsed[0], parsed[1], env_vars, task, self.console, started)
            else:
                started()
                code = _run_cold(list(full_command), env_vars, task, self.console, self._cold)
        finally:
            seconds = time.perf_counter() - began
            self.task_seconds.append((task.function, seconds))
            if shown:
                self.console.finished(task, code, seconds)
            if code != 0 and code is not None and not self.aborted:
                self.failures.append(failure(task, code))
            with contextlib.suppress(OSError):
                task.error.unlink()
        if code not in (0, None) and self.failures and self.failures[-1].error_type in FINAL_ERRORS:
            # bad data or config fails every retry the same way: end the run now, not after KFP's backoffs
            self.abort()
            raise FinalTaskError(self.failures[-1].message)
        return code


@contextlib.contextmanager
def _kfp_logs_to(path: Optional[Path]) -> Iterator[None]:
    """KFP's local runner logs every task's start, outputs and status to stdout (and its errors to stderr through
    the root logger); with ``path``, all of that goes to that file instead."""
    if path is None:
        yield
        return
    import logging

    from kfp.local import logging_utils

    originals = logging_utils.local_logger_context, logging_utils.print_horizontal_line
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging_utils.local_logger_context = contextlib.nullcontext
    logging_utils.print_horizontal_line = lambda: None
    try:
        yield
    finally:
        logging_utils.local_logger_context, logging_utils.print_horizontal_line = originals
        root.handlers[:] = handlers
        root.setLevel(level)
        handler.close()


@contextlib.contextmanager
def warm_local_runner(preload: Sequence[str] = PRELOAD, parallel_tasks: int = 1, log_dir: Optional[Path] = None,
                      console: Optional[TaskConsole] = None, warm: bool = True,
                      containers: Optional[ContainerSettings] = None, root: Optional[Path] = None,
                      run_name: str = "run") -> Iterator[LocalTasks]:
    """Route KFP's local subprocess tasks through a warm worker (``warm=False``: KFP's own launcher; ``containers``:
    podman, with the pipeline root ``root`` mounted) for the duration of the block, each task's output in its own
    log file under ``log_dir`` (a temporary folder, removed afterwards, when None), shown on ``console`` (default:
    everything, as KFP shows it)."""
    from kfp.local import subprocess_task_handler as handler

    console = console or TaskConsole(verbose=True)
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtlp-logs-")))
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        worker = WarmWorker(preload, parallel_tasks=parallel_tasks) if warm and containers is None else None
        if worker is not None:
            stack.callback(worker.close)
        tasks = LocalTasks(worker, log_dir, console, containers, root, run_name)
        stack.enter_context(_kfp_logs_to(None if console.verbose else log_dir / "kfp.log"))
        original = handler.run_local_subprocess
        handler.run_local_subprocess = tasks.launch
        stack.callback(setattr, handler, "run_local_subprocess", original)
        yield tasks

