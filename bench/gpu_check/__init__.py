"""``make gpu-check`` (``python -m bench.gpu_check``): does training on this machine's best device compute what it
computes on CPU, how fast is it next to Torch-RecHub, and do ONNX Runtime's provider and DDP work here.

Parts (docs/gpu.md says what each figure means): ``parity`` trains the five models through ``MTLTrainer`` on the
device in float32, in bf16 autocast and on the plain graph, beside the same run on CPU, and compares one step's
values and gradients; ``speed`` times training beside Torch-RecHub 0.9.0's trainer; ``onnx`` runs ONNX Runtime's
provider for the device against eager; ``ddp`` trains on 2 processes (NCCL) when there are 2 GPUs. It writes
``gpu_check.json`` and ``gpu_check.md`` and exits 1 when any comparison is outside its tolerance.

This module holds what the parts share: the data, the config and the tolerance checks.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtl_models import zoo

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("MTLP_SHARED_DATA", REPO.parent / "shared" / "data")) / "adult"
MODELS = [e.model_class.__name__ for e in zoo.entries()]  # the zoo's models, by class name (bench_training's labels)
TASKS = ["income", "never_married"]


@dataclass
class Tolerances:
    """How far a run may be from its reference; docs/gpu.md gives the reasons and the spread measured on CPU."""

    loss_rtol: float = 0.02  # float32 on another device or graph: per-epoch mean training loss, relative
    auc_atol: float = 0.02  # float32: final validation AUC, absolute, per task
    bf16_loss_rtol: float = 0.05  # bf16 autocast against float32 CPU
    bf16_auc_atol: float = 0.02
    step_rtol: float = 1e-4  # one float32 step: outputs and BatchNorm running statistics, absolute
    grad_rtol: float = 1e-2  # one float32 step: gradient differences over the largest gradient (sums of ~1e3 rows)
    onnx_atol: float = 1e-4  # ONNX Runtime against eager, probabilities
    ddp_param_atol: float = 1e-6  # replicas after DDP training: largest parameter difference between ranks


@dataclass
class Config:
    device: str = "auto"
    models: list = field(default_factory=lambda: list(MODELS))
    data: str = str(DEFAULT_DATA)
    rows: int = 0  # training rows (0: all)
    val_rows: int = 0
    batch: int = 1024
    steps: int = 300
    seed: int = 0
    speed_batches: list = field(default_factory=lambda: [1024, 4096])
    speed_rows: int = 0
    speed_epochs: int = 3
    onnx_calls: int = 200
    ddp: str = "auto"  # auto: when >= 2 CUDA devices; on: also on CPU (gloo); off
    parts: list = field(default_factory=lambda: ["parity", "speed", "onnx", "ddp"])
    tol: Tolerances = field(default_factory=Tolerances)

    def to_json(self) -> dict:
        return asdict(self)


class Checks:
    """Every comparison made, as ``{"check", "value", "limit", "ok"}`` rows; a failed one is a line in ``failures``."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def at_most(self, name: str, value: float, limit: float) -> bool:
        ok = bool(math.isfinite(value) and value <= limit)
        self.rows.append({"check": name, "value": float(value), "limit": float(limit), "ok": ok})
        return ok

    def true(self, name: str, value: bool, detail: str = "") -> bool:
        self.rows.append({"check": name, "value": bool(value), "limit": detail or True, "ok": bool(value)})
        return bool(value)

    @property
    def failures(self) -> list[str]:
        return [f"{r['check']}: {r['value']:.4g} > {r['limit']:.4g}" if isinstance(r["value"], float)
                else f"{r['check']}: false ({r['limit']})" for r in self.rows if not r["ok"]]


def load_data(cfg: Config) -> dict:
    """Adult as bench/bench_training.py encodes it (every column sparse), or ``--data synthetic``; cut to the
    configured rows. -> ``{"x", "y", "xt", "yt", "feats", "vocab"}`` (numpy columns)."""
    if cfg.data == "synthetic":
        x, y, xt, yt, feats, vocab = synthetic(cfg.seed)
    else:
        folder = Path(cfg.data)
        if not (folder / "adult.data").is_file():
            raise SystemExit(f"gpu-check: no adult.data in {folder}; pass --data DIR (UCI Adult) or --data synthetic")
        from bench import bench_training as bt

        x, y, xt, yt, feats, vocab = bt.load_adult(folder)

    def cut(cols: dict, n: int) -> dict:
        return {k: v[:n] for k, v in cols.items()} if n else cols

    return {"x": cut(x, cfg.rows), "y": cut(y, cfg.rows), "xt": cut(xt, cfg.val_rows), "yt": cut(yt, cfg.val_rows),
            "feats": feats, "vocab": vocab}


def synthetic(seed: int, n: int = 48_000) -> tuple:
    """Adult's shape without the file: 13 sparse columns with Adult's vocabularies, two learnable labels."""
    vocab = {"age": 17, "workclass": 9, "fnlwgt": 17, "education": 17, "education-num": 10, "occupation": 15,
             "relationship": 7, "race": 6, "sex": 3, "capital-gain": 4, "capital-loss": 3, "hours-per-week": 9,
             "native-country": 42}
    rng = np.random.default_rng(seed)
    x = {c: rng.integers(0, v, n).astype(np.int64) for c, v in vocab.items()}
    logit = [sum(rng.normal(size=v)[x[c]] for c, v in vocab.items()) / 2 - 1 for _ in TASKS]  # [2][n]
    y = {t: (rng.random(n) < 1 / (1 + np.exp(-f))).astype(np.float32) for t, f in zip(TASKS, logit)}
    cut = n * 2 // 3
    return ({k: v[:cut] for k, v in x.items()}, {k: v[:cut] for k, v in y.items()},
            {k: v[cut:] for k, v in x.items()}, {k: v[cut:] for k, v in y.items()}, list(vocab), vocab)


def bf16_supported(device) -> bool:
    """Whether the trainer's bf16 autocast can run on ``device`` (CUDA: compute capability 8.0+; CPU: always)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


