"""PLE (Tang et al., RecSys 2020): ``n_level`` stacked CGC levels. Each level has ``n_expert_specific``
experts per task plus ``n_expert_shared`` shared ones; task t's gate mixes its own and the shared
experts; below the last level a shared gate mixes all experts into the next level's shared input."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import ExpertGroup, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["PLE", "CGCLevel"]


def _positive(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return value


class CGCLevel(nn.Module):
    """One Customized Gate Control level. Experts are ordered task 0's, task 1's, ..., then shared."""

    def __init__(self, n_task: int, n_specific: int, n_shared: int, input_dim: int,
                 expert_params: Mapping[str, Any], with_shared_gate: bool, first: bool) -> None:
        super().__init__()
        self.n_task, self.n_specific, self.n_shared = n_task, n_specific, n_shared
        n_total = n_task * n_specific + n_shared
        self.experts = ExpertGroup(n_total, input_dim, expert_params)
        self.output_dim = self.experts.output_dim
        self.first = first
        # which input each expert reads at upper levels: its task's vector, or the shared one (index n_task)
        owner = [t for t in range(n_task) for _ in range(n_specific)] + [n_task] * n_shared
        self.register_buffer("expert_owner", torch.tensor(owner), persistent=False)  # [E_total]
        # expert ids each task gate mixes: its own specific experts, then the shared ones
        shared_ids = list(range(n_task * n_specific, n_total))
        mix = [list(range(t * n_specific, (t + 1) * n_specific)) + shared_ids for t in range(n_task)]
        self.register_buffer("task_mix", torch.tensor(mix), persistent=False)  # [T, K]
        k = n_specific + n_shared
        bound = input_dim ** -0.5
        self.task_gate_weight = nn.Parameter(torch.empty(n_task, input_dim, k).uniform_(-bound, bound))
        self.task_gate_bias = nn.Parameter(torch.empty(n_task, k).uniform_(-bound, bound))
        self.shared_gate = nn.Linear(input_dim, n_total) if with_shared_gate else None

    def forward(self, task_in: Tensor, shared_in: Tensor) -> tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
        # task_in: [B, T, d_in]; shared_in: [B, d_in]
        if self.first:
            expert_out = self.experts(shared_in)  # [B, E_total, d]  (all inputs are the embedding)
        else:
            inputs = torch.cat([task_in, shared_in.unsqueeze(1)], dim=1)  # [B, T + 1, d_in]
            expert_out = self.experts(inputs.index_select(1, self.expert_owner))  # [B, E_total, d]
        logits = torch.einsum("btd,tdk->btk", task_in, self.task_gate_weight) + self.task_gate_bias  # [B, T, K]
        task_gates = logits.softmax(dim=-1)  # [B, T, K]
        candidates = expert_out[:, self.task_mix]  # [B, T, K, d]
        task_out = torch.einsum("btk,btkd->btd", task_gates, candidates)  # [B, T, d]
        if self.shared_gate is None:
            return task_out, None, task_gates, None
        shared_gates = self.shared_gate(shared_in).softmax(dim=-1)  # [B, E_total]
        shared_out = torch.einsum("be,bed->bd", shared_gates, expert_out)  # [B, d]
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
                           with_shared_gate=level < n_level - 1, first=level == 0)
            levels.append(cgc)
            width = cgc.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(build_tower(width, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def _forward(self, x: Mapping[str, Tensor]) -> tuple[Tensor, list[tuple[Tensor, Optional[Tensor]]]]:
        shared = self.embedding(x)  # [B, input_dim]
        task_in = shared.unsqueeze(1).expand(-1, self.n_task, -1)  # [B, T, input_dim]
        gates = []
        for cgc in self.levels:
            task_in, shared, task_gates, shared_gates = cgc(task_in, shared)  # [B, T, d], [B, d] | None
            gates.append((task_gates, shared_gates))
        raw = torch.cat([tower(task_in[:, t]) for t, tower in enumerate(self.towers)], dim=1)  # [B, T]
        return self.head(raw), gates

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._forward(x)[0]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.levels[-1].experts.layers[-1].weight]  # last level's experts (shared ones included)

    def gate_weights(self, x: Mapping[str, Tensor]) -> list[tuple[Tensor, Optional[Tensor]]]:
        """Per level: task gates ``[B, T, n_specific + n_shared]`` and the shared gate ``[B, E_total]`` (None at the last level)."""
        return self._forward(x)[1]
