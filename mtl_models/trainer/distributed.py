"""Data parallelism through ``torch.distributed``: who this process is, and the few collectives the trainer needs.

One process per device, started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address). Gradients of the model are averaged by ``DistributedDataParallel``; everything here
exists for what DDP does not cover: the weighting's own state, whole-set validation metrics, one writer,
and agreeing on when to stop. In a single process every helper is the identity, so that path pays nothing.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistContext", "setup_distributed", "env_world_size"]


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` means no process group and no communication."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    comm_device: torch.device = torch.device("cpu")  # where collectives' tensors must live (cuda for nccl)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --------------------------------------------------------------- collectives
    def mean(self, t: Tensor) -> Tensor:
        """Average of ``t`` over ranks (same shape); the identity in one process."""
        if not self.enabled:
            return t
        buf = t.detach().to(self.comm_device, copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.div_(self.world_size).to(t.device, t.dtype)

    def gather_rows(self, t: Tensor) -> Tensor:
        """Concatenate every rank's ``[n_r, ...]`` rows in rank order (ranks may hold different ``n_r``).
        Each rank pads to the largest ``n_r`` for ``all_gather`` and the padding is cut off again, so no
        row is counted twice."""
        if not self.enabled:
            return t
        local = t.detach().to(self.comm_device).contiguous()
        n = torch.tensor([local.shape[0]], device=self.comm_device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        counts = [int(s.item()) for s in sizes]
        padded = local.new_zeros((max(counts),) + tuple(local.shape[1:]))  # [max_n, ...]
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)  # [sum n_r, ...]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a decision only rank 0 can make, e.g. a callback's stop)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.comm_device if self.backend == "nccl" else None)
        return box[0]

    def broadcast_tensors(self, tensors: list[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values (the best weights after early stopping)."""
        if not self.enabled:
            return
        for t in tensors:
            if t.device == self.comm_device:
                dist.broadcast(t, src=0)
            else:
                buf = t.detach().to(self.comm_device)
                dist.broadcast(buf, src=0)
                t.copy_(buf)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup_distributed(device: torch.device, backend: Optional[str] = None, timeout_s: float = 1800.0) -> DistContext:
    """The ``DistContext`` of this process: joins the process group torchrun describes when ``WORLD_SIZE > 1``
    (``nccl`` for CUDA, ``gloo`` otherwise), or uses the one the caller already initialised."""
    if not dist.is_available():
        return DistContext()
    if not dist.is_initialized():
        if env_world_size() <= 1:
            return DistContext()
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    backend = dist.get_backend()
    world = dist.get_world_size()
    if world <= 1:
        return DistContext(backend=backend)
    comm = device if backend == "nccl" else torch.device("cpu")
    return DistContext(rank=dist.get_rank(), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       backend=backend, comm_device=comm)
