"""The run's summary and comparison chart (issue 29, point 2): ``val_score``, what promotion selects on, is a column
and a panel (first), ESMM's ``cvr/auc`` column is explained, the chart's bars start near the values rather than
at 0 and the champion is marked."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import quiet_mlflow, seed_store  # noqa: E402

from workflow import steps  # noqa: E402
from workflow.reports import plots  # noqa: E402

quiet_mlflow()


def test_report_flattens_val_score_when_recorded(tmp_path) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    saved = {"model_name": "esmm", "best_epoch": 2, "test_score": 0.7, "val_score": 0.68,
             "test_metrics": {"click": {"auc": 0.7}}}
    (trained / "metrics.json").write_text(json.dumps(saved))
    assert steps.report_step(trained, tmp_path / "r.html")["val_score"] == 0.68
    (trained / "metrics.json").write_text(json.dumps({**saved, "val_score": float("nan")}))
    assert "val_score" not in steps.report_step(trained, tmp_path / "r.html")


def test_summary_has_val_score_first_and_explains_cvr_auc() -> None:
    results = {"mmoe": {"val_score": 0.671, "test_score": 0.705, "click/auc": 0.70, "conversion/auc": 0.71},
               "esmm": {"val_score": 0.674, "test_score": 0.699, "click/auc": 0.69, "conversion/auc": 0.708,
                        "cvr/auc": 0.61}}
    lines = steps.summary_table(results)
    assert lines[0] == "| model | val_score | test_score | click/auc | conversion/auc | cvr/auc |"
    assert lines[2] == "| esmm | 0.6740 | 0.6990 | 0.6900 | 0.7080 | 0.6100 |"  # best val_score first
    assert lines[3] == "| mmoe | 0.6710 | 0.7050 | 0.7000 | 0.7100 |  |"
    assert lines[-1].startswith("`cvr/*`: ESMM's own CVR tower (conversion given a click), scored on the clicked")
    without = steps.summary_table({"mmoe": results["mmoe"]})
    assert not any(line.startswith("`cvr/") for line in without)


def test_chart_has_val_score_bars_from_near_the_values_and_marks_the_champion(tmp_path) -> None:
    table = {"mmoe": {"val_score": 0.670, "test_score": 0.70, "click/auc": 0.71},
             "ple": {"val_score": 0.674, "test_score": 0.69, "click/auc": 0.72}}
    assert plots._key_metric_names(table) == ["val_score", "test_score", "click/auc"]
    seen = {}
    real_save = plots.save_figure

    def keep(fig, path, dpi=100):
        seen["axes"] = [(ax.get_xlim(), [p.get_x() for p in ax.patches],
                         [(t.get_text(), t.get_fontweight()) for t in ax.get_yticklabels()]) for ax in fig.axes]
        return real_save(fig, path, dpi)

    plots.save_figure = keep
    try:
        plots.model_comparison(table, tmp_path / "cmp.png", champion="ple")
    finally:
        plots.save_figure = real_save
    (lo, hi), lefts, labels = seen["axes"][0]  # the val_score panel
    assert 0.66 < lo < 0.670 and hi > 0.674  # zoomed: 0.670 and 0.674 look different
    assert all(abs(x - lo) < 1e-9 for x in lefts)  # the bars start at the axis' left edge, not at 0
    assert ("ple (champion)", "bold") in labels and ("mmoe", "normal") in labels


def test_chart_draws_each_models_interval_as_an_error_bar(tmp_path, monkeypatch) -> None:
    table = {"mmoe": {"test_score": 0.70, "click/auc": 0.71, "click/auc_lo": 0.69, "click/auc_hi": 0.73},
             "ple": {"test_score": 0.69, "click/auc": 0.72, "click/auc_lo": 0.705, "click/auc_hi": 0.735}}
    seen = {}
    real_save = plots.save_figure

    def keep(fig, path, dpi=100):
        seen["bars"] = [[seg.tolist() for c in ax.containers if type(c).__name__ == "ErrorbarContainer"
                         for seg in c.lines[2][0].get_segments()] for ax in fig.axes]
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.model_comparison(table, tmp_path / "cmp.png")
    no_interval, auc = seen["bars"]  # test_score has no interval; click/auc has one per model
    assert no_interval == []
    # best on top: ple's bar at y=1 spans its interval, mmoe's at y=0
    assert sorted((round(a[0], 4), round(b[0], 4), a[1]) for a, b in auc) == [(0.69, 0.73, 0.0), (0.705, 0.735, 1.0)]


def test_summary_step_titles_the_chart_with_the_champion(tmp_path, monkeypatch) -> None:
    """The chart names the champion; its bar is marked only when this run registered it."""
    from workflow import registry, tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = seed_store(tmp_path / "w")
    parent = steps.start_pipeline_run({"tracking": {"experiment": "exp-s"}}, work, "this-run")
    client = tracking.client_for(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    run = client.create_run(client.get_run(parent).info.experiment_id).info.run_id
    old = registry.register_candidate(client, "m", f"runs:/{run}/model", run_id=run, architecture="ple",
                                      test_metrics={}, test_score=0.7, pipeline_run_id="earlier-run").version
    mine = registry.register_candidate(client, "m", f"runs:/{run}/model", run_id=run, architecture="mmoe",
                                       test_metrics={}, test_score=0.7, pipeline_run_id="this-run").version
    assert steps._champion_of_run(client, "m", old, parent) == (None, f"metrics by model; champion ple (v{old}, "
                                                                      "from run earlier-run)")
    assert steps._champion_of_run(client, "m", mine, parent) == ("mmoe", f"metrics by model; champion mmoe (v{mine})")
    assert steps._champion_of_run(client, "m", None, parent) == (None, "metrics by model")
