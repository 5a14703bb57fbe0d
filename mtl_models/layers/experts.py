"""A group of same-shaped expert MLPs: parameters stored stacked, the shared first layer computed for all
experts at once, the layers above it expert by expert.

Mathematically identical to ``E`` separate ``MLP``s (each expert has its own weights, norms and PReLU
slopes). The first layer, when every expert reads the same input, is one batched product (or, on the
embedding lookup, one gather over ``table x weight``) that writes expert-major ``[E, B, d]``. Above it
each expert's ``[B, d]`` chain (norm, activation, next Linear) runs on its own block while that block is
still in the core's cache: measured on a 2-core AVX2 machine, fused ``[B, E*d]`` elementwise passes
spilled the cache and paid transpose copies, and were slower than this per-expert order.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embedding import EmbeddedBatch, grouped_linear, unstack
from .mlp import check_batch_rows, check_mlp_params, make_activation

__all__ = ["ExpertGroup", "mix_experts"]


class _Mix(torch.autograd.Function):
    """``sum_k gates[:, k] * experts[k]`` with a backward of one multiply per expert and one multiply-sum per gate
    column (autograd's ``addcmul`` backward also scales each expert by its ``value`` of 1: a wasted pass)."""

    @staticmethod
    def forward(ctx, gates: Tensor, *experts: Tensor) -> Tensor:
        # gates: [B, K]; experts: K x [B, d]
        out = experts[0] * gates[:, :1]  # [B, d], accumulated in place
        for k in range(1, len(experts)):
            out.addcmul_(experts[k], gates[:, k:k + 1])
        ctx.save_for_backward(gates, *experts)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        gates, *experts = ctx.saved_tensors
        grad_gates = None
        if ctx.needs_input_grad[0]:
            grad_gates = torch.stack([(grad * e).sum(1) for e in experts], dim=1)  # [B, K]
        grad_experts = [grad * gates[:, k:k + 1] if ctx.needs_input_grad[k + 1] else None
                        for k in range(len(experts))]  # K x [B, d]
        return (grad_gates, *grad_experts)


def mix_experts(gates: Tensor, experts: Sequence[Tensor]) -> Tensor:
    """``sum_k gates[:, k] * experts[k]``: gates ``[B, K]``, K expert outputs ``[B, d]`` -> ``[B, d]``.

    A running multiply-add over the experts' own blocks (views from ``unstack`` of the expert-major output),
    so neither a ``[B, K, d]`` gather nor a batched matrix-vector product is built.
    """
    return _Mix.apply(gates, *experts)


class ExpertViews:
    """One forward's per-expert views of an expert layer's stacked parameters, filled by ``per_expert`` (a plain
    class rather than ``types.SimpleNamespace``, which ``torch.compile`` cannot trace)."""


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
            # one module holds every expert's statistics (expert e: channels e*out .. (e+1)*out - 1)
            self.batch_norm = nn.BatchNorm1d(n_expert * out_dim)
        self.prelu_weight = (nn.Parameter(torch.full((n_expert, 1, 1), 0.25))
                             if str(cfg["activation"]).lower() == "prelu" else None)
        self.activation = None if self.prelu_weight is not None else make_activation(cfg["activation"])
        self.relu = str(cfg["activation"]).lower() == "relu"  # applied in place where the input is a fresh tensor
        self.dropout = nn.Dropout(cfg["dropout"]) if cfg["dropout"] > 0 else None
        self.n_expert, self.out_dim = n_expert, out_dim

    def project_shared(self, x: Union[Tensor, EmbeddedBatch]) -> list[Tensor]:
        # x: [B, in] or the embedding lookup, read by every expert -> E x [B, out]
        return unstack(grouped_linear(x, self.weight, self.bias))  # from one [E, B, out] product

    def per_expert(self) -> ExpertViews:
        """This forward's per-expert views of the stacked parameters (``unbind``: one backward node per tensor,
        where ``weight[e]`` would zero-fill a full-size gradient for each expert)."""
        n, out = self.n_expert, self.out_dim
        v = ExpertViews()
        v.weight, v.bias = self.weight.unbind(0), self.bias.view(n, out).unbind(0)
        if self.norm == "layer":
            v.norm_weight = self.norm_weight.view(n, out).unbind(0)
            v.norm_bias = self.norm_bias.view(n, out).unbind(0)
        elif self.norm == "batch":
            bn = self.batch_norm

            def split(t: Optional[Tensor]) -> Sequence[Optional[Tensor]]:
                return t.view(n, out).unbind(0) if t is not None else [None] * n

            v.bn_weight, v.bn_bias = split(bn.weight), split(bn.bias)
            v.running_mean, v.running_var = split(bn.running_mean), split(bn.running_var)  # updated in place
            v.batch_stats = bn.training or bn.running_mean is None
            v.momentum = bn.momentum if bn.momentum is not None else 0.0
            if bn.training and bn.track_running_stats:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm1d does
                    v.momentum = 1.0 / float(bn.num_batches_tracked)
        if self.prelu_weight is not None:
            v.prelu = self.prelu_weight.view(n, 1).unbind(0)
        return v

    def project(self, e: int, h: Tensor, v: ExpertViews) -> Tensor:
        # h: [B, in] expert e's input -> [B, out]
        return torch.addmm(v.bias[e], h, v.weight[e])

    def finish(self, e: int, h: Tensor, v: ExpertViews, owns_input: bool = True) -> Tensor:
        # h: [B, out] expert e's Linear output -> norm, activation, dropout. owns_input=False: h is a view of
        # the shared first layer's [E, B, out] product (unbind), which must not be written in place
        if self.norm == "layer":
            h = F.layer_norm(h, (self.out_dim,), v.norm_weight[e], v.norm_bias[e])
        elif self.norm == "batch":
            h = F.batch_norm(h, v.running_mean[e], v.running_var[e], v.bn_weight[e], v.bn_bias[e],
                             v.batch_stats, v.momentum, self.batch_norm.eps)
        if self.prelu_weight is not None:
            h = torch.where(h >= 0, h, h * v.prelu[e])
        elif self.relu and (self.norm is not None or owns_input):
            h = h.relu_()  # saves a fresh [B, out] buffer; the norm and Linear backward never read their output
        else:
            h = self.activation(h)
        return self.dropout(h) if self.dropout is not None else h


class ExpertGroup(nn.Module):
    """``n_expert`` MLPs built from ``expert_params``; ``forward`` returns one ``[B, dims[-1]]`` tensor per expert.

    The input is either ``[B, in]`` or the embedding lookup (every expert sees the same vector, as in MMOE
    and PLE's first level) or a sequence of ``n_expert`` tensors ``[B, in]`` (each expert its own input, as in
    PLE's upper levels).
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
        self.argument = argument
        self.has_batch_norm = cfg["norm"] == "batch"

    def forward(self, x: Union[Tensor, EmbeddedBatch, Sequence[Tensor]]) -> list[Tensor]:
        if self.has_batch_norm and self.training:
            rows = x.batch_size if isinstance(x, EmbeddedBatch) else len(x if isinstance(x, Tensor) else x[0])
            check_batch_rows(rows, self.argument)
        first = self.layers[0]
        views = [layer.per_expert() for layer in self.layers]
        shared = isinstance(x, (Tensor, EmbeddedBatch))
        if shared:
            projected = first.project_shared(x)  # E x [B, d1], views of one [E, B, d1] product
        else:
            if len(x) != self.n_expert:
                raise ValueError(f"ExpertGroup of {self.n_expert} experts got {len(x)} inputs")
            projected = [first.project(e, h, views[0]) for e, h in enumerate(x)]  # E x [B, d1]
        outputs = []
        for e, h in enumerate(projected):  # expert by expert, while its block is in cache
            h = first.finish(e, h, views[0], owns_input=not shared)
            for layer, v in zip(self.layers[1:], views[1:]):
                h = layer.finish(e, layer.project(e, h, v), v)  # [B, d_k]
            outputs.append(h)
        return outputs  # E x [B, d_last]
