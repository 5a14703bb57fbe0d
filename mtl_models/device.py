"""Turns a device spec ("cpu", "cuda", "cuda:N", "mps", "auto") into a ``torch.device``, or says clearly
what is available instead of failing later inside the first ``.to()``.

An accelerator asked for on a machine that has none of that kind (Torch-RecHub's examples say ``"cuda:0"``)
runs on the CPU with a one-line warning, so the same script runs on a laptop; a CUDA index beyond the
devices present is still an error, as it is a mistake on any machine."""

from __future__ import annotations

import warnings
from typing import Union

import torch

__all__ = ["resolve_device", "available_devices"]

DeviceSpec = Union[str, torch.device, None]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Every device this process can use, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _cpu_instead(spec: DeviceSpec, kind: str) -> torch.device:
    warnings.warn(f"device {str(spec)!r} requested but {kind} is not available; using the CPU "
                  f"(available: {available_devices()})", RuntimeWarning, stacklevel=3)
    return torch.device("cpu")


def resolve_device(spec: DeviceSpec = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU. An accelerator kind the machine lacks gives the CPU and a
    ``RuntimeWarning``; a CUDA index beyond the devices present, or an unknown name, raises ``ValueError``."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {spec!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
                         f"(available here: {available_devices()})") from err
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return _cpu_instead(spec, "CUDA")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} requested but there are only {torch.cuda.device_count()} CUDA "
                             f"device(s); available: {available_devices()}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            return _cpu_instead(spec, "MPS")
        return device
    raise ValueError(f"device type {device.type!r} is not supported; available: {available_devices()}")
