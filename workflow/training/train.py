"""The training step: prepared Parquet + feature spec + flat hyperparameters -> a trained model folder.

The folder it writes is self-contained for the later steps (export, registration, serving):
``model.pt`` (best weights, plain tensors), ``params.json``, ``metrics.json`` and ``feature_spec.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow.parquet as pq
import torch

from mtl_models.trainer import task_mean

from ..data.feature_spec import SPEC_FILE, FeatureSpec
from .model_factory import build_model, resolve_params, single_task_family

__all__ = ["TrainResult", "ExportResult", "train", "export", "load_trained", "predict_prepared", "split_loader",
           "SPEC_FILE"]

PathLike = Union[str, os.PathLike]
WEIGHTS_FILE, PARAMS_FILE, METRICS_FILE, ONNX_FILE = "model.pt", "params.json", "metrics.json", "model.onnx"


@dataclass
class TrainResult:
    model_name: str
    params: dict[str, Any]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    test_metrics: dict[str, dict[str, float]]
    test_score: float
    out_dir: Path
    checkpoint_path: Path
    n_parameters: int
    train_seconds: float
    task_names: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        d = asdict(self)
        d.update(out_dir=str(self.out_dir), checkpoint_path=str(self.checkpoint_path))
        return json.dumps(d, indent=2)


@dataclass
class ExportResult:
    onnx_path: Path
    parity_max_abs_diff: float
    n_rows_checked: int


def only_tasks(spec: FeatureSpec, tasks: Sequence[str]) -> FeatureSpec:
    """A copy of ``spec`` whose labels are ``tasks`` (in that order); an unknown task is a one-line error."""
    unknown = [t for t in tasks if t not in spec.label_names]
    if unknown or not tasks:
        raise ValueError(f"tasks {list(tasks)} must be a non-empty subset of the labels {spec.label_names}")
    by_name = {lb.name: lb for lb in spec.labels}
    return replace(spec, labels=[by_name[t] for t in tasks])


def single_task_baselines(prepared_dir: PathLike, model_name: str, out_dir: PathLike, params: Mapping[str, Any],
                          n_epoch: int = 10, patience: int = 3, device: str = "auto", seed: int = 42,
                          ) -> dict[str, TrainResult]:
    """One model of ``model_name``'s family per task, trained on that task alone with the same params and split,
    into ``out_dir/<task>``: what multi-task learning adds is the multi-task model's test metric minus these."""
    from .model_factory import default_params

    family = single_task_family(model_name)  # the zoo entry's one-task form
    allowed = default_params(family)
    p = {k: v for k, v in resolve_params(model_name, params).items() if k in allowed}
    if family == "shared_bottom" and not p.get("bottom_dims"):
        p.pop("bottom_dims", None)  # ESMM without a bottom: the family default
    spec = _spec(prepared_dir)
    return {task: train(prepared_dir, family, Path(out_dir) / task, params=p, n_epoch=n_epoch, patience=patience,
                        device=device, seed=seed, progress=False, tasks=[task]) for task in spec.label_names}


def _spec(prepared_dir: PathLike) -> FeatureSpec:
    path = Path(prepared_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    return FeatureSpec.load(path)


def _column(table: Any, name: str) -> np.ndarray:
    # one owned, writable buffer per column (torch refuses to wrap Arrow's read-only memory silently)
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False, writable=True)


def split_loader(prepared_dir: PathLike, split: str, spec: FeatureSpec, batch_size: int = 1024,
                 shuffle: bool = False, seed: int = 0, device: str = "cpu", with_labels: bool = True):
    """A fast in-memory loader over ``<split>.parquet`` (columns read straight into tensors, no row loop)."""
    from mtl_models import make_loader

    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare step first")
    columns = spec.feature_names + (spec.label_names if with_labels else [])
    table = pq.read_table(path, columns=columns)
    x = {name: _column(table, name) for name in spec.feature_names}
    y = {name: _column(table, name) for name in spec.label_names} if with_labels else None
    return make_loader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device,
                       task_names=spec.label_names if with_labels else None)


def _trainer(model, params: Mapping[str, Any], out_dir: Path, n_epoch: int, patience: int, device: str, seed: int,
             callbacks: Iterable[Any], progress: bool, task_names: list[str]):
    from mtl_models import MTLTrainer

    adaptive: dict[str, Any] = {"method": params["weighting"]}
    if params["weighting"] == "gradnorm":
        adaptive["alpha"] = float(params["gradnorm_alpha"])
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}  # AdamW: weight decay apart from Adam's step
    if params["optimizer"] not in optimizers:
        raise ValueError(f"optimizer {params['optimizer']!r} is not one of {sorted(optimizers)}")
    if params["lr_schedule"] not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule {params['lr_schedule']!r} is not one of ['constant', 'cosine']")
    cosine = params["lr_schedule"] == "cosine"  # annealed to 0 over n_epoch, stepped once per epoch
    return MTLTrainer(model=model, optimizer_fn=optimizers[params["optimizer"]],
                      optimizer_params={"lr": float(params["lr"]), "weight_decay": float(params["weight_decay"])},
                      scheduler_fn=torch.optim.lr_scheduler.CosineAnnealingLR if cosine else None,
                      scheduler_params={"T_max": max(int(n_epoch), 1)} if cosine else None,
                      adaptive_params=adaptive, n_epoch=n_epoch, earlystop_patience=patience, device=device,
                      model_path=out_dir / "checkpoints", callbacks=list(callbacks), progress=progress, seed=seed,
                      task_names=task_names, retain_cpu_memory=True)  # the step's process trains only: keep freed memory


def train(prepared_dir: PathLike, model_name: str, out_dir: PathLike, params: Optional[Mapping[str, Any]] = None,
          n_epoch: int = 10, patience: int = 3, device: str = "auto", seed: int = 42,
          callbacks: Iterable[Any] = (), progress: bool = True, resume: bool = False,
          tasks: Optional[Sequence[str]] = None) -> TrainResult:
    """Train ``model_name`` on the prepared train split, early-stop on val, score on test.

    ``out_dir`` is filled in a temporary sibling folder and renamed into place when complete; checkpoints
    for ``resume`` live in ``out_dir/checkpoints`` (kept across a failed attempt).

    Under ``torchrun`` every rank calls this (see ``workflow.training.torchrun``): ``batch_size`` stays the global
    batch, the test metrics cover the whole test split, and only rank 0 writes ``out_dir``.

    ``tasks``: train on these labels only (a single-task baseline), the saved spec listing just them.
    """
    spec = _spec(prepared_dir)
    if tasks is not None:
        spec = only_tasks(spec, tasks)
    p = resolve_params(model_name, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(model_name, spec, p)
    bs = int(p["batch_size"])
    train_dl = split_loader(prepared_dir, "train", spec, bs, shuffle=True, seed=seed)
    val_dl = split_loader(prepared_dir, "val", spec, max(bs, 4096))
    test_dl = split_loader(prepared_dir, "test", spec, max(bs, 4096))
    trainer = _trainer(model, p, out_dir, n_epoch, patience, device, seed, callbacks, progress, spec.label_names)
    start = time.perf_counter()
    trainer.fit(train_dl, val_dl, resume=resume)
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate(trainer.model, test_dl)

    result = TrainResult(model_name=model_name, params=p, best_epoch=int(trainer.best_epoch),
                         best_score=float(trainer.best_score), history=list(trainer.history), test_metrics=metrics,
                         test_score=task_mean(metrics, spec.label_names, spec.task_types), out_dir=out_dir,
                         checkpoint_path=out_dir / WEIGHTS_FILE, n_parameters=sum(x.numel() for x in model.parameters()),
                         train_seconds=seconds, task_names=list(spec.label_names))
    if trainer.dist.is_main:
        _write_outputs(out_dir, trainer.model, spec, result)
    trainer.dist.barrier()  # the other ranks return once the folder is complete
    return result


def _write_outputs(out_dir: Path, model, spec: FeatureSpec, result: TrainResult) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
        (staging / PARAMS_FILE).write_text(json.dumps({"model_name": result.model_name, "params": result.params}, indent=2))
        (staging / METRICS_FILE).write_text(result.to_json())
        spec.save(staging / SPEC_FILE)
        for item in staging.iterdir():  # each file appears complete or not at all
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_trained(out_dir: PathLike) -> tuple[torch.nn.Module, FeatureSpec, dict[str, Any]]:
    """The trained model (eval mode, CPU), its feature spec and ``{"model_name", "params"}``."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / PARAMS_FILE).read_text())
    spec = FeatureSpec.load(out_dir / SPEC_FILE)
    model = build_model(meta["model_name"], spec, meta["params"])
    model.load_state_dict(torch.load(out_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec, meta


@torch.no_grad()
def predict_prepared(out_dir: PathLike, prepared_dir: PathLike, split: str = "test", batch_size: int = 8192) -> np.ndarray:
    """``[N, n_task]`` predictions of the trained model on a prepared split, in file order."""
    model, spec, _ = load_trained(out_dir)
    loader = split_loader(prepared_dir, split, spec, batch_size, with_labels=False)
    return np.concatenate([model(batch).numpy() for batch in loader])


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
    source = Path(prepared_dir) if prepared_dir is not None else None
    if source is not None:
        table = pq.read_table(source / f"{split}.parquet", columns=spec.feature_names).slice(0, n_check)
        x = {n: torch.from_numpy(_column(table, n)) for n in spec.feature_names}
    else:
        from mtl_models.onnx_export import example_inputs
        x = example_inputs(model, batch_size=n_check)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {n: v.numpy() for n, v in x.items()})
    diff = float(np.abs(onnx_out - model(x).detach().numpy()).max())
    if not diff <= tolerance:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(f"ONNX parity check failed: max abs diff {diff:.3g} > {tolerance:g}")
    return ExportResult(onnx_path=onnx_path, parity_max_abs_diff=diff, n_rows_checked=len(onnx_out))


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``python -m workflow.training.train --prepared DIR --model NAME --out DIR [--resume]``: one training run."""
    import argparse
    import sys

    from ..data.errors import DataError

    ap = argparse.ArgumentParser(prog="python -m workflow.training.train", description=main.__doc__)
    ap.add_argument("--prepared", required=True, help="prepared data folder (the prepare step's output)")
    ap.add_argument("--model", required=True, help="model name, e.g. mmoe")
    ap.add_argument("--out", required=True, help="output folder (checkpoints in OUT/checkpoints)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--params", default="{}", help="JSON object of hyperparameters")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt when present")
    args = ap.parse_args(None if argv is None else list(argv))
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("must be a JSON object")
    except ValueError as exc:
        print(f"workflow.training.train: error: --params is not a JSON object: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(args.prepared, args.model, args.out, params=params, n_epoch=args.epochs,
                       patience=args.patience, device=args.device, seed=args.seed, progress=False,
                       resume=args.resume)
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"workflow.training.train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"best_epoch": result.best_epoch, "best_score": result.best_score,
                      "test_score": result.test_score, "out_dir": str(result.out_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
