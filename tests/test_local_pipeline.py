"""The whole graph on KFP's local runner with embedded defaults, checked through MlflowClient.

One run serves two acceptance checks: the graph end to end (issue 7) and the train step on 2 torchrun
processes (gloo) inside a local pipeline run (issue 11); a pipeline run is minutes of CPU, so not twice.
"""

from __future__ import annotations

import json

import pytest

from pipeline.config import load_config
from pipeline.local import run_local

MODELS = ["mmoe", "esmm"]
N_TRIALS = 2


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # two training processes on two cores
        yield mp


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, monkeypatch_module):
    config = load_config({
        "name": "ci", "dataset": {"name": "synthetic-funnel", "options": {"n_rows": 3000, "n_users": 200, "n_items": 60}},
        "models": MODELS, "search": {"n_trials": N_TRIALS, "n_epoch": 1},
        "train": {"n_epoch": 1, "nproc_per_node": 2, "device": "cpu",
                  "params": {m: {"embed_dim": 4, "tower_dims": [8]} for m in MODELS}},
        "tracking": {"experiment": "ci-local"},
    })
    return config, run_local(config, run_name="ci-run", runs_root=tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
def test_local_run_logs_registers_and_promotes(local_run) -> None:
    from workflow.tracking import client_for

    config, run = local_run
    # registry pinned too: an earlier test in this process may have pointed MLflow's global registry elsewhere
    client = client_for(run.tracking_uri)  # the runs root's shared store
    assert run.tracking_uri == f"sqlite:///{run.work_dir.parent / 'mlflow.db'}"
    exp = client.get_experiment_by_name("ci-local")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    parents = [r for r in runs if r.data.tags.get("mtlp.role") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["mtlp.dataset"] == "synthetic-funnel"
    assert parent.info.status == "FINISHED"

    model_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                  and r.data.tags.get("mtlp.role") == "model"]
    assert sorted(r.info.run_name for r in model_runs) == sorted(f"ci-run/{m}" for m in MODELS)
    for model_run in model_runs:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == model_run.info.run_id]
        assert len(trials) >= N_TRIALS, f"{model_run.info.run_name}: one child run per trial"
        assert model_run.data.metrics["onnx/parity_max_abs_diff"] <= 1e-5
        # 2 training processes, but rank 0 alone logged: one value for the one epoch
        history = client.get_metric_history(model_run.info.run_id, "train/loss")
        assert [m.step for m in history] == [0]
        assert "test/score" in model_run.data.metrics
        assert model_run.info.status == "FINISHED"
        assert all(by_id[t.info.run_id].info.status in ("FINISHED", "KILLED", "FAILED") for t in trials)

    name = config.registered_model
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.tags["mtlp.architecture"] for v in versions) == sorted(MODELS)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version in {v.version for v in versions}

    onnx_files = list(run.work_dir.rglob("model.onnx"))
    assert len(onnx_files) >= len(MODELS)
    summary = (run.work_dir / "summary.md").read_text()
    assert all(m in summary for m in MODELS) and "Champion" in summary


QUIET_CONFIG = {"name": "quiet", "dataset": {"name": "synthetic-funnel", "options": {"n_rows": 6000, "n_users": 100,
                                                                                      "n_items": 40}},
                "models": ["shared_bottom"], "search": {"n_trials": 2, "n_epoch": 1},
                "train": {"n_epoch": 2, "device": "cpu",
                          "params": {"shared_bottom": {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [8]}}},
                "tracking": {"experiment": "quiet"}}


@pytest.mark.slow
def test_mtlp_run_prints_one_line_per_task_and_the_summary_once(tmp_path) -> None:
    """What a user sees from `mtlp run` (issue 19, point 5): the real run folder, one line per task start and end,
    the search's and training's progress, the summary once with the champion in words, a UI command that works
    as printed; each task's full output in the run's logs/, nothing left in tmp/."""
    import os
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(QUIET_CONFIG))
    system_tmp = tmp_path / "system-tmp"  # stands in for /tmp: the run must leave nothing there
    system_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "TMPDIR": str(system_tmp)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", "c.yaml", "--run-name", "q1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # no warnings, no KFP log
    out = done.stdout.splitlines()
    assert out[0].endswith("run folder mtlp-runs/q1")
    tasks = [line.split()[:2] for line in out if re.match(r"^  (start|done)  ", line)]
    functions = ["start_run", "prepare_data", "start_model_run", "search_model", "train_model", "report_model",
                 "export_onnx", "register_model", "promote_champion", "summarize_run"]
    assert sorted(t[1] for t in tasks if t[0] == "start") == sorted(functions)
    assert len(tasks) == 2 * len(functions)
    assert [line for line in out if line.startswith("    [search shared_bottom] trial")][:1]
    assert len([line for line in out if re.match(r"^    epoch \d+: train/loss=", line)]) == 2
    # the summary, once (its first table: the scores; a second table of GAUC and calibration follows it)
    assert sum(line.startswith("| model | val_score | test_score |") for line in out) == 1
    assert any(line.startswith("Champion of `quiet-model`: shared_bottom (v1) is now champion: there was none")
               and "test_score, reported" in line for line in out)
    assert len(out) <= 55, "\n".join(out)  # the summary: scores, then GAUC and calibration, with intervals
    work = tmp_path / "mtlp-runs" / "q1"
    assert out[-2].startswith("Run q1 finished in ") and "task logs in mtlp-runs/q1/logs" in out[-2]
    command = shlex.split(out[-1].removeprefix("MLflow UI: "))
    import shutil
    assert shutil.which(command[0], path=env["PATH"]) or (tmp_path / command[0]).is_file()  # works as printed
    assert command[1:] == ["ui", "mtlp-runs/q1"]
    logs = sorted(p.name for p in (work / "logs").iterdir())
    assert "01-start_run.log" in logs and "kfp.log" in logs and any(n.endswith("-train_model-shared_bottom.log")
                                                                    for n in logs)
    assert not (work / "tmp").exists() and list(system_tmp.iterdir()) == []
    assert (tmp_path / "mtlp-runs" / "mlflow.db").is_file() and not (work / "mlflow.db").exists()  # the shared store

    # a second run of the same config under the same runs root is judged against the first run's champion
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", "c.yaml", "--run-name", "q2"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    [decision] = [line for line in again.stdout.splitlines() if line.startswith("Champion of `quiet-model`:")]
    assert "shared_bottom (v1)" in decision and "there was none" not in decision, decision
    runs = subprocess.run([sys.executable, "-m", "pipeline.cli", "runs"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert runs.returncode == 0, runs.stderr
    rows = [line.split() for line in runs.stdout.splitlines() if line.split()[:1] in (["q1"], ["q2"])]
    assert [(r[0], r[3], r[4]) for r in rows] == [("q1", "FINISHED", "shared_bottom"),
                                                  ("q2", "FINISHED", "shared_bottom")], runs.stdout
    assert rows[0][5] == "v1*" and rows[1][5] in ("v2", "v2*")  # v2 starred only if it beat v1
