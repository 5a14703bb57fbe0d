"""UCI Adult / Census Income from its raw files: tasks income > 50K and never-married (+ optional regression).

train/val = adult.data split by seed, test = adult.test (its '|1x3 Cross validator' line skipped and the '.'
after its labels removed). marital-status defines a task, so it is removed from the features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from ..encoders import LabelSpec
from ..errors import DataError
from ..raw_files import RawFile, locate_files, sha256_of
from .base import PreparedData, RawTables, TableSchema, build_from_raw, check_options

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
SPARSE = ["workclass", "education", "occupation", "relationship", "race", "sex", "native-country"]
DENSE = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
HEAVY_TAILED = ["fnlwgt", "capital-gain", "capital-loss"]

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
FILES = [
    # sha256 of the copy in shared/data/adult (UCI's file minus its trailing blank line) and of UCI's file.
    RawFile("adult.data", _UCI + "adult.data",
            ("df25a4e32ed6f1bd4b3910d21a7bd661a09061eced7cb45555a519d9667cc87b",
             "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d")),
    RawFile("adult.test", _UCI + "adult.test",
            ("ceb625d3b5aeddf1e04cd5eec3268e18af4140fbde5a853a11223deeebcfe0f5",
             "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05")),
]
OPTIONS: dict[str, Any] = {"variant": "classification", "min_frequency": 1, "log1p": True}
VARIANTS = ("classification", "regression")


def read_adult_file(path: Path) -> pd.DataFrame:
    """One raw UCI file -> DataFrame of raw strings/numbers; the test file's header line and label dots removed."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    skip = 1 if first.startswith("|") else 0
    try:
        frame = pd.read_csv(path, header=None, names=COLUMNS, skiprows=skip, sep=",", skipinitialspace=True,
                            dtype=str, keep_default_na=False, skip_blank_lines=True, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError(f"raw file is empty: {path}") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path} is not in the UCI Adult format (15 comma-separated columns): {e}") from None
    if len(frame) == 0:
        raise DataError(f"raw file is empty: {path}")
    if frame["income"].isna().any() or (frame["income"] == "").any():
        raise DataError(f"{path} has rows with fewer than 15 columns")
    frame["income"] = frame["income"].str.strip().str.rstrip(".")
    return frame


def schema_for(variant: str, min_frequency: int, log1p: bool) -> TableSchema:
    if variant not in VARIANTS:
        raise DataError(f"adult: unknown variant {variant!r}; allowed: {list(VARIANTS)}")
    labels = [LabelSpec("income", "classification", "income", [">50K"], ["<=50K"]),
              LabelSpec("never_married", "classification", "marital-status", ["Never-married"])]
    dense = list(DENSE)
    if variant == "regression":
        labels.append(LabelSpec("hours_per_week", "regression", "hours-per-week"))
        dense.remove("hours-per-week")
    return TableSchema(sparse=list(SPARSE), dense=dense, labels=labels, missing_values=["?"],
                       min_frequency=int(min_frequency), log1p=[c for c in HEAVY_TAILED if log1p and c in dense])


def build(data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options("adult", options, OPTIONS)
    schema = schema_for(str(opts["variant"]), opts["min_frequency"], bool(opts["log1p"]))
    paths = locate_files("adult", FILES, data_dir)
    raw = RawTables(schema=schema, train=read_adult_file(paths["adult.data"]),
                    test=read_adult_file(paths["adult.test"]),
                    raw_sha256={name: sha256_of(path) for name, path in paths.items()},
                    split={"method": "random", "train_val_from": "adult.data", "test_from": "adult.test"})
    return build_from_raw("adult", raw, seed, val_fraction, opts)
