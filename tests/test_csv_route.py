"""A shop's own CSV through the generic route (issue 29, points 6-9): config paths read beside the config file, a
hint that names config keys, a bad label shown without numpy's spelling, ESMM on non-funnel labels a data error."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from workflow.data.errors import DataError
from workflow.data.prepare import prepare

SCHEMA = {"sparse": ["user_id", "item_id"], "dense": ["price"],
          "labels": [{"column": "click", "task_type": "classification"},
                     {"column": "bought", "task_type": "classification"}],
          "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2}}


def _shop(folder, n=400, bought_without_click=True):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"user_id": i % 37, "item_id": i % 11, "price": float(i % 7), "click": i % 3 == 0,
             "bought": (i % 5 == 0) if bought_without_click else (i % 6 == 0)} for i in range(n)]
    pd.DataFrame(rows).astype({"click": int, "bought": int}).to_csv(folder / "shop.csv", index=False)
    (folder / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))


def test_relative_paths_in_a_config_are_read_beside_it(tmp_path, monkeypatch) -> None:
    _shop(tmp_path / "project" / "data")
    (tmp_path / "project" / "shop.yaml").write_text(yaml.safe_dump({"dataset": {"name": "csv", "options": {
        "path": "data/shop.csv", "schema": "data/schema.yaml"}}}))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    options = load_config("project/shop.yaml").dataset.options
    assert options == {"path": str(tmp_path / "project" / "data" / "shop.csv"),
                       "schema": str(tmp_path / "project" / "data" / "schema.yaml")}
    (tmp_path / "project" / "old.yaml").write_text(yaml.safe_dump({"dataset": {"name": "adult", "data_dir": "x"}}))
    (tmp_path / "x").mkdir()  # exists only from the current folder, as configs/adult.yaml's ../shared/... does
    assert load_config("project/old.yaml").dataset.data_dir == "x"
    (tmp_path / "project" / "gone.yaml").write_text(yaml.safe_dump({"dataset": {"name": "csv", "options": {
        "path": "nowhere.csv", "schema": "data/schema.yaml"}}}))
    config = load_config("project/gone.yaml")
    with pytest.raises(DataError, match=f"data file not found: {tmp_path / 'project' / 'nowhere.csv'}$"):
        prepare("csv", tmp_path / "out", options=config.dataset.options)


def test_the_csv_hint_names_config_keys() -> None:
    with pytest.raises(DataError) as err:
        prepare("csv", "/nonexistent-out", options={})
    assert str(err.value) == ("csv: give the data file and its YAML schema in the config: dataset.options.path (or "
                              "dataset.data_dir) and dataset.options.schema (docs/csv-schema.md)")
    assert "--option" not in str(err.value)


def test_a_bad_label_is_shown_as_written(tmp_path) -> None:
    _shop(tmp_path)
    frame = pd.read_csv(tmp_path / "shop.csv")
    frame.loc[3, "click"] = 2
    frame.to_csv(tmp_path / "shop.csv", index=False)
    with pytest.raises(DataError) as err:
        prepare("csv", tmp_path / "out", options={"path": str(tmp_path / "shop.csv"),
                                                  "schema": str(tmp_path / "schema.yaml")})
    assert str(err.value).endswith("has values other than 0/1: 2.0") and "np." not in str(err.value)


def test_esmm_on_non_funnel_csv_labels_is_a_data_error(tmp_path) -> None:
    """A DataError: the local runner then ends the run at once with exit status 2 (tests/test_local_tasks_end.py)."""
    from workflow.data.feature_spec import FeatureSpec
    from workflow.training.evaluate import check_scored_on_labels
    from workflow.training.model_factory import build_model

    _shop(tmp_path)
    prepare("csv", tmp_path / "out", options={"path": str(tmp_path / "shop.csv"),
                                              "schema": str(tmp_path / "schema.yaml")})
    spec = FeatureSpec.load(tmp_path / "out" / "feature_spec.json")
    with pytest.raises(DataError, match=r"esmm trains on targets derived from the labels, which differ from label "
                                        r"'bought' on \d+ of \d+ train rows of dataset 'csv'"):
        check_scored_on_labels(build_model("esmm", spec), "esmm", tmp_path / "out", spec)
