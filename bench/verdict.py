"""Who wins a benchmark cell, and whether it is more than seed noise: one function, used by parts 2 and 3 and
recomputed by the tests from the per-seed values stored beside its result."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean over seeds; NaN bounds with fewer than two values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def verdict(values: dict[str, Sequence[float]], lower_is_better: bool = False,
            target: Optional[float] = None) -> dict:
    """Per-seed values of each arm -> means, 95% intervals, the winner (best mean) and ``separated``: the winner's
    interval overlaps no other arm's. With ``target`` an arm is better the closer it is to it (|value - target|,
    e.g. mean prediction over mean truth against 1)."""
    score = {a: [abs(x - target) for x in v] if target is not None else list(v) for a, v in values.items()}
    stats = {a: t_interval(v) for a, v in score.items()}
    sign = -1.0 if (lower_is_better or target is not None) else 1.0
    winner = max(stats, key=lambda a: sign * stats[a][0])
    lo, hi = stats[winner][1:]
    separated = all(not math.isnan(lo) and (hi < s[1] or lo > s[2]) for a, s in stats.items() if a != winner)
    raw = {a: t_interval(v) for a, v in values.items()}  # what the page shows: the values themselves
    out = {"values": {a: [float(x) for x in v] for a, v in values.items()},
           "lower_is_better": lower_is_better, "target": target,
           "mean": {a: s[0] for a, s in raw.items()}, "ci95": {a: [s[1], s[2]] for a, s in raw.items()},
           "winner": winner, "separated": bool(separated)}
    return out | _paired(score, winner, sign) if len(score) == 2 else out


def _paired(score: dict[str, list[float]], winner: str, sign: float) -> dict:
    """Two arms on the same seeds: the interval of the winner's per-seed lead (> 0: better). Seed-to-seed spread
    shared by both arms cancels here, so it can exclude 0 where the arms' own intervals overlap."""
    loser = next(a for a in score if a != winner)
    if len(score[winner]) != len(score[loser]):
        return {}
    mean, low, high = t_interval([sign * (w - lo) for w, lo in zip(score[winner], score[loser])])
    return {"paired_lead": {"mean": mean, "ci95": [low, high], "excludes_zero": bool(low > 0)}}
