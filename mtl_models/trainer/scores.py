"""``MTLTrainer.evaluate``'s result: every metric by task name, and Torch-RecHub's ``scores[i]`` by position.

Torch-RecHub's ``evaluate`` returns a list (task i's one metric); ours has several metrics per task and the extra
views a model declares (ESMM's ``"cvr"``). A dict keyed by name that also answers an integer index carries both,
and it stays a plain dict for ``json.dumps``, ``dict(...)`` and MLflow logging.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

__all__ = ["Scores", "PRIMARY_METRIC"]

# the metric ``scores[i]`` gives: the one each task type is monitored and ranked by
PRIMARY_METRIC = {"classification": "auc", "regression": "rmse"}


class Scores(dict):
    """``{task or extra name: {metric: value}}``; ``scores[i]`` is task i's primary metric (``PRIMARY_METRIC``:
    AUC for a classification task, RMSE for a regression task), in the model's task order."""

    def __init__(self, metrics: Any = (), task_names: Optional[Sequence[str]] = None,
                 task_types: Optional[Sequence[str]] = None) -> None:
        # built like a dict too (``dataclasses.asdict`` and ``copy`` rebuild it from its items): then without a task
        # order, and only names index it
        super().__init__(metrics)
        self.task_names = list(task_names) if task_names is not None else None
        self.task_types = list(task_types) if task_types is not None else None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            return self.primary()[self._position(int(key))]
        return super().__getitem__(key)

    def _order(self) -> tuple[list[str], list[str]]:
        if self.task_names is None or self.task_types is None:
            raise KeyError("these scores were rebuilt from a plain dict without the task order; index them by task name")
        return self.task_names, self.task_types

    def _position(self, i: int) -> int:
        n = len(self._order()[0])
        if not -n <= i < n:
            raise IndexError(f"task index {i} out of range: the model has {n} tasks {self.task_names}")
        return i % n

    def primary(self) -> list[float]:
        """Each task's primary metric in task order: what Torch-RecHub's ``evaluate`` returns as a list."""
        return [super(Scores, self).__getitem__(n)[PRIMARY_METRIC[t]] for n, t in zip(*self._order())]

    def __reduce__(self) -> Any:  # pickles (multiprocessing, checkpoints of results) as itself, names included
        return (Scores, (dict(self), self.task_names, self.task_types))
