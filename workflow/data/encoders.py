"""Encoders fitted on the train split only, and applied identically at preparation and serving time.

Sparse: raw category -> id in ``[1, vocab_size)``, id 0 for unseen or missing values; with ``hash_buckets`` a
category's id is a fixed hash of its spelling instead (``1 + hash % hash_buckets``): no vocabulary, an embedding
table of fixed size for ids with millions of values.
Dense: raw number -> float32, missing -> the train median, then optional (signed) log1p and standardisation;
the train split's quantiles of that encoded value are kept too, for the models' numeric embeddings (bin edges).
Labels: raw value -> float32, with strict checks, because a wrong label silently ruins every later step.

pandas is imported inside the functions that take raw tables, not at module level: generated data
(synthetic-funnel) is numpy arrays from start to end, and ``import pandas`` alone costs ~45 MiB of RSS.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from .errors import DataError
from .tree_bins import TREE_BIN_COUNTS, fit_tree_edges

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SparseEncoder", "DenseEncoder", "LabelSpec", "TASK_TYPES",
    "fit_sparse", "fit_dense", "encode_label", "as_category_strings", "as_numbers", "QUANTILE_LEVELS",
    "TREE_BIN_COUNTS", "BIN_SOURCES", "fit_tree_edges", "hash_ids", "value_counts", "sparse_from_counts",
    "check_hash_buckets",
]

TASK_TYPES = ("classification", "regression")
QUANTILE_LEVELS = 257  # quantiles kept per dense feature: bin edges for up to 256 bins at 1/256 resolution
BIN_SOURCES = ("quantile", "tree")


def _examples(values: Iterable[Any], limit: int = 5) -> str:
    shown = [repr(v.item() if hasattr(v, "item") else v) for v in list(values)[:limit]]  # 2.0, not np.float64(2.0)
    return ", ".join(shown)


def _is_series(values: Any) -> bool:
    """A pandas Series? Without pandas loaded nothing can be one, so this never imports it."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(values, pandas.Series)


def as_category_strings(values: pd.Series, missing_values: Sequence[str] = ()) -> pd.Series:
    """Spell categories as stripped strings so that 7, 7.0 and ' 7' all name the same category; missing -> NA."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        out = values.astype("Int64").astype("string")
    elif pd.api.types.is_integer_dtype(values.dtype):
        out = values.astype("string")
    elif pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool(np.all(np.mod(finite.to_numpy(dtype=np.float64), 1.0) == 0.0)):
            out = values.astype("Int64").astype("string")
        else:
            out = values.astype("string")
    else:
        out = values.astype("string").str.strip()
    if len(missing_values):
        out = out.mask(out.isin(list(missing_values)))
    return out


def as_numbers(values: pd.Series, column: str, missing_values: Sequence[str] = ()) -> np.ndarray:
    """Raw column -> float64 array with NaN for missing; non-numeric values are a DataError, not a silent NaN."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    text = values.astype("string").str.strip()
    if len(missing_values):
        text = text.mask(text.isin(list(missing_values)))
    text = text.mask(text == "")
    numbers = pd.to_numeric(text, errors="coerce")
    bad = numbers.isna() & text.notna()
    if bool(bad.any()):
        raise DataError(f"dense column {column!r} is not numeric: values such as {_examples(text[bad].unique())}")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass
class SparseEncoder:
    """Vocabulary encoder (ids 1..len(vocabulary)), identity encoder for raw ids already in ``[0, id_range)``, or
    hashing encoder (ids ``1 + h % hash_buckets``, ``h`` pandas' fixed-key SipHash of the category's spelling).

    The identity form exists for generated data whose ids are dense integers: encoding is then one addition.
    """

    name: str
    source: str
    vocabulary: Optional[list[str]] = None
    id_range: Optional[int] = None
    min_frequency: int = 1
    hash_buckets: Optional[int] = None
    _index: Optional[pd.Index] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.vocabulary, self.id_range, self.hash_buckets)) != 1:
            raise ValueError(f"sparse feature {self.name!r} needs exactly one of vocabulary, id_range or hash_buckets")

    @property
    def kind(self) -> str:
        return "sparse"

    @property
    def vocab_size(self) -> int:
        """Number of embedding rows, including the reserved id 0."""
        if self.hash_buckets is not None:
            return int(self.hash_buckets) + 1
        return (len(self.vocabulary) if self.vocabulary is not None else int(self.id_range)) + 1

    def encode(self, values: pd.Series | np.ndarray, missing_values: Sequence[str] = (),
               inplace: bool = False) -> np.ndarray:
        """Raw values -> int64 ids; ``inplace`` lets the identity form reuse an int64 input array's memory."""
        if self.id_range is not None:
            return self._encode_identity(values, inplace)
        import pandas as pd

        strings = as_category_strings(pd.Series(values), missing_values)
        if self.hash_buckets is not None:
            return hash_ids(strings, int(self.hash_buckets))
        if self._index is None:
            self._index = pd.Index(self.vocabulary, dtype="string")
        return self._index.get_indexer(strings).astype(np.int64) + 1  # -1 (unseen/NA) -> 0

    def _encode_identity(self, values: pd.Series | np.ndarray, inplace: bool = False) -> np.ndarray:
        raw = values.to_numpy(dtype=np.float64, na_value=-1.0) if _is_series(values) else np.asarray(values)
        if raw.dtype.kind == "f":
            valid = np.isfinite(raw) & (raw >= 0) & (raw < self.id_range) & (np.mod(raw, 1.0) == 0)
            return np.where(valid, raw + 1, 0).astype(np.int64)
        outside = (raw < 0) | (raw >= self.id_range)  # before the addition, which may write into raw
        out = raw if inplace and raw.dtype == np.int64 else raw.astype(np.int64)
        out += 1
        out[outside] = 0
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": "sparse", "source": self.source,
                               "vocab_size": self.vocab_size}
        if self.hash_buckets is not None:
            out.update(encoding="hash", hash_buckets=int(self.hash_buckets))
        elif self.vocabulary is not None:
            out.update(encoding="vocabulary", min_frequency=self.min_frequency, vocabulary=list(self.vocabulary))
        else:
            out.update(encoding="identity", id_range=int(self.id_range))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SparseEncoder":
        return cls(name=d["name"], source=d.get("source", d["name"]), vocabulary=d.get("vocabulary"),
                   id_range=d.get("id_range"), min_frequency=int(d.get("min_frequency", 1)),
                   hash_buckets=d.get("hash_buckets"))


def hash_ids(strings: pd.Series, buckets: int) -> np.ndarray:
    """Category strings (NA = missing) -> int64 ids ``1 + h % buckets`` (0 for missing); ``h`` is pandas'
    ``hash_array`` (SipHash with a fixed key), the same in every process and on every machine."""
    import pandas as pd

    present = strings.notna().to_numpy()
    out = np.zeros(len(strings), dtype=np.int64)
    if present.any():
        h = pd.util.hash_array(strings[present].to_numpy(dtype=object), categorize=False)
        out[present] = (h % np.uint64(buckets)).astype(np.int64) + 1
    return out


def check_hash_buckets(name: str, buckets: Any) -> int:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise DataError(f"hash_buckets for {name!r} must be a positive int, got {buckets!r}")
    return int(buckets)


def value_counts(values: pd.Series, missing_values: Sequence[str] = ()) -> pd.Series:
    """Counts of each category spelling (missing left out): what ``fit_sparse`` keeps, summable over chunks."""
    return as_category_strings(values, missing_values).value_counts(dropna=True)


def sparse_from_counts(name: str, source: str, counts: pd.Series, min_frequency: int = 1) -> SparseEncoder:
    """Vocabulary of the values counted at least ``min_frequency`` times, most frequent first (ties by value)."""
    import pandas as pd

    counts = counts[counts >= min_frequency]
    table = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
    table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
    return SparseEncoder(name=name, source=source, vocabulary=table["value"].tolist(), min_frequency=min_frequency)


def fit_sparse(name: str, source: str, values: pd.Series, missing_values: Sequence[str] = (),
               min_frequency: int = 1, hash_buckets: Optional[int] = None) -> SparseEncoder:
    """Vocabulary of the train values seen at least ``min_frequency`` times, most frequent first (ties by value);
    with ``hash_buckets``, the hashing encoder (nothing to count)."""
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise DataError(f"min_frequency for {name!r} must be a positive int, got {min_frequency!r}")
    if hash_buckets is not None:
        return SparseEncoder(name=name, source=source, hash_buckets=check_hash_buckets(name, hash_buckets))
    return sparse_from_counts(name, source, value_counts(values, missing_values), min_frequency)


@dataclass
class DenseEncoder:
    """Missing -> train median; then signed log1p if asked (heavy tails); then (x - mean) / std from train.

    ``quantiles``: the encoded train values at ``QUANTILE_LEVELS`` evenly spaced levels, from which
    ``bin_edges(n)`` reads quantile bins for any bin count without the data (None in specs written before).
    ``tree_edges``: per leaf count in ``TREE_BIN_COUNTS``, the thresholds of decision trees fitted on this column
    alone against each classification label (the paper's target-aware bins), for ``bin_edges(n, "tree")``."""

    name: str
    source: str
    median: float
    mean: float
    std: float
    log1p: bool = False
    missing_rate: float = 0.0
    min: float = 0.0
    max: float = 0.0
    quantiles: Optional[list[float]] = None
    tree_edges: Optional[dict[str, list[float]]] = None

    @property
    def kind(self) -> str:
        return "dense"

    def bin_edges(self, n_bins: int, source: str = "quantile") -> tuple[float, ...]:
        """Edges of ``n_bins`` train bins on the encoded scale, float32-exact and strictly increasing. ``quantile``:
        fewer where quantiles coincide (a column that is mostly 0), a single edge for a constant column; ``tree``:
        the trees' thresholds between the train min and max (up to ``n_bins`` per classification label)."""
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
            raise DataError(f"n_bins must be a positive int, got {n_bins!r}")
        if source == "tree":
            if self.tree_edges is None:
                raise DataError(f"dense feature {self.name!r} has no tree bins in the feature spec (they need a "
                                "classification label): prepare the data again, or use bin_source quantile")
            if str(n_bins) not in self.tree_edges:
                raise DataError(f"tree bins come in {list(TREE_BIN_COUNTS)} leaves, got n_bins={n_bins}")
            return tuple(float(v) for v in self.tree_edges[str(n_bins)])
        if source != "quantile":
            raise DataError(f"bin_source {source!r} is not one of {list(BIN_SOURCES)}")
        if self.quantiles is None:
            raise DataError(f"dense feature {self.name!r} has no train quantiles in the feature spec: "
                            "prepare the data again to use a binned numeric encoding")
        q = np.asarray(self.quantiles, dtype=np.float64)
        picks = q[np.round(np.linspace(0, len(q) - 1, n_bins + 1)).astype(np.int64)]
        return tuple(float(v) for v in np.unique(picks.astype(np.float32)))

    def transform_numbers(self, numbers: np.ndarray, inplace: bool = False) -> np.ndarray:
        """float array with NaN for missing -> encoded float32; ``inplace`` reuses a float32 input's memory."""
        numbers = np.asarray(numbers)
        out = numbers if inplace and numbers.dtype == np.float32 else np.array(numbers, dtype=np.float32)
        np.copyto(out, np.float32(self.median), where=np.isnan(out))
        if self.log1p:
            _signed_log1p_inplace(out)
        out -= np.float32(self.mean)
        out /= np.float32(self.std)
        return out

    def encode(self, values: pd.Series | np.ndarray, missing_values: Sequence[str] = ()) -> np.ndarray:
        numbers = as_numbers(values, self.source, missing_values) if _is_series(values) else values
        return self.transform_numbers(numbers)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "dense", "source": self.source, "log1p": self.log1p,
                "median": self.median, "mean": self.mean, "std": self.std, "missing_rate": self.missing_rate,
                "min": self.min, "max": self.max,
                **({"quantiles": list(self.quantiles)} if self.quantiles is not None else {}),
                **({"tree_edges": dict(self.tree_edges)} if self.tree_edges is not None else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DenseEncoder":
        return cls(name=d["name"], source=d.get("source", d["name"]), median=float(d["median"]),
                   mean=float(d["mean"]), std=float(d["std"]), log1p=bool(d.get("log1p", False)),
                   missing_rate=float(d.get("missing_rate", 0.0)), min=float(d.get("min", 0.0)),
                   max=float(d.get("max", 0.0)),
                   quantiles=[float(v) for v in d["quantiles"]] if d.get("quantiles") is not None else None,
                   tree_edges={str(k): [float(v) for v in e] for k, e in d["tree_edges"].items()}
                   if d.get("tree_edges") is not None else None)


def _signed_log1p_inplace(x: np.ndarray) -> None:
    """sign(x) * log1p(|x|): compresses heavy tails and stays defined for negative values."""
    sign = np.sign(x)
    np.abs(x, out=x)
    np.log1p(x, out=x)
    x *= sign


def fit_dense(name: str, source: str, numbers: np.ndarray, log1p: bool = False) -> DenseEncoder:
    """Statistics of the train values only (NaN = missing)."""
    numbers = np.asarray(numbers)
    missing = np.isnan(numbers)
    n_missing = int(missing.sum())
    present = numbers[~missing] if n_missing else numbers
    if present.size == 0:
        median, lo, hi = 0.0, 0.0, 0.0
    else:
        median, lo, hi = float(np.median(present)), float(present.min()), float(present.max())
    filled = np.where(missing, np.float32(median), numbers).astype(np.float32) if n_missing \
        else numbers.astype(np.float32, copy=True)
    if log1p:
        _signed_log1p_inplace(filled)
    mean = float(filled.mean(dtype=np.float64)) if filled.size else 0.0
    std = float(filled.std(dtype=np.float64)) if filled.size else 1.0
    if not np.isfinite(std) or std < 1e-12:
        std = 1.0
    encoder = DenseEncoder(name=name, source=source, median=median, mean=mean, std=std, log1p=bool(log1p),
                           missing_rate=n_missing / max(numbers.size, 1), min=lo, max=hi)
    if filled.size:  # quantiles of exactly what the model will see: the encoded train values
        encoded = encoder.transform_numbers(numbers.astype(np.float32))
        levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
        encoder.quantiles = [float(v) for v in np.quantile(encoded.astype(np.float64), levels)]
    return encoder


@dataclass
class LabelSpec:
    """A task's label: its raw column, task type and, for classification, how raw values map to 0/1.

    ``positive_values`` with ``negative_values`` lists the dataset's own label strings (e.g. '>50K', '<=50K');
    ``positive_values`` alone derives a binary task (any other present value is 0, e.g. never-married);
    neither means the raw values must already be 0/1.
    """

    name: str
    task_type: str
    source: str
    positive_values: Optional[list[str]] = None
    negative_values: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise DataError(f"label {self.name!r} has unknown task type {self.task_type!r}; allowed: {list(TASK_TYPES)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "task_type": self.task_type, "source": self.source}
        if self.positive_values is not None:
            out["positive_values"] = list(self.positive_values)
        if self.negative_values is not None:
            out["negative_values"] = list(self.negative_values)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpec":
        return cls(name=d["name"], task_type=d["task_type"], source=d.get("source", d["name"]),
                   positive_values=d.get("positive_values"), negative_values=d.get("negative_values"))


def encode_label(label: LabelSpec, values: pd.Series, missing_values: Sequence[str] = ()) -> np.ndarray:
    """Raw label column -> float32; NaN, unknown classes and non-numeric targets raise DataError."""
    import pandas as pd

    if label.task_type == "regression":
        numbers = as_numbers(values, label.source, missing_values)
        if np.isnan(numbers).any():
            raise DataError(f"label {label.name!r} (column {label.source!r}) has {int(np.isnan(numbers).sum())} "
                            "missing (NaN) values")
        return numbers.astype(np.float32)
    if label.positive_values is not None:
        text = as_category_strings(values, missing_values)
        if bool(text.isna().any()):
            raise DataError(f"label {label.name!r} (column {label.source!r}) has {int(text.isna().sum())} "
                            "missing (NaN) values")
        positive = text.isin(label.positive_values).to_numpy(dtype=bool)
        if label.negative_values is not None:
            known = positive | text.isin(label.negative_values).to_numpy(dtype=bool)
            if not known.all():
                bad = text[~known].unique()
                raise DataError(f"classification label {label.name!r} (column {label.source!r}) has values other "
                                f"than {label.positive_values + label.negative_values}: {_examples(bad)}")
        return positive.astype(np.float32)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = values.astype("string").str.strip()
        if len(missing_values):
            text = text.mask(text.isin(list(missing_values)))
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        unparsed = np.isnan(numbers) & text.notna().to_numpy()
        if unparsed.any():
            raise DataError(f"classification label {label.name!r} (column {label.source!r}) has values other "
                            f"than 0/1: {_examples(text[unparsed].unique())}")
    nan = np.isnan(numbers)
    if nan.any():
        raise DataError(f"label {label.name!r} (column {label.source!r}) has {int(nan.sum())} missing (NaN) values")
    bad = (numbers != 0) & (numbers != 1)
    if bad.any():
        raise DataError(f"classification label {label.name!r} (column {label.source!r}) has values other than "
                        f"0/1: {_examples(np.unique(numbers[bad]))}")
    return numbers.astype(np.float32)
