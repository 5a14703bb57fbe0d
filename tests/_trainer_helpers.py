"""Shared fixtures for the trainer tests: a learnable synthetic CTR/CVR data set and the five models."""

from __future__ import annotations

import numpy as np
import torch

from mtl_models import AITM, ESMM, MMOE, PLE, DenseFeature, SharedBottom, SparseFeature

MODEL_NAMES = ["SharedBottom", "ESMM", "MMOE", "PLE", "AITM"]
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
    torch.manual_seed(seed)
    feats, tt = features(), list(task_types)
    towers = [{"dims": [8]} for _ in tt]
    if name == "SharedBottom":
        return SharedBottom(feats, tt, bottom_params={"dims": [32, 16]}, tower_params_list=towers)
    if name == "ESMM":
        return ESMM(feats, tt, bottom_params={"dims": [32, 16]}, tower_params_list=towers)
    if name == "MMOE":
        return MMOE(feats, tt, n_expert=4, expert_params={"dims": [32, 16]}, tower_params_list=towers)
    if name == "PLE":
        return PLE(feats, tt, n_level=2, n_expert_specific=2, n_expert_shared=1,
                   expert_params={"dims": [16]}, tower_params_list=towers)
    if name == "AITM":
        return AITM(feats, tt, bottom_params={"dims": [32, 16]}, tower_params_list=towers,
                    attention_params={"attention_dim": 8})
    raise ValueError(name)


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
