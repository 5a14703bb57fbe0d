"""Fixed weights: all ones, or the static ``weights`` given in ``adaptive_params``."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .base import Weighting, register_weighting


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Static linear scalarisation ``sum_t w_t L_t`` (``w_t = 1`` unless ``weights`` is given)."""

    def __init__(self, task_types: Sequence[str], model: Optional[nn.Module] = None,
                 weights: Optional[Sequence[float]] = None) -> None:
        super().__init__(task_types, model)
        w = [1.0] * self.n_task if weights is None else [float(v) for v in weights]
        if len(w) != self.n_task or any(v < 0 for v in w):
            raise ValueError(f"weights must be {self.n_task} non-negative numbers, got {weights!r}")
        self.register_buffer("weights", torch.tensor(w))  # [T]

    def backward(self, losses: Tensor, extra_loss: Optional[Tensor] = None) -> Tensor:
        self._total(self.weights * losses, extra_loss).backward()
        return self.weights

    def current_weights(self) -> Tensor:
        return self.weights
