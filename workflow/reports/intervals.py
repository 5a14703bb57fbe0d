"""A metric with its interval as a reader sees it: ``0.7129 [0.7061, 0.7197]``. The flat metric dicts carry an
interval as two sibling keys, ``<name>_lo`` and ``<name>_hi`` (``click/auc`` -> ``click/auc_lo``, ``click/auc_hi``);
the summary table and the model report both print them through :func:`cell`."""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["SUFFIXES", "cell", "values_only", "is_bound"]

SUFFIXES = ("_lo", "_hi")


def is_bound(key: str) -> bool:
    """Whether ``key`` is an interval's end (``..._lo`` / ``..._hi``) rather than a value."""
    return key.endswith(SUFFIXES)


def values_only(flat: Mapping[str, Any]) -> list[str]:
    """The keys of ``flat`` that are values (not interval ends), in order."""
    return [k for k in flat if not is_bound(k)]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def cell(flat: Mapping[str, Any], key: str, digits: int = 4) -> str:
    """``0.7129 [0.7061, 0.7197]`` (the value alone without a finite interval; ``""`` without the value)."""
    value = flat.get(key)
    if value is None:
        return ""
    if not _finite(value):
        return "nan"
    lo, hi = flat.get(key + "_lo"), flat.get(key + "_hi")
    text = f"{float(value):.{digits}f}"
    if _finite(lo) and _finite(hi):
        text += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return text
