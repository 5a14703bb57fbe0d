"""A warm worker for KFP's local runner: import torch, MLflow, KFP and the steps once, fork once per task.

KFP's ``SubprocessRunner`` starts every task as a fresh ``python3 -m kfp.dsl.executor_main``, which pays the
imports of torch, MLflow and KFP again before doing any work; on a small run that is most of the wall time
(docs/pipeline.md has the figures). Here one worker process imports them once; each task is a ``fork()`` of it that runs the same
executor on the same arguments, so a task still gets its own process (its memory is returned when it ends,
a crash or ``os._exit`` in it does not take the run down) but starts in milliseconds.

The worker and its task processes stay in the caller's process group, so killing that group (a pod kill,
Ctrl-C) stops them with it; if the caller dies alone, the worker sees its pipe close and kills the running
task. Any command that is not KFP's lightweight-component launcher falls back to KFP's own subprocess path
(``pipeline.local_tasks`` decides, with ``pipeline.kfp_launcher``).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from .kfp_launcher import LAUNCHER
from .task_console import Task, TaskConsole, follow

__all__ = ["WarmWorker", "FIRST", "PRELOAD"]

# What the tasks import, loaded once in the worker so that every later fork has it: ``FIRST`` (what the first
# tasks of every run, start and model runs, need) before it says it is ready, the rest between and during tasks.
# A name that fails to import is skipped: the task that needs it imports it itself and reports the error there.
FIRST = ("kfp.dsl.executor_main", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
         "mlflow.store.model_registry.sqlalchemy_store", "workflow.steps")
PRELOAD = FIRST + (
    # the rest, in the order the graph's tasks need it, is imported while the first tasks run
    "pandas", "pyarrow.parquet", "workflow.data.prepare",  # prepare
    "torch", "optuna", "sklearn.metrics", "workflow.search", "workflow.training.train",  # search, train
    "optuna.visualization", "matplotlib.pyplot", "workflow.reports.plots", "git",  # their plots and tags
    "torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch._functorch.aot_autograd",
    "torch._inductor.codegen", "torch.onnx._internal.exporter._core", "sympy", "networkx", "onnx",
    "onnxscript", "onnxscript.function_libs.torch_lib.ops", "onnxscript.rewriter", "onnxruntime",
    "workflow.training.export",  # export
    "mlflow.pyfunc", "workflow.registry", "workflow.serving")  # register, promote


def _record_error(path: Optional[str], exc: BaseException) -> None:
    """The step's own error, for the caller to print as one line (the traceback stays in the task's log)."""
    if not path:
        return
    with contextlib.suppress(Exception):
        Path(path).write_text(json.dumps({"type": type(exc).__name__, "module": type(exc).__module__,
                                          "message": str(exc)}))


def _run_task(request: dict, reply_fd: int) -> None:
    """In the forked child: the task's environment, output to its log file, then KFP's executor."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 1
    program: Optional[Path] = None
    try:
        os.close(reply_fd)  # the protocol pipes belong to the worker: a task (or what it spawns) must not hold them
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["_KFP_RUNTIME"] = "true"
        tempfile.tempdir = None  # the worker cached its temp folder; the task's TMPDIR (the run's own) wins
        os.chdir(request["cwd"])
        program = Path(tempfile.mkdtemp(prefix="mtlp-task-"))
        module_path = program / "ephemeral_component.py"
        module_path.write_text(request["source"])
        sys.argv = [LAUNCHER, "--component_module_path", str(module_path), *request["args"]]
        from kfp.dsl.executor_main import executor_main

        executor_main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - reported in the task's log, as the executor's own crash would be
        traceback.print_exc()
        _record_error(request.get("error"), exc)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        if program is not None:
            shutil.rmtree(program, ignore_errors=True)
        os._exit(code)


def _preload(name: str) -> bool:
    """Import ``name`` in the worker (later forks inherit it); a failure is left for the task that needs it."""
    with warnings.catch_warnings():  # import-time warnings only; the tasks keep the default filters
        warnings.simplefilter("ignore")
        try:
            if name == "matplotlib.pyplot":  # with the backend the plots use: no display is ever opened
                import matplotlib
                matplotlib.use("Agg", force=True)
            importlib.import_module(name)
            return True
        except Exception:  # noqa: BLE001
            return False


def _kill_all(children: dict[int, int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _serve(preload: Sequence[str]) -> None:
    """The worker's loop: one JSON request per line on stdin, one ``{"id", "rc"}`` line back per finished task.

    KFP's local orchestrator runs independent tasks (e.g. the per-model branches) on threads at the same time,
    so several tasks may be in flight: each request forks at once, and children are reaped as they end.
    """
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of preloaded modules go to stderr, not into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the tasks; the caller decides what follows
    first = [name for name in preload if name in FIRST]
    later = [name for name in preload if name not in FIRST]
    loaded = [name for name in first if _preload(name)]
    reply.write(json.dumps({"ready": loaded}) + "\n")
    children: dict[int, int] = {}  # pid -> request id
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0 if later else 0.05 if children else None)
        if ready:
            data = os.read(0, 1 << 16)
            if not data:  # EOF: the caller is gone (or done); running tasks die with it
                _kill_all(children)
                reply.flush()
                os._exit(0)  # nothing to tear down: a normal exit spends seconds unloading torch & co.
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_task(request, reply.fileno())
                children[pid] = request["id"]
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            task_id = children.pop(pid, None)
            if task_id is not None:
                reply.write(json.dumps({"id": task_id, "rc": os.waitstatus_to_exitcode(status)}) + "\n")
        if later and not ready:  # idle, or a task is running: import the next module for the tasks to come
            _preload(later.pop(0))


# ----------------------------------------------------------------------------------------------- caller side


class WarmWorker:
    """The caller's handle on one worker process; ``run`` runs one launcher command and may be called from several
    threads at once (one per task in flight).

    ``parallel_tasks`` caps how many of those run at the same time; the others wait their turn. One (the
    default) suits a laptop: each training task already uses every core, and two side by side only
    oversubscribe them (docs/pipeline.md).
    """

    def __init__(self, preload: Sequence[str] = PRELOAD, python: str = sys.executable,
                 start_timeout_s: float = 300.0, parallel_tasks: int = 1) -> None:
        if parallel_tasks < 1:
            raise ValueError(f"parallel_tasks must be >= 1, got {parallel_tasks}")
        self._slots = threading.Semaphore(parallel_tasks)
        self.proc = subprocess.Popen([python, "-m", "pipeline.warm_worker", ",".join(preload)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=str(Path(__file__).resolve().parents[1]))
        self._start_timeout_s = start_timeout_s
        self._ready = threading.Event()
        self._write_lock = threading.Lock()
        self._results: dict[int, Optional[int]] = {}
        self._done: dict[int, threading.Event] = {}
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read_replies, name="warm-worker-replies", daemon=True)
        self._reader.start()

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            message = json.loads(line)
            if "ready" in message:
                self._ready.set()
            else:
                self._results[message["id"]] = int(message["rc"])
                self._done[message["id"]].set()
        for task_id, event in list(self._done.items()):  # the worker is gone: wake whoever still waits
            self._results.setdefault(task_id, None)
            event.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, source: str, args: list[str], env_vars: Optional[dict], task: Task, console: TaskConsole,
            started: Callable[[], None] = lambda: None) -> int:
        """Run one task in a fork of the worker (its output to ``task.log``, streamed to ``console``); its exit
        code. ``started`` is called once the task has its turn."""
        deadline = time.monotonic() + self._start_timeout_s
        while not self._ready.wait(0.2):
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError("the warm worker did not start (exit code "
                                   f"{self.proc.poll()}); run with --cold-tasks to bypass it")
        with self._slots:
            started()
            task_id = next(self._ids)
            done = self._done[task_id] = threading.Event()
            request = {"id": task_id, "source": source, "args": args, "env": {**os.environ, **(env_vars or {})},
                       "cwd": os.getcwd(), "log": str(task.log), "error": str(task.error)}
            with self._write_lock:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            follow(task, done.is_set, console)
            code = self._results.pop(task_id)
            del self._done[task_id]
        if code is None:
            raise RuntimeError(f"the warm worker exited (code {self.proc.wait()}) while a task ran")
        return code

    def close(self) -> None:
        if not self._ready.is_set():  # still importing (e.g. every task was cached): nothing to wait for
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)


if __name__ == "__main__":
    _serve([name for name in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if name])
