"""Any CSV or Parquet file plus a YAML schema naming its sparse/dense columns, labels and how to split.

Example schema::

    sparse: [user_id, {column: item_id, min_frequency: 5}, 101, "109_14", {column: device_id, hash_buckets: 1000000}]
    dense: [price, {column: views, log1p: true}]
    labels:
      - {column: click, task_type: classification}                       # 0/1
      - {column: outcome, name: bought, task_type: classification, positive: [yes], negative: [no]}
      - {column: watch_time, task_type: regression}
    missing_values: ["", "?"]                 # optional
    min_frequency: 1                           # optional default for sparse columns
    ground_truth: [true_ctr]                   # optional, copied to the outputs, never features
    split: {method: random, val_fraction: 0.1, test_fraction: 0.1}     # or
    # split: {method: column, column: date, val_fraction: 0.1, test_fraction: 0.1}  (latest rows -> test)

Column names are taken as the file writes them, numbers included (``- 101`` names column '101'). Plain YAML
would read ``109_14`` as the number 10914 and ``012`` as 10; this reader keeps the written spelling, but
quoting such names (``"109_14"``) keeps the schema correct for any other YAML reader too.

The data file is ``options['path']`` (or ``data_dir`` when it is a file), the schema ``options['schema']``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from ..encoders import TASK_TYPES, LabelSpec, check_hash_buckets
from ..errors import DataError
from ..raw_files import check_nonempty, sha256_of
from .base import PreparedData, RawTables, TableSchema, build_from_raw, check_options

OPTIONS: dict[str, Any] = {"path": None, "schema": None}
SCHEMA_KEYS = {"sparse", "dense", "labels", "missing_values", "min_frequency", "ground_truth", "split"}


class _Int(int):
    """A YAML integer that remembers how it was written: ``- 012`` names column '012', not 10."""

    text: str


class _Float(float):
    text: str


def _schema_loader() -> type:
    """PyYAML's safe loader whose numbers keep their source text, so a numeric column name is spelled as written
    (YAML 1.1 reads ``109_14`` as 10914 and ``012`` as 10) while counts and fractions stay numbers."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def number(kind: type, construct: Any) -> Any:
        def build(loader: Any, node: Any) -> Any:
            value = kind(construct(loader, node))
            value.text = node.value
            return value
        return build

    Loader.add_constructor("tag:yaml.org,2002:int", number(_Int, yaml.SafeLoader.construct_yaml_int))
    Loader.add_constructor("tag:yaml.org,2002:float", number(_Float, yaml.SafeLoader.construct_yaml_float))
    return Loader


def _name(value: Any) -> Optional[str]:
    """A column name: a string, or a number as the YAML file wrote it (``- 101``); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return getattr(value, "text", None) or str(value)
    return None


def _column_entry(entry: Any, where: str) -> dict[str, Any]:
    if _name(entry) is not None:
        return {"column": _name(entry)}
    if isinstance(entry, Mapping) and _name(entry.get("column")) is not None:
        return {**entry, "column": _name(entry["column"])}
    raise DataError(f"schema {where}: each entry must be a column name or a mapping with 'column', got {entry!r}")


def _string_list(value: Any, where: str) -> Optional[list[str]]:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise DataError(f"schema {where} must be a non-empty list, got {value!r}")
    if any(isinstance(v, bool) for v in value):
        raise DataError(f"schema {where}: YAML reads unquoted yes/no/true/false as booleans; quote label values, "
                        f"e.g. [\"yes\"]")
    return [_name(v) or str(v) for v in value]


def read_schema(path: Path) -> tuple[TableSchema, dict[str, Any]]:
    """YAML schema -> (TableSchema, split settings); every mistake is a DataError naming the key."""
    import yaml

    check_nonempty(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_schema_loader())
    except yaml.YAMLError as e:
        raise DataError(f"schema {path} is not valid YAML: {e}") from None
    if not isinstance(doc, Mapping):
        raise DataError(f"schema {path} must be a mapping with keys {sorted(SCHEMA_KEYS)}")
    unknown = sorted(set(doc) - SCHEMA_KEYS)
    if unknown:
        raise DataError(f"schema {path} has unknown keys {unknown}; allowed: {sorted(SCHEMA_KEYS)}")
    default_min = doc.get("min_frequency", 1)
    sparse_entries = [_column_entry(e, "sparse") for e in doc.get("sparse") or []]
    dense_entries = [_column_entry(e, "dense") for e in doc.get("dense") or []]
    if not isinstance(doc.get("labels"), list) or not doc["labels"]:
        raise DataError(f"schema {path} must list at least one label under 'labels'")
    labels = []
    for entry in doc["labels"]:
        entry = _column_entry(entry, "labels")
        task_type = entry.get("task_type")
        if task_type not in TASK_TYPES:
            raise DataError(f"schema label {entry['column']!r}: task_type must be one of {list(TASK_TYPES)}, "
                            f"got {task_type!r}")
        positive = _string_list(entry.get("positive"), f"label {entry['column']!r} positive")
        negative = _string_list(entry.get("negative"), f"label {entry['column']!r} negative")
        if negative is not None and positive is None:
            raise DataError(f"schema label {entry['column']!r} lists negative values without positive ones")
        labels.append(LabelSpec(_name(entry.get("name")) or entry["column"], task_type, entry["column"],
                                positive, negative))
    schema = TableSchema(
        sparse=[e["column"] for e in sparse_entries], dense=[e["column"] for e in dense_entries], labels=labels,
        missing_values=[_name(v) or str(v) for v in doc.get("missing_values") or []],
        min_frequency={e["column"]: int(e.get("min_frequency", default_min)) for e in sparse_entries},
        log1p=[e["column"] for e in dense_entries if e.get("log1p")],
        extra_columns=[_name(c) or str(c) for c in doc.get("ground_truth") or []],
        hash_buckets={e["column"]: check_hash_buckets(e["column"], e["hash_buckets"]) for e in sparse_entries
                      if e.get("hash_buckets") is not None})
    split = dict(doc.get("split") or {"method": "random"})
    if split.get("method", "random") not in ("random", "column"):
        raise DataError(f"schema split method must be 'random' or 'column', got {split.get('method')!r}")
    if split.get("method") == "column":
        if _name(split.get("column")) is None:
            raise DataError("schema split method 'column' needs split.column naming the column to order by")
        split["column"] = _name(split["column"])
    return schema, split


def _read_table(kind: str, path: Path) -> pd.DataFrame:
    check_nonempty(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            if len(names) != len(set(names)):
                raise DataError(f"{path} has duplicate column names: {sorted({c for c in names if names.count(c) > 1})}")
            return pq.read_table(path).to_pandas()
        raw_names = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False).iloc[0].tolist()
        if len(raw_names) != len(set(raw_names)):
            raise DataError(f"{path} has duplicate column names: "
                            f"{sorted({c for c in raw_names if raw_names.count(c) > 1})}")
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"raw file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read as {kind}: {e}") from None
    except DataError:
        raise
    except Exception as e:  # pyarrow's errors for a file that is not Parquet
        if kind == "parquet":
            raise DataError(f"{path} cannot be read as parquet: {e}") from None
        raise


def build(kind: str, data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options(kind, options, OPTIONS)
    if opts["path"] is None and data_dir is not None and Path(data_dir).is_file():
        opts["path"] = str(data_dir)
    if not opts["path"] or not opts["schema"]:
        raise DataError(f"{kind}: give the data file and its YAML schema in the config: dataset.options.path "
                        "(or dataset.data_dir) and dataset.options.schema (docs/csv-schema.md)")
    path, schema_path = Path(opts["path"]).expanduser(), Path(opts["schema"]).expanduser()
    if data_dir is not None and Path(data_dir).is_dir() and not path.is_absolute():
        path = Path(data_dir) / path
    if not path.is_file():
        raise DataError(f"data file not found: {path.resolve()}")
    if not schema_path.is_file():
        raise DataError(f"schema file not found: {schema_path.resolve()}")
    schema, split = read_schema(schema_path)
    frame = _read_table(kind, path)
    val_fraction = float(split.get("val_fraction", val_fraction))
    raw = RawTables(schema=schema, train=frame, test=None,
                    raw_sha256={path.name: sha256_of(path), schema_path.name: sha256_of(schema_path)},
                    split={k: v for k, v in split.items() if k not in ("val_fraction", "test_fraction")},
                    split_column=split.get("column") if split.get("method") == "column" else None,
                    test_fraction=float(split.get("test_fraction", 0.1)))
    return build_from_raw(kind, raw, seed, val_fraction, {k: str(v) for k, v in opts.items()})
