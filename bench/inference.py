"""Part 5: inference per model, ONNX Runtime vs PyTorch eager, on CPU with the same thread count:
latency at batch 1 (median and p90 of single calls on real Adult test rows) and throughput at batch 1024.
Models: bench_training's Adult config (13 sparse features), exported with ``mtl_models.export_onnx``
(the file the pipeline ships). Eager runs under ``torch.inference_mode()`` in eval mode.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import bench_training as bt
from bench.environment import load_average


def _times(fn, n: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def measure(name: str, xt: dict, feats, vocab, cfg: dict) -> dict:
    import onnxruntime as ort

    from mtl_models import export_onnx

    torch.manual_seed(0)
    model = bt.ours(name, feats, vocab).eval()
    with tempfile.TemporaryDirectory(prefix="bench-inf-") as tmp:
        path = export_onnx(model, Path(tmp) / f"{name}.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = cfg["threads"]
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = {"model": name, "threads": cfg["threads"]}
    for batch, key in ((1, "b1"), (cfg["big_batch"], "big")):
        xb_np = {k: v[:batch].copy() for k, v in xt.items()}
        xb_t = {k: torch.from_numpy(v) for k, v in xb_np.items()}
        n = cfg["n_b1"] if batch == 1 else cfg["n_big"]

        def eager():
            with torch.inference_mode():
                return model(xb_t)

        def onnx():
            return sess.run(None, xb_np)

        diff = float(np.abs(onnx()[0] - eager().numpy()).max())
        # alternate the two in chunks so that load changes hit both alike
        te, to = [], []
        for _ in range(cfg["chunks"]):
            te.append(_times(eager, n // cfg["chunks"], 5))
            to.append(_times(onnx, n // cfg["chunks"], 5))
        te, to = np.concatenate(te), np.concatenate(to)
        out[key] = {"batch": batch, "eager_median_ms": float(np.median(te) * 1e3), "eager_p90_ms": float(np.percentile(te, 90) * 1e3),
                    "onnx_median_ms": float(np.median(to) * 1e3), "onnx_p90_ms": float(np.percentile(to, 90) * 1e3),
                    "eager_samples_s": batch / float(np.median(te)), "onnx_samples_s": batch / float(np.median(to)),
                    "onnx_over_eager": float(np.median(to) / np.median(te)), "max_abs_diff": diff}
    out["load"] = load_average()
    return out


def run(cfg: dict, log=print) -> dict:
    torch.set_num_threads(cfg["threads"])
    _, _, xt, _, feats, vocab = bt.load_adult(Path(cfg["data_dir"]))
    rows = []
    for name in cfg["models"]:
        r = measure(name, xt, feats, vocab, cfg)
        rows.append(r)
        log(f"  {name}: batch 1 eager {r['b1']['eager_median_ms']:.3f} ms, ONNX {r['b1']['onnx_median_ms']:.3f} ms "
            f"({r['b1']['onnx_over_eager']:.2f}x); batch {cfg['big_batch']} eager {r['big']['eager_samples_s']:,.0f}/s, "
            f"ONNX {r['big']['onnx_samples_s']:,.0f}/s")
    return {"config": cfg, "rows": rows}


def config(quick: bool) -> dict:
    from bench.quality import ADULT

    if quick:
        return {"models": ["SharedBottom"], "threads": 1, "big_batch": 1024, "n_b1": 100, "n_big": 10, "chunks": 2,
                "data_dir": str(ADULT)}
    return {"models": bt.MODELS, "threads": 1, "big_batch": 1024, "n_b1": 600, "n_big": 60, "chunks": 3,
            "data_dir": str(ADULT)}
