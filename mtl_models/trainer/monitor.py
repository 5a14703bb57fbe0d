"""What "better" means, in one place: the monitored key, its direction and the task-mean score.

Early stopping (``MTLTrainer``), the pipeline's train step (``test_score``), the Optuna objective and the
registry's champion choice all compare models; they all ask a ``Monitor`` (or ``higher_is_better`` /
``task_mean``) so that a metric's direction and the mean over tasks are defined once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..metrics import HIGHER_IS_BETTER
from .scores import PRIMARY_METRIC

__all__ = ["Monitor", "higher_is_better", "task_mean"]

# names that are higher-is-better by construction: the task-mean score and whatever a monitor reports
_SCORE_LEAVES = {"score", "monitor", "mean"}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric named by its last ``/``-separated part (``val/click/auc``, ``test_score``)."""
    leaf = metric.rsplit("/", 1)[-1].lower()
    if leaf in _SCORE_LEAVES or leaf.endswith("_score"):
        return True
    if leaf not in HIGHER_IS_BETTER:
        raise ValueError(f"metric {metric!r}: unknown direction; known metrics are {sorted(HIGHER_IS_BETTER)} "
                         f"and scores ({sorted(_SCORE_LEAVES)}, *_score)")
    return HIGHER_IS_BETTER[leaf]


def task_mean(metrics: Mapping[str, Mapping[str, float]], task_names: Sequence[str],
              task_types: Sequence[str]) -> float:
    """Mean over tasks of each task's primary metric, signed so that higher is better: AUC, and -RMSE for
    regression tasks. ``metrics`` is ``{task: {metric: value}}`` (a ``Scores`` dict or a saved ``metrics.json``)."""
    parts = []
    for name, kind in zip(task_names, task_types):
        metric = PRIMARY_METRIC[kind]
        value = float(metrics[name][metric])
        parts.append(value if higher_is_better(metric) else -value)
    return float(sum(parts) / len(parts)) if parts else math.nan


@dataclass(frozen=True)
class Monitor:
    """The key a run is judged by. ``"mean"``: the task mean of the validation metrics (``task_mean``);
    ``"task:i"``: task i's primary validation metric; else a flat epoch-metric key such as ``"val/ctr/auc"``."""

    key: str
    task_names: tuple[str, ...]
    task_types: tuple[str, ...]

    @property
    def metric_key(self) -> str:
        """The flat epoch-metric key this monitor reads (``val/monitor`` for the task mean)."""
        if self.key == "mean":
            return "val/monitor"
        if self.key.startswith("task:"):
            i = int(self.key[5:])
            return f"val/{self.task_names[i]}/{PRIMARY_METRIC[self.task_types[i]]}"
        return self.key

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric_key)

    @property
    def direction(self) -> str:
        """Optuna's spelling of the direction."""
        return "maximize" if self.higher_is_better else "minimize"

    def read(self, epoch_metrics: Mapping[str, float]) -> tuple[float, float]:
        """-> (the monitored value, a score where higher is better) from one epoch's flat metrics. Without
        validation metrics the task mean falls back on the training loss."""
        if self.key == "mean":
            if not any(k.startswith("val/") for k in epoch_metrics):
                return epoch_metrics["train/loss"], -epoch_metrics["train/loss"]
            by_task = {n: {PRIMARY_METRIC[t]: epoch_metrics[f"val/{n}/{PRIMARY_METRIC[t]}"]}
                       for n, t in zip(self.task_names, self.task_types)}
            value = task_mean(by_task, self.task_names, self.task_types)
            return value, value
        key = self.metric_key
        if key not in epoch_metrics:
            raise ValueError(f"monitor {self.key!r} -> {key!r} is not among the epoch metrics {sorted(epoch_metrics)}")
        value = float(epoch_metrics[key])
        return value, (value if self.higher_is_better else -value)
