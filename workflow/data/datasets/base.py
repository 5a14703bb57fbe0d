"""What every dataset module returns, and the shared path from raw tables to encoded splits.

A dataset module only knows how to read its raw files and which columns mean what (a ``TableSchema``);
splitting, fitting encoders on train, encoding and label checks are done here once for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..encoders import LabelSpec, encode_label, fit_dense, fit_sparse, fit_tree_edges, as_numbers
from ..errors import DataError
from ..feature_spec import FeatureSpec

if TYPE_CHECKING:  # pandas only in annotations here: generated datasets (synthetic-funnel) never import it
    import pandas as pd

__all__ = ["TableSchema", "RawTables", "PreparedData", "build_from_raw", "random_split_indices",
           "column_split_masks", "column_split_keys", "feature_name", "check_options", "split_fractions", "raw_type", "raw_types"]

SPLITS = ("train", "val", "test")


def feature_name(source: str) -> str:
    """Model input names are identifiers (ONNX/metrics friendly): 'education-num' -> 'education_num'."""
    return "".join(c if c.isalnum() else "_" for c in source.strip()).strip("_") or "column"


@dataclass
class TableSchema:
    """Which raw columns are sparse/dense features, labels, or ground truth kept out of the features."""

    sparse: list[str]
    dense: list[str]
    labels: list[LabelSpec]
    missing_values: list[str] = field(default_factory=list)
    min_frequency: int | dict[str, int] = 1
    log1p: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # raw column -> model input name
    hash_buckets: dict[str, int] = field(default_factory=dict)  # sparse column -> hashed into this many ids

    def name_of(self, source: str) -> str:
        return self.names.get(source) or feature_name(source)

    def min_frequency_of(self, source: str) -> int:
        if isinstance(self.min_frequency, Mapping):
            return int(self.min_frequency.get(source, 1))
        return self.min_frequency

    def validate(self) -> None:
        """A label is never a feature; names are unique; log1p only on dense columns."""
        declared = self.sparse + self.dense
        duplicated = sorted({c for c in declared if declared.count(c) > 1})
        if duplicated:
            raise DataError(f"schema declares columns more than once: {duplicated}")
        for label in self.labels:
            if label.source in declared:
                raise DataError(f"schema names label column {label.source!r} as a feature; a label is never a feature")
            if label.source in self.extra_columns:
                raise DataError(f"schema names label column {label.source!r} as a ground-truth column")
        leaked = sorted(set(self.extra_columns) & set(declared))
        if leaked:
            raise DataError(f"schema names ground-truth columns {leaked} as features")
        not_dense = sorted(set(self.log1p) - set(self.dense))
        if not_dense:
            raise DataError(f"log1p is declared for columns that are not dense features: {not_dense}")
        names = [self.name_of(c) for c in declared] + [lb.name for lb in self.labels] + list(self.extra_columns)
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise DataError(f"schema gives several columns the same name: {clashes}")
        if not declared:
            raise DataError("schema declares no feature columns")
        if not self.labels:
            raise DataError("schema declares no labels")

    def required_columns(self) -> list[str]:
        return self.sparse + self.dense + [lb.source for lb in self.labels] + self.extra_columns


@dataclass
class RawTables:
    """Raw rows as read from the files. ``test`` None means: carve a test split out of ``train`` too."""

    schema: TableSchema
    train: pd.DataFrame
    test: Optional[pd.DataFrame] = None
    raw_sha256: dict[str, str] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)  # how to split, recorded in the spec
    split_column: Optional[str] = None  # split by this column's order instead of randomly
    test_fraction: float = 0.1


@dataclass
class PreparedData:
    """Encoded columns per split (feature names, labels, ground truth) and the spec describing them."""

    spec: FeatureSpec
    splits: dict[str, dict[str, np.ndarray]]


def check_options(dataset: str, options: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the user's options; an unknown key is an error (typos must not pass silently)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"{dataset}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    merged = dict(allowed)
    merged.update(options)
    return merged


def split_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DataError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")


def random_split_indices(n: int, seed: int, fractions: Sequence[float]) -> list[np.ndarray]:
    """Seeded permutation cut into ``1 - sum(fractions)`` then each fraction; each part sorted (keeps file order)."""
    perm = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(n * f)) for f in fractions]
    cuts = np.cumsum([n - sum(sizes)] + sizes[:-1]) if sizes else []
    parts = np.split(perm, cuts)
    return [np.sort(p) for p in parts]


def column_split_keys(counts: pd.Series, val_fraction: float, test_fraction: float) -> tuple[Any, Any]:
    """Which values of a split column go to train and to val (the rest: test), from the count of rows per value:
    earliest values train, then val, latest test. Counts summed over chunks give what the whole column gives."""
    counts = counts.sort_index()
    cumulative = counts.cumsum().to_numpy() / counts.sum()
    keys = counts.index
    train_keys = keys[cumulative <= 1 - val_fraction - test_fraction + 1e-12]
    val_keys = keys[(cumulative > 1 - val_fraction - test_fraction + 1e-12) & (cumulative <= 1 - test_fraction + 1e-12)]
    return train_keys, val_keys


def column_split_masks(values: pd.Series, val_fraction: float, test_fraction: float) -> list[np.ndarray]:
    """Split by a column's order (e.g. a date): earliest rows train, then val, latest test; equal values stay together."""
    if values.isna().any():
        raise DataError(f"split column {values.name!r} has missing values")
    train_keys, val_keys = column_split_keys(values.value_counts(), val_fraction, test_fraction)
    is_train = values.isin(train_keys).to_numpy()
    is_val = values.isin(val_keys).to_numpy()
    return [is_train, is_val, ~(is_train | is_val)]


def mlflow_type_of(dtype: Any) -> Optional[str]:
    """A typed pandas column's type in MLflow's words (boolean, long, double); None for text and objects."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    return None


def raw_type(values: pd.Series, missing_values: Sequence[str] = ()) -> str:
    """A raw column's type in MLflow's words (long, double, string, boolean): what a client that reads the same
    file with ``pd.read_csv`` sends. A reader that kept text (``dtype=str``) gets the type pandas would infer."""
    import pandas as pd

    typed = mlflow_type_of(values.dtype)
    if typed:
        return typed
    text = values.astype("string").str.strip()
    text = text.mask(text.isin([*missing_values, ""]))
    present = text.dropna()
    if len(present) == 0 or pd.to_numeric(present.head(1000), errors="coerce").isna().any():
        return "string"  # the sample decides cheaply for the usual text column
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any():
        return "string"
    whole = bool(np.all(np.mod(numbers.to_numpy(dtype=np.float64), 1.0) == 0.0))
    return "long" if whole and len(present) == len(text) and not present.str.contains(r"[.eE]").any() else "double"


def raw_types(frames: Sequence[Optional[pd.DataFrame]], columns: Sequence[str],
              missing_values: Sequence[str] = ()) -> dict[str, str]:
    """Each column's raw type over all ``frames``; ints in one file and floats (missing values) in another are double."""
    out: dict[str, str] = {}
    for column in columns:
        kinds = {raw_type(f[column], missing_values) for f in frames if f is not None and column in f.columns}
        if kinds == {"long", "double"}:
            out[column] = "double"
        elif len(kinds) == 1:
            out[column] = kinds.pop()
        else:
            out[column] = "string"
    return out


def _check_columns(frame: pd.DataFrame, schema: TableSchema, where: str) -> None:
    columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{where} has duplicate column names: {duplicated}")
    absent = [c for c in schema.required_columns() if c not in frame.columns]
    if absent:
        raise DataError(f"{where} lacks declared column(s) {absent}; it has {columns[:20]}"
                        + (" ..." if len(columns) > 20 else ""))
    if len(frame) == 0:
        raise DataError(f"{where} has no rows")


def build_from_raw(dataset: str, raw: RawTables, seed: int, val_fraction: float,
                   options: Optional[Mapping[str, Any]] = None) -> PreparedData:
    """Split, fit encoders on train only, encode every split through the spec, check labels, count positives."""
    schema = raw.schema
    schema.validate()
    _check_columns(raw.train, schema, "train data")
    if raw.test is not None:
        _check_columns(raw.test, schema, "test data")
    for frame, where in ((raw.train, "train"), (raw.test, "test")):  # whole files, so counts in errors are too
        if frame is not None:
            for label in schema.labels:
                encode_label(label, frame[label.source], schema.missing_values)
    test_fraction = 0.0 if raw.test is not None else raw.test_fraction
    split_fractions(val_fraction, test_fraction)
    frames = _split(raw, seed, val_fraction, test_fraction)
    for name, frame in frames.items():
        if len(frame) == 0 and name == "train":
            raise DataError("the train split is empty; use more rows or smaller val/test fractions")

    train = frames["train"]
    features = []
    for source in schema.sparse:
        features.append(fit_sparse(schema.name_of(source), source, train[source], schema.missing_values,
                                   schema.min_frequency_of(source), schema.hash_buckets.get(source)))
    dense_numbers = {}
    for source in schema.dense:
        for split, frame in frames.items():  # every split must be numeric, not only train
            dense_numbers[(split, source)] = as_numbers(frame[source], source, schema.missing_values)
        features.append(fit_dense(schema.name_of(source), source, dense_numbers[("train", source)],
                                  source in schema.log1p))
    order = {source: i for i, source in enumerate(schema.sparse + schema.dense)}
    features.sort(key=lambda f: order[f.source])  # spec order = schema order

    spec = FeatureSpec(dataset=dataset, seed=seed, features=features, labels=list(schema.labels),
                       missing_values=list(schema.missing_values), raw_sha256=dict(raw.raw_sha256),
                       split=dict(raw.split, val_fraction=val_fraction, **({"test_fraction": test_fraction}
                                                                          if raw.test is None else {})),
                       options=dict(options or {}), extra_columns=list(schema.extra_columns),
                       raw_types=raw_types([raw.train, raw.test], schema.sparse + schema.dense,
                                                  schema.missing_values))
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split, frame in frames.items():
        columns: dict[str, np.ndarray] = {}
        for f in features:
            if f.kind == "dense":
                columns[f.name] = f.transform_numbers(dense_numbers[(split, f.source)])
            else:
                columns[f.name] = f.encode(frame[f.source], schema.missing_values)
        for label in schema.labels:
            columns[label.name] = encode_label(label, frame[label.source], schema.missing_values)
        for extra in schema.extra_columns:
            columns[extra] = as_numbers(frame[extra], extra).astype(np.float32)
        splits[split] = columns
    fill_tree_edges(spec, splits["train"])
    fill_statistics(spec, splits)
    return PreparedData(spec=spec, splits=splits)


def fill_tree_edges(spec: FeatureSpec, train: Mapping[str, np.ndarray]) -> None:
    """Target-aware bin edges for every dense feature, from the encoded train split and its 0/1 labels."""
    labels = [train[lb.name] for lb in spec.labels if lb.task_type == "classification"]
    for f in spec.dense_features:
        fit_tree_edges(f, train[f.name], labels, seed=spec.seed)


def fill_statistics(spec: FeatureSpec, splits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Row counts, positive rates of classification labels and mean/std of regression labels, per split."""
    spec.rows = {split: int(len(next(iter(cols.values())))) for split, cols in splits.items()}
    for label in spec.labels:
        per_split = {split: cols[label.name] for split, cols in splits.items()}
        if label.task_type == "classification":
            spec.positive_rates[label.name] = {s: (float(v.mean(dtype=np.float64)) if len(v) else float("nan"))
                                               for s, v in per_split.items()}
        else:
            spec.label_stats[label.name] = {s: {"mean": float(v.mean(dtype=np.float64)),
                                                "std": float(v.std(dtype=np.float64))} if len(v) else {}
                                            for s, v in per_split.items()}


def _split(raw: RawTables, seed: int, val_fraction: float, test_fraction: float) -> dict[str, pd.DataFrame]:
    source = raw.train.reset_index(drop=True)
    if raw.split_column is not None:
        if raw.split_column not in source.columns:
            raise DataError(f"split column {raw.split_column!r} is not in the data")
        masks = column_split_masks(source[raw.split_column], val_fraction, test_fraction)
        parts = [source[m] for m in masks]
    else:
        fractions = [val_fraction] + ([test_fraction] if raw.test is None else [])
        parts = [source.iloc[idx] for idx in random_split_indices(len(source), seed, fractions)]
    frames = {"train": parts[0], "val": parts[1]}
    frames["test"] = raw.test.reset_index(drop=True) if raw.test is not None else parts[2]
    return frames


BuildFunction = Callable[..., PreparedData]
