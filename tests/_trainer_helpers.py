"""Shared fixtures for the trainer tests: a learnable synthetic CTR/CVR data set and every zoo model."""

from __future__ import annotations

import numpy as np
import torch

from _zoo_helpers import small_params
from mtl_models import DenseFeature, SparseFeature, zoo

MODEL_NAMES = [e.model_class.__name__ for e in zoo.entries()]  # the zoo's models, by class name
# sizes the trainer tests' thresholds were set on (early stopping must see a worse epoch...); other models: generic
TUNED = {"MMOE": {"n_expert": 4}, "PLE": {"n_expert_shared": 1, "expert_dims": [16]}, "AITM": {"attention_dim": 8}}
VOCAB = [20, 15, 10]


def make_data(n: int = 3000, seed: int = 0, regression: bool = False) -> tuple[dict, dict]:
    """Two tasks driven by the same features: click ~ sigmoid(f), conversion ~ click * sigmoid(g)
    (or, with ``regression``, a second task that is a noisy real value)."""
    rng = np.random.default_rng(seed)
    x = {f"c{i}": rng.integers(0, v, n).astype(np.int64) for i, v in enumerate(VOCAB)}
    x["d0"] = rng.normal(size=n).astype(np.float32)
    eff = [rng.normal(size=v) for v in VOCAB]
    f = sum(e[x[f"c{i}"]] for i, e in enumerate(eff)) + 0.8 * x["d0"]
    click = (rng.random(n) < 1 / (1 + np.exp(-f))).astype(np.float32)
    if regression:
        return x, {"click": click, "value": (3.0 * f + rng.normal(size=n)).astype(np.float32)}
    conv = (click * (rng.random(n) < 1 / (1 + np.exp(-(f - 1.0))))).astype(np.float32)
    return x, {"click": click, "conversion": conv}


def features() -> list:
    return [SparseFeature(f"c{i}", v, embed_dim=8) for i, v in enumerate(VOCAB)] + [DenseFeature("d0")]


def build_model(name: str, task_types=("classification", "classification"), seed: int = 0):
    """The zoo model whose class is ``name`` (e.g. "MMOE"): bottoms and experts [32, 16], towers [8], BatchNorm,
    no dropout (the MLP defaults)."""
    torch.manual_seed(seed)
    entry = next(e for e in zoo.entries() if e.model_class.__name__ == name)
    return zoo.build(entry.name, features(), list(task_types),
                     small_params(entry.name, widths=(32, 16), norm="batch", dropout=0.0, **TUNED.get(name, {})))


def one_thread():
    """Context for a fixture: tiny models run fastest, and steadiest on a shared machine, on one thread."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    return ctx()
