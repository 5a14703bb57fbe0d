"""Part 7: data bigger than memory. Synthetic-funnel rows written as raw Parquet files (1M rows a file), then the
streaming prepare (``workflow.data.prepare`` on the ``parquet`` dataset, a folder input: two passes, sharded output),
the streaming loader alone over one full shuffled epoch of the train split (``ParquetLoader``), and MMOE training
from the streamed split (``split_loader`` with streaming forced, ``MTLTrainer``, batch 4096). Each phase runs in its
own process, so that its peak RSS (VmHWM) is its own.

The loader's pass reads every train row, so its peak RSS is the peak of a whole epoch's reading; training runs a
bounded number of steps (``train_steps``: a full epoch of MMOE at 30M rows is ~25 min on this shared 2-core machine),
its rate does not depend on the split's size. ``paired``: on the 1M split, the trainer's rows/s with the split in
memory (``TensorLoader``) and streamed (``ParquetLoader``): one trainer fed from both in alternating windows of a
few steps (ABBA), so that the machine's changing load falls alike on both.

    python -m bench.scale child-raw N_ROWS RAW_DIR                (internal)
    python -m bench.scale child-prepare RAW_DIR SCHEMA OUT_DIR
    python -m bench.scale child-loader PREPARED BATCH
    python -m bench.scale child-train PREPARED STEPS BATCH THREADS STREAM
    python -m bench.scale child-paired PREPARED STEPS WINDOWS BATCH THREADS
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILE_ROWS = 1_000_000
SCHEMA = """sparse: [user_id, item_id, item_category]
dense: [{column: dense_1, log1p: true}, dense_2, dense_3, dense_4]
labels:
  - {column: click, task_type: classification}
  - {column: conversion, task_type: classification}
ground_truth: [true_pctr, true_pcvr, true_pctcvr]
split: {method: random, val_fraction: 0.1, test_fraction: 0.1}
"""


def _peak() -> int:
    """This process's peak RSS in bytes: VmHWM (reset by exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_raw(n_rows: int, raw: str) -> dict:
    """``n_rows`` funnel rows as raw Parquet files of ``FILE_ROWS`` rows (file k: the generator with seed k)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workflow.data.datasets.synthetic_funnel import OPTIONS, generate

    Path(raw).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for k, start in enumerate(range(0, n_rows, FILE_ROWS)):
        cols = generate(k, dict(OPTIONS, n_rows=min(FILE_ROWS, n_rows - start)))
        pq.write_table(pa.table(cols), Path(raw) / f"part-{k:05d}.parquet", row_group_size=256 * 1024)
    return {"seconds": time.perf_counter() - t0, "bytes": sum(p.stat().st_size for p in Path(raw).iterdir()),
            "peak_rss_bytes": _peak()}


def child_prepare(raw: str, schema: str, out: str) -> dict:
    from workflow.data.prepare import prepare

    base = _peak()
    t0, c0 = time.perf_counter(), time.process_time()
    spec = prepare("parquet", out, seed=0, options={"path": raw, "schema": schema})
    seconds = time.perf_counter() - t0
    n = sum(spec.rows.values())
    return {"n_rows": n, "rows": spec.rows, "seconds": seconds, "rows_per_s": n / seconds,
            "cpu_seconds": time.process_time() - c0, "peak_rss_bytes": _peak(), "baseline_rss_bytes": base,
            "parquet_bytes": sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))}


def child_loader(prepared: str, batch: int) -> dict:
    from mtl_models.parquet_loader import ParquetLoader
    from workflow.training.artifacts import read_spec, split_paths

    spec = read_spec(prepared)
    base = _peak()
    t0 = time.perf_counter()
    loader = ParquetLoader([str(p) for p in split_paths(prepared, "train")], spec.feature_names, spec.label_names,
                           batch_size=batch, shuffle=True, seed=0)
    rows = 0
    for x, y in loader:  # the whole epoch: every train row read, mixed and cut into batches
        rows += len(y)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_bytes": _peak(),
            "baseline_rss_bytes": base, "batch": batch, "buffer_rows": loader.buffer_rows}


class _FirstSteps:
    """The first ``steps`` batches of a loader: a time box for the training rate."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps, self.task_names = loader, steps, loader.task_names

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.steps, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.steps:
                return
            yield batch


def child_train(prepared: str, steps: int, batch: int, threads: int, stream: bool) -> dict:
    import torch

    from mtl_models import MTLTrainer
    from workflow.training.artifacts import read_spec, split_loader
    from workflow.training.model_factory import build_model

    torch.set_num_threads(threads)
    base = _peak()
    spec = read_spec(prepared)
    t0 = time.perf_counter()
    full = split_loader(prepared, "train", spec, batch, shuffle=True, seed=0, stream_above_bytes=0 if stream else 1 << 62)
    load_s = time.perf_counter() - t0
    loader = _FirstSteps(full, steps)
    torch.manual_seed(0)
    model = build_model("mmoe", spec, {})
    with tempfile.TemporaryDirectory(prefix="bench-scale-ckpt-") as tmp:
        trainer = MTLTrainer(model, optimizer_params={"lr": 1e-3}, n_epoch=1, device="cpu", model_path=tmp,
                             progress=False, seed=0, task_names=spec.label_names, retain_cpu_memory=True)
        t0 = time.perf_counter()
        trainer.fit(loader)
        train_s = time.perf_counter() - t0
    rows = min(steps * batch, full.n)
    return {"loader": type(full).__name__, "train_rows_total": full.n, "rows_trained": rows, "load_seconds": load_s,
            "seconds": train_s, "rows_per_s": rows / train_s, "peak_rss_bytes": _peak(), "baseline_rss_bytes": base,
            "batch": batch, "threads": threads, "n_parameters": sum(p.numel() for p in model.parameters())}


class _Alternating:
    """Batches from several loaders in windows of ``steps``, ABBA order: the trainer's time per window, by loader."""

    def __init__(self, loaders: dict, steps: int, windows: int, task_names: list) -> None:
        self.loaders, self.steps, self.windows, self.task_names = loaders, steps, windows, task_names
        self.times: dict = {name: [] for name in loaders}
        self.cpu: dict = {name: [] for name in loaders}  # process CPU seconds: less sensitive to other jobs' load

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders.values():
            loader.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps * (self.windows + 1) * len(self.loaders)

    def __iter__(self):
        its = {name: iter(loader) for name, loader in self.loaders.items()}
        names = list(its)
        for name in names:  # warm-up, not timed: the first steps allocate, and each loader fills its first buffer
            for _ in range(self.steps):
                yield next(its[name])
        for w in range(self.windows):
            for name in names if w % 2 == 0 else names[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(self.steps):
                    yield next(its[name])
                self.times[name].append(time.perf_counter() - t0)  # back here once the window's last step trained
                self.cpu[name].append(time.process_time() - c0)


def child_paired(prepared: str, steps: int, windows: int, batch: int, threads: int) -> dict:
    """One MMOE trained by one trainer on batches alternating between the in-memory and the streamed train split, in
    windows of ``steps`` (ABBA): the machine's load drifts alike for both, which fresh processes minutes apart do not."""
    import torch

    from mtl_models import MTLTrainer
    from workflow.training.artifacts import read_spec, split_loader
    from workflow.training.model_factory import build_model

    torch.set_num_threads(threads)
    spec = read_spec(prepared)
    loaders = {"memory": split_loader(prepared, "train", spec, batch, shuffle=True, seed=0, stream_above_bytes=1 << 62),
               "streamed": split_loader(prepared, "train", spec, batch, shuffle=True, seed=0, stream_above_bytes=0)}
    alternating = _Alternating(loaders, steps, windows, spec.label_names)
    torch.manual_seed(0)
    model = build_model("mmoe", spec, {})
    with tempfile.TemporaryDirectory(prefix="bench-scale-ckpt-") as tmp:
        trainer = MTLTrainer(model, optimizer_params={"lr": 1e-3}, n_epoch=1, device="cpu", model_path=tmp,
                             progress=False, seed=0, task_names=spec.label_names, retain_cpu_memory=True)
        trainer.fit(alternating)
    rows = steps * batch
    rates = {name: [rows / t for t in ts] for name, ts in alternating.times.items()}
    cpu = {name: [rows / t for t in ts] for name, ts in alternating.cpu.items()}
    return {"steps": steps, "windows": windows, "batch": batch, "rows_per_s": rates, "rows_per_cpu_s": cpu,
            "loaders": {name: type(loader).__name__ for name, loader in loaders.items()}}


def _child(*args: str, timeout: float) -> dict:
    r = subprocess.run([sys.executable, "-m", "bench.scale", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench.scale {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _paired(prepared: str, cfg: dict, log) -> dict:
    from bench.environment import load_average

    start = load_average()
    r = _child("child-paired", prepared, str(cfg["paired_steps"]), str(cfg["paired_windows"]), str(cfg["batch"]),
               str(cfg["threads"]), timeout=cfg["timeout"])
    r["load"] = [start, load_average()]
    log("  paired: " + ", ".join(f"{k} {sum(v) / len(v):,.0f} rows/s" for k, v in r["rows_per_s"].items()))
    return r


def run(cfg: dict, log=print) -> dict:
    from bench.environment import load_average

    rows, paired = [], None
    for n in cfg["sizes"]:
        with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=cfg.get("tmp_dir")) as tmp:
            raw, out, schema = str(Path(tmp) / "raw"), str(Path(tmp) / "prepared"), Path(tmp) / "schema.yaml"
            schema.write_text(SCHEMA)
            gen = _child("child-raw", str(n), raw, timeout=cfg["timeout"])
            log(f"  raw {n:,} rows: {gen['seconds']:.0f}s, {gen['bytes'] / 2**20:,.0f} MiB of Parquet")
            prep = _child("child-prepare", raw, str(schema), out, timeout=cfg["timeout"])
            prep["load"] = load_average()
            log(f"  prepare {n:,} rows: {prep['seconds']:.1f}s ({prep['rows_per_s']:,.0f} rows/s), "
                f"peak RSS {prep['peak_rss_bytes'] / 2**20:,.0f} MiB")
            loader = _child("child-loader", out, str(cfg["batch"]), timeout=cfg["timeout"])
            loader["load"] = load_average()
            log(f"  loader epoch of {loader['rows']:,} rows: {loader['seconds']:.1f}s ({loader['rows_per_s']:,.0f} "
                f"rows/s), peak RSS {loader['peak_rss_bytes'] / 2**20:,.0f} MiB")
            tr = _child("child-train", out, str(cfg["train_steps"]), str(cfg["batch"]), str(cfg["threads"]), "1",
                        timeout=cfg["timeout"])
            tr["load"] = load_average()
            log(f"  MMOE {cfg['train_steps']} steps streamed: {tr['rows_per_s']:,.0f} rows/s, "
                f"peak RSS {tr['peak_rss_bytes'] / 2**20:,.0f} MiB")
            rows.append({"n_rows": n, "raw": gen, "prepare": prep, "loader": loader, "train": tr})
            if n == cfg["sizes"][0] and cfg["paired_windows"]:
                paired = _paired(out, cfg, log)
    return {"config": cfg, "rows": rows, "paired": paired}


def config(quick: bool) -> dict:
    if quick:
        return {"sizes": [200_000], "train_steps": 20, "batch": 4096, "threads": 2, "timeout": 900,
                "paired_windows": 0, "paired_steps": 4}
    # steps kept small: on the shared 2-core machine (load ~20) MMOE trains ~1,000 rows/s, 20 steps take ~80 s
    return {"sizes": [1_000_000, 10_000_000, 30_000_000], "train_steps": 20, "batch": 4096, "threads": 2,
            "timeout": 3600, "paired_windows": 6, "paired_steps": 4}


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "child-raw":
        print(json.dumps(child_raw(int(sys.argv[2]), sys.argv[3])))
    elif cmd == "child-prepare":
        print(json.dumps(child_prepare(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif cmd == "child-loader":
        print(json.dumps(child_loader(sys.argv[2], int(sys.argv[3]))))
    elif cmd == "child-paired":
        print(json.dumps(child_paired(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                                      int(sys.argv[6]))))
    elif cmd == "child-train":
        print(json.dumps(child_train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                                     bool(int(sys.argv[6])))))
    else:
        raise SystemExit(__doc__)
