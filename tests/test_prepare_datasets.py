"""census-income (raw-format rows written here), AliExpress sample, synthetic-mmoe and csv/parquet + YAML schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow.data.datasets.census_income import COLUMNS as CENSUS_COLUMNS
from workflow.data.datasets.synthetic_mmoe import OPTIONS as MMOE_OPTIONS, generate as generate_mmoe
from workflow.data.prepare import prepare

from _data_helpers import ALIEXPRESS_DIR

CENSUS_ROW = ("{age}, Private, 33, 29, Bachelors degree(BA AB BS), {wage}, Not in universe, {marital}, "
              "Finance insurance and real estate, Executive admin and managerial, White, All other, {sex}, No, "
              "Not in universe, Full-time schedules, {gains}, 0, 0, Joint both under 65, Not in universe, "
              "Not in universe, Householder, Householder, 1700.09, ?, ?, ?, Not in universe under 1 year old, ?, "
              "6, Not in universe, United-States, United-States, United-States, Native- Born in the United States, "
              "0, Not in universe, 2, 52, 95, {income}.")


def _census_rows(specs) -> str:
    return "\n".join(CENSUS_ROW.format(age=a, wage=w, marital=m, sex=s, gains=g, income=i)
                     for a, w, m, s, g, i in specs) + "\n"


def test_census_income_from_raw_format_rows(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    train_rows = [(30 + i, 0 if i % 2 else 1200, "Never married" if i % 3 == 0 else "Married-civilian spouse present",
                   "Male" if i % 2 else "Female", 0 if i < 15 else 5000, "50000+" if i % 4 == 0 else "- 50000")
                  for i in range(20)]
    test_rows = [(41, 0, "Never married", "Female", 0, "50000+"), (55, 0, "Divorced", "Male", 0, "- 50000"),
                 (23, 700, "Never married", "Male", 0, "- 50000")]
    (raw / "census-income.data").write_text(_census_rows(train_rows))
    (raw / "census-income.test").write_text(_census_rows(test_rows))
    assert len(CENSUS_ROW.split(",")) == 42 == len(CENSUS_COLUMNS)
    spec = prepare("census-income", tmp_path / "out", data_dir=raw, seed=1, val_fraction=0.25)
    assert spec.rows == {"train": 15, "val": 5, "test": 3}
    assert spec.label_names == ["income", "never_married"]
    assert "instance_weight" not in spec.feature_names and "marital_stat" not in spec.feature_names
    assert len(spec.dense_features) == 7 and len(spec.sparse_features) == 42 - 7 - 3
    assert spec.positive_rates["income"]["test"] == pytest.approx(1 / 3)
    assert spec.positive_rates["never_married"]["test"] == pytest.approx(2 / 3)
    pooled_income = sum(spec.positive_rates["income"][s] * spec.rows[s] for s in ("train", "val"))
    assert pooled_income == pytest.approx(sum(r[5] == "50000+" for r in train_rows))
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert test["income"].tolist() == [1.0, 0.0, 0.0] and test["never_married"].tolist() == [1.0, 0.0, 1.0]
    sex = next(f for f in spec.sparse_features if f.name == "sex")
    assert sorted(sex.vocabulary) == ["Female", "Male"]


@pytest.mark.skipif(not ALIEXPRESS_DIR.is_dir(), reason="shared AliExpress sample not present")
def test_aliexpress_sample_prepares_with_conversion_within_click(tmp_path):
    spec = prepare("aliexpress", tmp_path / "out", data_dir=ALIEXPRESS_DIR, seed=5)
    assert spec.rows["train"] + spec.rows["val"] == 100 and spec.rows["test"] == 20
    assert [f.name for f in spec.sparse_features] == [f"categorical_{i}" for i in range(1, 17)]
    assert [f.name for f in spec.dense_features] == [f"numerical_{i}" for i in range(1, 64)]
    assert spec.label_names == ["click", "conversion"] and "search_id" not in spec.feature_names
    raw_train = pd.read_csv(ALIEXPRESS_DIR / "aliexpress_train_sample.csv")
    raw_test = pd.read_csv(ALIEXPRESS_DIR / "aliexpress_test_sample.csv")
    for raw in (raw_train, raw_test):
        assert ((raw["conversion"] == 1) <= (raw["click"] == 1)).all()
    for split in ("train", "val", "test"):
        data = pd.read_parquet(tmp_path / "out" / f"{split}.parquet")
        assert (data["conversion"] <= data["click"]).all()
        assert data["categorical_1"].dtype == np.int64 and data["numerical_1"].dtype == np.float32
    assert spec.positive_rates["click"]["test"] == pytest.approx(raw_test["click"].mean())
    assert spec.positive_rates["conversion"]["test"] == pytest.approx(raw_test["conversion"].mean())
    # categories of the test file unseen in train encode to 0; seen ones to their train id
    cat7 = next(f for f in spec.sparse_features if f.name == "categorical_7")
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    expected = [cat7.vocabulary.index(str(v)) + 1 if str(v) in cat7.vocabulary else 0 for v in raw_test["categorical_7"]]
    assert test["categorical_7"].tolist() == expected


def test_aliexpress_rejects_conversion_without_click(tmp_path):
    from workflow.data.errors import DataError
    from _data_helpers import assert_nothing_written

    raw = pd.read_csv(ALIEXPRESS_DIR / "aliexpress_train_sample.csv")
    row = raw.index[raw["click"] == 0][0]
    raw.loc[row, "conversion"] = 1
    data = tmp_path / "ali"
    data.mkdir()
    raw.to_csv(data / "train.csv", index=False)
    pd.read_csv(ALIEXPRESS_DIR / "aliexpress_test_sample.csv").to_csv(data / "test.csv", index=False)
    with pytest.raises(DataError, match="1 rows have conversion=1 without click=1"):
        prepare("aliexpress", tmp_path / "out", data_dir=data)
    assert_nothing_written(tmp_path / "out")


def test_synthetic_mmoe_task_correlation_grows_with_p():
    correlations = []
    for p in (0.0, 0.5, 0.8, 0.95, 1.0):
        frame = generate_mmoe(3, dict(MMOE_OPTIONS, p=p, n_rows=8000))
        correlations.append(np.corrcoef(frame["y1_noiseless"], frame["y2_noiseless"])[0, 1])
    assert abs(correlations[0]) < 0.05
    assert all(b > a + 0.05 for a, b in zip(correlations, correlations[1:])), correlations
    assert correlations[-1] == pytest.approx(1.0, abs=1e-6)


def test_synthetic_mmoe_prepares_two_regression_tasks(tmp_path):
    spec = prepare("synthetic-mmoe", tmp_path / "out", seed=2, options={"p": 0.9, "n_rows": 1200, "d": 10})
    assert spec.task_types == ["regression", "regression"] and spec.label_names == ["y1", "y2"]
    assert spec.feature_names == [f"x_{i}" for i in range(1, 11)]
    assert spec.rows == {"train": 980, "val": 120, "test": 100}
    data = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert {"y1_noiseless", "y2_noiseless"} <= set(data.columns)
    residual = data["y1"] - data["y1_noiseless"]
    assert residual.std() == pytest.approx(0.1, rel=0.15)  # the declared noise


SCHEMA = """
sparse: [city, {column: device, min_frequency: 2}]
dense: [price, {column: views, log1p: true}]
labels:
  - {column: click, task_type: classification}
  - {column: outcome, name: bought, task_type: classification, positive: ["yes"], negative: ["no"]}
  - {column: watch_time, task_type: regression}
missing_values: ["?"]
split: {method: column, column: day, val_fraction: 0.2, test_fraction: 0.2}
"""


def _tabular_frame(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "day": np.repeat(np.arange(10), n // 10),
        "city": rng.choice(["paris", "rome", "oslo"], n),
        "device": ["ios"] * (n - 1) + ["rare"],
        "price": rng.uniform(1, 100, n).round(2),
        "views": rng.integers(0, 10_000, n),
        "click": rng.integers(0, 2, n),
        "outcome": rng.choice(["yes", "no"], n),
        "watch_time": rng.uniform(0, 5, n),
    })


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_tabular_file_with_yaml_schema_split_by_column(tmp_path, kind):
    frame = _tabular_frame()
    path = tmp_path / f"data.{kind}"
    frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path, index=False)
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    spec = prepare(kind, tmp_path / "out", options={"path": str(path), "schema": str(schema)})
    assert spec.rows == {"train": 30, "val": 10, "test": 10}
    assert spec.label_names == ["click", "bought", "watch_time"]
    assert spec.task_types == ["classification", "classification", "regression"]
    assert spec.feature_names == ["city", "device", "price", "views"]
    device = next(f for f in spec.sparse_features if f.name == "device")
    assert device.vocabulary == ["ios"]  # 'rare' appears once and min_frequency is 2
    views = next(f for f in spec.dense_features if f.name == "views")
    train_views = frame.loc[frame["day"] < 6, "views"]
    assert views.log1p and views.mean == pytest.approx(np.log1p(train_views).mean(), rel=1e-5)
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    latest = frame[frame["day"] >= 8]
    assert test["bought"].tolist() == (latest["outcome"] == "yes").astype(float).tolist()
    assert test["device"].tolist()[-1] == 0  # 'rare' -> reserved id


def test_yaml_schema_takes_numeric_column_names_as_written(tmp_path):
    """``- 101`` names column '101'; 109_14 and 012, which YAML reads as the numbers 10914 and 10, keep their
    spelling; numbers that are not names (fractions, counts) stay numbers; a list is still refused in one line."""
    from workflow.data.datasets.tabular import read_schema
    from workflow.data.errors import DataError

    path = tmp_path / "schema.yaml"
    path.write_text("sparse: [101, 109_14, 012, {column: 205, min_frequency: 2}]\ndense: [1.50]\n"
                    "labels: [{column: 7, task_type: classification}]\n"
                    "split: {method: column, column: 20, val_fraction: 0.1, test_fraction: 0.2}\n")
    schema, split = read_schema(path)
    assert schema.sparse == ["101", "109_14", "012", "205"] and schema.dense == ["1.50"]
    assert schema.min_frequency == {"101": 1, "109_14": 1, "012": 1, "205": 2}
    assert [(lb.name, lb.source) for lb in schema.labels] == [("7", "7")]
    assert split == {"method": "column", "column": "20", "val_fraction": 0.1, "test_fraction": 0.2}
    path.write_text("sparse: [[a, b]]\nlabels: [{column: c, task_type: classification}]\n")
    with pytest.raises(DataError, match=r"^schema sparse: each entry must be a column name"):
        read_schema(path)
