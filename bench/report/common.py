"""What every part's renderer shares: mean and spread, number formats, target marks, the environment line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[2]
TASKS = ["income", "never_married"]


def _ms(values) -> tuple[float, float]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (float(np.mean(v)), float(np.std(v))) if v else (math.nan, math.nan)


def _fmt(m, s=None, nd=4) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s is not None and not math.isnan(s) else "")


def _ok(flag) -> str:
    return "—" if flag is None else ("**met**" if flag else "**missed**")


def _env_line(rec: dict) -> str:
    e = rec.get("env_start", {})
    return (f"_Measured {e.get('date', '?')} ({rec.get('mode')} mode, {rec.get('seconds', 0):.0f} s), load average "
            f"{e.get('load_average', ['?'])[0]} at the start and {rec.get('load_average_end', ['?'])[0]} at the end on "
            f"{e.get('cpus', '?')} CPUs._")
