"""A group of same-shaped expert MLPs (MMOE's and PLE's experts): ``ExpertGroup``.

Mathematically E separate ``MLP``s (each expert has its own weights, norms and PReLU slopes). The Linears are
stored stacked, ``[E, in, out]``, so that a first layer every expert reads from the same input is one grouped
product (on the embedding lookup, the table-product path) written expert-major, ``[E, B, out]``. Above it each
expert's ``[B, out]`` chain (norm, activation, next Linear) runs on its own block while that block is still in
the core's cache, which measured faster than fused ``[B, E*out]`` passes (docs/performance.md).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .embedding import EmbeddedBatch, grouped_linear
from .mlp import check_batch_rows, check_mlp_params, make_activation
from .table_product import unstack

__all__ = ["ExpertGroup"]

Input = Union[Tensor, EmbeddedBatch]


def _norms(norm: Optional[str], n_expert: int, dim: int) -> Optional[nn.ModuleList]:
    """Each expert's own norm module (ordinary ``BatchNorm1d`` / ``LayerNorm``, running statistics included)."""
    if norm is None:
        return None
    make = nn.BatchNorm1d if norm == "batch" else nn.LayerNorm
    return nn.ModuleList(make(dim) for _ in range(n_expert))


class _ExpertLayer(nn.Module):
    """``E`` parallel ``Linear(in, out)``, each followed by its expert's norm, the activation and dropout."""

    def __init__(self, n_expert: int, in_dim: int, out_dim: int, cfg: dict) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per expert
        self.weight = nn.Parameter(torch.empty(n_expert, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_expert, 1, out_dim).uniform_(-bound, bound))
        self.norms = _norms(cfg["norm"], n_expert, out_dim)
        prelu = str(cfg["activation"]).lower() == "prelu"
        self.prelus = nn.ModuleList(nn.PReLU() for _ in range(n_expert)) if prelu else None
        self.activation = None if prelu else make_activation(cfg["activation"])
        self.relu = str(cfg["activation"]).lower() == "relu"  # applied in place where the input is a fresh tensor
        self.dropout = nn.Dropout(cfg["dropout"]) if cfg["dropout"] > 0 else None
        self.n_expert, self.out_dim = n_expert, out_dim

    def project_shared(self, x: Input) -> list[Tensor]:
        """x ``[B, in]`` or the lookup, read by every expert -> E views ``[B, out]`` of one ``[E, B, out]`` product."""
        return unstack(grouped_linear(x, self.weight, self.bias))

    def per_expert(self) -> tuple[Sequence[Tensor], Sequence[Tensor]]:
        """This forward's per-expert weights ``[in, out]`` and biases ``[out]`` (``unbind``: one backward node per
        tensor, where ``weight[e]`` would zero-fill a full-size gradient for each expert)."""
        return self.weight.unbind(0), self.bias.view(self.n_expert, self.out_dim).unbind(0)

    def finish(self, e: int, h: Tensor, owns_input: bool = True) -> Tensor:
        """h: ``[B, out]``, expert e's Linear output -> norm, activation, dropout. ``owns_input=False``: h is a view
        of the shared first layer's product (``unstack``), which must not be written in place."""
        if self.norms is not None:
            h = self.norms[e](h)
        if self.prelus is not None:
            h = self.prelus[e](h)
        elif self.relu and (self.norms is not None or owns_input):
            h = h.relu_()  # saves a fresh [B, out] buffer; the norm and Linear backward never read their output
        else:
            h = self.activation(h)
        return self.dropout(h) if self.dropout is not None else h


class ExpertGroup(nn.Module):
    """``n_expert`` MLPs built from ``expert_params``; ``forward`` returns one ``[B, dims[-1]]`` tensor per expert.

    The input is one ``[B, in]`` tensor or the embedding lookup, read by every expert (MMOE), or one input per
    expert (PLE, whose experts read their task's input). Experts given the same input object share one product.
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

    @property
    def last_linear_weight(self) -> nn.Parameter:
        """Every expert's last Linear, stacked ``[E, d_in, d]``: the weights GradNorm watches in MMOE and PLE."""
        return self.layers[-1].weight

    def forward(self, x: Union[Input, Sequence[Input]]) -> list[Tensor]:
        shared = _shared_input(x, self.n_expert)
        if self.has_batch_norm and self.training:
            check_batch_rows(len(shared if shared is not None else x[0]), self.argument)
        first = self.layers[0]
        if shared is not None:
            projected = first.project_shared(shared)  # E x [B, d1], views of one [E, B, d1] product
        else:
            weights, biases = first.per_expert()
            projected = [torch.addmm(b, h, w) for h, w, b in zip(x, weights, biases)]  # E x [B, d1]
        views = [layer.per_expert() for layer in self.layers[1:]]  # once per forward, shared by the experts
        return [self._expert_chain(e, h, views, owns_input=shared is None) for e, h in enumerate(projected)]

    def _expert_chain(self, e: int, h: Tensor, views: list, owns_input: bool) -> Tensor:
        """Expert e from its first Linear's output ``[B, d1]`` to ``[B, d_last]``, while its block is in cache."""
        first, *rest = self.layers
        h = first.finish(e, h, owns_input=owns_input)
        for layer, (weights, biases) in zip(rest, views):
            h = layer.finish(e, torch.addmm(biases[e], h, weights[e]))  # [B, d_k]
        return h


def _shared_input(x: Union[Input, Sequence[Input]], n_expert: int) -> Optional[Input]:
    """The one input every expert reads, or None when they read their own (a sequence of n_expert inputs)."""
    if isinstance(x, (Tensor, EmbeddedBatch)):
        return x
    if len(x) != n_expert:
        raise ValueError(f"ExpertGroup of {n_expert} experts got {len(x)} inputs")
    return x[0] if all(h is x[0] for h in x) else None
