"""ONNX export with one named input per feature, one ``predictions [batch, n_task]`` output and a
dynamic batch axis, so that serving (onnxruntime) needs neither torch nor this package."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from .atomic import atomic_path
from .features import SparseFeature
from .models.base import MultiTaskModel

__all__ = ["export_onnx", "example_inputs", "OUTPUT_NAME"]

OUTPUT_NAME = "predictions"


class _PositionalInputs(nn.Module):
    """Adapts ``forward(dict)`` to positional tensors in feature order, which is what ONNX inputs are."""

    def __init__(self, model: MultiTaskModel, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *columns: Tensor) -> Tensor:
        return self.model(dict(zip(self.names, columns)))  # [B, n_task]


def example_inputs(model: MultiTaskModel, batch_size: int = 4, seed: int = 0) -> dict[str, Tensor]:
    """Random valid inputs: int64 ids ``[B]`` for sparse features, float32 ``[B]`` for dense ones."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for f in model.features:
        if isinstance(f, SparseFeature):
            out[f.name] = torch.randint(0, f.vocab_size, (batch_size,), generator=g)
        else:
            out[f.name] = torch.randn(batch_size, generator=g)
    return out


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter warns about torchvision ops and dim names on every call, and onnxscript's optimizer
    logs every constant it does not fold at INFO; none of it is actionable."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: MultiTaskModel, path: Union[str, os.PathLike], opset_version: int = 18) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ``path``; the file appears only once it is complete."""
    path = Path(path)
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    names = [f.name for f in cpu_model.features]
    wrapper = _PositionalInputs(cpu_model, names)
    example = example_inputs(cpu_model, batch_size=4)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = (tuple({0: batch} for _ in names),)  # one entry: the *columns tuple
    with atomic_path(path, suffix=".onnx.tmp") as tmp, torch.no_grad(), _quiet_exporter():
        torch.onnx.export(wrapper, tuple(example[n] for n in names), str(tmp), input_names=names,
                          output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                          opset_version=opset_version, external_data=False, dynamo=True, verbose=False)
    return path
