"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing", ICML 2018)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .base import Weighting, register_weighting


@register_weighting("gradnorm")
class GradNormWeighting(Weighting):
    """Learnable ``w_t`` pulled so that each task's gradient norm on the last shared layer,
    ``G_t = w_t ||grad_W L_t||``, approaches ``mean(G) * r_t^alpha`` with ``r_t`` the task's relative
    inverse training rate ``(L_t / L_t(0)) / mean(L / L(0))``. The model is trained on ``sum_t w_t L_t``
    with ``w`` held fixed; ``w`` gets only the gradient of ``sum_t |G_t - target_t|`` and is renormalised
    to sum to ``n_task`` after every optimizer step (floored at ``min_weight`` to stay positive)."""

    def __init__(self, task_types: Sequence[str], model: Optional[nn.Module] = None, alpha: float = 1.5,
                 min_weight: float = 1e-3) -> None:
        super().__init__(task_types, model)
        if model is None or not hasattr(model, "last_shared_parameters"):
            raise ValueError("gradnorm needs the model (with last_shared_parameters()) to measure gradient norms")
        self.alpha, self.min_weight = float(alpha), float(min_weight)
        self.weights = nn.Parameter(torch.ones(self.n_task))  # [T]
        self.register_buffer("initial_losses", torch.zeros(self.n_task))  # [T], L(0); zeros = not yet seen
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def current_weights(self) -> Tensor:
        return self.weights.detach().clone()

    def _shared(self) -> list[Tensor]:
        params = [p for p in self.model[0].last_shared_parameters() if p.requires_grad]
        if not params:
            raise ValueError("model.last_shared_parameters() returned no trainable parameters")
        return params

    def backward(self, losses: Tensor, extra_loss: Optional[Tensor] = None) -> Tensor:
        shared = self._shared()
        norms = []
        for t in range(self.n_task):  # ||grad_W L_t|| on the last shared layer, one small backward each
            grads = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
            if self.distributed:  # the norm of the global batch's gradient, not the mean of local norms
                grads = self._global_grads(grads, shared)
            sq = [g.pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else losses.new_zeros(()))
        norms_t = torch.stack(norms).detach()  # [T]
        lossd = self.mean_over_ranks(losses.detach())  # [T], the global batch's losses under DDP
        if not bool(self.initialised):
            self.initial_losses.copy_(lossd.clamp_min(1e-12))
            self.initialised.fill_(True)
        w = self.weights.detach()  # [T]
        g_norm = w * norms_t  # [T] = G_t
        ratio = lossd / self.initial_losses  # [T]
        r = ratio / ratio.mean().clamp_min(1e-12)
        target = g_norm.mean() * r.pow(self.alpha)  # [T], a constant in the paper
        # d/dw_t sum_t |w_t n_t - target_t| = sign(w_t n_t - target_t) * n_t  (exact; no double backward)
        self.weights.grad = torch.sign(g_norm - target) * norms_t
        self._total(w * losses, extra_loss).backward()
        return w

    def _global_grads(self, grads: tuple, shared: list[Tensor]) -> list[Tensor]:
        """Average one task's gradients over ranks in one all-reduce (the mean of the ranks' gradients of
        their local mean losses is the gradient of the global batch's mean loss)."""
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                          for g, p in zip(grads, shared)])  # [P]
        flat = self.mean_over_ranks(flat)
        return list(torch.split(flat, [p.numel() for p in shared]))

    @torch.no_grad()
    def after_step(self) -> None:
        w = self.weights.clamp_(min=self.min_weight)
        w.mul_(self.n_task / w.sum())
