"""Part 7: scale on synthetic-funnel: ``workflow.data.prepare`` at 1M and 10M rows, then one epoch of MMOE
(the pipeline's default architecture, ``workflow.training.artifacts.split_loader`` + ``MTLTrainer``, batch 4096): rows/s
and peak RSS, each phase in its own process so that its peak (VmHWM) is its own.

Data in memory = rows x bytes per row of the written columns (as bench/bench_prepare.py counts it). With
``max_train_rows`` the epoch runs over the first rows of the (fully loaded) train split only: a time box on a
shared 2-core machine, stated in the report.

    python -m bench.scale child-prepare N_ROWS OUT_DIR      (internal)
    python -m bench.scale child-train PREPARED_DIR MAX_ROWS BATCH THREADS
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


def _peak() -> int:
    """This process's peak RSS in bytes: VmHWM (reset by exec), else ru_maxrss, which Linux carries across
    exec from the parent, so that a child of a big parent would report at least the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_prepare(n_rows: int, out: str) -> dict:
    import pyarrow.parquet as pq

    from workflow.data.prepare import prepare

    base = _peak()
    t0, c0 = time.perf_counter(), time.process_time()
    prepare("synthetic-funnel", out, seed=0, options={"n_rows": n_rows})
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    schema = pq.read_schema(Path(out) / "train.parquet")
    bpr = sum(f.type.byte_width for f in schema)
    return {"n_rows": n_rows, "seconds": seconds, "rows_per_s": n_rows / seconds, "cpu_seconds": cpu,
            "peak_rss_bytes": _peak(), "baseline_rss_bytes": base, "data_bytes": bpr * n_rows, "bytes_per_row": bpr}


def child_train(prepared: str, max_rows: int, batch: int, threads: int) -> dict:
    import torch

    from workflow.data.feature_spec import FeatureSpec
    from workflow.training.model_factory import build_model
    from workflow.training.artifacts import split_loader
    from mtl_models import MTLTrainer, TensorLoader

    torch.set_num_threads(threads)
    base = _peak()
    spec = FeatureSpec.load(Path(prepared) / "feature_spec.json")
    t0 = time.perf_counter()
    full = split_loader(prepared, "train", spec, batch, shuffle=True, seed=0)
    load_s = time.perf_counter() - t0
    n_train = len(full.y) if hasattr(full, "y") and full.y is not None else None
    loader = full
    if max_rows and n_train and max_rows < n_train:  # a view of the first rows: the time box
        loader = TensorLoader({k: v[:max_rows] for k, v in full.x.items()}, full.y[:max_rows], batch_size=batch,
                              shuffle=True, seed=0, task_names=spec.label_names)
    rows = min(n_train or 0, max_rows or n_train or 0)
    torch.manual_seed(0)
    model = build_model("mmoe", spec, {})
    with tempfile.TemporaryDirectory(prefix="bench-scale-ckpt-") as tmp:
        trainer = MTLTrainer(model, optimizer_params={"lr": 1e-3}, n_epoch=1, device="cpu", model_path=tmp,
                             progress=False, seed=0, task_names=spec.label_names)
        t0 = time.perf_counter()
        trainer.fit(loader)
        train_s = time.perf_counter() - t0
    return {"train_rows_total": n_train, "rows_trained": rows, "load_seconds": load_s, "epoch_seconds": train_s,
            "rows_per_s": rows / train_s, "peak_rss_bytes": _peak(), "baseline_rss_bytes": base, "batch": batch,
            "threads": threads, "n_parameters": sum(p.numel() for p in model.parameters())}


def _child(*args: str, timeout: float) -> dict:
    r = subprocess.run([sys.executable, "-m", "bench.scale", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench.scale {args[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(cfg: dict, log=print) -> dict:
    from bench.environment import load_average

    rows = []
    for n in cfg["sizes"]:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            out = str(Path(tmp) / "funnel")
            prep = _child("child-prepare", str(n), out, timeout=cfg["timeout"])
            prep["load"] = load_average()
            disk = sum(p.stat().st_size for p in Path(out).iterdir())
            log(f"  prepare {n:,} rows: {prep['seconds']:.1f}s ({prep['rows_per_s']:,.0f} rows/s), "
                f"peak RSS {prep['peak_rss_bytes'] / 2**20:,.0f} MiB")
            cap = cfg["max_train_rows"].get(str(n)) if isinstance(cfg["max_train_rows"], dict) else cfg["max_train_rows"]
            tr = _child("child-train", out, str(cap or 0), str(cfg["batch"]), str(cfg["threads"]), timeout=cfg["timeout"])
            tr["load"] = load_average()
            log(f"  MMOE epoch on {tr['rows_trained']:,} of {tr['train_rows_total']:,} train rows: {tr['epoch_seconds']:.1f}s "
                f"({tr['rows_per_s']:,.0f} rows/s), peak RSS {tr['peak_rss_bytes'] / 2**20:,.0f} MiB")
            rows.append({"n_rows": n, "prepare": prep, "train": tr, "parquet_bytes": disk})
    return {"config": cfg, "rows": rows}


def config(quick: bool) -> dict:
    if quick:
        return {"sizes": [200_000], "max_train_rows": None, "batch": 4096, "threads": 2, "timeout": 600}
    return {"sizes": [1_000_000, 10_000_000], "max_train_rows": {"10000000": 500_000}, "batch": 4096, "threads": 2,
            "timeout": 1800}


if __name__ == "__main__":
    if sys.argv[1] == "child-prepare":
        print(json.dumps(child_prepare(int(sys.argv[2]), sys.argv[3])))
    elif sys.argv[1] == "child-train":
        print(json.dumps(child_train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    else:
        raise SystemExit(__doc__)
