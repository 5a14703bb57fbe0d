"""Model registry: every candidate a version, ``challenger`` for the newest, ``champion`` only through promotion.

Guarded promotion: a candidate replaces the champion only when it beats it on the same test data by at least
a margin on a configurable metric; the decision and both scores are written as tags on the candidate's version.
Manual promotion and rollback record who asked, when and why. The champion's history (a JSON tag on the
registered model) is what rollback walks back.

Promotions are serialised per registered model by a mutex that lives in the registry itself, so it holds for
any backend (embedded SQLite, an ``mlflow server`` on PostgreSQL) and across processes and hosts: the lock is a
registered model ``<name>.promotion-lock``. Creating a registered model whose name exists fails with
``RESOURCE_ALREADY_EXISTS`` (the name is the table's primary key), so exactly one promoter creates it; it is
deleted on release. Its tags say who holds it (``mtlp.lock.owner``: user@host:pid, ``mtlp.lock.acquired_at``)
and a heartbeat (``mtlp.lock.heartbeat``) that the holder refreshes every quarter of the stale timeout. A waiter
that sees the same holder and heartbeat for ``MTLP_PROMOTION_LOCK_STALE_S`` seconds (default 60, measured on its
own clock) breaks the lock by renaming it to ``<name>.promotion-lock.broken-<token>``: a rename is one atomic
statement and the target name is unique to that holder, so of several waiters breaking the same stale lock only
one succeeds, and none can rename a newer lock by mistake. The renamed lock stays in the registry as the record
of a promoter that died holding it (delete it once read). A waiter gives up after ``MTLP_PROMOTION_LOCK_WAIT_S``
seconds (default 600). Under the lock the audit and champion-history tags are read-modify-write safely; the
holder checks it still holds the lock right before writing.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from mtl_models.trainer import higher_is_better

__all__ = [
    "CHAMPION", "CHALLENGER", "TAG", "PromotionDecision", "RegistryError", "register_candidate", "candidate_score",
    "promote", "promote_best", "promote_version", "rollback", "champion_version", "challenger_version", "champion_history",
    "current_user", "PromotionLock", "PromotionLockError", "LOCK_SUFFIX",
    "promotion_lock_holder",
]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_LIMIT = 50

TAG = {
    "architecture": "mtlp.architecture",
    "pipeline_run_id": "mtlp.pipeline_run_id",
    "run_id": "mtlp.run_id",
    "test_data": "mtlp.test_data",            # fingerprint of the test data the metrics were computed on
    "metric_prefix": "metric.",               # metric.test_score, metric.test/income/auc ...
    "decision": "mtlp.promotion.decision",    # promoted | rejected | not_comparable | manual | rollback
    "decision_reason": "mtlp.promotion.reason",
    "candidate_score": "mtlp.promotion.candidate_score",
    "champion_score": "mtlp.promotion.champion_score",
    "champion_version": "mtlp.promotion.champion_version",
    "metric": "mtlp.promotion.metric",
    "margin": "mtlp.promotion.margin",
    "by": "mtlp.promotion.by",
    "at": "mtlp.promotion.at",
    "history": "mtlp.champion_history",       # on the registered model: JSON list, oldest first
    "audit": "mtlp.audit",                    # on the registered model: JSON list of actions, oldest first
    "last_action": "mtlp.last_action",
}


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, nothing to roll back to...)."""


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_user() -> str:
    for getter in (lambda: os.environ.get("MTLP_USER"), getpass.getuser, lambda: os.environ.get("USER")):
        with contextlib.suppress(Exception):
            user = getter()
            if user:
                return user
    return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # another process may have created it meanwhile
            client.create_registered_model(name, description="multi-task candidates of the mtlp pipeline")


def register_candidate(client: Any, name: str, model_uri: str, *, run_id: Optional[str], architecture: str,
                       test_metrics: Mapping[str, Mapping[str, float]], test_score: float,
                       pipeline_run_id: Optional[str], test_data_id: Optional[str] = None,
                       extra_tags: Optional[Mapping[str, Any]] = None, set_challenger: bool = True) -> Any:
    """Register ``model_uri`` (``models:/m-...`` from ``log_model`` or ``runs:/...``) as a new version of ``name``.

    Tags: architecture, pipeline run, source run, test-data fingerprint, ``metric.test_score`` and
    ``metric.test/<task>/<metric>``. ``challenger`` moves to this version (the newest candidate).
    """
    _ensure_registered_model(client, name)
    tags: dict[str, str] = {TAG["architecture"]: architecture, TAG["metric_prefix"] + "test_score": repr(float(test_score))}
    for task, values in test_metrics.items():
        for metric, value in values.items():
            tags[f"{TAG['metric_prefix']}test/{task}/{metric}"] = repr(float(value))
    if pipeline_run_id:
        tags[TAG["pipeline_run_id"]] = pipeline_run_id
    if run_id:
        tags[TAG["run_id"]] = run_id
    if test_data_id:
        tags[TAG["test_data"]] = test_data_id
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id,
                                          description=f"{architecture} from pipeline run {pipeline_run_id}")
    if set_challenger:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def _version(client: Any, name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"registered model {name!r} has no version {version}") from None


def champion_version(client: Any, name: str) -> Optional[str]:
    """The version the ``champion`` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def challenger_version(client: Any, name: str) -> Optional[str]:
    """The version the ``challenger`` alias points at (the newest candidate), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHALLENGER).version)
    except MlflowException:
        return None


def _model_tags(client: Any, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).tags or {})


def champion_history(client: Any, name: str) -> list[dict[str, Any]]:
    """Champion changes, oldest first: ``{"version", "at", "by", "action", "reason"}``."""
    raw = _model_tags(client, name).get(TAG["history"])
    return json.loads(raw) if raw else []


def candidate_score(version: Any, metric: str) -> float:
    """The metric recorded on a version's ``metric.<metric>`` tag (NaN when missing)."""
    key = metric if metric.startswith(TAG["metric_prefix"]) else TAG["metric_prefix"] + metric
    with contextlib.suppress(KeyError, ValueError, TypeError):
        return float(version.tags[key])
    return math.nan


_THREAD_LOCK = threading.Lock()

LOCK_SUFFIX = ".promotion-lock"
LOCK_STALE_ENV = "MTLP_PROMOTION_LOCK_STALE_S"
LOCK_WAIT_ENV = "MTLP_PROMOTION_LOCK_WAIT_S"
LOCK_TAG = {"token": "mtlp.lock.token", "owner": "mtlp.lock.owner", "acquired_at": "mtlp.lock.acquired_at",
            "heartbeat": "mtlp.lock.heartbeat", "model": "mtlp.lock.model", "broken_by": "mtlp.lock.broken_by",
            "broken_at": "mtlp.lock.broken_at"}
# MLflow errors that are the request's fault, not contention: waiting will not help
_FATAL_CODES = {"PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_PARAMETER_VALUE", "ENDPOINT_NOT_FOUND"}


class PromotionLockError(RegistryError):
    """The promotion lock could not be taken in time, or was lost while held."""


def _env_seconds(key: str, default: float) -> float:
    raw = os.environ.get(key, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise RegistryError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise RegistryError(f"{key} must be > 0, got {raw!r}")
    return value


def _now_precise() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class PromotionLock:
    """A mutex on one registered model's promotions, kept in the registry (see the module docstring).

    ``stale_after``: seconds without a heartbeat after which a waiter breaks the lock (``$MTLP_PROMOTION_LOCK_STALE_S``,
    60); ``wait``: seconds a waiter waits before :class:`PromotionLockError` (``$MTLP_PROMOTION_LOCK_WAIT_S``, 600).
    """

    def __init__(self, client: Any, name: str, *, stale_after: Optional[float] = None, wait: Optional[float] = None,
                 poll: float = 0.2, user: Optional[str] = None) -> None:
        self.client = client
        self.model = name
        self.name = name + LOCK_SUFFIX
        self.stale_after = stale_after if stale_after is not None else _env_seconds(LOCK_STALE_ENV, 60.0)
        self.wait = wait if wait is not None else _env_seconds(LOCK_WAIT_ENV, 600.0)
        self.poll = poll
        self.token = uuid.uuid4().hex
        self.owner = f"{user or current_user()}@{socket.gethostname()}:{os.getpid()}"
        self.broken: list[str] = []  # names of the stale locks this instance broke
        self._held = False
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    # -- state ---------------------------------------------------------------------------------------------
    def _state(self) -> Optional[dict[str, str]]:
        """The lock's tags, or None when nobody holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(self.name).tags or {})
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _try_create(self) -> bool:
        from mlflow.exceptions import MlflowException

        now = _now_precise()
        tags = {LOCK_TAG["token"]: self.token, LOCK_TAG["owner"]: self.owner, LOCK_TAG["acquired_at"]: now,
                LOCK_TAG["heartbeat"]: now, LOCK_TAG["model"]: self.model}
        try:
            self.client.create_registered_model(
                self.name, tags=tags, description=f"promotion lock of {self.model!r} (workflow.registry); "
                                                  "deleted when the promotion ends")
            return True
        except MlflowException as e:
            if e.error_code in _FATAL_CODES:
                raise
            return False  # RESOURCE_ALREADY_EXISTS, or contention on the store: look and retry

    # -- acquire / release ---------------------------------------------------------------------------------
    def acquire(self) -> "PromotionLock":
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.wait
        seen: Optional[tuple] = None
        seen_since = time.monotonic()
        while True:
            if self._try_create():
                break
            try:
                state = self._state()
            except MlflowException as e:
                if e.error_code in _FATAL_CODES:
                    raise
                state = {}  # unreadable for now: keep waiting
            if state is None and time.monotonic() <= deadline:
                time.sleep(self.poll / 10)
                continue  # released meanwhile: try again at once
            state = state or {}
            if state.get(LOCK_TAG["token"]) == self.token:
                break  # our create went through although its answer was lost (a retried request)
            key = (state.get(LOCK_TAG["token"]), state.get(LOCK_TAG["heartbeat"]))
            if key != seen:
                if seen is None and state:
                    log.info("promotion lock of %r is held by %s since %s; waiting", self.model,
                             state.get(LOCK_TAG["owner"]), state.get(LOCK_TAG["acquired_at"]))
                seen, seen_since = key, time.monotonic()
            elif state and time.monotonic() - seen_since >= self.stale_after:
                self._break(state, time.monotonic() - seen_since)
                seen = None
                continue
            if time.monotonic() > deadline:
                raise PromotionLockError(
                    f"could not take the promotion lock of {self.model!r} within {self.wait:.0f} s: held by "
                    f"{state.get(LOCK_TAG['owner'], '?')} since {state.get(LOCK_TAG['acquired_at'], '?')} "
                    f"(registered model {self.name!r}; set {LOCK_WAIT_ENV} to wait longer)")
            time.sleep(self.poll * (0.5 + random.random()))
        self._held = True
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"promotion-lock-{self.model}", daemon=True)
        self._beat.start()
        return self

    def _break(self, state: Mapping[str, str], silent_for: float) -> None:
        """Rename the stale lock to a name unique to its holder: atomic, and at most once per holder."""
        from mlflow.exceptions import MlflowException

        stale_token = state.get(LOCK_TAG["token"], "unknown")
        tomb = f"{self.name}.broken-{stale_token}"
        try:
            self.client.rename_registered_model(self.name, tomb)
        except MlflowException:
            return  # another waiter broke it first (or it was released): look again
        renamed = self._tags_of(tomb)
        if renamed.get(LOCK_TAG["token"]) != stale_token:  # not the lock we judged stale: put it back
            with contextlib.suppress(MlflowException):
                self.client.rename_registered_model(tomb, self.name)
            return
        with contextlib.suppress(MlflowException):
            self.client.set_registered_model_tag(tomb, LOCK_TAG["broken_by"], self.owner)
            self.client.set_registered_model_tag(tomb, LOCK_TAG["broken_at"], _now_precise())
        self.broken.append(tomb)
        log.warning("broke the stale promotion lock of %r held by %s since %s: no heartbeat for %.1f s "
                    "(stale after %.0f s, %s); kept as registered model %r", self.model,
                    state.get(LOCK_TAG["owner"], "?"), state.get(LOCK_TAG["acquired_at"], "?"), silent_for,
                    self.stale_after, LOCK_STALE_ENV, tomb)

    def _tags_of(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            return dict(self.client.get_registered_model(name).tags or {})
        return {}

    def _heartbeat(self) -> None:
        from mlflow.exceptions import MlflowException

        interval = max(self.stale_after / 4.0, 0.2)
        while not self._stop.wait(interval):
            try:
                state = self._state()
                if state is None or state.get(LOCK_TAG["token"]) != self.token:
                    self._lost = (f"the promotion lock of {self.model!r} was broken while held (this process was "
                                  f"silent for more than {self.stale_after:.0f} s?)")
                    log.error(self._lost)
                    return
                self.client.set_registered_model_tag(self.name, LOCK_TAG["heartbeat"], _now_precise())
            except MlflowException as e:  # a missed beat is not fatal; several in a row make the lock stale
                log.warning("promotion lock heartbeat failed: %s", e.message)

    def check(self) -> None:
        """Raise :class:`PromotionLockError` unless this process still holds the lock (call before writing)."""
        if self._lost is None:
            state = self._state()
            if state is None or state.get(LOCK_TAG["token"]) != self.token:
                self._lost = f"the promotion lock of {self.model!r} is no longer held by this process"
        if self._lost is not None:
            raise PromotionLockError(self._lost + "; nothing was written, try again")

    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        try:
            state = self._state()
            if state is not None and state.get(LOCK_TAG["token"]) == self.token:
                self.client.delete_registered_model(self.name)
            else:
                log.warning("promotion lock of %r was no longer ours at release (broken as stale?)", self.model)
        except MlflowException as e:
            log.warning("could not release the promotion lock of %r: %s (it goes stale after %.0f s)", self.model,
                        e.message, self.stale_after)

    def __enter__(self) -> "PromotionLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def promotion_lock_holder(client: Any, name: str) -> Optional[dict[str, str]]:
    """Who holds the promotion lock of ``name`` now (``owner``, ``acquired_at``, ``heartbeat``), or None."""
    state = PromotionLock(client, name, stale_after=1, wait=1)._state()
    if state is None:
        return None
    return {k: state.get(LOCK_TAG[k], "") for k in ("owner", "acquired_at", "heartbeat")}


@contextlib.contextmanager
def _promotion_lock(client: Any, name: str, user: Optional[str] = None) -> Iterator[PromotionLock]:
    """One promotion of ``name`` at a time: a thread lock in this process, the registry mutex across processes."""
    with _THREAD_LOCK, PromotionLock(client, name, user=user) as lock:
        yield lock


def _append_json_tag(client: Any, name: str, key: str, entry: Mapping[str, Any], existing: list) -> list:
    items = (list(existing) + [dict(entry)])[-HISTORY_LIMIT:]
    client.set_registered_model_tag(name, key, json.dumps(items))
    return items


def _record(client: Any, name: str, action: Mapping[str, Any]) -> None:
    tags = _model_tags(client, name)
    audit = json.loads(tags.get(TAG["audit"], "[]"))
    _append_json_tag(client, name, TAG["audit"], action, audit)
    client.set_registered_model_tag(name, TAG["last_action"], json.dumps(dict(action)))


def _set_champion(client: Any, name: str, version: str, *, action: str, user: str, reason: str) -> None:
    """Move the alias and append to the champion history."""
    client.set_registered_model_alias(name, CHAMPION, version)
    history = champion_history(client, name)
    _append_json_tag(client, name, TAG["history"],
                     {"version": version, "at": _now(), "by": user, "action": action, "reason": reason}, history)


def _tag_version(client: Any, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, version, key, str(value))


def promote(client: Any, name: str, candidate_version: str | int, *, metric: str = "test_score",
            margin: float = 0.0, greater_is_better: Optional[bool] = None,
            evaluate: Optional[Callable[[str], float]] = None, user: Optional[str] = None,
            reason: str = "pipeline promotion") -> PromotionDecision:
    """Guarded promotion of ``candidate_version`` to ``champion``.

    The candidate wins when it is better than the champion by more than zero and at least ``margin`` on
    ``metric``, both measured on the same test data: the champion's recorded score is used when its
    ``mtlp.test_data`` fingerprint equals the candidate's; otherwise ``evaluate(models:/name/version)`` re-scores
    the champion on the candidate's test data; without ``evaluate`` the champion stays (``not_comparable``).
    No champion yet: the candidate becomes champion. The decision and both scores are tagged on the candidate.
    """
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    up = higher_is_better(metric) if greater_is_better is None else bool(greater_is_better)
    user = user or current_user()
    candidate_version = str(candidate_version)
    with _promotion_lock(client, name, user) as lock:
        for _attempt in range(3):
            candidate = _version(client, name, candidate_version)
            cand_score = candidate_score(candidate, metric)
            if math.isnan(cand_score):
                if evaluate is None:
                    raise RegistryError(f"version {candidate_version} of {name!r} has no tag "
                                        f"{TAG['metric_prefix']}{metric} and no evaluator was given")
                cand_score = float(evaluate(f"models:/{name}/{candidate_version}"))
            champ = champion_version(client, name)
            champ_score: Optional[float] = None
            if champ is None:
                decision, promoted, why = "no_champion", True, "no champion yet: the candidate becomes champion"
            elif champ == candidate_version:
                decision, promoted, why = "rejected", False, "the candidate already is the champion"
                champ_score = cand_score
            else:
                champion = _version(client, name, champ)
                same_data = (candidate.tags.get(TAG["test_data"]) is not None
                             and candidate.tags.get(TAG["test_data"]) == champion.tags.get(TAG["test_data"]))
                if same_data:
                    champ_score = candidate_score(champion, metric)
                if (champ_score is None or math.isnan(champ_score)) and evaluate is not None:
                    champ_score = float(evaluate(f"models:/{name}/{champ}"))
                if champ_score is None or math.isnan(champ_score):
                    decision, promoted = "not_comparable", False
                    why = ("the champion has no score on the candidate's test data and no evaluator was given; "
                           "the champion stays")
                else:
                    gain = (cand_score - champ_score) if up else (champ_score - cand_score)
                    promoted = gain > 0 and gain >= margin
                    decision = "promoted" if promoted else "rejected"
                    why = (f"{metric}: candidate {cand_score:.6g} vs champion {champ_score:.6g}, "
                           f"gain {gain:.6g} {'>=' if promoted else '<'} margin {margin:g}"
                           + ("" if gain > 0 or not promoted else " (no gain)"))
            if promoted and champion_version(client, name) != champ:
                continue  # moved meanwhile by a writer that bypasses the lock: decide again against the new one
            lock.check()
            if promoted:
                _set_champion(client, name, candidate_version, action=decision, user=user, reason=reason)
            result = PromotionDecision(promoted=promoted, decision=decision, reason=why, model_name=name,
                                       candidate_version=candidate_version, candidate_score=cand_score,
                                       champion_version=champ, champion_score=champ_score, metric=metric,
                                       margin=float(margin))
            _tag_version(client, name, candidate_version, {
                TAG["decision"]: decision, TAG["decision_reason"]: why, TAG["candidate_score"]: repr(cand_score),
                TAG["champion_score"]: repr(champ_score) if champ_score is not None else "none",
                TAG["champion_version"]: champ or "none", TAG["metric"]: metric, TAG["margin"]: repr(float(margin)),
                TAG["by"]: user, TAG["at"]: _now()})
            _record(client, name, {"action": "promote", "decision": decision, "version": candidate_version,
                                   "previous": champ, "candidate_score": cand_score, "champion_score": champ_score,
                                   "metric": metric, "margin": margin, "by": user, "at": _now(), "reason": reason})
            return result
    raise RegistryError(f"the champion of {name!r} kept changing during promotion; try again")


def promote_best(client: Any, name: str, versions: Sequence[str | int], *, metric: str = "test_score",
                 margin: float = 0.0, greater_is_better: Optional[bool] = None,
                 evaluate: Optional[Callable[[str], float]] = None, user: Optional[str] = None,
                 reason: str = "pipeline promotion") -> PromotionDecision:
    """The best of one pipeline run's candidates (by their ``metric`` tag) goes through :func:`promote`."""
    if not versions:
        raise RegistryError("no candidate versions to promote")
    up = higher_is_better(metric) if greater_is_better is None else bool(greater_is_better)
    scored = [(candidate_score(_version(client, name, v), metric), str(v)) for v in versions]
    finite = [s for s in scored if not math.isnan(s[0])] or scored
    best = (max if up else min)(finite, key=lambda s: s[0])[1]
    return promote(client, name, best, metric=metric, margin=margin, greater_is_better=up, evaluate=evaluate,
                   user=user, reason=reason)


def promote_version(client: Any, name: str, version: str | int, *, reason: str, user: Optional[str] = None) -> str:
    """Manual promotion (no guard): ``version`` becomes champion; returns the previous champion (or "none")."""
    if not reason:
        raise RegistryError("a manual promotion needs a reason")
    user = user or current_user()
    version = str(version)
    with _promotion_lock(client, name, user) as lock:
        _version(client, name, version)
        previous = champion_version(client, name)
        lock.check()
        _set_champion(client, name, version, action="manual", user=user, reason=reason)
        _tag_version(client, name, version, {TAG["decision"]: "manual", TAG["decision_reason"]: reason,
                                             TAG["champion_version"]: previous or "none", TAG["by"]: user,
                                             TAG["at"]: _now()})
        _record(client, name, {"action": "manual_promote", "version": version, "previous": previous, "by": user,
                               "at": _now(), "reason": reason})
    return previous or "none"


def rollback(client: Any, name: str, *, reason: str, user: Optional[str] = None) -> str:
    """Champion back to the one before it (per the champion history); returns the restored version."""
    if not reason:
        raise RegistryError("a rollback needs a reason")
    user = user or current_user()
    with _promotion_lock(client, name, user) as lock:
        current = champion_version(client, name)
        if current is None:
            raise RegistryError(f"registered model {name!r} has no champion to roll back")
        history = champion_history(client, name)
        remaining = list(history)
        while remaining and str(remaining[-1]["version"]) == current:
            remaining.pop()
        if not remaining:
            raise RegistryError(f"registered model {name!r} has no earlier champion than version {current}")
        target = str(remaining[-1]["version"])
        _version(client, name, target)
        lock.check()
        client.set_registered_model_alias(name, CHAMPION, target)
        # The rolled-back champion leaves the history, so a second rollback goes one step further back.
        remaining.append({"version": target, "at": _now(), "by": user, "action": "rollback", "reason": reason,
                          "rolled_back": current})
        client.set_registered_model_tag(name, TAG["history"], json.dumps(_dedupe_tail(remaining)[-HISTORY_LIMIT:]))
        _tag_version(client, name, current, {"mtlp.rollback.by": user, "mtlp.rollback.at": _now(),
                                             "mtlp.rollback.reason": reason, "mtlp.rollback.restored": target})
        _tag_version(client, name, target, {TAG["decision"]: "rollback", TAG["decision_reason"]: reason,
                                            TAG["champion_version"]: current, TAG["by"]: user, TAG["at"]: _now()})
        _record(client, name, {"action": "rollback", "version": target, "previous": current, "by": user,
                               "at": _now(), "reason": reason})
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
