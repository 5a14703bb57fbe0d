"""``MTLTrainer``: Torch-RecHub's training API (fit / evaluate / predict) over any ``MultiTaskModel``.

Model-specific behaviour comes from the model's hooks (``training_targets``, ``auxiliary_loss``,
``extra_outputs``/``extra_targets``, ``last_shared_parameters``) and task weighting from
``mtl_models.weighting``; the trainer never asks which architecture it holds.

Per-epoch metric keys (``history`` entries and ``Callback.on_epoch_end``): ``train/{task}/loss``,
``train/loss`` (weighted task losses + weighted auxiliary loss, mean over steps), ``val/{task}/auc``,
``val/{task}/logloss`` (classification), ``val/{task}/rmse``, ``val/{task}/mae`` (regression), the same
for a model's extra outputs (ESMM: ``val/cvr/auc``), ``val/monitor`` and ``weight/{task}``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..allocator import retain_freed_memory
from ..device import DeviceSpec
from ..models.base import MultiTaskModel
from ..weighting import Weighting, build_weighting
from .batches import split_batch, to_device
from .callbacks import Callback, CallbackList, StopTraining
from .checkpoint import link_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistContext, setup_distributed
from .inference import InferenceMixin
from .losses import NonFiniteCheck, TaskLosses
from .monitor import Monitor
from .setup import CompileArg, autocast, build_optimizer, default_mixed_precision, trainer_device, training_module
from .state import BEST_FILE, LAST_FILE, StateMixin

__all__ = ["MTLTrainer"]

log = logging.getLogger("mtl_models.trainer")


class MTLTrainer(InferenceMixin, StateMixin):
    """Trains a ``MultiTaskModel``; see the module docstring for the metric keys.

    ``adaptive_params={"method": "equal" | "uwl" | "gradnorm", ...}`` picks the task weighting (extra keys go
    to the method, ``lr`` sets its own learning rate). ``monitor`` is ``"mean"`` (mean over tasks of AUC, and
    of -RMSE for regression tasks; higher is better) or a metric key such as ``"val/ctr/auc"`` or
    ``"val/price/rmse"`` whose direction follows the metric. ``model_path`` receives ``last.pt`` (everything
    ``fit(..., resume=True)`` needs) and ``best.pt``, the best epoch's ``last.pt`` (a hard link, or a copy where the
    filesystem has none: the state is serialised once per epoch).

    ``compile=True`` trains through ``torch.compile(model)``; a dict passes its keys to ``torch.compile`` (e.g.
    ``{"mode": "max-autotune"}``; ``{}`` is the same as True); False or None train eagerly. Evaluation, prediction
    and export use the eager model.

    ``retain_cpu_memory=True`` (opt-in: it changes the whole process) raises glibc's mmap and trim thresholds on
    CPU, so freed activations stay mapped between steps instead of page-faulting in again (``mtl_models.allocator``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) the same code trains data-parallel: the trainer joins the process
    group (``backend``: ``nccl`` on CUDA, ``gloo`` on CPU, unless the caller initialised one), takes
    ``cuda:LOCAL_RANK`` when the device is ``"auto"``/``"cuda"``, wraps the model in
    ``DistributedDataParallel``, shards loaders that have ``shard`` (``TensorLoader``, ``ParquetLoader``; the batch size stays
    the global batch), evaluates on the whole validation set (every rank's predictions gathered), and only
    rank 0 writes checkpoints, exports ONNX and runs the callbacks (their ``StopTraining`` reaches every rank).
    See docs/distributed.md.
    """

    def __init__(self, model: MultiTaskModel, task_types: Optional[Sequence[str]] = None,
                 optimizer_fn: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
                 optimizer_params: Optional[Mapping[str, Any]] = None,
                 scheduler_fn: Optional[Callable[..., Any]] = None, scheduler_params: Optional[Mapping[str, Any]] = None,
                 adaptive_params: Optional[Mapping[str, Any]] = None, n_epoch: int = 10,
                 earlystop_taskid: Optional[int] = None, earlystop_patience: int = 10, device: DeviceSpec = "auto",
                 gpus: Optional[Sequence[int]] = None, model_path: str | os.PathLike = "./",
                 monitor: str = "mean", auxiliary_weight: Optional[float] = None,
                 callbacks: Optional[Iterable[Callback]] = None, task_names: Optional[Sequence[str]] = None,
                 progress: bool = True, compile: CompileArg = False,
                 mixed_precision: Optional[bool] = None,
                 seed: Optional[int] = None, nan_check_every: Optional[int] = None,
                 backend: Optional[str] = None, find_unused_parameters: bool = False,
                 retain_cpu_memory: bool = False) -> None:
        if not isinstance(model, MultiTaskModel):
            raise TypeError(f"model must be a mtl_models MultiTaskModel, got {type(model).__name__}")
        if task_types is not None and list(task_types) != list(model.task_types):
            raise ValueError(f"task_types {list(task_types)} differ from the model's {model.task_types}")
        self.task_types = list(model.task_types)
        self.n_task = len(self.task_types)
        self.task_names: Optional[list[str]] = self._check_names(task_names) if task_names is not None else None
        self.device = trainer_device(device)
        self.dist: DistContext = setup_distributed(self.device, backend)
        self.model = model.to(self.device)
        self.n_epoch, self.patience = int(n_epoch), int(earlystop_patience)
        self.model_path = Path(model_path)
        self.monitor = monitor if earlystop_taskid is None else f"task:{int(earlystop_taskid)}"
        self.auxiliary_weight = float(model.default_auxiliary_weight if auxiliary_weight is None else auxiliary_weight)
        self.callbacks = CallbackList(callbacks)
        self.progress, self.seed = progress and self.dist.is_main, seed
        if retain_cpu_memory and self.device.type == "cpu":
            retain_freed_memory()  # no page faults on every step's fresh activations (see mtl_models/allocator.py)
        self.gpus = gpus  # accepted for Torch-RecHub compatibility; one device per trainer
        self._setup_weighting_and_optimizer(adaptive_params, optimizer_fn, optimizer_params, scheduler_fn,
                                            scheduler_params)
        self.mixed_precision = default_mixed_precision(self.device, mixed_precision)
        self._train_model = training_module(self.model, self.dist, self.device, compile, find_unused_parameters)
        self.nan_check_every = int(nan_check_every or (1 if self.device.type == "cpu" else 50))
        self._losses = TaskLosses(self.task_types, self.device)
        self._reset_progress()

    def _setup_weighting_and_optimizer(self, adaptive_params: Optional[Mapping[str, Any]],
                                       optimizer_fn: Callable[..., torch.optim.Optimizer],
                                       optimizer_params: Optional[Mapping[str, Any]],
                                       scheduler_fn: Optional[Callable[..., Any]],
                                       scheduler_params: Optional[Mapping[str, Any]]) -> None:
        self.adaptive_params = dict(adaptive_params or {})
        self.weighting: Weighting = build_weighting(self.adaptive_params, self.task_types, self.model).to(self.device)
        if self.dist.enabled:
            self.weighting.distribute(self.dist.mean)
            self._sync_weighting_from_rank0()
        self.optimizer = build_optimizer(optimizer_fn, optimizer_params, self.model, self.weighting,
                                         self.adaptive_params, self.device)
        self.scheduler = scheduler_fn(self.optimizer, **(scheduler_params or {})) if scheduler_fn else None

    def _reset_progress(self) -> None:
        # a trailing 1-row training batch is skipped, as BatchNorm cannot normalise it (a first one is the
        # model's one-line error: every batch has one row)
        self._batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        self._dropped_row_warned = False
        self.best_score: float = -math.inf
        self.best_epoch: int = -1
        self.history: list[dict[str, float]] = []
        self._bad_epochs = 0
        self._global_step = 0

    # ------------------------------------------------------------------ helpers
    def _check_names(self, names: Sequence[str]) -> list[str]:
        names = [str(n) for n in names]
        if len(names) != self.n_task or len(set(names)) != len(names):
            raise ValueError(f"task_names must be {self.n_task} distinct names, got {names}")
        return names

    def _resolve_task_names(self, loader: Any) -> list[str]:
        if self.task_names is None:
            names = getattr(loader, "task_names", None)
            self.task_names = self._check_names(names) if names else [f"task{i}" for i in range(self.n_task)]
        return self.task_names

    def _shard(self, loader: Any, pad: bool) -> tuple[Any, bool]:
        """This rank's part of ``loader`` when data-parallel and the loader can shard itself; a loader that
        cannot (a ``DataLoader``) is used as given: with a ``DistributedSampler`` for training, or read whole
        by every rank for evaluation (then nothing is gathered)."""
        if self.dist.enabled and hasattr(loader, "shard"):
            return loader.shard(self.dist.rank, self.dist.world_size, pad=pad), True
        return loader, False

    def _sync_weighting_from_rank0(self) -> None:
        self.dist.broadcast_tensors(list(self.weighting.state_dict().values()))

    def _prepare_loader(self, loader: Any) -> Any:
        """Batches delivered on the trainer's device by the loaders that can (``TensorLoader``, ``ParquetLoader``)."""
        if hasattr(loader, "to") and hasattr(loader, "set_epoch") and getattr(loader, "device", None) != self.device:
            loader.to(self.device)
        return loader

    def task_losses(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: ``[B, T]`` -> ``[T]``: BCE on classification columns, MSE on regression columns."""
        return self._losses(pred, target)

    def _warn_dropped_row(self, epoch: int) -> None:
        if not self._dropped_row_warned:
            log.warning("epoch %d: skipped the training loader's last batch of 1 row, which BatchNorm cannot "
                        "normalise (once per fit; other batch sizes avoid it)", epoch)
            self._dropped_row_warned = True

    # ------------------------------------------------------------------ training
    def _start_epoch(self, loader: Any, epoch: int) -> None:
        self.model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):  # DataLoader + DistributedSampler
            loader.sampler.set_epoch(epoch)
        if self.dist.enabled:  # each rank its own dropout stream, reproducible from (seed, epoch, rank) on resume
            torch.manual_seed(((self.seed or 0) * 1_000_003 + epoch) * 1009 + self.dist.rank)

    def _train_epoch(self, loader: Any, epoch: int) -> dict[str, float]:
        self._start_epoch(loader, epoch)
        check = NonFiniteCheck(self.task_names + ["auxiliary"], self.nan_check_every, epoch, self.device)
        sums = torch.zeros(self.n_task + 1, device=self.device)  # [T + 1]: task losses, weighted total; no syncs
        n_steps = 0
        bar = tqdm(loader, total=len(loader) if hasattr(loader, "__len__") else None, desc=f"epoch {epoch}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            x, y = split_batch(to_device(batch, self.device))
            if y is None:
                raise ValueError("the training loader must yield (x, y) batches")
            if n_steps and len(y) == 1 and self._batch_norm:
                self._warn_dropped_row(epoch)  # a loader's remainder of one row: BatchNorm cannot train on it
                continue
            sums += self._train_step(x, y, step, check)
            n_steps += 1
        bar.close()
        check.finish()
        if n_steps == 0:
            raise ValueError("the training loader yielded no batches")
        means = self.dist.mean(sums / n_steps)  # [T + 1], over ranks
        out = {f"train/{n}/loss": v for n, v in zip(self.task_names, means[:-1].tolist())}
        out["train/loss"] = float(means[-1])
        return out

    def _train_step(self, x: Mapping[str, Tensor], y: Tensor, step: int, check: NonFiniteCheck) -> Tensor:
        """One optimizer step -> ``[T + 1]``: the task losses and the weighted total, detached."""
        target = self.model.training_targets(y)  # [B, T]
        with autocast(self.device, self.mixed_precision):
            pred = self._train_model(x)
        pred = pred.float()  # [B, T]
        losses = self.task_losses(pred, target)  # [T]
        aux = self.model.auxiliary_loss(pred) if self.auxiliary_weight > 0 else None
        extra = self.auxiliary_weight * aux if aux is not None else None
        check.step(step, losses, extra)
        self.optimizer.zero_grad(set_to_none=True)
        weights = self.weighting.backward(losses, extra)  # [T]
        self.optimizer.step()
        self.weighting.after_step()
        self._global_step += 1
        total = (weights * losses.detach()).sum() + (extra.detach() if extra is not None else 0.0)
        return torch.cat([losses.detach(), total.reshape(1)])

    def _monitor_value(self, metrics: dict[str, float]) -> tuple[float, float]:
        """-> (reported monitor value, score where higher is better)."""
        return Monitor(self.monitor, tuple(self.task_names), tuple(self.task_types)).read(metrics)

    def fit(self, train_dataloader: Any, val_dataloader: Any = None, resume: bool = False) -> "MTLTrainer":
        """Train for ``n_epoch`` epochs with early stopping; the best epoch's weights are in ``self.model`` after.

        ``resume=True`` continues from ``model_path/last.pt`` when it exists (exactly, on CPU: optimizer,
        weighting, RNG, history and patience are restored; the loader's order depends only on the epoch).
        """
        self._resolve_task_names(train_dataloader)
        self._prepare_loader(train_dataloader)
        if val_dataloader is not None:
            self._prepare_loader(val_dataloader)
        train_loader, _ = self._shard(train_dataloader, pad=True)
        start = self._begin(resume)
        if self.dist.is_main:
            self.callbacks.on_fit_start(self)
        stop = self._bad_epochs >= self.patience
        for epoch in range(start, self.n_epoch):
            if stop:
                break
            metrics = self._train_epoch(train_loader, epoch)
            if val_dataloader is not None:
                scores = self.evaluate(self.model, val_dataloader)
                metrics.update({f"val/{task}/{m}": v for task, d in scores.items() for m, v in d.items()})
            stop = self._end_epoch(epoch, metrics)
        self.restore_best()
        if self.dist.is_main:
            self.callbacks.on_fit_end(self)
        return self

    def _begin(self, resume: bool) -> int:
        """The first epoch to train: after ``last.pt``'s when resuming from one, else 0 with a fresh history."""
        last_path = self.model_path / LAST_FILE
        if resume and self.dist.broadcast_object(last_path.exists()):  # every rank reads it: shared storage
            start = self._load_state(load_checkpoint(last_path, map_location=self.device)) + 1
            if self.dist.is_main and self.best_epoch == start - 1:  # stopped between writing last.pt and best.pt
                link_checkpoint(last_path, self.model_path / BEST_FILE)
            return start
        if self.seed is not None:
            torch.manual_seed(self.seed)
        self.best_score, self.best_epoch, self.history, self._bad_epochs = -math.inf, -1, [], 0
        return 0

    def _end_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Score, record and checkpoint the epoch, run the callbacks -> whether to stop."""
        value, score = self._monitor_value(metrics)
        metrics["val/monitor"] = value
        metrics.update({f"weight/{n}": w for n, w in zip(self.task_names, self.weighting.current_weights().tolist())})
        self.history.append(metrics)
        improved = score > self.best_score  # NaN never improves
        if improved:
            self.best_score, self.best_epoch, self._bad_epochs = score, epoch, 0
        else:
            self._bad_epochs += 1
        if self.scheduler is not None:
            self.scheduler.step()
        if self.dist.is_main:
            last_path = self.model_path / LAST_FILE
            save_checkpoint(last_path, self._full_state(epoch))
            if improved:  # best.pt is the best epoch's last.pt: linked, not serialised a second time
                link_checkpoint(last_path, self.model_path / BEST_FILE)
            self._report(epoch, metrics)
        return self._epoch_callbacks(epoch, metrics) or self._bad_epochs >= self.patience

    def _epoch_callbacks(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Run the callbacks (rank 0 only: one MLflow run, one pruning decision) -> whether to stop. Every rank
        learns rank 0's outcome, so all stop together and a failure there does not leave the others waiting."""
        outcome, error = None, None
        if self.dist.is_main:
            try:
                self.callbacks.on_epoch_end(self, epoch, metrics)
            except StopTraining as err:
                log.info("training stopped by a callback at epoch %d: %s", epoch, err)
                outcome = "stop"
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the other ranks are told
                outcome, error = "error", err
        outcome = self.dist.broadcast_object(outcome)
        if error is not None:
            raise error
        if outcome == "error":
            raise RuntimeError(f"a callback failed on rank 0 at epoch {epoch}")
        return outcome == "stop"

    def _report(self, epoch: int, metrics: dict[str, float]) -> None:
        weights = " ".join(f"{k[7:]}={v:.3f}" for k, v in metrics.items() if k.startswith("weight/"))
        line = (f"epoch {epoch}: train/loss={metrics['train/loss']:.4f} val/monitor={metrics['val/monitor']:.4f} "
                f"weights[{weights}]" + ("  *best*" if self.best_epoch == epoch else ""))
        log.info(line)
        if self.progress:
            tqdm.write(line)
