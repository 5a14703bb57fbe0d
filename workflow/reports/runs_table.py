"""``mtlp runs``: the pipeline runs of one store side by side: each model's validation and test score, the version
it was registered as, and which version was champion after each run's promotion step (walked from the registered
model's audit, in order: a manual promotion or a rollback between runs counts for the runs after it)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from .. import registry, tracking

__all__ = ["PipelineRunRow", "collect", "render", "runs_report"]


@dataclass
class PipelineRunRow:
    name: str
    experiment: str
    status: str
    started: str
    registered_model: str
    models: list[dict[str, Any]] = field(default_factory=list)  # model, version, val_score, test_score
    champion_after: Optional[str] = None                        # the champion right after its promotion step
    champion_model: str = ""                                    # its architecture


def _registered_model(parent: Any, experiment: str) -> str:
    """The registered model a pipeline run registered into: its config's, else ``<experiment>-model``."""
    try:
        config = json.loads(parent.data.tags.get("mtlp.config", "{}"))
        return config.get("tracking", {}).get("registered_model") or f"{experiment}-model"
    except ValueError:
        return f"{experiment}-model"


def _champion_after_runs(client: Any, name: str, run_of: dict[str, str]) -> dict[str, str]:
    """pipeline run -> the champion right after its own promotion, walking the audit in order (manual moves and
    rollbacks between runs included). ``run_of``: version -> the pipeline run that registered it."""
    from mlflow.exceptions import MlflowException

    try:
        actions = registry.audit(client, name)
    except MlflowException:  # nothing registered yet (the first run is still training)
        return {}
    champion, after = None, {}
    for a in actions:
        if a.get("action") in ("manual_promote", "rollback") or a.get("decision") in ("promoted", "no_champion"):
            champion = str(a["version"])
        if a.get("action") == "promote" and str(a.get("version")) in run_of and champion is not None:
            after[run_of[str(a["version"])]] = champion
    return after


def _versions(client: Any, name: str) -> dict[tuple[str, str], str]:
    """(pipeline run, architecture) -> version, for every version of ``name``."""
    try:
        rows = registry.version_rows(client, name)
    except registry.RegistryError:
        return {}
    return {(r["pipeline_run"], r["model"]): r["version"] for r in rows}


def collect(client: Any, experiments: Optional[list[str]] = None) -> list[PipelineRunRow]:
    """Every pipeline run (oldest first) of ``experiments`` (default: every experiment of the store)."""
    exps = [e for e in tracking.retry_call(client.search_experiments)
            if experiments is None or e.name in experiments]
    rows: list[PipelineRunRow] = []
    versions: dict[str, dict] = {}
    for exp in exps:
        runs = [r for role in ("pipeline", "model") for r in tracking.retry_call(
            client.search_runs, [exp.experiment_id], max_results=50_000,
            filter_string=f"tags.`mtlp.role` = '{role}'", order_by=["attributes.start_time ASC"])]
        children: dict[str, list] = {}
        for r in runs:
            if r.data.tags.get("mtlp.role") == "model":
                children.setdefault(r.data.tags.get("mlflow.parentRunId", ""), []).append(r)
        for parent in (r for r in runs if r.data.tags.get("mtlp.role") == "pipeline"):
            name = _registered_model(parent, exp.name)
            if name not in versions:
                versions[name] = _versions(client, name)
            run_name = parent.data.tags.get("mtlp.pipeline_run_id", parent.info.run_name)
            row = PipelineRunRow(run_name, exp.name, parent.info.status, _when(parent.info.start_time), name)
            for child in sorted(children.get(parent.info.run_id, []),
                                key=lambda c: -c.data.metrics.get("val/score", -math.inf)):
                model = child.data.tags.get("mtlp.model_name", child.info.run_name)
                row.models.append({"model": model, "version": versions[name].get((run_name, model)),
                                   "val_score": child.data.metrics.get("val/score"),
                                   "test_score": child.data.metrics.get("test/score"), "status": child.info.status})
            rows.append(row)
    after = {name: _champion_after_runs(client, name, {v: run for (run, _), v in vs.items()})
             for name, vs in versions.items()}
    for row in rows:
        row.champion_after = after.get(row.registered_model, {}).get(row.name)
        archs = {v: arch for (_, arch), v in versions.get(row.registered_model, {}).items()}
        row.champion_model = archs.get(row.champion_after, "")
    return rows


def _when(ms: Optional[int]) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if ms else "?"


def _score(v: Optional[float]) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def render(rows: list[PipelineRunRow], champions: dict[str, Optional[str]]) -> str:
    """The table: a block per pipeline run, a line per model (best val_score first; ``*`` marks the version that
    was champion when the run ended), then the champion after the run."""
    if not rows:
        return "no pipeline runs in this store"
    lines = [f"{'pipeline run':<26} {'started (UTC)':<17} {'status':<9} {'model':<14} {'version':>7} "
             f"{'val_score':>9} {'test_score':>10}"]
    last_exp = None
    for row in rows:
        if row.experiment != last_exp:
            lines += ["", f"experiment {row.experiment} (registered model {row.registered_model})"]
            last_exp = row.experiment
        head = f"{row.name:<26} {row.started:<17} {row.status:<9}"
        for i, m in enumerate(row.models or [{"model": "(no model finished)"}]):
            mark = "*" if m.get("version") and m.get("version") == row.champion_after else " "
            version = f"v{m['version']}{mark}" if m.get("version") else "-" + mark
            lines.append(f"{head if i == 0 else ' ' * len(head)} {m['model']:<14} {version:>7} "
                         f"{_score(m.get('val_score')):>9} {_score(m.get('test_score')):>10}")
        champ = row.champion_after
        where = " (from this run)" if any(m.get("version") == champ for m in row.models) else " (from another run)"
        lines.append(f"{'':<54} champion after this run: "
                     + (f"{row.champion_model} (v{champ}){where}" if champ else "none (no promotion recorded)"))
    lines += [""] + [f"champion of {name} now: " + (f"v{v}" if v else "none") for name, v in champions.items()]
    lines.append("* = the version that was champion after the run's promotion; val_score selects, test_score is "
                 "reported")
    return "\n".join(lines)


def runs_report(client: Any, experiments: Optional[list[str]] = None) -> str:
    rows = collect(client, experiments)
    names = list(dict.fromkeys(r.registered_model for r in rows))
    return render(rows, {n: registry.champion_version(client, n) for n in names})
