"""ESMM (Ma et al., SIGIR 2018): CTR and CVR towers over a shared representation, trained on the
entire impression space through pCTCVR = pCTR * pCVR, which removes CVR's sample-selection bias."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..features import Feature
from ..layers import MLP, MLPGroup, build_tower
from .base import MultiTaskModel, check_tower_params_list

__all__ = ["ESMM"]


class ESMM(MultiTaskModel):
    """Outputs ``[pCTR, pCTCVR]``; ``predict_cvr`` gives pCVR. ``bottom_params=None`` puts the towers
    directly on the shared embeddings, as in the paper's figure."""

    def __init__(self, features: Sequence[Feature], task_types: Sequence[str],
                 bottom_params: Optional[Mapping[str, Any]], tower_params_list: Sequence[Mapping[str, Any]]) -> None:
        if list(task_types) != ["classification", "classification"]:
            raise ValueError("ESMM needs exactly two classification tasks: task_types=['classification', "
                             f"'classification'] for (click, click-and-conversion); got {task_types!r}")
        super().__init__(features, task_types)
        ctr_params, cvr_params = check_tower_params_list(tower_params_list, 2)
        self.bottom = MLP(self.input_dim, bottom_params, argument="bottom_params") if bottom_params else None
        width = self.bottom.output_dim if self.bottom is not None else self.input_dim
        self.towers = MLPGroup([build_tower(width, ctr_params, "tower_params_list[0]"),   # CTR
                                build_tower(width, cvr_params, "tower_params_list[1]")])  # CVR

    @property
    def ctr_tower(self) -> MLP:
        return self.towers[0]

    @property
    def cvr_tower(self) -> MLP:
        return self.towers[1]

    def _ctr_cvr(self, x: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        shared = self.embedding.lookup(x)  # the towers' (or the bottom's) first Linear reads the lookup
        if self.bottom is not None:
            shared = self.bottom(shared)  # [B, bottom_dim]
        ctr, cvr = self.towers(shared)  # [B, 1] logits each
        return torch.sigmoid(ctr), torch.sigmoid(cvr)  # [B, 1] each

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        p_ctr, p_cvr = self._ctr_cvr(x)
        return torch.cat([p_ctr, p_ctr * p_cvr], dim=1)  # [B, 2] = [pCTR, pCTCVR]

    def predict_cvr(self, x: Mapping[str, Tensor]) -> Tensor:
        return self._ctr_cvr(x)[1].squeeze(1)  # [B]

    def training_targets(self, y: Tensor) -> Tensor:
        # (click, conversion) -> (click, click * conversion): the CTCVR label over all impressions
        return torch.stack([y[:, 0], y[:, 0] * y[:, 1]], dim=1)  # [B, 2]

    def last_shared_parameters(self) -> list:
        return [self.bottom.last_linear.weight] if self.bottom is not None else super().last_shared_parameters()

    def extra_outputs(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"cvr": self.predict_cvr(x)}

    def extra_targets(self, y: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        # pCVR is only defined on clicked impressions: conversion label where click == 1
        return {"cvr": (y[:, 1], y[:, 0] > 0.5)}
