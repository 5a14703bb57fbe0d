"""UCI Census-Income (KDD), as in the MMOE paper (Ma et al. 2018): tasks income > 50K and never married.

Raw files census-income.data / census-income.test: 42 comma+space separated columns, no header, '?' or
'Not in universe' style values kept as categories. 'instance weight' is a sampling weight, never a feature;
'marital stat' defines a task and so leaves the features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from ..encoders import LabelSpec
from ..errors import DataError
from ..raw_files import RawFile, locate_files, sha256_of
from .base import PreparedData, RawTables, TableSchema, build_from_raw, check_options

COLUMNS = [
    "age", "class of worker", "detailed industry recode", "detailed occupation recode", "education",
    "wage per hour", "enroll in edu inst last wk", "marital stat", "major industry code", "major occupation code",
    "race", "hispanic origin", "sex", "member of a labor union", "reason for unemployment",
    "full or part time employment stat", "capital gains", "capital losses", "dividends from stocks",
    "tax filer stat", "region of previous residence", "state of previous residence",
    "detailed household and family stat", "detailed household summary in household", "instance weight",
    "migration code-change in msa", "migration code-change in reg", "migration code-move within reg",
    "live in this house 1 year ago", "migration prev res in sunbelt", "num persons worked for employer",
    "family members under 18", "country of birth father", "country of birth mother", "country of birth self",
    "citizenship", "own business or self employed", "fill inc questionnaire for veteran's admin",
    "veterans benefits", "weeks worked in year", "year", "income",
]
DENSE = ["age", "wage per hour", "capital gains", "capital losses", "dividends from stocks",
         "num persons worked for employer", "weeks worked in year"]
HEAVY_TAILED = ["wage per hour", "capital gains", "capital losses", "dividends from stocks"]
NOT_FEATURES = {"instance weight", "marital stat", "income"}
SPARSE = [c for c in COLUMNS if c not in DENSE and c not in NOT_FEATURES]

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
# No pinned sha256 is known here: a downloaded file is pinned on first use (see raw_files.RawFile).
FILES = [RawFile("census-income.data", _UCI + "census-income.data", gzipped=True),
         RawFile("census-income.test", _UCI + "census-income.test", gzipped=True)]
OPTIONS: dict[str, Any] = {"min_frequency": 1, "log1p": True}


def read_census_file(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, header=None, sep=",", skipinitialspace=True, dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"raw file is empty: {path}") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path} is not in the census-income format (42 columns): {e}") from None
    if frame.shape[1] != len(COLUMNS):
        raise DataError(f"{path} has {frame.shape[1]} columns, the census-income format has {len(COLUMNS)}")
    frame.columns = COLUMNS
    frame["income"] = frame["income"].str.strip().str.rstrip(".").str.strip()
    return frame


def build(data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options("census-income", options, OPTIONS)
    schema = TableSchema(
        sparse=list(SPARSE), dense=list(DENSE), missing_values=["?"], min_frequency=int(opts["min_frequency"]),
        log1p=list(HEAVY_TAILED) if opts["log1p"] else [],
        labels=[LabelSpec("income", "classification", "income", ["50000+"], ["- 50000"]),
                LabelSpec("never_married", "classification", "marital stat", ["Never married"])])
    paths = locate_files("census-income", FILES, data_dir)
    raw = RawTables(schema=schema, train=read_census_file(paths["census-income.data"]),
                    test=read_census_file(paths["census-income.test"]),
                    raw_sha256={name: sha256_of(path) for name, path in paths.items()},
                    split={"method": "random", "train_val_from": "census-income.data",
                           "test_from": "census-income.test"})
    return build_from_raw("census-income", raw, seed, val_fraction, opts)
