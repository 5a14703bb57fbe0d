"""Checkpoints that are safe to load (``weights_only=True``: tensors, dicts, lists, numbers, strings) and
never half-written (temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Union

import torch

from ..atomic import atomic_path

__all__ = ["CheckpointError", "save_checkpoint", "link_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, corrupted, or not a plain-tensor checkpoint)."""


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def link_checkpoint(source: PathLike, path: PathLike) -> Path:
    """Make ``path`` hold what ``source`` holds now, atomically, without serialising it again: a hard link where
    the filesystem has them (a later atomic replace of ``source`` leaves ``path`` as it was), else a copy."""
    path = Path(path)
    with atomic_path(path) as tmp:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT filesystems)
            shutil.copyfile(source, tmp)
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
