"""Batches streamed from Parquet files with bounded memory: the loader for data bigger than memory.

``TensorLoader`` holds a whole split in memory; ``ParquetLoader`` reads it one row group at a time and never
materialises the table. The unit of reading is a row group (``(file, row group)``): each epoch visits the units in
a seeded order (shuffle) and mixes their rows through a shuffle buffer of ``buffer_rows`` rows (blocks of whole
row groups are gathered, permuted and cut into batches; a remainder shorter than a batch is carried into the next
block). Memory is about two buffers of columns, whatever the number of rows. An epoch's order depends only on
``(seed, epoch)`` (``set_epoch``), as ``TensorLoader``'s does, so resuming is exact.

Data-parallel (``shard``): each rank reads its own row groups. For training (``pad=True``) the units of the epoch's
order are dealt round-robin to the ranks, and every rank runs the same number of steps (the largest rank's rows /
the per-rank batch; a rank with fewer rows starts over its own units, as ``DistributedSampler`` pads). For
evaluation (``pad=False``) rank ``r`` reads the ``r``-th contiguous block of units in file order, so the ranks'
outputs concatenated in rank order are the files' order and no row is read twice.

Paths are local files or fsspec URLs (``s3://``, ``gs://``, ``memory://``); a file that is not Parquet or lacks a
column is a one-line ``ValueError`` naming it, raised when the loader is built (footers only are read then).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .device import DeviceSpec, resolve_device

__all__ = ["ParquetLoader", "open_parquet", "DEFAULT_BUFFER_ROWS"]

DEFAULT_BUFFER_ROWS = 1 << 20  # rows mixed at once by the shuffle buffer (~60 MiB for 15 four- or eight-byte columns)


def open_parquet(path: str, metadata: Any = None) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` over a local path or an fsspec URL; unreadable -> ValueError naming it."""
    import pyarrow.parquet as pq

    try:
        if "://" in str(path) and not str(path).startswith("file://"):
            import fsspec

            return pq.ParquetFile(fsspec.open(str(path), "rb").open(), metadata=metadata)
        return pq.ParquetFile(str(path).removeprefix("file://"), metadata=metadata)
    except FileNotFoundError:
        raise ValueError(f"{path} not found") from None
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid (a ValueError): not Parquet, a truncated footer
        raise ValueError(f"{path} cannot be read as parquet: {str(e).splitlines()[0]}") from None


def _as_tensor(parts: list[np.ndarray]) -> Tensor:
    """Owned contiguous 1-D tensor from a column's pieces: integer ids as int64, everything else as float32."""
    kind = parts[0].dtype.kind
    dtype = np.int64 if kind in "iub" and parts[0].dtype != np.bool_ else np.float32
    out = np.concatenate(parts).astype(dtype, copy=False) if len(parts) > 1 else parts[0].astype(dtype, copy=True)
    if not out.flags.writeable or not out.flags.owndata:
        out = out.copy()
    return torch.from_numpy(out)


class ParquetLoader:
    """Iterates ``(x_batch, y_batch)`` (or ``x_batch`` without ``labels``) over Parquet files, streaming.

    ``x_batch`` is ``{feature: Tensor[B]}`` (int64 ids, float32 values), ``y_batch`` float32 ``[B, n_task]``,
    as ``TensorLoader`` yields. ``features`` / ``labels`` name the columns read; every file must hold them.
    """

    def __init__(self, paths: Sequence[str], features: Sequence[str], labels: Optional[Sequence[str]] = None,
                 batch_size: int = 256, shuffle: bool = False, seed: int = 0, device: DeviceSpec = "cpu",
                 drop_last: bool = False, task_names: Optional[Sequence[str]] = None,
                 buffer_rows: int = DEFAULT_BUFFER_ROWS) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not paths:
            raise ValueError("ParquetLoader needs at least one file")
        if not features:
            raise ValueError("features must name at least one column")
        self.paths = [str(p) for p in paths]
        self.features = list(features)
        self.labels = list(labels) if labels is not None else None
        self.task_names = list(task_names) if task_names is not None else list(self.labels or [])
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.buffer_rows = max(int(buffer_rows), 1)
        self._metadata: list[Any] = []
        self.units: list[tuple[int, int, int]] = []  # (file index, row group, rows)
        wanted = self.features + (self.labels or [])
        for i, path in enumerate(self.paths):
            meta = open_parquet(path).metadata
            names = set(meta.schema.names)
            absent = [c for c in wanted if c not in names]
            if absent:
                raise ValueError(f"{path} lacks column(s) {absent}")
            self._metadata.append(meta)
            self.units += [(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                           if meta.row_group(g).num_rows]
        self.n = sum(u[2] for u in self.units)
        self.epoch = 0
        self.rank, self.world_size, self.pad = 0, 1, True
        self.device = resolve_device(device)

    # ------------------------------------------------------------------ sharding
    def shard(self, rank: int, world_size: int, pad: bool = True) -> "ParquetLoader":
        """This rank's row groups (see the module docstring); ``batch_size`` stays the global batch."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        out = object.__new__(ParquetLoader)
        out.__dict__.update(self.__dict__)
        out.rank, out.world_size, out.pad = int(rank), int(world_size), bool(pad)
        out.batch_size = -(-self.batch_size // world_size)
        if len(self.units) < world_size:  # too few row groups for every rank to get one: cut each into slices
            out._slices = world_size
        return out

    def to(self, device: DeviceSpec) -> "ParquetLoader":
        self.device = resolve_device(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[tuple[int, int, int, int]]:
        """The epoch's units as ``(file, row group, start, stop)``, before dealing to ranks."""
        slices = getattr(self, "_slices", 1)
        units = [(f, g, rows * k // slices, rows * (k + 1) // slices) for f, g, rows in self.units
                 for k in range(slices)]
        units = [u for u in units if u[3] > u[2]]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            units = [units[i] for i in torch.randperm(len(units), generator=g).tolist()]
        return units

    def _rank_units(self, units: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        w, r = self.world_size, self.rank
        if w == 1:
            return units
        if self.pad:
            return units[r::w]
        return units[r * len(units) // w:(r + 1) * len(units) // w]

    def _steps(self) -> Optional[int]:
        """Training shards: the same number of steps on every rank (the largest rank's); None otherwise."""
        if self.world_size == 1 or not self.pad:
            return None
        units = self._order()
        most = max(sum(u[3] - u[2] for u in units[r::self.world_size]) for r in range(self.world_size))
        return most // self.batch_size if self.drop_last else math.ceil(most / self.batch_size)

    def __len__(self) -> int:
        steps = self._steps()
        if steps is not None:
            return steps
        n = sum(u[3] - u[2] for u in self._rank_units(self._order()))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # ------------------------------------------------------------------ reading
    def _read(self, unit: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
        f, g, start, stop = unit
        columns = self.features + (self.labels or [])
        parquet = open_parquet(self.paths[f], self._metadata[f])
        try:
            table = parquet.read_row_group(g, columns=columns)
        except Exception as e:  # a page that fails to decode: name the file, not just pyarrow's words
            raise ValueError(f"{self.paths[f]} row group {g} cannot be read: {str(e).splitlines()[0]}") from None
        if start or stop < table.num_rows:
            table = table.slice(start, stop - start)
        return {c: table.column(c).to_numpy() for c in columns}

    def _blocks(self, units: list[tuple[int, int, int, int]], cycle: bool) -> Iterator[dict[str, list[np.ndarray]]]:
        """Groups of whole units of about ``buffer_rows`` rows; forever when ``cycle`` (a padded training shard)."""
        while True:
            block: dict[str, list[np.ndarray]] = {}
            rows = 0
            for unit in units:
                for c, values in self._read(unit).items():
                    block.setdefault(c, []).append(values)
                rows += unit[3] - unit[2]
                if rows >= self.buffer_rows:
                    yield block
                    block, rows = {}, 0
            if rows:
                yield block
            if not cycle or not units:
                return

    def _block_tensors(self, block: dict[str, list[np.ndarray]], carry: dict[str, Tensor],
                       gen: Optional[torch.Generator]) -> dict[str, Tensor]:
        """One tensor per column: the previous block's remainder, then the block's rows, permuted when shuffling.
        The block's pieces are popped as they are copied, so at most two copies of a block live at once."""
        out: dict[str, Tensor] = {}
        for c in list(block):
            parts = block.pop(c)
            if carry:
                parts.insert(0, carry[c].numpy())
            out[c] = _as_tensor(parts)
            del parts
        if gen is not None:  # the remainder stays first (it is owed to this epoch's next batch), the rest is mixed
            k = len(next(iter(carry.values()))) if carry else 0
            perm = torch.randperm(len(next(iter(out.values()))) - k, generator=gen) + k
            perm = torch.cat([torch.arange(k), perm]) if k else perm
            for c in out:
                out[c] = out[c].index_select(0, perm)
        return out

    def __iter__(self) -> Iterator[Any]:
        units = self._rank_units(self._order())
        steps = self._steps()
        gen = None
        if self.shuffle:  # the buffer's permutations: per (seed, epoch, rank), so resuming repeats them
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1009 + self.rank + 1)
        self.epoch += 1  # a plain loop without set_epoch still sees a new order every epoch
        b, done = self.batch_size, 0
        carry: dict[str, Tensor] = {}
        for block in self._blocks(units, cycle=steps is not None):
            cols = self._block_tensors(block, carry, gen)
            x = {c: cols[c] for c in self.features}
            y = torch.stack([cols[c].float() for c in self.labels], dim=1) if self.labels else None  # [n, T]
            del cols
            if self.device.type == "cuda":  # pinned once per block: each batch is a pinned slice, copied non-blocking
                x = {k: v.pin_memory() for k, v in x.items()}
                y = y.pin_memory() if y is not None else None
            n = len(next(iter(x.values())))
            full = n // b
            for i in range(full):
                if steps is not None and done >= steps:
                    return
                yield self._deliver(x, y, slice(i * b, (i + 1) * b))
                done += 1
            # the remainder (under a batch) is copied out, so the block's memory is freed before the next is read
            carry = {k: v[full * b:].clone() for k, v in x.items()}
            if self.labels:
                carry.update({c: y[full * b:, i].clone() for i, c in enumerate(self.labels)})
            del x, y
            if steps is not None and done >= steps:
                return
        rest = len(next(iter(carry.values()))) if carry else 0
        if rest and not self.drop_last and (steps is None or done < steps):
            x = {c: carry[c] for c in self.features}
            y = torch.stack([carry[c] for c in self.labels], dim=1) if self.labels else None
            yield self._deliver(x, y, slice(0, rest))

    def _deliver(self, x: dict[str, Tensor], y: Optional[Tensor], sl: slice) -> Any:
        xb = {k: v[sl] for k, v in x.items()}  # views, [B] each
        yb = y[sl] if y is not None else None  # [B, T]
        if self.device.type != "cpu":
            nb = self.device.type == "cuda" and xb[self.features[0]].is_pinned()
            xb = {k: v.to(self.device, non_blocking=nb) for k, v in xb.items()}
            yb = yb.to(self.device, non_blocking=nb) if yb is not None else None
        return (xb, yb) if yb is not None else xb
