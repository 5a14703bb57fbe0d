"""The MMOE paper's synthetic data (Ma et al. 2018, section 4.1): two regression tasks correlated through p.

w1 = c*u1, w2 = c*(p*u1 + sqrt(1-p^2)*u2) with u1, u2 orthogonal unit vectors; x ~ N(0, I_d);
y_i = w_i.x + sum_k sin(alpha_k * w_i.x + beta_k) + eps_i, eps_i ~ N(0, 0.01) (variance).
The noiseless targets are kept as ground-truth columns (never features) so that their correlation can be
checked; the paper notes it falls with p although it is not p itself (the sines are non-linear).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..encoders import LabelSpec
from ..errors import DataError
from .base import PreparedData, RawTables, TableSchema, build_from_raw, check_options

OPTIONS: dict[str, Any] = {"n_rows": 12_000, "p": 0.5, "d": 100, "c": 1.0, "m": 10, "noise_std": 0.1,
                           "alpha_beta_std": 1.0, "test_fraction": 1 / 12}


def generate(seed: int, opts: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of x_1..x_d, y1/y2 (noisy labels) and y1_noiseless/y2_noiseless, all from the seed."""
    p, d, c, m, n = float(opts["p"]), int(opts["d"]), float(opts["c"]), int(opts["m"]), int(opts["n_rows"])
    if not -1.0 <= p <= 1.0:
        raise DataError(f"synthetic-mmoe: p must be in [-1, 1], got {p}")
    if d < 2 or m < 0 or n < 3:
        raise DataError(f"synthetic-mmoe: need d >= 2, m >= 0 and n_rows >= 3, got d={d}, m={m}, n_rows={n}")
    rng = np.random.default_rng(seed)
    # two orthonormal directions: QR of a random d x 2 Gaussian matrix
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(1.0 - p * p) * u2)
    alpha = rng.normal(0.0, float(opts["alpha_beta_std"]), m)
    beta = rng.normal(0.0, float(opts["alpha_beta_std"]), m)
    x = rng.standard_normal((n, d))

    def target(w: np.ndarray) -> np.ndarray:
        z = x @ w
        return z + np.sin(np.outer(z, alpha) + beta).sum(axis=1)

    y1_clean, y2_clean = target(w1), target(w2)
    noise = rng.normal(0.0, float(opts["noise_std"]), (2, n))
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"x_{i + 1}" for i in range(d)])
    frame["y1"] = (y1_clean + noise[0]).astype(np.float32)
    frame["y2"] = (y2_clean + noise[1]).astype(np.float32)
    frame["y1_noiseless"] = y1_clean.astype(np.float32)
    frame["y2_noiseless"] = y2_clean.astype(np.float32)
    return frame


def build(data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options("synthetic-mmoe", options, OPTIONS)
    frame = generate(seed, opts)
    schema = TableSchema(sparse=[], dense=[c for c in frame.columns if c.startswith("x_")],
                         labels=[LabelSpec("y1", "regression", "y1"), LabelSpec("y2", "regression", "y2")],
                         extra_columns=["y1_noiseless", "y2_noiseless"])
    raw = RawTables(schema=schema, train=frame, test=None, split={"method": "random"},
                    test_fraction=float(opts["test_fraction"]))
    return build_from_raw("synthetic-mmoe", raw, seed, val_fraction, opts)
