"""How sure a score is: intervals on metrics and paired comparisons of two models scored on the same rows.

Pure numpy (the normal quantiles come from the standard library); the pipeline, the promotion rule and the bench
all call these. Conventions:

- **AUC**: DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988) in Sun & Xu's O(n log n) form (midranks,
  no n_pos x n_neg matrix); the interval is ``auc ± z·sd``, clipped to [0, 1]. :func:`delong_paired` is DeLong's
  test for two correlated ROC curves (same rows, same labels): Δ AUC, its interval and a two-sided p-value.
- **Every other metric** (GAUC, calibration, binned calibration error, logloss, RMSE, MAE): a seeded percentile
  bootstrap of ``N_BOOT`` = 200 resamples (seed ``BOOT_SEED`` = 0): rows are resampled, except for GAUC, whose
  resampling unit is the user (a user's impressions are not independent). Paired bootstraps resample the same
  rows (users) for both models; their p-value is read off the same resamples (twice the share on the far side of
  0, at least 1 / ``N_BOOT``), so it agrees with the percentile interval.
- **GAUC**: each user's AUC, weighted by the user's impressions, over the users who have both classes.
- **Calibration**: mean prediction / mean label (1 is calibrated); **ECE**: the binned calibration error, the
  row-weighted mean over ``N_BINS`` = 10 equal-count bins of the prediction of |mean prediction − mean label|.

An interval is read as: built this way, it holds the model's true score (on data drawn like these rows) 95 times
in 100 at the default level 0.05; its width is the noise of the row sample. Two models whose intervals overlap may
still differ: compare them with the paired test, which removes the noise both share (same rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Optional

import numpy as np

__all__ = ["N_BOOT", "BOOT_SEED", "N_BINS", "LEVEL", "Interval", "Comparison", "delong_variance", "auc_interval",
           "delong_paired", "user_aucs", "gauc", "gauc_interval", "calibration", "ece", "bootstrap_interval",
           "metric_intervals", "compare_metrics", "HIGHER_IS_BETTER"]

N_BOOT = 200        # bootstrap resamples for every metric but AUC
BOOT_SEED = 0       # the bootstrap's seed: the same data gives the same interval
N_BINS = 10         # equal-count bins of the binned calibration error
LEVEL = 0.05        # 1 - confidence: 95 % intervals
MAX_CELLS = 4_000_000  # resampled indices held at once (B x n), so large splits bootstrap in chunks

# direction of the metrics this module reports; "calibration" is judged by its distance from 1
HIGHER_IS_BETTER = {"auc": True, "gauc": True, "calibration": False, "ece": False, "logloss": False,
                    "rmse": False, "mae": False}


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Comparison:
    """``b`` minus ``a`` on the same rows: ``delta`` with its interval and a two-sided p-value (H0: no difference).
    For ``calibration`` (``a``, ``b``: the ratios) ``delta`` is the change of the distance from 1, |b − 1| − |a − 1|."""

    metric: str
    a: float
    b: float
    delta: float
    lo: float
    hi: float
    p_value: float


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(1.0 - level / 2.0)


def _midrank(x: np.ndarray) -> np.ndarray:
    """1-based ranks of each row of ``x`` ([k, n]), ties sharing their average rank."""
    order = np.argsort(x, axis=1, kind="mergesort")
    z = np.take_along_axis(x, order, axis=1)
    out = np.empty_like(x, dtype=np.float64)
    for i in range(x.shape[0]):  # k is 1 or 2
        new = np.r_[True, z[i, 1:] != z[i, :-1]]
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], z.shape[1]]
        out[i, order[i]] = ((starts + ends + 1) / 2.0)[np.cumsum(new) - 1]
    return out


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs [k], their covariance [k, k]) of the score rows ``scores`` ([k, n]) against labels ``y``."""
    pos = np.asarray(y).ravel() > 0.5
    m, n = int(pos.sum()), int((~pos).sum())
    k = scores.shape[0]
    if m < 1 or n < 1:  # one class only: no AUC
        return np.full(k, math.nan), np.full((k, k), math.nan)
    x, yy = scores[:, pos], scores[:, ~pos]
    tx, ty, tz = _midrank(x), _midrank(yy), _midrank(np.concatenate([x, yy], axis=1))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n          # each positive: share of negatives it outranks
    v10 = 1.0 - (tz[:, m:] - ty) / m    # each negative: share of positives that outrank it
    if m < 2 or n < 2:  # the AUC is defined, its variance is not (a class with one row has no spread)
        return aucs, np.full((k, k), math.nan)
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def _scores(*preds: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(p, dtype=np.float64).ravel() for p in preds])


def delong_variance(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(AUC, DeLong's variance of it); the AUC is NaN without both classes, the variance with fewer than two rows
    of either."""
    aucs, cov = _delong(y, _scores(p))
    return float(aucs[0]), float(cov[0, 0])


def auc_interval(y: np.ndarray, p: np.ndarray, level: float = LEVEL) -> Interval:
    auc, var = delong_variance(y, p)
    if math.isnan(auc) or math.isnan(var):
        return Interval(auc, math.nan, math.nan)
    half = _z(level) * math.sqrt(max(var, 0.0))
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half))


def _boot_p(d: np.ndarray) -> float:
    """Two-sided bootstrap p-value of H0 "no difference" from the resampled differences ``d``."""
    if not len(d):
        return math.nan
    return float(min(1.0, max(2.0 * min(np.mean(d <= 0), np.mean(d >= 0)), 1.0 / len(d))))


def _p_value(delta: float, sd: float) -> float:
    if not math.isfinite(sd) or not math.isfinite(delta):
        return math.nan
    if sd <= 0.0:
        return 1.0 if delta == 0.0 else 0.0
    return 2.0 * (1.0 - NormalDist().cdf(abs(delta) / sd))


def delong_paired(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, level: float = LEVEL) -> Comparison:
    """DeLong's test for two correlated ROC curves: AUC of ``p_b`` minus AUC of ``p_a`` on the same rows."""
    aucs, cov = _delong(y, _scores(p_a, p_b))
    delta = float(aucs[1] - aucs[0])
    sd = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)) if math.isfinite(delta) else math.nan
    half = _z(level) * sd
    return Comparison("auc", float(aucs[0]), float(aucs[1]), delta, delta - half, delta + half, _p_value(delta, sd))


# ---- GAUC ----------------------------------------------------------------------------------------------------

def user_aucs(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user ids, their AUCs, their impressions) over the users who have both classes, in O(n log n)."""
    y = np.asarray(y).ravel() > 0.5
    p = np.asarray(p, dtype=np.float64).ravel()
    ids, group = np.unique(np.asarray(users).ravel(), return_inverse=True)
    order = np.lexsort((p, group))
    g, s = group[order], p[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(g)), 0))
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new_tie)
    ends = np.r_[starts[1:], len(s)]
    tie_rank = (starts + ends + 1) / 2.0 - group_start[starts]   # 1-based average rank within the user
    ranks = np.empty(len(s))
    ranks[order] = tie_rank[np.cumsum(new_tie) - 1]
    k = len(ids)
    n_pos = np.bincount(group, weights=y, minlength=k)
    count = np.bincount(group, minlength=k).astype(np.float64)
    n_neg = count - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    rank_pos = np.bincount(group, weights=np.where(y, ranks, 0.0), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return ids[both], auc[both], count[both]


def gauc(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUCs over the users with both classes; NaN when there are none."""
    _, aucs, weights = user_aucs(y, p, users)
    return float(np.sum(aucs * weights) / np.sum(weights)) if len(aucs) else math.nan


def _user_boot(values: np.ndarray, weights: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    return (values[idx] * weights[idx]).sum(axis=1) / weights[idx].sum(axis=1)


def gauc_interval(y: np.ndarray, p: np.ndarray, users: np.ndarray, level: float = LEVEL, n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED) -> Interval:
    _, aucs, weights = user_aucs(y, p, users)
    if len(aucs) < 2:
        return Interval(math.nan, math.nan, math.nan)
    boot = _user_boot(aucs, weights, n_boot, seed)
    return Interval(float(np.sum(aucs * weights) / np.sum(weights)),
                    *map(float, np.quantile(boot, [level / 2, 1 - level / 2])))


def _gauc_paired(y, p_a, p_b, users, level, n_boot, seed) -> Comparison:
    ids_a, a, w = user_aucs(y, p_a, users)
    ids_b, b, _ = user_aucs(y, p_b, users)  # same labels and users: the same eligible users
    if len(a) < 2:
        return Comparison("gauc", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    ga, gb = float(np.sum(a * w) / np.sum(w)), float(np.sum(b * w) / np.sum(w))
    boot = _user_boot(b - a, w, n_boot, seed)
    lo, hi = np.quantile(boot, [level / 2, 1 - level / 2])
    return Comparison("gauc", ga, gb, gb - ga, float(lo), float(hi), _boot_p(boot))


# ---- calibration and per-row metrics -------------------------------------------------------------------------

def calibration(y: np.ndarray, p: np.ndarray) -> float:
    """Mean prediction over mean label: 1 is calibrated, above 1 over-predicts."""
    mean_y = float(np.mean(y)) if np.size(y) else math.nan
    return float(np.mean(p)) / mean_y if mean_y > 0 else math.nan


def _bins(p: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, p, side="right")


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    """Binned calibration error: Σ_bins (rows in bin / rows) · |mean prediction − mean label| (equal-count bins)."""
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    if not len(y):
        return math.nan
    b = _bins(p, n_bins)
    diff = np.bincount(b, weights=p - y, minlength=n_bins)
    return float(np.abs(diff).sum() / len(y))


def _per_row(name: str, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The per-row loss whose mean is metric ``name`` (logloss, rmse before its root, mae)."""
    if name == "logloss":
        q = np.clip(p, 1e-7, 1 - 1e-7)
        return -(y * np.log(q) + (1 - y) * np.log1p(-q))
    if name == "rmse":
        return (p - y) ** 2
    if name == "mae":
        return np.abs(p - y)
    raise ValueError(f"no bootstrap for metric {name!r}; known: calibration, ece, logloss, rmse, mae")


def _resample_stats(y: np.ndarray, preds: list[np.ndarray], name: str, n_boot: int, seed: int) -> np.ndarray:
    """[len(preds), n_boot] bootstrap replicates of metric ``name`` on resampled rows (the same rows for each
    prediction), in chunks of at most ``MAX_CELLS`` indices."""
    n = len(y)
    rng = np.random.default_rng(seed)
    bins = [_bins(p) if name == "ece" else None for p in preds]
    rows = [_per_row(name, y, p) if name in ("logloss", "rmse", "mae") else None for p in preds]
    out = np.empty((len(preds), n_boot))
    step = max(1, MAX_CELLS // max(n, 1))
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, (min(step, n_boot - start), n))
        yi = y[idx] if rows[0] is None else None
        for k, p in enumerate(preds):
            if rows[k] is not None:
                value = rows[k][idx].mean(axis=1)
                value = np.sqrt(value) if name == "rmse" else value
            else:
                value = _row_stat(name, yi, p[idx], None if bins[k] is None else bins[k][idx])
            out[k, start:start + len(idx)] = value
    return out


def _row_stat(name: str, y: np.ndarray, p: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """Calibration or ECE of each resample (rows of ``y`` / ``p`` / bins ``b``: [B, n])."""
    if name == "calibration":
        with np.errstate(invalid="ignore", divide="ignore"):
            return p.mean(axis=1) / y.mean(axis=1)
    flat = b + N_BINS * np.arange(len(b))[:, None]
    diff = np.bincount(flat.ravel(), weights=(p - y).ravel(), minlength=N_BINS * len(b)).reshape(len(b), -1)
    return np.abs(diff).sum(axis=1) / y.shape[1]


def _mean_of(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def point(y: np.ndarray, p: np.ndarray) -> float:
        value = float(np.mean(_per_row(name, y, p))) if len(y) else math.nan
        return math.sqrt(value) if name == "rmse" else value
    return point


POINT: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "calibration": calibration, "ece": ece, "logloss": _mean_of("logloss"), "rmse": _mean_of("rmse"),
    "mae": _mean_of("mae")}


def bootstrap_interval(name: str, y: np.ndarray, p: np.ndarray, level: float = LEVEL, n_boot: int = N_BOOT,
                       seed: int = BOOT_SEED) -> Interval:
    """Percentile bootstrap interval of a per-row metric (calibration, ece, logloss, rmse, mae)."""
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    value = POINT[name](y, p)
    if len(y) < 2 or not math.isfinite(value):
        return Interval(value, math.nan, math.nan)
    boot = _resample_stats(y, [p], name, n_boot, seed)[0]
    boot = boot[np.isfinite(boot)]
    return Interval(value, *map(float, np.quantile(boot, [level / 2, 1 - level / 2])))


def _boot_paired(name, y, p_a, p_b, level, n_boot, seed) -> Comparison:
    y = np.asarray(y, dtype=np.float64).ravel()
    p_a, p_b = (np.asarray(p, dtype=np.float64).ravel() for p in (p_a, p_b))
    a, b = POINT[name](y, p_a), POINT[name](y, p_b)
    boot = _resample_stats(y, [p_a, p_b], name, n_boot, seed)
    off = _OFF_TARGET.get(name, lambda v: v)
    d = off(boot[1]) - off(boot[0])
    d = d[np.isfinite(d)]
    lo, hi = np.quantile(d, [level / 2, 1 - level / 2]) if len(d) else (math.nan, math.nan)
    delta = float(off(b) - off(a))
    return Comparison(name, a, b, delta, float(lo), float(hi), _boot_p(d))


# calibration is compared by its distance from 1 (the change in miscalibration: below 0 is better)
_OFF_TARGET: dict[str, Callable] = {"calibration": lambda v: np.abs(np.asarray(v) - 1.0)}


# ---- everything a task reports -------------------------------------------------------------------------------

def metric_intervals(task_type: str, y: np.ndarray, p: np.ndarray, users: Optional[np.ndarray] = None,
                     level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict[str, Interval]:
    """A task's metrics with their intervals: classification ``auc`` (DeLong), ``logloss``, ``calibration``,
    ``ece`` and, given ``users``, ``gauc`` (bootstrap); regression ``rmse``, ``mae`` (bootstrap)."""
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    if task_type != "classification":
        return {m: bootstrap_interval(m, y, p, level, n_boot, seed) for m in ("rmse", "mae")}
    out = {"auc": auc_interval(y, p, level)}
    out.update({m: bootstrap_interval(m, y, p, level, n_boot, seed) for m in ("logloss", "calibration", "ece")})
    if users is not None:
        out["gauc"] = gauc_interval(y, p, users, level, n_boot, seed)
    return out


def compare_metrics(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, metrics: list[str],
                    users: Optional[np.ndarray] = None, level: float = LEVEL, n_boot: int = N_BOOT,
                    seed: int = BOOT_SEED) -> dict[str, Comparison]:
    """Paired comparisons (b − a) of two models' predictions on the same rows, for each of ``metrics``."""
    out: dict[str, Comparison] = {}
    for name in metrics:
        if name == "auc":
            out[name] = delong_paired(y, p_a, p_b, level)
        elif name == "gauc":
            if users is None:
                raise ValueError("gauc needs the user column (dataset.user_column); this data has none")
            out[name] = _gauc_paired(y, p_a, p_b, users, level, n_boot, seed)
        else:
            out[name] = _boot_paired(name, y, p_a, p_b, level, n_boot, seed)
    return out
