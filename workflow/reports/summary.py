"""The run's summary as a reader sees it: the models' test metrics with their 95 % intervals, the data's ceiling,
and the promotion decision in words (``workflow.steps.summary_step`` writes it)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .intervals import cell, is_bound

__all__ = ["summary_table", "describe_decision", "ceiling_metrics"]


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def _test_note(decision: Mapping[str, Any]) -> str:
    """The test scores the decision reports (never compared): `` (test_score: candidate 0.7012, champion 0.6990)``."""
    cand, champ = decision.get("candidate_test_score"), decision.get("champion_test_score")
    if not isinstance(cand, (int, float)) or decision.get("metric") == "test_score":
        return ""
    return f" (test_score, reported: candidate {_score(cand)}" + (
        f", champion {_score(champ)})" if isinstance(champ, (int, float)) else ")")


def _decision_words(decision: Mapping[str, Any], name: Any) -> str:
    cand, champ = decision.get("candidate_version"), decision.get("champion_version")
    if decision.get("words"):  # the paired rule says it in words itself
        return str(decision["words"])
    metric, margin = decision.get("metric", "val_score"), float(decision.get("margin") or 0.0)
    cs, hs = _score(decision.get("candidate_score")), _score(decision.get("champion_score"))
    kind = decision.get("decision")
    if kind == "no_champion":
        return f"{name(cand)} is now champion: there was none"
    if kind == "promoted":
        return f"{name(cand)} is now champion: {metric} {cs} >= {name(champ)}'s {hs} + margin {margin:g}"
    if kind == "rejected" and str(cand) == str(champ):
        return f"kept {name(champ)}: the run's best candidate already is the champion"
    if kind == "rejected":
        return f"kept {name(champ)}: {name(cand)} scored {metric} {cs} < {hs} + margin {margin:g}"
    if kind == "not_comparable":
        return f"kept {name(champ)}: {name(cand)} was scored on other data and the champion was not re-scored on it"
    if kind == "unscored":
        kept = f"kept {name(champ)}" if champ else "no champion"
        return f"{kept}: {name(cand)} has no {metric} (a validation metric is undefined, e.g. one class only)"
    current = decision.get("current_champion")
    return f"champion: {name(current)}" if current else "no champion"


def describe_decision(decision: Mapping[str, Any], architectures: Mapping[str, str]) -> str:
    """The promotion in plain words, models named by architecture and version, e.g. ``ple (v5) is now champion:
    there was none`` or ``kept mmoe (v3): ple (v5) scored val_score 0.6710 < 0.6750 + margin 0.002``, followed by
    the test scores the decision reports (selection and the guard use validation only)."""
    def name(version: Any) -> str:
        return f"{architectures.get(str(version), 'version')} (v{version})"

    words = _decision_words(decision, name)
    words += (_test_note(decision) if decision.get("decision") in ("promoted", "rejected", "no_champion",
                                                                   "not_comparable") else "")
    return words + (f". {decision['top_two']}" if decision.get("top_two") else "")


def ceiling_metrics(ceiling: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """The ceiling's metrics under the summary's column names (``<task>/<metric>``); empty without a ceiling."""
    return {f"{task}/{name}": float(v) for task, ms in (ceiling or {}).get("metrics", {}).items()
            for name, v in ms.items()}


def _is_headline(key: str) -> bool:
    """The first table's columns: each task's AUC (RMSE for regression)."""
    return key.endswith(("/auc", "/rmse"))


# column prefixes only some models have, and what they are
EXTRA_COLUMNS = {"cvr/": "ESMM's own CVR tower (conversion given a click), scored on the clicked test rows only; "
                            "the other models predict no such thing"}
SCORES = ("val_score", "test_score")  # val_score first: what promotion selects on


def _metric_rows(results: Mapping[str, Mapping[str, float]], keys: Sequence[str], scores: Sequence[str]) -> list[str]:
    head = ["model"] + list(scores) + list(keys)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    order = scores[0] if scores else "test_score"
    for model, m in sorted(results.items(), key=lambda kv: -kv[1].get(order, float("-inf"))):
        lines.append(_row(model, m, scores, keys))
    return lines


def _row(name: str, m: Mapping[str, float], scores: Sequence[str], keys: Sequence[str]) -> str:
    return "| " + " | ".join([name] + [f"{m[s]:.4f}" if s in m else "" for s in scores]
                             + [cell(m, k) for k in keys]) + " |"


BASELINE_NAMES = {"gbdt": "gbdt baseline (HistGradientBoosting)"}


def summary_table(results: Mapping[str, Mapping[str, float]], ceiling: Optional[Mapping[str, Any]] = None,
                  baselines: Optional[Mapping[str, Mapping[str, float]]] = None) -> list[str]:
    """Markdown rows: one per model (best val_score first, test_score where there is none), each task's AUC with
    its 95 % interval (``0.7129 [0.7061, 0.7197]``), then the ceiling row when the data has one; then, when the models report
    them, a second table of the other test metrics (GAUC, calibration, binned calibration error, logloss).
    ``baselines`` (e.g. ``gbdt``) get a row each after the models, named as baselines."""
    scores = [k for k in SCORES if any(k in m for m in results.values())]
    keys = sorted({k for m in results.values() for k in m if k not in SCORES and not is_bound(k)})
    headline = [k for k in keys if _is_headline(k)] or keys
    others = [k for k in keys if k not in headline]
    lines = _metric_rows(results, headline, scores)
    for name, m in (baselines or {}).items():  # after the models: a reference, not a candidate
        lines.append(_row(BASELINE_NAMES.get(name, f"{name} baseline"), m, scores, headline))
    flat = ceiling_metrics(ceiling)
    if flat:
        lines.append("| true probabilities (ceiling) | " + " | " * len(scores) + " | ".join(
            f"{flat[t]:.4f}" if t in flat else "" for t in headline) + " |")
        lines += ["", f"Ceiling: {ceiling.get('source', 'the true probabilities')}, on the same "
                      f"{ceiling.get('split', 'test')} rows: no model can expect to score above it."]
    if any(is_bound(k) for m in results.values() for k in m):
        lines += ["", "In brackets: the 95 % interval (AUC: DeLong; the others: a bootstrap of the test rows, of "
                      "the users for GAUC). Two models whose intervals overlap may still differ: `mtlp compare` "
                      "tests them on the same rows."]
    if others:
        lines += ["", "Within-user ranking (GAUC), calibration (mean prediction / mean label, 1 is calibrated), "
                      "binned calibration error (ece) and logloss, on the same test rows:", ""]
        lines += _metric_rows(results, others, [])
    notes = [f"`{col}*`: {why}." for col, why in EXTRA_COLUMNS.items() if any(k.startswith(col) for k in keys)]
    return lines + ([""] + notes if notes else [])
