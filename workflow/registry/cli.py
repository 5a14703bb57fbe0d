"""``mtlp promote``: move the champion by hand, or roll it back, recording who asked, when and why.

    python -m workflow.registry.cli --model NAME --version V [--reason TEXT]
    python -m workflow.registry.cli --model NAME --rollback [--reason TEXT]
    python -m workflow.registry.cli --model NAME --show

The tracking store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store of the run
folder ``--work-dir`` (``mtlp-runs/<run>``), else that of the newest run under ``./mtlp-runs`` (named on stderr).
A folder without ``mlflow.db`` is an error: a new, empty store is never created.

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

__all__ = ["main", "build_parser", "find_local_store", "resolve_store"]

RUNS_ROOT = Path("mtlp-runs")
STORE_FILE = "mlflow.db"


def find_local_store(runs_root: str | Path = RUNS_ROOT) -> Optional[Path]:
    """The newest run folder under ``runs_root`` that holds an MLflow store (by the store's last change), or None."""
    stores = sorted(Path(runs_root).glob(f"*/{STORE_FILE}"), key=lambda p: p.stat().st_mtime)
    return stores[-1].parent if stores else None


def resolve_store(tracking_uri: Optional[str], work_dir: Optional[str],
                  runs_root: str | Path = RUNS_ROOT) -> tuple[str, Optional[str]]:
    """(tracking URI, a note naming the store when it was guessed). Never creates a store: an explicit folder must
    hold ``mlflow.db``, and without any hint the newest run's store is used."""
    import os

    from . import RegistryError

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    hint = "name a run folder with --work-dir mtlp-runs/<run>, or a server with --tracking-uri / MLFLOW_TRACKING_URI"
    if work_dir is not None:
        store = Path(work_dir) / STORE_FILE
        if not store.is_file():
            raise RegistryError(f"no MLflow store in {work_dir} ({STORE_FILE} not found): {hint}")
        return f"sqlite:///{store.resolve()}", None
    folder = find_local_store(runs_root)
    if folder is None:
        raise RegistryError(f"no MLflow store found (no {runs_root}/<run>/{STORE_FILE} here): {hint}")
    note = f"using the store of the newest run, {folder} (--work-dir picks another)"
    return f"sqlite:///{(folder / STORE_FILE).resolve()}", note


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlp promote", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="registered model name")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--version", help="version to make champion")
    action.add_argument("--rollback", action="store_true", help="restore the previous champion")
    action.add_argument("--show", action="store_true", help="print the champion, challenger and history")
    p.add_argument("--reason", default=None, help="why (recorded on the registry; default: 'manual via CLI')")
    p.add_argument("--user", default=None, help="who asks (default: $MTLP_USER or the login name)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI")
    p.add_argument("--work-dir", default=None,
                   help="run folder (mtlp-runs/<run>) whose store to use when no URI is given "
                        "(default: the newest run)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the tracking store")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    if not logging.getLogger().handlers:  # the lock's warnings (a stale lock broken) reach stderr
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    from mlflow.exceptions import MlflowException

    from .. import registry
    from ..tracking import TrackingUnavailable, check_tracking_reachable, client_for

    try:
        uri, note = resolve_store(args.tracking_uri, args.work_dir)
        if note:
            print(f"mtlp promote: {note}", file=sys.stderr)
        check_tracking_reachable(uri, timeout=args.timeout)
        client = client_for(uri)
        reason = args.reason or "manual via CLI"
        if args.show:
            out = {"model": args.model, "champion": registry.champion_version(client, args.model),
                   "challenger": registry.challenger_version(client, args.model),
                   "history": registry.champion_history(client, args.model),
                   "promotion_lock": registry.promotion_lock_holder(client, args.model)}
            print(json.dumps(out, indent=2))
            return 0
        if args.rollback:
            previous = registry.champion_version(client, args.model)
            restored = registry.rollback(client, args.model, reason=reason, user=args.user)
            print(f"{args.model}: champion rolled back from version {previous} to version {restored}")
        else:
            previous = registry.promote_version(client, args.model, args.version, reason=reason, user=args.user)
            print(f"{args.model}: champion is now version {args.version} (was {previous})")
        return 0
    except (registry.RegistryError, TrackingUnavailable) as e:
        print(f"mtlp promote: error: {e}", file=sys.stderr)
        return 2
    except MlflowException as e:
        print(f"mtlp promote: error: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
