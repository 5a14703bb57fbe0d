"""What a loader yields, moved to the trainer's device and split into inputs and a ``[B, T]`` label matrix."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor

__all__ = ["to_device", "split_batch"]


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts, lists, tuples) on ``device``; non-blocking on CUDA, where the loader pins memory."""
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def split_batch(batch: Any) -> tuple[Mapping[str, Tensor], Optional[Tensor]]:
    """``(x, y)`` / ``[x, y]`` / ``x`` -> ``(x, y or None)``; ``y`` may be ``[B, T]`` or a dict of tasks."""
    if isinstance(batch, Mapping):
        return batch, None
    x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(y, Mapping):
        y = torch.stack([v.reshape(-1).float() for v in y.values()], dim=1)  # [B, T]
    elif y is not None:
        y = y.reshape(len(y), -1).float()  # [B, T]
    return x, y
