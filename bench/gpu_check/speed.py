"""Parts 2 and 3: training samples/s of ``MTLTrainer`` beside Torch-RecHub 0.9.0's trainer on the same device and
data (bench/bench_training.py's runners and config), and ONNX Runtime's provider for the device against eager
inference at batch 1 and 1024 (the exported file the pipeline ships, ``mtl_models.export_onnx``)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench import bench_training as bt
from bench.gpu_check import Checks, Config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _batch(size: int):
    """bench_training's runners read the module's BATCH when they build loaders and step."""
    before, bt.BATCH = bt.BATCH, size
    try:
        yield
    finally:
        bt.BATCH = before


def _runners(device: torch.device) -> list[tuple[str, Callable]]:
    """(label, factory) per runner: ours at the trainer's default precision, ours in float32 where that default is
    bf16, and Torch-RecHub's trainer (always float32) when it is installed."""
    dev = str(device)
    out = [("ours", lambda *a: bt.OursRunner(*a, device=dev))]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():  # the trainer's default there is bf16
        out.append(("ours_fp32", lambda *a: bt.OursRunner(*a, device=dev, mixed_precision=False)))
    if importlib.util.find_spec("torch_rechub") is not None:
        out.append(("rechub", lambda *a: bt.RecHubRunner(*a, device=dev)))
    return out


def training(cfg: Config, data: dict, device: torch.device, log=print) -> dict:
    """samples/s = training rows / fastest epoch after the first (warm-up), per model, batch and runner."""
    n = len(data["y"]["income"])
    rows_n = min(cfg.speed_rows or n, n)
    d = {"x": {k: v[:rows_n] for k, v in data["x"].items()}, "y": {k: v[:rows_n] for k, v in data["y"].items()},
         "xt": data["xt"], "yt": data["yt"]}
    runners = _runners(device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-speed-") as tmp:
        for batch in cfg.speed_batches:
            for name in cfg.models:
                row = {"model": name, "batch": batch, "rows": rows_n, "samples_s": {}}
                for key, make in runners:
                    if key == "rechub" and name not in bt.RECHUB_MODELS:
                        continue  # a zoo model Torch-RecHub does not have
                    with _batch(batch), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        r = make(name, d, data["feats"], data["vocab"], Path(tmp) / f"{name}_{batch}_{key}")
                        times = r.run(max(2, cfg.speed_epochs))[1:]
                    row["samples_s"][key] = rows_n / min(times)
                if "rechub" in row["samples_s"]:
                    row["ours_over_rechub"] = row["samples_s"]["ours"] / row["samples_s"]["rechub"]
                rows.append(row)
                log(f"  {name} batch {batch}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in row["samples_s"].items()))
    rechub = "installed" if any(k == "rechub" for k, _ in runners) else "skipped: torch-rechub is not installed"
    return {"rows": rows, "runners": [k for k, _ in runners], "rechub": rechub}


def _median_ms(fn: Callable, n: int, device: torch.device) -> float:
    for _ in range(min(10, n)):
        fn()
    _sync(device)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out[i] = time.perf_counter() - t0
    return float(np.median(out) * 1e3)


def onnx(cfg: Config, data: dict, device: torch.device, checks: Checks, log=print) -> dict:
    """Per model: eager on the device vs ONNX Runtime with the device's provider (CUDA, or CPU on a CPU run);
    skipped when that provider is absent, and a failure when the session quietly falls back to another one."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"status": "skipped: onnxruntime is not installed"}
    provider = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}.get(device.type)
    if provider is None or provider not in ort.get_available_providers():
        hint = " (pip install onnxruntime-gpu)" if device.type == "cuda" else ""
        return {"status": f"skipped: onnxruntime {ort.__version__} has no provider for {device.type}{hint}",
                "available": ort.get_available_providers()}
    from mtl_models import export_onnx

    rows = []
    for name in cfg.models:
        torch.manual_seed(cfg.seed)
        model = bt.ours(name, data["feats"], data["vocab"]).eval()
        with tempfile.TemporaryDirectory(prefix="gpu-check-onnx-") as tmp:
            path = export_onnx(model, Path(tmp) / f"{name}.onnx")
            options = {"device_id": device.index or 0} if device.type == "cuda" else {}
            sess = ort.InferenceSession(str(path), providers=[(provider, options)])
        model.to(device)
        checks.true(f"{name} onnx session runs on {provider}", sess.get_providers()[0] == provider,
                    f"session providers {sess.get_providers()}")
        row = {"model": name, "provider": sess.get_providers()[0]}
        for batch in (1, 1024):
            xb = {k: v[:batch].copy() for k, v in data["xt"].items()}
            xt = {k: torch.from_numpy(v).to(device) for k, v in xb.items()}

            def eager():
                with torch.inference_mode():
                    return model(xt)

            diff = float(np.abs(sess.run(None, xb)[0] - eager().cpu().numpy()).max())
            checks.at_most(f"{name} onnx batch {batch}: |onnx - eager|", diff, cfg.tol.onnx_atol)
            n = cfg.onnx_calls if batch == 1 else max(5, cfg.onnx_calls // 10)
            e_ms, o_ms = _median_ms(eager, n, device), _median_ms(lambda: sess.run(None, xb), n, device)
            row[f"b{batch}"] = {"eager_ms": e_ms, "onnx_ms": o_ms, "eager_samples_s": batch / e_ms * 1e3,
                                "onnx_samples_s": batch / o_ms * 1e3, "max_abs_diff": diff}
        rows.append(row)
        log(f"  {name}: batch 1 eager {row['b1']['eager_ms']:.3f} ms, onnx {row['b1']['onnx_ms']:.3f} ms; batch 1024 "
            f"eager {row['b1024']['eager_samples_s']:,.0f}/s, onnx {row['b1024']['onnx_samples_s']:,.0f}/s")
    return {"status": "ran", "provider": provider, "onnxruntime": ort.__version__, "rows": rows}
