"""Part 4: training throughput (samples/s) per model: MTLTrainer vs the plain-PyTorch loop vs Torch-RecHub 0.9.0,
at batch 256, 1024 and 4096, with bench/bench_training.py's runners and config (Adult, every column sparse,
BatchNorm MLPs). A fourth runner puts Torch-RecHub's own model through the same plain loop, which splits the
gap between the libraries into model compute and trainer overhead. Per (model, batch) the runners alternate; each trains ``epochs`` epochs, the first is
warm-up; samples/s = rows / fastest timed epoch (what survives a shared machine's noise), medians kept too.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench import bench_training as bt
from bench.environment import load_average

RUNNERS = [("ours", bt.OursRunner), ("plain", bt.PlainRunner), ("rechub", bt.RecHubRunner),
           ("rechub_plain", bt.PlainRecHubRunner)]


def measure(name: str, batch: int, data, feats, vocab, epochs: int, repeats: int) -> dict:
    n = len(data["y"]["income"])
    old, bt.BATCH = bt.BATCH, batch  # the runners read the module's BATCH when they build loaders / step
    try:
        times = {k: [] for k, _ in RUNNERS}
        with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
            for rep in range(repeats):
                order = RUNNERS if rep % 2 == 0 else RUNNERS[::-1]
                for key, cls in order:
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        r = cls(name, data, feats, vocab, Path(tmp) / f"{key}{rep}")
                        times[key] += r.run(epochs)[1:]
    finally:
        bt.BATCH = old
    best = {k: n / min(v) for k, v in times.items()}
    med = {k: n / float(np.median(v)) for k, v in times.items()}
    return {"model": name, "batch": batch, "rows": n, "samples_s": best, "median_samples_s": med,
            "epoch_seconds": times, "vs_rechub": best["ours"] / best["rechub"], "vs_plain": best["ours"] / best["plain"],
            "median_vs_rechub": med["ours"] / med["rechub"], "median_vs_plain": med["ours"] / med["plain"],
            "load": load_average()}


def run(cfg: dict, log=print) -> dict:
    x, y, xt, yt, feats, vocab = bt.load_adult(Path(cfg["data_dir"]))
    k = cfg.get("rows") or len(y["income"])
    data = {"x": {c: v[:k] for c, v in x.items()}, "y": {c: v[:k] for c, v in y.items()}, "xt": xt, "yt": yt}
    rows = []
    threads_list = cfg["threads"] if isinstance(cfg["threads"], list) else [cfg["threads"]]
    for name in cfg["models"]:
        for threads in threads_list:
          torch.set_num_threads(threads)
          for batch in cfg["batches"]:
            r = measure(name, batch, data, feats, vocab, cfg["epochs"], cfg["repeats"])
            r["threads"] = threads
            rows.append(r)
            log(f"  {name} threads {threads} batch {batch}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in r["samples_s"].items())
                + f"; ours/TRH {r['vs_rechub']:.2f}x, ours/plain {r['vs_plain']:.2f}x")
    return {"config": cfg, "rows": rows}


def config(quick: bool) -> dict:
    from bench.quality import ADULT

    if quick:
        return {"models": ["SharedBottom"], "batches": [1024], "epochs": 2, "repeats": 1, "rows": 8192, "threads": 1,
                "data_dir": str(ADULT)}
    return {"models": bt.MODELS, "batches": [256, 1024, 4096], "epochs": 2, "repeats": 2, "rows": 16384, "threads": [1, 2],
            "data_dir": str(ADULT)}
