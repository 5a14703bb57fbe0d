"""Batches as slices of pre-built contiguous tensors.

A ``torch.utils.data.DataLoader`` over per-sample ``__getitem__`` + collate spends most of a small
model's step in Python; here a whole epoch is one gather per column (by a seeded permutation) and
every batch is a view into it. Inputs may be dicts of arrays, pandas DataFrames or pyarrow Tables.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .device import DeviceSpec, resolve_device

__all__ = ["TensorLoader", "make_loader", "DataGenerator", "to_columns", "to_label_matrix"]

Columns = Union[Mapping[str, Any], "Any"]  # dict of arrays, pandas.DataFrame or pyarrow.Table


def _column_tensor(values: Any) -> Tensor:
    """One column -> contiguous 1-D tensor: integer ids as int64, everything else as float32."""
    if isinstance(values, Tensor):
        t = values.detach().cpu()
    else:
        if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # pandas Series / pyarrow array
            try:
                values = values.to_numpy(zero_copy_only=False)
            except TypeError:  # pandas' to_numpy has no zero_copy_only
                values = values.to_numpy()
        arr = np.ascontiguousarray(np.asarray(values))
        if not arr.flags.writeable:  # zero-copy Arrow buffers are read-only; torch wants to own its memory
            arr = arr.copy()
        t = torch.from_numpy(arr)
    t = t.reshape(-1)
    if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        return t.to(torch.int64).contiguous()
    return t.to(torch.float32).contiguous()


def _column_names(table: Any) -> list[str]:
    if isinstance(table, Mapping):
        return list(table.keys())
    if hasattr(table, "column_names"):  # pyarrow.Table
        return list(table.column_names)
    if hasattr(table, "columns"):  # pandas.DataFrame
        return [str(c) for c in table.columns]
    raise TypeError(f"expected a dict of arrays, a pandas DataFrame or a pyarrow Table, got {type(table).__name__}")


def _get_column(table: Any, name: str) -> Any:
    if hasattr(table, "column_names") and hasattr(table, "column"):  # pyarrow.Table
        return table.column(name)
    return table[name]


def to_columns(x: Columns, names: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
    """Feature columns as ``{name: Tensor[N]}`` (vectorised per column, never a loop over rows)."""
    names = list(names) if names is not None else _column_names(x)
    cols = {n: _column_tensor(_get_column(x, n)) for n in names}
    lengths = {n: len(c) for n, c in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"feature columns differ in length: {lengths}")
    return cols


def to_label_matrix(y: Any) -> tuple[Tensor, list[str]]:
    """Labels -> ``(float32 [N, n_task], task_names)``; ``y`` is a dict/table of tasks or an ``[N, T]`` array."""
    if isinstance(y, (np.ndarray, Tensor)):
        t = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).to(torch.float32)
        t = t.reshape(len(t), -1).contiguous()
        return t, [f"task{i}" for i in range(t.shape[1])]
    names = _column_names(y)
    cols = [_column_tensor(_get_column(y, n)).to(torch.float32) for n in names]
    if len({len(c) for c in cols}) > 1:
        raise ValueError(f"label columns differ in length: { {n: len(c) for n, c in zip(names, cols)} }")
    return torch.stack(cols, dim=1).contiguous(), names  # [N, T]


class TensorLoader:
    """Iterates ``(x_batch, y_batch)`` (or ``x_batch`` without labels) over in-memory columns.

    ``x_batch`` is ``{feature: Tensor[B]}`` and ``y_batch`` is float32 ``[B, n_task]``. With ``shuffle`` each
    epoch's order is ``randperm`` from a generator seeded by ``(seed, epoch)``, so an epoch's batches are
    reproducible from its index alone (``set_epoch``), which is what makes resuming exact. For a CUDA
    target the host tensors are pinned and copied with ``non_blocking=True``.
    """

    def __init__(self, x: Mapping[str, Tensor], y: Optional[Tensor] = None, batch_size: int = 256,
                 shuffle: bool = False, seed: int = 0, device: DeviceSpec = "cpu", drop_last: bool = False,
                 task_names: Optional[Sequence[str]] = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not x:
            raise ValueError("x must hold at least one feature column")
        self.x = {k: v.contiguous() for k, v in x.items()}
        self.n = len(next(iter(self.x.values())))
        if y is not None and len(y) != self.n:
            raise ValueError(f"x has {self.n} rows but y has {len(y)}")
        self.y = y.contiguous() if y is not None else None  # [N, T]
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        n_task = self.y.shape[1] if self.y is not None else 0
        self.task_names = list(task_names) if task_names is not None else [f"task{i}" for i in range(n_task)]
        if self.y is not None and len(self.task_names) != n_task:
            raise ValueError(f"task_names has {len(self.task_names)} names but y has {n_task} columns")
        self.epoch = 0
        self.rank, self.world_size, self.pad = 0, 1, True
        self.device = torch.device("cpu")
        self.to(device)

    def shard(self, rank: int, world_size: int, pad: bool = True) -> "TensorLoader":
        """This rank's part of every epoch, as a new loader over the same tensors (nothing is copied).

        ``batch_size`` stays the *global* batch: each rank takes ``ceil(batch_size / world_size)`` rows, so
        the same code trains with the same global batch on any number of processes. ``pad=True`` (training):
        every epoch's order (the same permutation on every rank: a shared seed) is padded by wrapping to a
        multiple of ``world_size`` and rank ``r`` takes positions ``r, r + W, ...``; every rank then runs the
        same number of steps (DDP needs that), and the ranks' ``k``-th batches together are rows
        ``[k B, (k+1) B)`` of the epoch's order, the batch one process would have used. ``pad=False``
        (evaluation): contiguous blocks without repeats, so the ranks' outputs concatenated in rank order are
        the loader's order and no row is counted twice.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        out = object.__new__(TensorLoader)
        out.__dict__.update(self.__dict__)
        out.rank, out.world_size, out.pad = int(rank), int(world_size), bool(pad)
        out.batch_size = -(-self.batch_size // world_size)
        return out

    def _local_rows(self) -> int:
        if self.world_size == 1:
            return self.n
        if self.pad:
            return -(-self.n // self.world_size)
        return (self.rank + 1) * self.n // self.world_size - self.rank * self.n // self.world_size

    def _shard_index(self, perm: Optional[Tensor]) -> Tensor:
        """This rank's rows of the epoch order ``perm`` (``None``: file order) as ``[n_local]`` indices."""
        order = perm if perm is not None else torch.arange(self.n)  # [N]
        w, r = self.world_size, self.rank
        if self.pad:
            extra = (-self.n) % w
            if extra:  # wrap around, as DistributedSampler does
                order = torch.cat([order, order[:extra].repeat(-(-extra // max(self.n, 1)))[:extra]])
            return order[r::w]
        return order[r * self.n // w:(r + 1) * self.n // w]

    def to(self, device: DeviceSpec) -> "TensorLoader":
        """Set where batches are delivered; pins host memory for CUDA."""
        self.device = resolve_device(device)
        if self.device.type == "cuda" and not next(iter(self.x.values())).is_pinned():
            self.x = {k: v.pin_memory() for k, v in self.x.items()}
            self.y = self.y.pin_memory() if self.y is not None else None
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's permutation the next iteration uses (the trainer calls this)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self._local_rows()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_tensors(self) -> tuple[dict[str, Tensor], Optional[Tensor]]:
        if not self.shuffle and self.world_size == 1:
            return self.x, self.y
        perm = None
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g)  # [N], identical on every rank
        if self.world_size > 1:
            perm = self._shard_index(perm)  # [n_local]
        pin = self.device.type == "cuda"
        x = {k: v.index_select(0, perm) for k, v in self.x.items()}  # one gather per column
        y = self.y.index_select(0, perm) if self.y is not None else None  # [N, T]
        if pin:
            x = {k: v.pin_memory() for k, v in x.items()}
            y = y.pin_memory() if y is not None else None
        return x, y

    def __iter__(self) -> Iterator[Any]:
        x, y = self._epoch_tensors()
        self.epoch += 1  # a plain loop without set_epoch still sees a new order every epoch
        on_host = self.device.type == "cpu"
        nb = self.device.type == "cuda"
        n = self._local_rows()
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            xb = {k: v[sl] for k, v in x.items()}  # views, [B] each
            yb = y[sl] if y is not None else None  # [B, T]
            if not on_host:
                xb = {k: v.to(self.device, non_blocking=nb) for k, v in xb.items()}
                yb = yb.to(self.device, non_blocking=nb) if yb is not None else None
            yield (xb, yb) if yb is not None else xb


def make_loader(x: Columns, y: Any = None, batch_size: int = 256, shuffle: bool = False, seed: int = 0,
                device: DeviceSpec = "cpu", drop_last: bool = False,
                task_names: Optional[Sequence[str]] = None, features: Optional[Sequence[Any]] = None) -> TensorLoader:
    """A ``TensorLoader`` from pre-split tables. ``features`` (names or Feature objects) selects columns of
    ``x``; ``y`` may be a dict/table of task columns (its keys become ``task_names``) or an ``[N, T]`` array."""
    names = None if features is None else [getattr(f, "name", f) for f in features]
    cols = to_columns(x, names)
    labels, names_from_y = (None, []) if y is None else to_label_matrix(y)
    return TensorLoader(cols, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device,
                        drop_last=drop_last, task_names=task_names if task_names is not None else names_from_y)


class DataGenerator:
    """Torch-RecHub's ``DataGenerator(x, y)``: a seeded split into train / val / test loaders."""

    def __init__(self, x: Columns, y: Any, seed: int = 2022) -> None:
        self.x = to_columns(x)
        self.y, self.task_names = to_label_matrix(y)
        self.n = len(self.y)
        if len(next(iter(self.x.values()))) != self.n:
            raise ValueError(f"x has {len(next(iter(self.x.values())))} rows but y has {self.n}")
        self.seed = seed

    def _take(self, idx: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return {k: v.index_select(0, idx) for k, v in self.x.items()}, self.y.index_select(0, idx)

    def generate_dataloader(self, x_val: Columns = None, y_val: Any = None, x_test: Columns = None,
                            y_test: Any = None, split_ratio: Optional[Sequence[float]] = None,
                            batch_size: int = 16, num_workers: int = 0, shuffle: bool = True,
                            device: DeviceSpec = "cpu", seed: Optional[int] = None,
                            eval_batch_size: Optional[int] = None) -> tuple[TensorLoader, TensorLoader, TensorLoader]:
        """``split_ratio=[train, val]`` splits by a seeded permutation, the rest being test; otherwise the
        given ``x_val/y_val`` and ``x_test/y_test`` are used. ``num_workers`` is accepted and ignored
        (there is no per-sample work to parallelise). Only the train loader shuffles."""
        seed = self.seed if seed is None else seed
        eval_bs = eval_batch_size or batch_size
        if split_ratio is not None:
            if len(split_ratio) != 2 or min(split_ratio) < 0 or sum(split_ratio) > 1:
                raise ValueError(f"split_ratio must be [train, val] with train + val <= 1, got {split_ratio}")
            n_train = int(self.n * split_ratio[0])
            n_val = int(self.n * split_ratio[1])
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))  # [N]
            parts = [self._take(perm[:n_train]), self._take(perm[n_train:n_train + n_val]),
                     self._take(perm[n_train + n_val:])]
        else:
            if x_val is None or y_val is None or x_test is None or y_test is None:
                raise ValueError("pass split_ratio=[train, val], or x_val/y_val and x_test/y_test")
            names = list(self.x)
            parts = [(self.x, self.y), (to_columns(x_val, names), to_label_matrix(y_val)[0]),
                     (to_columns(x_test, names), to_label_matrix(y_test)[0])]
        loaders = []
        for i, (x, y) in enumerate(parts):
            loaders.append(TensorLoader(x, y, batch_size=batch_size if i == 0 else eval_bs,
                                        shuffle=shuffle and i == 0, seed=seed, device=device,
                                        task_names=self.task_names))
        return loaders[0], loaders[1], loaders[2]
