"""The prepare step for data bigger than memory: CSV or Parquet files (a folder, a glob, an fsspec URL) in two passes
over chunks of rows, into sharded Parquet, with memory bounded by the chunk, the row sample and the vocabularies.

Pass 1 fits the encoders on the train rows: vocabularies from counts summed over chunks (the frequency threshold
applied at the end; ``hash_buckets`` columns count nothing), dense statistics exactly (count, missing, min, max,
sums for mean and std) and the median, quantiles and target-aware tree bins from a seeded uniform sample of at most
``SAMPLE_ROWS`` train rows. With no more train rows than that, the sample is every train row and the encoders are
those the in-memory path fits. Labels, dense columns and ground truth are checked on every row.
Pass 2 encodes every chunk and appends it to ``<split>/part-NNNNN.parquet`` shards (``row_group_size`` rows a row
group, ``rows_per_file`` rows a shard), then writes ``feature_spec.json``; all of it in a temporary folder that
replaces ``out_dir`` only when complete.

Splits: ``split: {method: column}`` as the in-memory path (value counts of the column, summed over a first pass);
``random`` assigns each row by a seeded hash of its position in the input (fractions met in expectation, not to the
row as the in-memory permutation does; recorded as ``split.assignment: row_hash``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .datasets.base import SPLITS, TableSchema, column_split_keys, raw_type, split_fractions
from .encoders import (DenseEncoder, SparseEncoder, _signed_log1p_inplace, as_numbers, encode_label, fit_dense,
                       sparse_from_counts, value_counts, QUANTILE_LEVELS)
from .errors import DataError
from .feature_spec import SPEC_FILE, FeatureSpec
from .sources import file_digest, iter_chunks
from .split_writer import SplitWriter, swap_into_place
from .tree_bins import fit_tree_edges

__all__ = ["prepare_streaming", "row_uniform", "SAMPLE_ROWS"]

SAMPLE_ROWS = 1 << 19  # train rows kept (a seeded uniform sample) for medians, quantiles and tree bins


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a fixed, well-spread hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_uniform(index: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform number in [0, 1) per row position, from ``(seed, stream)``: the same in any chunking."""
    key = _mix(np.array([int(seed) * 8 + int(stream)], dtype=np.uint64))
    return (_mix(index.astype(np.uint64) ^ key) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class _Sample:
    """The ``size`` train rows of smallest seeded priority: raw dense values and classification labels."""

    def __init__(self, size: int, n_dense: int, n_labels: int) -> None:
        self.size = size
        self.priority = np.empty(0)
        self.index = np.empty(0, np.int64)
        self.dense = np.empty((0, n_dense))
        self.labels = np.empty((0, n_labels), np.float32)

    def add(self, priority: np.ndarray, index: np.ndarray, dense: np.ndarray, labels: np.ndarray) -> None:
        self.priority = np.concatenate([self.priority, priority])
        self.index = np.concatenate([self.index, index])
        self.dense = np.concatenate([self.dense, dense])
        self.labels = np.concatenate([self.labels, labels])
        if len(self.priority) > 2 * self.size:
            self._cut()

    def _cut(self) -> None:
        if len(self.priority) > self.size:
            keep = np.argpartition(self.priority, self.size)[:self.size]
            self.priority, self.index = self.priority[keep], self.index[keep]
            self.dense, self.labels = self.dense[keep], self.labels[keep]

    def finish(self) -> None:
        self._cut()
        order = np.argsort(self.index, kind="stable")  # file order, as the in-memory path sees the train rows
        self.index, self.dense, self.labels = self.index[order], self.dense[order], self.labels[order]


class _DenseStats:
    """Exact streaming statistics of one dense column's train values (NaN = missing)."""

    def __init__(self, log1p: bool) -> None:
        self.log1p, self.n, self.missing = log1p, 0, 0
        self.lo, self.hi, self.total, self.squares = np.inf, -np.inf, 0.0, 0.0

    def add(self, numbers: np.ndarray) -> None:
        present = numbers[~np.isnan(numbers)]
        self.n += len(numbers)
        self.missing += len(numbers) - len(present)
        if len(present):
            self.lo, self.hi = min(self.lo, float(present.min())), max(self.hi, float(present.max()))
            f = present.astype(np.float32)
            if self.log1p:
                _signed_log1p_inplace(f)
            self.total += float(f.sum(dtype=np.float64))
            self.squares += float(np.square(f, dtype=np.float64).sum())

    def encoder(self, name: str, source: str, sample: np.ndarray) -> DenseEncoder:
        present = sample[~np.isnan(sample)]
        median = float(np.median(present)) if len(present) else 0.0
        f_median = np.array([median], np.float32)
        if self.log1p:
            _signed_log1p_inplace(f_median)
        total = self.total + self.missing * float(f_median[0])
        squares = self.squares + self.missing * float(f_median[0]) ** 2
        mean = total / max(self.n, 1)
        std = float(np.sqrt(max(squares / max(self.n, 1) - mean * mean, 0.0)))
        if not np.isfinite(std) or std < 1e-12:
            std = 1.0
        enc = DenseEncoder(name=name, source=source, median=median, mean=mean, std=std, log1p=self.log1p,
                           missing_rate=self.missing / max(self.n, 1), min=self.lo if len(present) else 0.0,
                           max=self.hi if len(present) else 0.0)
        encoded = enc.transform_numbers(sample.astype(np.float32))
        enc.quantiles = [float(v) for v in np.quantile(encoded.astype(np.float64), np.linspace(0, 1, QUANTILE_LEVELS))]
        return enc


def _merge_kinds(kinds: set[str]) -> str:
    if kinds == {"long", "double"}:
        return "double"
    return kinds.pop() if len(kinds) == 1 else "string"


class _Reader:
    """The files' chunks with their global row positions and split codes (0 train, 1 val, 2 test)."""

    def __init__(self, kind: str, files: list[str], schema: TableSchema, split: Mapping[str, Any], seed: int,
                 val_fraction: float, test_fraction: float, chunk_rows: int) -> None:
        self.kind, self.files, self.schema, self.seed, self.chunk_rows = kind, files, schema, seed, chunk_rows
        self.val, self.test = val_fraction, test_fraction
        self.split_column = split.get("column") if split.get("method") == "column" else None
        self.columns = list(dict.fromkeys(schema.required_columns() + ([self.split_column] if self.split_column
                                                                        else [])))
        self.types: dict[str, tuple[str, str]] = {}
        self.keys: Optional[tuple[Any, Any]] = None
        if self.split_column is not None:
            self.keys = self._column_keys()

    def _column_keys(self) -> tuple[Any, Any]:
        import pandas as pd

        counts = []
        for path, chunk, _ in self._raw():
            values = chunk[self.split_column]
            if values.isna().any():
                raise DataError(f"{path}: split column {self.split_column!r} has missing values")
            counts.append(values.value_counts())
            if len(counts) > 16:
                counts = [pd.concat(counts).groupby(level=0).sum()]
        return column_split_keys(pd.concat(counts).groupby(level=0).sum(), self.val, self.test)

    def _raw(self):
        offset = 0
        for path in self.files:
            for chunk in iter_chunks(self.kind, path, self.columns, self.chunk_rows, self.types):
                yield path, chunk.reset_index(drop=True), np.arange(offset, offset + len(chunk), dtype=np.int64)
                offset += len(chunk)

    def __iter__(self):
        for path, chunk, index in self._raw():
            if self.keys is not None:
                values = chunk[self.split_column]
                codes = np.where(values.isin(self.keys[0]).to_numpy(), 0, np.where(values.isin(self.keys[1]), 1, 2))
            else:
                u = row_uniform(index, self.seed, 0)
                codes = (u >= 1 - self.val - self.test).astype(np.int8) + (u >= 1 - self.test).astype(np.int8)
            yield path, chunk, index, codes


def _fit(reader: _Reader, schema: TableSchema, sample_rows: int) -> tuple[list[Any], dict[str, str], int]:
    """Pass 1 -> (encoders in schema order, raw types, train rows)."""
    import pandas as pd

    mv = schema.missing_values
    counted = [c for c in schema.sparse if c not in schema.hash_buckets]
    counts: dict[str, list[Any]] = {c: [] for c in counted}
    stats = {c: _DenseStats(c in schema.log1p) for c in schema.dense}
    classes = [lb for lb in schema.labels if lb.task_type == "classification"]
    sample = _Sample(sample_rows, len(schema.dense), len(classes))
    kinds: dict[str, set[str]] = {c: set() for c in schema.sparse + schema.dense}
    n_train = 0
    for path, chunk, index, codes in reader:
        try:
            labels = {lb.name: encode_label(lb, chunk[lb.source], mv) for lb in schema.labels}
            numbers = {c: as_numbers(chunk[c], c, mv) for c in schema.dense}
            for extra in schema.extra_columns:
                as_numbers(chunk[extra], extra)
            for c in kinds:
                kinds[c].add(raw_type(chunk[c], mv))
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        train = codes == 0
        n_train += int(train.sum())
        for c in counted:
            counts[c].append(value_counts(chunk[c][train], mv))
            if len(counts[c]) > 16:
                counts[c] = [pd.concat(counts[c]).groupby(level=0).sum()]
        for c in schema.dense:
            stats[c].add(numbers[c][train])
        dense = np.stack([numbers[c][train] for c in schema.dense], axis=1) if schema.dense \
            else np.empty((int(train.sum()), 0))
        lab = np.stack([labels[lb.name][train] for lb in classes], axis=1) if classes \
            else np.empty((int(train.sum()), 0), np.float32)
        sample.add(row_uniform(index[train], reader.seed, 1), index[train], dense, lab)
    if n_train == 0:
        raise DataError("the train split is empty; use more rows or smaller val/test fractions")
    sample.finish()
    features: list[Any] = []
    for c in schema.sparse:
        name = schema.name_of(c)
        if c in schema.hash_buckets:
            features.append(SparseEncoder(name=name, source=c, hash_buckets=schema.hash_buckets[c]))
        else:
            merged = pd.concat(counts[c]).groupby(level=0).sum() if counts[c] else pd.Series(dtype="int64")
            features.append(sparse_from_counts(name, c, merged.astype("int64"), schema.min_frequency_of(c)))
    everything = len(sample.index) == n_train  # the sample is every train row: fit exactly as in memory
    for j, c in enumerate(schema.dense):
        column = sample.dense[:, j]
        enc = fit_dense(schema.name_of(c), c, column, c in schema.log1p) if everything \
            else stats[c].encoder(schema.name_of(c), c, column)
        if classes:
            fit_tree_edges(enc, enc.transform_numbers(column.astype(np.float32)),
                           [sample.labels[:, i] for i in range(len(classes))], seed=reader.seed)
        features.append(enc)
    return features, {c: _merge_kinds(k) for c, k in kinds.items() if k}, n_train


def prepare_streaming(kind: str, files: list[str], schema: TableSchema, split: Mapping[str, Any], seed: int,
                      val_fraction: float, test_fraction: float, out_dir: str | Path, options: Mapping[str, Any],
                      chunk_rows: int, row_group_size: int, rows_per_file: int,
                      sample_rows: Optional[int] = None) -> FeatureSpec:
    """Two passes over ``files`` into ``out_dir`` (replaced atomically); returns the feature spec written."""
    schema.validate()
    split_fractions(val_fraction, test_fraction)
    reader = _Reader(kind, files, schema, split, seed, val_fraction, test_fraction, chunk_rows)
    features, raw_types, _ = _fit(reader, schema, SAMPLE_ROWS if sample_rows is None else sample_rows)
    recorded = {k: v for k, v in split.items() if k not in ("val_fraction", "test_fraction")}
    if recorded.get("method", "random") == "random":
        recorded.update(method="random", assignment="row_hash")
    spec = FeatureSpec(dataset=kind, seed=seed, features=features, labels=list(schema.labels),
                       missing_values=list(schema.missing_values),
                       raw_sha256={Path(f).name if len(files) == 1 else f: file_digest(f) for f in files},
                       split=dict(recorded, val_fraction=val_fraction, test_fraction=test_fraction),
                       options={k: str(v) for k, v in options.items()}, extra_columns=list(schema.extra_columns),
                       raw_types=raw_types)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        _encode_all(reader, spec, schema, tmp, row_group_size, rows_per_file)
        spec.save(tmp / SPEC_FILE)
        swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec


def _encode_all(reader: _Reader, spec: FeatureSpec, schema: TableSchema, folder: Path, row_group_size: int,
                rows_per_file: int) -> None:
    """Pass 2: every chunk encoded into its split's shards; rows, positive rates and label moments counted."""
    mv = schema.missing_values
    dictionary = [f.name for f in spec.sparse_features] + spec.label_names
    writers = {s: SplitWriter(folder / s, row_group_size, rows_per_file, dictionary) for s in SPLITS}
    sums = {s: {lb.name: np.zeros(2) for lb in spec.labels} for s in SPLITS}
    try:
        for path, chunk, _, codes in reader:
            try:
                columns = {f.name: f.encode(chunk[f.source], mv) for f in spec.features}
                columns.update({lb.name: encode_label(lb, chunk[lb.source], mv) for lb in spec.labels})
                columns.update({e: as_numbers(chunk[e], e).astype(np.float32) for e in schema.extra_columns})
            except DataError as e:
                raise DataError(f"{path}: {e}") from None
            for code, split in enumerate(SPLITS):
                rows = np.flatnonzero(codes == code)
                part = {k: v[rows] for k, v in columns.items()}
                writers[split].add(part)
                for lb in spec.labels:
                    v = part[lb.name].astype(np.float64)
                    sums[split][lb.name] += (v.sum(), np.square(v).sum())
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()
    spec.rows = {s: writers[s].rows for s in SPLITS}
    for lb in spec.labels:
        n = spec.rows
        if lb.task_type == "classification":
            spec.positive_rates[lb.name] = {s: float(sums[s][lb.name][0] / n[s]) if n[s] else float("nan")
                                            for s in SPLITS}
        else:
            spec.label_stats[lb.name] = {
                s: {"mean": float(sums[s][lb.name][0] / n[s]),
                    "std": float(np.sqrt(max(sums[s][lb.name][1] / n[s] - (sums[s][lb.name][0] / n[s]) ** 2, 0)))}
                if n[s] else {} for s in SPLITS}
