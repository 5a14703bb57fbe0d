"""The table-product path of a Linear that reads the embedding lookup (private to ``layers``).

``x @ W`` for ``x`` the concatenated embedding equals, per sample, a sum over its features of one row of
``table_f @ W_f`` (feature f's table times f's slice of ``W``). When every feature has few ids next to the batch,
those products cost less than the GEMM over the batch: one batched GEMM over each feature's rows (padded to the
table's largest vocabulary), then a gather-sum of one row per feature per sample; the backward is the transposed
gather-sum over the batch's samples grouped by row. Exact in real arithmetic; where it pays off, and by how much,
is in docs/performance.md.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PaddedRows", "TableProduct", "grouped_dense", "unstack", "eager"]


def eager() -> bool:
    """False while ``torch.compile`` traces: eager-only shortcuts (a NumPy call, a Python-side cache) must then
    step aside, as Dynamo can neither trace the one nor guard on the other without recompiling."""
    return not torch.compiler.is_compiling()


class PaddedRows:
    """A batch's rows of the padded table (``[B, n]``, feature f's ids in ``f*V .. (f+1)*V``) and, built by the
    first product that will need a backward and shared by every product on the same lookup, the samples grouped
    by row."""

    def __init__(self, ids: Tensor, n_rows: int) -> None:
        self.ids, self.n_rows = ids, n_rows
        self._by_row: Optional[tuple[Tensor, Tensor]] = None

    def samples_by_row(self) -> tuple[Tensor, Tensor]:
        """``(samples, offsets)``: the sample of every (sample, feature) pair sorted by the row it reads (``[B*n]``),
        and where each row's samples start (``[R]``): the bags of a gather-sum that is the lookup's transpose.
        Both shapes are fixed by ``ids``' shape and ``n_rows`` (no ``bincount``), so ``torch.compile`` traces it."""
        if self._by_row is None:
            flat = self.ids.reshape(-1)  # [B*n], sample b's ids at b*n .. b*n + n - 1
            counts = torch.zeros(self.n_rows, dtype=flat.dtype, device=flat.device)
            counts.index_add_(0, flat, torch.ones_like(flat))  # [R] samples per row
            order = self._stable_order(flat)
            self._by_row = (order.div(self.ids.shape[1], rounding_mode="floor"), counts.cumsum(0) - counts)
        return self._by_row

    def _stable_order(self, flat: Tensor) -> Tensor:
        """A stable argsort of the row ids: NumPy's radix sort of 16-bit ints where it applies (CPU, eager,
        at most 2**15 rows), as it is faster than ``torch.sort``'s; ``torch.sort`` elsewhere."""
        if flat.device.type == "cpu" and self.n_rows <= 1 << 15 and eager():
            return torch.from_numpy(np.argsort(flat.to(torch.int16).numpy(), kind="stable"))
        return torch.sort(flat, stable=True).indices


class TableProduct(torch.autograd.Function):
    """``out[g, b] = sum_f P[g, f, ids[b, f]]`` with ``P[g, f] = padded[f] @ W[g, f]`` (+ ``bias[g]`` on f = 0).

    ids: the batch's rows of the padded table (``[B, n]``); samples, offsets: ``PaddedRows.samples_by_row()``, the
    backward's bags; padded: ``[n, V, D]``; weight: ``[G, n*D, H]``; bias: ``[G, 1, H]`` or None -> ``[G, B, H]``.

    Forward: one batched GEMM for the products, one ``embedding_bag`` sum over the G-major rows. Backward: the
    ``[R, G*H]`` row gradient as a second ``embedding_bag`` over the batch's ``[B, G*H]`` gradient with the samples
    grouped by row, then one batched GEMM per input over each feature's ``[V, G*H]`` block. Rows are G*H wide
    because the gather's cost is per row. One function, so that autograd neither clones the products' gradient for
    the in-place bias (a ``CopySlices`` node) nor copies the transposed gradient to contiguous for the GEMMs."""

    @staticmethod
    def forward(ctx, ids: Tensor, samples: Tensor, offsets: Tensor, padded: Tensor, weight: Tensor,
                bias: Optional[Tensor]) -> Tensor:
        n, n_vocab, d = padded.shape
        groups, _, width = weight.shape
        products = torch.matmul(padded, weight.view(groups, n, d, width))  # [G, n, V, H]
        if bias is not None:  # every row of feature 0 carries the bias: each sample sums exactly one of them
            products[:, 0] += bias
        rows = n * n_vocab
        shifted = ids  # [B, n], or [G, B, n] with group g's rows at g * R of the flattened products
        if groups > 1:
            shifted = ids.unsqueeze(0) + torch.arange(0, groups * rows, rows, device=ids.device).view(-1, 1, 1)
        out = F.embedding_bag(shifted.reshape(-1, n), products.view(groups * rows, width), mode="sum")  # [G*B, H]
        ctx.save_for_backward(samples, offsets, padded, weight)
        ctx.has_bias = bias is not None
        return out.view(groups, -1, width)  # [G, B, H]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        samples, offsets, padded, weight = ctx.saved_tensors
        n, n_vocab, d = padded.shape
        groups, _, width = weight.shape
        # under bf16 autocast the forward's products, hence this gradient, are bf16 while the saved inputs stay
        # float32: the backward runs in the inputs' dtype (bmm does not mix dtypes; autocast is off in backward)
        grad = grad.to(weight.dtype)  # [G, B, H]; keeps unstack's batch-major strides
        # a view when the gradient came through unstack (batch-major), else a copy
        by_sample = grad.transpose(0, 1).reshape(grad.shape[1], groups * width).contiguous()  # [B, G*H]
        rows = F.embedding_bag(samples, by_sample, offsets, mode="sum")  # [R, G*H]: row r sums its samples' rows
        rows = rows.view(n, n_vocab, groups * width)  # [n, V, G*H]
        grad_padded = grad_weight = grad_bias = None
        if ctx.needs_input_grad[3]:
            w_t = weight.view(groups, n, d, width).permute(1, 0, 3, 2).reshape(n, groups * width, d)  # [n, G*H, D]
            grad_padded = torch.bmm(rows, w_t)  # [n, V, D]
        if ctx.needs_input_grad[4]:
            per_feature = torch.bmm(padded.transpose(1, 2), rows)  # [n, D, G*H]
            grad_weight = per_feature.view(n, d, groups, width).permute(2, 0, 1, 3).reshape(groups, n * d, width)
        if ctx.has_bias and ctx.needs_input_grad[5]:
            grad_bias = rows[0].sum(0).view(groups, 1, width)  # feature 0's rows: one per sample
        return None, None, None, grad_padded, grad_weight, grad_bias


def grouped_dense(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """G Linears on one input: x ``[B, in]``, weight ``[G, in, H]`` -> ``[G, B, H]`` contiguous. A batched GEMM over x
    broadcast to every group (a stride-0 view, no copy) writes group-major directly; one GEMM over ``[in, G*H]``
    would need a transpose after."""
    shared = x.unsqueeze(0).expand(weight.shape[0], -1, -1)  # [G, B, in]
    return torch.baddbmm(bias, shared, weight) if bias is not None else torch.bmm(shared, weight)


class _Unstack(torch.autograd.Function):
    """``[G, B, H]`` -> G views ``[B, H]`` (``unbind``), whose backward writes the G gradients batch-major into one
    ``[B, G, H]`` block and passes it on as a ``[G, B, H]``-shaped view: the table-product backward, which wants
    each sample's G*H gradient in one row, then reads it without the transpose copy that ``unbind``'s own
    backward (a group-major ``stack``) would need."""

    @staticmethod
    def forward(ctx, h: Tensor) -> tuple[Tensor, ...]:
        return h.unbind(0)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        return torch.stack(grads, dim=1).transpose(0, 1)  # [G, B, H] view of a [B, G, H] block


def unstack(h: Tensor) -> list[Tensor]:
    """The G outputs of a grouped product (``[G, B, H]``) as G views ``[B, H]``, gradients gathered batch-major.
    The views must not be written in place (autograd forbids it on a custom Function's view outputs)."""
    return list(_Unstack.apply(h))
