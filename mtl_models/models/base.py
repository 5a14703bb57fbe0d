"""What every multi-task model shares: feature embedding, task-type checks and the output head.

Models return ``[B, n_task]``: a probability for a classification task, a raw value for a regression
task. Behaviour the trainer needs beyond that (ESMM's label transform, AITM's auxiliary loss, ESMM's
extra CVR view) lives here as overridable hooks, so the trainer never asks which model it holds.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import FeatureEmbedding

__all__ = ["MultiTaskModel", "TASK_TYPES", "check_task_types", "check_tower_params_list"]

TASK_TYPES = ("classification", "regression")


def check_task_types(task_types: Sequence[str]) -> list[str]:
    if isinstance(task_types, str) or not task_types:
        raise ValueError(f"task_types must be a non-empty list of {TASK_TYPES}, got {task_types!r}")
    for t in task_types:
        if t not in TASK_TYPES:
            raise ValueError(f"task_types has unknown task type {t!r}; allowed: {list(TASK_TYPES)}")
    return list(task_types)


def check_tower_params_list(tower_params_list: Sequence[Mapping[str, Any]], n_task: int) -> list:
    if tower_params_list is None or isinstance(tower_params_list, Mapping):
        raise ValueError("tower_params_list must be a list with one dict per task")
    if len(tower_params_list) != n_task:
        raise ValueError(f"tower_params_list has {len(tower_params_list)} towers but task_types has {n_task} tasks")
    return list(tower_params_list)


class MultiTaskModel(nn.Module):
    """Base class: builds the fused embedding and turns per-task raw outputs into predictions."""

    def __init__(self, features: Sequence[Feature], task_types: Sequence[str]) -> None:
        super().__init__()
        self.task_types = check_task_types(task_types)
        self.n_task = len(self.task_types)
        self.embedding = FeatureEmbedding(features)
        self.features = self.embedding.features
        is_cls = torch.tensor([t == "classification" for t in self.task_types])
        self.register_buffer("_is_classification", is_cls, persistent=False)  # [n_task]

    @property
    def input_dim(self) -> int:
        return self.embedding.output_dim

    def head(self, raw: Tensor) -> Tensor:
        """raw: [B, n_task] tower outputs -> sigmoid on classification columns, identity on regression."""
        return torch.where(self._is_classification, torch.sigmoid(raw), raw)  # [B, n_task]

    # ---- hooks the trainer uses; defaults fit every model but ESMM and AITM ----
    def training_targets(self, y: Tensor) -> Tensor:
        """Labels ``[B, n_task]`` as the model's outputs should fit them."""
        return y

    def auxiliary_loss(self, predictions: Tensor) -> Optional[Tensor]:
        """An extra unweighted loss term computed from ``forward``'s output, or None."""
        return None

    default_auxiliary_weight: float = 0.0

    def extra_outputs(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named ``[B]`` predictions besides ``forward``'s (ESMM: pCVR), for evaluation."""
        return {}

    def extra_targets(self, y: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """For each ``extra_outputs`` name: ``(labels [B], mask [B] bool)`` of the rows it is evaluated on."""
        return {}

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last layer every task's loss flows through (GradNorm measures gradients here).

        The embedding tables by default: for AITM, whose bottoms are per task, they are the only shared layer.
        """
        return self.embedding.shared_weights()
