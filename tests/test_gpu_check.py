"""``make gpu-check`` (``python -m bench.gpu_check``) on CPU, shrunk: the report holds every model and figure, a
figure outside its tolerance makes the exit status 1, and the 2-process DDP part runs over gloo."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import MODELS, Checks
from bench.gpu_check.__main__ import main

REPO = Path(__file__).resolve().parents[1]
# batch 512 >= 8 x Adult's largest vocabulary (42): the table-product path runs; 1024 rows: 2 steps an epoch
TINY = ["--device", "cpu", "--rows", "1024", "--val-rows", "1024", "--batch", "512", "--steps", "4",
        "--speed-rows", "1024", "--speed-batches", "512", "--speed-epochs", "2", "--onnx-calls", "5"]


@pytest.mark.slow
def test_cpu_run_of_the_real_entry_point_reports_every_model_and_passes(adult_dir, tmp_path):
    """The command users run, as a subprocess. After 4 steps validation AUCs are still ranking nearly tied scores,
    so they move with rounding more than after the default 300 steps: the AUC tolerances are widened here only."""
    cmd = [sys.executable, "-m", "bench.gpu_check", *TINY, "--data", str(adult_dir), "--out", str(tmp_path),
           "--auc-atol", "0.05", "--bf16-auc-atol", "0.05"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r["ok"] and r["failures"] == [] and r["device"] == "cpu"
    assert [m["model"] for m in r["parity"]] == MODELS
    for m in r["parity"]:
        assert set(m["runs"]) == {"cpu", "device", "device_plain", "device_bf16", "cpu_next_seed"}
        assert m["runs"]["device_bf16"]["output_dtypes"] == ["bfloat16"] and m["runs"]["device_bf16"]["mixed_precision"]
        assert m["runs"]["device"]["output_dtypes"] == ["float32"] and not m["runs"]["device"]["pinned"]
        assert all(run["steps"] == 4 and len(run["loss"]) == 2 for run in m["runs"].values())
        # on CPU the device run is the reference run again: training is deterministic, to the bit
        assert m["compare"]["device_vs_cpu"]["loss_max_rel"] == 0.0
        assert m["compare"]["plain_vs_products"]["loss_max_rel"] < 1e-3  # another summation order, same math
        assert 0 < m["compare"]["bf16_vs_cpu"]["loss_max_rel"] < 0.05
        step = m["step"]["products_vs_plain"]  # nonzero: the plain graph really was another computation
        assert 0 < step["grad_over_scale"] < 1e-4 and 0 < step["out"] < 1e-4
    names = [c["check"] for c in r["checks"]]
    for model in MODELS:
        assert any(n.startswith(f"{model} cpu bf16 vs cpu fp32: loss curve") for n in names)
        assert f"{model} step: samples_by_row grouping on cpu" in names
    assert all(c["ok"] for c in r["checks"]) and len(r["checks"]) >= 20 * len(MODELS)
    speed = r["speed"]
    assert [(row["model"], row["batch"]) for row in speed["rows"]] == [(m, 512) for m in MODELS]
    assert all(row["samples_s"]["ours"] > 0 for row in speed["rows"])
    if "rechub" in speed["runners"]:  # torch-rechub is installed where the suite runs the benchmarks
        assert all(row["ours_over_rechub"] > 0 for row in speed["rows"])
    assert r["onnx"]["status"] == "ran" and r["onnx"]["provider"] == "CPUExecutionProvider"
    assert [row["model"] for row in r["onnx"]["rows"]] == MODELS
    assert all(row["b1024"]["max_abs_diff"] < 1e-4 for row in r["onnx"]["rows"])
    assert r["ddp"]["status"].startswith("skipped: 0 CUDA device(s)")
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# gpu-check: OK on cpu") and all(f"| {m} |" in md for m in MODELS)
    assert "## ONNX Runtime" in md and "skipped: 0 CUDA device(s)" in md


@pytest.mark.slow
def test_a_figure_outside_its_tolerance_exits_1_and_is_named(adult_dir, tmp_path):
    argv = [*TINY, "--models", "SharedBottom", "--parts", "parity", "--data", str(adult_dir), "--out", str(tmp_path),
            "--auc-atol", "0.05", "--bf16-auc-atol", "0.05", "--bf16-loss-rtol", "1e-9"]
    assert main(argv) == 1
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not r["ok"] and r["failures"]
    assert all("bf16 vs cpu fp32: loss curve" in f for f in r["failures"])
    assert "MISMATCH SharedBottom cpu bf16 vs cpu fp32: loss curve" in (tmp_path / "gpu_check.md").read_text()
    same_device = [c for c in r["checks"] if "fp32 vs cpu fp32" in c["check"]]
    assert same_device and all(c["ok"] and c["value"] == 0.0 for c in same_device)


@pytest.mark.slow
def test_ddp_part_trains_two_gloo_ranks_that_end_identical(adult_dir, tmp_path):
    argv = [*TINY, "--models", "MMOE", "--parts", "ddp", "--ddp", "on", "--data", str(adult_dir), "--out", str(tmp_path)]
    assert main(argv) == 0
    d = json.loads((tmp_path / "gpu_check.json").read_text())["ddp"]
    assert d["status"] == "ran" and d["world_size"] == 2 and d["backend"] == "gloo" and d["devices"] == ["cpu", "cpu"]
    assert d["param_max_diff"] == 0.0 and len(d["loss"]) == 2 and min(d["final_auc"].values()) > 0.5


def test_a_nan_figure_is_a_mismatch_and_a_missing_dataset_is_one_line(tmp_path):
    checks = Checks()
    assert checks.at_most("fine", 0.1, 0.2) and not checks.at_most("nan", math.nan, 1.0)
    assert not checks.true("flag", False, "why")
    assert checks.failures == ["nan: nan > 1", "flag: false (why)"]
    with pytest.raises(SystemExit, match=f"no adult.data in {tmp_path}; pass --data DIR"):
        main(["--device", "cpu", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
