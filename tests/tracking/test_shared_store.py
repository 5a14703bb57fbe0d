"""One local store per runs root (issue 29, point 1): every run under ``mtlp-runs/`` logs into
``mtlp-runs/mlflow.db``, so the registered model, its versions and its champion carry over from run to run (the
second run's promotion is judged against the first run's champion); ``tracking.isolated`` keeps a run's own store;
two processes that create, register and promote on one fresh SQLite store at once both succeed."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import REPO, quiet_mlflow  # noqa: E402

from workflow import registry, steps, tracking  # noqa: E402
from workflow.tracking import local_store  # noqa: E402

quiet_mlflow()
MODEL = "shared-model"


def test_where_a_local_run_logs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "mtlp-runs"
    assert local_store.run_store_uri(root) == f"sqlite:///{root.resolve()}/mlflow.db"
    assert local_store.run_store_uri(root, isolated=True) == ""  # the steps then use the run folder's own
    assert local_store.run_store_uri(root, "http://mlflow:5000", isolated=True) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert local_store.run_store_uri(root) == "http://env:5000"
    # a SQLite store named by hand keeps its artifacts beside it, not in ./mlruns
    uri = f"sqlite:///{tmp_path}/other/mlflow.db"
    assert tracking.resolve_tracking_uri(None, uri) == (uri, (tmp_path / "other" / "mlartifacts").as_uri())


def _candidate(client, run_name: str, val: float, arch: str) -> str:
    """A registered version of MODEL from pipeline run ``run_name`` (no model behind it: a registry test)."""
    run = client.create_run(client.get_experiment_by_name("shared").experiment_id)
    return str(registry.register_candidate(
        client, MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, architecture=arch,
        test_metrics={"click": {"auc": val}}, test_score=val, val_score=val, pipeline_run_id=run_name,
        eval_data_id="same-data").version)


def test_runs_under_one_root_share_the_store_and_the_champion(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "mtlp-runs"
    uri = local_store.run_store_uri(root)
    decisions = {}
    for run_name, scores in (("run-1", {"mmoe": 0.670, "ple": 0.674}), ("run-2", {"mmoe": 0.676, "aitm": 0.672})):
        work = root / run_name
        work.mkdir(parents=True)
        local_store.record_store(work, uri, "shared")
        parent = steps.start_pipeline_run({"dataset": {"name": "synthetic-funnel"}}, work, run_name,
                                          tracking_uri=uri, experiment="shared")
        client = tracking.client_for(uri)
        versions = [_candidate(client, run_name, val, arch) for arch, val in scores.items()]
        decisions[run_name] = steps.promote_step(versions, MODEL, work, tracking_uri=uri)
        tracking.end_run(client, parent, "FINISHED")
        assert not (work / "mlflow.db").exists()
        assert local_store.store_of_run(work) == (uri, "shared")
    first, second = decisions["run-1"], decisions["run-2"]
    assert (first["decision"], first["candidate_version"]) == ("no_champion", "2")  # ple, run 1's best
    # run 2's best (mmoe v3) was judged against run 1's champion, not against "none"
    assert (second["champion_version"], second["candidate_version"], second["promoted"]) == ("2", "3", True)
    client = tracking.client_for(uri)
    exp = client.get_experiment_by_name("shared")
    parents = client.search_runs([exp.experiment_id], "tags.`mtlp.role` = 'pipeline'")
    assert sorted(r.data.tags["mtlp.pipeline_run_id"] for r in parents) == ["run-1", "run-2"]
    assert [h["version"] for h in registry.champion_history(client, MODEL)] == ["2", "3"]
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_isolated_run_keeps_its_own_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "mtlp-runs" / "alone"
    uri = local_store.run_store_uri(work.parent, isolated=True)
    local_store.record_store(work.parent.mkdir(parents=True) or work.mkdir() or work, uri, "alone")
    steps.start_pipeline_run({}, work, "alone", tracking_uri=uri, experiment="alone")
    assert (work / "mlflow.db").is_file() and not (work.parent / "mlflow.db").exists()
    assert local_store.store_of_run(work) == (f"sqlite:///{work.resolve()}/mlflow.db", "alone")


# Each process creates the store (if it is first), starts a pipeline run, registers three candidates and promotes
# its best, all released together by a barrier file once the imports are done.
RUN = """
import json, pathlib, sys, time
from workflow import registry, steps, tracking
uri, run_name, scores, go = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), pathlib.Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
work = pathlib.Path(uri[len("sqlite:///"):]).parent / run_name
parent = steps.start_pipeline_run({}, work, run_name, tracking_uri=uri, experiment="shared")
client = tracking.client_for(uri)
exp = client.get_experiment_by_name("shared").experiment_id
versions = []
for arch, val in scores.items():
    run = tracking.create_child_run(client, parent, arch, role="model")
    versions.append(str(registry.register_candidate(client, "shared-model", f"runs:/{run}/model", run_id=run,
                    architecture=arch, test_metrics={"click": {"auc": val}}, test_score=val, val_score=val,
                    pipeline_run_id=run_name, eval_data_id="same-data").version))
print(json.dumps(steps.promote_step(versions, "shared-model", work, tracking_uri=uri)), flush=True)
tracking.end_run(client, parent, "FINISHED")
"""


@pytest.mark.slow
def test_two_runs_create_register_and_promote_on_one_fresh_store_at_once(tmp_path):
    root = tmp_path / "mtlp-runs"
    uri = f"sqlite:///{root}/mlflow.db"  # not created yet: both race to create and migrate it
    go = tmp_path / "go"
    scores = {"run-a": {"mmoe": 0.671, "ple": 0.679, "aitm": 0.668}, "run-b": {"mmoe": 0.675, "ple": 0.673,
                                                                               "aitm": 0.677}}
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = {name: subprocess.Popen([sys.executable, "-c", RUN, uri, name, json.dumps(s), str(go)], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, s in scores.items()}
    for p in procs.values():
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = {name: p.communicate(timeout=300) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, results[name][1][-3000:]
    decisions = {name: json.loads(out.strip().splitlines()[-1]) for name, (out, _) in results.items()}
    client = tracking.client_for(uri)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 6 and sorted(int(v.version) for v in versions) == list(range(1, 7))
    best = max(versions, key=lambda v: float(v.tags["metric.val_score"]))
    assert registry.champion_version(client, MODEL) == str(best.version)  # ple of run-a, 0.679, whoever went first
    entries = [a for a in registry.audit(client, MODEL) if a["action"] == "promote"]
    assert len(entries) == 2 and entries[0]["decision"] == "no_champion"
    assert entries[1]["previous"] == entries[0]["version"]  # the second was judged against the first's champion
    assert {d["decision"] for d in decisions.values()} <= {"no_champion", "promoted", "rejected"}
    parents = client.search_runs([client.get_experiment_by_name("shared").experiment_id],
                                 "tags.`mtlp.role` = 'pipeline'")
    assert sorted((r.data.tags["mtlp.pipeline_run_id"], r.info.status) for r in parents) == [
        ("run-a", "FINISHED"), ("run-b", "FINISHED")]
