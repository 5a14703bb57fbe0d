"""MMOE (Ma et al., KDD 2018): shared experts, one softmax gate per task computed from the input,
each task's tower reading its own gated mixture of the experts."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import ExpertGroup, Gate, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["MMOE"]


class MMOE(MultiTaskModel):
    def __init__(self, features: Sequence[Feature], task_types: Sequence[str], n_expert: int,
                 expert_params: Mapping[str, Any], tower_params_list: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(features, task_types)
        towers = check_tower_params_list(tower_params_list, self.n_task)
        self.experts = ExpertGroup(n_expert, self.input_dim, expert_params)
        self.n_expert = n_expert
        self.gates = Gate(self.input_dim, n_expert, n_gate=self.n_task)  # one softmax gate per task
        self.towers = nn.ModuleList(
            build_tower(self.experts.output_dim, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def _forward(self, x: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        emb = self.embedding.lookup(x)
        experts = self.experts(emb)  # E x [B, d]
        mixtures, gates = self.gates(emb, experts)  # T x [B, d]: task t's gated mixture; gates [B, T, E]
        raw = torch.cat([tower(m) for tower, m in zip(self.towers, mixtures)], dim=1)  # [B, T]
        return self.head(raw), gates

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._forward(x)[0]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.experts.last_linear_weight]  # [E, d_in, d]: every expert's last layer

    def gate_weights(self, x: Mapping[str, Tensor]) -> Tensor:
        """Each task's softmax weights over the experts: ``[B, n_task, n_expert]``."""
        return self._forward(x)[1]
