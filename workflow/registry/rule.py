"""The paired promotion rule: a challenger replaces the champion only when, on the validation rows both are scored
on, its primary metric improves with the paired interval excluding zero, **and** no task is worse than its
non-inferiority margin at the same confidence. Pure: predictions in, a verdict in words out (no MLflow).

- **primary** (``promotion.primary``): ``<metric>`` (the first task's) or ``<task>/<metric>``; the challenger's gain
  must have its whole (1 − level) interval above zero (``auc`` / ``gauc``: up; ``ece`` and ``calibration``'s
  distance from 1: down).
- **guardrails** (``promotion.guardrails``): metrics checked on every task. A task fails when its interval lies
  wholly beyond the margin on the worse side: the data show, at the same confidence, a loss larger than the
  margin. Margins (``promotion.margins``): ``<task>/<metric>`` or ``<metric>`` keys, else ``DEFAULT_MARGINS``.

``level`` (``promotion.level``, 0.05): the intervals are (1 − level) two-sided, so an equal challenger passes the
primary test about level / 2 of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mtl_models import stats

__all__ = ["RULES", "RULE_METRICS", "DEFAULT_MARGINS", "PairedRule", "PairedVerdict", "judge_paired",
           "compare_tasks", "separable", "metric_words", "delta_words", "p_words"]

RULES = ("paired", "margin")
RULE_METRICS = ("auc", "gauc", "ece", "calibration")
DEFAULT_MARGINS = {"auc": 0.002, "gauc": 0.002, "ece": 0.002, "calibration": 0.02}
_LABEL = {"auc": "AUC", "gauc": "GAUC", "ece": "calibration error", "calibration": "miscalibration"}


@dataclass(frozen=True)
class PairedRule:
    primary: str = "auc"
    guardrails: tuple[str, ...] = ("auc",)
    margins: Mapping[str, float] = field(default_factory=dict)
    level: float = stats.LEVEL

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "PairedRule":
        return cls(primary=str(cfg.get("primary") or "auc"), guardrails=tuple(cfg.get("guardrails") or ("auc",)),
                   margins=dict(cfg.get("margins") or {}), level=float(cfg.get("level", stats.LEVEL)))

    def primary_of(self, tasks: Sequence[str]) -> tuple[str, str]:
        task, _, metric = self.primary.rpartition("/")
        task = task or tasks[0]
        if task not in tasks or metric not in RULE_METRICS:
            raise ValueError(f"promotion.primary {self.primary!r} must be <metric> or <task>/<metric> with a task "
                             f"of {list(tasks)} and a metric of {list(RULE_METRICS)}")
        return task, metric

    def margin(self, task: str, metric: str) -> float:
        return float(self.margins.get(f"{task}/{metric}", self.margins.get(metric, DEFAULT_MARGINS[metric])))

    def metrics(self) -> list[str]:
        names = [self.primary.rpartition("/")[2], *self.guardrails]
        unknown = [m for m in names if m not in RULE_METRICS]
        if unknown:
            raise ValueError(f"promotion metric(s) {unknown} unknown; choose from {list(RULE_METRICS)}")
        return list(dict.fromkeys(names))


@dataclass
class PairedVerdict:
    promoted: bool
    decision: str                     # promoted | rejected
    words: str                        # "... +0.0012 click AUC [-0.0010, +0.0034], not significant"
    primary: dict[str, Any]           # the primary comparison: task, metric, a, b, delta, lo, hi, p_value
    comparisons: dict[str, dict[str, Any]]  # "<task>/<metric>" -> the same, for every metric compared
    failed: list[str]                 # guardrails beyond their margin


def _gain(c: stats.Comparison, metric: str) -> tuple[float, float, float]:
    """(gain, lo, hi) with higher = better for the challenger (b)."""
    if stats.HIGHER_IS_BETTER[metric]:
        return c.delta, c.lo, c.hi
    return -c.delta, -c.hi, -c.lo


def delta_words(task: str, metric: str, c: Mapping[str, Any]) -> str:
    """``+0.0012 click AUC [-0.0010, +0.0034]``."""
    return f"{c['delta']:+.4f} {task} {_LABEL[metric]} [{c['lo']:+.4f}, {c['hi']:+.4f}]"


def p_words(p: float) -> str:
    """``p=0.28``, ``p=0.0031``, ``p<0.0001``."""
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def metric_words(metric: str) -> str:
    return _LABEL.get(metric, metric)


def _as_dict(task: str, c: stats.Comparison) -> dict[str, Any]:
    return {"task": task, "metric": c.metric, "a": c.a, "b": c.b, "delta": c.delta, "lo": c.lo, "hi": c.hi,
            "p_value": c.p_value}


def compare_tasks(labels: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, tasks: Sequence[str], metrics: Sequence[str],
                  users: Optional[np.ndarray], level: float) -> dict[str, dict[str, Any]]:
    """``{"<task>/<metric>": comparison}`` of b against a for every task and metric (rows: ``[N, n_task]``)."""
    out: dict[str, dict[str, Any]] = {}
    for i, task in enumerate(tasks):
        found = stats.compare_metrics(labels[:, i], p_a[:, i], p_b[:, i], list(metrics), users, level)
        out.update({f"{task}/{m}": _as_dict(task, c) for m, c in found.items()})
    return out


def judge_paired(labels: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, tasks: Sequence[str],
                 rule: PairedRule, users: Optional[np.ndarray] = None, champion: str = "the champion",
                 challenger: str = "the challenger") -> PairedVerdict:
    """The rule's verdict on the same validation rows (``labels`` / predictions: ``[N, n_task]``, classification
    tasks), in words naming ``champion`` and ``challenger`` (e.g. ``mmoe (v3)``)."""
    task, metric = rule.primary_of(tasks)
    comps = compare_tasks(labels, p_champion, p_challenger, tasks, rule.metrics(), users, rule.level)
    primary = comps[f"{task}/{metric}"]
    failed = []
    for t in tasks:
        for g in rule.guardrails:
            c = comps[f"{t}/{g}"]
            gain_hi = c["hi"] if stats.HIGHER_IS_BETTER[g] else -c["lo"]
            if math.isfinite(gain_hi) and gain_hi < -rule.margin(t, g):
                failed.append(f"{t} {_LABEL[g]} {c['delta']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}], worse than the "
                              f"{rule.margin(t, g):g} margin")
    gain_lo = primary["lo"] if stats.HIGHER_IS_BETTER[metric] else -primary["hi"]
    significant = math.isfinite(gain_lo) and gain_lo > 0
    head = f"{challenger} {delta_words(task, metric, primary)}"
    if significant and not failed:
        words = (f"{challenger} is now champion: {delta_words(task, metric, primary)} over {champion} "
                 f"({p_words(primary['p_value'])}), no task worse than its margin")
        return PairedVerdict(True, "promoted", words, primary, comps, failed)
    if failed:
        why = f"{head}" + ("" if significant else ", not significant") + "; " + "; ".join(failed)
    else:
        why = f"{head}, not significant ({p_words(primary['p_value'])})"
    return PairedVerdict(False, "rejected", f"kept {champion}: {why}", primary, comps, failed)


def separable(labels: np.ndarray, p_first: np.ndarray, p_second: np.ndarray, tasks: Sequence[str], rule: PairedRule,
              users: Optional[np.ndarray], first: str, second: str) -> tuple[bool, str]:
    """Whether a run's top candidate (``first``) is told apart from the runner-up on the primary metric, in words."""
    task, metric = rule.primary_of(tasks)
    c = compare_tasks(labels, p_second, p_first, tasks, [metric], users, rule.level)[f"{task}/{metric}"]
    up = stats.HIGHER_IS_BETTER[metric]
    ahead = math.isfinite(c["lo"]) and (c["lo"] > 0 if up else c["hi"] < 0)
    behind = math.isfinite(c["lo"]) and (c["hi"] < 0 if up else c["lo"] > 0)
    verb = ("is told apart from" if ahead else "scores worse, on the primary metric, than" if behind
            else "cannot be separated from")
    return ahead or behind, (f"{first}, the run's best by val_score, {verb} the runner-up {second} on the "
                             f"validation rows: {delta_words(task, metric, c)} ({p_words(c['p_value'])})")
