"""PLE (Tang et al., RecSys 2020): ``n_level`` stacked CGC levels. Each level has ``n_expert_specific``
experts per task plus ``n_expert_shared`` shared ones; task t's gate mixes its own and the shared
experts; below the last level a shared gate mixes all experts into the next level's shared input."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import ExpertGroup, Gate, TaskGates, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["PLE", "CGCLevel"]


def _positive(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return value


class CGCLevel(nn.Module):
    """One Customized Gate Control level. Experts are ordered task 0's, task 1's, ..., then shared; task t's gate
    mixes its own and the shared experts; the shared gate (below the last level) mixes all of them."""

    def __init__(self, n_task: int, n_specific: int, n_shared: int, input_dim: int,
                 expert_params: Mapping[str, Any], with_shared_gate: bool) -> None:
        super().__init__()
        n_total = n_task * n_specific + n_shared
        self.experts = ExpertGroup(n_total, input_dim, expert_params)
        self.output_dim = self.experts.output_dim
        # which input each expert reads: its task's, or the shared one (index n_task)
        self.expert_owner = [t for t in range(n_task) for _ in range(n_specific)] + [n_task] * n_shared  # [E_total]
        shared_ids = list(range(n_task * n_specific, n_total))
        self.task_gates = TaskGates(input_dim, [list(range(t * n_specific, (t + 1) * n_specific)) + shared_ids
                                                for t in range(n_task)])
        self.shared_gate = Gate(input_dim, n_total) if with_shared_gate else None

    def forward(self, task_in: list, shared_in: Any) -> tuple[list[Tensor], Any, Tensor, Optional[Tensor]]:
        """task_in: T inputs ``[B, d_in]``, shared_in: ``[B, d_in]`` (at the first level, all the embedding) ->
        (T task outputs ``[B, d]``, the shared output or None, task gates ``[B, T, K]``, shared gate ``[B, E]``)."""
        inputs = list(task_in) + [shared_in]
        experts = self.experts([inputs[owner] for owner in self.expert_owner])  # E_total x [B, d]
        task_out, task_gates = self.task_gates(task_in, experts)  # T x [B, d], [B, T, K]
        if self.shared_gate is None:
            return task_out, None, task_gates, None
        (shared_out,), shared_gates = self.shared_gate(shared_in, experts)  # [B, d], [B, 1, E_total]
        return task_out, shared_out, task_gates, shared_gates.squeeze(1)


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
        shared = self.embedding.lookup(x)  # every input of the first level
        task_in = [shared] * self.n_task
        gates = []
        for cgc in self.levels:
            task_in, shared, task_gates, shared_gates = cgc(task_in, shared)  # T x [B, d], [B, d] | None
            gates.append((task_gates, shared_gates))
        raw = torch.cat([tower(task_in[t]) for t, tower in enumerate(self.towers)], dim=1)  # [B, T]
        return self.head(raw), gates

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._forward(x)[0]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.levels[-1].experts.last_linear_weight]  # last level's experts (shared ones included)

    def gate_weights(self, x: Mapping[str, Tensor]) -> list[tuple[Tensor, Optional[Tensor]]]:
        """Per level: task gates ``[B, T, n_specific + n_shared]`` and the shared gate ``[B, E_total]`` (None at the last level)."""
        return self._forward(x)[1]
