"""Part 4: training throughput (samples/s) per model: MTLTrainer vs the plain-PyTorch loop vs Torch-RecHub 0.9.0,
at batch 256, 1024 and 4096, with bench/bench_training.py's runners and config (Adult, every column sparse,
BatchNorm MLPs). A fourth runner puts Torch-RecHub's own model through the same plain loop, which splits the
gap between the libraries into model compute and trainer overhead. Per (model, batch) the runners alternate; each trains ``epochs`` epochs, the first is
warm-up; samples/s = rows / fastest timed epoch (what survives a shared machine's noise), medians kept too.

Every runner trains in its own forked child, so that process-wide state one library sets (MTLTrainer keeps
freed CPU memory mapped, see mtl_models/allocator.py) never reaches the runners after it. A fifth runner,
Torch-RecHub's trainer in a child where that same allocator setting was applied, shows how much of the gap
the setting alone accounts for.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch

from bench import bench_training as bt
from bench.environment import load_average

RUNNERS = [("ours", bt.OursRunner), ("plain", bt.PlainRunner), ("rechub", bt.RecHubRunner),
           ("rechub_plain", bt.PlainRecHubRunner), ("rechub_retained", bt.RecHubRunner)]
RETAINED = {"rechub_retained"}  # runners whose child applies mtl_models' allocator setting first


def _epochs_in_child(key: str, cls, name: str, batch: int, data, feats, vocab, out: Path, epochs: int) -> list[float]:
    """Build and run one runner in a forked child (fresh allocator state, same data); its epoch times come back."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    threads = torch.get_num_threads()

    def child() -> None:
        try:
            torch.set_num_threads(threads)
            bt.BATCH = batch  # the runners read the module's BATCH when they build loaders / step
            if key in RETAINED:
                from mtl_models.allocator import retain_freed_memory
                retain_freed_memory()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                send.send(("ok", cls(name, data, feats, vocab, out).run(epochs)))
        except BaseException:  # noqa: BLE001 - reported by the parent
            send.send(("error", traceback.format_exc()))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    status, value = receive.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"runner {key} failed for {name} at batch {batch}:\n{value}")
    return value


def measure(name: str, batch: int, data, feats, vocab, epochs: int, repeats: int) -> dict:
    n = len(data["y"]["income"])
    times = {k: [] for k, _ in RUNNERS}
    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
        for rep in range(repeats):
            order = RUNNERS if rep % 2 == 0 else RUNNERS[::-1]
            for key, cls in order:
                times[key] += _epochs_in_child(key, cls, name, batch, data, feats, vocab, Path(tmp) / f"{key}{rep}",
                                               epochs)[1:]
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
    # 3 epochs per child (2 timed): forking and building a runner cost more than an epoch (with 2 epochs, the timed
    # ones were 299 s of the part's 1,676 s), so a third epoch doubles the timed samples for roughly a fifth more
    # wall time, on a machine whose epoch times vary by 10-40 %
    return {"models": bt.MODELS, "batches": [256, 1024, 4096], "epochs": 3, "repeats": 2, "rows": 16384, "threads": [1, 2],
            "data_dir": str(ADULT)}
