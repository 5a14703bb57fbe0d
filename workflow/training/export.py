"""The export step: ``model.onnx`` beside the trained weights, checked against PyTorch on real rows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .artifacts import ONNX_FILE, load_trained, split_paths

__all__ = ["ExportResult", "export"]

PathLike = Union[str, os.PathLike]


@dataclass
class ExportResult:
    onnx_path: Path
    parity_max_abs_diff: float
    n_rows_checked: int


def _parity_inputs(model: torch.nn.Module, feature_names: list[str], prepared_dir: Optional[PathLike], split: str,
                   n_check: int) -> dict[str, torch.Tensor]:
    """The first ``n_check`` rows of ``split`` when there is prepared data, else made-up rows of the right types."""
    if prepared_dir is None:
        from mtl_models.onnx_export import example_inputs
        return example_inputs(model, batch_size=n_check)
    from mtl_models.parquet_loader import ParquetLoader

    # streamed: the first row groups only, whatever the split's size
    loader = ParquetLoader([str(p) for p in split_paths(prepared_dir, split)], feature_names, batch_size=n_check,
                           buffer_rows=n_check)
    return next(iter(loader))


def export(out_dir: PathLike, prepared_dir: Optional[PathLike] = None, split: str = "test", n_check: int = 2048,
           tolerance: float = 1e-5) -> ExportResult:
    """Write ``out_dir/model.onnx`` and check onnxruntime against PyTorch on real rows of ``split``.

    Raises ``ValueError`` (and removes the file) when the largest difference exceeds ``tolerance``.
    """
    import onnxruntime as ort

    from mtl_models import export_onnx

    out_dir = Path(out_dir)
    model, spec, _ = load_trained(out_dir)
    onnx_path = export_onnx(model, out_dir / ONNX_FILE)
    x = _parity_inputs(model, spec.feature_names, prepared_dir, split, n_check)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {n: v.numpy() for n, v in x.items()})  # [n_check, n_task]
    diff = float(np.abs(onnx_out - model(x).detach().numpy()).max())
    if not diff <= tolerance:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(f"ONNX parity check failed: max abs diff {diff:.3g} > {tolerance:g}")
    return ExportResult(onnx_path=onnx_path, parity_max_abs_diff=diff, n_rows_checked=len(onnx_out))
