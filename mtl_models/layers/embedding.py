"""One fused embedding table per embedding width, looked up once per batch through per-feature offsets."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..features import DenseFeature, Feature, SparseFeature, validate_features

__all__ = ["FeatureEmbedding"]


class _FusedTable(nn.Module):
    """All sparse features of one width in one ``nn.Embedding``; feature i's ids live at ``offsets[i] + id``."""

    def __init__(self, features: Sequence[SparseFeature], embed_dim: int, init_std: float) -> None:
        super().__init__()
        self.names = [f.name for f in features]
        self.vocab_sizes = [f.vocab_size for f in features]
        offsets = torch.tensor([0] + self.vocab_sizes[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)  # [n_feature]
        self.table = nn.Embedding(sum(self.vocab_sizes), embed_dim)
        nn.init.normal_(self.table.weight, std=init_std)

    def forward(self, ids: Tensor) -> Tensor:
        # ids: [B, n_feature] int64
        emb = self.table(ids + self.offsets)  # [B, n_feature, D]
        return emb.flatten(1)  # [B, n_feature * D]


class FeatureEmbedding(nn.Module):
    """Turns the input dict into one ``[B, output_dim]`` float tensor.

    Sparse features are grouped by ``embed_dim``: with one common width (the usual case) all of them go
    through a single table and a single lookup. Dense features with ``embed_dim == 1`` pass through;
    wider ones become ``value * w + b`` with a learned ``w, b`` of that width.
    """

    def __init__(self, features: Sequence[Feature], init_std: float = 0.01) -> None:
        super().__init__()
        self.features = validate_features(features)
        self.feature_names = [f.name for f in self.features]

        by_width: "OrderedDict[int, list[SparseFeature]]" = OrderedDict()
        for f in self.features:
            if isinstance(f, SparseFeature):
                by_width.setdefault(f.embed_dim, []).append(f)
        self.tables = nn.ModuleList(_FusedTable(fs, dim, init_std) for dim, fs in by_width.items())

        self.raw_dense = [f.name for f in self.features if isinstance(f, DenseFeature) and f.embed_dim == 1]
        projected: "OrderedDict[int, list[str]]" = OrderedDict()
        for f in self.features:
            if isinstance(f, DenseFeature) and f.embed_dim > 1:
                projected.setdefault(f.embed_dim, []).append(f.name)
        self.projected_names = list(projected.values())
        self.proj_weight = nn.ParameterList(nn.Parameter(torch.randn(len(n), d) * init_std) for d, n in projected.items())
        self.proj_bias = nn.ParameterList(nn.Parameter(torch.zeros(len(n), d)) for d, n in projected.items())

        self.output_dim = sum(f.embed_dim for f in self.features)

    def _require(self, x: Mapping[str, Tensor], name: str) -> Tensor:
        if name not in x:
            raise ValueError(f"input x is missing feature {name!r} (expected: {self.feature_names})")
        return x[name]

    def _dense(self, x: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
        cols = [self._require(x, n).reshape(-1, 1).to(torch.float32) for n in names]
        return torch.cat(cols, dim=1)  # [B, n_dense]

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        parts: list[Tensor] = []
        for table in self.tables:
            ids = torch.stack([self._require(x, n).reshape(-1).long() for n in table.names], dim=1)  # [B, n]
            parts.append(table(ids))  # [B, n * D]
        if self.raw_dense:
            parts.append(self._dense(x, self.raw_dense))  # [B, n_raw]
        for names, w, b in zip(self.projected_names, self.proj_weight, self.proj_bias):
            values = self._dense(x, names).unsqueeze(-1)  # [B, n, 1]
            parts.append((values * w + b).flatten(1))  # [B, n * D]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [B, output_dim]
