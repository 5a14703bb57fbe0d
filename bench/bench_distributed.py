"""Training throughput of MTLTrainer on 1 process vs N data-parallel processes (torchrun), same global batch.

    .venv/bin/python bench/bench_distributed.py --epochs 3 --nprocs 1 2
    .venv/bin/python bench/bench_distributed.py --memory-users 10000000 --nprocs 1 2   # memory per rank

Prepares Adult from ../shared/data/adult (or --data-dir), then for each configuration runs ``--worker``
(directly for one process, under ``torchrun --standalone`` otherwise) and reads rank 0's timing. Samples/s
counts training rows per second over the epochs after the first (warm-up), without validation. Writes
bench/results/bench_distributed.json and prints a table with the machine's load average, because a shared
machine's other jobs move these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(a: argparse.Namespace) -> None:
    import torch

    from workflow.training.model_factory import build_model, resolve_params
    from workflow.training.artifacts import read_spec as _spec, split_loader
    from mtl_models import Callback, MTLTrainer

    torch.set_num_threads(a.threads)
    spec = _spec(a.prepared)
    p = resolve_params(a.model, {"batch_size": a.batch_size})
    torch.manual_seed(0)
    model = build_model(a.model, spec, p)
    loader = split_loader(a.prepared, "train", spec, a.batch_size, shuffle=True, seed=0)
    stamps: list[float] = []

    class Clock(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        t = MTLTrainer(model, n_epoch=a.epochs, earlystop_patience=a.epochs + 1, device=a.device, model_path=tmp,
                       progress=False, callbacks=[Clock()], adaptive_params={"method": a.weighting})
        t0 = time.perf_counter()
        t.fit(loader)
    if t.dist.is_main:
        timed = stamps[-1] - stamps[0] if len(stamps) > 1 else stamps[0] - t0
        n_epochs = len(stamps) - 1 if len(stamps) > 1 else 1
        Path(a.result).write_text(json.dumps({"seconds": timed, "epochs_timed": n_epochs,
                                              "rows": loader.n, "world_size": t.dist.world_size,
                                              "steps_per_epoch": len(t._shard(loader, pad=True)[0])}))


def memory_worker(a: argparse.Namespace) -> None:
    """One rank of the memory measurement: one training step, then the bytes each kind of state holds."""
    import psutil
    import torch

    from workflow.training.model_factory import build_model, resolve_params
    from workflow.training.artifacts import read_spec as _spec, split_loader
    from mtl_models import MTLTrainer

    proc = psutil.Process()
    spec = _spec(a.prepared)
    rss0 = proc.memory_info().rss
    model = build_model(a.model, spec, resolve_params(a.model, {"batch_size": a.batch_size}))
    loader = split_loader(a.prepared, "train", spec, a.batch_size, shuffle=True, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t = MTLTrainer(model, n_epoch=1, device=a.device, model_path=tmp, progress=False)
        t.fit(loader)  # one epoch of one step: parameters, gradients, Adam's moments and DDP's buckets exist
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        opt = sum(v.numel() * v.element_size() for st in t.optimizer.state.values() for v in st.values()
                  if torch.is_tensor(v))
        emb = sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
                  if isinstance(m, torch.nn.Embedding))
        peak = proc.memory_info().rss
        vocab = {f.name: f.vocab_size for f in spec.features if hasattr(f, "vocab_size")}
        out = {"rank": t.dist.rank, "world_size": t.dist.world_size, "vocab": vocab, "param_bytes": params,
               "embedding_bytes": emb, "grad_bytes": grads, "optimizer_state_bytes": opt,
               "rss_after_step_bytes": peak, "rss_before_model_bytes": rss0}
    Path(f"{a.result}.rank{out['rank']}").write_text(json.dumps(out))


def memory(a: argparse.Namespace) -> None:
    from workflow.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "funnel"
        t0 = time.perf_counter()
        prepare("synthetic-funnel", prepared, options={"n_users": a.memory_users, "n_rows": 20_000})
        print(f"prepared synthetic-funnel with {a.memory_users:,} users in {time.perf_counter() - t0:.0f} s")
        result = Path(tmp) / "mem.json"
        runs = {}
        for nproc in a.nprocs:
            args = ["--memory-worker", "--prepared", str(prepared), "--result", str(result), "--model", a.model,
                    "--batch-size", "16384", "--device", a.device]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
            cmd = ([sys.executable, __file__, *args] if nproc == 1 else
                   [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                    __file__, *args])
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            runs[nproc] = [json.loads(Path(f"{result}.rank{r}").read_text()) for r in range(nproc)]
    out = {"model": a.model, "n_users": a.memory_users, "runs": runs}
    path = Path(a.out).with_name("bench_distributed_memory.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    gib = 2 ** 30
    print("| processes | rank | embeddings | parameters | gradients | Adam state | RSS after one step |")
    print("|---|---|---|---|---|---|---|")
    for nproc, ranks in runs.items():
        for r in ranks:
            print(f"| {nproc} | {r['rank']} | {r['embedding_bytes'] / gib:.2f} GiB | {r['param_bytes'] / gib:.2f} GiB | "
                  f"{r['grad_bytes'] / gib:.2f} GiB | {r['optimizer_state_bytes'] / gib:.2f} GiB | "
                  f"{r['rss_after_step_bytes'] / gib:.2f} GiB |")
    print(f"written to {path}")


def run_config(a: argparse.Namespace, prepared: Path, nproc: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "r.json"
        args = ["--worker", "--prepared", str(prepared), "--result", str(result), "--model", a.model,
                "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--threads", str(threads),
                "--device", a.device, "--weighting", a.weighting]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
        if nproc == 1:
            cmd = [sys.executable, __file__, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                   __file__, *args]
        load_before = os.getloadavg()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        r = json.loads(result.read_text())
    r.update(nproc=nproc, threads_per_proc=threads, load_before=load_before, load_after=os.getloadavg(),
             samples_per_s=r["rows"] * r["epochs_timed"] / r["seconds"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-users", type=int, default=0,
                    help="instead of throughput: memory per rank for synthetic-funnel with this many users")
    ap.add_argument("--prepared")
    ap.add_argument("--result")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "adult"))
    ap.add_argument("--model", default="mmoe")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024, help="the global batch, whatever the process count")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weighting", default="equal")
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bench_distributed.json"))
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.memory_worker:
        return memory_worker(a)
    if a.memory_users:
        return memory(a)

    from workflow.data.prepare import prepare

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "adult"
        prepare("adult", prepared, data_dir=a.data_dir)
        cores = os.cpu_count() or 1
        configs = [(n, a.threads) for n in a.nprocs]
        if a.device == "cpu" and 1 in a.nprocs and cores > 1:  # one process may also use every core
            configs.append((1, cores))
        for _ in range(a.repeats):
            for nproc, threads in configs:
                rows.append(run_config(a, prepared, nproc, threads))
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": a.device,
                       "gpu": "none available in this session" if a.device == "cpu" else a.device},
           "model": a.model, "global_batch": a.batch_size, "epochs": a.epochs, "weighting": a.weighting, "runs": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"{a.model} on Adult, global batch {a.batch_size}, {a.device}, {os.cpu_count()} cores")
    print("| processes | threads/process | steps/epoch/rank | samples/s | load avg (1 min) before -> after |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nproc']} | {r['threads_per_proc']} | {r['steps_per_epoch']} | {r['samples_per_s']:,.0f} | "
              f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} |")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
