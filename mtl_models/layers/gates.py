"""Softmax gates over a group of experts, each returning its gated mixture (MMOE's and PLE's gates).

A gate's input may be a ``[B, in]`` tensor or the embedding lookup; its mixture is a running multiply-add over
the experts' own ``[B, d]`` blocks (``ExpertGroup``'s outputs), so neither a ``[B, K, d]`` stack nor a batched
matrix-vector product is built.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .embedding import linear

__all__ = ["Gate", "TaskGates", "mix_experts"]


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
    """``sum_k gates[:, k] * experts[k]``: gates ``[B, K]``, K expert outputs ``[B, d]`` -> ``[B, d]``."""
    return _Mix.apply(gates, *experts)


class Gate(nn.Linear):
    """``n_gate`` softmax gates over the same ``n_expert`` experts, all computed from one input by one Linear
    (MMOE's task gates; PLE's shared gate with ``n_gate=1``). No norm inside, as in the papers."""

    def __init__(self, input_dim: int, n_expert: int, n_gate: int = 1) -> None:
        super().__init__(input_dim, n_gate * n_expert)
        self.n_gate, self.n_expert = n_gate, n_expert

    def forward(self, x: Tensor, experts: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """x ``[B, in]`` (or the lookup), experts E x ``[B, d]`` -> (n_gate mixtures ``[B, d]``, weights
        ``[B, n_gate, E]``)."""
        weights = linear(x, self.weight, self.bias).view(-1, self.n_gate, self.n_expert).softmax(dim=-1)
        return [mix_experts(weights[:, g], experts) for g in range(self.n_gate)], weights


class TaskGates(nn.Module):
    """One softmax gate per task, each over its own choice of experts (``expert_ids[t]``, all of one length K)
    and reading its own input (PLE's task gates: a task's specific experts and the shared ones).

    Given the same input object for every gate (PLE's first level reads the embedding) the gates run as one
    Linear; given different inputs, one product each. Weights are stored stacked, ``[T, in, K]``, initialised
    like ``nn.Linear``."""

    def __init__(self, input_dim: int, expert_ids: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.expert_ids = [list(ids) for ids in expert_ids]
        n_gate, k = len(self.expert_ids), len(self.expert_ids[0])
        if any(len(ids) != k for ids in self.expert_ids):
            raise ValueError(f"TaskGates: every gate must choose among the same number of experts, got {expert_ids}")
        bound = input_dim ** -0.5  # nn.Linear's default init, per gate
        self.weight = nn.Parameter(torch.empty(n_gate, input_dim, k).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_gate, k).uniform_(-bound, bound))

    def forward(self, inputs: Sequence[Tensor], experts: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """inputs: one ``[B, in]`` per gate; experts: E x ``[B, d]`` -> (T mixtures ``[B, d]``, weights ``[B, T, K]``)."""
        weights = self._logits(inputs).softmax(dim=-1)  # [B, T, K]
        mixtures = [mix_experts(weights[:, t], [experts[i] for i in ids]) for t, ids in enumerate(self.expert_ids)]
        return mixtures, weights

    def _logits(self, inputs: Sequence[Tensor]) -> Tensor:
        n_gate, d_in, k = self.weight.shape
        if all(x is inputs[0] for x in inputs):  # one shared input: every gate in one Linear
            w = self.weight.transpose(1, 2).reshape(n_gate * k, d_in)  # [T*K, in]
            return linear(inputs[0], w, self.bias.reshape(-1)).view(-1, n_gate, k)  # [B, T, K]
        gate_w, gate_b = self.weight.unbind(0), self.bias.unbind(0)  # one backward node each, no zero-filled grads
        return torch.stack([torch.addmm(b, h, w) for h, w, b in zip(inputs, gate_w, gate_b)], dim=1)  # [B, T, K]
