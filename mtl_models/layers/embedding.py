"""One fused embedding table per embedding width, looked up once per batch through per-feature offsets.

``FeatureEmbedding.lookup`` returns an ``EmbeddedBatch``: the looked-up rows before they are concatenated. The
blocks (``MLP``, ``ExpertGroup``, the gates) take it as their input like a ``[B, input_dim]`` tensor; their first
Linear asks it for ``linear(weight, bias)``, which takes the table-product path (``table_product.py``) when every
feature of a table has few ids next to the batch (small-vocabulary data such as binned census columns), and the
plain GEMM otherwise. Model code never needs to know which.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import DenseFeature, Feature, SparseFeature, validate_features
from .numeric import NumericEmbeddings
from .table_product import PaddedRows, TableProduct, eager, grouped_dense, unstack

__all__ = ["FeatureEmbedding", "EmbeddedBatch", "linear", "grouped_linear", "unstack", "PaddedRows"]

# The table-product path needs every feature of the table to have at most batch / ROWS_PER_BATCH ids and an
# embedding at least MIN_PRODUCT_WIDTH wide (narrower, the direct GEMM is already cheap next to the gather-sum).
# Both were set from measured break-evens (docs/performance.md).
ROWS_PER_BATCH = 8
MIN_PRODUCT_WIDTH = 8


class _FusedTable(nn.Module):
    """All sparse features of one width in one ``nn.Embedding``; feature i's ids live at ``offsets[i] + id``."""

    def __init__(self, features: Sequence[SparseFeature], embed_dim: int, init_std: float) -> None:
        super().__init__()
        self.names = [f.name for f in features]
        self.vocab_sizes = [f.vocab_size for f in features]
        self.embed_dim = embed_dim
        self._offset_list = np.cumsum([0] + self.vocab_sizes[:-1]).tolist()  # plain ints: no tensor read per step
        offsets = torch.tensor(self._offset_list, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)  # [n_feature]
        # the product path lays the table out padded, feature-major [n_feature, max_vocab, D]: feature i's
        # id j at row i * max_vocab + j; padding slots repeat the feature's first row and are never looked up
        self.max_vocab = max(self.vocab_sizes)
        to_padded = torch.arange(len(features)) * self.max_vocab - offsets
        self.register_buffer("to_padded", to_padded, persistent=False)  # [n_feature]: offset id -> padded row
        self._pad_rows: Optional[Tensor] = None  # built on first use: the path only runs for small vocabularies
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

    def padded(self) -> Tensor:
        """The table laid out ``[n_feature, max_vocab, D]``, so that one batched GEMM multiplies every feature's
        rows by that feature's slice of a weight."""
        weight = self.table.weight
        if not eager():  # built inside the graph: Dynamo never reads, guards on or fills the cache
            pad_rows = self._padded_rows(weight.device)
        else:  # cached in eager
            if self._pad_rows is None or self._pad_rows.device != weight.device:
                self._pad_rows = self._padded_rows(weight.device)
            pad_rows = self._pad_rows
        return weight[pad_rows].view(len(self.names), self.max_vocab, self.embed_dim)

    def _padded_rows(self, device: torch.device) -> Tensor:
        local = torch.arange(self.max_vocab, device=device)
        rows = [o + torch.where(local < v, local, 0) for o, v in zip(self._offset_list, self.vocab_sizes)]
        return torch.stack(rows).flatten()  # [n_feature * max_vocab] rows of the table

    def products(self, rows_of: PaddedRows, weight: Tensor, bias: Optional[Tensor], padded: Tensor) -> Tensor:
        """``self(ids) @ weight[g] (+ bias[g])`` for every group g as sums of rows of ``table x weight``.

        rows_of: the batch's padded rows (``ids + to_padded``); weight: ``[G, n*D, H]``; bias: ``[G, 1, H]`` or
        None; padded: ``self.padded()``. Returns ``[G, B, H]``."""
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (padded, weight, bias)):
            samples, offsets = rows_of.samples_by_row()  # the backward's bags, built once per lookup
        else:
            samples = offsets = rows_of.ids.new_empty(0)
        return TableProduct.apply(rows_of.ids, samples, offsets, padded, weight, bias)


class EmbeddedBatch:
    """A batch's embedding before concatenation. ``tensor()`` is ``FeatureEmbedding.forward``'s ``[B, input_dim]``;
    ``linear(weight, bias)`` equals ``F.linear(tensor(), weight, bias)`` and takes the table-product path where
    that is cheaper (training mode only, so evaluation, export and serving run the plain graph)."""

    def __init__(self, owner: "FeatureEmbedding", ids: list[Tensor], dense: Optional[Tensor]) -> None:
        self.owner, self.ids, self.dense = owner, ids, dense  # ids: per table [B, n] offset; dense: [B, n_dense]
        self._tensor: Optional[Tensor] = None
        self._padded: dict[int, tuple[Tensor, PaddedRows]] = {}  # per table: padded table and rows, once per forward

    @property
    def batch_size(self) -> int:
        return (self.ids[0] if self.ids else self.dense).shape[0]

    def __len__(self) -> int:  # the batch's rows, as ``len`` of a [B, input_dim] tensor
        return self.batch_size

    def tensor(self) -> Tensor:
        if self._tensor is None:
            parts = [table(ids) for table, ids in zip(self.owner.tables, self.ids)]  # [B, n * D] each
            if self.dense is not None:
                parts.append(self.dense)
            self._tensor = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # [B, input_dim]
        return self._tensor

    def uses_products(self) -> bool:
        """Whether a Linear reading this lookup takes the table-product path for at least one table."""
        return any(self._use_products(t) for t in self.owner.tables)

    def _use_products(self, table: _FusedTable) -> bool:
        return (self.owner.training and table.embed_dim >= MIN_PRODUCT_WIDTH
                and table.max_vocab * ROWS_PER_BATCH <= self.batch_size)

    def _padded_table(self, i: int, table: _FusedTable) -> tuple[Tensor, PaddedRows]:
        if i not in self._padded:  # [n, V_max, D], rows [B, n]
            rows = PaddedRows(self.ids[i] + table.to_padded, len(table.names) * table.max_vocab)
            self._padded[i] = (table.padded(), rows)
        return self._padded[i]

    def _by_parts(self, weight: Tensor, bias: Optional[Tensor]) -> Optional[Tensor]:
        """``[G, B, H]`` product of the lookup with ``weight`` (``[G, input_dim, H]``) plus ``bias`` (``[G, 1, H]``),
        summed over the tables and the dense columns, each part against its own rows of ``weight``; the bias
        rides in the first table-product part. None when no table takes the table-product path."""
        tables = self.owner.tables
        if not self.uses_products():
            return None
        out: Optional[Tensor] = None
        start = 0
        for i, (table, ids) in enumerate(zip(tables, self.ids)):
            w = weight[:, start:start + table.width]  # [G, n * D, H]
            if self._use_products(table):
                padded, rows_of = self._padded_table(i, table)
                part = table.products(rows_of, w, bias, padded)
                bias = None
            else:
                part = grouped_dense(table(ids), w)
            out = part if out is None else out + part
            start += table.width
        if self.dense is not None:
            out = out + grouped_dense(self.dense, weight[:, start:])
        return out + bias if bias is not None else out

    def linear(self, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """weight: ``[H, input_dim]`` (``nn.Linear`` layout) -> ``[B, H]``."""
        out = self._by_parts(weight.t().unsqueeze(0), bias.view(1, 1, -1) if bias is not None else None)
        if out is None:
            return F.linear(self.tensor(), weight, bias)
        return out.squeeze(0)  # [B, H]

    def grouped_linear(self, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """weight: ``[G, input_dim, H]``, bias ``[G, 1, H]`` -> ``[G, B, H]``: G Linears on the same input, group-major."""
        out = self._by_parts(weight, bias)
        if out is None:
            return grouped_dense(self.tensor(), weight, bias)
        return out


def linear(x: "Tensor | EmbeddedBatch", weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear`` that also accepts the embedding lookup (then through ``EmbeddedBatch.linear``): the one place a
    Linear's input type is asked."""
    return x.linear(weight, bias) if isinstance(x, EmbeddedBatch) else F.linear(x, weight, bias)


def grouped_linear(x: "Tensor | EmbeddedBatch", weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """G Linears over one shared input (``[B, in]`` or the lookup): weight ``[G, in, H]`` -> ``[G, B, H]``."""
    return x.grouped_linear(weight, bias) if isinstance(x, EmbeddedBatch) else grouped_dense(x, weight, bias)


class FeatureEmbedding(nn.Module):
    """Turns the input dict into one ``[B, output_dim]`` float tensor.

    Sparse features are grouped by ``embed_dim``: with one common width (the usual case) all of them go
    through a single table and a single lookup. Dense features with ``embed_dim == 1`` pass through;
    wider ones become ``value * w + b`` with a learned ``w, b`` of that width; those with an ``encoding`` go
    through ``NumericEmbeddings``. All dense parts sit after the tables, so the table-product path reads them
    as plain columns.
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

        plain = [f for f in self.features if isinstance(f, DenseFeature) and f.encoding is None]
        self.raw_dense = [f.name for f in plain if f.embed_dim == 1]
        projected: "OrderedDict[int, list[str]]" = OrderedDict()
        for f in plain:
            if f.embed_dim > 1:
                projected.setdefault(f.embed_dim, []).append(f.name)
        self.projected_names = list(projected.values())
        self.proj_weight = nn.ParameterList(nn.Parameter(torch.randn(len(n), d) * init_std) for d, n in projected.items())
        self.proj_bias = nn.ParameterList(nn.Parameter(torch.zeros(len(n), d)) for d, n in projected.items())
        encoded = [f for f in self.features if isinstance(f, DenseFeature) and f.encoding is not None]
        self.numeric = NumericEmbeddings(encoded, init_std) if encoded else None

        self.output_dim = sum(f.embed_dim for f in self.features)

    def shared_weights(self) -> list[nn.Parameter]:
        """The tables and dense projections: what every task's loss flows through when nothing else is shared."""
        return [table.table.weight for table in self.tables] + list(self.proj_weight)

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
        if self.numeric is not None:
            dense.append(self.numeric([self._dense(x, names) for names in self.numeric.names]))  # [B, sum n * D]
        dense_part = (torch.cat(dense, dim=1) if len(dense) > 1 else dense[0]) if dense else None
        return EmbeddedBatch(self, ids, dense_part)

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        return self.lookup(x).tensor()  # [B, output_dim]
