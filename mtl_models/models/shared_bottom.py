"""SharedBottom (Caruana 1997): embeddings -> one shared MLP -> one tower per task."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..features import Feature
from ..layers import MLP, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["SharedBottom"]


class SharedBottom(MultiTaskModel):
    def __init__(self, features: Sequence[Feature], task_types: Sequence[str], bottom_params: Mapping[str, Any],
                 tower_params_list: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(features, task_types)
        towers = check_tower_params_list(tower_params_list, self.n_task)
        self.bottom = MLP(self.input_dim, bottom_params, argument="bottom_params")
        self.towers = nn.ModuleList(
            build_tower(self.bottom.output_dim, p, f"tower_params_list[{i}]") for i, p in enumerate(towers))

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        shared = self.bottom(self.embedding.lookup(x))  # [B, bottom_dim]
        raw = torch.cat([tower(shared) for tower in self.towers], dim=1)  # [B, n_task]
        return self.head(raw)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.bottom.last_linear.weight]
