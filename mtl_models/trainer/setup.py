"""How ``MTLTrainer`` places and runs the model: device, optimizer groups, DDP / ``torch.compile`` wrapping and
bf16 autocast. Each piece is a function of the trainer's arguments, so the trainer's constructor reads as a list."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from ..device import DeviceSpec, resolve_device
from ..weighting import Weighting
from .distributed import DistContext, env_world_size

__all__ = ["trainer_device", "build_optimizer", "training_module", "autocast", "default_mixed_precision"]

CompileArg = Optional[Union[bool, Mapping[str, Any]]]


def trainer_device(device: DeviceSpec) -> torch.device:
    """The device to train on; under ``torchrun`` with ``"auto"``/``"cuda"``, this process's ``cuda:LOCAL_RANK``."""
    resolved = resolve_device(device)
    if env_world_size() > 1 and resolved.type == "cuda" and (device is None or str(device) in ("auto", "cuda")):
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved


def build_optimizer(optimizer_fn: Callable[..., torch.optim.Optimizer], optimizer_params: Optional[Mapping[str, Any]],
                    model: nn.Module, weighting: Weighting, adaptive_params: Mapping[str, Any],
                    device: torch.device) -> torch.optim.Optimizer:
    """One group for the model, one for the weighting's own parameters (no weight decay, ``adaptive_params["lr"]``)."""
    opt_params = dict(optimizer_params or {"lr": 1e-3})
    if optimizer_fn in (torch.optim.Adam, torch.optim.AdamW) and not {"fused", "foreach"} & set(opt_params):
        opt_params["fused"] = device.type in ("cpu", "cuda")  # one kernel over all parameters
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    w_params = [p for p in weighting.parameters() if p.requires_grad]
    if w_params:
        w_group: dict[str, Any] = {"params": w_params, "weight_decay": 0.0}
        if "lr" in adaptive_params:
            w_group["lr"] = float(adaptive_params["lr"])
        groups.append(w_group)
    return optimizer_fn(groups, **opt_params)


def training_module(model: nn.Module, dist: DistContext, device: torch.device, compile: CompileArg,
                    find_unused_parameters: bool) -> nn.Module:
    """What training calls: the model, in ``DistributedDataParallel`` when data-parallel (it broadcasts rank 0's
    initial weights, then averages gradients in backward), through ``torch.compile`` when asked."""
    if compile is not None and not isinstance(compile, (bool, Mapping)):
        raise TypeError(f"compile must be a bool or a dict of torch.compile arguments, got {compile!r}")
    module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=find_unused_parameters)
    compile_kwargs = {} if compile is True else compile  # a dict: torch.compile's keyword arguments
    if isinstance(compile_kwargs, Mapping):
        module = torch.compile(module, **compile_kwargs)
    return module


def default_mixed_precision(device: torch.device, mixed_precision: Optional[bool]) -> bool:
    """bf16 autocast by default where the device supports it (CUDA with bf16), never on CPU unless asked."""
    if mixed_precision is not None:
        return bool(mixed_precision)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
