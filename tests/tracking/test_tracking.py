"""Tracking: URI resolution, reachability errors before training, parent/child runs across processes, params,
retried metric logging that never kills training, plots; and the embedded-store end-to-end pipeline run."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import (REPO, check_champion_parity, check_layout, check_promotion_rules,  # noqa: E402
                             embedded_pipeline, embedded_tracking, prepared_adult, quiet_mlflow, seed_store)
from _servers import free_port  # noqa: E402

from workflow.reports import plots# noqa: E402
from workflow import tracking# noqa: E402

quiet_mlflow()


@pytest.fixture
def trk(tmp_path, monkeypatch):
    return embedded_tracking(tmp_path, "unit-tests", monkeypatch)


# ---- where runs go -------------------------------------------------------------------------------------------

def test_default_is_sqlite_and_local_artifacts_in_work_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = tracking.resolve_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert artifacts == (tmp_path.resolve() / "mlartifacts").as_uri()
    trk = tracking.setup_tracking("exp-a", work_dir=tmp_path)
    assert (tmp_path / "mlflow.db").is_file()
    exp = trk.client.get_experiment(trk.experiment_id)
    assert exp.name == "exp-a" and exp.artifact_location == artifacts
    # get-or-create: a second setup finds the same experiment
    assert tracking.setup_tracking("exp-a", work_dir=tmp_path).experiment_id == trk.experiment_id
    # pointing MLflow at the store does not leak into MLFLOW_TRACKING_URI: another work dir gets its own store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    other = tracking.setup_tracking("exp-a", work_dir=seed_store(tmp_path / "other"))
    assert other.uri == f"sqlite:///{(tmp_path / 'other').resolve()}/mlflow.db"


def test_env_and_explicit_uri_take_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_tracking_uri(tmp_path) == ("http://tracking.example:5000", None)
    assert tracking.resolve_tracking_uri(tmp_path, "http://other:1") == ("http://other:1", None)


def test_unreachable_server_is_a_clear_error_before_training(tmp_path):
    port = free_port()  # nothing listens there
    start = time.time()
    with pytest.raises(tracking.TrackingUnavailable, match=r"unreachable.*MLFLOW_TRACKING_URI"):
        tracking.setup_tracking("x", work_dir=tmp_path, uri=f"http://127.0.0.1:{port}", timeout=2)
    assert time.time() - start < 10


def test_a_server_that_is_not_mlflow_is_rejected(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(tracking.TrackingUnavailable, match="HTTP 404"):
            tracking.check_tracking_reachable(f"http://127.0.0.1:{server.server_port}", timeout=3)
    finally:
        server.shutdown()


def test_unreachable_database_is_a_clear_error():
    port = free_port()
    with pytest.raises(tracking.TrackingUnavailable, match=r"tracking database .*:\*\*\*@.* is unreachable"):
        tracking.check_tracking_reachable(f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/db", timeout=2)


# ---- params --------------------------------------------------------------------------------------------------

def test_flatten_params():
    flat = tracking.flatten_params({"lr": 0.001, "dims": [128, 64], "opt": {"name": "adam", "betas": (0.9, 0.99)},
                                    "flag": True, "none": None})
    assert flat == {"lr": "0.001", "dims": "[128, 64]", "opt.name": "adam", "opt.betas": "[0.9, 0.99]",
                    "flag": "True", "none": "None"}
    assert len(tracking.flatten_params({"x": "a" * 10000})["x"]) == 6000


def test_log_params_batches_over_the_limit(trk):
    run = trk.client.create_run(trk.experiment_id)
    tracking.log_params(trk.client, run.info.run_id, {f"p{i:03d}": i for i in range(250)})
    assert len(trk.client.get_run(run.info.run_id).data.params) == 250


# ---- runs ----------------------------------------------------------------------------------------------------

def test_parent_and_children_across_processes(trk):
    config = {"models": {"mmoe": {"n_expert": 4}}, "seed": 1}
    parent = tracking.start_parent_run(trk, "pipe-42", dataset="adult", raw_sha256={"a.csv": "ab" * 32},
                                       config=config, git_commit_id="c0ffee")
    assert tracking.start_parent_run(trk, "pipe-42") == parent  # a retried step finds its parent run
    code = ("import sys\nfrom workflow import tracking\nfrom mlflow import MlflowClient\n"
            "c = MlflowClient(sys.argv[1])\n"
            "with tracking.child_run(c, sys.argv[2], 'trial-0', role='trial') as r:\n    print(r)\n")
    out = subprocess.run([sys.executable, "-c", code, trk.uri, parent], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    child_id = out.stdout.strip().splitlines()[-1]
    child = trk.client.get_run(child_id)
    assert child.info.experiment_id == trk.experiment_id and child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["mtlp.pipeline_run_id"] == "pipe-42" and child.data.tags["mtlp.role"] == "trial"
    p = trk.client.get_run(parent)
    assert p.data.tags["mtlp.git_commit"] == "c0ffee" and p.data.tags["mtlp.raw_sha256.a.csv"] == "ab" * 32
    assert json.loads(p.data.tags["mtlp.config"]) == config and p.data.params["config.models.mmoe.n_expert"] == "4"


def test_child_run_marked_failed_on_exception(trk):
    parent = tracking.start_parent_run(trk, "pipe-fail", git_commit_id="x")
    with pytest.raises(ZeroDivisionError):
        with tracking.child_run(trk.client, parent, "boom") as run_id:
            1 / 0
    assert trk.client.get_run(run_id).info.status == "FAILED"


# ---- retried logging -----------------------------------------------------------------------------------------

class FlakyClient:
    """Fails the first ``failures`` log_batch calls, then records what it is sent."""

    def __init__(self, failures: int):
        self.failures, self.calls, self.logged = failures, 0, []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("tracking server hiccup")
        self.logged.extend(metrics)


def test_callback_retries_transient_failures_with_backoff():
    sleeps: list[float] = []
    client = FlakyClient(failures=2)
    cb = tracking.MlflowCallback("run-1", client=client, retries=3, backoff=0.5, system_metrics=False,
                                 sleep=sleeps.append)
    cb.on_fit_start(None)
    cb.on_epoch_end(None, 0, {"train/loss": 0.5, "val/income/auc": 0.8, "weight/income": 1.0})
    assert client.calls == 3 and sleeps == [0.5, 1.0]
    assert {(m.key, m.value, m.step) for m in client.logged} == {("train/loss", 0.5, 0), ("val/income/auc", 0.8, 0),
                                                                  ("weight/income", 1.0, 0)}
    assert cb.failed_batches == 0 and cb.logged_steps == [0]


def test_callback_gives_up_with_a_warning_and_training_goes_on():
    client = FlakyClient(failures=10 ** 6)
    cb = tracking.MlflowCallback("run-1", client=client, retries=2, backoff=0.01, system_metrics=False,
                                 sleep=lambda s: None)
    with pytest.warns(RuntimeWarning, match="could not log .* training continues"):
        cb.on_epoch_end(None, 0, {"train/loss": 0.5})
    assert client.calls == 3 and cb.failed_batches == 1
    client.failures = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.on_epoch_end(None, 1, {"train/loss": 0.4})  # the next epoch logs again
    assert cb.logged_steps == [1] and client.logged[0].step == 1


def test_training_survives_a_dead_tracking_client(tmp_path, adult_dir):
    """A real (tiny) training run whose tracking client always fails still finishes."""
    from workflow.training.train import train

    prepared = prepared_adult(adult_dir, tmp_path.parent)
    client = FlakyClient(failures=10 ** 6)
    cb = tracking.MlflowCallback("run-x", client=client, retries=1, backoff=0.0, sleep=lambda s: None)
    with pytest.warns(RuntimeWarning):
        result = train(prepared, "shared_bottom", tmp_path / "m", n_epoch=1, patience=1, device="cpu",
                       params={"embed_dim": 2, "bottom_dims": [4], "tower_dims": [2], "batch_size": 8192},
                       callbacks=[cb], progress=False)
    assert len(result.history) == 1 and cb.failed_batches == 1 and client.calls == 2


def test_system_metrics_logged_when_psutil_present():
    pytest.importorskip("psutil")
    client = FlakyClient(failures=0)
    tracking.MlflowCallback("r", client=client).on_epoch_end(None, 3, {"train/loss": 1.0})
    keys = {m.key for m in client.logged}
    assert "system/cpu_utilization_percentage" in keys and "system/process_rss_megabytes" in keys


# ---- plots ---------------------------------------------------------------------------------------------------

def test_plots_are_pngs(tmp_path):
    import numpy as np

    history = [{"train/loss": 1.0 - 0.1 * e, "train/a/loss": 0.5, "val/a/auc": 0.6 + 0.01 * e, "weight/a": 1.0}
               for e in range(3)]
    paths = [plots.training_curves(history, tmp_path / "curves.png", "m"),
             plots.model_comparison({"m1": {"test_score": 0.7, "a/auc": 0.8}, "m2": {"test_score": 0.75}},
                                    tmp_path / "cmp.png"),
             plots.search_history([0.5, None, 0.7, 0.6], tmp_path / "search.png")]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 2)).astype(np.float32)
    paths += plots.roc_curves(y, rng.random((200, 2)), ["a", "r"], ["classification", "regression"], tmp_path)
    assert [p.name for p in paths] == ["curves.png", "cmp.png", "search.png", "roc_a.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_search_plots_logged_under_search(trk, tmp_path):
    run_id = trk.client.create_run(trk.experiment_id).info.run_id
    files = tracking.log_search_plots(trk.client, run_id, [0.6, None, 0.65, 0.64], tmp_path)
    assert files[0].is_file()
    assert [a.path for a in trk.client.list_artifacts(run_id, "search")] == ["search/search_history.png"]


# ---- end to end against the embedded default ----------------------------------------------------------------

@pytest.mark.slow
def test_pipeline_run_against_the_embedded_store(tmp_path_factory, adult_dir, monkeypatch):
    """prepare -> train two small models -> register, all against the default sqlite store + local artifacts."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    assert run.tracking.uri.startswith("sqlite:///") and run.tracking.uri.endswith("/mlflow.db")
    artifact_uri = run.tracking.client.get_run(run.parent_run_id).info.artifact_uri
    assert artifact_uri.startswith((run.work / "mlartifacts").as_uri())
    check_layout(run)
    check_champion_parity(run, adult_dir)
    check_promotion_rules(run)


def test_compare_scores_two_versions_through_their_logged_models(tmp_path_factory, adult_dir, capsys):
    """mtlp compare: each version's pyfunc on the decoded validation rows reproduces the trained model's own
    validation AUC (what metrics.json recorded), and the table gives Δ with its paired interval per task."""
    import json

    from workflow.registry import compare
    from workflow.reports.intervals import SUFFIXES

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    a, b = run.candidates[:2]
    result = compare.compare_versions(run.tracking.client, "adult-mtl", a.version, b.version, run.prepared)
    for cand, side in ((a, "a"), (b, "b")):
        saved = json.loads((run.work / cand.model_name / "metrics.json").read_text())
        for task, metrics in saved["val_metrics"].items():
            assert result["comparisons"][f"{task}/auc"][side] == pytest.approx(metrics["auc"], abs=1e-5)
            assert all(metrics["auc" + s] == metrics["auc" + s] for s in SUFFIXES)  # recorded, not NaN
    c = result["comparisons"]["income/auc"]
    assert c["delta"] == pytest.approx(c["b"] - c["a"]) and c["lo"] < c["delta"] < c["hi"]
    assert compare.main(["--model", "adult-mtl", "--a", a.version, "--b", b.version, "--prepared",
                         str(run.prepared), "--tracking-uri", run.tracking.uri]) == 0
    out = capsys.readouterr().out
    assert f"| income | AUC | {c['a']:.4f} | {c['b']:.4f} | {c['delta']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}] |" in out
    assert compare.main(["--model", "adult-mtl", "--a", a.version, "--b", a.version, "--prepared",
                         str(run.prepared), "--tracking-uri", run.tracking.uri]) == 2
    assert "both version" in capsys.readouterr().err


# ---- what the MLflow UI shows first ----------------------------------------------------------------------------

def test_experiment_opens_in_the_model_training_view(trk):
    """New experiments get mlflow.experimentKind=custom_model_development; an untagged old one gets it on the next
    run; a kind chosen in the UI is kept."""
    client = trk.client
    assert client.get_experiment(trk.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("made-before")
    assert tracking.get_or_create_experiment(client, "made-before") == old
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(old, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    tracking.get_or_create_experiment(client, "made-before")
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
    url = tracking.ui_url("http://127.0.0.1:5000/", trk.experiment_id)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{trk.experiment_id}/runs?workflowType=machine_learning"
                   "&viewStateShareKey=mtlp")
    assert "compare-runs?runs=%5B%22a%22%2C%22b%22%5D" in tracking.ui_url("http://h", "1", ["a", "b"])


def test_model_metrics_under_short_names_on_the_model_run_and_its_parent(trk, tmp_path):
    """The runs table compares models from the collapsed parent row (click_auc/<model>...), and each model run
    carries click_auc / conversion_auc / score for the chart view; the ceiling sits beside them on the parent."""
    from types import SimpleNamespace

    client = trk.client
    parent = tracking.start_parent_run(trk, "p1", git_commit_id="")
    for name, (click, conv) in {"mmoe": (0.71, 0.69), "ple": (0.72, 0.68)}.items():
        run_id = tracking.create_child_run(client, parent, name, role="model")
        result = SimpleNamespace(model_name=name, params={"lr": 0.001},
                                 test_metrics={"click": {"auc": click, "logloss": 0.3}, "conversion": {"auc": conv}},
                                 test_score=(click + conv) / 2, best_epoch=2, best_score=0.7, n_parameters=10,
                                 train_seconds=1.0, history=[], out_dir=tmp_path / name)
        final = tracking.log_train_result(client, run_id, result, log_history=False)
        child = client.get_run(run_id).data.metrics
        assert child["click_auc"] == final["click_auc"] == click and child["score"] == pytest.approx((click + conv) / 2)
        assert "click_logloss" not in child and child["test/click/logloss"] == 0.3
    spec_ceiling = {"split": "test", "source": "true probabilities of the generator",
                    "metrics": {"click": {"auc": 0.74}, "conversion": {"auc": 0.76}}}
    assert tracking.log_ceiling(client, parent, spec_ceiling) == {"ceiling/click_auc": 0.74,
                                                                  "ceiling/conversion_auc": 0.76}
    assert tracking.log_ceiling(client, parent, {}) == {}
    on_parent = client.get_run(parent).data.metrics
    assert on_parent == pytest.approx({"click_auc/mmoe": 0.71, "conversion_auc/mmoe": 0.69, "score/mmoe": 0.70,
                                       "click_auc/ple": 0.72, "conversion_auc/ple": 0.68, "score/ple": 0.70,
                                       "ceiling/click_auc": 0.74, "ceiling/conversion_auc": 0.76})
    # the shared view the UI URL names shows these as columns, the short names first
    view = json.loads(client.get_experiment(trk.experiment_id).tags[tracking.VIEW_TAG])
    assert view["selectedColumns"][:3] == ["metrics.`click_auc`", "metrics.`conversion_auc`", "metrics.`score`"]
    assert "metrics.`score/ple`" in view["selectedColumns"] and view["runsExpanded"] == {parent: True}


def test_train_result_logs_the_plots_the_train_step_drew_and_draws_none(trk, tmp_path, monkeypatch):
    """Only the PNG files in ``<out_dir>/plots/`` are logged (under ``plots/``); nothing is drawn or inferred."""
    from types import SimpleNamespace

    from workflow.reports import plots as plotting

    def no_drawing(*args, **kwargs):
        raise AssertionError("log_train_result drew a figure")

    for name in ("training_curves", "roc_curves", "model_comparison"):
        monkeypatch.setattr(plotting, name, no_drawing)
    out = tmp_path / "trained"
    (out / "plots").mkdir(parents=True)
    for name in ("training_curves.png", "roc_click.png"):
        (out / "plots" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    (out / "plots" / "notes.txt").write_text("not a plot")
    (out / "metrics.json").write_text("{}")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = SimpleNamespace(model_name="mmoe", params={"lr": 0.01}, test_metrics={"click": {"auc": 0.7}},
                             test_score=0.7, val_score=0.72, best_epoch=1, best_score=0.72, n_parameters=10,
                             train_seconds=1.0, history=[{"epoch": 0, "train/loss": 0.5}], out_dir=out)
    run_id = trk.client.create_run(trk.experiment_id).info.run_id
    final = tracking.log_train_result(trk.client, run_id, result)
    logged = sorted(a.path for a in trk.client.list_artifacts(run_id, "plots"))
    assert logged == ["plots/roc_click.png", "plots/training_curves.png"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written beside them
    assert final["val/score"] == 0.72 and final["test/score"] == 0.7
    assert [m.value for m in trk.client.get_metric_history(run_id, "train/loss")] == [0.5]  # no callback ran


def test_comparison_figure_shows_key_metrics_at_ui_width(tmp_path):
    """One panel per key metric (score, then each task's AUC/RMSE; logloss left to comparison.json), at most
    800 px wide so MLflow's preview shows it at about its own size."""
    import struct

    table = {m: {"test_score": s, "click/auc": s + 0.01, "click/logloss": 0.3, "watch/rmse": 1.0 - s}
             for m, s in {"mmoe": 0.70, "ple": 0.71, "esmm": 0.69}.items()}
    assert plots._key_metric_names(table) == ["test_score", "click/auc", "watch/rmse"]
    png = plots.model_comparison(table, tmp_path / "cmp.png", reference={"click/auc": 0.75})
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the PNG IHDR chunk
    assert 600 <= width <= 800 and height > width / 2
