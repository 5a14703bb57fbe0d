"""``mtlp promote``: move the champion by hand, or roll it back, recording who asked, when and why.

    python -m workflow.registry.cli --model NAME --version V [--reason TEXT] [--force]
    python -m workflow.registry.cli --model NAME --rollback [--reason TEXT]
    python -m workflow.registry.cli --model NAME --show [--json]

The tracking store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the store the run folder ``--work-dir``
(``mtlp-runs/<run>``) logged to, else the runs root's shared ``mtlp-runs/mlflow.db``, else the newest run's own
store that holds ``--model`` (named on stderr). A folder without a store is an error: a new, empty store is never
created. A manual promotion of a version that scores lower on validation than the champion (same validation
data) is refused unless ``--force``, and then recorded in the audit as going against the scores.

Promotions of one model never overlap, on any backend: each takes the registry's promotion lock (a registered
model ``<name>.promotion-lock``, see ``workflow.registry``). A second promoter waits for it, up to
``MTLP_PROMOTION_LOCK_WAIT_S`` seconds (600); a lock whose holder died is broken once its heartbeat has not
moved for ``MTLP_PROMOTION_LOCK_STALE_S`` seconds (60), with a warning on stderr. ``--show`` names the holder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import cli_error

__all__ = ["main", "build_parser", "resolve_store"]

RUNS_ROOT = Path("mtlp-runs")
STORE_FILE = "mlflow.db"


def resolve_store(tracking_uri: Optional[str], work_dir: Optional[str], model: Optional[str] = None,
                  runs_root: str | Path = RUNS_ROOT) -> tuple[str, Optional[str]]:
    """(tracking URI, a note naming the store when it was guessed). Never creates a store.

    ``work_dir``: the store that run logged to (its ``tracking.json``, else its own ``mlflow.db``). Without any
    hint: the first store under ``runs_root`` that holds registered model ``model``: the runs root's shared
    ``mlflow.db`` first, then the runs' own stores, newest first (a failed run's empty store is passed over)."""
    import os

    from ..tracking.local_store import holds_registered_model, sqlite_path, store_of_run, stores_under
    from . import RegistryError

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    hint = "name a run folder with --work-dir mtlp-runs/<run>, or a server with --tracking-uri / MLFLOW_TRACKING_URI"
    if work_dir is not None:
        try:
            uri, _ = store_of_run(work_dir)
        except FileNotFoundError:
            raise RegistryError(f"no MLflow store in {work_dir} ({STORE_FILE} not found): {hint}") from None
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            raise RegistryError(f"{work_dir} logged to {db}, which does not exist: {hint}")
        return uri, None
    stores = stores_under(runs_root)
    if not stores:
        raise RegistryError(f"no MLflow store found (no {runs_root}/{STORE_FILE} or {runs_root}/<run>/{STORE_FILE} "
                            f"here): {hint}")
    holding = [db for db in stores if model is None or holds_registered_model(db, model)]
    if not holding:
        raise RegistryError(f"no store under {runs_root} holds registered model {model!r} (looked in "
                            f"{', '.join(str(db) for db in stores)}): {hint}")
    db = holding[0]
    note = None if db == Path(runs_root) / STORE_FILE else \
        f"using the store of the newest run holding {model}, {db.parent} (--work-dir picks another)"
    return f"sqlite:///{db.resolve()}", note


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlp promote", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="registered model name")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--version", help="version to make champion")
    action.add_argument("--rollback", action="store_true", help="restore the previous champion")
    action.add_argument("--show", action="store_true",
                        help="print every version (model, val/test scores, source run), the champion, the "
                             "challenger and the audit history")
    p.add_argument("--json", action="store_true", help="with --show: one JSON object instead of tables")
    p.add_argument("--force", action="store_true",
                   help="promote a version that scores lower on validation than the champion (recorded as such)")
    p.add_argument("--reason", default=None, help="why (recorded on the registry; default: 'manual via CLI')")
    p.add_argument("--user", default=None, help="who asks (default: $MTLP_USER or the login name)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI")
    p.add_argument("--work-dir", default=None,
                   help="run folder (mtlp-runs/<run>) whose store to use when no URI is given "
                        "(default: mtlp-runs/mlflow.db, else the newest run's store holding --model)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the tracking store")
    return p


def _score(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: not recorded


def _shown(client, name: str) -> dict:
    from .. import registry

    return {"model": name, "champion": registry.champion_version(client, name),
            "challenger": registry.challenger_version(client, name), "versions": registry.version_rows(client, name),
            "history": registry.champion_history(client, name), "audit": registry.audit(client, name),
            "promotion_lock": registry.promotion_lock_holder(client, name)}


def _audit_line(a: dict) -> str:
    what = {"promote": f"pipeline promotion of v{a.get('version')}: {a.get('decision')}",
            "manual_promote": f"manual promotion of v{a.get('version')}",
            "rollback": f"rollback to v{a.get('version')}"}.get(a.get("action"), f"{a.get('action')} v{a.get('version')}")
    scores = (f", {a.get('metric', 'val_score')} {_score(float(a['candidate_score']))}"
              + (f" vs {_score(float(a['champion_score']))}" if a.get("champion_score") is not None else "")
              if isinstance(a.get("candidate_score"), (int, float)) else "")
    against = " AGAINST the validation scores (--force)" if a.get("against_scores") else ""
    return (f"  {a.get('at', '?')}  {what}{scores}{against} (champion before: "
            f"{'v' + str(a['previous']) if a.get('previous') else 'none'}) by {a.get('by', '?')}: {a.get('reason', '')}")


def print_show(shown: dict, uri: str) -> None:
    """``--show`` for people: the versions as a table, then the audit, oldest first."""
    from ..tracking import mask_credentials

    def name(version) -> str:
        row = next((r for r in shown["versions"] if r["version"] == str(version)), None)
        return f"v{version} ({row['model']})" if row else (f"v{version}" if version else "none")

    lines = [f"registered model {shown['model']} in {mask_credentials(uri)}",
             f"champion: {name(shown['champion'])}; challenger (newest candidate): {name(shown['challenger'])}", "",
             f"  {'version':<8} {'model':<14} {'val_score':>9} {'test_score':>10}  {'pipeline run':<24} "
             f"{'MLflow run':<32}  aliases"]
    for r in shown["versions"]:
        lines.append(f"  {'v' + r['version']:<8} {r['model']:<14} {_score(r['val_score']):>9} "
                     f"{_score(r['test_score']):>10}  {r['pipeline_run'] or '-':<24} {r['run_id'] or '-':<32}  "
                     f"{', '.join(r['aliases'])}")
    lines += ["", f"audit ({len(shown['audit'])} actions, oldest first):"]
    lines += [_audit_line(a) for a in shown["audit"]] or ["  (none)"]
    lock = shown["promotion_lock"]
    lines += ["", f"promotion lock: {'held by ' + lock['owner'] + ' since ' + lock['acquired_at'] if lock else 'free'}"]
    print("\n".join(lines))


def _against_scores(client, name: str, version: str) -> Optional[dict]:
    """When ``version`` scores lower on validation than the champion on the same validation data:
    ``{"against_scores": True, ...}`` with both scores; None otherwise (higher, equal, unknown or other data)."""
    from .. import registry
    from .versions import get_version

    cand_v = get_version(client, name, version)  # an unknown version: one line naming it
    champ = registry.champion_version(client, name)
    if champ is None or champ == str(version):
        return None
    champ_v = get_version(client, name, champ)
    same_data = cand_v.tags.get(registry.TAG["eval_data"]) == champ_v.tags.get(registry.TAG["eval_data"])
    cand, held = (registry.candidate_score(v, registry.SELECT_METRIC) for v in (cand_v, champ_v))
    if not same_data or cand != cand or held != held or cand >= held:
        return None
    return {"against_scores": True, "metric": registry.SELECT_METRIC, "candidate_score": cand,
            "champion_score": held}


def _promote(client, args, reason: str) -> int:
    from .. import registry

    against = _against_scores(client, args.model, args.version)
    if against and not args.force:
        print(f"mtlp promote: error: version {args.version} scores {registry.SELECT_METRIC} "
              f"{against['candidate_score']:.4f} on validation, below the champion v"
              f"{registry.champion_version(client, args.model)}'s {against['champion_score']:.4f} on the same data: "
              "pass --force to promote it anyway (recorded as going against the scores)", file=sys.stderr)
        return 2
    previous = registry.promote_version(client, args.model, args.version, reason=reason, user=args.user, note=against)
    model = client.get_model_version(args.model, args.version).tags.get(registry.TAG["architecture"], "?")
    note = " (against the validation scores, as --force asked; recorded)" if against else ""
    print(f"{args.model}: champion is now version {args.version} ({model}) (was {previous}){note}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    if not logging.getLogger().handlers:  # the lock's warnings (a stale lock broken) reach stderr
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    from mlflow.exceptions import MlflowException

    from .. import registry
    from ..tracking import TrackingUnavailable, check_tracking_reachable, client_for

    try:
        uri, note = resolve_store(args.tracking_uri, args.work_dir, args.model)
        if note:
            print(f"mtlp promote: {note}", file=sys.stderr)
        check_tracking_reachable(uri, timeout=args.timeout)
        client = client_for(uri)
        reason = args.reason or "manual via CLI"
        if args.show:
            shown = _shown(client, args.model)
            if args.json:
                print(json.dumps(shown, indent=2, default=str))
            else:
                print_show(shown, uri)
            return 0
        if args.rollback:
            previous = registry.champion_version(client, args.model)
            restored = registry.rollback(client, args.model, reason=reason, user=args.user)
            print(f"{args.model}: champion rolled back from version {previous} to version {restored}")
            return 0
        return _promote(client, args, reason)
    except (registry.RegistryError, TrackingUnavailable, MlflowException) as e:
        return cli_error("mtlp promote", e)


if __name__ == "__main__":
    sys.exit(main())
