"""A group of same-shaped expert MLPs evaluated together: one GEMM for a shared input, one bmm per layer after.

Mathematically identical to ``E`` separate ``MLP``s (each expert has its own weights, norms and PReLU
slopes); fusing them removes the Python loop over experts that dominates MMOE/PLE step time on CPU.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import check_mlp_params, make_activation

__all__ = ["ExpertGroup"]


class _ExpertLayer(nn.Module):
    """``E`` parallel ``Linear(in, out)`` with optional per-expert norm, activation and dropout."""

    def __init__(self, n_expert: int, in_dim: int, out_dim: int, cfg: dict) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per expert
        self.weight = nn.Parameter(torch.empty(n_expert, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_expert, 1, out_dim).uniform_(-bound, bound))
        self.norm = cfg["norm"]
        if self.norm == "layer":
            self.norm_weight = nn.Parameter(torch.ones(n_expert, 1, out_dim))
            self.norm_bias = nn.Parameter(torch.zeros(n_expert, 1, out_dim))
        elif self.norm == "batch":
            self.batch_norm = nn.BatchNorm1d(n_expert * out_dim)
        self.prelu_weight = (nn.Parameter(torch.full((n_expert, 1, 1), 0.25))
                             if str(cfg["activation"]).lower() == "prelu" else None)
        self.activation = None if self.prelu_weight is not None else make_activation(cfg["activation"])
        self.dropout = nn.Dropout(cfg["dropout"]) if cfg["dropout"] > 0 else None
        self.n_expert, self.out_dim = n_expert, out_dim

    def project_shared(self, x: Tensor) -> Tensor:
        # x: [B, in] -> one GEMM against all experts' weights side by side
        w = self.weight.permute(1, 0, 2).reshape(x.shape[1], -1)  # [in, E * out]
        h = (x @ w).reshape(x.shape[0], self.n_expert, self.out_dim)  # [B, E, out]
        return h.transpose(0, 1) + self.bias  # [E, B, out]

    def project(self, h: Tensor) -> Tensor:
        # h: [E, B, in]
        return torch.baddbmm(self.bias, h, self.weight)  # [E, B, out]

    def finish(self, h: Tensor) -> Tensor:
        # h: [E, B, out]
        if self.norm == "layer":
            h = F.layer_norm(h, (self.out_dim,)) * self.norm_weight + self.norm_bias
        elif self.norm == "batch":
            n_batch = h.shape[1]
            flat = h.transpose(0, 1).reshape(n_batch, -1)  # [B, E * out]
            h = self.batch_norm(flat).reshape(n_batch, self.n_expert, self.out_dim).transpose(0, 1)
        if self.prelu_weight is not None:
            h = torch.where(h >= 0, h, h * self.prelu_weight)
        else:
            h = self.activation(h)
        return self.dropout(h) if self.dropout is not None else h  # [E, B, out]


class ExpertGroup(nn.Module):
    """``n_expert`` MLPs built from ``expert_params``; ``forward`` returns ``[B, n_expert, dims[-1]]``.

    The input is either ``[B, in]`` (every expert sees the same vector, as in MMOE and PLE's first
    level) or ``[B, n_expert, in]`` (each expert its own input, as in PLE's upper levels).
    """

    def __init__(self, n_expert: int, input_dim: int, expert_params: Optional[Mapping[str, Any]],
                 argument: str = "expert_params") -> None:
        super().__init__()
        if isinstance(n_expert, bool) or not isinstance(n_expert, int) or n_expert <= 0:
            raise ValueError(f"n_expert must be a positive int, got {n_expert!r}")
        cfg = check_mlp_params(expert_params, argument)
        widths = [input_dim] + cfg["dims"]
        self.layers = nn.ModuleList(_ExpertLayer(n_expert, a, b, cfg) for a, b in zip(widths[:-1], widths[1:]))
        self.n_expert = n_expert
        self.output_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        first = self.layers[0]
        if x.dim() == 2:
            h = first.project_shared(x)  # [E, B, d1]
        else:
            h = first.project(x.transpose(0, 1))  # [E, B, d1]
        h = first.finish(h)
        for layer in self.layers[1:]:
            h = layer.finish(layer.project(h))  # [E, B, d_k]
        return h.transpose(0, 1)  # [B, E, d_last]
