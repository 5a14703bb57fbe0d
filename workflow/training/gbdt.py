"""The gradient-boosted baseline: scikit-learn's HistGradientBoosting on the prepared splits, one model per task.

What a user compares the multi-task models with on their own data: the same train rows and test rows the models
saw (the prepared Parquet and its feature spec), untuned (scikit-learn's defaults, its own early stopping on a
slice of train), scored with the same metrics and 95 % intervals (``evaluate.with_intervals``: AUC and logloss,
calibration, ECE and GAUC, or RMSE and MAE) and the same ``test_score`` (``task_mean``). Sparse columns are the
spec's ids: categorical where they fit the trees' 255 bins, their id as a number otherwise (the id order is the
encoder's, so such a column is a weak feature for the trees); dense columns are the spec's encoded values.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import pyarrow.parquet as pq

from mtl_models.trainer import task_mean

from ..data.feature_spec import FeatureSpec
from .artifacts import column, read_spec, split_users
from .evaluate import with_intervals

__all__ = ["GbdtResult", "gbdt_baseline", "MAX_CATEGORIES"]

PathLike = Union[str, os.PathLike]
MAX_CATEGORIES = 255  # HistGradientBoosting's limit on a categorical column's cardinality (its max_bins)


@dataclass
class GbdtResult:
    test_metrics: dict[str, dict[str, float]]  # {task: {metric: value, metric_lo, metric_hi}}, the models' names
    test_score: float
    seconds: float
    categorical: list[str]  # the sparse columns fed as categories (the others as ordinal ids)

    def flat(self) -> dict[str, float]:
        """``<task>/<metric>`` and ``test_score``: the keys the summary table reads for a model."""
        out = {f"{task}/{name}": float(v) for task, ms in self.test_metrics.items() for name, v in ms.items()}
        return {**out, "test_score": float(self.test_score)}


def _matrix(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(os.path.join(prepared_dir, f"{split}.parquet"), columns=spec.feature_names + spec.label_names)
    x = np.stack([column(table, n).astype(np.float64) for n in spec.feature_names], axis=1)
    y = np.stack([column(table, n).astype(np.float64) for n in spec.label_names], axis=1)
    return x, y


def gbdt_baseline(prepared_dir: PathLike, seed: int = 42, threads: Optional[int] = None) -> GbdtResult:
    """One HistGradientBoosting classifier (or regressor) per task, fitted on the train split, scored on test.
    ``threads``: cap scikit-learn's OpenMP threads (default: every core), e.g. 1 on a machine other jobs share."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="openmp"):
        return _fit_and_score(prepared_dir, seed)


def _fit_and_score(prepared_dir: PathLike, seed: int) -> GbdtResult:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    start = time.perf_counter()
    spec = read_spec(prepared_dir)
    x, y = _matrix(prepared_dir, "train", spec)
    xt, yt = _matrix(prepared_dir, "test", spec)
    categorical = [f.name for f in spec.sparse_features if f.vocab_size <= MAX_CATEGORIES]
    mask = np.array([name in categorical for name in spec.feature_names])
    predictions = np.empty_like(yt)  # [N_test, n_task]
    for i, kind in enumerate(spec.task_types):
        if kind == "classification":
            model = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed)
            model.fit(x, y[:, i].astype(np.int64))
            predictions[:, i] = model.predict_proba(xt)[:, 1]
        else:
            model = HistGradientBoostingRegressor(categorical_features=mask, random_state=seed)
            model.fit(x, y[:, i])
            predictions[:, i] = model.predict(xt)
    # the models' test metrics with their 95 % intervals, computed as the models' are (evaluate.with_intervals),
    # so that the summary's baseline row can be read against the models' rows
    scored = with_intervals(spec, yt, predictions, split_users(prepared_dir, "test", spec))
    metrics = {task: {k: v for k, v in found.items() if math.isfinite(v)} for task, found in scored.items()}
    return GbdtResult(test_metrics=metrics, test_score=task_mean(metrics, spec.label_names, spec.task_types),
                      seconds=time.perf_counter() - start, categorical=categorical)
