"""Synthetic datasets: the funnel's rates and click/conversion implication; MMOE's task correlation grows with p."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow.data.datasets.synthetic_funnel import zipf_ids
from workflow.data.prepare import prepare


def _all_splits(out) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test")], ignore_index=True)


@pytest.mark.parametrize("ctr,cvr", [(0.05, 0.1), (0.2, 0.3)])
def test_funnel_rates_match_the_requested_ones_and_conversion_implies_click(tmp_path, ctr, cvr):
    n = 200_000
    spec = prepare("synthetic-funnel", tmp_path / "f", seed=3, options={"n_rows": n, "ctr": ctr, "cvr": cvr})
    data = _all_splits(tmp_path / "f")
    assert len(data) == n and sum(spec.rows.values()) == n
    clicks = data["click"].to_numpy(dtype=np.float64)
    conversions = data["conversion"].to_numpy(dtype=np.float64)
    assert np.all(conversions <= clicks), "a conversion without a click"
    click_rate = clicks.mean()
    conversion_given_click = conversions.sum() / clicks.sum()
    # binomial standard errors: ctr ~ sqrt(ctr/n) <= 0.001; cvr over >= 10k clicks <= 0.005
    assert click_rate == pytest.approx(ctr, abs=max(4 * np.sqrt(ctr * (1 - ctr) / n), 0.002))
    assert conversion_given_click == pytest.approx(cvr, abs=4 * np.sqrt(cvr * (1 - cvr) / clicks.sum()) + 0.002)
    # ground truth is consistent with the sampled labels and never a feature
    assert data["true_pctr"].mean() == pytest.approx(click_rate, abs=0.005)
    np.testing.assert_allclose(data["true_pctcvr"], data["true_pctr"] * data["true_pcvr"], rtol=1e-5)
    assert not set(spec.feature_names) & {"true_pctr", "true_pcvr", "true_pctcvr", "click", "conversion"}
    assert spec.extra_columns == ["true_pctr", "true_pcvr", "true_pctcvr"]
    assert spec.positive_rates["click"]["train"] == pytest.approx(
        pd.read_parquet(tmp_path / "f" / "train.parquet")["click"].mean(), abs=1e-9)


def test_funnel_ids_are_encoded_within_the_vocabulary_and_deterministic(tmp_path):
    options = {"n_rows": 20_000, "n_users": 500, "n_items": 300, "n_categories": 7}
    spec = prepare("synthetic-funnel", tmp_path / "a", seed=11, options=options)
    again = prepare("synthetic-funnel", tmp_path / "b", seed=11, options=options)
    other = prepare("synthetic-funnel", tmp_path / "c", seed=12, options=options)
    a, b, c = (_all_splits(tmp_path / d) for d in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert spec.to_dict() == again.to_dict()
    assert not a["user_id"].equals(c["user_id"])
    sizes = {f.name: f.vocab_size for f in spec.sparse_features}
    assert sizes == {"user_id": 501, "item_id": 301, "item_category": 8}
    for name, size in sizes.items():
        assert a[name].dtype == np.int64 and a[name].min() >= 1 and a[name].max() < size
    assert all(a[f.name].dtype == np.float32 for f in spec.dense_features)
    # serving: raw ids encode like the prepared ones; an id outside the vocabulary -> 0
    user = spec.sparse_features[0]
    assert user.encode(np.array([0, 499, 500, -1])).tolist() == [1, 500, 0, 0]


def test_identity_encoding_in_place_gives_the_same_ids_and_copies_otherwise():
    from workflow.data.encoders import SparseEncoder

    enc = SparseEncoder("user_id", "user_id", id_range=500)
    raw = np.array([0, 499, 500, -1, 7], dtype=np.int64)
    copied = enc.encode(raw)
    assert copied.tolist() == [1, 500, 0, 0, 8] and raw.tolist() == [0, 499, 500, -1, 7]  # input untouched
    in_place = enc.encode(raw, inplace=True)
    assert in_place is raw and in_place.tolist() == copied.tolist()
    small = np.array([3, 600], dtype=np.int32)  # not int64: inplace cannot reuse it, so it copies
    assert enc.encode(small, inplace=True).tolist() == [4, 0] and small.tolist() == [3, 600]


def test_funnel_prepare_never_imports_pandas(tmp_path):
    """Generated data is numpy from start to end: loading pandas (~45 MiB RSS) would be a third of the peak at 1M."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nfrom workflow.data.prepare import prepare\n"
            f"prepare('synthetic-funnel', {str(tmp_path / 'f')!r}, seed=0, options={{'n_rows': 5000}})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas')[:3])\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "f" / "train.parquet").is_file()


def test_zipf_ids_follow_the_zipf_law():
    rng = np.random.default_rng(0)
    n_ids, s, n = 50, 1.2, 400_000
    ids = zipf_ids(rng, n, n_ids, s)
    assert ids.min() >= 0 and ids.max() < n_ids
    expected = np.arange(1, n_ids + 1, dtype=float) ** -s
    expected /= expected.sum()
    observed = np.bincount(ids, minlength=n_ids) / n
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(expected / n).max())
    chi2 = ((observed - expected) ** 2 / expected).sum() * n
    assert chi2 < 100  # 49 degrees of freedom: p ~ 1e-5 at 100
    exactly_one = zipf_ids(rng, 100_000, 10, 1.0)
    expected1 = 1 / np.arange(1, 11)
    np.testing.assert_allclose(np.bincount(exactly_one, minlength=10) / 1e5, expected1 / expected1.sum(), atol=0.006)


def test_funnel_spec_carries_the_generators_ceiling_on_the_test_rows(tmp_path):
    """feature_spec.json's ``ceiling``: the AUC of the true probabilities on the test split, in the shape the
    summary reads ({"split", "source", "metrics": {task: {"auc"}}}), equal to sklearn's on the written rows."""
    import json

    from sklearn.metrics import roc_auc_score

    prepare("synthetic-funnel", tmp_path / "f", seed=5, options={"n_rows": 30_000, "ctr": 0.2, "cvr": 0.3})
    saved = json.loads((tmp_path / "f" / "feature_spec.json").read_text())
    ceiling = saved["ceiling"]
    assert ceiling["split"] == "test" and ceiling["source"] == "true probabilities of the generator"
    assert set(ceiling["metrics"]) == {"click", "conversion"}
    test = pd.read_parquet(tmp_path / "f" / "test.parquet")
    assert ceiling["metrics"]["click"]["auc"] == pytest.approx(roc_auc_score(test["click"], test["true_pctr"]), abs=1e-12)
    assert ceiling["metrics"]["conversion"]["auc"] == pytest.approx(
        roc_auc_score(test["conversion"], test["true_pctcvr"]), abs=1e-12)
    assert 0.6 < ceiling["metrics"]["click"]["auc"] < 1.0
    assert saved["raw_types"] == {"user_id": "long", "item_id": "long", "item_category": "long",
                                  **{f"dense_{j}": "double" for j in range(1, 5)}}
