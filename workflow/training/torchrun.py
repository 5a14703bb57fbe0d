"""The training step on several processes: ``torchrun`` locally, the worker every rank runs, and its arguments.

``launch_local`` starts ``torchrun --standalone --nproc-per-node N -m workflow.training.torchrun ...`` and waits;
each rank runs ``main`` (``workflow.training.train.train``, which trains data-parallel under torchrun), and rank 0
alone logs to MLflow and writes the trained folder, so one pipeline step yields one MLflow run and one model
whatever the number of processes. ``workflow.training.pytorchjob`` runs the same worker on several nodes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

__all__ = ["worker_args", "launch_local", "read_result", "main"]

PathLike = str | os.PathLike


def worker_args(prepared_dir: PathLike, model_name: str, out_dir: PathLike, params: Mapping[str, Any],
                n_epoch: int, patience: int, device: str, seed: int, model_run_id: str = "",
                work_dir: PathLike = "", tracking_uri: Optional[str] = None) -> list[str]:
    """The worker's command-line arguments (after ``-m workflow.training.torchrun``)."""
    return ["--prepared-dir", str(prepared_dir), "--model-name", model_name, "--out-dir", str(out_dir),
            "--params-json", json.dumps(dict(params)), "--n-epoch", str(int(n_epoch)), "--patience", str(int(patience)),
            "--device", device, "--seed", str(int(seed)), "--model-run-id", model_run_id or "",
            "--work-dir", str(work_dir), "--tracking-uri", tracking_uri or ""]


def launch_local(nproc_per_node: int, args: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 tail_lines: int = 60) -> None:
    """Run the worker under ``torchrun`` on this machine and wait; its output streams through. Raises
    ``RuntimeError`` with the end of that output when any rank fails (torchrun stops the others)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(nproc_per_node)),
           "-m", "workflow.training.torchrun", *args]
    full_env = {**os.environ, **dict(env or {})}
    full_env.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores; torchrun would say the same
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                           full_env.get("PYTHONPATH")]))
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"torchrun with {nproc_per_node} processes failed (exit {rc}):\n" + "".join(tail))


def read_result(out_dir: PathLike):
    """The ``TrainResult`` rank 0 wrote to ``out_dir/metrics.json``."""
    from .train import METRICS_FILE, WEIGHTS_FILE, TrainResult

    d = json.loads((Path(out_dir) / METRICS_FILE).read_text())
    d["out_dir"], d["checkpoint_path"] = Path(out_dir), Path(out_dir) / WEIGHTS_FILE  # where it is now
    return TrainResult(**d)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflow.training.torchrun", description=__doc__)
    for name in ("prepared-dir", "model-name", "out-dir"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--params-json", default="{}")
    p.add_argument("--n-epoch", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model-run-id", default="")
    p.add_argument("--work-dir", default="")
    p.add_argument("--tracking-uri", default="")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """One rank: train; rank 0 also logs the epochs and the result to the model's MLflow run."""
    import torch.distributed as dist

    from .train import train

    a = _parse(argv)
    rank = int(os.environ.get("RANK", "0"))
    client, callbacks = None, []
    if rank == 0 and a.model_run_id:
        from .. import tracking

        client, _ = tracking.open_client(a.work_dir or a.out_dir, a.tracking_uri or None)
        callbacks = [tracking.MlflowCallback(a.model_run_id, client=client)]
    try:
        result = train(a.prepared_dir, a.model_name, a.out_dir, params=json.loads(a.params_json), n_epoch=a.n_epoch,
                       patience=a.patience, device=a.device, seed=a.seed, callbacks=callbacks, progress=rank == 0)
        if client is not None:
            from .. import tracking

            tracking.log_train_result(client, a.model_run_id, result, log_history=False)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
