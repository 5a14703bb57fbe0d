"""AITM (Xi et al., KDD 2021): conversion steps in sequence (impression -> click -> ... -> purchase).
Each task has its own bottom; task t attends over [information transferred from task t-1, its own
representation]; a behavioural-expectation calibrator penalises p_t > p_{t-1}."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import MLP, MLPGroup, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["AITM", "AttentionTransfer"]


def _attention_settings(params: Optional[Mapping[str, Any]]) -> tuple[int, float]:
    """``attention_params`` -> ``(attention_dim, dropout)``, defaults 64 and 0; errors name the bad key."""
    params = dict(params or {})
    unknown = set(params) - {"attention_dim", "dropout"}
    if unknown:
        raise ValueError(f"attention_params has unknown keys {sorted(unknown)}; allowed: attention_dim, dropout")
    attention_dim = params.get("attention_dim", 64)
    if isinstance(attention_dim, bool) or not isinstance(attention_dim, int) or attention_dim <= 0:
        raise ValueError(f"attention_params['attention_dim'] must be a positive int, got {attention_dim!r}")
    dropout = float(params.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"attention_params['dropout'] must be in [0, 1), got {dropout}")
    return attention_dim, dropout


class AttentionTransfer(nn.Module):
    """The AIT unit: attention over the transferred vector p and the task's own q (both ``[B, d]``).

    ``w_u = <h1(u), h2(u)> / sqrt(k)``, softmax over u in {p, q}, ``z = sum_u w_u h3(u)``; h1, h2 map to
    ``attention_dim`` (k), h3 keeps width d so every task's tower has the same input width.
    """

    def __init__(self, dim: int, attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.h1 = nn.Linear(dim, attention_dim)
        self.h2 = nn.Linear(dim, attention_dim)
        self.h3 = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(attention_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, transferred: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.stack([transferred, own], dim=1)  # [B, 2, d]
        scores = (self.h1(u) * self.h2(u)).sum(-1) * self.scale  # [B, 2]
        weights = scores.softmax(dim=1)  # [B, 2]
        z = (weights.unsqueeze(-1) * self.h3(u)).sum(1)  # [B, d]
        return self.dropout(z), weights


class AITM(MultiTaskModel):
    """``bottom_params``: each task's own bottom MLP; ``tower_params_list``: the towers after attention;
    ``attention_params``: ``{"attention_dim": k, "dropout": p}``. ``calibration_weight`` is the default
    weight the trainer gives ``auxiliary_loss`` (the paper's alpha, 0.6)."""

    def __init__(self, features: Sequence[Feature], task_types: Sequence[str], bottom_params: Mapping[str, Any],
                 tower_params_list: Sequence[Mapping[str, Any]],
                 attention_params: Optional[Mapping[str, Any]] = None, calibration_weight: float = 0.6) -> None:
        if len(task_types) < 2 or any(t != "classification" for t in task_types):
            raise ValueError("AITM models a sequence of conversion steps: task_types must be two or more "
                             f"'classification' tasks, got {task_types!r}")
        super().__init__(features, task_types)
        towers = check_tower_params_list(tower_params_list, self.n_task)
        attention_dim, dropout = _attention_settings(attention_params)
        if calibration_weight < 0:
            raise ValueError(f"calibration_weight must be >= 0, got {calibration_weight}")
        self.default_auxiliary_weight = float(calibration_weight)

        self.bottoms = MLPGroup(MLP(self.input_dim, bottom_params, argument="bottom_params")
                                for _ in range(self.n_task))  # one per task, all reading the embedding
        dim = self.bottoms[0].output_dim
        self.transfers = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
                                       for _ in range(self.n_task - 1))
        self.attentions = nn.ModuleList(AttentionTransfer(dim, attention_dim, dropout) for _ in range(self.n_task - 1))
        self.towers = nn.ModuleList(build_tower(dim, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        owns = self.bottoms(self.embedding.lookup(x))  # T x [B, d]: each task's own representation
        z = owns[0]  # [B, d]
        raw = [self.towers[0](z)]  # [B, 1]
        for t in range(1, self.n_task):
            z, _ = self.attentions[t - 1](self.transfers[t - 1](z), owns[t])  # [B, d]
            raw.append(self.towers[t](z))  # [B, 1]
        return self.head(torch.cat(raw, dim=1))  # [B, T]

    def auxiliary_loss(self, predictions: Tensor) -> Tensor:
        """Behavioural-expectation calibration: ``sum_t mean(max(p_t - p_{t-1}, 0))`` over ``[B, T]``."""
        return torch.relu(predictions[:, 1:] - predictions[:, :-1]).mean(dim=0).sum()
