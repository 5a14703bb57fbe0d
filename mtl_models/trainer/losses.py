"""Per-task training losses and the check that stops training at the first non-finite one."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TaskLosses", "NonFiniteCheck"]


class TaskLosses:
    """pred, target ``[B, T]`` -> ``[T]``: BCE on classification columns, MSE on regression columns."""

    def __init__(self, task_types: Sequence[str], device: torch.device) -> None:
        is_cls = [t == "classification" for t in task_types]
        self.cls_idx = [i for i, c in enumerate(is_cls) if c]
        self.reg_idx = [i for i, c in enumerate(is_cls) if not c]
        self.device = device
        order = torch.tensor(self.cls_idx + self.reg_idx)
        self.inverse = torch.argsort(order).to(device)  # [T]: cat(cls, reg) -> task order

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        if not self.reg_idx:
            return self.bce(pred, target)
        if not self.cls_idx:
            return (pred - target).pow(2).mean(0)
        cls = self.bce(pred[:, self.cls_idx], target[:, self.cls_idx])
        reg = (pred[:, self.reg_idx] - target[:, self.reg_idx]).pow(2).mean(0)
        return torch.cat([cls, reg]).index_select(0, self.inverse)  # [T]

    def bce(self, p: Tensor, y: Tensor) -> Tensor:
        """Per-column mean BCE on probabilities ``[B, k] -> [k]``. On CPU the fused kernel; it rejects NaN inputs,
        which become NaN losses (reported by task and step). On accelerators an explicit formula with the same
        -100 log clamp, because there the kernel's range check is a fatal device assert."""
        if self.device.type == "cpu":
            try:
                return F.binary_cross_entropy(p, y, reduction="none").mean(0)
            except RuntimeError:
                if bool(torch.isfinite(p).all()):
                    raise  # a genuine range error (a probability outside [0, 1])
        return (-(y * torch.log(p).clamp_min(-100.0) + (1 - y) * torch.log1p(-p).clamp_min(-100.0))).mean(0)


class NonFiniteCheck:
    """Raises at a non-finite loss, naming the task, epoch and step. ``every == 1`` looks at each step (CPU, where
    a look costs nothing); otherwise the first bad step is remembered on the device and looked at every ``every``
    steps and at the epoch's end, as each look is a device sync."""

    def __init__(self, names: list[str], every: int, epoch: int, device: torch.device) -> None:
        self.names, self.every, self.epoch = names, every, epoch
        self.first_bad = torch.full((len(names) - 1,), -1, dtype=torch.long, device=device)  # [T (+1 aux)]

    def step(self, step: int, losses: Tensor, extra: Optional[Tensor]) -> None:
        checked = losses.detach() if extra is None else torch.cat([losses.detach(), extra.detach().reshape(1)])
        if self.every == 1:
            if not bool(torch.isfinite(checked).all()):
                self._raise(checked, step)
            return
        bad = ~torch.isfinite(checked)
        if len(self.first_bad) < len(bad):
            self.first_bad = torch.cat([self.first_bad, self.first_bad.new_full((1,), -1)])
        self.first_bad = torch.where((self.first_bad < 0) & bad, step, self.first_bad)
        if (step + 1) % self.every == 0:
            self.finish()

    def finish(self) -> None:
        """Raise if a remembered step was bad (one sync); a no-op when every step was looked at."""
        if self.every == 1:
            return
        steps = self.first_bad.tolist()
        hit = [s for s in steps if s >= 0]
        if hit:
            step = min(hit)
            self._raise(torch.tensor([math.nan if s == step else 0.0 for s in steps]), step)

    def _raise(self, values: Tensor, step: int) -> None:
        bad = [f"{n}={v:.4g}" for n, v in zip(self.names, values.tolist()) if not math.isfinite(v)]
        raise FloatingPointError(f"non-finite training loss ({', '.join(bad)}) at epoch {self.epoch}, step {step}; "
                                 "lower the learning rate or check the inputs")
