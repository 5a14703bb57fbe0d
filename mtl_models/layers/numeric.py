"""Embeddings of numeric features (``DenseFeature`` with an ``encoding``): one module per kind and width.

Piecewise-linear and periodic embeddings are the ``rtdl-num-embeddings`` package's (the paper's authors'), which
exports to ONNX through ``torch.onnx.export(dynamo=True)`` as the models do; quantile bins as ids are a lookup
written here (the package has no such module). Every module maps ``[B, n]`` values to ``[B, n * embed_dim]``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Sequence

import torch
from torch import Tensor, nn

from ..features import DenseFeature, Periodic, PiecewiseLinear, QuantileBins

__all__ = ["NumericEmbeddings", "QuantileBinEmbeddings"]


def _rtdl():
    try:
        import rtdl_num_embeddings
    except ImportError:  # pragma: no cover - a declared dependency; the message names the fix
        raise ImportError("piecewise-linear and periodic encodings need the package rtdl-num-embeddings "
                          "(pip install rtdl-num-embeddings)") from None
    return rtdl_num_embeddings


class QuantileBinEmbeddings(nn.Module):
    """Each value's bin (number of inner edges at or below it) looked up in one table holding every feature's bins.

    Comparisons and a sum rather than ``torch.bucketize``, so the ONNX graph needs only elementwise ops.
    ``gated``: each column's embedding is mixed with ``x w + b`` through a learned sigmoid gate (``QuantileBins``)."""

    def __init__(self, edges: Sequence[Sequence[float]], embed_dim: int, init_std: float = 0.01,
                 gated: bool = False) -> None:
        super().__init__()
        n = len(edges)
        self.gated = bool(gated)
        if self.gated:  # [n, D] each: the raw value's linear map and the gate's logits (0: an even mix)
            self.raw_weight = nn.Parameter(torch.randn(n, embed_dim) * init_std)
            self.raw_bias = nn.Parameter(torch.zeros(n, embed_dim))
            self.gate = nn.Parameter(torch.zeros(n, embed_dim))
        n_bins = [len(e) - 1 for e in edges]
        width = max(n_bins) - 1  # inner edges of the feature with the most bins
        inner = torch.full((len(edges), max(width, 1)), float("inf"))  # [n, K-1], padded with +inf (never reached)
        for i, e in enumerate(edges):
            inner[i, : len(e) - 2] = torch.tensor(list(e[1:-1]), dtype=torch.float32)
        self.register_buffer("inner", inner)
        offsets = torch.tensor([0] + n_bins[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets)  # [n]: feature i's bins start at this row
        self.table = nn.Embedding(sum(n_bins), embed_dim)
        nn.init.normal_(self.table.weight, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, n] float
        ids = (x.unsqueeze(-1) >= self.inner).to(torch.int64).sum(-1)  # [B, n] bin within the feature
        emb = self.table(ids + self.offsets)  # [B, n, D]
        if self.gated:
            g = torch.sigmoid(self.gate)
            emb = g * emb + (1.0 - g) * (x.unsqueeze(-1) * self.raw_weight + self.raw_bias)
        return emb.flatten(1)  # [B, n * D]


def _group_key(f: DenseFeature) -> Hashable:
    enc = f.encoding
    if isinstance(enc, Periodic):
        return ("periodic", f.embed_dim, enc.n_frequencies, float(enc.sigma))
    return (type(enc).__name__, f.embed_dim, bool(getattr(enc, "gated", False)))


class NumericEmbeddings(nn.Module):
    """All encoded dense features, grouped by kind and settings so that each group is one module call."""

    def __init__(self, features: Sequence[DenseFeature], init_std: float = 0.01) -> None:
        super().__init__()
        groups: "OrderedDict[Hashable, list[DenseFeature]]" = OrderedDict()
        for f in features:
            groups.setdefault(_group_key(f), []).append(f)
        self.names = [[f.name for f in fs] for fs in groups.values()]
        self.blocks = nn.ModuleList(self._block(fs, init_std) for fs in groups.values())
        self.output_dim = sum(f.embed_dim for f in features)

    @staticmethod
    def _block(fs: list[DenseFeature], init_std: float) -> nn.Module:
        enc, dim = fs[0].encoding, fs[0].embed_dim
        if isinstance(enc, QuantileBins):
            return QuantileBinEmbeddings([f.encoding.edges for f in fs], dim, init_std, gated=enc.gated)
        rtdl = _rtdl()
        if isinstance(enc, PiecewiseLinear):
            bins = [torch.tensor(f.encoding.edges, dtype=torch.float32) for f in fs]
            # version B: a linear embedding plus the piecewise-linear term, which starts at zero and is learnt
            return _Flat(rtdl.PiecewiseLinearEmbeddings(bins, dim, activation=True, version="B"))
        return _Flat(rtdl.PeriodicEmbeddings(len(fs), dim, n_frequencies=enc.n_frequencies,
                                             frequency_init_scale=float(enc.sigma), activation=True, lite=False))

    def forward(self, columns: Sequence[Tensor]) -> Tensor:
        """columns: one ``[B, n_g]`` float tensor per group (in ``self.names`` order) -> ``[B, output_dim]``."""
        parts = [block(x) for block, x in zip(self.blocks, columns)]  # [B, n_g * D_g] each
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class _Flat(nn.Module):
    """``[B, n, D]`` -> ``[B, n * D]`` around a package module."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).flatten(1)
