"""Group 1: training killed with SIGKILL mid-epoch resumes from its last checkpoint and ends bit-for-bit where an
uninterrupted run ends; a damaged checkpoint is refused with a clear error, never loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from _rel import PY, REPO, env, prepare_funnel, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

EPOCHS = 4
PARAMS = {"embed_dim": 4, "bottom_dims": [16], "tower_dims": [8], "batch_size": 16, "dropout": 0.1}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_funnel(tmp_path_factory.mktemp("rel-train") / "prepared")


def _cmd(prepared: Path, out: Path, *extra: str) -> list[str]:
    return [PY, "-m", "workflow.training.train", "--prepared", str(prepared), "--model", "shared_bottom", "--out", str(out),
            "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--seed", "3", "--device", "cpu",
            "--params", json.dumps(PARAMS), *extra]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=True)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(prepared, tmp_path) -> None:
    full = tmp_path / "full"
    done = subprocess.run(_cmd(prepared, full), cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    last = out / "checkpoints" / "last.pt"
    with open(log, "wb") as f:
        proc = subprocess.Popen(_cmd(prepared, out, "--resume"), cwd=REPO, env=env(), stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        first = wait_for(lambda: last.exists() and last.stat().st_mtime_ns, 240, "epoch 0's last.pt", proc, log)
        second = wait_for(lambda: last.exists() and last.stat().st_mtime_ns != first and last.stat().st_mtime_ns,
                          240, "epoch 1's last.pt", proc, log)
        epoch_s = (second - first) / 1e9
        time.sleep(epoch_s / 2)  # half-way through epoch 2
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "model.pt").exists()  # nothing final was written by the killed run
    state = torch.load(last, map_location="cpu", weights_only=True)  # never half-written: loads cleanly
    assert 1 <= state["epoch"] < EPOCHS - 1, state["epoch"]

    resumed = subprocess.run(_cmd(prepared, out, "--resume"), cwd=REPO, env=env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(full), _weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    history_full = json.loads((full / "metrics.json").read_text())["history"]
    history_resumed = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history_resumed) == EPOCHS
    assert [h["train/loss"] for h in history_resumed] == [h["train/loss"] for h in history_full]


@pytest.fixture(scope="module")
def one_epoch(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel-train-one") / "run"
    done = subprocess.run([*_cmd(prepared, out), "--epochs", "1"], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_last_checkpoint_is_refused_with_a_clear_error(prepared, one_epoch, tmp_path, damage) -> None:
    out = tmp_path / "run"
    shutil.copytree(one_epoch / "checkpoints", out / "checkpoints")
    last = out / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 50, "empty": b""}[damage])
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    again = subprocess.run([*_cmd(prepared, out), "--epochs", "2", "--resume"], cwd=REPO, env=env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stderr[-3000:]
    assert f"checkpoint {last} is unreadable" in again.stderr and "delete it to start over" in again.stderr
    assert "weights_only` set to `False" not in again.stderr  # never advises unsafe loading
    assert "Traceback" not in again.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # no model.pt, no partial output


def test_load_checkpoint_raises_checkpoint_error_not_torch_internals(tmp_path) -> None:
    """Regression: torch.load on a truncated file said only 'OSError: [Errno 22] Invalid argument', and on a
    foreign file advised re-running with weights_only=False."""
    from mtl_models.trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    good = save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(3)})
    assert torch.equal(load_checkpoint(good)["w"], torch.ones(3))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
