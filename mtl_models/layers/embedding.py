"""One fused embedding table per embedding width, looked up once per batch through per-feature offsets.

``FeatureEmbedding.lookup`` returns an ``EmbeddedBatch``: the looked-up rows before they are concatenated. A
Linear layer that reads the embedding (an MLP's first layer, MMOE's experts and gates) asks it for
``linear(weight, bias)``. When a table has at most a quarter as many rows as the batch (small-vocabulary
data such as binned census columns) that product is computed as ``embedding_bag(ids, table_rows @ weight_slice)``: exact
in real arithmetic, and the ``[B, n*d] x [n*d, H]`` GEMM with its two backward GEMMs shrinks to one over the
table's rows plus a gather-sum.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import DenseFeature, Feature, SparseFeature, validate_features

__all__ = ["FeatureEmbedding", "EmbeddedBatch", "linear", "grouped_linear"]

# The table-product path needs table rows <= batch / ROWS_PER_BATCH and an embedding at least MIN_PRODUCT_WIDTH
# wide (narrower, the direct GEMM is already cheap next to the gather-sum). Measured on one core, Adult with
# 159 table rows of width 16, training step product path / plain GEMM: SharedBottom 0.78x at batch 128, 0.87x
# at 256, 1.09x at 512, 1.27x at 1024, 1.72x at 4096; MMOE 0.76x, 0.90x, 0.99x, 1.26x, 1.17x: break-even
# near rows = batch / 3.
ROWS_PER_BATCH = 4
MIN_PRODUCT_WIDTH = 8


class _RowSum(torch.autograd.Function):
    """``out[b] = sum_f rows[ids[b, f]]`` (ids: ``[B, n]``, rows: ``[V, H]``): ``embedding_bag``'s sum forward with a
    backward of one ``index_add_`` per feature column, which skips the sort ``embedding_bag``'s own backward does
    (measured 2.2 ms vs 0.7 ms at B 1024, n 13, H 128 on one thread)."""

    @staticmethod
    def forward(ctx, ids: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.n_rows = rows.shape[0]
        return F.embedding_bag(ids, rows, mode="sum")  # [B, H]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        (ids,) = ctx.saved_tensors
        grad = grad.contiguous()  # [B, H]
        rows_grad = grad.new_zeros(ctx.n_rows, grad.shape[1])  # [V, H]
        for column in ids.t():  # [B] ids of one feature
            rows_grad.index_add_(0, column, grad)
        return None, rows_grad


class _FusedTable(nn.Module):
    """All sparse features of one width in one ``nn.Embedding``; feature i's ids live at ``offsets[i] + id``."""

    def __init__(self, features: Sequence[SparseFeature], embed_dim: int, init_std: float) -> None:
        super().__init__()
        self.names = [f.name for f in features]
        self.vocab_sizes = [f.vocab_size for f in features]
        self.embed_dim = embed_dim
        offsets = torch.tensor([0] + self.vocab_sizes[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)  # [n_feature]
        # which feature each table row belongs to, for the block-diagonal product below
        row_feature = torch.repeat_interleave(torch.arange(len(features)), torch.tensor(self.vocab_sizes))
        self.register_buffer("row_feature", row_feature, persistent=False)  # [V]
        self.table = nn.Embedding(sum(self.vocab_sizes), embed_dim)
        nn.init.normal_(self.table.weight, std=init_std)

    @property
    def n_rows(self) -> int:
        return self.table.num_embeddings

    @property
    def width(self) -> int:
        return len(self.names) * self.embed_dim

    def forward(self, ids: Tensor) -> Tensor:
        # ids: [B, n_feature] int64, already offset
        return self.table(ids).flatten(1)  # [B, n_feature * D]

    def spread(self) -> Tensor:
        """The table as a block matrix ``[V, n*D]``: row r's vector in its own feature's columns, zeros elsewhere,
        so that ``spread @ W`` multiplies every row by its feature's slice of ``W`` in one GEMM."""
        n, d = len(self.names), self.embed_dim
        column_feature = torch.arange(n, device=self.row_feature.device).repeat_interleave(d)  # [n*D]
        block = self.row_feature.unsqueeze(1) == column_feature.unsqueeze(0)  # [V, n*D]
        return self.table.weight.repeat(1, n) * block  # [V, n*D]

    def linear(self, ids: Tensor, weight: Tensor, spread: Tensor) -> Tensor:
        """``self(ids) @ weight.T`` as a sum of rows of ``table x weight``. ids: [B, n] offset; weight: [H, n*D];
        spread: ``self.spread()``."""
        products = spread @ weight.t()  # [V, H]
        return _RowSum.apply(ids, products)  # [B, H]

    def grouped_linear(self, ids: Tensor, weight: Tensor, spread: Tensor) -> Tensor:
        """``self(ids) @ weight[g]`` for every group g, group-major. ids: [B, n]; weight: [G, n*D, H] -> [G, B, H]."""
        groups, n_rows = weight.shape[0], self.n_rows
        products = torch.matmul(spread, weight)  # [G, V, H]
        shifted = ids.unsqueeze(0) + (torch.arange(groups, device=ids.device) * n_rows).view(-1, 1, 1)  # [G, B, n]
        out = _RowSum.apply(shifted.flatten(0, 1), products.flatten(0, 1))  # [G * B, H]
        return out.view(groups, ids.shape[0], -1)  # [G, B, H]


class EmbeddedBatch:
    """A batch's embedding before concatenation. ``tensor()`` is ``FeatureEmbedding.forward``'s ``[B, input_dim]``;
    ``linear(weight, bias)`` equals ``F.linear(tensor(), weight, bias)`` and takes the table-product path where
    that is cheaper (training mode only, so evaluation, export and serving run the plain graph)."""

    def __init__(self, owner: "FeatureEmbedding", ids: list[Tensor], dense: Optional[Tensor]) -> None:
        self.owner, self.ids, self.dense = owner, ids, dense  # ids: per table [B, n] offset; dense: [B, n_dense]
        self._tensor: Optional[Tensor] = None
        self._spreads: dict[int, Tensor] = {}  # per table: its block matrix, built once for every Linear that reads it

    @property
    def batch_size(self) -> int:
        return (self.ids[0] if self.ids else self.dense).shape[0]

    def tensor(self) -> Tensor:
        if self._tensor is None:
            parts = [table(ids) for table, ids in zip(self.owner.tables, self.ids)]  # [B, n * D] each
            if self.dense is not None:
                parts.append(self.dense)
            self._tensor = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [B, input_dim]
        return self._tensor

    def _use_products(self, table: _FusedTable) -> bool:
        return (self.owner.training and table.embed_dim >= MIN_PRODUCT_WIDTH
                and table.n_rows * ROWS_PER_BATCH <= self.batch_size)

    def _spread(self, i: int, table: _FusedTable) -> Tensor:
        if i not in self._spreads:
            self._spreads[i] = table.spread()  # [V, n*D]
        return self._spreads[i]

    def _by_parts(self, weight: Tensor, grouped: bool) -> Optional[Tensor]:
        """The product without bias, summed over the tables and the dense columns, each part against its own
        columns of ``weight`` (dim 1 in both layouts); None when no table takes the table-product path."""
        tables = self.owner.tables
        if not any(self._use_products(t) for t in tables):
            return None
        plain = _grouped_dense if grouped else (lambda x, w: x @ w.t())  # [G, B, H] | [B, H]
        out: Optional[Tensor] = None
        start = 0
        for i, (table, ids) in enumerate(zip(tables, self.ids)):
            w = weight[:, start:start + table.width]  # [G, n * D, H] | [H, n * D]
            if self._use_products(table):
                spread = self._spread(i, table)
                part = table.grouped_linear(ids, w, spread) if grouped else table.linear(ids, w, spread)
            else:
                part = plain(table(ids), w)
            out = part if out is None else out + part
            start += table.width
        if self.dense is not None:
            out = out + plain(self.dense, weight[:, start:])
        return out

    def linear(self, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """weight: ``[H, input_dim]`` (``nn.Linear`` layout) -> ``[B, H]``."""
        out = self._by_parts(weight, grouped=False)
        if out is None:
            return F.linear(self.tensor(), weight, bias)
        return out + bias if bias is not None else out

    def grouped_linear(self, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """weight: ``[G, input_dim, H]``, bias ``[G, 1, H]`` -> ``[G, B, H]``: G Linears on the same input, group-major."""
        out = self._by_parts(weight, grouped=True)
        if out is None:
            return _grouped_dense(self.tensor(), weight, bias)
        return out + bias if bias is not None else out


def linear(x: "Tensor | EmbeddedBatch", weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear`` that also accepts the embedding lookup (then through ``EmbeddedBatch.linear``)."""
    return x.linear(weight, bias) if isinstance(x, EmbeddedBatch) else F.linear(x, weight, bias)


def _grouped_dense(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    # x: [B, in]; weight: [G, in, H] -> [G, B, H] contiguous. A batched GEMM over x broadcast to every group
    # (a stride-0 view, no copy) writes group-major directly; one GEMM over [in, G*H] would need a transpose after.
    shared = x.unsqueeze(0).expand(weight.shape[0], -1, -1)  # [G, B, in]
    return torch.baddbmm(bias, shared, weight) if bias is not None else torch.bmm(shared, weight)


def grouped_linear(x: "Tensor | EmbeddedBatch", weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """G Linears over one shared input (``[B, in]`` or the lookup): weight ``[G, in, H]`` -> ``[G, B, H]``."""
    return x.grouped_linear(weight, bias) if isinstance(x, EmbeddedBatch) else _grouped_dense(x, weight, bias)


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

    def lookup(self, x: Mapping[str, Tensor]) -> EmbeddedBatch:
        """The batch's ids per table and its dense columns, for layers that read the embedding through ``linear``."""
        ids = [torch.stack([self._require(x, n).reshape(-1).long() for n in table.names], dim=1) + table.offsets
               for table in self.tables]  # per table [B, n]
        dense: list[Tensor] = []
        if self.raw_dense:
            dense.append(self._dense(x, self.raw_dense))  # [B, n_raw]
        for names, w, b in zip(self.projected_names, self.proj_weight, self.proj_bias):
            values = self._dense(x, names).unsqueeze(-1)  # [B, n, 1]
            dense.append((values * w + b).flatten(1))  # [B, n * D]
        dense_part = (torch.cat(dense, dim=1) if len(dense) > 1 else dense[0]) if dense else None
        return EmbeddedBatch(self, ids, dense_part)

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self.lookup(x).tensor()  # [B, output_dim]
