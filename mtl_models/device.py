"""Turns a device spec ("cpu", "cuda", "cuda:N", "mps", "auto") into a ``torch.device``, or says clearly
what is available instead of failing later inside the first ``.to()``."""

from __future__ import annotations

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


def resolve_device(spec: DeviceSpec = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; an explicit device that is absent raises ``ValueError``."""
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
            raise ValueError(f"device {spec!r} requested but CUDA is not available; available: {available_devices()}")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} requested but there are only {torch.cuda.device_count()} CUDA "
                             f"device(s); available: {available_devices()}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {spec!r} requested but MPS is not available; available: {available_devices()}")
        return device
    raise ValueError(f"device type {device.type!r} is not supported; available: {available_devices()}")
