"""``python -m bench.gpu_check [--device auto]`` (``make gpu-check``): see bench/gpu_check/__init__.py and docs/gpu.md.
Exit status: 0 when every comparison is within its tolerance, 1 when one is not, 2 for a bad argument."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from bench.gpu_check import DEFAULT_DATA, MODELS, REPO, Checks, Config, Tolerances, load_data
from mtl_models import resolve_device


def parse(argv: Optional[Sequence[str]]) -> tuple[Config, Path]:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    ap.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N")
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--parts", nargs="+", default=["parity", "speed", "onnx", "ddp"],
                    choices=["parity", "speed", "onnx", "ddp"])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="UCI Adult folder, or 'synthetic'")
    ap.add_argument("--rows", type=int, default=0, help="training rows for parity and DDP (0: all)")
    ap.add_argument("--val-rows", type=int, default=0, help="validation rows (0: all of adult.test)")
    ap.add_argument("--batch", type=int, default=1024, help="parity and DDP batch")
    ap.add_argument("--steps", type=int, default=300, help="parity training steps, rounded up to whole epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-batches", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--speed-rows", type=int, default=0, help="training rows per timed epoch (0: all)")
    ap.add_argument("--speed-epochs", type=int, default=3, help="epochs per runner, the first one warm-up")
    ap.add_argument("--onnx-calls", type=int, default=200, help="timed batch-1 calls (batch 1024: a tenth)")
    ap.add_argument("--ddp", choices=["auto", "on", "off"], default="auto",
                    help="auto: 2 processes when there are 2 CUDA devices; on: also 2 CPU processes (gloo)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_check"))
    for name, value in vars(Tolerances()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=value, help="tolerance (docs/gpu.md)")
    a = ap.parse_args(argv)
    for name in ("rows", "val_rows", "speed_rows"):
        if getattr(a, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0")
    if min([a.batch, a.steps, a.speed_epochs, a.onnx_calls, *a.speed_batches]) <= 0:
        ap.error("--batch, --steps, --speed-batches, --speed-epochs and --onnx-calls must be positive")
    tol = Tolerances(**{k: getattr(a, k) for k in vars(Tolerances())})
    cfg = Config(device=a.device, models=a.models, data=a.data, rows=a.rows, val_rows=a.val_rows, batch=a.batch,
                 steps=a.steps, seed=a.seed, speed_batches=a.speed_batches, speed_rows=a.speed_rows,
                 speed_epochs=a.speed_epochs, onnx_calls=a.onnx_calls, ddp=a.ddp, parts=a.parts, tol=tol)
    return cfg, Path(a.out)


def _nccl() -> Optional[str]:
    try:
        v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def environment(device: torch.device) -> dict:
    from bench.environment import environment as machine

    env = machine()
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = {"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "nccl": _nccl(),
                       "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
                       "bf16": torch.cuda.is_bf16_supported(), "device_count": torch.cuda.device_count(),
                       "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                       "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")}
    else:
        env["device_name"] = f"{env['cpu']} ({env['cpus']} cores, {env['torch_threads']} torch threads)"
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg, out_dir = parse(argv)
    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise SystemExit(f"gpu-check: {err}") from None
    data = load_data(cfg)
    from bench.gpu_check import ddp, parity, report, speed

    checks, t0 = Checks(), time.perf_counter()
    result: dict = {"device": str(device), "env": environment(device), "config": cfg.to_json()}
    print(f"gpu-check on {device} ({result['env']['device_name']}), torch {torch.__version__}", flush=True)
    if "parity" in cfg.parts:
        print("parity: training runs and one-step checks", flush=True)
        result["parity"] = parity.run(cfg, data, device, checks)
    if "speed" in cfg.parts:
        print("speed: training samples/s", flush=True)
        result["speed"] = speed.training(cfg, data, device)
    if "onnx" in cfg.parts:
        print("onnx: ONNX Runtime against eager", flush=True)
        result["onnx"] = speed.onnx(cfg, data, device, checks)
        if result["onnx"]["status"] != "ran":
            print(f"  {result['onnx']['status']}")
    if "ddp" in cfg.parts:
        print("ddp: 2 processes", flush=True)
        single = next((m["runs"]["device"]["final_auc"] for m in result.get("parity", []) if m["model"] == ddp.MODEL), None)
        result["ddp"] = ddp.run(cfg, device, single, checks)
        if result["ddp"]["status"] != "ran":
            print(f"  {result['ddp']['status']}")
    result.update(checks=checks.rows, failures=checks.failures, ok=not checks.failures,
                  seconds=round(time.perf_counter() - t0, 1), python=platform.python_version())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=1))
    (out_dir / "gpu_check.md").write_text(report.markdown(result))
    print(f"{len(checks.rows)} checks, {len(checks.failures)} outside tolerance; wrote {out_dir}/gpu_check.json and .md")
    for line in checks.failures:
        print(f"MISMATCH {line}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
