"""``MTLTrainer``'s evaluation, prediction and export: the eager model over a loader, rows gathered from every rank
when data-parallel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..metrics import task_metrics
from ..onnx_export import export_onnx as _export_onnx
from .batches import split_batch, to_device
from .scores import Scores

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import MTLTrainer

__all__ = ["InferenceMixin"]

Extras = dict[str, tuple[Tensor, Tensor]]  # name -> (predictions [n], labels [n]) of the rows it is defined on


class _Rows:
    """One pass's predictions, labels and extra outputs, batch by batch."""

    def __init__(self) -> None:
        self.preds: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.extras: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def add_labels(self, model: nn.Module, x: Any, y: Tensor, want_extra: bool) -> None:
        self.labels.append(model.training_targets(y) if hasattr(model, "training_targets") else y)
        targets = model.extra_targets(y) if want_extra else {}
        if targets:
            outputs = model.extra_outputs(x)
            for name, (lab, mask) in targets.items():
                self.extras.setdefault(name, []).append((outputs[name].float()[mask], lab[mask]))

    def tensors(self, n_task: int) -> tuple[Tensor, Optional[Tensor], Extras]:
        pred = torch.cat(self.preds).cpu() if self.preds else torch.empty(0, n_task)  # [n, T]
        lab = torch.cat(self.labels).cpu() if self.labels else None  # [n, T]
        extra = {n: (torch.cat([a for a, _ in v]).cpu(), torch.cat([b for _, b in v]).cpu())
                 for n, v in self.extras.items()}
        return pred, lab, extra


class InferenceMixin:
    """``evaluate`` / ``predict`` / ``export_onnx`` of ``MTLTrainer`` (it provides the attributes used here)."""

    @torch.no_grad()
    def _collect(self: "MTLTrainer", model: nn.Module, loader: Any,
                 with_labels: bool) -> tuple[Tensor, Optional[Tensor], Extras]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        if device == self.device:
            self._prepare_loader(loader)
        loader, sharded = self._shard(loader, pad=False)
        rows = _Rows()
        want_extra = with_labels and hasattr(model, "extra_targets")
        try:
            for batch in loader:
                x, y = split_batch(to_device(batch, device))
                # float32 even when training under bf16 autocast: bf16 probabilities keep 8 significant bits, so
                # nearby scores tie and AUC drops (0.5 for a freshly initialised model whose scores all round alike)
                rows.preds.append(model(x).float())  # [B, T]
                if with_labels and y is not None:
                    rows.add_labels(model, x, y, want_extra)
        finally:
            model.train(was_training)
        pred, lab, extra = rows.tensors(self.n_task)
        return self._gathered(pred, lab, extra) if sharded else (pred, lab, extra)

    def _gathered(self: "MTLTrainer", pred: Tensor, lab: Optional[Tensor],
                  extra: Extras) -> tuple[Tensor, Optional[Tensor], Extras]:
        """Every rank's rows, in loader order: metrics over the whole set, each row once."""
        gather = self.dist.gather_rows
        extra = {n: (gather(a), gather(b)) for n, (a, b) in sorted(extra.items())}
        return gather(pred), (gather(lab) if lab is not None else None), extra  # [N, T]

    def evaluate(self: "MTLTrainer", model: nn.Module, data_loader: Any) -> Scores:
        """Metrics on the loader's rows, as a ``Scores`` dict: ``scores["click"]`` is one task's
        ``{"auc", "logloss"}`` (classification) or ``{"rmse", "mae"}`` (regression), against the model's training
        targets (ESMM: click and click*conversion), and ``scores[i]``, as in Torch-RecHub, is task i's primary
        metric: AUC for a classification task, RMSE for a regression task. Extra outputs a model declares
        (ESMM's ``"cvr"``: pCVR vs conversion on clicked rows) are added under their own name only."""
        names = self._resolve_task_names(data_loader)
        pred, lab, extra = self._collect(model, data_loader, with_labels=True)
        if lab is None:
            raise ValueError("evaluate needs a loader that yields (x, y) batches")
        p, t = pred.numpy(), lab.numpy()
        out = {n: task_metrics(tt, t[:, i], p[:, i]) for i, (n, tt) in enumerate(zip(names, self.task_types))}
        for name, (ep, el) in extra.items():
            out[name if name not in out else f"{name}_extra"] = task_metrics("classification", el.numpy(), ep.numpy())
        return Scores(out, names, self.task_types)

    def predict(self: "MTLTrainer", model: nn.Module, data_loader: Any) -> np.ndarray:
        """``[N, n_task]`` predictions in loader order; labels the loader yields are ignored."""
        return self._collect(model, data_loader, with_labels=False)[0].numpy()

    def export_onnx(self: "MTLTrainer", path: str | os.PathLike, opset_version: int = 18) -> Path:
        """ONNX file with one named input per feature and ``predictions [batch, n_task]`` (dynamic batch);
        data-parallel, only rank 0 writes it (every rank gets the path)."""
        if not self.dist.is_main:
            return Path(path)
        return _export_onnx(self.model, path, opset_version=opset_version)
