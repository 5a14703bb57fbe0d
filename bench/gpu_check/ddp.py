"""Part 4: 2-process data-parallel training through ``MTLTrainer`` under ``torchrun`` (NCCL on 2 GPUs; gloo on CPU
with ``--ddp on``): every rank's parameters must end identical, and the model must learn as one process does.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m bench.gpu_check.ddp --config CFG --result R
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu_check import REPO, TASKS, Checks, Config, Tolerances, load_data

MODEL = "MMOE"


def should_run(cfg: Config, device: torch.device) -> tuple[bool, str]:
    n_gpu = torch.cuda.device_count() if device.type == "cuda" else 0
    if cfg.ddp == "off":
        return False, "skipped: --ddp off"
    if cfg.ddp == "on" or n_gpu >= 2:
        return True, ""
    return False, f"skipped: {n_gpu} CUDA device(s) here, 2 needed (--ddp on runs 2 CPU processes over gloo)"


def run(cfg: Config, device: torch.device, single_auc: dict | None, checks: Checks, log=print) -> dict:
    """Launch the 2 ranks and check rank 0's report; ``single_auc``: the one-process float32 run's final AUCs."""
    go, why = should_run(cfg, device)
    if not go:
        return {"status": why}
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as tmp:
        (Path(tmp) / "cfg.json").write_text(json.dumps(cfg.to_json()))
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "bench.gpu_check.ddp", "--config", str(Path(tmp) / "cfg.json"), "--result", str(result),
               "--device", "auto" if device.type == "cuda" else "cpu"]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not result.exists():
            tail = (proc.stdout + proc.stderr)[-2000:]
            checks.true("ddp: torchrun with 2 processes exits 0", False, f"exit {proc.returncode}: {tail}")
            return {"status": "failed", "exit": proc.returncode, "output_tail": tail}
        out = json.loads(result.read_text())
    checks.true("ddp: 2 ranks joined", out["world_size"] == 2, f"world_size={out['world_size']}")
    checks.at_most("ddp: largest parameter difference between ranks", out["param_max_diff"], cfg.tol.ddp_param_atol)
    if single_auc is not None:
        for t in TASKS:  # each rank normalises its half batch: BatchNorm differs, so the bf16 tolerance
            checks.at_most(f"ddp: final val AUC {t} vs one process", abs(out["final_auc"][t] - single_auc[t]),
                           cfg.tol.bf16_auc_atol)
    log(f"  {MODEL} on 2 ranks ({out['backend']}, {out['devices']}): {out['samples_s']:,.0f} samples/s, "
        f"final AUC {out['final_auc']}, ranks differ by {out['param_max_diff']:.3g}")
    return {"status": "ran", **out}


def worker(a: argparse.Namespace) -> None:
    """One rank: the parity part's float32 run of MODEL, data-parallel; rank 0 writes the result."""
    import torch.distributed as dist

    from bench import bench_training as bt
    from mtl_models import MTLTrainer, make_loader

    raw = json.loads(Path(a.config).read_text())
    cfg = Config(**{**raw, "tol": Tolerances(**raw["tol"])})
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = bt.ours(MODEL, data["feats"], data["vocab"])
    loader = make_loader(data["x"], data["y"], cfg.batch, shuffle=True, seed=cfg.seed)
    val = make_loader(data["xt"], data["yt"], 8192)
    epochs = max(1, math.ceil(cfg.steps / len(loader)))
    with tempfile.TemporaryDirectory(prefix="gpu-check-rank-") as tmp:
        trainer = MTLTrainer(model, n_epoch=epochs, earlystop_patience=epochs + 1, device=a.device, model_path=tmp,
                             progress=False, mixed_precision=False, seed=cfg.seed)
        t0 = time.perf_counter()
        trainer.fit(loader, val)
        seconds = time.perf_counter() - t0
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])  # [P] on this rank's device
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, flat)
    devices = [None] * dist.get_world_size()
    dist.all_gather_object(devices, str(trainer.device))
    if dist.get_rank() == 0:
        hist = trainer.history
        Path(a.result).write_text(json.dumps({
            "model": MODEL, "world_size": dist.get_world_size(), "backend": dist.get_backend(), "devices": devices,
            "param_max_diff": max(float((p - parts[0]).abs().max()) for p in parts), "epochs": epochs,
            "seconds": seconds, "samples_s": len(data["y"]["income"]) * epochs / seconds,
            "loss": [h["train/loss"] for h in hist], "final_auc": {t: hist[-1][f"val/{t}/auc"] for t in TASKS}}))
    dist.destroy_process_group()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--device", default="auto")
    worker(ap.parse_args())
