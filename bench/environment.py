"""What every figure is recorded with: machine, CPU flags, versions, threads, date and load average."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ["torch", "numpy", "pandas", "pyarrow", "scikit-learn", "onnxruntime", "onnx", "optuna", "mlflow", "kfp",
            "torch-rechub"]


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    interesting = [f for f in flags if f.startswith(("avx", "fma", "amx", "sse4")) or f in ("f16c", "bmi2")]
    return model, sorted(interesting)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def environment() -> dict:
    import torch

    model, flags = _cpu_model_and_flags()
    try:
        mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_gib = round(mem / 2**20, 1)
    except (OSError, StopIteration):
        mem_gib = None
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "cpu": model, "cpu_flags": flags, "cpus": os.cpu_count(), "memory_gib": mem_gib,
            "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
            "versions": versions(), "git_commit": _git_commit(), "load_average": load_average()}
