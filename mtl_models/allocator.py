"""Keep freed CPU memory in the process between training steps (glibc only).

PyTorch's CPU allocator has no cache: every activation is a fresh ``malloc``. glibc serves large blocks
with ``mmap`` and hands a heap top above its trim threshold back to the kernel, so a training step's
activations, freed at the end of its backward pass, are mapped again by the next step and every page
faults in anew (what that costs: docs/performance.md). Raising both thresholds keeps that memory mapped, which
is what preloading jemalloc or tcmalloc achieves; here it takes one ``mallopt`` call and no extra dependency.

The setting is process-wide and stays for the life of the process, so nothing applies it by default: a
process that only trains opts in (``MTLTrainer(retain_cpu_memory=True)``, as the pipeline's train step does).
Memory above ``mmap_threshold`` per block is still returned at once, and at most ``trim_threshold`` of free heap
is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any, Optional

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # blocks up to 32 MiB come from the heap (a [4096, 1024] float32 activation is 16 MiB)
TRIM_THRESHOLD = 256 << 20  # up to 256 MiB of freed heap stays mapped

_applied = False


def _mallopt() -> Optional[Any]:
    """glibc's ``mallopt``, or None (not Linux; musl and other libcs have none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds once per process; ``False`` where there is no glibc ``mallopt``."""
    global _applied
    if _applied:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    _applied = ok
    return ok
