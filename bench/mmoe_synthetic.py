"""Part 2: the MMOE paper's synthetic experiment (Ma et al., KDD 2018, section 4), its protocol followed closely.

Data (``workflow.data.datasets.synthetic_mmoe``): two unit weight vectors whose cosine is the correlation p, labels
w_i.x + a sum of m = 10 sinusoids of it plus N(0, 0.1^2) noise; fresh data and initialisation for every seed.
Models of (about) the paper's equal size: MMOE with 8 single-layer experts of 16 units and towers of 8, PLE
with the same 8 experts (2 per task, 4 shared) in one extraction level, SharedBottom with one hidden layer as wide
as makes its parameter count match MMOE's; no normalisation layers (the paper's plain ReLU layers, where the library
defaults to BatchNorm in every layer; ``norm`` in the config). Adam (lr in the config), MSE per task, equal weights, no early stopping; the
test MSE (mean of the two tasks) is recorded every epoch, and the final value is the mean over the last
``final_epochs`` epochs. The paper's claim: the lower the task correlation, the larger MMOE's lead over
SharedBottom.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from bench.environment import load_average
from bench.verdict import verdict


class _TestLoss:
    """Callback: test MSE per task after every epoch."""

    def __init__(self, x, y, steps_per_epoch):
        self.x, self.y, self.steps_per_epoch, self.curve = x, y, steps_per_epoch, []

    def on_epoch_end(self, trainer, epoch, metrics):
        model = trainer.model
        model.eval()
        with torch.no_grad():
            pred = model(self.x)  # [N, 2]
        model.train()
        self.curve.append({"step": (epoch + 1) * self.steps_per_epoch, "mse": ((pred - self.y) ** 2).mean(0).tolist()})

    def __getattr__(self, name):  # the other Callback hooks do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, features, cfg: dict, bottom_width: int = 0):
    from mtl_models import MMOE, PLE, SharedBottom

    norm = cfg.get("norm", "batch")  # the paper's layers are plain ReLU layers: "none"
    tt, towers, expert = ["regression"] * 2, [{"dims": cfg["tower"], "norm": norm}] * 2, {"dims": cfg["expert"], "norm": norm}
    if name == "SharedBottom":
        return SharedBottom(features, tt, {"dims": [bottom_width], "norm": norm}, towers)
    if name == "MMOE":
        return MMOE(features, tt, cfg["n_expert"], expert, towers)
    n_specific = cfg["n_expert"] // 4  # one extraction level: per-task and shared experts, as many as MMOE's in all
    return PLE(features, tt, 1, n_specific, cfg["n_expert"] - 2 * n_specific, expert, towers)


def matched_width(features, cfg: dict) -> int:
    """SharedBottom's hidden width whose parameter count is closest to MMOE's (the paper's equal-size rule)."""
    target, d, t = n_params(build("MMOE", features, cfg)), len(features), cfg["tower"][0]
    per_unit = d + 1 + 2 * t  # one hidden unit: its input weights, bias and a weight into each task's tower
    fixed = 2 * (t + t + 1)  # the towers' biases and output layers
    return max(1, round((target - fixed) / per_unit))


def one_run(p: float, seed: int, name: str, cfg: dict) -> dict:
    """One model on one seed's data: its test-MSE curve and the noiseless labels' correlation."""
    from workflow.data.datasets.synthetic_mmoe import OPTIONS, generate
    from mtl_models import DenseFeature, MTLTrainer, make_loader

    frame = generate(seed, {**OPTIONS, "p": p, "n_rows": cfg["n_train"] + cfg["n_test"]})
    xcols = [c for c in frame.columns if c.startswith("x_")]
    train, test = frame.iloc[:cfg["n_train"]], frame.iloc[cfg["n_train"]:]
    features = [DenseFeature(c) for c in xcols]
    width = matched_width(features, cfg) if name == "SharedBottom" else 0
    torch.manual_seed(seed)
    model = build(name, features, cfg, width)
    loader = make_loader({c: train[c].to_numpy() for c in xcols}, {t: train[t].to_numpy() for t in ("y1", "y2")},
                         cfg["batch"], shuffle=True, seed=seed)
    cb = _TestLoss({c: torch.from_numpy(test[c].to_numpy().copy()) for c in xcols},
                   torch.from_numpy(test[["y1", "y2"]].to_numpy().copy()), len(loader))
    with tempfile.TemporaryDirectory(prefix="bench-mmoe-") as tmp:
        MTLTrainer(model, optimizer_params={"lr": cfg["lr"]}, n_epoch=cfg["epochs"], earlystop_patience=cfg["epochs"] + 1,
                   device="cpu", model_path=tmp, progress=False, seed=seed, callbacks=[cb]).fit(loader)
    final = float(np.mean([np.mean(c["mse"]) for c in cb.curve[-cfg["final_epochs"]:]]))
    corr = float(np.corrcoef(frame["y1_noiseless"], frame["y2_noiseless"])[0, 1])
    return {"curve": cb.curve, "final_mse": final, "label_corr": corr, "n_params": n_params(model)}


def summarise(runs: list[dict], cfg: dict) -> list[dict]:
    """Per correlation: the verdict over all models and over SharedBottom vs MMOE, and SharedBottom − MMOE per seed."""
    out = []
    for p in cfg["ps"]:
        finals = {m: [r["final_mse"] for r in runs if r["p"] == p and r["model"] == m] for m in cfg["models"]}
        row = {"p": p, "label_corr": float(np.mean([r["label_corr"] for r in runs if r["p"] == p])),
               "n_params": {m: next(r["n_params"] for r in runs if r["p"] == p and r["model"] == m) for m in cfg["models"]},
               "all_models": verdict(finals, lower_is_better=True)}
        if "SharedBottom" in finals and "MMOE" in finals:
            row["sb_vs_mmoe"] = verdict({m: finals[m] for m in ("SharedBottom", "MMOE")}, lower_is_better=True)
            row["gap"] = verdict({"SharedBottom − MMOE": [a - b for a, b in zip(finals["SharedBottom"], finals["MMOE"])]})
        out.append(row)
    return out


def run(cfg: dict, log=print) -> dict:
    torch.set_num_threads(cfg.get("threads", 1))
    runs = []
    for p in cfg["ps"]:
        for seed in cfg["seeds"]:
            for name in cfg["models"]:
                t0 = time.perf_counter()
                r = one_run(p, seed, name, cfg)
                r.update(p=p, seed=seed, model=name, seconds=round(time.perf_counter() - t0, 1), load=load_average())
                runs.append(r)
            log(f"  p={p} seed={seed}: final test MSE " + ", ".join(
                f"{r['model']} {r['final_mse']:.3f}" for r in runs[-len(cfg["models"]):]) + f" ({r['seconds']} s)")
    return {"config": cfg, "runs": runs, "summary": summarise(runs, cfg)}


BASE = {"ps": [0.5, 0.9, 1.0], "models": ["SharedBottom", "MMOE", "PLE"], "lr": 5e-3, "batch": 128, "expert": [16],
        "n_expert": 8, "tower": [8], "norm": "none", "n_train": 5_000, "n_test": 2_000, "final_epochs": 3, "threads": 1}


def config(quick: bool) -> dict:
    if quick:
        return {**BASE, "seeds": list(range(3)), "epochs": 4, "n_train": 2_000, "n_test": 1_000}
    return {**BASE, "seeds": list(range(20)), "epochs": 15}
