"""Evaluation of a freshly trained model: its test metrics and predictions, the validation score of the restored
best checkpoint, for the pipeline's final training each task's val and test metrics with their 95 % intervals
(AUC, GAUC, calibration, binned calibration error, logloss: :func:`with_intervals`, ``mtl_models.stats``), and
the plots the train step leaves in ``<trained_dir>/plots/`` (training curves, ROC per
classification task) for the tracking and report steps to pick up."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from mtl_models import stats
from mtl_models.models import MultiTaskModel
from mtl_models.trainer import task_mean

from ..data.errors import DataError
from ..data.feature_spec import FeatureSpec
from ..reports.intervals import SUFFIXES
from .artifacts import iter_split_labels, load_trained, split_labels, split_loader, split_users

__all__ = ["Evaluation", "evaluate", "val_score", "with_intervals", "check_scored_on_labels", "predict_prepared",
           "write_plots"]


PathLike = Union[str, os.PathLike]


@dataclass
class Evaluation:
    test_metrics: dict[str, dict[str, float]]
    test_score: float
    val_score: float
    test_predictions: np.ndarray  # [N_test, n_task], test-file order
    val_metrics: Optional[dict[str, dict[str, float]]] = None  # with intervals, when asked for


def val_score(history: Sequence[Mapping[str, float]], best_epoch: int, spec: FeatureSpec) -> float:
    """``task_mean`` of the best epoch's validation metrics: those of the checkpoint the trainer restores
    (``best.pt`` holds that epoch's weights, and the history row was measured on them). NaN without validation."""
    if not 0 <= best_epoch < len(history):
        return math.nan
    by_task: dict[str, dict[str, float]] = {}
    for key, value in history[best_epoch].items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "val":
            by_task.setdefault(parts[1], {})[parts[2]] = float(value)
    try:
        return task_mean(by_task, spec.label_names, spec.task_types)
    except KeyError:
        return math.nan


def check_scored_on_labels(model: torch.nn.Module, model_name: str, prepared_dir: PathLike, spec: FeatureSpec) -> None:
    """A model that trains on targets derived from the labels (ESMM: click x conversion) is validated and tested
    on them too, so its scores compare with other models' only where those targets equal the labels (funnel data:
    a later task positive only where the earlier one is). Elsewhere (Adult's income / never_married) selection
    would compare different questions: a one-line error naming the label, before any training."""
    if type(model).training_targets is MultiTaskModel.training_targets:
        return  # the labels themselves: nothing to read
    bad_task = torch.zeros(len(spec.label_names), dtype=torch.bool)  # [n_task]
    rows = total = 0
    for part in iter_split_labels(prepared_dir, "train", spec):  # a row group at a time: bounded memory
        labels = torch.from_numpy(part)  # [n, n_task]
        differs = model.training_targets(labels) != labels  # [n, n_task]
        bad_task |= differs.any(dim=0)
        rows += int(differs.any(dim=1).sum())
        total += len(labels)
    tasks = [name for name, bad in zip(spec.label_names, bad_task.tolist()) if bad]
    if tasks:
        raise DataError(f"{model_name} trains on targets derived from the labels, which differ from label "
                         f"{tasks[0]!r} on {rows:,} of {total:,} train rows of dataset {spec.dataset!r}: its "
                         f"scores would not compare with other models'; use it on funnel labels (each task "
                         f"positive only where the one before is) or leave {model_name} out of models")


def with_intervals(spec: FeatureSpec, labels: np.ndarray, predictions: np.ndarray, users: Optional[np.ndarray],
                   level: float = stats.LEVEL) -> dict[str, dict[str, float]]:
    """``{task: {metric: value, metric_lo: ..., metric_hi: ...}}`` of predictions ``[N, n_task]`` against labels
    ``[N, n_task]``: AUC with DeLong's interval; logloss, calibration, ECE and (given the rows' ``users``) GAUC
    with a seeded bootstrap (``stats.N_BOOT`` resamples); RMSE / MAE for regression tasks."""
    out: dict[str, dict[str, float]] = {}
    for i, (task, kind) in enumerate(zip(spec.label_names, spec.task_types)):
        found = stats.metric_intervals(kind, labels[:, i], predictions[:, i], users, level)
        lo, hi = SUFFIXES  # test/click/auc -> test/click/auc_lo, test/click/auc_hi
        out[task] = {k: float(v) for name, iv in found.items()
                     for k, v in ((name, iv.value), (name + lo, iv.lo), (name + hi, iv.hi))}
    return out


def evaluate(trainer: Any, test_loader: Any, spec: FeatureSpec, prepared_dir: Optional[PathLike] = None,
             val_loader: Any = None) -> Evaluation:
    """Test metrics and predictions of ``trainer.model`` (the restored best checkpoint) and its validation score.
    With ``prepared_dir`` and ``val_loader``: the val and test metrics with their intervals (:func:`with_intervals`).
    Data-parallel, every rank calls it: both passes cover the whole test split, gathered over the ranks."""
    metrics = trainer.evaluate(trainer.model, test_loader)
    predictions = trainer.predict(trainer.model, test_loader)  # [N_test, n_task]
    val_metrics = None
    if prepared_dir is not None and val_loader is not None:
        scored = {split: with_intervals(spec, split_labels(prepared_dir, split, spec), preds,
                                        split_users(prepared_dir, split, spec))
                  for split, preds in (("test", predictions), ("val", trainer.predict(trainer.model, val_loader)))}
        metrics = {task: {**ms, **scored["test"].get(task, {})} for task, ms in metrics.items()}
        val_metrics = scored["val"]
    return Evaluation(test_metrics=metrics, test_score=task_mean(metrics, spec.label_names, spec.task_types),
                      val_score=val_score(trainer.history, int(trainer.best_epoch), spec),
                      test_predictions=predictions, val_metrics=val_metrics)


@torch.no_grad()
def predict_prepared(out_dir: PathLike, prepared_dir: PathLike, split: str = "test", batch_size: int = 8192) -> np.ndarray:
    """``[N, n_task]`` predictions of a saved trained model on a prepared split, in file order."""
    model, spec, _ = load_trained(out_dir)
    loader = split_loader(prepared_dir, split, spec, batch_size, with_labels=False)
    return np.concatenate([model(batch).numpy() for batch in loader])


def write_plots(folder: PathLike, model_name: str, history: Sequence[Mapping[str, float]], labels: np.ndarray,
                predictions: np.ndarray, spec: FeatureSpec) -> list[Path]:
    """``training_curves.png`` and one ``roc_<task>.png`` per classification task into ``folder``
    (``labels`` / ``predictions``: ``[N, n_task]`` of the test split)."""
    from ..reports import plots

    folder = Path(folder)
    paths = [plots.training_curves(history, folder / "training_curves.png", title=model_name)]
    return paths + plots.roc_curves(labels, predictions, spec.label_names, spec.task_types, folder, title=model_name)
