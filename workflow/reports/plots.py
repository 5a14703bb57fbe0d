"""PNG plots for MLflow artifacts (matplotlib, Agg backend, no display): training curves, ROC per classification
task, the comparison of one pipeline run's models, and a search's optimisation history."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mtl_models.atomic import atomic_path

__all__ = ["training_curves", "roc_curves", "model_comparison", "search_history",
           "pyplot", "save_figure"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Lay out, write (complete or not at all) and close ``fig`` (closing frees it: pyplot keeps every open figure
    alive)."""
    plt = pyplot()
    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:  # matplotlib picks the format from the extension
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def training_curves(history: Sequence[Mapping[str, float]], path: str | os.PathLike, title: str = "") -> Path:
    """Three panels over epochs: train losses, validation metrics, adaptive task weights."""
    plt = pyplot()
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for i, row in enumerate(history):
        epoch = int(row.get("epoch", i))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and np.isfinite(value):
                series[key].append((epoch, float(value)))
    groups = [("train loss", lambda k: k.startswith("train/")), ("validation", lambda k: k.startswith("val/")),
              ("task weights", lambda k: k.startswith("weight/"))]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (label, keep) in zip(axes, groups):
        keys = sorted(k for k in series if keep(k))
        for key in keys:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, marker="o", label=key)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        if keys:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def roc_curves(y_true: np.ndarray, y_pred: np.ndarray, task_names: Sequence[str], task_types: Sequence[str],
               out_dir: str | os.PathLike, title: str = "") -> list[Path]:
    """One ``roc_<task>.png`` per classification task (``y_true``/``y_pred``: ``[N, n_task]``)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    paths = []
    for j, (task, kind) in enumerate(zip(task_names, task_types)):
        if kind != "classification" or j >= y_pred.shape[1]:
            continue
        t, p = y_true[:, j], y_pred[:, j]
        if len(np.unique(t)) < 2:
            continue
        fpr, tpr, _ = roc_curve(t, p)
        auc = roc_auc_score(t, p)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{title} {task}".strip())
        ax.legend(loc="lower right")
        paths.append(save_figure(fig, Path(out_dir) / f"roc_{task}.png"))
    return paths


def _key_metric_names(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """``val_score`` (what promotion selects on) and ``test_score`` first, then each task's AUC / RMSE; secondary
    metrics (logloss...) stay in comparison.json."""
    names = {m for row in table.values() for m in row}
    scores = [k for k in ("val_score", "test_score") if k in names]
    keys = sorted(m for m in names if m.rsplit("/", 1)[-1] in ("auc", "rmse"))
    return scores + (keys or sorted(names - set(scores)))


def model_comparison(table: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                     title: str = "metrics by model", reference: Optional[Mapping[str, float]] = None,
                     champion: Optional[str] = None) -> Path:
    """One panel per key metric (``val_score``, ``test_score``, ``<task>/auc``...), a horizontal bar per model, best
    on top, the value written on each bar, the axis and the bars starting near the smallest value, not at 0 (AUCs
    of 0.670 and 0.674 must look different), each bar's 95 % interval as an error bar where the table has one
    (``<metric>_lo`` / ``<metric>_hi``) and, when ``reference`` names a metric, its value as a dashed line
    (e.g. the generator's ceiling AUC). ``champion``: that model's label reads ``<model> (champion)``, in bold.
    Sized to stay legible in MLflow's artifact preview (about 800 px wide)."""
    plt = pyplot()
    models = list(table)
    metrics = _key_metric_names(table)
    reference = dict(reference or {})
    n = max(1, len(metrics))
    from matplotlib.ticker import MaxNLocator

    # panels stacked, 7 inches wide: MLflow's preview shows it near its own size, so the text stays readable
    fig, axes = plt.subplots(n, 1, figsize=(7.2, 0.6 + n * (0.75 + 0.34 * max(1, len(models)))), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        rows = [(m, float(table[m].get(metric, np.nan))) for m in models]
        lower_better = metric.endswith("rmse")
        rows.sort(key=lambda r: (not np.isfinite(r[1]), r[1] if lower_better else -r[1]))
        rows.reverse()  # barh draws the first row at the bottom: the best ends on top
        values = np.array([v for _, v in rows], dtype=float)
        bounds = np.array([[float(table[m].get(f"{metric}{end}", np.nan)) for m, _ in rows]
                           for end in ("_lo", "_hi")])  # [2, n_models]; NaN where no interval
        finite = np.concatenate([values[np.isfinite(values)], bounds[np.isfinite(bounds)]])
        ref = reference.get(metric)
        span = np.concatenate([finite, [ref]]) if ref is not None and np.isfinite(ref) else finite
        y = np.arange(len(rows))
        best = len(rows) - 1
        colors = ["#2b7bba" if i == best else "#9ecae1" for i in range(len(rows))]
        left = 0.0
        if span.size:
            lo, hi = float(span.min()), float(span.max())
            pad = max((hi - lo) * 0.25, 0.005)
            left = lo - pad if not metric.endswith("auc") else max(lo - pad, 0.0)
            ax.set_xlim(left, hi + pad)
        ax.barh(y, np.where(np.isfinite(values), values - left, 0.0), left=left, color=colors, height=0.7)
        has = np.isfinite(bounds).all(axis=0) & np.isfinite(values)
        if has.any():  # xerr: distances below and above the value
            ax.errorbar(values[has], y[has], xerr=np.abs(bounds[:, has] - values[has]), fmt="none",
                        ecolor="#333333", elinewidth=1.2, capsize=3)
        for yi, v in zip(y, values):
            if np.isfinite(v):
                ax.text(v, yi, f" {v:.4f}", va="center", ha="left", fontsize=10)
        if ref is not None and np.isfinite(ref):
            ax.axvline(ref, color="#d62728", linestyle="--", linewidth=1.5, label=f"ceiling {ref:.4f}")
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False, borderaxespad=0.1)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{m} (champion)" if m == champion else m for m, _ in rows], fontsize=10)
        for label, (m, _) in zip(ax.get_yticklabels(), rows):
            label.set_fontweight("bold" if m == champion else "normal")
        ax.set_title(metric.replace("/", " ") + (" (lower is better)" if lower_better else ""), fontsize=11,
                     loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.tick_params(axis="x", labelsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path, dpi=110)


def search_history(values: Sequence[Optional[float]], path: str | os.PathLike, maximize: bool = True,
                   title: str = "search: objective by trial") -> Path:
    """Objective per trial (None = failed/pruned, skipped) with the best-so-far line."""
    plt = pyplot()
    xs = [i for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    ys = [float(values[i]) for i in xs]
    fig, ax = plt.subplots(figsize=(6, 4))
    if ys:
        best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
        ax.scatter(xs, ys, label="trial", s=14)
        ax.step(xs, best, where="post", color="red", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title(title)
    return save_figure(fig, path)
