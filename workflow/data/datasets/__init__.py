"""Registry of datasets by name; each module exposes ``build(data_dir, seed, val_fraction, options)``."""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import DataError
from .base import PreparedData

__all__ = ["DATASETS", "get_builder"]

DATASETS: dict[str, str] = {
    "adult": "adult",
    "census-income": "census_income",
    "aliexpress": "aliexpress",
    "synthetic-mmoe": "synthetic_mmoe",
    "synthetic-funnel": "synthetic_funnel",
    "csv": "tabular",
    "parquet": "tabular",
}


def get_builder(name: str) -> Callable[..., PreparedData]:
    """The dataset's build function; modules load lazily so one dataset's imports never slow another."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    module = importlib.import_module(f"{__name__}.{DATASETS[name]}")
    if name in ("csv", "parquet"):
        return lambda *args, **kwargs: module.build(name, *args, **kwargs)
    return module.build
