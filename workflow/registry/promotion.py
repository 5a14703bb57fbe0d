"""Moving the ``champion`` alias: guarded promotion of a pipeline run's best candidate, manual promotion, rollback.

Guarded promotion selects on **validation** (``metric.val_score``: the run's best candidate) and compares by one
of two rules (``promotion.rule``):

- ``paired`` (the default): the champion and the candidate are scored on the current validation rows through
  their own logged models, and :func:`workflow.registry.rule.judge_paired` decides: the primary metric must
  improve with its paired interval excluding zero and no task may be worse than its margin. When a run has two
  or more candidates, its top two are compared the same way and the decision says whether they can be told apart.
- ``margin``: the candidate's recorded ``val_score`` must beat the champion's by more than zero and at least a
  margin on the same validation data (same data fingerprint).

The test score is never used to choose; it is reported beside the decision. Every action
records who asked, when and why; the champion's history (a JSON tag on the registered model) is what rollback
walks back. All of it runs under the promotion lock (:mod:`workflow.registry.lock`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from mtl_models.trainer import higher_is_better

from .lock import promotion_lock
from .rescore import NotComparable, Rows
from .rule import PairedRule, judge_paired, separable
from .versions import (CHAMPION, HISTORY_LIMIT, TAG, RegistryError, append_json_tag, candidate_score,
                       champion_history, champion_version, current_user, get_version, now, record, tag_version)

__all__ = ["PromotionDecision", "SELECT_METRIC", "REPORT_METRIC", "promote", "promote_best", "promote_version",
           "rollback"]

SELECT_METRIC = "val_score"   # what promotion chooses and guards on: validation
REPORT_METRIC = "test_score"  # what it reports beside the decision: test, never used to choose

Evaluate = Optional[Callable[[str], float]]


@dataclass
class PromotionDecision:
    promoted: bool
    decision: str              # promoted | rejected | not_comparable | no_champion
    reason: str
    model_name: str
    candidate_version: str
    candidate_score: float
    champion_version: Optional[str]
    champion_score: Optional[float]
    metric: str
    margin: float
    candidate_test_score: Optional[float] = None  # reported only (REPORT_METRIC), NaN / None when unknown
    champion_test_score: Optional[float] = None
    rule: str = "margin"
    words: Optional[str] = None        # the paired rule's decision in words (also the reason)
    comparisons: Optional[dict[str, Any]] = None  # "<task>/<metric>" -> delta, lo, hi, p_value (paired rule)
    top_two: Optional[str] = None      # whether the run's best two candidates can be told apart, in words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Verdict:
    decision: str
    promoted: bool
    why: str
    champion: Optional[str] = None
    champion_score: Optional[float] = None
    words: Optional[str] = None
    comparisons: Optional[dict[str, Any]] = None
    score: Optional[float] = None  # the candidate's primary metric on the rows (paired rule)


def _label(client: Any, name: str, version: Optional[str]) -> str:
    """``mmoe (v3)``: a version named by its architecture."""
    arch = get_version(client, name, version).tags.get(TAG["architecture"], "version") if version else "version"
    return f"{arch} (v{version})"


def _paired(client: Any, name: str, candidate: str, champ: str, rule: PairedRule, rows: Rows) -> _Verdict:
    """The paired rule on ``rows``: both versions scored through their own logged models."""
    who, held = _label(client, name, candidate), _label(client, name, champ)
    try:
        p_champ = rows.predict(f"models:/{name}/{champ}")
    except NotComparable as e:
        return _Verdict("not_comparable", False, f"kept {held}: it cannot be scored on the current validation rows "
                        f"({e}); the champion stays", champ, words=f"kept {held}: {e}")
    p_cand = rows.predict(f"models:/{name}/{candidate}")
    v = judge_paired(rows.labels, p_champ, p_cand, rows.tasks, rule, rows.users, champion=held, challenger=who)
    return _Verdict(v.decision, v.promoted, v.words, champ, float(v.primary["a"]), v.words, v.comparisons,
                    float(v.primary["b"]))


def _set_champion(client: Any, name: str, version: str, *, action: str, user: str, reason: str) -> None:
    """Move the alias and append to the champion history."""
    client.set_registered_model_alias(name, CHAMPION, version)
    append_json_tag(client, name, TAG["history"],
                    {"version": version, "at": now(), "by": user, "action": action, "reason": reason},
                    champion_history(client, name))


def _scored(client: Any, name: str, version: str, metric: str, evaluate: Evaluate) -> tuple[Any, float]:
    """The candidate version and its recorded ``metric`` (re-scored by ``evaluate`` when it has none; NaN
    when it has none and there is no evaluator, e.g. a validation split where a task has one class)."""
    candidate = get_version(client, name, version)
    score = candidate_score(candidate, metric)
    if math.isnan(score) and evaluate is not None:
        score = float(evaluate(f"models:/{name}/{version}"))
    return candidate, score


def _champion_score(client: Any, name: str, candidate: Any, champ: str, metric: str, evaluate: Evaluate
                    ) -> Optional[float]:
    """The champion's ``metric`` on the candidate's data: recorded when the fingerprints match, else re-scored."""
    champion = get_version(client, name, champ)
    fingerprint = candidate.tags.get(TAG["eval_data"])
    score = candidate_score(champion, metric) if fingerprint and fingerprint == champion.tags.get(TAG["eval_data"]) \
        else math.nan
    if math.isnan(score) and evaluate is not None:
        score = float(evaluate(f"models:/{name}/{champ}"))
    return None if math.isnan(score) else score


def _compare(metric: str, cand: float, champ: float, up: bool, margin: float) -> _Verdict:
    gain = (cand - champ) if up else (champ - cand)
    promoted = gain > 0 and gain >= margin
    why = (f"{metric}: candidate {cand:.6g} vs champion {champ:.6g}, gain {gain:.6g} "
           f"{'>=' if promoted else '<'} margin {margin:g}")
    return _Verdict("promoted" if promoted else "rejected", promoted, why, champion_score=champ)


def _judge(client: Any, name: str, candidate: Any, cand_score: float, metric: str, up: bool, margin: float,
           evaluate: Evaluate, paired: Optional[tuple[PairedRule, Optional[Rows]]] = None) -> _Verdict:
    champ = champion_version(client, name)
    if paired is not None and champ is not None and champ != str(candidate.version):
        rule, rows = paired
        if rows is None:
            return _Verdict("not_comparable", False, "the paired rule needs the validation rows to score both on; "
                            "the champion stays", champ)
        return _paired(client, name, str(candidate.version), champ, rule, rows)
    if math.isnan(cand_score):  # never replaced by test: an unscored candidate is not promoted
        return _Verdict("unscored", False, f"the candidate has no {metric} (tag {TAG['metric_prefix']}{metric}) and "
                        "no evaluator was given; the champion stays", champ)
    if champ is None:
        return _Verdict("no_champion", True, "no champion yet: the candidate becomes champion")
    if champ == str(candidate.version):
        return _Verdict("rejected", False, "the candidate already is the champion", champ, cand_score)
    champ_score = _champion_score(client, name, candidate, champ, metric, evaluate)
    if champ_score is None:
        return _Verdict("not_comparable", False, "the champion has no score on the candidate's data and no "
                        "evaluator was given; the champion stays", champ)
    verdict = _compare(metric, cand_score, champ_score, up, margin)
    verdict.champion = champ
    return verdict


def _primary_key(paired: Optional[PairedRule], rows: Rows) -> str:
    """``val/click/auc``: what the paired rule's scores in the decision are."""
    task, metric = (paired or PairedRule()).primary_of(rows.tasks)
    return f"{rows.split}/{task}/{metric}"


def _report(client: Any, name: str, version: Optional[str]) -> Optional[float]:
    """A version's recorded test score (reported, never compared); None without one."""
    if version is None:
        return None
    score = candidate_score(get_version(client, name, version), REPORT_METRIC)
    return None if math.isnan(score) else score


def _write(client: Any, d: PromotionDecision, user: str, reason: str) -> None:
    """The decision as tags on the candidate's version and as an entry of the model's audit."""
    champ_score = repr(d.champion_score) if d.champion_score is not None else "none"
    tag_version(client, d.model_name, d.candidate_version, {
        TAG["decision"]: d.decision, TAG["decision_reason"]: d.reason, TAG["candidate_score"]: repr(d.candidate_score),
        TAG["champion_score"]: champ_score, TAG["champion_version"]: d.champion_version or "none",
        TAG["metric"]: d.metric, TAG["margin"]: repr(float(d.margin)), TAG["by"]: user, TAG["at"]: now()})
    record(client, d.model_name, {
        "action": "promote", "decision": d.decision, "version": d.candidate_version, "previous": d.champion_version,
        "candidate_score": d.candidate_score, "champion_score": d.champion_score, "metric": d.metric,
        "margin": d.margin, "candidate_test_score": d.candidate_test_score,
        "champion_test_score": d.champion_test_score, "rule": d.rule, "by": user, "at": now(), "reason": reason})


def promote(client: Any, name: str, candidate_version: str | int, *, metric: str = SELECT_METRIC,
            margin: float = 0.0, greater_is_better: Optional[bool] = None, evaluate: Evaluate = None,
            user: Optional[str] = None, reason: str = "pipeline promotion", rule: str = "margin",
            paired: Optional[PairedRule] = None, rows: Optional[Rows] = None,
            top_two: Optional[str] = None) -> PromotionDecision:
    """Guarded promotion of ``candidate_version`` to ``champion``.

    ``rule="margin"``: compared on ``metric`` (validation by default); the champion's recorded score counts when
    its data fingerprint equals the candidate's; otherwise ``evaluate(models:/name/version)`` re-scores it; without
    ``evaluate`` the champion stays (``not_comparable``). ``rule="paired"``: both scored on ``rows`` (the current
    validation rows) and judged by ``paired`` (:class:`PairedRule`). No champion yet: the candidate becomes
    champion. Both test scores are reported in the decision.
    """
    if rule not in ("margin", "paired"):
        raise ValueError(f"promotion rule must be 'paired' or 'margin', got {rule!r}")
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    up = higher_is_better(metric) if greater_is_better is None else bool(greater_is_better)
    user, version = user or current_user(), str(candidate_version)
    with promotion_lock(client, name, user) as lock:
        for _attempt in range(3):
            candidate, score = _scored(client, name, version, metric, evaluate)
            verdict = _judge(client, name, candidate, score, metric, up, margin, evaluate,
                             (paired or PairedRule(), rows) if rule == "paired" else None)
            if verdict.promoted and champion_version(client, name) != verdict.champion:
                continue  # moved meanwhile by a writer that bypasses the lock: decide again against the new one
            lock.check()
            if verdict.promoted:
                _set_champion(client, name, version, action=verdict.decision, user=user, reason=reason)
            decision = PromotionDecision(
                verdict.promoted, verdict.decision, verdict.why, name, version,
                score if verdict.score is None else verdict.score, verdict.champion, verdict.champion_score,
                metric if verdict.comparisons is None else _primary_key(paired, rows), float(margin),
                _report(client, name, version),
                _report(client, name, verdict.champion), rule, verdict.words, verdict.comparisons, top_two)
            _write(client, decision, user, reason)
            return decision
    raise RegistryError(f"the champion of {name!r} kept changing during promotion; try again")


def promote_best(client: Any, name: str, versions: Sequence[str | int], *, metric: str = SELECT_METRIC,
                 margin: float = 0.0, greater_is_better: Optional[bool] = None, evaluate: Evaluate = None,
                 user: Optional[str] = None, reason: str = "pipeline promotion", rule: str = "margin",
                 paired: Optional[PairedRule] = None, rows: Optional[Rows] = None) -> PromotionDecision:
    """The best of one pipeline run's candidates by their ``metric`` tag (validation by default; test is never
    consulted) goes through :func:`promote`. With ``rows``, the best and the runner-up are compared on them
    (paired, on the primary metric) and the decision says whether they can be told apart (``top_two``)."""
    if not versions:
        raise RegistryError("no candidate versions to promote")
    up = higher_is_better(metric) if greater_is_better is None else bool(greater_is_better)
    scored = [(candidate_score(get_version(client, name, v), metric), str(v)) for v in versions]
    finite = sorted([s for s in scored if not math.isnan(s[0])] or scored, key=lambda s: s[0], reverse=up)
    best = finite[0][1]
    top_two = _top_two(client, name, finite, paired or PairedRule(), rows) if rows is not None else None
    return promote(client, name, best, metric=metric, margin=margin, greater_is_better=up, evaluate=evaluate,
                   user=user, reason=reason, rule=rule, paired=paired, rows=rows, top_two=top_two)


def _top_two(client: Any, name: str, ranked: Sequence[tuple[float, str]], rule: PairedRule, rows: Rows
             ) -> Optional[str]:
    """Words on whether the best candidate is told apart from the runner-up (None with one candidate)."""
    if len(ranked) < 2:
        return None
    (_, first), (_, second) = ranked[0], ranked[1]
    try:
        p1, p2 = (rows.predict(f"models:/{name}/{v}") for v in (first, second))
    except NotComparable:
        return None
    return separable(rows.labels, p1, p2, rows.tasks, rule, rows.users, _label(client, name, first),
                     _label(client, name, second))[1]


def promote_version(client: Any, name: str, version: str | int, *, reason: str, user: Optional[str] = None,
                    note: Optional[dict[str, Any]] = None) -> str:
    """Manual promotion (no guard): ``version`` becomes champion; returns the previous champion (or "none").
    ``note``: more to record in the audit entry (e.g. that it went against the validation scores)."""
    if not reason:
        raise RegistryError("a manual promotion needs a reason")
    user, version = user or current_user(), str(version)
    with promotion_lock(client, name, user) as lock:
        get_version(client, name, version)
        previous = champion_version(client, name)
        lock.check()
        _set_champion(client, name, version, action="manual", user=user, reason=reason)
        tag_version(client, name, version, {TAG["decision"]: "manual", TAG["decision_reason"]: reason,
                                            TAG["champion_version"]: previous or "none", TAG["by"]: user,
                                            TAG["at"]: now()})
        record(client, name, {"action": "manual_promote", "version": version, "previous": previous, "by": user,
                              "at": now(), "reason": reason, **dict(note or {})})
    return previous or "none"


def _rollback_target(client: Any, name: str) -> tuple[str, list[dict[str, Any]], str]:
    """(current champion, the history without its trailing entries of it, the version to restore)."""
    current = champion_version(client, name)
    if current is None:
        raise RegistryError(f"registered model {name!r} has no champion to roll back")
    remaining = list(champion_history(client, name))
    while remaining and str(remaining[-1]["version"]) == current:
        remaining.pop()
    if not remaining:
        raise RegistryError(f"registered model {name!r} has no earlier champion than version {current}")
    target = str(remaining[-1]["version"])
    get_version(client, name, target)
    return current, remaining, target


def rollback(client: Any, name: str, *, reason: str, user: Optional[str] = None) -> str:
    """Champion back to the one before it (per the champion history); returns the restored version."""
    import json

    if not reason:
        raise RegistryError("a rollback needs a reason")
    user = user or current_user()
    with promotion_lock(client, name, user) as lock:
        current, remaining, target = _rollback_target(client, name)
        lock.check()
        client.set_registered_model_alias(name, CHAMPION, target)
        # The rolled-back champion leaves the history, so a second rollback goes one step further back.
        remaining.append({"version": target, "at": now(), "by": user, "action": "rollback", "reason": reason,
                          "rolled_back": current})
        client.set_registered_model_tag(name, TAG["history"], json.dumps(_dedupe_tail(remaining)[-HISTORY_LIMIT:]))
        tag_version(client, name, current, {"mtlp.rollback.by": user, "mtlp.rollback.at": now(),
                                            "mtlp.rollback.reason": reason, "mtlp.rollback.restored": target})
        tag_version(client, name, target, {TAG["decision"]: "rollback", TAG["decision_reason"]: reason,
                                           TAG["champion_version"]: current, TAG["by"]: user, TAG["at"]: now()})
        record(client, name, {"action": "rollback", "version": target, "previous": current, "by": user,
                              "at": now(), "reason": reason})
    return target


def _dedupe_tail(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collapse consecutive entries of the same version (keep the latest record of it)."""
    out: list[dict[str, Any]] = []
    for h in history:
        if out and str(out[-1]["version"]) == str(h["version"]):
            out[-1] = h
        else:
            out.append(h)
    return out
