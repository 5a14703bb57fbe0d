"""Every bad input gets a clear DataError and leaves nothing written at (or beside) the output directory."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from workflow.data.errors import DataError
from workflow.data.prepare import prepare

from _data_helpers import ADULT_DIR, REPO, assert_nothing_written

GOOD_SCHEMA = """
sparse: [city]
dense: [price]
labels:
  - {column: click, task_type: classification}
"""


def _csv_case(tmp_path, csv_text: str, schema_text: str = GOOD_SCHEMA):
    data, schema = tmp_path / "data.csv", tmp_path / "schema.yaml"
    data.write_text(csv_text)
    schema.write_text(schema_text)
    return {"path": str(data), "schema": str(schema)}


def _expect_error(tmp_path, dataset: str, match: str, **kwargs) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare(dataset, out, **kwargs)
    assert_nothing_written(out)


def test_missing_file_names_the_file_and_the_directory(tmp_path):
    data = tmp_path / "adult"
    data.mkdir()
    shutil.copy(ADULT_DIR / "adult.data", data / "adult.data")
    _expect_error(tmp_path, "adult", rf"missing file\(s\) \['adult.test'\] in {data}.*Put the files adult.test in",
                  data_dir=data)


def test_no_files_and_no_network_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTL_PIPELINE_OFFLINE", "1")
    _expect_error(tmp_path, "adult", r"Put the files adult.data, adult.test in .*cache/adult .*archive.ics.uci.edu")


def test_cached_file_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "adult"
    cache.mkdir(parents=True)
    shutil.copy(ADULT_DIR / "adult.test", cache / "adult.test")
    (cache / "adult.data").write_text("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, "
                                      "Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K\n")
    monkeypatch.setenv("MTL_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MTL_PIPELINE_OFFLINE", "1")
    _expect_error(tmp_path, "adult", r"adult.data has sha256 [0-9a-f]{64}, expected one of")


def test_empty_file(tmp_path):
    data = tmp_path / "adult"
    data.mkdir()
    (data / "adult.data").write_text("")
    shutil.copy(ADULT_DIR / "adult.test", data / "adult.test")
    _expect_error(tmp_path, "adult", "raw file is empty: .*adult.data", data_dir=data)
    _expect_error(tmp_path, "csv", "raw file is empty", options=_csv_case(tmp_path, ""))


def test_declared_column_absent(tmp_path):
    options = _csv_case(tmp_path, "city,cost,click\nparis,1.5,0\nrome,2.5,1\n")
    _expect_error(tmp_path, "csv", r"lacks declared column\(s\) \['price'\]", options=options)


def test_duplicate_column_names(tmp_path):
    options = _csv_case(tmp_path, "city,price,price,click\nparis,1,2,0\nrome,3,4,1\n")
    _expect_error(tmp_path, "csv", r"duplicate column names: \['price'\]", options=options)
    frame = pd.DataFrame([["paris", 1.0, 2.0, 0]], columns=["city", "price", "price", "click"])
    path = tmp_path / "dup.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array(frame.iloc[:, i]) for i in range(4)], names=list(frame.columns)),
                   path)
    _expect_error(tmp_path, "parquet", r"duplicate column names: \['price'\]",
                  options={"path": str(path), "schema": options["schema"]})


def test_classification_label_with_values_other_than_0_1(tmp_path):
    options = _csv_case(tmp_path, "city,price,click\n" + "paris,1.5,0\nrome,2.5,2\noslo,3,1\n" * 5)
    _expect_error(tmp_path, "csv", r"classification label 'click' .* values other than 0/1: .*2", options=options)


def test_adult_label_outside_its_label_strings(tmp_path):
    data = tmp_path / "adult"
    data.mkdir()
    lines = (ADULT_DIR / "adult.data").read_text().splitlines()
    lines[10] = lines[10].rsplit(",", 1)[0] + ", maybe"
    (data / "adult.data").write_text("\n".join(lines) + "\n")
    shutil.copy(ADULT_DIR / "adult.test", data / "adult.test")
    _expect_error(tmp_path, "adult", r"label 'income' .* values other than \['>50K', '<=50K'\]: 'maybe'",
                  data_dir=data)


def test_nan_labels(tmp_path):
    options = _csv_case(tmp_path, "city,price,click\n" + "paris,1.5,0\nrome,2.5,\noslo,3,1\n" * 5)
    _expect_error(tmp_path, "csv", r"label 'click' \(column 'click'\) has 5 missing \(NaN\) values", options=options)


def test_dense_column_not_numeric(tmp_path):
    options = _csv_case(tmp_path, "city,price,click\n" + "paris,1.5,0\nrome,cheap,1\noslo,3,1\n" * 5)
    _expect_error(tmp_path, "csv", r"dense column 'price' is not numeric: values such as 'cheap'", options=options)


def test_schema_naming_a_label_as_a_feature(tmp_path):
    schema = GOOD_SCHEMA.replace("dense: [price]", "dense: [price, click]")
    options = _csv_case(tmp_path, "city,price,click\nparis,1.5,0\nrome,2.5,1\n", schema)
    _expect_error(tmp_path, "csv", r"names label column 'click' as a feature", options=options)


def test_failure_keeps_a_previous_good_output(tmp_path):
    out = tmp_path / "out"
    options = _csv_case(tmp_path, "city,price,click\n" + "paris,1.5,0\nrome,2.5,1\n" * 10)
    prepare("csv", out, options=options)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = _csv_case(tmp_path, "city,price,click\nparis,1.5,0\nrome,cheap,1\n")
    with pytest.raises(DataError):
        prepare("csv", out, options=bad)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_unknown_option_and_unknown_dataset(tmp_path):
    _expect_error(tmp_path, "synthetic-funnel", r"unknown option\(s\) \['n_row'\]", options={"n_row": 10})
    _expect_error(tmp_path, "movielens", "unknown dataset 'movielens'")


def test_command_prints_the_error_without_a_traceback(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "workflow.data.prepare", "--dataset", "adult",
                             "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("workflow.data.prepare: error: adult: missing file(s) ['adult.data', 'adult.test']")
    assert "Traceback" not in result.stderr
    assert_nothing_written(out)


def test_command_prepares_with_options(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "workflow.data.prepare", "--dataset", "synthetic-funnel",
                             "--out", str(out), "--seed", "4", "--option", "n_rows=5000", "--option", "ctr=0.1"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train=4000, val=500, test=500" in result.stdout
    from workflow.data.feature_spec import FeatureSpec

    spec = FeatureSpec.load(out / "feature_spec.json")
    assert spec.seed == 4 and spec.options["n_rows"] == 5000 and spec.options["ctr"] == 0.1
