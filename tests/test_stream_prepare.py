"""The streaming prepare (folders, globs and URLs of CSV or Parquet, two passes, sharded output): the same spec and
encoded values as the in-memory path on data both handle, hashed ids, the sample path, and bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _data_helpers import assert_nothing_written
from workflow.data.errors import DataError
from workflow.data.prepare import prepare

SCHEMA = """
sparse: [user, {column: item, min_frequency: 2}, {column: device, hash_buckets: 64}]
dense: [price, {column: views, log1p: true}]
labels:
  - {column: click, task_type: classification}
  - {column: outcome, name: bought, task_type: classification, positive: ["yes"], negative: ["no"]}
  - {column: watch, task_type: regression}
missing_values: ["", "?"]
ground_truth: [truth]
split: {method: column, column: day, val_fraction: 0.2, test_fraction: 0.2}
"""


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.lognormal(3, 1, n).round(2).astype(object)
    price[rng.random(n) < 0.05] = "?"
    return pd.DataFrame({
        "user": rng.integers(0, 40, n), "item": [f"i{k}" for k in rng.zipf(1.5, n) % 300],
        "device": [f"d{k}" for k in rng.integers(0, 1000, n)], "price": price,
        "views": rng.integers(0, 10_000, n), "click": rng.integers(0, 2, n),
        "outcome": rng.choice(["yes", "no"], n), "watch": rng.normal(30, 5, n).round(3),
        "truth": rng.random(n).round(4), "day": rng.integers(0, 10, n)})


def _write(tmp: Path, frame: pd.DataFrame) -> tuple[Path, Path]:
    csv = tmp / "raw" / "all.csv"
    csv.parent.mkdir(parents=True)
    frame.to_csv(csv, index=False)
    schema = tmp / "schema.yaml"
    schema.write_text(SCHEMA)
    return csv, schema


def _split(out: Path, split: str) -> pd.DataFrame:
    single = out / f"{split}.parquet"
    return pq.read_table(single if single.exists() else out / split).to_pandas()


def _spec(out: Path) -> dict:
    return json.loads((out / "feature_spec.json").read_text())


def test_streaming_and_in_memory_give_the_same_spec_and_values(tmp_path):
    csv, schema = _write(tmp_path, _frame(3000))
    memory = tmp_path / "memory"
    prepare("csv", memory, options={"path": str(csv), "schema": str(schema), "streaming": False})
    streamed = tmp_path / "streamed"
    prepare("csv", streamed, options={"path": str(csv), "schema": str(schema), "streaming": True, "chunk_rows": 97,
                                      "row_group_size": 128, "rows_per_file": 512})
    assert (memory / "train.parquet").is_file() and not (memory / "train").exists()
    assert len(list((streamed / "train").glob("part-*.parquet"))) > 1
    a, b = _spec(memory), _spec(streamed)
    for key in ("features", "labels", "rows", "raw_types", "split", "missing_values", "extra_columns", "positive_rates"):
        assert a[key] == b[key], key
    for label, per_split in a["label_stats"].items():
        for split, moments in per_split.items():
            assert b["label_stats"][label][split] == pytest.approx(moments, rel=1e-9)
    hashed = next(f for f in b["features"] if f["name"] == "device")
    assert hashed["encoding"] == "hash" and hashed["vocab_size"] == 65 and "vocabulary" not in hashed
    for split in ("train", "val", "test"):
        x, y = _split(memory, split), _split(streamed, split)
        assert list(x.columns) == list(y.columns) and len(x) == len(y) > 0
        for column in x.columns:
            assert np.array_equal(x[column].to_numpy(), y[column].to_numpy()), (split, column)
    ids = _split(streamed, "train")["device"]
    assert ids.between(1, 64).all() and ids.nunique() > 50


def test_parquet_folder_glob_and_url_stream_to_the_same_output(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    frame = _frame(2000, seed=1)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")  # Parquet keeps types: missing is null
    _, schema = _write(tmp_path, frame)
    folder = tmp_path / "bucket"
    folder.mkdir()
    fs = fsspec.filesystem("memory")
    for k, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=300)
        fs.pipe(f"/logs/part-{k}.parquet", (folder / f"part-{k}.parquet").read_bytes())
    outs = {}
    for name, location in (("folder", folder), ("glob", f"{folder}/part-*.parquet"), ("url", "memory://logs/")):
        outs[name] = tmp_path / f"out-{name}"
        prepare("parquet", outs[name], options={"path": str(location), "schema": str(schema), "chunk_rows": 333})
    single = tmp_path / "single.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), single)
    prepare("parquet", tmp_path / "out-memory", options={"path": str(single), "schema": str(schema)})
    reference = _spec(tmp_path / "out-memory")
    for name, out in outs.items():
        assert _spec(out)["features"] == reference["features"], name
        assert _spec(out)["rows"] == reference["rows"], name
        assert _split(out, "test").equals(_split(tmp_path / "out-memory", "test")), name


def test_random_split_by_row_hash_is_the_same_in_any_chunking(tmp_path):
    frame = _frame(4000, seed=2)
    csv, schema = _write(tmp_path, frame)
    schema.write_text(SCHEMA.replace("split: {method: column, column: day, val_fraction: 0.2, test_fraction: 0.2}",
                                     "split: {method: random, val_fraction: 0.1, test_fraction: 0.1}"))
    outs = []
    for chunk in (4000, 333):
        out = tmp_path / f"out-{chunk}"
        prepare("csv", out, options={"path": str(csv), "schema": str(schema), "streaming": True, "chunk_rows": chunk})
        outs.append(out)
    spec = _spec(outs[0])
    assert spec["split"] == {"method": "random", "assignment": "row_hash", "val_fraction": 0.1, "test_fraction": 0.1}
    other = _spec(outs[1])
    assert {**spec, "label_stats": 0} == {**other, "options": spec["options"], "label_stats": 0}
    assert spec["label_stats"]["watch"]["train"] == pytest.approx(other["label_stats"]["watch"]["train"], rel=1e-12)
    rows = spec["rows"]
    assert sum(rows.values()) == 4000 and 320 < rows["val"] < 480 and 320 < rows["test"] < 480
    truth = [set(_split(outs[0], s)["truth"].round(4)) for s in ("train", "val", "test")]
    assert all(np.array_equal(_split(outs[0], s).to_numpy(), _split(outs[1], s).to_numpy())
               for s in ("train", "val", "test"))
    assert len(truth[1]) > 300  # the split took rows from all over the file


def test_beyond_the_sample_statistics_stay_exact_and_quantiles_close(tmp_path, monkeypatch):
    import workflow.data.stream_prepare as sp

    csv, schema = _write(tmp_path, _frame(6000, seed=3))
    prepare("csv", tmp_path / "exact", options={"path": str(csv), "schema": str(schema), "streaming": False})
    monkeypatch.setattr(sp, "SAMPLE_ROWS", 500)  # far fewer than the ~3,600 train rows: the sketch path
    prepare("csv", tmp_path / "sketch", options={"path": str(csv), "schema": str(schema), "streaming": True,
                                                 "chunk_rows": 1000})
    exact = {f["name"]: f for f in _spec(tmp_path / "exact")["features"] if f["kind"] == "dense"}
    sketch = {f["name"]: f for f in _spec(tmp_path / "sketch")["features"] if f["kind"] == "dense"}
    for name, e in exact.items():
        s = sketch[name]
        assert (s["min"], s["max"], s["missing_rate"]) == (e["min"], e["max"], e["missing_rate"])
        assert abs(s["median"] - e["median"]) < 0.06 * (e["max"] - e["min"])  # from 500 sampled rows
        assert s["mean"] == pytest.approx(e["mean"], abs=0.05 * e["std"])  # exact sums, filled with another median
        # rank error of the sketch's quantiles among the exact encoded train values: a 500-row sample's (KS ~ 0.06)
        train = np.sort(_split(tmp_path / "exact", "train")[name].to_numpy())
        levels = np.linspace(0, 1, len(s["quantiles"]))
        scale = (e["mean"] - s["mean"]) / e["std"]  # the sketch's encoding differs by its (other) mean and std
        ranks = np.searchsorted(train, np.asarray(s["quantiles"]) * s["std"] / e["std"] - scale) / len(train)
        assert np.abs(ranks - levels).max() < 0.08
        assert set(s["tree_edges"]) == set(e["tree_edges"])


@pytest.mark.parametrize("defect, message", [
    ("schema", r"part-2\.parquet has a different schema: column 'click' is string, but number in .*part-0\.parquet"),
    ("label", r"part-2\.parquet lacks declared column\(s\) \['click'\]"),
    ("corrupt", r"part-2\.parquet cannot be read as parquet"),
    ("values", r"part-2\.parquet: classification label 'click' \(column 'click'\) has values other than 0/1"),
])
def test_a_bad_file_is_named_in_one_line_and_nothing_is_written(tmp_path, defect, message):
    frame = _frame(900, seed=4)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    _, schema = _write(tmp_path, frame)
    folder = tmp_path / "bucket"
    folder.mkdir()
    parts = [frame.iloc[i * 300:(i + 1) * 300].copy() for i in range(3)]
    if defect == "schema":
        parts[2]["click"] = parts[2]["click"].astype(str)
    elif defect == "label":
        parts[2] = parts[2].drop(columns=["click"])
    elif defect == "values":
        parts[2].loc[parts[2].index[5], "click"] = 3
    for k, part in enumerate(parts):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{k}.parquet")
    if defect == "corrupt":
        (folder / "part-2.parquet").write_bytes(b"PAR1 but not really" * 20)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message) as err:
        prepare("parquet", out, options={"path": str(folder), "schema": str(schema)})
    assert "\n" not in str(err.value)
    assert_nothing_written(out)


def test_hashed_ids_are_the_same_when_serving_reencodes_raw_rows(tmp_path):
    from workflow.data.feature_spec import FeatureSpec
    from workflow.serving.log_model import build_spec_package

    frame = _frame(500, seed=5)
    frame.loc[[3, 7], "device"] = "?"
    csv, schema = _write(tmp_path, frame)
    out = tmp_path / "out"
    prepare("csv", out, options={"path": str(csv), "schema": str(schema), "streaming": True, "chunk_rows": 128})
    spec = FeatureSpec.load(out)
    written = pd.concat([_split(out, s) for s in ("train", "val", "test")])
    raw = pd.read_csv(csv, dtype={"device": str})
    ids = spec.encode(raw)["device"]
    assert ids[3] == ids[7] == 0 and (ids[ids > 0] <= 64).all()
    assert sorted(ids) == sorted(written["device"])  # the prepared ids are what serving computes from raw rows
    import importlib
    import sys

    build_spec_package(tmp_path / "pkg")
    sys.path.insert(0, str(tmp_path / "pkg"))
    try:
        copy = importlib.import_module("mtlp_featurespec").FeatureSpec.load(out / "feature_spec.json")
        assert np.array_equal(copy.encode(raw)["device"], ids)
    finally:
        sys.path.remove(str(tmp_path / "pkg"))
        for name in [m for m in sys.modules if m.startswith("mtlp_featurespec")]:
            del sys.modules[name]
