"""Checkpoints that are safe to load (``weights_only=True``: tensors, dicts, lists, numbers, strings) and
never half-written (temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from ..atomic import atomic_path

__all__ = ["CheckpointError", "CheckpointWriter", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

PathLike = Union[str, os.PathLike]
SaveFn = Callable[[Path, dict[str, Any]], Any]

log = logging.getLogger("mtl_models.trainer")


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, corrupted, or not a plain-tensor checkpoint)."""


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; an unreadable file raises ``CheckpointError`` (never a
    fallback to unsafe unpickling, never a half-loaded state)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises OSError, RuntimeError, UnpicklingError... for a bad file
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]  # not torch's advice to unpickle
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupted or not a tensors-only "
                              f"checkpoint: {type(exc).__name__}: {first[:200]}); delete it to start over") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def rng_state() -> dict[str, Any]:
    """Global torch RNG (dropout, init) and CUDA RNGs, as plain tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _snapshot(obj: Any) -> Any:
    """A copy of a nested state that later in-place updates cannot reach: tensors detached and cloned to CPU,
    dicts (with their type and attributes, e.g. a ``state_dict``'s ``_metadata``), lists and tuples rebuilt."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = copy.copy(obj)  # keeps OrderedDict and instance attributes
        for key, value in obj.items():
            out[key] = _snapshot(value)
        if getattr(obj, "__dict__", None):
            out.__dict__.update(copy.deepcopy(vars(obj)))
        return out
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        items = [_snapshot(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return obj
    return copy.deepcopy(obj)


class CheckpointWriter:
    """Writes checkpoints on one background thread, so training does not wait for serialisation and disk.

    ``submit`` snapshots the state before it returns (the optimizer mutates parameters and its state in place),
    then queues ``save_checkpoint``; one worker writes in submit order, so the last state submitted for a path
    is the one on disk. A failed write is re-raised by the next ``submit``, ``wait`` or ``close``. The thread is
    a daemon started on the first submit and stopped by ``close`` (the writer can be used again after it);
    callers must ``wait``/``close`` before they read the files. ``synchronous=True`` writes inline, unsnapshotted.
    ``max_pending`` bounds the queued snapshots (memory) when the disk is slower than training.
    """

    def __init__(self, synchronous: bool = False, save: Optional[SaveFn] = None, max_pending: int = 4) -> None:
        self.synchronous = synchronous
        self._save = save
        self._queue: queue.Queue[Optional[tuple[Path, dict[str, Any]]]] = queue.Queue(maxsize=max(1, max_pending))
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._failure: Optional[BaseException] = None

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        (self._save or save_checkpoint)(path, state)  # looked up per call: a patched save_checkpoint applies

    def submit(self, path: PathLike, state: dict[str, Any]) -> None:
        """Snapshot ``state`` now and write it to ``path`` later (inline when synchronous)."""
        self._raise_failure()
        if self.synchronous:
            self._write(Path(path), state)
            return
        item = (Path(path), _snapshot(state))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
                self._thread.start()
        self._queue.put(item)

    def wait(self) -> None:
        """Block until every submitted write is on disk; re-raise a write that failed."""
        self._queue.join()
        self._raise_failure()

    def close(self, raise_errors: bool = True) -> None:
        """Finish pending writes and stop the thread. With ``raise_errors=False`` (the caller is already failing)
        a write error is logged rather than raised, so it does not hide the caller's own exception."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        if raise_errors:
            self._raise_failure()
        else:
            with self._lock:
                failure, self._failure = self._failure, None
            if failure is not None:
                log.error("a background checkpoint write failed: %s: %s", type(failure).__name__, failure)

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(raise_errors=exc_type is None)

    def _raise_failure(self) -> None:
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                path, state = item
                try:
                    self._write(path, state)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's next submit/wait/close
                    if hasattr(exc, "add_note"):
                        exc.add_note(f"while writing checkpoint {path} in the background")
                    with self._lock:
                        if self._failure is None:
                            self._failure = exc
                        else:
                            log.error("writing checkpoint %s failed too: %s: %s", path, type(exc).__name__, exc)
            finally:
                self._queue.task_done()
