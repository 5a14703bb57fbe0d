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

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..allocator import retain_freed_memory
from ..data import TensorLoader
from ..device import DeviceSpec, resolve_device
from ..metrics import task_metrics
from ..models.base import MultiTaskModel
from ..onnx_export import export_onnx as _export_onnx
from ..weighting import Weighting, build_weighting
from .callbacks import Callback, CallbackList, StopTraining
from .checkpoint import link_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import DistContext, env_world_size, setup_distributed
from .monitor import Monitor
from .scores import Scores

__all__ = ["MTLTrainer"]

log = logging.getLogger("mtl_models.trainer")

BEST_FILE, LAST_FILE = "best.pt", "last.pt"
CHECKPOINT_FORMAT = 1


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _split_batch(batch: Any) -> tuple[Mapping[str, Tensor], Optional[Tensor]]:
    """``(x, y)`` / ``[x, y]`` / ``x`` -> ``(x, y or None)``; ``y`` may be ``[B, T]`` or a dict of tasks."""
    if isinstance(batch, Mapping):
        return batch, None
    x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(y, Mapping):
        y = torch.stack([v.reshape(-1).float() for v in y.values()], dim=1)  # [B, T]
    elif y is not None:
        y = y.reshape(len(y), -1).float()  # [B, T]
    return x, y


class MTLTrainer:
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
    ``DistributedDataParallel``, shards loaders that have ``shard`` (``TensorLoader``; the batch size stays
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
                 progress: bool = True, compile: Optional[Union[bool, Mapping[str, Any]]] = False,
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
        self.device = resolve_device(device)
        if env_world_size() > 1 and self.device.type == "cuda" and (device is None or str(device) in ("auto", "cuda")):
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
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

        self.adaptive_params = dict(adaptive_params or {})
        self.weighting: Weighting = build_weighting(self.adaptive_params, self.task_types, self.model).to(self.device)
        if self.dist.enabled:
            self.weighting.distribute(self.dist.mean)
            self._sync_weighting_from_rank0()
        opt_params = dict(optimizer_params or {"lr": 1e-3})
        if optimizer_fn in (torch.optim.Adam, torch.optim.AdamW) and not {"fused", "foreach"} & set(opt_params):
            opt_params["fused"] = self.device.type in ("cpu", "cuda")  # one kernel over all parameters
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        w_params = [p for p in self.weighting.parameters() if p.requires_grad]
        if w_params:  # weighting state gets no weight decay
            w_group: dict[str, Any] = {"params": w_params, "weight_decay": 0.0}
            if "lr" in self.adaptive_params:
                w_group["lr"] = float(self.adaptive_params["lr"])
            groups.append(w_group)
        self.optimizer = optimizer_fn(groups, **opt_params)
        self.scheduler = scheduler_fn(self.optimizer, **(scheduler_params or {})) if scheduler_fn else None

        cuda = self.device.type == "cuda"
        self.mixed_precision = (cuda and torch.cuda.is_bf16_supported()) if mixed_precision is None else bool(mixed_precision)
        self._train_model: nn.Module = self.model
        if self.dist.enabled:  # broadcasts rank 0's initial weights, then averages gradients in backward
            from torch.nn.parallel import DistributedDataParallel

            self._train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
        if compile is not None and not isinstance(compile, (bool, Mapping)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile arguments, got {compile!r}")
        compile_kwargs = {} if compile is True else compile  # a dict: torch.compile's keyword arguments
        if isinstance(compile_kwargs, Mapping):
            self._train_model = torch.compile(self._train_model, **compile_kwargs)
        self.nan_check_every = int(nan_check_every or (1 if self.device.type == "cpu" else 50))

        is_cls = [t == "classification" for t in self.task_types]
        self._cls_idx = [i for i, c in enumerate(is_cls) if c]
        self._reg_idx = [i for i, c in enumerate(is_cls) if not c]
        order = torch.tensor(self._cls_idx + self._reg_idx)
        self._inverse = torch.argsort(order).to(self.device)  # [T]: cat(cls, reg) -> task order

        # a trailing 1-row training batch is skipped, as BatchNorm cannot normalise it (a first one is the
        # model's one-line error: every batch has one row)
        self._batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
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

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

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
        if isinstance(loader, TensorLoader) and loader.device != self.device:
            loader.to(self.device)
        return loader

    def _bce(self, p: Tensor, y: Tensor) -> Tensor:
        """Per-column mean BCE on probabilities ``[B, k] -> [k]``. On CPU the fused kernel; it rejects NaN inputs,
        which become NaN losses (reported by task and step). On accelerators an explicit formula with the same
        -100 log clamp, because there the kernel's range check is a fatal device assert."""
        if self.device.type == "cpu":
            try:
                return F.binary_cross_entropy(p, y, reduction="none").mean(0)
            except RuntimeError:
                if bool(torch.isfinite(p).all()):
                    raise  # a genuine range error (a probability outside [0, 1])
        return (-(y * torch.log(p).clamp_min(-100.0) + (1 - y) * torch.log1p(-p).clamp_min(-100.0))).mean(0)

    def task_losses(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: ``[B, T]`` -> ``[T]``: BCE on classification columns, MSE on regression columns."""
        if not self._reg_idx:
            return self._bce(pred, target)
        if not self._cls_idx:
            return (pred - target).pow(2).mean(0)
        cls = self._bce(pred[:, self._cls_idx], target[:, self._cls_idx])
        reg = (pred[:, self._reg_idx] - target[:, self._reg_idx]).pow(2).mean(0)
        return torch.cat([cls, reg]).index_select(0, self._inverse)  # [T]

    def _raise_non_finite(self, values: Tensor, names: list[str], epoch: int, step: int) -> None:
        bad = [f"{n}={v:.4g}" for n, v in zip(names, values.tolist()) if not math.isfinite(v)]
        raise FloatingPointError(f"non-finite training loss ({', '.join(bad)}) at epoch {epoch}, step {step}; "
                                 "lower the learning rate or check the inputs")

    def _warn_dropped_row(self, epoch: int) -> None:
        if not self._dropped_row_warned:
            log.warning("epoch %d: skipped the training loader's last batch of 1 row, which BatchNorm cannot "
                        "normalise (once per fit; other batch sizes avoid it)", epoch)
            self._dropped_row_warned = True

    def _check_deferred(self, first_bad: Tensor, names: list[str], epoch: int) -> None:
        """first_bad: ``[T (+1)]`` first step of this epoch with a non-finite loss, -1 if none (one sync)."""
        steps = first_bad.tolist()
        hit = [s for s in steps if s >= 0]
        if hit:
            step = min(hit)
            values = torch.tensor([math.nan if s == step else 0.0 for s in steps])
            self._raise_non_finite(values, names, epoch, step)

    # ------------------------------------------------------------------ training
    def _train_epoch(self, loader: Any, epoch: int) -> dict[str, float]:
        self.model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):  # DataLoader + DistributedSampler
            loader.sampler.set_epoch(epoch)
        if self.dist.enabled:  # each rank its own dropout stream, reproducible from (seed, epoch, rank) on resume
            torch.manual_seed(((self.seed or 0) * 1_000_003 + epoch) * 1009 + self.dist.rank)
        names = self.task_names + ["auxiliary"]
        loss_sum = torch.zeros(self.n_task, device=self.device)  # [T], accumulated without syncs
        total_sum = torch.zeros((), device=self.device)
        first_bad = torch.full((self.n_task,), -1, dtype=torch.long, device=self.device)  # [T (+1 aux)]
        n_steps = 0
        bar = tqdm(loader, total=len(loader) if hasattr(loader, "__len__") else None, desc=f"epoch {epoch}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            x, y = _split_batch(_to_device(batch, self.device))
            if y is None:
                raise ValueError("the training loader must yield (x, y) batches")
            if n_steps and len(y) == 1 and self._batch_norm:
                self._warn_dropped_row(epoch)  # a loader's remainder of one row: BatchNorm cannot train on it
                continue
            target = self.model.training_targets(y)  # [B, T]
            with self._autocast():
                pred = self._train_model(x)
            pred = pred.float()  # [B, T]
            losses = self.task_losses(pred, target)  # [T]
            aux = self.model.auxiliary_loss(pred) if self.auxiliary_weight > 0 else None
            extra = self.auxiliary_weight * aux if aux is not None else None
            checked = losses.detach() if extra is None else torch.cat([losses.detach(), extra.detach().reshape(1)])
            if self.nan_check_every == 1:
                if not bool(torch.isfinite(checked).all()):
                    self._raise_non_finite(checked, names, epoch, step)
            else:  # accelerator: remember the first bad step on-device, look every nan_check_every steps
                bad = ~torch.isfinite(checked)
                if len(first_bad) < len(bad):
                    first_bad = torch.cat([first_bad, first_bad.new_full((1,), -1)])
                first_bad = torch.where((first_bad < 0) & bad, step, first_bad)
                if (step + 1) % self.nan_check_every == 0:
                    self._check_deferred(first_bad, names, epoch)
            self.optimizer.zero_grad(set_to_none=True)
            weights = self.weighting.backward(losses, extra)  # [T]
            self.optimizer.step()
            self.weighting.after_step()
            loss_sum += losses.detach()
            total_sum += (weights * losses.detach()).sum() + (extra.detach() if extra is not None else 0.0)
            n_steps += 1
            self._global_step += 1
        bar.close()
        if self.nan_check_every > 1:
            self._check_deferred(first_bad, names, epoch)
        if n_steps == 0:
            raise ValueError("the training loader yielded no batches")
        means = self.dist.mean(torch.cat([loss_sum, total_sum.reshape(1)]) / n_steps)  # [T + 1], over ranks
        out = {f"train/{n}/loss": v for n, v in zip(self.task_names, means[:-1].tolist())}
        out["train/loss"] = float(means[-1])
        return out

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
        start = 0
        last_path = self.model_path / LAST_FILE
        main = self.dist.is_main
        if resume and self.dist.broadcast_object(last_path.exists()):  # every rank reads it: shared storage
            start = self._load_state(load_checkpoint(last_path, map_location=self.device)) + 1
            if main and self.best_epoch == start - 1:  # stopped between writing last.pt and linking best.pt
                link_checkpoint(last_path, self.model_path / BEST_FILE)
        else:
            if self.seed is not None:
                torch.manual_seed(self.seed)
            self.best_score, self.best_epoch, self.history, self._bad_epochs = -math.inf, -1, [], 0
        if main:
            self.callbacks.on_fit_start(self)
        stop = self._bad_epochs >= self.patience
        for epoch in range(start, self.n_epoch):
            if stop:
                break
            metrics = self._train_epoch(train_loader, epoch)
            if val_dataloader is not None:
                scores = self.evaluate(self.model, val_dataloader)
                metrics.update({f"val/{task}/{m}": v for task, d in scores.items() for m, v in d.items()})
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
            stop = self._bad_epochs >= self.patience
            if main:
                save_checkpoint(last_path, self._full_state(epoch))
                if improved:  # best.pt is the best epoch's last.pt: linked, not serialised a second time
                    link_checkpoint(last_path, self.model_path / BEST_FILE)
                self._report(epoch, metrics)
            stop = self._epoch_callbacks(epoch, metrics) or stop
        self.restore_best()
        if main:
            self.callbacks.on_fit_end(self)
        return self

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

    # ------------------------------------------------------------------ checkpoints
    def _full_state(self, epoch: int) -> dict[str, Any]:
        """last.pt's content (best.pt is the best epoch's last.pt): everything ``fit(..., resume=True)`` needs."""
        return {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "weighting": self.weighting.state_dict(),
                "weighting_method": self.weighting.name, "epoch": epoch, "best_score": self.best_score,
                "task_names": list(self.task_names or []), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "best_epoch": self.best_epoch, "bad_epochs": self._bad_epochs,
                "global_step": self._global_step, "history": self.history, "rng": rng_state()}

    def _load_state(self, state: dict[str, Any]) -> int:
        if state.get("weighting_method") != self.weighting.name:
            raise ValueError(f"checkpoint was trained with weighting {state.get('weighting_method')!r}, "
                             f"this trainer uses {self.weighting.name!r}")
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self._bad_epochs, self._global_step = int(state["bad_epochs"]), int(state["global_step"])
        self.history = [dict(h) for h in state["history"]]
        set_rng_state(state["rng"])
        return int(state["epoch"])

    def restore_best(self) -> bool:
        """Load ``model_path/best.pt`` into the model and weighting; False when there is none. Data-parallel:
        rank 0 reads it and sends the weights to the others (no storage shared between nodes is needed)."""
        path = self.model_path / BEST_FILE
        if not self.dist.broadcast_object(path.exists()):
            return False
        if self.dist.is_main:
            state = load_checkpoint(path, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.weighting.load_state_dict(state["weighting"])
        if self.dist.enabled:
            self.dist.broadcast_tensors(list(self.model.state_dict().values()))
            self._sync_weighting_from_rank0()
        return True

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _collect(self, model: nn.Module, loader: Any, with_labels: bool) -> tuple[Tensor, Optional[Tensor], dict]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        self._prepare_loader(loader) if device == self.device else None
        loader, sharded = self._shard(loader, pad=False)
        preds, labels, extras = [], [], {}
        want_extra = with_labels and hasattr(model, "extra_targets")
        try:
            for batch in loader:
                x, y = _split_batch(_to_device(batch, device))
                # float32 even when training under bf16 autocast: bf16 probabilities keep 8 significant bits, so
                # nearby scores tie and AUC drops (0.5 for a freshly initialised model whose scores all round alike)
                p = model(x)
                preds.append(p.float())  # [B, T]
                if not with_labels or y is None:
                    continue
                labels.append(model.training_targets(y) if hasattr(model, "training_targets") else y)
                targets = model.extra_targets(y) if want_extra else {}
                if targets:
                    outputs = model.extra_outputs(x)
                    for name, (lab, mask) in targets.items():
                        extras.setdefault(name, []).append((outputs[name].float()[mask], lab[mask]))
        finally:
            model.train(was_training)
        pred = torch.cat(preds).cpu() if preds else torch.empty(0, self.n_task)  # [n, T]
        lab = torch.cat(labels).cpu() if labels else None  # [n, T]
        extra = {n: (torch.cat([a for a, _ in v]).cpu(), torch.cat([b for _, b in v]).cpu()) for n, v in extras.items()}
        if sharded:  # every rank's rows, in loader order: metrics over the whole set, each row once
            pred = self.dist.gather_rows(pred)  # [N, T]
            lab = self.dist.gather_rows(lab) if lab is not None else None
            extra = {n: (self.dist.gather_rows(a), self.dist.gather_rows(b)) for n, (a, b) in sorted(extra.items())}
        return pred, lab, extra

    def evaluate(self, model: nn.Module, data_loader: Any) -> Scores:
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

    def predict(self, model: nn.Module, data_loader: Any) -> np.ndarray:
        """``[N, n_task]`` predictions in loader order; labels the loader yields are ignored."""
        return self._collect(model, data_loader, with_labels=False)[0].numpy()

    def export_onnx(self, path: str | os.PathLike, opset_version: int = 18) -> Path:
        """ONNX file with one named input per feature and ``predictions [batch, n_task]`` (dynamic batch);
        data-parallel, only rank 0 writes it (every rank gets the path)."""
        if not self.dist.is_main:
            return Path(path)
        return _export_onnx(self.model, path, opset_version=opset_version)
