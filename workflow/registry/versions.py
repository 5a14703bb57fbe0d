"""Registered versions: every candidate a version with its scores as tags, ``challenger`` for the newest, and the
registered model's JSON history / audit tags that promotion and rollback append to."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import math
import os
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

__all__ = ["CHAMPION", "CHALLENGER", "TAG", "RegistryError", "register_candidate", "candidate_score",
           "data_fingerprint", "champion_version", "challenger_version", "champion_history", "current_user", "audit",
           "version_rows"]

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_LIMIT = 50

TAG = {
    "architecture": "mtlp.architecture",
    "pipeline_run_id": "mtlp.pipeline_run_id",
    "run_id": "mtlp.run_id",
    "eval_data": "mtlp.eval_data",            # fingerprint of the validation + test data the scores come from
    "metric_prefix": "metric.",               # metric.val_score, metric.test_score, metric.test/income/auc ...
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


def current_user() -> str:
    for getter in (lambda: os.environ.get("MTLP_USER"), getpass.getuser, lambda: os.environ.get("USER")):
        with contextlib.suppress(Exception):
            user = getter()
            if user:
                return user
    return "unknown"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def data_fingerprint(spec: Any) -> str:
    """Identifies the validation and test rows and labels (dataset, raw files' sha256, split rule with the
    validation fraction, options, seed, row counts): two versions with the same fingerprint were scored on the
    same data, so their recorded ``val_score`` (and ``test_score``) compare directly."""
    key = {"dataset": spec.dataset, "raw_sha256": spec.raw_sha256, "split": spec.split, "options": spec.options,
           "seed": spec.seed, "rows": {s: spec.rows.get(s) for s in ("val", "test")},
           "labels": [lb.to_dict() for lb in spec.labels]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # another process may have created it meanwhile
            client.create_registered_model(name, description="multi-task candidates of the mtlp pipeline")


def _score_tags(test_metrics: Mapping[str, Mapping[str, float]], test_score: float,
                val_score: Optional[float]) -> dict[str, str]:
    """``metric.test_score``, ``metric.test/<task>/<metric>`` and, when known and finite, ``metric.val_score``."""
    prefix = TAG["metric_prefix"]
    tags = {prefix + "test_score": repr(float(test_score))}
    if val_score is not None and math.isfinite(float(val_score)):
        tags[prefix + "val_score"] = repr(float(val_score))
    for task, values in test_metrics.items():
        for metric, value in values.items():
            tags[f"{prefix}test/{task}/{metric}"] = repr(float(value))
    return tags


def register_candidate(client: Any, name: str, model_uri: str, *, run_id: Optional[str], architecture: str,
                       test_metrics: Mapping[str, Mapping[str, float]], test_score: float,
                       val_score: Optional[float] = None, pipeline_run_id: Optional[str] = None,
                       eval_data_id: Optional[str] = None, extra_tags: Optional[Mapping[str, Any]] = None,
                       set_challenger: bool = True) -> Any:
    """Register ``model_uri`` (``models:/m-...`` from ``log_model`` or ``runs:/...``) as a new version of ``name``.

    Tags: architecture, pipeline run, source run, data fingerprint and the scores (:func:`_score_tags`);
    ``val_score`` selects and guards promotion, the test scores are reported. ``challenger`` moves here.
    """
    _ensure_registered_model(client, name)
    optional = {TAG["pipeline_run_id"]: pipeline_run_id, TAG["run_id"]: run_id, TAG["eval_data"]: eval_data_id}
    tags = {TAG["architecture"]: architecture, **_score_tags(test_metrics, test_score, val_score),
            **{k: v for k, v in optional.items() if v}, **{k: str(v) for k, v in (extra_tags or {}).items()}}
    model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id,
                                          description=f"{architecture} from pipeline run {pipeline_run_id}")
    if set_challenger:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def get_version(client: Any, name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"registered model {name!r} has no version {version}") from None


def _alias(client: Any, name: str, alias: str) -> Optional[str]:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_version(client: Any, name: str) -> Optional[str]:
    """The version the ``champion`` alias points at, or None."""
    return _alias(client, name, CHAMPION)


def challenger_version(client: Any, name: str) -> Optional[str]:
    """The version the ``challenger`` alias points at (the newest candidate), or None."""
    return _alias(client, name, CHALLENGER)


def model_tags(client: Any, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).tags or {})


def champion_history(client: Any, name: str) -> list[dict[str, Any]]:
    """Champion changes, oldest first: ``{"version", "at", "by", "action", "reason"}``."""
    raw = model_tags(client, name).get(TAG["history"])
    return json.loads(raw) if raw else []


def candidate_score(version: Any, metric: str) -> float:
    """The metric recorded on a version's ``metric.<metric>`` tag (NaN when missing)."""
    key = metric if metric.startswith(TAG["metric_prefix"]) else TAG["metric_prefix"] + metric
    with contextlib.suppress(KeyError, ValueError, TypeError):
        return float(version.tags[key])
    return math.nan


def append_json_tag(client: Any, name: str, key: str, entry: Mapping[str, Any], existing: list) -> list:
    items = (list(existing) + [dict(entry)])[-HISTORY_LIMIT:]
    client.set_registered_model_tag(name, key, json.dumps(items))
    return items


def record(client: Any, name: str, action: Mapping[str, Any]) -> None:
    """Append ``action`` to the registered model's audit tag and make it the last action."""
    audit = json.loads(model_tags(client, name).get(TAG["audit"], "[]"))
    append_json_tag(client, name, TAG["audit"], action, audit)
    client.set_registered_model_tag(name, TAG["last_action"], json.dumps(dict(action)))


def tag_version(client: Any, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, version, key, str(value))


def audit(client: Any, name: str) -> list[dict[str, Any]]:
    """Every recorded action on ``name`` (promotions, manual promotions, rollbacks), oldest first: unlike the
    champion history, nothing is dropped by a rollback (only the oldest beyond the last 50)."""
    raw = model_tags(client, name).get(TAG["audit"])
    return json.loads(raw) if raw else []


def version_rows(client: Any, name: str) -> list[dict[str, Any]]:
    """One row per version of ``name``, newest first: version, model (architecture), val_score and test_score
    (NaN when not recorded), the pipeline run and MLflow run it came from, its aliases, its last decision."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        raise RegistryError(f"registered model {name!r} not found in this store") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    escaped = name.replace("'", "\\'")
    rows = []
    for v in client.search_model_versions(f"name='{escaped}'", max_results=10_000):
        rows.append({"version": str(v.version), "model": v.tags.get(TAG["architecture"], "?"),
                     "val_score": candidate_score(v, "val_score"), "test_score": candidate_score(v, "test_score"),
                     "pipeline_run": v.tags.get(TAG["pipeline_run_id"], ""), "run_id": v.run_id or "",
                     "aliases": sorted(by_version.get(str(v.version), [])),
                     "decision": v.tags.get(TAG["decision"], "")})
    return sorted(rows, key=lambda r: -int(r["version"]))
