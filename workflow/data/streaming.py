"""Which path the prepare step takes for the ``csv`` and ``parquet`` datasets: in memory (``datasets.tabular``) or
streaming (``stream_prepare``), and the streaming path's options.

``streaming: auto`` (the default) streams a folder, a glob, an fsspec URL, or a single file larger than
``STREAM_ABOVE_BYTES``; ``true`` always streams; ``false`` reads the one file into memory. The in-memory path is kept
for small files because it is faster there (one read, vectorised over the whole table) and its random split cuts the
exact fractions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import DataError
from .feature_spec import FeatureSpec
from .sources import is_url, list_files
from .split_writer import ROW_GROUP_SIZE, ROWS_PER_FILE

__all__ = ["STREAM_OPTIONS", "STREAM_ABOVE_BYTES", "split_stream_options", "maybe_stream"]

STREAM_ABOVE_BYTES = 256 << 20  # a single raw file above this is prepared streaming
STREAM_OPTIONS: dict[str, Any] = {"streaming": "auto", "chunk_rows": 262_144, "row_group_size": ROW_GROUP_SIZE,
                                  "rows_per_file": ROWS_PER_FILE}


def split_stream_options(dataset: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` -> (the dataset's own options, the streaming options with defaults filled in)."""
    own = {k: v for k, v in options.items() if k not in STREAM_OPTIONS}
    given = {k: v for k, v in options.items() if k in STREAM_OPTIONS}
    if given and dataset not in ("csv", "parquet"):
        raise DataError(f"{dataset}: options {sorted(given)} apply to the csv and parquet datasets only")
    merged = dict(STREAM_OPTIONS, **given)
    if merged["streaming"] not in ("auto", True, False):
        raise DataError(f"streaming must be auto, true or false, got {merged['streaming']!r}")
    for key in ("chunk_rows", "row_group_size", "rows_per_file"):
        v = merged[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{key} must be a positive int, got {v!r}")
    return own, merged


def _location(options: Mapping[str, Any], data_dir: Optional[str | os.PathLike]) -> Optional[str]:
    """The input as ``datasets.tabular`` resolves it (a relative path under ``data_dir``), URLs and globs included."""
    path = options.get("path")
    base = None if data_dir is None else str(data_dir)
    if path is None:
        return base if base is not None and (is_url(base) or Path(base).exists()) else None
    path = str(path)
    if is_url(path) or Path(path).expanduser().is_absolute() or base is None:
        return path
    return f"{base.rstrip('/')}/{path}" if is_url(base) or Path(base).is_dir() else path


def _wanted(location: str, streaming: Any) -> bool:
    if streaming is not True and streaming is not False:  # auto
        if is_url(location) or any(c in location for c in "*?[") or Path(location).is_dir():
            return True
        path = Path(location).expanduser()
        return path.is_file() and path.stat().st_size > STREAM_ABOVE_BYTES
    return bool(streaming)


def maybe_stream(dataset: str, out_dir: str | os.PathLike, data_dir: Optional[str | os.PathLike], seed: int,
                 val_fraction: float, options: Mapping[str, Any], stream: Mapping[str, Any]) -> Optional[FeatureSpec]:
    """Prepare ``dataset`` streaming into ``out_dir`` when the rule says so and return its spec; None: in memory."""
    if dataset not in ("csv", "parquet"):
        return None
    location = _location(options, data_dir)
    if location is None or not _wanted(location, stream["streaming"]):
        return None
    from .datasets.base import check_options
    from .datasets.tabular import OPTIONS, read_schema
    from .stream_prepare import prepare_streaming

    opts = check_options(dataset, options, OPTIONS)
    if not opts["schema"]:
        raise DataError(f"{dataset}: give the data files' YAML schema in the config: dataset.options.schema "
                        "(docs/csv-schema.md)")
    schema_path = Path(opts["schema"]).expanduser()
    if not schema_path.is_file():
        raise DataError(f"schema file not found: {schema_path}")
    schema, split = read_schema(schema_path)
    files = list_files(dataset, location)
    recorded = {"path": location, "schema": str(schema_path), **stream}
    return prepare_streaming(dataset, files, schema, split, seed, float(split.get("val_fraction", val_fraction)),
                             float(split.get("test_fraction", 0.1)), out_dir, recorded, stream["chunk_rows"],
                             stream["row_group_size"], stream["rows_per_file"])
