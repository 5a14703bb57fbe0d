"""The files a trained model folder holds and the prepared splits it reads: the names, the loaders and the reload
that train, evaluate, export and the later steps share."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pyarrow.parquet as pq
import torch

from ..data.feature_spec import SPEC_FILE, FeatureSpec
from .model_factory import build_model

__all__ = ["WEIGHTS_FILE", "PARAMS_FILE", "METRICS_FILE", "ONNX_FILE", "PLOTS_DIR", "SPEC_FILE", "read_spec",
           "column", "split_loader", "split_labels", "load_trained"]

PathLike = Union[str, os.PathLike]
WEIGHTS_FILE, PARAMS_FILE, METRICS_FILE, ONNX_FILE = "model.pt", "params.json", "metrics.json", "model.onnx"
PLOTS_DIR = "plots"  # training_curves.png and roc_<task>.png, drawn by the train step


def read_spec(prepared_dir: PathLike) -> FeatureSpec:
    """The prepared data's feature spec; missing is a one-line error naming the file."""
    path = Path(prepared_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    return FeatureSpec.load(path)


def column(table: Any, name: str) -> np.ndarray:
    """One owned, writable buffer per column (torch refuses to wrap Arrow's read-only memory silently)."""
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False, writable=True)


def _split_path(prepared_dir: PathLike, split: str) -> Path:
    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    return path


def split_loader(prepared_dir: PathLike, split: str, spec: FeatureSpec, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str = "cpu", with_labels: bool = True):
    """A fast in-memory loader over ``<split>.parquet`` (columns read straight into tensors, no row loop)."""
    from mtl_models import make_loader

    columns = spec.feature_names + (spec.label_names if with_labels else [])
    table = pq.read_table(_split_path(prepared_dir, split), columns=columns)
    x = {name: column(table, name) for name in spec.feature_names}
    y = {name: column(table, name) for name in spec.label_names} if with_labels else None
    return make_loader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device,
                       task_names=spec.label_names if with_labels else None)


def split_labels(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> np.ndarray:
    """``[N, n_task]`` labels of a prepared split, in file order."""
    table = pq.read_table(_split_path(prepared_dir, split), columns=spec.label_names)
    return np.stack([column(table, name) for name in spec.label_names], axis=1)


def split_users(prepared_dir: PathLike, split: str, spec: FeatureSpec) -> Optional[np.ndarray]:
    """``[N]`` encoded user ids of a prepared split (GAUC's groups), or None when the spec names no user column."""
    if spec.user_feature is None:
        return None
    return column(pq.read_table(_split_path(prepared_dir, split), columns=[spec.user_feature]), spec.user_feature)


def load_trained(out_dir: PathLike) -> tuple[torch.nn.Module, FeatureSpec, dict[str, Any]]:
    """The trained model (eval mode, CPU), its feature spec and ``{"model_name", "params"}``."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / PARAMS_FILE).read_text())
    spec = FeatureSpec.load(out_dir / SPEC_FILE)
    model = build_model(meta["model_name"], spec, meta["params"])
    model.load_state_dict(torch.load(out_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec, meta
