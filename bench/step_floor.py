"""How fast can one training step of each model get on this CPU with the kernels PyTorch has? A floor, next to
the budget of a third of Torch-RecHub's step (docs/training.md has the target, the figures and what they mean).

One real training step of our model (bench_training's config, batch 1024) runs under a dispatch mode that records
every GEMM over the batch (``mm`` / ``addmm``, with shapes and strides) and every BatchNorm. Each recorded kernel is
then timed alone, warm, in a tight loop: the GEMMs, and per BatchNorm layer ATen's BatchNorm forward, the in-place
ReLU, ReLU's backward and BatchNorm's backward, called directly (no autograd). Their sum is a floor for any step
that keeps the model's arithmetic and uses these kernels: it leaves out the table-product gathers, the expert mixes,
the loss, Adam, autograd and Python, and times every kernel with its operands in cache. (``torch.compile`` does not
lower BatchNorm + ReLU: docs/training.md says why.)

Both whole steps come from bench_training's runners, fastest epoch over the same rows after one warm-up, per
batch: ours from the plain loop over our model (part 4's plain runner), and Torch-RecHub's from its trainer, a
third of which is the budget.

    .venv/bin/python bench/step_floor.py [--models MMOE PLE] [--threads 1] [--out bench/results/step_floor.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import bench_training as bt  # noqa: E402

GEMMS = {"mm", "addmm"}


class _KernelRecorder(TorchDispatchMode):
    """Counts the GEMMs (name, shapes, strides) and the BatchNorm inputs' shapes of everything run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.gemms: Counter = Counter()
        self.norms: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in GEMMS:
            tensors = tuple((tuple(a.shape), tuple(a.stride())) for a in args if isinstance(a, torch.Tensor))
            self.gemms[(name, tensors)] += 1
        elif name == "native_batch_norm":
            self.norms[tuple(args[0].shape)] += 1
        return func(*args, **(kwargs or {}))


def record_step(name: str, data: dict, feats: list, vocab: dict, batch: int) -> _KernelRecorder:
    """One forward + backward of our ``name`` (bench_training's plain-loop runner: its model and training targets) on
    the first ``batch`` rows, in training mode, recorded."""
    runner = bt.PlainRunner(name, data, feats, vocab, None)
    runner.model.train()
    rec = _KernelRecorder()
    with rec:
        batch_x = {k: v[:batch] for k, v in runner.x.items()}
        runner.loss(runner.model(batch_x), runner.y[:batch]).backward()
    return rec


def gemm_macs(rec: _KernelRecorder) -> int:
    """Multiply-adds of the recorded GEMMs: ``[m, k] x [k, n]`` (addmm's bias first) -> m * k * n each."""
    return sum(n * ops[-2][0][0] * ops[-2][0][1] * ops[-1][0][1] for (_, ops), n in rec.gemms.items())


def _best_ms(fn: Callable[[], object], calls: int = 40, rounds: int = 7) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def gemm_ms(name: str, operands: tuple) -> float:
    """One recorded GEMM alone, with its operands' shapes and strides."""
    ts = [torch.empty_strided(shape, stride).normal_() for shape, stride in operands]
    if name == "addmm":
        return _best_ms(lambda: torch.addmm(*ts))
    return _best_ms(lambda: torch.mm(*ts))


def norm_relu_ms(shape: tuple) -> float:
    """ATen's training-mode BatchNorm forward, in-place ReLU, ReLU backward and BatchNorm backward on ``shape``."""
    x, grad = torch.randn(shape), torch.randn(shape)
    c = shape[1]
    w, b, mean, var = torch.ones(c), torch.zeros(c), torch.zeros(c), torch.ones(c)
    bn, bn_back = torch.ops.aten.native_batch_norm, torch.ops.aten.native_batch_norm_backward

    def both() -> None:
        out, save_mean, save_invstd = bn(x, w, b, mean, var, True, 0.1, 1e-5)
        out.clamp_min_(0)
        g = torch.ops.aten.threshold_backward(grad, out, 0)
        bn_back(g, x, w, mean, var, save_mean, save_invstd, True, 1e-5, [True, True, True])

    return _best_ms(both)


def fastest_step_ms(runner_cls, name: str, data: dict, feats: list, vocab: dict, batch: int, epochs: int) -> float:
    """One of bench_training's runners (its plain loop, or Torch-RecHub's trainer), fastest of ``epochs`` epochs after
    one warm-up -> ms per batch."""
    import contextlib
    import io
    import tempfile

    bt.BATCH = batch
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        times = runner_cls(name, data, feats, vocab, Path(tmp)).run(epochs + 1)[1:]
    steps = -(-len(data["y"]["income"]) // batch)
    return min(times) / steps * 1e3


def measure(name: str, data: dict, feats: list, vocab: dict, batch: int, epochs: int) -> dict:
    rec = record_step(name, data, feats, vocab, batch)
    gemm = sum(n * gemm_ms(kind, ops) for (kind, ops), n in rec.gemms.items())
    norm = sum(n * norm_relu_ms(shape) for shape, n in rec.norms.items())
    macs = gemm_macs(rec)
    trh = fastest_step_ms(bt.RecHubRunner, name, data, feats, vocab, batch, epochs)
    ours = fastest_step_ms(bt.PlainRunner, name, data, feats, vocab, batch, epochs)
    return {"our_step_ms": ours, "model": name, "batch": batch, "gemm_calls": sum(rec.gemms.values()), "gemm_macs": macs,
            "gemm_ms": gemm, "norm_layers": sum(rec.norms.values()), "norm_relu_ms": norm, "floor_ms": gemm + norm,
            "trh_step_ms": trh, "budget_ms": trh / 3, "floor_over_budget": (gemm + norm) / (trh / 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"))
    ap.add_argument("--models", nargs="+", default=bt.MODELS)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=16384, help="rows per Torch-RecHub epoch (part 4's)")
    ap.add_argument("--epochs", type=int, default=3, help="timed Torch-RecHub epochs, after one warm-up")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_floor.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, xt, yt, feats, vocab = bt.load_adult(Path(args.data))
    k = args.rows
    data = {"x": {c: v[:k] for c, v in x.items()}, "y": {c: v[:k] for c, v in y.items()}, "xt": xt, "yt": yt}
    rows = []
    for name in args.models:
        rows.append(measure(name, data, feats, vocab, args.batch, args.epochs))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"\nbatch {args.batch}, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| model | GEMMs over the batch | BatchNorm + ReLU layers | floor: GEMMs + BN/ReLU kernels | our step "
          "(plain loop) | Torch-RecHub step (its trainer) | budget (its step / 3) | floor / budget | our step / budget |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['gemm_calls']} calls, {r['gemm_macs'] / 1e6:.0f} M MAC: {r['gemm_ms']:.1f} ms | "
              f"{r['norm_layers']}: {r['norm_relu_ms']:.1f} ms | {r['floor_ms']:.1f} ms | {r['our_step_ms']:.1f} ms | "
              f"{r['trh_step_ms']:.1f} ms | {r['budget_ms']:.1f} ms | {r['floor_over_budget']:.2f} | "
              f"{r['our_step_ms'] / r['budget_ms']:.2f} |")


if __name__ == "__main__":
    main()
