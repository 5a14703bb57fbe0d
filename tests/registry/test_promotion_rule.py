"""The paired promotion rule: simulations of its error rates at the default config's validation size, its words,
and the registry's promotion with it (both versions scored on the same rows; a fake scorer stands in for the
logged models, which the slow pipeline test exercises)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from workflow.registry.rescore import NotComparable, Rows
from workflow.registry.rule import PairedRule, judge_paired, p_words

TASKS = ["click", "conversion"]
DEFAULT = load_config()
VAL_ROWS = int(DEFAULT.dataset.options["n_rows"] * DEFAULT.dataset.val_fraction)  # 4,000 validation rows
RATES = (DEFAULT.dataset.options["ctr"], DEFAULT.dataset.options["ctr"] * DEFAULT.dataset.options["cvr"])
# How much two models' errors are shared, per task: the simulated scores then correlate about 0.97 (click) and 0.95
# (conversion), just below the least-correlated pair of a default run's models on its validation rows (docs/mlflow.md)
SHARED = (0.97, 0.95)
N_SIM = 200


def _shift(auc: float) -> float:
    """Binormal model, unit variances: a positive's score is shifted by this to reach ``auc``."""
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def simulate(rng, aucs_a, aucs_b, n=VAL_ROWS, rates=RATES, shared=SHARED):
    """Labels and two models' scores ``[n, 2]`` whose true AUCs are ``aucs_a`` / ``aucs_b`` per task, their noise
    correlated by ``shared[task]`` (two models trained on the same data err on the same rows)."""
    labels, p_a, p_b = (np.zeros((n, len(rates))) for _ in range(3))
    for t, rate in enumerate(rates):
        y = (rng.random(n) < rate).astype(float)
        common = rng.normal(size=n) * math.sqrt(shared[t])
        own_a, own_b = rng.normal(size=(2, n)) * math.sqrt(1 - shared[t])
        labels[:, t] = y
        p_a[:, t] = 1 / (1 + np.exp(-(_shift(aucs_a[t]) * y + common + own_a - 2)))
        p_b[:, t] = 1 / (1 + np.exp(-(_shift(aucs_b[t]) * y + common + own_b - 2)))
    return labels, p_a, p_b


def promotion_rate(aucs_a, aucs_b, seed, rule=PairedRule()):
    rng = np.random.default_rng(seed)
    return np.mean([judge_paired(*simulate(rng, aucs_a, aucs_b), TASKS, rule).promoted for _ in range(N_SIM)])


def test_equal_models_are_promoted_at_most_5_in_100():
    rate = promotion_rate((0.72, 0.75), (0.72, 0.75), seed=1)
    assert rate <= 0.05, rate


def test_a_planted_gain_of_001_auc_is_promoted_at_least_80_in_100():
    assert VAL_ROWS == 4000
    rate = promotion_rate((0.72, 0.75), (0.73, 0.75), seed=2)
    assert rate >= 0.80, rate


def test_better_on_click_but_worse_than_the_margin_on_conversion_is_never_promoted():
    rate = promotion_rate((0.72, 0.75), (0.74, 0.70), seed=3)  # +0.02 click, -0.05 conversion
    assert rate == 0.0


def test_the_words_name_the_models_the_gain_its_interval_and_why():
    rng = np.random.default_rng(4)
    labels, a, b = simulate(rng, (0.72, 0.75), (0.72, 0.75))
    b[:, 1] = a[:, 1]  # conversion: the same model, so only click's noise speaks
    v = judge_paired(labels, a, b, TASKS, PairedRule(), champion="mmoe (v3)", challenger="ple (v5)")
    c = v.primary
    assert not v.failed and not v.promoted and v.words == (f"kept mmoe (v3): ple (v5) {c['delta']:+.4f} click AUC [{c['lo']:+.4f}, "
                                          f"{c['hi']:+.4f}], not significant ({p_words(c['p_value'])})")
    labels, a, b = simulate(rng, (0.72, 0.75), (0.74, 0.70))
    v = judge_paired(labels, a, b, TASKS, PairedRule(), champion="mmoe (v3)", challenger="ple (v5)")
    assert not v.promoted and "conversion AUC -0.0" in v.words and v.words.endswith("worse than the 0.002 margin")
    labels, a, b = simulate(rng, (0.70, 0.75), (0.74, 0.75))
    v = judge_paired(labels, a, b, TASKS, PairedRule(), champion="mmoe (v3)", challenger="ple (v5)")
    assert v.promoted and v.words.startswith("ple (v5) is now champion: +0.0") and "over mmoe (v3)" in v.words


def test_the_top_two_words_say_which_way_they_differ():
    from workflow.registry.rule import separable

    rng = np.random.default_rng(8)
    labels, worse, better = simulate(rng, (0.70, 0.75), (0.76, 0.75))
    apart, words = separable(labels, better, worse, TASKS, PairedRule(), None, "ple (v4)", "mmoe (v3)")
    assert apart and words.startswith("ple (v4), the run's best by val_score, is told apart from the runner-up mmoe")
    apart, words = separable(labels, worse, better, TASKS, PairedRule(), None, "ple (v4)", "mmoe (v3)")
    assert apart and "ple (v4), the run's best by val_score, scores worse, on the primary metric, than the " \
                     "runner-up mmoe (v3) on the validation rows: -0.0" in words
    apart, words = separable(labels, worse, worse, TASKS, PairedRule(), None, "ple (v4)", "mmoe (v3)")
    assert not apart and "cannot be separated from" in words


def test_primary_and_guardrails_can_be_any_metric_and_task():
    rng = np.random.default_rng(5)
    labels, a, b = simulate(rng, (0.72, 0.70), (0.72, 0.76))
    users = np.arange(len(labels)) % 200
    rule = PairedRule(primary="conversion/gauc", guardrails=("auc", "ece", "calibration"),
                      margins={"click/auc": 0.01, "ece": 0.5, "calibration": 5.0})
    v = judge_paired(labels, a, b, TASKS, rule, users)
    assert set(v.comparisons) == {f"{t}/{m}" for t in TASKS for m in ("gauc", "auc", "ece", "calibration")}
    assert v.primary["task"] == "conversion" and v.primary["metric"] == "gauc"
    assert rule.margin("click", "auc") == 0.01 and rule.margin("conversion", "auc") == 0.002
    with pytest.raises(ValueError, match="promotion.primary"):
        PairedRule(primary="watch/auc").primary_of(TASKS)


def test_config_names_the_bad_promotion_key():
    assert DEFAULT.promotion.rule == "paired" and DEFAULT.promotion.guardrails == ["auc"]
    for bad, key in (({"rule": "vote"}, "promotion.rule"), ({"primary": "click/f1"}, "promotion.primary"),
                     ({"margins": {"auc": -1}}, "promotion.margins.auc"), ({"level": 0.7}, "promotion.level")):
        with pytest.raises(ConfigError, match=key):
            load_config({"promotion": bad})


# ---- the registry's promotion with the paired rule ------------------------------------------------------------

pytest.importorskip("mlflow")
from _mlflow_helpers import embedded_tracking, quiet_mlflow  # noqa: E402

from workflow import registry  # noqa: E402

quiet_mlflow()
NAME = "rule-test"


@pytest.fixture
def store(tmp_path, monkeypatch):
    trk = embedded_tracking(tmp_path, "rule-tests", monkeypatch)
    (tmp_path / "fake-model").mkdir()
    return trk, str(tmp_path / "fake-model")


def _version(trk, source, arch, val):
    run = trk.client.create_run(trk.experiment_id)
    return str(registry.register_candidate(trk.client, NAME, source, run_id=run.info.run_id, architecture=arch,
                                           test_metrics={"click": {"auc": val}}, test_score=val, val_score=val,
                                           eval_data_id="same").version)


def _rows(predictions):
    """Rows whose models are the ``predictions`` (version -> [N, 2]); an unknown version cannot be scored."""
    labels = predictions.pop("labels")

    def predict(uri):
        version = uri.rsplit("/", 1)[1]
        if version not in predictions:
            raise NotComparable("its feature spec does not fit the rows: raw rows lack column 'user_id'")
        return predictions[version]
    return Rows(TASKS, labels, None, predict)


def test_paired_promotion_keeps_the_champion_against_noise_and_promotes_a_real_gain(store):
    trk, src = store
    rng = np.random.default_rng(6)
    labels, p1, p_same = simulate(rng, (0.72, 0.75), (0.72, 0.75))
    _, _, p_better = simulate(np.random.default_rng(6), (0.72, 0.75), (0.76, 0.75))
    v1 = _version(trk, src, "mmoe", 0.70)
    rows = _rows({"labels": labels, v1: p1})
    first = registry.promote(trk.client, NAME, v1, rule="paired", rows=rows)
    assert first.promoted and first.decision == "no_champion"

    v2, v3 = _version(trk, src, "ple", 0.71), _version(trk, src, "aitm", 0.705)
    rows = _rows({"labels": labels, v1: p1, v2: p_same, v3: p_better})
    d = registry.promote_best(trk.client, NAME, [v2, v3], rule="paired", rows=rows)
    assert d.candidate_version == v2 and not d.promoted and d.decision == "rejected"  # best by val_score: v2
    assert d.words.startswith(f"kept mmoe (v{v1}): ple (v{v2}) ") and "not significant" in d.words
    assert d.metric == "val/click/auc" and d.candidate_score == pytest.approx(d.comparisons["click/auc"]["b"])
    assert d.top_two.startswith(f"ple (v{v2}), the run's best by val_score, ")
    assert trk.client.get_model_version(NAME, v2).tags["mtlp.promotion.reason"] == d.words

    d = registry.promote(trk.client, NAME, v3, rule="paired", rows=rows)
    assert d.promoted and d.words.startswith(f"aitm (v{v3}) is now champion: +0.0")
    assert registry.champion_version(trk.client, NAME) == v3


def test_a_champion_that_cannot_be_scored_on_the_rows_stays(store):
    trk, src = store
    rng = np.random.default_rng(7)
    labels, p1, p2 = simulate(rng, (0.72, 0.75), (0.80, 0.80))
    v1, v2 = _version(trk, src, "mmoe", 0.7), None
    registry.promote(trk.client, NAME, v1, rule="paired", rows=_rows({"labels": labels, v1: p1}))
    v2 = _version(trk, src, "ple", 0.8)
    d = registry.promote(trk.client, NAME, v2, rule="paired", rows=_rows({"labels": labels, v2: p2}))
    assert not d.promoted and d.decision == "not_comparable"
    assert d.words == f"kept mmoe (v{v1}): its feature spec does not fit the rows: raw rows lack column 'user_id'"
