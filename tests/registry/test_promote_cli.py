"""``mtlp promote`` for people (issue 29, point 4): ``--show`` as tables (each version's model, validation and test
scores, source run; the whole audit, also after a rollback), a store found without ``--work-dir`` that holds the
model (not a failed run's empty one), and a manual promotion against the validation scores refused unless
``--force``, which the audit then records."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import embedded_tracking, quiet_mlflow, seed_store  # noqa: E402

from workflow import registry  # noqa: E402
from workflow.registry import cli as promote_cli  # noqa: E402

quiet_mlflow()
NAME = "cli-test"


@pytest.fixture
def trk(tmp_path, monkeypatch):
    return embedded_tracking(tmp_path / "store", "promote-cli", monkeypatch)


def add(trk, val: float, test: float, arch: str, pipeline: str) -> str:
    """A candidate version with these scores (a registry-only test: no model behind it)."""
    run = trk.client.create_run(trk.experiment_id)
    return str(registry.register_candidate(trk.client, NAME, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                           architecture=arch, test_metrics={"click": {"auc": test}}, test_score=test,
                                           val_score=val, pipeline_run_id=pipeline, eval_data_id="same").version)


def test_show_prints_versions_with_scores_and_the_whole_audit_after_a_rollback(trk, tmp_path, capsys):
    v1 = add(trk, 0.6701, 0.7012, "shared_bottom", "run-a")
    v2 = add(trk, 0.6755, 0.6990, "ple", "run-b")
    registry.promote(trk.client, NAME, v1, user="ci")
    registry.promote(trk.client, NAME, v2, user="ci")
    registry.rollback(trk.client, NAME, reason="latency regression", user="dave")
    work = str(tmp_path / "store")
    assert promote_cli.main(["--model", NAME, "--show", "--work-dir", work]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "champion: v1 (shared_bottom); challenger (newest candidate): v2 (ple)"
    row2 = next(line.split() for line in out if line.startswith("  v2 "))
    run2 = trk.client.get_model_version(NAME, v2).run_id
    assert row2 == ["v2", "ple", "0.6755", "0.6990", "run-b", run2, "challenger"]
    row1 = next(line.split() for line in out if line.startswith("  v1 "))
    assert row1[:5] == ["v1", "shared_bottom", "0.6701", "0.7012", "run-a"] and row1[-1] == "champion"
    audit = out[out.index("audit (3 actions, oldest first):") + 1:][:3]
    assert "pipeline promotion of v1: no_champion" in audit[0]
    assert "pipeline promotion of v2: promoted, val_score 0.6755 vs 0.6701 (champion before: v1)" in audit[1]
    assert "rollback to v1 (champion before: v2) by dave: latency regression" in audit[2]
    assert out[-1] == "promotion lock: free"
    # the champion history that rollback walks has dropped v2; the audit has not
    assert promote_cli.main(["--model", NAME, "--show", "--json", "--work-dir", work]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [h["version"] for h in shown["history"]] == [v1]
    assert [(a["action"], a["version"]) for a in shown["audit"]] == [("promote", v1), ("promote", v2),
                                                                    ("rollback", v1)]


def test_a_manual_promotion_against_the_validation_scores_needs_force_and_is_recorded(trk, tmp_path, capsys):
    better = add(trk, 0.68, 0.69, "ple", "run-a")
    worse = add(trk, 0.66, 0.71, "mmoe", "run-b")  # better on test, worse on validation
    registry.promote(trk.client, NAME, better, user="ci")
    base = ["--model", NAME, "--work-dir", str(tmp_path / "store"), "--version", worse, "--reason", "A/B test"]
    assert promote_cli.main(base) == 2
    assert capsys.readouterr().err.strip() == (
        f"mtlp promote: error: version {worse} scores val_score 0.6600 on validation, below the champion "
        f"v{better}'s 0.6800 on the same data: pass --force to promote it anyway (recorded as going against the "
        "scores)")
    assert registry.champion_version(trk.client, NAME) == better
    assert promote_cli.main(base + ["--force"]) == 0
    assert capsys.readouterr().out.strip() == (f"{NAME}: champion is now version {worse} (mmoe) (was {better}) "
                                               "(against the validation scores, as --force asked; recorded)")
    last = registry.audit(trk.client, NAME)[-1]
    assert (last["action"], last["version"], last["against_scores"], last["candidate_score"],
            last["champion_score"], last["reason"]) == ("manual_promote", worse, True, 0.66, 0.68, "A/B test")
    # promoting back up the scores needs no --force and records nothing of the kind
    assert promote_cli.main(["--model", NAME, "--work-dir", str(tmp_path / "store"), "--version", better]) == 0
    assert "against_scores" not in registry.audit(trk.client, NAME)[-1]


def copy_store(src, dst) -> None:
    """A consistent copy of a SQLite store in WAL mode (the newest writes may still be in ``mlflow.db-wal``)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(src)) as a, contextlib.closing(sqlite3.connect(dst)) as b:
        a.backup(b)


def test_without_work_dir_the_store_holding_the_model_is_used_not_a_failed_runs(trk, tmp_path, monkeypatch,
                                                                                  capsys):
    """A newer run that failed before registering anything has a store without the model: --show passes it over.
    Once the runs root has its shared mtlp-runs/mlflow.db, that is the store, named by nothing on stderr."""
    add(trk, 0.67, 0.70, "ple", "run-a")
    root = tmp_path / "here" / "mtlp-runs"
    (root / "good").mkdir(parents=True)
    copy_store(tmp_path / "store" / "mlflow.db", root / "good" / "mlflow.db")
    os.utime(root / "good" / "mlflow.db", (1, 1))
    seed_store(root / "failed")  # newest, migrated, empty
    monkeypatch.chdir(tmp_path / "here")
    assert promote_cli.main(["--model", NAME, "--show"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == ("mtlp promote: using the store of the newest run holding cli-test, "
                                    "mtlp-runs/good (--work-dir picks another)")
    assert "v1" in captured.out and "ple" in captured.out
    assert promote_cli.main(["--model", "no-such-model", "--show"]) == 2
    assert "no store under mtlp-runs holds registered model 'no-such-model'" in capsys.readouterr().err
    copy_store(root / "good" / "mlflow.db", root / "mlflow.db")  # the shared store
    assert promote_cli.main(["--model", NAME, "--show"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and f"in sqlite:///{(root / 'mlflow.db').resolve()}" in captured.out
