"""Whole-set evaluation metrics in numpy, computed once per epoch (no per-batch averaging of AUC)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["roc_auc", "logloss", "rmse", "mae", "task_metrics", "HIGHER_IS_BETTER"]

# direction of every metric the trainer can monitor
HIGHER_IS_BETTER = {"auc": True, "logloss": False, "rmse": False, "mae": False, "loss": False}


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (equals sklearn's); NaN when only one class is present."""
    y = np.asarray(y_true).ravel() > 0.5
    s = np.asarray(y_score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    new_value = np.r_[True, sorted_s[1:] != sorted_s[:-1]]  # [N] start of each tie group
    starts = np.flatnonzero(new_value)
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = avg_rank[np.cumsum(new_value) - 1]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if y.size else math.nan


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    d = np.asarray(y_pred, dtype=np.float64).ravel() - np.asarray(y_true, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean(d * d))) if d.size else math.nan


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    d = np.asarray(y_pred, dtype=np.float64).ravel() - np.asarray(y_true, dtype=np.float64).ravel()
    return float(np.mean(np.abs(d))) if d.size else math.nan


def task_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """AUC + logloss for a classification task, RMSE + MAE for a regression task."""
    if task_type == "classification":
        return {"auc": roc_auc(y_true, y_pred), "logloss": logloss(y_true, y_pred)}
    return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}
