"""Prepared (encoded) rows back to raw rows, so that a registered model, which takes raw rows and encodes them with
its own feature spec, can score the current validation or test rows (the paired comparison of promotion and
``mtlp compare``).

Decoding inverts each encoder: a dense value ``(x - mean) / std`` (after the signed log1p when the spec has it)
goes back to ``x``, typed as the raw data spelled it (``raw_types``: ``long`` rounds); an identity id back to the
raw id; a vocabulary id back to its category, id 0 (unseen or missing) to a missing value. A missing raw value
was encoded as the train median and comes back as that median, which encodes to the same value again: the
round trip ``encode(decode(rows))`` gives the prepared rows back (float32 rounding aside).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .encoders import DenseEncoder, SparseEncoder
from .feature_spec import FeatureSpec

__all__ = ["decode_rows", "read_raw_split"]


def _dense(enc: DenseEncoder, values: np.ndarray, raw_type: str) -> pd.Series:
    x = np.asarray(values, dtype=np.float64) * enc.std + enc.mean
    if enc.log1p:
        x = np.sign(x) * np.expm1(np.abs(x))
    if raw_type in ("long", "integer"):
        return pd.Series(np.round(x).astype(np.int64))
    return pd.Series(x)


def _sparse(enc: SparseEncoder, ids: np.ndarray, raw_type: str) -> pd.Series:
    ids = np.asarray(ids, dtype=np.int64)
    if enc.id_range is not None:  # identity: raw id + 1, 0 for outside the range
        raw = ids - 1
        return pd.Series(raw if raw_type != "string" else raw.astype(str))
    vocab = np.asarray([None] + list(enc.vocabulary), dtype=object)
    values = pd.Series(vocab[ids])
    if raw_type in ("long", "integer", "double"):
        return pd.to_numeric(values)
    return values


def decode_rows(spec: FeatureSpec, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Raw rows (one column per source column of ``spec``) from its encoded feature ``columns``."""
    out = {}
    for enc in spec.features:
        raw_type = spec.raw_types.get(enc.source, "")
        decode = _dense if isinstance(enc, DenseEncoder) else _sparse
        out[enc.source] = decode(enc, columns[enc.name], raw_type)
    return pd.DataFrame(out)


def read_raw_split(prepared_dir: str | os.PathLike, split: str) -> tuple[FeatureSpec, pd.DataFrame, np.ndarray]:
    """(the prepared spec, the split's raw rows, its labels ``[N, n_task]``) from a prepared folder."""
    from .prepare import SPLIT_FILES

    prepared_dir = Path(prepared_dir)
    spec = FeatureSpec.load(prepared_dir)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    table = pq.read_table(prepared_dir / SPLIT_FILES[split], columns=spec.feature_names + spec.label_names)
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    labels = np.stack([np.asarray(columns[name], dtype=np.float64) for name in spec.label_names], axis=1)
    return spec, decode_rows(spec, columns), labels
