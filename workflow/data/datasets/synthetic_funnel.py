"""Synthetic impression -> click -> conversion data with known ground truth, from thousands to tens of millions of rows.

Users and items are Zipf-distributed; pCTR and pCVR of each impression come from a logistic model of user,
item and dense features whose intercepts are calibrated (on the first 100k rows) to the requested rates; the true probabilities are
kept in ``true_pctr`` / ``true_pcvr`` / ``true_pctcvr`` (never features), so CVR can be evaluated over the
whole impression space; the AUC they reach on the test rows is the spec's ``ceiling``. Three knobs carry the
mechanisms of the ESMM paper (all off by default): ``effect_corr`` correlates a user's and an item's CVR effect
with its CTR effect (shared taste / quality), ``item_zipf`` steepens item popularity so that most items get few
or no clicks, ``hidden_std`` adds an unobserved per-impression cause to both logits. Generated with numpy only, already as ids, so encoding is an addition: rows are
i.i.d. draws from the seed, so contiguous train/val/test slices are a seeded random split without copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..encoders import DenseEncoder, LabelSpec, SparseEncoder, fit_dense
from ..errors import DataError
from ..feature_spec import FeatureSpec
from .base import PreparedData, check_options, fill_statistics, split_fractions

OPTIONS: dict[str, Any] = {"n_rows": 100_000, "ctr": 0.05, "cvr": 0.1, "n_users": 10_000, "n_items": 5_000,
                           "n_categories": 100, "zipf": 1.1, "n_dense": 4, "test_fraction": 0.1,
                           "effect_corr": 0.0, "item_zipf": None, "hidden_std": 0.0}
GROUND_TRUTH = ["true_pctr", "true_pcvr", "true_pctcvr"]


def zipf_ids(rng: np.random.Generator, n: int, n_ids: int, exponent: float) -> np.ndarray:
    """Exact draws of ranks k in [0, n_ids) with P(k) proportional to (k+1)^-exponent (inverse CDF, vectorised).

    Rank 0 is the most popular id. A guide table (the first rank of each of ``n_buckets`` equal slices of
    [0, 1)) narrows every draw's search to a few ranks, then a vectorised bisection finishes it: about four
    times faster than ``np.searchsorted`` over the whole table, which was the generator's bottleneck.
    """
    weights = np.arange(1, n_ids + 1, dtype=np.float64) ** -float(exponent)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    n_buckets = int(min(max(4 * n_ids, 1024), 1 << 22))
    guide = np.searchsorted(cdf, np.arange(n_buckets + 1, dtype=np.float64) / n_buckets, side="right")
    np.minimum(guide, n_ids - 1, out=guide)
    u = rng.random(n)
    bucket = (u * n_buckets).astype(np.int64)
    lo, hi = guide[bucket], guide[bucket + 1]  # the answer, the first k with cdf[k] > u, lies in [lo, hi]
    del bucket
    while True:
        open_ = np.flatnonzero(lo < hi)
        if open_.size == 0:
            return lo
        l, h, uu = lo[open_], hi[open_], u[open_]
        mid = (l + h) >> 1
        right = cdf[mid] <= uu
        lo[open_] = np.where(right, mid + 1, l)
        hi[open_] = np.where(right, h, mid)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.negative(x)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


def _calibrate(logit: np.ndarray, target: float, weights: Optional[np.ndarray] = None) -> float:
    """Intercept b with weighted mean sigmoid(logit + b) == target (bisection on a sample)."""
    lo, hi = -30.0, 30.0
    logit = logit.astype(np.float64)
    for _ in range(40):  # 60 / 2^40: far below the sampling noise of any rate
        mid = (lo + hi) / 2
        p = 1.0 / (1.0 + np.exp(-(logit + mid)))
        rate = np.average(p, weights=weights)
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return (lo + hi) / 2


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (ties share their mean rank), numpy only: the Mann-Whitney U over positives x negatives."""
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score
    rank_sum = float(mean_rank[inverse.reshape(-1)][labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# which generator probability each label is drawn from: conversion is click-and-convert over all impressions
TRUTH_OF_LABEL = {"click": "true_pctr", "conversion": "true_pctcvr"}


def ceiling(test: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The AUC that the generator's true probabilities reach on the test rows: the best any model can score there
    (the labels are coin flips with those probabilities), so the gap to it is what is left to learn."""
    metrics = {label: {"auc": auc(test[label], test[truth])} for label, truth in TRUTH_OF_LABEL.items()}
    return {"split": "test", "source": "true probabilities of the generator", "metrics": metrics}


def _check(opts: Mapping[str, Any]) -> None:
    for key in ("n_rows", "n_users", "n_items", "n_categories"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"synthetic-funnel: {key} must be a positive int, got {v!r}")
    if isinstance(opts["n_dense"], bool) or not isinstance(opts["n_dense"], int) or opts["n_dense"] < 0:
        raise DataError(f"synthetic-funnel: n_dense must be an int >= 0, got {opts['n_dense']!r}")
    for key in ("ctr", "cvr"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise DataError(f"synthetic-funnel: {key} must be in (0, 1), got {v!r}")
    if isinstance(opts["zipf"], bool) or not isinstance(opts["zipf"], (int, float)) or opts["zipf"] <= 0:
        raise DataError(f"synthetic-funnel: zipf exponent must be > 0, got {opts['zipf']!r}")
    z = opts["item_zipf"]
    if z is not None and (isinstance(z, bool) or not isinstance(z, (int, float)) or z <= 0):
        raise DataError(f"synthetic-funnel: item_zipf must be null (= zipf) or > 0, got {z!r}")
    r = opts["effect_corr"]
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not -1 <= r <= 1:
        raise DataError(f"synthetic-funnel: effect_corr must be in [-1, 1], got {r!r}")
    h = opts["hidden_std"]
    if isinstance(h, bool) or not isinstance(h, (int, float)) or h < 0:
        raise DataError(f"synthetic-funnel: hidden_std must be >= 0, got {h!r}")


def _correlate(ctr: np.ndarray, own: np.ndarray, rho: float) -> np.ndarray:
    """CVR effects with correlation rho to the CTR effects and the same spread: a shared latent taste / quality.
    rho = 0 returns ``own`` unchanged, so the default draws stay what they were."""
    if rho == 0:
        return own
    return (rho * ctr + np.sqrt(1.0 - rho * rho) * own).astype(np.float32)


def generate(seed: int, opts: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw columns: user_id/item_id/item_category ids from 0, dense_1.., click, conversion, true_*."""
    n, n_dense = int(opts["n_rows"]), int(opts["n_dense"])
    root = np.random.SeedSequence(seed)
    world_rng, row_rng = (np.random.default_rng(s) for s in root.spawn(2))
    # the "world": per-user/per-item effects, item categories and feature weights
    user_ctr, user_cvr = world_rng.normal(0, 0.6, (2, opts["n_users"])).astype(np.float32)
    item_ctr, item_cvr = world_rng.normal(0, 0.6, (2, opts["n_items"])).astype(np.float32)
    rho = float(opts["effect_corr"])
    user_cvr, item_cvr = _correlate(user_ctr, user_cvr, rho), _correlate(item_ctr, item_cvr, rho)
    item_category = world_rng.integers(0, opts["n_categories"], opts["n_items"])
    w_ctr, w_cvr = world_rng.normal(0, 0.3, (2, max(n_dense, 1))).astype(np.float32)

    columns: dict[str, np.ndarray] = {}
    columns["user_id"] = users = zipf_ids(row_rng, n, opts["n_users"], opts["zipf"])
    item_zipf = opts["zipf"] if opts["item_zipf"] is None else opts["item_zipf"]  # larger: a longer, emptier tail
    columns["item_id"] = items = zipf_ids(row_rng, n, opts["n_items"], item_zipf)
    columns["item_category"] = item_category[items]
    logit_ctr = user_ctr[users]
    logit_ctr += item_ctr[items]
    logit_cvr = user_cvr[users]
    logit_cvr += item_cvr[items]
    for j in range(n_dense):
        x = row_rng.standard_normal(n, dtype=np.float32)
        logit_ctr += w_ctr[j] * x
        logit_cvr += w_cvr[j] * x
        if j == 0:  # one heavy-tailed, price-like column: exp of the latent value
            np.exp(x, out=x)
        columns[f"dense_{j + 1}"] = x
    if opts["hidden_std"] > 0:  # a hidden cause of both clicking and converting (mood, intent): never a feature
        hidden = row_rng.standard_normal(n, dtype=np.float32) * np.float32(opts["hidden_std"])
        logit_ctr += hidden
        logit_cvr += hidden
        del hidden
    sample = slice(0, min(n, 100_000))
    logit_ctr += np.float32(_calibrate(logit_ctr[sample], float(opts["ctr"])))
    pctr = _sigmoid(logit_ctr)
    del logit_ctr
    # pCVR intercept: the conversion rate among clicks (clicks weighted by pCTR) hits the requested cvr
    logit_cvr += np.float32(_calibrate(logit_cvr[sample], float(opts["cvr"]), weights=pctr[sample]))
    pcvr = _sigmoid(logit_cvr)
    del logit_cvr
    click = row_rng.random(n, dtype=np.float32) < pctr
    conversion = row_rng.random(n, dtype=np.float32) < pcvr
    conversion &= click
    columns["click"] = click.astype(np.float32)
    columns["conversion"] = conversion.astype(np.float32)
    del click, conversion
    columns["true_pctr"] = pctr
    columns["true_pcvr"] = pcvr
    columns["true_pctcvr"] = pctr * pcvr
    return columns


def build(data_dir: Optional[str | Path], seed: int, val_fraction: float,
          options: Mapping[str, Any]) -> PreparedData:
    opts = check_options("synthetic-funnel", options, OPTIONS)
    _check(opts)
    split_fractions(val_fraction, opts["test_fraction"])
    raw = generate(seed, opts)
    n = int(opts["n_rows"])
    n_val, n_test = int(round(n * val_fraction)), int(round(n * opts["test_fraction"]))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError("synthetic-funnel: the train split is empty; raise n_rows")
    bounds = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, n)}

    sparse = [SparseEncoder("user_id", "user_id", id_range=opts["n_users"]),
              SparseEncoder("item_id", "item_id", id_range=opts["n_items"]),
              SparseEncoder("item_category", "item_category", id_range=opts["n_categories"])]
    dense: list[DenseEncoder] = []
    for j in range(int(opts["n_dense"])):
        name = f"dense_{j + 1}"
        dense.append(fit_dense(name, name, raw[name][bounds["train"]], log1p=(j == 0)))
    encoded: dict[str, np.ndarray] = {}
    for enc in sparse:
        encoded[enc.name] = enc.encode(raw.pop(enc.source), inplace=True)  # ids + 1, in the raw array's memory
    for enc in dense:
        encoded[enc.name] = enc.transform_numbers(raw.pop(enc.source), inplace=True)
    encoded.update(raw)  # labels and ground truth, already float32
    labels = [LabelSpec("click", "classification", "click"), LabelSpec("conversion", "classification", "conversion")]
    spec = FeatureSpec(dataset="synthetic-funnel", seed=seed, features=[*sparse, *dense], labels=labels,
                       options=dict(opts), extra_columns=list(GROUND_TRUTH),
                       split={"method": "random", "note": "rows are i.i.d. draws from the seed; contiguous slices",
                              "val_fraction": val_fraction, "test_fraction": opts["test_fraction"]},
                       raw_types={**{enc.source: "long" for enc in sparse}, **{enc.source: "double" for enc in dense}})
    splits = {split: {name: column[bound] for name, column in encoded.items()} for split, bound in bounds.items()}
    fill_statistics(spec, splits)
    spec.ceiling = ceiling(splits["test"])
    clicks = {s: float(c["click"].sum()) for s, c in splits.items()}
    spec.label_stats["conversion_given_click"] = {
        s: {"rate": float(c["conversion"].sum()) / clicks[s] if clicks[s] else float("nan")} for s, c in splits.items()}
    return PreparedData(spec=spec, splits=splits)
