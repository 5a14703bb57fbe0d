"""What the local runner knows and shows of each KFP task: its log file, its terminal lines (all of them, or
start / end / progress only) and, when it fails, the step's own error as one line."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["TaskFailure", "Task", "TaskConsole", "describe", "failure", "follow"]


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
class Task:
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


def describe(args: Sequence[str]) -> tuple[str, Optional[str]]:
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

    def started(self, task: Task) -> None:
        if not self.verbose:
            self._line(f"  start  {task.label}")

    def finished(self, task: Task, code: Optional[int], seconds: float) -> None:
        if self.verbose:
            self.stream.write("\n\n")  # KFP's launcher separates each task's log the same way
            self.stream.flush()
        elif code == 0:
            self._line(f"  done   {task.label} in {seconds:.1f} s")
        else:
            self._line(f"  FAILED {task.label} after {seconds:.1f} s (log: {_relative(task.log)})")

    def output(self, task: Task, text: str) -> None:
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


def failure(task: Task, code: Optional[int]) -> TaskFailure:
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


def follow(task: Task, done: Callable[[], bool], console: TaskConsole) -> None:
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
