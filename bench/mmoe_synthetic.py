"""Part 2: the MMOE paper's synthetic experiment (Ma et al., KDD 2018, section 4 / Figure 4).

Two regression tasks whose correlation is set by p (``workflow.data.datasets.synthetic_mmoe``: d=100, m=10 sines,
c=1, noise 0.1); SharedBottom, MMOE and PLE of about the same size are trained with ``MTLTrainer`` (Adam,
MSE per task, equal weights); after every epoch the test MSE of each task is recorded. Curves are averaged
over seeds (data and initialisation both change with the seed). The paper's claim: the lower the task
correlation, the larger MMOE's advantage over SharedBottom.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.environment import load_average


class _TestLoss:
    """Callback: test MSE per task after every epoch."""

    def __init__(self, x, y, steps_per_epoch):
        self.x, self.y, self.steps_per_epoch, self.curve = x, y, steps_per_epoch, []

    def on_fit_start(self, trainer):
        pass

    def on_epoch_end(self, trainer, epoch, metrics):
        model = trainer.model
        was = model.training
        model.eval()
        with torch.no_grad():
            pred = model(self.x)
        model.train(was)
        mse = ((pred - self.y) ** 2).mean(0).tolist()
        self.curve.append({"step": (epoch + 1) * self.steps_per_epoch, "mse": mse})

    def __getattr__(self, name):  # the other Callback hooks do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def build(name: str, features, cfg):
    from mtl_models import MMOE, PLE, SharedBottom

    tt = ["regression", "regression"]
    towers = [{"dims": cfg["tower"]}] * 2
    if name == "SharedBottom":
        return SharedBottom(features, tt, {"dims": cfg["bottom"]}, towers)
    if name == "MMOE":
        return MMOE(features, tt, cfg["n_expert"], {"dims": cfg["expert"]}, towers)
    # PLE with one extraction level: per-task and shared experts, as many as MMOE's in all
    n_specific = cfg["n_expert"] // 4
    return PLE(features, tt, 1, n_specific, cfg["n_expert"] - 2 * n_specific, {"dims": cfg["expert"]}, towers)


def one_run(p: float, seed: int, name: str, cfg: dict) -> dict:
    import tempfile

    from workflow.data.datasets.synthetic_mmoe import OPTIONS, generate
    from mtl_models import DenseFeature, MTLTrainer, make_loader

    frame = generate(seed, {**OPTIONS, "p": p, "n_rows": cfg["n_rows"]})
    xcols = [c for c in frame.columns if c.startswith("x_")]
    n_test = cfg["n_test"]
    train, test = frame.iloc[:-n_test], frame.iloc[-n_test:]
    features = [DenseFeature(c) for c in xcols]
    torch.manual_seed(seed)
    model = build(name, features, cfg)
    loader = make_loader({c: train[c].to_numpy() for c in xcols}, {"y1": train["y1"].to_numpy(), "y2": train["y2"].to_numpy()},
                         cfg["batch"], shuffle=True, seed=seed)
    xt = {c: torch.from_numpy(test[c].to_numpy().copy()) for c in xcols}
    yt = torch.from_numpy(test[["y1", "y2"]].to_numpy().copy())
    steps = -(-len(train) // cfg["batch"])
    cb = _TestLoss(xt, yt, steps)
    with tempfile.TemporaryDirectory(prefix="bench-mmoe-") as tmp:
        trainer = MTLTrainer(model, optimizer_params={"lr": cfg["lr"]}, n_epoch=cfg["epochs"],
                             earlystop_patience=cfg["epochs"] + 1, device="cpu", model_path=tmp, progress=False,
                             seed=seed, callbacks=[cb])
        trainer.fit(loader)
    corr = float(np.corrcoef(frame["y1_noiseless"], frame["y2_noiseless"])[0, 1])
    return {"curve": cb.curve, "label_corr": corr, "n_params": sum(x.numel() for x in model.parameters())}


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
            last = {r["model"]: np.mean(r["curve"][-1]["mse"]) for r in runs[-len(cfg["models"]):]}
            log(f"  p={p} seed={seed}: final mean test MSE " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()))
    summary = []
    for p in cfg["ps"]:
        row = {"p": p}
        for name in cfg["models"]:
            rs = [r for r in runs if r["p"] == p and r["model"] == name]
            k = max(1, len(rs[0]["curve"]) // 5)  # the last fifth of the curve: less step-to-step noise
            finals = [float(np.mean([np.mean(c["mse"]) for c in r["curve"][-k:]])) for r in rs]
            row[name] = {"final_mse_mean": float(np.mean(finals)), "final_mse_std": float(np.std(finals)),
                         "n_params": rs[0]["n_params"]}
        row["label_corr"] = float(np.mean([r["label_corr"] for r in runs if r["p"] == p]))
        if "SharedBottom" in row and "MMOE" in row:
            row["mmoe_gain"] = row["SharedBottom"]["final_mse_mean"] - row["MMOE"]["final_mse_mean"]
        summary.append(row)
    return {"config": cfg, "runs": runs, "summary": summary}


BASE = {"ps": [0.5, 0.9, 1.0], "models": ["SharedBottom", "MMOE", "PLE"], "lr": 2e-3, "batch": 256,
        "bottom": [64], "expert": [16], "n_expert": 8, "tower": [8], "n_rows": 9_000, "n_test": 1_000}


def config(quick: bool) -> dict:
    if quick:
        return {**BASE, "ps": [0.5, 1.0], "models": ["SharedBottom", "MMOE"], "seeds": [0], "epochs": 3, "n_rows": 3_000,
                "n_test": 500}
    return {**BASE, "seeds": [0, 1], "epochs": 12}
