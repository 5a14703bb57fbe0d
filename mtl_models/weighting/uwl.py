"""Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .base import Weighting, register_weighting


@register_weighting("uwl")
class UncertaintyWeighting(Weighting):
    """Learns ``s_t = log sigma_t^2`` per task. Regression (Gaussian likelihood):
    ``0.5 exp(-s) L + 0.5 s``; classification (scaled softmax/Bernoulli): ``exp(-s) L + 0.5 s``
    (both are the paper's ``1/(c sigma^2) L + log sigma``). ``s`` is unbounded: at the optimum
    ``exp(s) = L`` (regression) or ``2 L`` (classification), so a clamp would only freeze it."""

    def __init__(self, task_types: Sequence[str], model: Optional[nn.Module] = None, init: float = 0.0) -> None:
        super().__init__(task_types, model)
        self.log_vars = nn.Parameter(torch.full((self.n_task,), float(init)))  # [T] = log sigma^2
        scale = [1.0 if t == "classification" else 0.5 for t in self.task_types]
        self.register_buffer("scale", torch.tensor(scale))  # [T]: 1/c of the paper

    def current_weights(self) -> Tensor:
        return (self.scale * torch.exp(-self.log_vars)).detach()  # [T]

    def backward(self, losses: Tensor, extra_loss: Optional[Tensor] = None) -> Tensor:
        precision = self.scale * torch.exp(-self.log_vars)  # [T]
        weighted = precision * losses + 0.5 * self.log_vars  # [T]
        self._total(weighted, extra_loss).backward()
        if self.distributed:  # d/ds is linear in L: the ranks' mean gradient is the global batch's gradient
            self.log_vars.grad = self.mean_over_ranks(self.log_vars.grad)
        return precision.detach()
