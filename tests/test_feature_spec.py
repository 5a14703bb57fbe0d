"""FeatureSpec: JSON round trip, fresh mtl_models features, serving-time encoding rules, torch-free import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from workflow.data.encoders import LabelSpec, SparseEncoder, fit_dense, fit_sparse
from workflow.data.errors import DataError
from workflow.data.feature_spec import FeatureSpec

from _data_helpers import REPO


def _spec() -> FeatureSpec:
    city = fit_sparse("city", "city", pd.Series(["rome", "paris", "rome", " oslo", "?", "rome", "paris"]), ["?"])
    price = fit_dense("price", "price", np.array([1.0, 3.0, np.nan, 100.0]), log1p=True)
    user = SparseEncoder("user_id", "user_id", id_range=3)
    return FeatureSpec(dataset="toy", seed=9, features=[city, price, user],
                       labels=[LabelSpec("click", "classification", "click"), LabelSpec("t", "regression", "time")],
                       missing_values=["?"], rows={"train": 4, "val": 0, "test": 0},
                       raw_sha256={"toy.csv": "0" * 64})


def test_vocabulary_is_fitted_by_frequency_with_missing_excluded():
    spec = _spec()
    city = spec.sparse_features[0]
    assert city.vocabulary == ["rome", "paris", "oslo"] and city.vocab_size == 4
    price = spec.dense_features[0]
    assert price.median == 3.0 and price.missing_rate == 0.25
    filled = np.log1p(np.array([1.0, 3.0, 3.0, 100.0], dtype=np.float32))
    assert price.mean == pytest.approx(filled.mean(), rel=1e-6) and price.std == pytest.approx(filled.std(), rel=1e-5)


def test_save_load_round_trip_and_names(tmp_path):
    spec = _spec()
    spec.save(tmp_path / "feature_spec.json")
    assert [p.name for p in tmp_path.iterdir()] == ["feature_spec.json"]  # no temp file left
    loaded = FeatureSpec.load(tmp_path / "feature_spec.json")
    assert loaded.to_dict() == spec.to_dict()
    assert loaded.feature_names == ["city", "price", "user_id"]
    assert loaded.label_names == ["click", "t"] and loaded.task_types == ["classification", "regression"]
    assert loaded.source_columns == ["city", "price", "user_id"]
    assert loaded.raw_sha256 == {"toy.csv": "0" * 64} and loaded.seed == 9 and loaded.dataset == "toy"
    doc = json.loads((tmp_path / "feature_spec.json").read_text())
    assert doc["features"][0]["vocabulary"] == ["rome", "paris", "oslo"]
    assert doc["features"][2] == {"name": "user_id", "kind": "sparse", "source": "user_id", "vocab_size": 4,
                                  "encoding": "identity", "id_range": 3}


def test_to_features_returns_fresh_mtl_models_objects():
    from mtl_models.features import DenseFeature, SparseFeature

    spec = _spec()
    first, second = spec.to_features(embed_dim=4), spec.to_features(embed_dim=4)
    assert first == [SparseFeature("city", 4, 4), DenseFeature("price"), SparseFeature("user_id", 4, 4)]
    assert all(a is not b for a, b in zip(first, second))


def test_encode_applies_the_fitted_encoders_to_raw_rows():
    spec = _spec()
    raw = pd.DataFrame({"city": [" rome", "paris ", "?", "lima", None], "price": ["3", None, "?", "100", "1"],
                        "user_id": [0, 2, 3, -1, 1]})
    encoded = spec.encode(raw)
    assert encoded["city"].dtype == np.int64 and encoded["city"].tolist() == [1, 2, 0, 0, 0]
    assert encoded["user_id"].tolist() == [1, 3, 0, 0, 2]
    price = spec.dense_features[0]
    expected = (np.log1p(np.array([3, 3, 3, 100, 1], dtype=np.float32)) - price.mean) / price.std
    assert encoded["price"].dtype == np.float32
    np.testing.assert_allclose(encoded["price"], expected, rtol=1e-5)
    labels = spec.encode_labels(pd.DataFrame({"click": [1, 0], "time": [2.5, 1.0]}))
    assert labels["click"].tolist() == [1.0, 0.0] and labels["t"].tolist() == [2.5, 1.0]


def test_encode_errors_name_the_problem(tmp_path):
    spec = _spec()
    with pytest.raises(DataError, match=r"raw rows lack the columns \['user_id'\]"):
        spec.encode(pd.DataFrame({"city": ["rome"], "price": [1.0]}))
    with pytest.raises(DataError, match="dense column 'price' is not numeric"):
        spec.encode(pd.DataFrame({"city": ["rome"], "price": ["cheap"], "user_id": [0]}))
    (tmp_path / "old.json").write_text(json.dumps(dict(spec.to_dict(), format_version=99)))
    with pytest.raises(DataError, match="format_version 99 is not supported"):
        FeatureSpec.load(tmp_path / "old.json")
    with pytest.raises(DataError, match="feature spec not found"):
        FeatureSpec.load(tmp_path / "absent.json")


def test_feature_spec_imports_without_torch():
    code = ("import sys; import workflow.data.feature_spec, workflow.data.encoders; "
            "print('torch' in sys.modules, 'mtl_models' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
