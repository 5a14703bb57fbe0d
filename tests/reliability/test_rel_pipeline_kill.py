"""Group 2: ``mtlp run`` killed (SIGKILL to its whole process group, as a pod kill) after a model's training
finished, then re-run with the same run name: finished steps come from the run's cache, the run completes, and
MLflow holds one parent run and one registered version per model. Also (group 6) a password planted in the
environment never reaches the MLflow store, the artifacts or the KFP outputs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from _rel import PY, REPO, TINY_FUNNEL, env, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CONFIG = {"name": "rel", "dataset": {"name": "synthetic-funnel", "options": dict(TINY_FUNNEL)},
          "models": ["shared_bottom"], "search": {"n_trials": 1, "n_epoch": 1},
          "train": {"n_epoch": 1, "device": "cpu",
                    "params": {"shared_bottom": {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [8]}}},
          "tracking": {"experiment": "rel-local"}}


SECRET = "MTLP_TEST_SECRET_7f3a9c"
# pinned: the default image tag carries the git sha, and a commit between the kill and the re-run (new code)
# rightly invalidates the cache
IMAGE = "localhost/mtl-pipeline:reliability-test"


def _cmd(config: Path, root: Path) -> list[str]:
    return [PY, "-m", "pipeline.cli", "run", "--config", str(config), "--run-name", "r1", "--runs-root", str(root)]


def _started(console: str) -> list[str]:
    """The step functions the run started, from its one line per task start (cached tasks print none)."""
    return re.findall(r"^\s+start\s+(\w+)", console, re.M)


def _train_cached(work: Path) -> bool:
    cache = work / "kfp-cache"
    return cache.is_dir() and any('"trained"' in p.read_text() for p in cache.glob("*.json"))


def test_killed_local_run_resumes_from_its_cache(tmp_path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root, log1 = tmp_path / "runs", tmp_path / "first.log"
    work = root / "r1"
    run_env = env(MLFLOW_TRACKING_PASSWORD=SECRET, MTLP_IMAGE=IMAGE)
    with open(log1, "wb") as f:
        proc = subprocess.Popen(_cmd(config, root), cwd=tmp_path, env=run_env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _train_cached(work), 400, "the train step to finish", proc, log1, interval=0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the task it is running, like a pod being killed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = log1.read_text()
    assert "finished in" not in first and not (work / "summary.md").exists()
    executed_first = len(_started(first))

    second = subprocess.run(_cmd(config, root), cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout + second.stderr
    executed = _started(out)
    assert "Run r1 finished" in out and (work / "summary.md").exists()
    # start, prepare, model run, search and train were cached: only evaluate..summary run again
    assert not any(name.startswith(("prepare_data", "search_model", "train_model")) for name in executed), executed
    assert 1 <= len(executed) <= 5, executed
    assert executed_first >= 5

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'mlflow.db'}")  # shared store
    exp = client.get_experiment_by_name("rel-local")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mtlp.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    models = [r for r in runs if r.data.tags.get("mtlp.role") == "model"]
    assert len(models) == 1  # the model's run was found again, not duplicated
    versions = client.search_model_versions("name='rel-local-model'")
    assert len(versions) == 1  # registered once
    assert client.get_model_version_by_alias("rel-local-model", "champion").version == versions[0].version

    # group 6: the planted password is in no file of the run folder (MLflow DB bytes, artifacts, KFP outputs)
    leaks = [str(p) for p in work.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    scanned = sum(1 for p in work.rglob("*") if p.is_file())
    assert scanned > 10 and leaks == [], leaks
