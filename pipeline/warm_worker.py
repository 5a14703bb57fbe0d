"""A warm worker for KFP's local runner: import torch, MLflow, KFP and the steps once, fork once per task.

KFP's ``SubprocessRunner`` starts every task as a fresh ``python3 -m kfp.dsl.executor_main``, which pays the
imports of torch, MLflow and KFP again (seconds each) before doing any work; on a small run that is most of
the wall time. Here one worker process imports them once; each task is a ``fork()`` of it that runs the same
executor on the same arguments, so a task still gets its own process (its memory is returned when it ends,
a crash or ``os._exit`` in it does not take the run down) but starts in milliseconds.

The worker and its task processes stay in the caller's process group, so killing that group (a pod kill,
Ctrl-C) stops them with it; if the caller dies alone, the worker sees its pipe close and kills the running
task. Any command that is not KFP's lightweight-component launcher falls back to KFP's own subprocess path.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import re
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

__all__ = ["WarmWorker", "LocalTasks", "TaskConsole", "TaskFailure", "launcher_or_reason", "parse_launcher",
           "warm_local_runner"]

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
    "onnxscript", "onnxscript.function_libs.torch_lib.ops", "onnxscript.rewriter", "onnxruntime",  # export
    "mlflow.pyfunc", "workflow.registry", "workflow.serving")  # register, promote

_LAUNCHER = "kfp.dsl.executor_main"

# KFP's launcher script for a lightweight component with nothing to install, line by line. The interpreter is
# whatever KFP put there (``python3``, or the venv's full path, which may contain any word, "pip" included):
# the script is matched as a whole, so a ``pip install`` line (or anything else) makes it someone else's.
_SCRIPT_LINES = (
    re.compile(r'program_path=\$\(mktemp -d\)'),
    re.compile(r'printf "%s" "\$0" > "\$program_path/ephemeral_component\.py"'),
    re.compile(r'(?:_KFP_RUNTIME=true\s+)?\S.*?\s+-m\s+kfp\.dsl\.executor_main\s+--component_module_path\s+'
               r'"\$program_path/ephemeral_component\.py"\s+"\$@"'),
)


def launcher_or_reason(full_command: Sequence[str]) -> tuple[Optional[tuple[str, list[str]]], str]:
    """``((component source, executor arguments), "")`` for KFP's lightweight-component command, else
    ``(None, why not)``: the reason is what a fallback to KFP's own launcher reports."""
    if len(full_command) < 4 or list(full_command[:2]) != ["sh", "-ec"]:
        installs = len(full_command) > 2 and re.search(r"-m pip install|\bpip install", str(full_command[2]))
        return None, ("the task installs packages first (pip install)" if installs else
                      f"not a KFP launcher script (command starts {' '.join(map(str, full_command[:2]))!r})")
    lines = [line.strip() for line in full_command[2].splitlines() if line.strip()]
    unknown = [line for line in lines if not any(p.fullmatch(line) for p in _SCRIPT_LINES)]
    if unknown:
        return None, f"the launcher script has a step the warm worker does not run: {unknown[0][:80]!r}"
    if len(lines) != len(_SCRIPT_LINES) or not _SCRIPT_LINES[-1].fullmatch(lines[-1]):
        return None, "the launcher script does not end by running the KFP executor"
    args = list(full_command[4:])
    if "--function_to_execute" not in args:
        return None, "the command names no --function_to_execute"
    return (full_command[3], args), ""


def parse_launcher(full_command: Sequence[str]) -> Optional[tuple[str, list[str]]]:
    """``(component source, executor arguments)`` of KFP's lightweight-component command, else ``None``.

    The command is ``sh -ec <script> <source> --executor_input ... --function_to_execute ...``, where the
    script writes the source to ``ephemeral_component.py`` and runs the executor on it; anything else (a
    ``pip install`` step, a container component) is left to KFP (:func:`launcher_or_reason` says why).
    """
    return launcher_or_reason(full_command)[0]


# ----------------------------------------------------------------------------------------------- worker side

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
        sys.argv = [_LAUNCHER, "--component_module_path", str(module_path), *request["args"]]
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
                os._exit(0)  # nothing to tear down: a normal exit unloads torch & co. for seconds (4 s measured)
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

@dataclass
class TaskFailure:
    """A task that ended non-zero: the step's own error text (one line) and where its full log is."""

    function: str
    model: Optional[str]
    message: str
    error_type: str
    log: Path
    exit_code: Optional[int]

    @property
    def label(self) -> str:
        return self.function + (f" ({self.model})" if self.model else "")


@dataclass
class _Task:
    index: int
    function: str
    model: Optional[str]
    log: Path
    error: Path
    partial: str = ""  # output after the last newline, not yet shown

    @property
    def label(self) -> str:
        return self.function + (f" ({self.model})" if self.model else "")


# What a quiet terminal still shows of a task's output: the search's per-trial lines and the trainer's epoch lines.
_PROGRESS_LINE = re.compile(r"^(\[search |epoch \d+: train/loss=)")
# The last line of a Python traceback: ``package.module.ErrorType: message``.
_TRACEBACK_TAIL = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)): (?P<message>.+)$")


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when it lies under it (what the user can type), else absolute."""
    with contextlib.suppress(ValueError, OSError):
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def _describe(args: Sequence[str]) -> tuple[str, Optional[str]]:
    """(component function, model name or None) of a launcher command's executor arguments."""
    function = args[args.index("--function_to_execute") + 1] if "--function_to_execute" in args else "task"
    model = None
    if "--executor_input" in args:
        with contextlib.suppress(Exception):
            inputs = json.loads(args[args.index("--executor_input") + 1])["inputs"]
            model = inputs.get("parameterValues", {}).get("model_name") or None
            for artifacts in ([] if model else inputs.get("artifacts", {}).values()):  # e.g. export: the trained model's
                for artifact in artifacts.get("artifacts", []):
                    model = model or artifact.get("metadata", {}).get("model_name")
    return function, model


class TaskConsole:
    """What the terminal shows of the tasks. Verbose: everything each task prints, as KFP's launcher streams it.
    Quiet: one line when a task starts and one when it ends (with its duration), the search's trial lines and the
    trainer's epoch lines (and its progress bar on a terminal); everything else stays in the task's log file."""

    def __init__(self, verbose: bool = True, stream=None) -> None:
        self.verbose = verbose
        self._stream = stream
        self._lock = threading.Lock()
        self._noted: set[str] = set()
        self._bar = False  # a progress bar is on the current terminal line

    @property
    def stream(self):
        return self._stream or sys.stdout

    def _tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def _line(self, text: str) -> None:
        with self._lock:
            clear = "\r\033[K" if self._bar else ""
            self._bar = False
            self.stream.write(clear + text + "\n")
            self.stream.flush()

    def note_once(self, text: str) -> None:
        """A message worth one line per run (e.g. why tasks fall back to KFP's own launcher), on stderr."""
        with self._lock:
            if text in self._noted:
                return
            self._noted.add(text)
        print(f"mtlp: {text}", file=sys.stderr, flush=True)

    def started(self, task: _Task) -> None:
        if not self.verbose:
            self._line(f"  start  {task.label}")

    def finished(self, task: _Task, code: Optional[int], seconds: float) -> None:
        if self.verbose:
            self.stream.write("\n\n")  # KFP's launcher separates each task's log the same way
            self.stream.flush()
        elif code == 0:
            self._line(f"  done   {task.label} in {seconds:.1f} s")
        else:
            self._line(f"  FAILED {task.label} after {seconds:.1f} s (log: {_relative(task.log)})")

    def output(self, task: _Task, text: str) -> None:
        if self.verbose:
            self.stream.write(text)
            self.stream.flush()
            return
        *lines, task.partial = (task.partial + text).split("\n")
        for line in lines:
            shown = line.rsplit("\r", 1)[-1].rstrip()
            if _PROGRESS_LINE.match(shown):
                self._line("    " + shown)
        if "\r" in task.partial and self._tty():  # tqdm redraws its bar with carriage returns
            bar = task.partial.rsplit("\r", 1)[-1].rstrip()
            with self._lock:
                self.stream.write("\r\033[K" + ("    " + bar if bar else ""))
                self.stream.flush()
                self._bar = bool(bar)


def _failure(task: _Task, code: Optional[int]) -> TaskFailure:
    """The step's error as it raised it (the worker wrote it down), else the last line of the log's traceback."""
    if task.error.exists():
        with contextlib.suppress(Exception):
            saved = json.loads(task.error.read_text())
            message = " ".join(str(saved["message"]).split()) or saved["type"]
            return TaskFailure(task.function, task.model, message, saved["type"], task.log, code)
    tail = [line.strip() for line in task.log.read_text(errors="replace").splitlines() if line.strip()] \
        if task.log.exists() else []
    for line in reversed(tail[-50:]):
        match = _TRACEBACK_TAIL.match(line)
        if match:
            return TaskFailure(task.function, task.model, match["message"], match["type"].rsplit(".", 1)[-1],
                               task.log, code)
    why = "was killed" if code is not None and code < 0 else f"exited with code {code}"
    return TaskFailure(task.function, task.model, f"the task {why}", "TaskExit", task.log, code)


def _follow(task: _Task, done: Callable[[], bool], console: TaskConsole) -> None:
    """Pass the task's log to the console as it grows, until ``done()``, then the rest."""
    with open(task.log, "rb") as log:
        while True:
            finished = done()
            data = log.read()
            if data:
                console.output(task, data.decode(errors="replace"))
            if finished:
                return
            time.sleep(0.2)


class WarmWorker:
    """The caller's handle on one worker process; ``run`` runs one launcher command and may be called from several
    threads at once (one per task in flight).

    ``parallel_tasks`` caps how many of those run at the same time; the others wait their turn. One (the
    default) suits a laptop: each training task already uses every core, and two side by side only
    oversubscribe them (measured on 2 cores: the two models' searches took 2.5x as long side by side as one
    after the other).
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

    def run(self, source: str, args: list[str], env_vars: Optional[dict], task: _Task, console: TaskConsole,
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
            _follow(task, done.is_set, console)
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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _run_cold(full_command: list[str], env_vars: Optional[dict], task: _Task, console: TaskConsole,
              running: set) -> int:
    """KFP's own launcher (a fresh interpreter), with the output going to the task's log like a warm task's."""
    env = {**os.environ, **(env_vars or {})}
    with open(task.log, "ab") as log:
        proc = subprocess.Popen(full_command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    running.add(proc)
    try:
        _follow(task, lambda: proc.poll() is not None, console)
    finally:
        _stop(proc)  # interrupted while it ran: it goes down with the run
        running.discard(proc)
    return proc.wait()


class LocalTasks:
    """Every KFP task of a local run, started through :func:`warm_local_runner`: their log files, how long each
    ran, which failed. ``worker`` is the warm worker, or None when every task starts cold."""

    def __init__(self, worker: Optional[WarmWorker], log_dir: Path, console: TaskConsole) -> None:
        self.worker, self.log_dir, self.console = worker, log_dir, console
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

    def _new_task(self, args: Sequence[str]) -> _Task:
        function, model = _describe(args)
        index = next(self._index)
        stem = f"{index:02d}-{function}" + (f"-{re.sub(r'[^A-Za-z0-9._-]', '_', model)}" if model else "")
        log = self.log_dir / f"{stem}.log"
        log.write_bytes(b"")
        self.logs.append(log)
        return _Task(index, function, model, log, self.log_dir / f".{stem}.error.json")

    def launch(self, full_command: list[str], env_vars: Optional[dict] = None) -> int:
        """KFP's ``run_local_subprocess``: a fork of the warm worker when the command is KFP's launcher, else
        (or with no worker) KFP's own launcher; a fallback says why, once per run."""
        if self.aborted:
            return 1
        parsed, reason = launcher_or_reason(full_command)
        if self.worker is not None and parsed is None:
            self.console.note_once(f"a task runs with KFP's own launcher (a fresh interpreter, slower): {reason}")
        elif self.worker is not None and not self.worker.alive():
            self.console.note_once("the warm worker has exited (code "
                                   f"{self.worker.proc.poll()}); the remaining tasks run with KFP's own launcher")
        task = self._new_task(parsed[1] if parsed else list(full_command))
        began = time.perf_counter()

        def started() -> None:
            nonlocal began
            began = time.perf_counter()
            self.console.started(task)

        code: Optional[int] = None
        try:
            if parsed is not None and self.alive():
                code = self.worker.run(parsed[0], parsed[1], env_vars, task, self.console, started)
            else:
                started()
                code = _run_cold(list(full_command), env_vars, task, self.console, self._cold)
        finally:
            seconds = time.perf_counter() - began
            self.task_seconds.append((task.function, seconds))
            self.console.finished(task, code, seconds)
            if code != 0 and code is not None and not self.aborted:
                self.failures.append(_failure(task, code))
            with contextlib.suppress(OSError):
                task.error.unlink()
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
                      console: Optional[TaskConsole] = None, warm: bool = True) -> Iterator[LocalTasks]:
    """Route KFP's local subprocess tasks through a warm worker (``warm=False``: KFP's own launcher) for the
    duration of the block, each task's output in its own log file under ``log_dir`` (a temporary folder, removed
    afterwards, when None), shown on ``console`` (default: everything, as KFP shows it)."""
    from kfp.local import subprocess_task_handler as handler

    console = console or TaskConsole(verbose=True)
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtlp-logs-")))
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        worker = WarmWorker(preload, parallel_tasks=parallel_tasks) if warm else None
        if worker is not None:
            stack.callback(worker.close)
        tasks = LocalTasks(worker, log_dir, console)
        stack.enter_context(_kfp_logs_to(None if console.verbose else log_dir / "kfp.log"))
        original = handler.run_local_subprocess
        handler.run_local_subprocess = tasks.launch
        stack.callback(setattr, handler, "run_local_subprocess", original)
        yield tasks


if __name__ == "__main__":
    _serve([name for name in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if name])
