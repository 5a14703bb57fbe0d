"""Part 1: does the device train as CPU does? Per model, ``MTLTrainer`` runs (CPU float32 the reference; the
device in float32, in bf16 autocast and on the plain graph; CPU with the next seed, for scale) and one training
step's outputs, gradients and BatchNorm statistics: the table-product path against the plain graph on the device,
and the device against CPU. Through the trainer, so a device run takes its pinned-memory loader, non-blocking
copies, bf16 autocast and the table products' ``torch.sort``/``index_add_`` grouping."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from typing import Iterator, Optional

import numpy as np
import torch

from bench import bench_training as bt
from bench.gpu_check import TASKS, Checks, Config, bf16_supported, relative
from mtl_models import MTLTrainer, make_loader
from mtl_models.layers import embedding as embedding_module
from mtl_models.layers.embedding import PaddedRows


@contextlib.contextmanager
def plain_graph(on: bool) -> Iterator[None]:
    """While ``on``, the table-product path is off (its size rule can never hold): the plain GEMM graph."""
    before = embedding_module.ROWS_PER_BATCH
    if on:
        embedding_module.ROWS_PER_BATCH = 10 ** 9
    try:
        yield
    finally:
        embedding_module.ROWS_PER_BATCH = before


def train_run(name: str, data: dict, cfg: Config, device: torch.device, mixed: bool, plain: bool, seed: int) -> dict:
    """One ``fit`` of ``cfg.steps`` steps (whole epochs), validating every epoch: its loss curve and AUCs."""
    torch.manual_seed(seed)
    model = bt.ours(name, data["feats"], data["vocab"])  # built on CPU: every run of a seed starts alike
    loader = make_loader(data["x"], data["y"], cfg.batch, shuffle=True, seed=seed)
    val = make_loader(data["xt"], data["yt"], 8192)
    dtypes: set[str] = set()  # the model's output dtype in training forwards: bf16 proves autocast ran
    hook = model.register_forward_hook(lambda m, i, out: dtypes.add(str(out.dtype)[6:]) if m.training else None)
    epochs = max(1, math.ceil(cfg.steps / len(loader)))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, plain_graph(plain):
        trainer = MTLTrainer(model, n_epoch=epochs, earlystop_patience=epochs + 1, device=device, model_path=tmp,
                             progress=False, mixed_precision=mixed, seed=seed)
        t0 = time.perf_counter()
        trainer.fit(loader, val)
        seconds = time.perf_counter() - t0
    hook.remove()
    hist = trainer.history
    return {"device": str(trainer.device), "mixed_precision": trainer.mixed_precision, "plain_graph": plain,
            "seed": seed, "steps": epochs * len(loader), "seconds": round(seconds, 2),
            "pinned": bool(next(iter(loader.x.values())).is_pinned()), "output_dtypes": sorted(dtypes),
            "loss": [h["train/loss"] for h in hist], "auc": {t: [h[f"val/{t}/auc"] for h in hist] for t in TASKS},
            "final_auc": {t: hist[-1][f"val/{t}/auc"] for t in TASKS}}


def compare(checks: Checks, label: str, run: dict, ref: dict, loss_rtol: float, auc_atol: float,
            seed_spread: Optional[dict] = None) -> dict:
    """Loss curves epoch by epoch (relative) and final validation AUCs (absolute) of ``run`` against ``ref``.

    ``seed_spread`` ({task: |AUC(next seed) - AUC(seed)|}) widens a task's AUC limit to what a change of seed
    moves it by: after few steps, rounding alone sends two runs apart as far as another seed does, and a
    difference no larger than that cannot be told from noise. After enough steps the spread falls below
    ``auc_atol``, which then decides."""
    loss = max(relative(a, b) for a, b in zip(run["loss"], ref["loss"]))
    auc = {t: abs(run["final_auc"][t] - ref["final_auc"][t]) for t in TASKS}
    checks.at_most(f"{label}: loss curve, largest relative difference", loss, loss_rtol)
    for t in TASKS:
        spread = (seed_spread or {}).get(t, 0.0)
        limit = max(auc_atol, spread)
        why = f" (limit: the next seed's spread {spread:.4f})" if spread > auc_atol else ""
        checks.at_most(f"{label}: final val AUC {t}, difference{why}", auc[t], limit)
    return {"loss_max_rel": loss, "auc_abs": auc}


def one_step(name: str, data: dict, cfg: Config, device: torch.device, plain: bool) -> dict:
    """A training-mode forward and backward of ``out.sum()`` on the first batch, from the seed's weights."""
    torch.manual_seed(cfg.seed)
    model = bt.ours(name, data["feats"], data["vocab"]).to(device).train()
    x = {k: torch.from_numpy(v[:cfg.batch].copy()).to(device) for k, v in data["x"].items()}  # [B] each
    params = list(model.parameters())
    with plain_graph(plain):
        products = model.embedding.lookup(x).uses_products()
        out = model(x)  # [B, T]
        grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
    stats = {k: v.cpu() for k, v in model.state_dict().items() if "running" in k}
    return {"out": out.detach().cpu(), "grads": [g.cpu() if g is not None else None for g in grads],
            "stats": stats, "products": products, "model": model, "x": x}


def step_difference(a: dict, b: dict) -> dict:
    """Largest differences of outputs, gradients (over the largest gradient) and BatchNorm running statistics."""
    scale = max(float(g.abs().max()) for g in b["grads"] if g is not None)
    grad = max(float((p - q).abs().max()) / scale for p, q in zip(a["grads"], b["grads"]) if p is not None and q is not None)
    same_none = all((p is None) == (q is None) for p, q in zip(a["grads"], b["grads"]))
    stats = max((float((a["stats"][k] - v).abs().max()) for k, v in b["stats"].items()), default=0.0)
    return {"out": float((a["out"] - b["out"]).abs().max()), "grad_over_scale": grad if same_none else math.inf,
            "running_stats": stats}


def grouping_matches(step: dict) -> bool:
    """``PaddedRows.samples_by_row`` on the device (``torch.sort`` + ``index_add_`` on CUDA, NumPy's radix sort on
    CPU) against NumPy's stable argsort and bincount of the same rows."""
    table = step["model"].embedding.tables[0]
    ids = step["model"].embedding.lookup(step["x"]).ids[0] + table.to_padded  # [B, n] padded rows, on the device
    n_rows = len(table.names) * table.max_vocab
    samples, starts = PaddedRows(ids, n_rows).samples_by_row()
    flat = ids.reshape(-1).cpu().numpy()
    counts = np.bincount(flat, minlength=n_rows)
    return (np.array_equal(samples.cpu().numpy(), np.argsort(flat, kind="stable") // ids.shape[1])
            and np.array_equal(starts.cpu().numpy(), np.cumsum(counts) - counts))


def check_model(name: str, data: dict, cfg: Config, device: torch.device, checks: Checks, log=print) -> dict:
    tol, cpu = cfg.tol, torch.device("cpu")
    out: dict = {"model": name, "runs": {}, "compare": {}}
    fast, plain = one_step(name, data, cfg, device, False), one_step(name, data, cfg, device, True)
    checks.true(f"{name} step: table-product path taken at batch {cfg.batch}", fast["products"],
                "batch >= 8 x the largest vocabulary")
    out["step"] = {"products_vs_plain": step_difference(fast, plain)}
    if device != cpu:
        out["step"]["device_vs_cpu"] = step_difference(fast, one_step(name, data, cfg, cpu, False))
    for key, diff in out["step"].items():
        checks.at_most(f"{name} step {key}: output difference", diff["out"], tol.step_rtol)
        checks.at_most(f"{name} step {key}: gradient difference / largest gradient", diff["grad_over_scale"], tol.grad_rtol)
        checks.at_most(f"{name} step {key}: BatchNorm running-stat difference", diff["running_stats"], tol.step_rtol)
    checks.true(f"{name} step: samples_by_row grouping on {device}", grouping_matches(fast))

    runs = out["runs"]
    runs["cpu"] = train_run(name, data, cfg, cpu, False, False, cfg.seed)
    runs["device"] = train_run(name, data, cfg, device, False, False, cfg.seed)
    runs["device_plain"] = train_run(name, data, cfg, device, False, True, cfg.seed)
    if bf16_supported(device):
        runs["device_bf16"] = train_run(name, data, cfg, device, True, False, cfg.seed)
    runs["cpu_next_seed"] = train_run(name, data, cfg, cpu, False, False, cfg.seed + 1)  # the AUC limits' scale
    cmp = out["compare"]
    cmp["next_seed_vs_cpu"] = compare(Checks(), "", runs["cpu_next_seed"], runs["cpu"], 0, 0)
    spread = cmp["next_seed_vs_cpu"]["auc_abs"]
    cmp["device_vs_cpu"] = compare(checks, f"{name} {device} fp32 vs cpu fp32", runs["device"], runs["cpu"],
                                   tol.loss_rtol, tol.auc_atol, spread)
    cmp["plain_vs_products"] = compare(checks, f"{name} {device} plain graph vs table products", runs["device_plain"],
                                       runs["device"], tol.loss_rtol, tol.auc_atol, spread)
    if "device_bf16" in runs:
        cmp["bf16_vs_cpu"] = compare(checks, f"{name} {device} bf16 vs cpu fp32", runs["device_bf16"], runs["cpu"],
                                     tol.bf16_loss_rtol, tol.bf16_auc_atol, spread)
        checks.true(f"{name} bf16 run's training outputs are bfloat16", runs["device_bf16"]["output_dtypes"] == ["bfloat16"],
                    f"saw {runs['device_bf16']['output_dtypes']}")
    checks.true(f"{name} loader pinned exactly when the device is CUDA",
                runs["device"]["pinned"] == (device.type == "cuda"), f"pinned={runs['device']['pinned']}")
    for key in ("device", "device_bf16"):  # agreeing with CPU is not enough: the run must also learn
        loss = runs[key]["loss"] if key in runs else []
        if len(loss) > 1:
            checks.true(f"{name} {key} run learned (last epoch's training loss below the first's)",
                        loss[-1] < loss[0], f"loss {loss[0]:.4f} -> {loss[-1]:.4f}")
    log(f"  {name}: " + ", ".join(f"{k} AUC " + "/".join(f"{a:.4f}" for a in r["final_auc"].values())
                                  for k, r in runs.items()))
    return out


def run(cfg: Config, data: dict, device: torch.device, checks: Checks, log=print) -> list[dict]:
    return [check_model(name, data, cfg, device, checks, log) for name in cfg.models]

