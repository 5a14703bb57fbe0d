"""The feature spec: the one file every later step trusts to know the columns, encoders, labels and provenance.

Importable with numpy only (serving and light tooling read it without torch; pandas is imported by the methods
that take raw rows, so writing generated data never loads it); ``to_features`` imports
``mtl_models`` lazily.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .encoders import DenseEncoder, LabelSpec, SparseEncoder, encode_label
from .errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FeatureSpec", "FORMAT_VERSION", "SPEC_FILE", "atomic_write_text", "NUMERIC_ENCODINGS"]

# how a model sees the dense features: as standardised values (the default), or embedded by kind: train bins as
# ids, the bins' embedding mixed with the value through a learned gate, piecewise-linear over train bins, periodic
# (see mtl_models.features and docs/search.md)
NUMERIC_ENCODINGS = ("standard", "bins", "gated_bins", "piecewise_linear", "periodic")

FORMAT_VERSION = 1
SPEC_FILE = "feature_spec.json"  # its name in every prepared, trained and exported folder
Encoder = Union[SparseEncoder, DenseEncoder]


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside the target, fsync, then rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class FeatureSpec:
    """Features with their fitted encoders, labels with task types, split sizes, seed and raw-file hashes."""

    dataset: str
    seed: int
    features: list[Encoder]
    labels: list[LabelSpec]
    rows: dict[str, int] = field(default_factory=dict)
    positive_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    label_stats: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    raw_sha256: dict[str, str] = field(default_factory=dict)
    missing_values: list[str] = field(default_factory=list)
    split: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    # raw column -> its type as the raw data spelled it (MLflow's names: long, double, string, boolean); serving
    # declares these in the model signature, so rows read with pd.read_csv are accepted as they are
    raw_types: dict[str, str] = field(default_factory=dict)
    # generated data only: the metrics that the generator's true probabilities reach on the test rows
    # ({"split": "test", "source": ..., "metrics": {task: {"auc": ...}}}), the best any model can hope for
    ceiling: dict[str, Any] = field(default_factory=dict)
    # the raw column that names the user (GAUC's groups): dataset.user_column, else a feature column "user_id"
    user_column: Optional[str] = None
    format_version: int = FORMAT_VERSION

    # ---- names ----
    @property
    def feature_names(self) -> list[str]:
        """Model input names, in the order models receive them."""
        return [f.name for f in self.features]

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def task_types(self) -> list[str]:
        """'classification' / 'regression', aligned with ``label_names``."""
        return [label.task_type for label in self.labels]

    @property
    def source_columns(self) -> list[str]:
        """Raw columns a serving request must carry (features only; labels are not needed to predict)."""
        return [f.source for f in self.features]

    @property
    def user_feature(self) -> Optional[str]:
        """The model input (encoded column) holding the user, when the spec names a user column."""
        return next((f.name for f in self.features if f.source == self.user_column), None) if self.user_column \
            else None

    @property
    def sparse_features(self) -> list[SparseEncoder]:
        return [f for f in self.features if isinstance(f, SparseEncoder)]

    @property
    def dense_features(self) -> list[DenseEncoder]:
        return [f for f in self.features if isinstance(f, DenseEncoder)]

    # ---- models ----
    def to_features(self, embed_dim: int = 16, numeric_encoding: str = "standard", n_bins: int = 32,
                    numeric_embed_dim: int = 8, periodic_sigma: float = 0.01, n_frequencies: int = 48,
                    bin_source: str = "quantile") -> list:
        """Fresh ``mtl_models`` feature objects: SparseFeature(vocab_size incl. id 0, embed_dim), and a
        DenseFeature per dense column encoded as ``numeric_encoding`` (``NUMERIC_ENCODINGS``), its bins read from
        this spec's train quantiles or target-aware tree bins (``bin_source``). A column whose train values are
        constant stays a plain value."""
        from mtl_models.features import DenseFeature, Periodic, PiecewiseLinear, QuantileBins, SparseFeature

        if numeric_encoding not in NUMERIC_ENCODINGS:
            raise DataError(f"numeric_encoding {numeric_encoding!r} is not one of {list(NUMERIC_ENCODINGS)}")

        def dense(f: DenseEncoder) -> DenseFeature:
            if numeric_encoding == "standard" or f.min == f.max:  # a constant column carries nothing to embed
                return DenseFeature(f.name)
            if numeric_encoding == "periodic":
                return DenseFeature(f.name, numeric_embed_dim, Periodic(int(n_frequencies), float(periodic_sigma)))
            edges = f.bin_edges(int(n_bins), bin_source)
            if len(edges) < 2:
                return DenseFeature(f.name)
            if numeric_encoding == "piecewise_linear":
                return DenseFeature(f.name, numeric_embed_dim, PiecewiseLinear(edges))
            return DenseFeature(f.name, numeric_embed_dim, QuantileBins(edges, gated=numeric_encoding == "gated_bins"))

        return [SparseFeature(f.name, f.vocab_size, embed_dim) if isinstance(f, SparseEncoder) else dense(f)
                for f in self.features]

    # ---- encoding ----
    def _column(self, raw: pd.DataFrame, source: str, name: str) -> pd.Series:
        import pandas as pd

        if source in raw.columns:
            column = raw[source]
        elif name in raw.columns:
            column = raw[name]
        else:
            raise DataError(f"raw rows lack column {source!r}")
        if isinstance(column, pd.DataFrame):
            raise DataError(f"raw rows have duplicate columns named {source!r}")
        return column

    def encode(self, raw: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows (as the raw dataset spells them) -> {feature name: int64 ids | float32 values}, vectorised."""
        missing = [f.source for f in self.features if f.source not in raw.columns and f.name not in raw.columns]
        if missing:
            raise DataError(f"raw rows lack the columns {missing}")
        return {f.name: f.encode(self._column(raw, f.source, f.name), self.missing_values) for f in self.features}

    def encode_labels(self, raw: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows -> {label name: float32}; classification labels are 0/1."""
        missing = [lb.source for lb in self.labels if lb.source not in raw.columns and lb.name not in raw.columns]
        if missing:
            raise DataError(f"raw rows lack the label columns {missing}")
        return {lb.name: encode_label(lb, self._column(raw, lb.source, lb.name), self.missing_values)
                for lb in self.labels}

    # ---- persistence ----
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "dataset": self.dataset,
            "seed": self.seed,
            "options": self.options,
            "split": self.split,
            "rows": self.rows,
            "raw_sha256": self.raw_sha256,
            "missing_values": self.missing_values,
            "features": [f.to_dict() for f in self.features],
            "labels": [lb.to_dict() for lb in self.labels],
            "positive_rates": self.positive_rates,
            "label_stats": self.label_stats,
            "extra_columns": self.extra_columns,
            "raw_types": self.raw_types,
            **({"ceiling": self.ceiling} if self.ceiling else {}),
            **({"user_column": self.user_column} if self.user_column else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"feature spec format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        features: list[Encoder] = []
        for f in d["features"]:
            if f.get("kind") == "sparse":
                features.append(SparseEncoder.from_dict(f))
            elif f.get("kind") == "dense":
                features.append(DenseEncoder.from_dict(f))
            else:
                raise DataError(f"feature spec has a feature of unknown kind: {f.get('kind')!r}")
        return cls(dataset=d["dataset"], seed=int(d["seed"]), features=features,
                   labels=[LabelSpec.from_dict(lb) for lb in d["labels"]], rows=dict(d.get("rows", {})),
                   positive_rates=dict(d.get("positive_rates", {})), label_stats=dict(d.get("label_stats", {})),
                   raw_sha256=dict(d.get("raw_sha256", {})), missing_values=list(d.get("missing_values", [])),
                   split=dict(d.get("split", {})), options=dict(d.get("options", {})),
                   extra_columns=list(d.get("extra_columns", [])), raw_types=dict(d.get("raw_types", {})),
                   ceiling=dict(d.get("ceiling", {})), user_column=d.get("user_column") or None,
                   format_version=version)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Atomic write (temp file + rename)."""
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureSpec":
        path = Path(path)
        if path.is_dir():
            path = path / "feature_spec.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"feature spec not found: {path}") from None
        except json.JSONDecodeError as e:
            raise DataError(f"feature spec {path} is not valid JSON: {e}") from None
        return cls.from_dict(data)
