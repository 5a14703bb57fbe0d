"""Registry rules on the embedded store: candidate versions and tags, challenger, guarded promotion (selected and
compared on validation, test reported; margin, direction, same data), manual promotion, rollback with who/when/why, the CLI, concurrency."""

from __future__ import annotations

import json
import os
import threading

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import embedded_tracking, quiet_mlflow  # noqa: E402

from workflow.registry import cli as promote_cli# noqa: E402
from workflow import registry# noqa: E402

quiet_mlflow()
NAME = "reg-test"


@pytest.fixture
def env(tmp_path, monkeypatch):
    trk = embedded_tracking(tmp_path, "registry-tests", monkeypatch)
    source = tmp_path / "fake-model"
    source.mkdir()
    return trk, str(source), tmp_path


_SAME = object()


def add(trk, source, score, *, val=_SAME, arch="mmoe", test_data="td-1", logloss=None, pipeline="pr-1"):
    """A candidate version whose recorded test metrics are ``score`` and validation score ``val`` (default: the
    same number; None: not recorded). A registry-only test: no model behind it."""
    metrics = {"income": {"auc": score, "logloss": logloss if logloss is not None else 1 - score}}
    run = trk.client.create_run(trk.experiment_id)
    return registry.register_candidate(trk.client, NAME, source, run_id=run.info.run_id, architecture=arch,
                                       test_metrics=metrics, test_score=score,
                                       val_score=score if val is _SAME else val, pipeline_run_id=pipeline,
                                       eval_data_id=test_data).version


def champion(trk):
    return registry.champion_version(trk.client, NAME)


def test_register_tags_and_challenger(env):
    trk, src, _ = env
    v1 = add(trk, src, 0.70, arch="shared_bottom")
    v2 = add(trk, src, 0.72, arch="ple", pipeline="pr-7")
    mv = trk.client.get_model_version(NAME, v2)
    assert mv.tags["mtlp.architecture"] == "ple" and mv.tags["mtlp.pipeline_run_id"] == "pr-7"
    assert float(mv.tags["metric.test_score"]) == 0.72 and float(mv.tags["metric.test/income/auc"]) == 0.72
    assert float(mv.tags["metric.val_score"]) == 0.72
    assert mv.tags["mtlp.eval_data"] == "td-1" and mv.run_id == mv.tags["mtlp.run_id"]
    assert str(trk.client.get_model_version_by_alias(NAME, "challenger").version) == str(v2) != str(v1)
    assert champion(trk) is None  # registering never moves the champion


def test_first_candidate_becomes_champion_then_guarded(env):
    trk, src, _ = env
    v1 = add(trk, src, 0.70)
    d = registry.promote(trk.client, NAME, v1, user="ci")
    assert d.promoted and d.decision == "no_champion" and champion(trk) == str(v1)

    worse = add(trk, src, 0.69)
    d = registry.promote(trk.client, NAME, worse, user="ci")
    assert not d.promoted and d.decision == "rejected" and champion(trk) == str(v1)
    assert (d.candidate_score, d.champion_score) == (0.69, 0.70)
    tags = trk.client.get_model_version(NAME, worse).tags
    assert tags["mtlp.promotion.decision"] == "rejected" and float(tags["mtlp.promotion.champion_score"]) == 0.70
    assert float(tags["mtlp.promotion.candidate_score"]) == 0.69 and tags["mtlp.promotion.champion_version"] == str(v1)

    equal = add(trk, src, 0.70)
    assert not registry.promote(trk.client, NAME, equal).promoted  # a tie does not beat the champion

    slightly = add(trk, src, 0.705)
    d = registry.promote(trk.client, NAME, slightly, margin=0.01)
    assert not d.promoted and "margin" in d.reason and champion(trk) == str(v1)

    better = add(trk, src, 0.72)
    d = registry.promote(trk.client, NAME, better, margin=0.01)
    assert d.promoted and d.decision == "promoted" and champion(trk) == str(better)
    history = registry.champion_history(trk.client, NAME)
    assert [h["version"] for h in history] == [str(v1), str(better)]


def test_lower_is_better_metric(env):
    trk, src, _ = env
    v1 = add(trk, src, 0.7, logloss=0.40)
    registry.promote(trk.client, NAME, v1)
    v2 = add(trk, src, 0.9, logloss=0.45)  # better AUC, worse logloss
    d = registry.promote(trk.client, NAME, v2, metric="test/income/logloss")
    assert not d.promoted and champion(trk) == str(v1)
    v3 = add(trk, src, 0.6, logloss=0.35)
    assert registry.promote(trk.client, NAME, v3, metric="test/income/logloss").promoted


def test_different_test_data_needs_a_re_evaluation(env):
    trk, src, _ = env
    v1 = add(trk, src, 0.80, test_data="old")
    registry.promote(trk.client, NAME, v1)
    v2 = add(trk, src, 0.75, test_data="new")  # scored on other data: 0.75 vs 0.80 means nothing
    d = registry.promote(trk.client, NAME, v2)
    assert d.decision == "not_comparable" and not d.promoted and champion(trk) == str(v1)
    seen = []

    def evaluate(uri):  # re-scores the champion on the candidate's test data
        seen.append(uri)
        return 0.70

    d = registry.promote(trk.client, NAME, v2, evaluate=evaluate)
    assert seen == [f"models:/{NAME}/{v1}"] and d.promoted and d.champion_score == 0.70 and champion(trk) == str(v2)


def test_promote_best_of_a_pipeline_run(env):
    trk, src, _ = env
    versions = [add(trk, src, s) for s in (0.71, 0.74, 0.72)]
    d = registry.promote_best(trk.client, NAME, versions)
    assert d.promoted and d.candidate_version == str(versions[1]) and champion(trk) == str(versions[1])


def test_selection_is_on_validation_and_test_is_only_reported(env):
    """Of one run's candidates the better validation score wins though its test score is worse; the decision
    reports both test scores."""
    trk, src, _ = env
    good_val = add(trk, src, 0.70, val=0.80)   # better validation, worse test
    good_test = add(trk, src, 0.78, val=0.75)  # worse validation, better test
    d = registry.promote_best(trk.client, NAME, [good_test, good_val])
    assert d.metric == "val_score" and d.candidate_version == str(good_val) and champion(trk) == str(good_val)
    assert (d.candidate_score, d.candidate_test_score) == (0.80, 0.70)


def test_the_guard_compares_validation_scores(env):
    """Against the champion: a better test but worse validation score loses, the reverse wins."""
    trk, src, _ = env
    champ = add(trk, src, 0.70, val=0.80)
    registry.promote(trk.client, NAME, champ)
    worse_val = add(trk, src, 0.90, val=0.78)
    d = registry.promote(trk.client, NAME, worse_val)
    assert not d.promoted and d.decision == "rejected" and champion(trk) == str(champ)
    assert (d.candidate_score, d.champion_score) == (0.78, 0.80)
    assert (d.candidate_test_score, d.champion_test_score) == (0.90, 0.70)  # reported, not compared
    better_val = add(trk, src, 0.60, val=0.82)
    d = registry.promote(trk.client, NAME, better_val)
    assert d.promoted and champion(trk) == str(better_val) and d.champion_test_score == 0.70
    audit = json.loads(trk.client.get_registered_model(NAME).tags["mtlp.audit"])
    assert audit[-1]["metric"] == "val_score" and audit[-1]["candidate_test_score"] == 0.60


def test_a_missing_validation_score_is_never_replaced_by_test(env):
    trk, src, _ = env
    v = add(trk, src, 0.9, val=None)
    assert "metric.val_score" not in trk.client.get_model_version(NAME, v).tags
    decision = registry.promote(trk.client, NAME, v)  # no champion yet, and still not promoted on test
    assert (decision.promoted, decision.decision) == (False, "unscored") and "metric.val_score" in decision.reason
    assert champion(trk) is None
    scored = add(trk, src, 0.7)
    assert registry.promote(trk.client, NAME, scored).promoted and champion(trk) == str(scored)
    assert registry.promote(trk.client, NAME, add(trk, src, 0.95, val=None)).decision == "unscored"
    assert champion(trk) == str(scored)


def test_data_fingerprint_covers_validation_and_test_rows():
    from types import SimpleNamespace

    def spec(val_rows, test_rows=100):
        return SimpleNamespace(dataset="adult", raw_sha256={"a": "1"}, split={"val_fraction": 0.1}, options={},
                               seed=7, rows={"train": 900, "val": val_rows, "test": test_rows}, labels=[])

    assert registry.data_fingerprint(spec(10)) == registry.data_fingerprint(spec(10))
    assert registry.data_fingerprint(spec(10)) != registry.data_fingerprint(spec(11))
    assert registry.data_fingerprint(spec(10)) != registry.data_fingerprint(spec(10, test_rows=99))


def test_manual_promotion_and_rollback_record_who_when_why(env):
    trk, src, _ = env
    v1, v2, v3 = (add(trk, src, s) for s in (0.70, 0.75, 0.80))
    registry.promote(trk.client, NAME, v1)
    registry.promote(trk.client, NAME, v2)
    prev = registry.promote_version(trk.client, NAME, v3, reason="hotfix model", user="alice")
    assert prev == str(v2) and champion(trk) == str(v3)
    tags = trk.client.get_model_version(NAME, v3).tags
    assert tags["mtlp.promotion.decision"] == "manual" and tags["mtlp.promotion.by"] == "alice"
    assert tags["mtlp.promotion.reason"] == "hotfix model" and tags["mtlp.promotion.at"]

    assert registry.rollback(trk.client, NAME, reason="bad latency", user="bob") == str(v2)
    assert champion(trk) == str(v2)
    rm = trk.client.get_registered_model(NAME)
    last = json.loads(rm.tags["mtlp.last_action"])
    assert (last["action"], last["version"], last["previous"], last["by"], last["reason"]) == \
        ("rollback", str(v2), str(v3), "bob", "bad latency")
    assert trk.client.get_model_version(NAME, v3).tags["mtlp.rollback.reason"] == "bad latency"
    assert [a["action"] for a in json.loads(rm.tags["mtlp.audit"])] == ["promote", "promote", "manual_promote",
                                                                       "rollback"]
    assert registry.rollback(trk.client, NAME, reason="again", user="bob") == str(v1)  # one more step back
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(trk.client, NAME, reason="again", user="bob")
    with pytest.raises(registry.RegistryError, match="no version 99"):
        registry.promote_version(trk.client, NAME, 99, reason="typo")


def test_cli_promote_and_rollback(env, capsys):
    trk, src, work = env
    v1, v2 = add(trk, src, 0.7), add(trk, src, 0.6)
    base = ["--model", NAME, "--work-dir", str(work)]
    assert promote_cli.main(base + ["--version", str(v1)]) == 0
    assert promote_cli.main(base + ["--version", str(v2), "--reason", "A/B winner", "--user", "carol",
                                    "--force"]) == 0  # v2 scores lower: tests/registry/test_promote_cli.py
    assert champion(trk) == str(v2)
    tags = trk.client.get_model_version(NAME, v2).tags
    assert (tags["mtlp.promotion.by"], tags["mtlp.promotion.reason"]) == ("carol", "A/B winner")
    assert promote_cli.main(base + ["--rollback", "--reason", "incident 12", "--user", "dave"]) == 0
    assert champion(trk) == str(v1)
    assert "rolled back from version 2 to version 1" in capsys.readouterr().out
    assert promote_cli.main(base + ["--show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["champion"] == str(v1) and shown["history"][-1]["action"] == "rollback"
    assert shown["challenger"] == str(v2)  # the newest candidate, as --show's help promises
    assert promote_cli.main(base + ["--version", "42"]) == 2
    assert "no version 42" in capsys.readouterr().err
    assert promote_cli.main(["--model", NAME, "--tracking-uri", "http://127.0.0.1:9", "--version", "1",
                             "--timeout", "2"]) == 2
    assert "unreachable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        promote_cli.main(base + ["--version", "1", "--rollback"])  # one action at a time


def test_cli_promote_finds_the_newest_runs_store_and_never_creates_one(env, tmp_path, monkeypatch, capsys):
    """Without --work-dir and no shared mtlp-runs/mlflow.db: the newest run folder's own store that holds the model
    (named on stderr); nothing there: one line that says how to name the store, and no ./mlflow.db is left
    behind."""
    trk, src, work = env
    v1 = add(trk, src, 0.7)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert promote_cli.main(["--model", NAME, "--show"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mtlp promote: error: no MLflow store found (no mtlp-runs/mlflow.db or mtlp-runs/<run>/mlflow.db "
                   "here): name a run folder with --work-dir mtlp-runs/<run>, or a server with --tracking-uri / "
                   "MLFLOW_TRACKING_URI")
    assert promote_cli.main(["--model", NAME, "--show", "--work-dir", "."]) == 2
    assert "no MLflow store in . (mlflow.db not found)" in capsys.readouterr().err
    assert list(empty.iterdir()) == []  # no mlflow.db created here
    (empty / "mtlp-runs" / "old-run").mkdir(parents=True)
    (empty / "mtlp-runs" / "old-run" / "mlflow.db").write_bytes(b"")
    os.utime(empty / "mtlp-runs" / "old-run" / "mlflow.db", (1, 1))
    (empty / "mtlp-runs" / "new-run").symlink_to(work)  # the store of the env fixture, newest
    assert promote_cli.main(["--model", NAME, "--version", str(v1), "--reason", "t"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == ("mtlp promote: using the store of the newest run holding reg-test, "
                                    "mtlp-runs/new-run (--work-dir picks another)")
    assert champion(trk) == str(v1) and not (empty / "mlflow.db").exists()


def test_concurrent_promotions_end_with_the_best(env):
    trk, src, _ = env
    v1 = add(trk, src, 0.70)
    registry.promote(trk.client, NAME, v1)
    v2, v3 = add(trk, src, 0.80), add(trk, src, 0.90)
    results = {}

    def go(v):
        results[v] = registry.promote(trk.client, NAME, v)

    threads = [threading.Thread(target=go, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert champion(trk) == str(v3)  # in either order, the better one ends as champion
    assert results[v3].promoted
    history = [h["version"] for h in registry.champion_history(trk.client, NAME)]
    assert history[0] == str(v1) and history[-1] == str(v3)
