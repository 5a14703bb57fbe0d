"""MMOE (Ma et al., KDD 2018): shared experts, one softmax gate per task computed from the input,
each task's tower reading its own gated mixture of the experts."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import ExpertGroup, build_tower, linear, mix_experts
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["MMOE"]


class MMOE(MultiTaskModel):
    def __init__(self, features: Sequence[Feature], task_types: Sequence[str], n_expert: int,
                 expert_params: Mapping[str, Any], tower_params_list: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(features, task_types)
        towers = check_tower_params_list(tower_params_list, self.n_task)
        self.experts = ExpertGroup(n_expert, self.input_dim, expert_params)
        self.n_expert = n_expert
        # all tasks' gates in one Linear: [input_dim] -> [n_task * n_expert]; no BatchNorm inside gates
        self.gates = nn.Linear(self.input_dim, self.n_task * n_expert)
        self.towers = nn.ModuleList(
            build_tower(self.experts.output_dim, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def _forward(self, x: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        emb = self.embedding.lookup(x)  # experts and gates read it through their first Linear
        experts = self.experts(emb)  # E x [B, d]
        logits = linear(emb, self.gates.weight, self.gates.bias)  # [B, T * E]
        gates = logits.view(-1, self.n_task, self.n_expert).softmax(dim=-1)  # [B, T, E]
        raw = torch.cat([tower(mix_experts(gates[:, t], experts))  # task t's mixture [B, d] -> [B, 1]
                         for t, tower in enumerate(self.towers)], dim=1)  # [B, T]
        return self.head(raw), gates

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._forward(x)[0]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.experts.layers[-1].weight]  # [E, d_in, d]: every expert's last layer

    def gate_weights(self, x: Mapping[str, Tensor]) -> Tensor:
        """Each task's softmax weights over the experts: ``[B, n_task, n_expert]``."""
        return self._forward(x)[1]
