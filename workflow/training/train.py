"""The training step: prepared Parquet + feature spec + flat hyperparameters -> a trained model folder.

The folder it writes is self-contained for the later steps (export, registration, serving):
``model.pt`` (best weights, plain tensors), ``params.json``, ``metrics.json`` (with the test and validation
scores, ``evaluate``), ``feature_spec.json`` and, for the pipeline's train step, ``plots/``. The ONNX export is
``export``; the file names and loaders are ``artifacts``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch

from mtl_models.atomic import atomic_path

from ..data.feature_spec import SPEC_FILE, FeatureSpec
from ..errors import cli_error
from .artifacts import METRICS_FILE, PARAMS_FILE, PLOTS_DIR, WEIGHTS_FILE, read_spec, split_labels, split_loader
from .evaluate import check_scored_on_labels, evaluate, write_plots
from .model_factory import build_model, resolve_params, single_task_family

__all__ = ["TrainResult", "train", "single_task_baselines", "only_tasks", "main"]

PathLike = Union[str, os.PathLike]


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
    val_score: float = math.nan  # task_mean of the restored best checkpoint's validation metrics: model selection
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # that checkpoint's, with intervals

    def to_json(self) -> str:
        d = asdict(self)
        d.update(out_dir=str(self.out_dir), checkpoint_path=str(self.checkpoint_path))
        return json.dumps(d, indent=2)


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
    spec = read_spec(prepared_dir)
    return {task: train(prepared_dir, family, Path(out_dir) / task, params=p, n_epoch=n_epoch, patience=patience,
                        device=device, seed=seed, progress=False, tasks=[task]) for task in spec.label_names}


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
          tasks: Optional[Sequence[str]] = None, plots: bool = False, intervals: Optional[bool] = None) -> TrainResult:
    """Train ``model_name`` on the prepared train split, early-stop on val, score on test (``evaluate``).

    ``out_dir`` is filled in a temporary sibling folder and renamed into place when complete; checkpoints
    for ``resume`` live in ``out_dir/checkpoints`` (kept across a failed attempt).

    Under ``torchrun`` every rank calls this (see ``workflow.training.torchrun``): ``batch_size`` stays the global
    batch, the test metrics cover the whole test split, and only rank 0 writes ``out_dir``.

    ``tasks``: train on these labels only (a single-task baseline), the saved spec listing just them.
    ``plots``: also draw ``out_dir/plots/`` (the pipeline's train step; search trials and baselines skip it).
    ``intervals`` (default: as ``plots``): also the val and test metrics with their 95 % intervals, GAUC and
    calibration (``evaluate.with_intervals``; about a second per model, so search trials skip it).
    """
    spec = read_spec(prepared_dir)
    if tasks is not None:
        spec = only_tasks(spec, tasks)
    p = resolve_params(model_name, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(model_name, spec, p)
    check_scored_on_labels(model, model_name, prepared_dir, spec)
    bs = int(p["batch_size"])
    train_dl = split_loader(prepared_dir, "train", spec, bs, shuffle=True, seed=seed)
    val_dl = split_loader(prepared_dir, "val", spec, max(bs, 4096))
    test_dl = split_loader(prepared_dir, "test", spec, max(bs, 4096))
    trainer = _trainer(model, p, out_dir, n_epoch, patience, device, seed, callbacks, progress, spec.label_names)
    start = time.perf_counter()
    trainer.fit(train_dl, val_dl, resume=resume)
    seconds = time.perf_counter() - start
    with_intervals = plots if intervals is None else intervals
    scored = evaluate(trainer, test_dl, spec, prepared_dir if with_intervals else None, val_dl)

    result = TrainResult(model_name=model_name, params=p, best_epoch=int(trainer.best_epoch),
                         best_score=float(trainer.best_score), history=list(trainer.history),
                         test_metrics=scored.test_metrics, test_score=scored.test_score, out_dir=out_dir,
                         checkpoint_path=out_dir / WEIGHTS_FILE, n_parameters=sum(x.numel() for x in model.parameters()),
                         train_seconds=seconds, task_names=list(spec.label_names), val_score=scored.val_score,
                         val_metrics=scored.val_metrics or {})
    if trainer.dist.is_main:
        if plots:  # before metrics.json, so a folder with metrics has its plots
            write_plots(out_dir / PLOTS_DIR, model_name, result.history, split_labels(prepared_dir, "test", spec),
                        scored.test_predictions, spec)
        _write_outputs(out_dir, trainer.model, spec, result)
    trainer.dist.barrier()  # the other ranks return once the folder is complete
    return result


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_outputs(out_dir: Path, model: torch.nn.Module, spec: FeatureSpec, result: TrainResult) -> None:
    """The folder's files, each complete or absent (``atomic_path``); ``metrics.json`` last: its presence means
    the rest is there."""
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    _write_text(out_dir / PARAMS_FILE, json.dumps({"model_name": result.model_name, "params": result.params}, indent=2))
    spec.save(out_dir / SPEC_FILE)
    _write_text(out_dir / METRICS_FILE, result.to_json())


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
                       resume=args.resume, plots=True)
    except (DataError, FileNotFoundError, ValueError) as exc:
        return cli_error("workflow.training.train", exc)
    print(json.dumps({"best_epoch": result.best_epoch, "best_score": result.best_score,
                      "val_score": result.val_score, "test_score": result.test_score, "out_dir": str(result.out_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
