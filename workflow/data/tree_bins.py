"""Target-aware bin edges of a dense feature: the thresholds of small decision trees fitted on the encoded train
column against each classification label (the numeric-embeddings paper's tree bins)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["TREE_BIN_COUNTS", "TREE_MAX_ROWS", "fit_tree_edges"]

TREE_BIN_COUNTS = (8, 16, 32, 64)  # leaves of the target-aware trees kept per dense feature
TREE_MAX_ROWS = 200_000  # trees are fitted on at most this many train rows (a fixed-seed sample beyond)


def fit_tree_edges(encoder: Any, encoded: np.ndarray, labels: Sequence[np.ndarray], seed: int = 0) -> None:
    """Set ``encoder.tree_edges``: per leaf count, the thresholds of a decision tree on this one encoded train
    column against each 0/1 label, merged, with the column's train min and max as the outer edges. Bins where the
    label's rate changes, so a tree's split (capital-gain above 7,000) is a bin edge rather than mid-bin."""
    from sklearn.tree import DecisionTreeClassifier

    x = np.asarray(encoded, dtype=np.float32)
    if x.size == 0 or not labels:
        return
    rows = np.arange(x.size)
    if x.size > TREE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(x.size, TREE_MAX_ROWS, replace=False)
    outer = np.array([x.min(), x.max()], dtype=np.float32)
    edges: dict[str, list[float]] = {}
    for n in TREE_BIN_COUNTS:
        cuts = [outer]
        for y in labels:
            tree = DecisionTreeClassifier(max_leaf_nodes=n, min_samples_leaf=max(16, len(rows) // 1000),
                                          random_state=seed)
            tree.fit(x[rows].reshape(-1, 1), np.asarray(y)[rows])
            inner = tree.tree_.threshold[tree.tree_.feature >= 0]  # split nodes only (leaves hold -2)
            cuts.append(inner.astype(np.float32))
        merged = np.unique(np.concatenate(cuts))
        edges[str(n)] = [float(v) for v in merged[(merged >= outer[0]) & (merged <= outer[1])]]
    encoder.tree_edges = edges
