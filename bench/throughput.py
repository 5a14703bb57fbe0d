"""Part 4: training throughput (samples/s) per model: MTLTrainer vs the plain-PyTorch loop vs Torch-RecHub 0.9.0,
at batch 256, 1024 and 4096, with bench/bench_training.py's runners and config (Adult, every column sparse,
BatchNorm MLPs). A fourth runner puts Torch-RecHub's own model through the same plain loop, which splits the
gap between the libraries into model compute and trainer overhead. Per (model, batch) the runners' epochs are
interleaved: one epoch of each in turn, the order reversed every round, so that the machine's drift over minutes
reaches them alike; the first epochs are warm-up; samples/s = rows / fastest timed epoch, medians kept too.

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
           ("rechub_plain", bt.PlainRecHubRunner), ("rechub_retained", bt.RecHubRunner),
           ("ours_compiled", bt.CompiledOursRunner)]
RETAINED = {"rechub_retained"}  # runners whose child applies mtl_models' allocator setting first
COMPILED = {"ours_compiled"}  # runners that only run at the config's compile_batches (each build compiles anew)


class _RunnerProcess:
    """One runner in a forked child (fresh allocator state, same data) that trains one epoch each time ``epoch()``
    asks for it and reports that epoch's seconds; between epochs it waits on a pipe, untimed."""

    def __init__(self, key: str, cls, name: str, batch: int, data, feats, vocab, out: Path, epochs: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        self.key, self.name, self.batch = key, name, batch
        threads = torch.get_num_threads()

        def child() -> None:
            self._conn.close()  # the parent's end: if the parent dies, this child's recv() ends instead of hanging
            try:
                torch.set_num_threads(threads)
                bt.BATCH = batch  # the runners read the module's BATCH when they build loaders / step
                if key in RETAINED:
                    from mtl_models.allocator import retain_freed_memory
                    retain_freed_memory()
                done = [0]

                def between(seconds: float) -> None:  # report the epoch, wait for the next turn (not after the last)
                    done[0] += 1
                    child_conn.send(("epoch", seconds))
                    if done[0] < epochs:
                        child_conn.recv()

                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    runner = cls(name, data, feats, vocab, out)
                    child_conn.send(("ready", None))
                    child_conn.recv()  # the first turn
                    runner.run(epochs, between)
            except BaseException:  # noqa: BLE001 - reported by the parent
                child_conn.send(("error", traceback.format_exc()))

        self._proc = ctx.Process(target=child, daemon=True)
        self._proc.start()
        self._expect("ready")

    def _expect(self, kind: str):
        status, value = self._conn.recv()
        if status != kind:
            raise RuntimeError(f"runner {self.key} failed for {self.name} at batch {self.batch}:\n{value}")
        return value

    def epoch(self) -> float:
        """Train one more epoch in the child -> its seconds."""
        self._conn.send("go")
        return self._expect("epoch")

    def close(self, finished: bool) -> None:
        """Join the child; one that has not trained all its epochs (another runner failed) only waits for a turn
        that will not come, and is killed."""
        self._proc.join(timeout=60 if finished else 0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()


def measure(name: str, batch: int, data, feats, vocab, epochs: int, warmup: int, compiled: bool = False) -> dict:
    """Every runner in its own process, their epochs interleaved: one epoch of each in turn, the order reversed every
    round, so that the machine's drift over minutes (10-40 % here) reaches every runner alike. The first ``warmup``
    epochs of each runner are dropped. ``compiled``: also MTLTrainer(compile=True), whose first epoch compiles."""
    if epochs <= warmup:
        raise ValueError(f"part 4 needs more epochs than warm-up epochs, got epochs={epochs}, warmup={warmup}")
    n = len(data["y"]["income"])
    runners = [(k, cls) for k, cls in RUNNERS if compiled or k not in COMPILED]
    times = {k: [] for k, _ in runners}
    procs: dict[str, _RunnerProcess] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
        finished = False
        try:
            for key, cls in runners:
                procs[key] = _RunnerProcess(key, cls, name, batch, data, feats, vocab, Path(tmp) / key, epochs)
            for rnd in range(epochs):
                for key, _ in (runners if rnd % 2 == 0 else runners[::-1]):
                    seconds = procs[key].epoch()
                    if rnd >= warmup:
                        times[key].append(seconds)
            finished = True
        finally:
            for p in procs.values():
                p.close(finished)
    best = {k: n / min(v) for k, v in times.items()}
    med = {k: n / float(np.median(v)) for k, v in times.items()}
    result = {"model": name, "batch": batch, "rows": n, "samples_s": best, "median_samples_s": med,
              "epoch_seconds": times, "vs_rechub": best["ours"] / best["rechub"], "vs_plain": best["ours"] / best["plain"],
              "median_vs_rechub": med["ours"] / med["rechub"], "median_vs_plain": med["ours"] / med["plain"],
              "load": load_average()}
    if "ours_compiled" in best:
        result["compiled_vs_rechub"] = best["ours_compiled"] / best["rechub"]
        result["compiled_vs_ours"] = best["ours_compiled"] / best["ours"]
    return result


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
            r = measure(name, batch, data, feats, vocab, cfg["epochs"], cfg["warmup"],
                        compiled=batch in cfg.get("compile_batches", []))
            r["threads"] = threads
            rows.append(r)
            log(f"  {name} threads {threads} batch {batch}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in r["samples_s"].items())
                + f"; ours/TRH {r['vs_rechub']:.2f}x, ours/plain {r['vs_plain']:.2f}x"
                + (f", compiled/TRH {r['compiled_vs_rechub']:.2f}x" if "compiled_vs_rechub" in r else ""))
    return {"config": cfg, "rows": rows}


def config(quick: bool) -> dict:
    from bench.quality import ADULT

    if quick:
        return {"models": ["SharedBottom"], "batches": [1024], "epochs": 2, "warmup": 1, "rows": 8192, "threads": 1,
                "data_dir": str(ADULT)}
    # 7 epochs per runner, the first 2 warm-up (Torch-RecHub speeds up over its first epochs), 5 timed; one build per
    # runner, where separate children per repeat paid a fork and a build every 2 timed epochs
    # MTLTrainer(compile=True) only at the batch: each of its builds compiles for 10-60 s here
    # every zoo model Torch-RecHub also has: this part is the comparison with it
    models = [m for m in bt.MODELS if m in bt.RECHUB_MODELS]
    return {"models": models, "batches": [256, 1024, 4096], "epochs": 7, "warmup": 2, "rows": 16384, "threads": [1, 2],
            "compile_batches": [1024], "data_dir": str(ADULT)}
