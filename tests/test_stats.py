"""mtl_models.stats: DeLong's variance against the O(n^2) definition and a bootstrap, the paired test, GAUC
against a per-user loop, calibration, the seeded bootstrap."""

import math

import numpy as np
import pytest

from mtl_models import stats
from mtl_models.metrics import roc_auc


def _data(n=600, seed=0, rate=0.3, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(float)
    a = 0.8 * y + rng.normal(size=n)
    b = 0.5 * y + 0.7 * a + 0.5 * rng.normal(size=n)
    if ties:  # rounded scores: many ties, which the midranks must share like the definition does
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


def _structural(y, p):
    """O(n_pos x n_neg) DeLong components from the definition: psi = 1 (pos above neg), 1/2 (tie), 0."""
    pos, neg = p[y > 0.5], p[y <= 0.5]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def test_delong_variance_equals_the_quadratic_definition():
    y, a, b = _data()
    auc, v10, v01 = _structural(y, a)
    m, n = len(v10), len(v01)
    brute = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    got_auc, got_var = stats.delong_variance(y, a)
    assert got_auc == pytest.approx(auc, abs=1e-12) == pytest.approx(roc_auc(y, a), abs=1e-12)
    assert got_var == pytest.approx(brute, rel=1e-10)


def test_paired_delong_equals_the_quadratic_definition():
    y, a, b = _data(seed=1)
    auc_a, v10a, v01a = _structural(y, a)
    auc_b, v10b, v01b = _structural(y, b)
    m, n = len(v10a), len(v01a)
    var = (np.var(v10b - v10a, ddof=1) / m + np.var(v01b - v01a, ddof=1) / n)
    c = stats.delong_paired(y, a, b)
    assert c.delta == pytest.approx(auc_b - auc_a, abs=1e-12)
    z = 1.959963984540054
    assert c.hi - c.delta == pytest.approx(z * math.sqrt(var), rel=1e-9)
    assert c.p_value == pytest.approx(math.erfc(abs(c.delta) / math.sqrt(var) / math.sqrt(2)), rel=1e-9)


def test_delong_interval_agrees_with_a_bootstrap_on_the_same_data():
    y, a, _ = _data(n=2000, seed=2, ties=False)
    iv = stats.auc_interval(y, a)
    rng = np.random.default_rng(5)
    boot = []
    for _ in range(1000):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc(y[i], a[i]))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    width = iv.hi - iv.lo
    assert lo == pytest.approx(iv.lo, abs=0.1 * width) and hi == pytest.approx(iv.hi, abs=0.1 * width)
    assert np.std(boot) == pytest.approx(math.sqrt(stats.delong_variance(y, a)[1]), rel=0.1)


def test_delong_interval_covers_the_true_auc_about_95_in_100():
    rng = np.random.default_rng(3)
    true = 0.5 * (1 + math.erf(1.0 / 2))  # binormal, shift 1 and unit variances: AUC = Phi(1 / sqrt(2))
    covered = 0
    for _ in range(400):
        y = (rng.random(800) < 0.2).astype(float)
        iv = stats.auc_interval(y, y + rng.normal(size=800))
        covered += iv.lo <= true <= iv.hi
    assert 0.92 <= covered / 400 <= 0.98


def test_one_class_gives_nan_not_an_error():
    iv = stats.auc_interval(np.zeros(10), np.arange(10.0))
    assert math.isnan(iv.value) and math.isnan(iv.lo)


def test_gauc_is_the_impression_weighted_mean_of_per_user_aucs():
    y, a, _ = _data(n=500, seed=4)
    users = np.random.default_rng(4).integers(0, 25, len(y))
    total = weight = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            total += roc_auc(y[m], a[m]) * m.sum()
            weight += m.sum()
    assert stats.gauc(y, a, users) == pytest.approx(total / weight, abs=1e-12)
    iv = stats.gauc_interval(y, a, users)
    assert iv.lo < iv.value < iv.hi


def test_calibration_and_binned_error():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1], dtype=float)
    assert stats.calibration(y, np.full(10, 0.2)) == pytest.approx(0.5)
    assert stats.ece(y, y.copy()) == 0.0  # perfect predictions: no calibration error
    p = np.linspace(0.05, 0.95, 10)
    assert stats.ece(y, p, n_bins=1) == pytest.approx(abs(p.mean() - y.mean()))


def test_bootstrap_is_seeded_and_brackets_the_value():
    y, a, _ = _data(n=1000, seed=6)
    p = 1 / (1 + np.exp(-a))
    first = stats.metric_intervals("classification", y, p)
    again = stats.metric_intervals("classification", y, p)
    assert first == again
    for name, iv in first.items():
        assert iv.lo <= iv.value <= iv.hi, name
    other = stats.bootstrap_interval("logloss", y, p, seed=1)
    assert other.value == first["logloss"].value and other.lo != first["logloss"].lo


def test_large_splits_bootstrap_in_chunks(monkeypatch):
    y, a, _ = _data(n=3000, seed=7)
    p = 1 / (1 + np.exp(-a))
    whole = stats.bootstrap_interval("ece", y, p)
    monkeypatch.setattr(stats, "MAX_CELLS", 3000 * 7)  # 7 resamples per chunk
    assert stats.bootstrap_interval("ece", y, p) == whole


def test_paired_comparisons_of_a_model_with_itself_are_zero():
    y, a, _ = _data(n=800, seed=8)
    p = 1 / (1 + np.exp(-a))
    users = np.arange(len(y)) % 40
    for name, c in stats.compare_metrics(y, p, p, ["auc", "gauc", "ece", "calibration", "logloss"], users).items():
        assert c.delta == 0 and c.lo == 0 and c.hi == 0, name


def test_one_row_of_a_class_gives_the_auc_without_an_interval() -> None:
    """One positive among many: the AUC is defined (the share of negatives it outranks), its variance is not."""
    y = np.array([1.0] + [0.0] * 9)
    p = np.array([0.55, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])  # the positive outranks 5 of 9 negatives
    iv = stats.auc_interval(y, p)
    assert iv.value == pytest.approx(5 / 9) and math.isnan(iv.lo) and math.isnan(iv.hi)
    assert math.isnan(stats.auc_interval(np.zeros(10), p).value)  # one class only: no AUC at all
