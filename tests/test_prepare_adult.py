"""Adult from the real UCI files in ../shared/data/adult: sizes, label rates counted independently, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workflow.data.feature_spec import FeatureSpec
from workflow.data.prepare import prepare

from _data_helpers import ADULT_DIR

pytestmark = pytest.mark.skipif(not (ADULT_DIR / "adult.data").is_file(), reason="shared Adult data not present")


def _independent_counts(path, skip_first: bool) -> tuple[int, int, int]:
    """(rows, income > 50K, never married) counted with plain string handling, not the code under test."""
    rows = rich = single = 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines[1:] if skip_first else lines:
        if not line.strip():
            continue
        fields = [x.strip() for x in line.split(",")]
        rows += 1
        rich += fields[14].rstrip(".") == ">50K"
        single += fields[5] == "Never-married"
    return rows, rich, single


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    out = tmp_path_factory.mktemp("adult") / "prepared"
    spec = prepare("adult", out, data_dir=ADULT_DIR, seed=7)
    return spec, out


def test_row_counts_match_the_raw_files(adult):
    spec, out = adult
    assert spec.rows["train"] + spec.rows["val"] == 32561
    assert spec.rows["test"] == 16281
    assert spec.rows["val"] == round(32561 * 0.1)
    for split, n in spec.rows.items():
        assert len(pd.read_parquet(out / f"{split}.parquet")) == n


def test_positive_rates_match_independent_counts(adult):
    spec, out = adult
    n_data, rich_data, single_data = _independent_counts(ADULT_DIR / "adult.data", skip_first=False)
    n_test, rich_test, single_test = _independent_counts(ADULT_DIR / "adult.test", skip_first=True)
    assert (n_data, rich_data) == (32561, 7841)  # the README's counts
    assert n_test == 16281
    assert spec.positive_rates["income"]["test"] == pytest.approx(rich_test / n_test, abs=1e-12)
    assert spec.positive_rates["never_married"]["test"] == pytest.approx(single_test / n_test, abs=1e-12)
    pooled = {label: (spec.positive_rates[label]["train"] * spec.rows["train"]
                      + spec.positive_rates[label]["val"] * spec.rows["val"]) for label in spec.label_names}
    assert pooled["income"] == pytest.approx(rich_data, abs=1e-6)
    assert pooled["never_married"] == pytest.approx(single_data, abs=1e-6)
    train = pd.read_parquet(out / "train.parquet")
    assert set(np.unique(train["income"])) == {0.0, 1.0}
    assert train["income"].dtype == np.float32


def test_marital_status_and_labels_are_not_features(adult):
    spec, out = adult
    assert spec.label_names == ["income", "never_married"]
    assert spec.task_types == ["classification", "classification"]
    assert not any("marital" in name for name in spec.feature_names)
    assert "marital-status" not in spec.source_columns and "income" not in spec.source_columns
    test = pd.read_parquet(out / "test.parquet")
    assert list(test.columns) == spec.feature_names + spec.label_names


def test_spec_records_provenance_and_encoders_fitted_on_train(adult):
    spec, out = adult
    readme = (ADULT_DIR / "README.md").read_text()
    assert spec.raw_sha256["adult.data"] in readme and spec.raw_sha256["adult.test"] in readme
    assert spec.seed == 7
    raw = json.loads((out / "feature_spec.json").read_text())
    workclass = next(f for f in raw["features"] if f["name"] == "workclass")
    assert "?" not in workclass["vocabulary"] and workclass["vocabulary"][0] == "Private"
    age = next(f for f in spec.dense_features if f.name == "age")
    train = pd.read_csv(ADULT_DIR / "adult.data", header=None, skipinitialspace=True)
    # statistics come from the train split only: close to, but not equal to, those of all of adult.data
    assert age.median == pytest.approx(train[0].median(), abs=1.0)
    assert age.mean != pytest.approx(train[0].mean(), abs=1e-9)
    encoded_age = pd.read_parquet(out / "train.parquet")["age"]
    assert encoded_age.mean() == pytest.approx(0.0, abs=1e-4) and encoded_age.std() == pytest.approx(1.0, abs=1e-3)


def test_same_seed_same_split_other_seed_other_split(adult, tmp_path):
    spec, out = adult
    again = prepare("adult", tmp_path / "again", data_dir=ADULT_DIR, seed=7)
    assert again.to_dict() == spec.to_dict()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "val.parquet"), pd.read_parquet(tmp_path / "again" / "val.parquet"))
    other = prepare("adult", tmp_path / "other", data_dir=ADULT_DIR, seed=8)
    assert other.rows == spec.rows
    assert not pd.read_parquet(out / "val.parquet").equals(pd.read_parquet(tmp_path / "other" / "val.parquet"))


def test_spec_round_trips_into_features_and_a_model_forward_pass(adult):
    torch = pytest.importorskip("torch")
    from mtl_models import MMOE
    from mtl_models.features import DenseFeature, SparseFeature

    spec, out = adult
    loaded = FeatureSpec.load(out / "feature_spec.json")
    features = loaded.to_features(embed_dim=8)
    assert [f.name for f in features] == spec.feature_names
    occupation = next(f for f in features if f.name == "occupation")
    assert isinstance(occupation, SparseFeature) and occupation.vocab_size == 15  # 14 occupations + id 0
    assert all(isinstance(f, DenseFeature) for f in features if f.name in ("age", "fnlwgt"))
    batch = pd.read_parquet(out / "test.parquet").head(64)
    x = {name: torch.from_numpy(batch[name].to_numpy().copy()) for name in loaded.feature_names}
    model = MMOE(features, loaded.task_types, n_expert=2, expert_params={"dims": [16]},
                 tower_params_list=[{"dims": [8]}] * 2)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (64, 2) and bool(((y > 0) & (y < 1)).all())


def test_serving_encode_of_raw_rows_matches_the_prepared_test_split(adult):
    spec, out = adult
    raw = pd.read_csv(ADULT_DIR / "adult.test", header=None, skiprows=1, sep=",", dtype=str,
                      names=["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                             "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                             "hours-per-week", "native-country", "income"])  # leading spaces kept, as in the file
    encoded = spec.encode(raw[spec.source_columns])
    prepared = pd.read_parquet(out / "test.parquet")
    for name in spec.feature_names:
        np.testing.assert_allclose(encoded[name], prepared[name].to_numpy(), rtol=1e-6, err_msg=name)
        assert encoded[name].dtype == prepared[name].dtype


def test_unseen_categories_and_missing_values_at_serving_time(adult):
    spec, _ = adult
    rows = pd.DataFrame({c: ["?", "no-such-value"] for c in spec.source_columns})
    rows["age"] = [None, "40"]
    for c in ("fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"):
        rows[c] = [None, None]
    encoded = spec.encode(rows)
    for f in spec.sparse_features:
        assert encoded[f.name].tolist() == [0, 0]
    age = next(f for f in spec.dense_features if f.name == "age")
    assert encoded["age"][0] == pytest.approx((age.median - age.mean) / age.std, rel=1e-5)
    assert encoded["age"][1] == pytest.approx((40 - age.mean) / age.std, rel=1e-5)


def test_regression_variant_moves_hours_per_week_to_the_labels(tmp_path):
    spec = prepare("adult", tmp_path / "reg", data_dir=ADULT_DIR, options={"variant": "regression"})
    assert spec.label_names == ["income", "never_married", "hours_per_week"]
    assert spec.task_types == ["classification", "classification", "regression"]
    assert "hours_per_week" not in spec.feature_names and "hours-per-week" not in spec.source_columns
    test = pd.read_parquet(tmp_path / "reg" / "test.parquet")
    raw = pd.read_csv(ADULT_DIR / "adult.test", header=None, skiprows=1, skipinitialspace=True)
    np.testing.assert_array_equal(test["hours_per_week"].to_numpy(), raw[12].to_numpy(dtype=np.float32))
    assert spec.label_stats["hours_per_week"]["test"]["mean"] == pytest.approx(raw[12].mean(), rel=1e-6)
