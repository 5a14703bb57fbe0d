"""The files a trained model folder holds and the prepared splits it reads: the names, the loaders and the reload
that train, evaluate, export and the later steps share.

A prepared split is ``<split>.parquet`` or a folder ``<split>/`` of Parquet shards (the streaming prepare's output).
``split_loader`` reads a split into memory (``TensorLoader``) when its columns take at most ``stream_above_bytes``
(default ``STREAM_ABOVE_BYTES``, or the ``MTLP_STREAM_ABOVE_BYTES`` environment variable), and streams it row group
by row group (``ParquetLoader``, bounded memory) above that."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..data.feature_spec import SPEC_FILE, FeatureSpec
from .model_factory import build_model

__all__ = ["WEIGHTS_FILE", "PARAMS_FILE", "METRICS_FILE", "ONNX_FILE", "PLOTS_DIR", "SPEC_FILE", "read_spec",
           "column", "split_paths", "split_bytes", "split_loader", "split_labels", "iter_split_labels", "split_users",
           "load_trained", "STREAM_ABOVE_BYTES"]

PathLike = Union[str, os.PathLike]
WEIGHTS_FILE, PARAMS_FILE, METRICS_FILE, ONNX_FILE = "model.pt", "params.json", "metrics.json", "model.onnx"
PLOTS_DIR = "plots"  # training_curves.png and roc_<task>.png, drawn by the train step
STREAM_ABOVE_BYTES = 1 << 30  # a split whose columns take more than this (decoded) is streamed, not loaded
STREAM_ENV = "MTLP_STREAM_ABOVE_BYTES"


def read_spec(prepared_dir: PathLike) -> FeatureSpec:
    """The prepared data's feature spec; missing is a one-line error naming the file."""
    path = Path(prepared_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    return FeatureSpec.load(path)


def column(table: Any, name: str) -> np.ndarray:
    """One owned, writable buffer per column (torch refuses to wrap Arrow's read-only memory silently)."""
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False, writable=True)


def split_paths(prepared_dir: PathLike, split: str) -> list[Path]:
    """The split's Parquet files: ``<split>.parquet``, else the shards in ``<split>/`` in name order."""
    single = Path(prepared_dir) / f"{split}.parquet"
    if single.is_file():
        return [single]
    shards = sorted((Path(prepared_dir) / split).glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{single} not found: run the prepare step first")
    return shards


def split_bytes(prepared_dir: PathLike, split: str, columns: list[str]) -> int:
    """Bytes the split's ``columns`` take decoded in memory (rows from the footers x each column's width). Reads
    every footer: a shard that is not Parquet or lacks one of ``columns`` is a ValueError naming it."""
    from mtl_models.parquet_loader import open_parquet

    total = 0
    for path in split_paths(prepared_dir, split):
        meta = open_parquet(str(path)).metadata
        schema = meta.schema.to_arrow_schema()
        absent = [c for c in columns if c not in schema.names]
        if absent:
            raise ValueError(f"{path} lacks column(s) {absent}")
        total += meta.num_rows * sum(getattr(schema.field(c).type, "byte_width", 8) for c in columns)
    return total


def _stream_above(stream_above_bytes: Optional[int]) -> int:
    if stream_above_bytes is not None:
        return int(stream_above_bytes)
    return int(os.environ.get(STREAM_ENV) or STREAM_ABOVE_BYTES)


def split_loader(prepared_dir: PathLike, split: str, spec: FeatureSpec, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str = "cpu", with_labels: bool = True,
                 stream_above_bytes: Optional[int] = None):
    """A loader over the split: in memory (``TensorLoader``, columns read straight into tensors) when it takes at
    most ``stream_above_bytes``, else streamed from the Parquet row groups (``ParquetLoader``); 0 always streams."""
    from mtl_models import make_loader
    from mtl_models.parquet_loader import ParquetLoader

    columns = spec.feature_names + (spec.label_names if with_labels else [])
    labels = spec.label_names if with_labels else None
    if split_bytes(prepared_dir, split, columns) > _stream_above(stream_above_bytes):
        return ParquetLoader([str(p) for p in split_paths(prepared_dir, split)], spec.feature_names, labels,
                             batch_size=batch_size, shuffle=shuffle, seed=seed, device=device)
    paths = split_paths(prepared_dir, split)
    try:
        table = pa.concat_tables([pq.read_table(p, columns=columns) for p in paths]) if len(paths) > 1 \
            else pq.read_table(paths[0], columns=columns)
    except Exception as e:  # a page that fails to decode, shards whose column types differ
        raise ValueError(f"{paths[0] if len(paths) == 1 else paths[0].parent} cannot be read: "
                         f"{str(e).splitlines()[0]}") from None
    x = {name: column(table, name) for name in spec.feature_names}
    y = {name: column(table, name) for name in spec.label_names} if with_labels else None
    return make_loader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device,
                       task_names=labels)


def iter_split_labels(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> Iterator[np.ndarray]:
    """The split's ``[n, n_task]`` float32 labels one row group at a time, in file order."""
    from mtl_models.parquet_loader import open_parquet

    for path in split_paths(prepared_dir, split):
        parquet = open_parquet(str(path))
        for g in range(parquet.num_row_groups):
            table = parquet.read_row_group(g, columns=spec.label_names)
            yield np.stack([column(table, name).astype(np.float32) for name in spec.label_names], axis=1)


def split_labels(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> np.ndarray:
    """``[N, n_task]`` labels of a prepared split, in file order."""
    parts = list(iter_split_labels(prepared_dir, split, spec))
    return np.concatenate(parts) if parts else np.zeros((0, len(spec.label_names)), np.float32)


def split_users(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> Optional[np.ndarray]:
    """``[N]`` encoded user ids of a prepared split (GAUC's groups), or None when the spec names no user column."""
    if spec.user_feature is None:
        return None
    parts = [column(pq.read_table(p, columns=[spec.user_feature]), spec.user_feature)
             for p in split_paths(prepared_dir, split)]  # one column: small even for a sharded split
    return np.concatenate(parts)


def load_trained(out_dir: PathLike) -> tuple[torch.nn.Module, FeatureSpec, dict[str, Any]]:
    """The trained model (eval mode, CPU), its feature spec and ``{"model_name", "params"}``."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / PARAMS_FILE).read_text())
    spec = FeatureSpec.load(out_dir / SPEC_FILE)
    model = build_model(meta["model_name"], spec, meta["params"])
    model.load_state_dict(torch.load(out_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec, meta
