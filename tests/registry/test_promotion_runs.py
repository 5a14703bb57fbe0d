"""Two pipeline runs of the default config's data with different seeds into one store: the second run's champion is
re-scored on the second run's validation rows through its own logged model, and the summary gives the decision in
the rule's words. The graph's step functions, as the KFP components call them; a small training budget (two
models, one epoch, no search), since what is checked is the decision, not the models."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("mlflow")
from _mlflow_helpers import quiet_mlflow, seed_store  # noqa: E402

from pipeline.config import config_to_dict, load_config  # noqa: E402
from workflow import steps, tracking  # noqa: E402

quiet_mlflow()
MODELS = ("shared_bottom", "mmoe")
NAME = "mtlp-default-model"
WORDS = re.compile(
    r"Champion of `mtlp-default-model`: (?:"
    r"kept (shared_bottom|mmoe) \(v\d\): (shared_bottom|mmoe) \(v\d\) [+-]\d\.\d{4} click AUC \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]"
    r"(, not significant \(p[=<][0-9.e-]+\)|.*worse than the 0\.002 margin)"
    r"|(shared_bottom|mmoe) \(v\d\) is now champion: \+\d\.\d{4} click AUC \[\+\d\.\d{4}, \+\d\.\d{4}\] over (shared_bottom|mmoe) \(v\d\) "
    r"\(p[=<][0-9.e-]+\), no task worse than its margin)")


def _run(trk, work, seed: int, run_id: str):
    config = config_to_dict(load_config())
    config["dataset"]["seed"] = seed
    ds = config["dataset"]
    parent = steps.start_pipeline_run(config, work, run_id, trk.uri, trk.experiment_name)
    prepared = work / f"prepared-{seed}"
    steps.prepare_step(ds["name"], prepared, None, seed, ds["val_fraction"], ds["options"], parent, work, trk.uri)
    versions, results = [], {}
    for name in MODELS:
        run = steps.start_model_run(run_id, trk.experiment_name, name, work, trk.uri)
        out = work / f"{name}-{seed}"
        steps.train_step(prepared, name, out, run, work, fixed_params={"batch_size": 1024}, n_epoch=1, patience=1,
                         device="cpu", seed=seed, tracking_uri=trk.uri)
        steps.export_step(out, prepared, run, work, trk.uri)
        versions.append(steps.register_step(out, run, NAME, work, run_id, trk.uri))
        results[name] = steps.report_step(out, work / f"{name}-{seed}.html")
    decision = steps.promote_step(versions, NAME, work, tracking_uri=trk.uri, prepared_dir=prepared,
                                  promotion=config["promotion"])
    return decision, steps.summary_step(parent, results, decision, NAME, work, work / f"summary-{seed}.md", trk.uri)


@pytest.mark.slow
def test_a_second_default_run_with_another_seed_is_decided_in_words(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = seed_store(tmp_path / "work")
    trk = tracking.setup_tracking("mtlp-default", work_dir=work)
    first, _ = _run(trk, work, 42, "seed-42")
    assert first["decision"] == "no_champion" and first["rule"] == "paired"
    second, summary = _run(trk, work, 7, "seed-7")
    assert second["rule"] == "paired" and second["champion_version"] == first["current_champion"]
    assert second["decision"] in ("promoted", "rejected")  # re-scored, never "not comparable"
    assert set(second["comparisons"]) == {"click/auc", "conversion/auc"}
    assert WORDS.search(summary), summary
    assert "the run's best by val_score, " in summary and "the runner-up" in summary
    assert re.search(r"\| 0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] \|", summary)  # the table's intervals
