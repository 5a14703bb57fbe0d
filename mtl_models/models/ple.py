"""PLE (Tang et al., RecSys 2020): ``n_level`` stacked CGC levels. Each level has ``n_expert_specific``
experts per task plus ``n_expert_shared`` shared ones; task t's gate mixes its own and the shared
experts; below the last level a shared gate mixes all experts into the next level's shared input."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import EmbeddedBatch, ExpertGroup, build_tower, linear, mix_experts
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["PLE", "CGCLevel"]


def _positive(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return value


class CGCLevel(nn.Module):
    """One Customized Gate Control level. Experts are ordered task 0's, task 1's, ..., then shared."""

    def __init__(self, n_task: int, n_specific: int, n_shared: int, input_dim: int,
                 expert_params: Mapping[str, Any], with_shared_gate: bool) -> None:
        super().__init__()
        self.n_task, self.n_specific, self.n_shared = n_task, n_specific, n_shared
        n_total = n_task * n_specific + n_shared
        self.experts = ExpertGroup(n_total, input_dim, expert_params)
        self.output_dim = self.experts.output_dim
        # which input each expert reads at upper levels: its task's vector, or the shared one (index n_task)
        owner = [t for t in range(n_task) for _ in range(n_specific)] + [n_task] * n_shared
        self.expert_owner = owner  # [E_total]
        # expert ids each task gate mixes: its own specific experts, then the shared ones
        shared_ids = list(range(n_task * n_specific, n_total))
        mix = [list(range(t * n_specific, (t + 1) * n_specific)) + shared_ids for t in range(n_task)]
        self.task_mix = mix  # [T][K]
        k = n_specific + n_shared
        bound = input_dim ** -0.5
        self.task_gate_weight = nn.Parameter(torch.empty(n_task, input_dim, k).uniform_(-bound, bound))
        self.task_gate_bias = nn.Parameter(torch.empty(n_task, k).uniform_(-bound, bound))
        self.shared_gate = nn.Linear(input_dim, n_total) if with_shared_gate else None

    def forward(self, task_in: Optional[list[Tensor]], shared_in: Union[Tensor, EmbeddedBatch]
                ) -> tuple[list[Tensor], Optional[Tensor], Tensor, Optional[Tensor]]:
        # task_in: T x [B, d_in], None at the first level (every input is the embedding);
        # shared_in: [B, d_in] or the embedding lookup
        n_task, d_in, k = self.task_gate_weight.shape
        if task_in is None:
            experts = self.experts(shared_in)  # E_total x [B, d]
            w = self.task_gate_weight.transpose(1, 2).reshape(n_task * k, d_in)  # every task's gate, one Linear
            logits = linear(shared_in, w, self.task_gate_bias.reshape(-1)).view(-1, n_task, k)  # [B, T, K]
        else:
            inputs = list(task_in) + [shared_in]  # T + 1 candidate inputs [B, d_in]
            experts = self.experts([inputs[owner] for owner in self.expert_owner])  # E_total x [B, d]
            gate_w, gate_b = self.task_gate_weight.unbind(0), self.task_gate_bias.unbind(0)  # one backward node each
            logits = torch.stack([torch.addmm(b, h, w) for h, w, b in zip(task_in, gate_w, gate_b)], dim=1)  # [B, T, K]
        task_gates = logits.softmax(dim=-1)  # [B, T, K]
        task_out = [mix_experts(task_gates[:, t], [experts[i] for i in ids])
                    for t, ids in enumerate(self.task_mix)]  # T x [B, d]
        if self.shared_gate is None:
            return task_out, None, task_gates, None
        shared_gates = linear(shared_in, self.shared_gate.weight, self.shared_gate.bias).softmax(dim=-1)  # [B, E_total]
        shared_out = mix_experts(shared_gates, experts)  # [B, d]
        return task_out, shared_out, task_gates, shared_gates


class PLE(MultiTaskModel):
    def __init__(self, features: Sequence[Feature], task_types: Sequence[str], n_level: int,
                 n_expert_specific: int, n_expert_shared: int, expert_params: Mapping[str, Any],
                 tower_params_list: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(features, task_types)
        towers = check_tower_params_list(tower_params_list, self.n_task)
        _positive(n_level, "n_level")
        _positive(n_expert_specific, "n_expert_specific")
        _positive(n_expert_shared, "n_expert_shared")
        levels, width = [], self.input_dim
        for level in range(n_level):
            cgc = CGCLevel(self.n_task, n_expert_specific, n_expert_shared, width, expert_params,
                           with_shared_gate=level < n_level - 1)
            levels.append(cgc)
            width = cgc.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(build_tower(width, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def _forward(self, x: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[Tensor, Optional[Tensor]]]]:
        shared: Union[Tensor, EmbeddedBatch] = self.embedding.lookup(x)  # the first level's Linears read it
        task_in: Optional[list[Tensor]] = None  # T x [B, d] from the second level on
        gates = []
        for cgc in self.levels:
            task_in, shared, task_gates, shared_gates = cgc(task_in, shared)  # T x [B, d], [B, d] | None
            gates.append((task_gates, shared_gates))
        raw = torch.cat([tower(task_in[t]) for t, tower in enumerate(self.towers)], dim=1)  # [B, T]
        return self.head(raw), gates

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._forward(x)[0]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.levels[-1].experts.layers[-1].weight]  # last level's experts (shared ones included)

    def gate_weights(self, x: Mapping[str, Tensor]) -> list[tuple[Tensor, Optional[Tensor]]]:
        """Per level: task gates ``[B, T, n_specific + n_shared]`` and the shared gate ``[B, E_total]`` (None at the last level)."""
        return self._forward(x)[1]
