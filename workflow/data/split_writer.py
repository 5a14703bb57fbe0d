"""One prepared split written as a folder of Parquet shards, a row group at a time: ``part-00000.parquet``, ...

Rows arrive in pieces of any size; they are buffered up to ``row_group_size`` rows, written as one row group, and a
new shard is started every ``rows_per_file`` rows, so memory holds at most one row group of the split.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError

__all__ = ["SplitWriter", "swap_into_place", "ROW_GROUP_SIZE", "ROWS_PER_FILE"]

ROW_GROUP_SIZE = 256 * 1024  # rows a row group: the streaming loader's unit of reading and of shuffling
ROWS_PER_FILE = 4 * 1024 * 1024  # rows a shard


class SplitWriter:
    def __init__(self, folder: Path, row_group_size: int = ROW_GROUP_SIZE, rows_per_file: int = ROWS_PER_FILE,
                 dictionary_columns: Sequence[str] = ()) -> None:
        self.folder, self.row_group_size = Path(folder), max(int(row_group_size), 1)
        self.rows_per_file = max(int(rows_per_file), self.row_group_size)
        self.dictionary_columns = list(dictionary_columns)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        self._writer: Optional[pq.ParquetWriter] = None
        self._file_rows = 0
        self._files = 0
        self._schema: Optional[pa.Schema] = None

    def add(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        if self._schema is None:
            self._schema = pa.schema([(k, pa.from_numpy_dtype(v.dtype)) for k, v in columns.items()])
        if n == 0:
            return
        self._pending.append(columns)
        self._pending_rows += n
        self.rows += n
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, n: int) -> None:
        merged = {k: np.concatenate([p[k] for p in self._pending]) for k in self._pending[0]}
        head = {k: v[:n] for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        self._pending = [rest] if len(next(iter(rest.values()))) else []
        self._pending_rows -= n
        self._write(pa.Table.from_arrays([pa.array(v) for v in head.values()], names=list(head)))

    def _write(self, table: pa.Table) -> None:
        if self._writer is None or self._file_rows >= self.rows_per_file:
            self._close_file()
            path = self.folder / f"part-{self._files:05d}.parquet"
            self._writer = pq.ParquetWriter(path, table.schema, compression="snappy",
                                            use_dictionary=[c for c in self.dictionary_columns
                                                            if c in table.column_names])
            self._files += 1
            self._file_rows = 0
        self._writer.write_table(table, row_group_size=self.row_group_size)
        self._file_rows += table.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        """Close the open shard without writing what is buffered (the caller removes the folder)."""
        self._pending, self._pending_rows = [], 0
        self._close_file()

    def close(self) -> None:
        """Write what is buffered; a split without rows still gets one (empty) shard with the columns."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._files == 0 and self._schema is not None:
            self._write(self._schema.empty_table())
        self._close_file()


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Put the complete folder ``tmp`` at ``out_dir``; an existing ``out_dir`` is replaced only on success."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output path {out_dir} exists and is not a directory")
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
