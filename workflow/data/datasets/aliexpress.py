"""AliExpress in MTReclib's CSV format: 16 categorical id columns, 63 numerical, click and conversion labels.

conversion is click-and-convert over all impressions (the CTCVR label), so conversion must imply click;
a file breaking that is rejected rather than trained on. search_id groups a query's impressions and is not
a feature. The data is published on Tianchi behind a login, so it is never downloaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..encoders import LabelSpec
from ..errors import DataError
from ..raw_files import RawFile, check_nonempty, locate_files, sha256_of
from .base import PreparedData, RawTables, TableSchema, build_from_raw, check_options

SPARSE = [f"categorical_{i}" for i in range(1, 17)]
DENSE = [f"numerical_{i}" for i in range(1, 64)]
LABELS = ["click", "conversion"]
SOURCE = ("https://tianchi.aliyun.com/dataset/74690 (per-country AliExpress_NL/ES/FR/US folders, each with "
          "train.csv and test.csv)")
OPTIONS: dict[str, Any] = {"train_file": None, "test_file": None, "min_frequency": 1, "log1p": False}


def _file_names(data_dir: Optional[str | Path], opts: Mapping[str, Any]) -> tuple[str, str]:
    if opts["train_file"] or opts["test_file"]:
        return str(opts["train_file"] or "train.csv"), str(opts["test_file"] or "test.csv")
    if data_dir is not None and not (Path(data_dir) / "train.csv").exists():
        samples = sorted(Path(data_dir).glob("*_train_sample.csv"))
        if samples:
            prefix = samples[0].name[: -len("_train_sample.csv")]
            return samples[0].name, f"{prefix}_test_sample.csv"
    return "train.csv", "test.csv"


def read_aliexpress_file(path: Path) -> pd.DataFrame:
    check_nonempty(path)
    try:
        names = pd.read_csv(path, nrows=1, header=None).iloc[0].astype(str).tolist()
        if len(names) != len(set(names)):
            raise DataError(f"{path} has duplicate column names: {sorted({c for c in names if names.count(c) > 1})}")
        return pd.read_csv(path, engine="c")  # types are checked by the encoders, with messages naming the column
    except pd.errors.EmptyDataError:
        raise DataError(f"raw file is empty: {path}") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path} is not in the AliExpress CSV format: {e}") from None


def check_conversion_implies_click(frame: pd.DataFrame, where: str) -> None:
    bad = (frame["conversion"].to_numpy() == 1) & (frame["click"].to_numpy() != 1)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} rows have conversion=1 without click=1; conversion must be "
                        "the click-and-convert (CTCVR) label")


def build(data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options("aliexpress", options, OPTIONS)
    train_name, test_name = _file_names(data_dir, opts)
    paths = locate_files("aliexpress", [RawFile(train_name), RawFile(test_name)], data_dir, manual_hint=SOURCE)
    train, test = read_aliexpress_file(paths[train_name]), read_aliexpress_file(paths[test_name])
    schema = TableSchema(sparse=list(SPARSE), dense=list(DENSE), min_frequency=int(opts["min_frequency"]),
                         log1p=list(DENSE) if opts["log1p"] else [],
                         labels=[LabelSpec(name, "classification", name) for name in LABELS])
    for frame, name in ((train, train_name), (test, test_name)):
        if set(LABELS) <= set(frame.columns):
            check_conversion_implies_click(frame, name)
    raw = RawTables(schema=schema, train=train, test=test,
                    raw_sha256={name: sha256_of(path) for name, path in paths.items()},
                    split={"method": "random", "train_val_from": train_name, "test_from": test_name})
    prepared = build_from_raw("aliexpress", raw, seed, val_fraction, opts)
    for split, columns in prepared.splits.items():
        assert np.all(columns["conversion"] <= columns["click"]), split
    return prepared
