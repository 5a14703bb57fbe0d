"""``python -m workflow.search``: ``run`` creates or resumes a study and runs it to its total (one or
``--n-workers`` local processes); ``worker`` joins an existing study from another process or pod (the study
carries its own settings)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import chain, first_line
from .run import search
from .storage import resolve_storage
from .workers import run_worker

log = logging.getLogger(__name__)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--prepared-dir", required=True)
    sp.add_argument("--work-dir", required=True)
    sp.add_argument("--storage", default=None, help="journal:PATH, a database URL, or env:VAR holding the URL "
                                                    "(default: a journal file in the work dir)")
    sp.add_argument("--study-name", default=None)
    sp.add_argument("--n-trials", type=int, default=None, help="the study's total of finished trials")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--tracking-uri", default=None)
    sp.add_argument("--parent-run-id", default=None)
    sp.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    sp.add_argument("--quiet", action="store_true")


def _run_args(run: argparse.ArgumentParser) -> None:
    run.add_argument("--model", required=True)
    run.add_argument("--n-epoch", type=int, default=5)
    run.add_argument("--patience", type=int, default=3)
    run.add_argument("--pruner", default="median")
    run.add_argument("--objective", default="mean")
    run.add_argument("--multi-objective", action="store_true")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--space", default=None, help="JSON (or a path to JSON/YAML) with search space overrides")
    run.add_argument("--n-workers", type=int, default=1)
    run.add_argument("--heartbeat-interval", type=int, default=15)
    run.add_argument("--grace-period", type=int, default=None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workflow.search", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="create or resume a study and run it to its total")
    _common(run)
    _run_args(run)
    worker = sub.add_parser("worker", help="join an existing study (its settings come from the study)")
    _common(worker)
    worker.add_argument("--worker-index", type=int, default=None)
    return p


def load_space(text: Optional[str]) -> Optional[dict]:
    """``--space``: inline JSON, or a path to a JSON / YAML file."""
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        return json.loads(text)
    raw = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(raw)
    return json.loads(raw)


def storage_failure(exc: Optional[BaseException]) -> Optional[BaseException]:
    """The database error behind ``exc``, if any (Optuna can mask it, e.g. with an UnboundLocalError raised
    while it handles the lost connection)."""
    return next((e for e in chain(exc) if type(e).__module__.startswith(("sqlalchemy", "psycopg2"))), None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit 0 on success; 3 with one line when the study database was lost (everything else re-raises)."""
    try:
        return _main(argv)
    except Exception as exc:  # noqa: BLE001
        db = storage_failure(exc)
        if db is None:
            raise
        print(f"workflow.search: error: lost the connection to the study database ({type(db).__name__}: "
              f"{first_line(db, 200)}). Finished trials are saved; the interrupted trial is failed and retried when the "
              "study is re-run with the same --study-name.", file=sys.stderr)
        return 3


def _run(args: argparse.Namespace) -> int:
    result = search(args.prepared_dir, args.model, args.work_dir, n_trials=args.n_trials or 20,
                    n_epoch=args.n_epoch, patience=args.patience, storage=args.storage, study_name=args.study_name,
                    pruner=args.pruner, objective=args.objective, multi_objective=args.multi_objective,
                    seed=args.seed, search_space=load_space(args.space), n_workers=args.n_workers,
                    device=args.device, parent_run_id=args.parent_run_id, tracking_uri=args.tracking_uri,
                    heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                    threads=args.threads, progress=not args.quiet)
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


def _worker(args: argparse.Namespace) -> int:
    if args.study_name is None:
        raise SystemExit("worker: --study-name is required")
    index = args.worker_index if args.worker_index is not None else os.getpid() % 10_000
    ran = run_worker(args.storage, args.study_name, args.prepared_dir, args.work_dir, n_trials=args.n_trials,
                     worker_index=index, device=args.device, tracking_uri=args.tracking_uri,
                     parent_run_id=args.parent_run_id, progress=not args.quiet, threads=args.threads)
    log.info("worker %s ran %d trials", index, ran)
    return 0


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:  # no $OPTUNA_STORAGE fallback here: without --storage the CLI uses the journal in the work dir
        args.storage = resolve_storage(args.storage, env_default=False)
    except RuntimeError as e:
        raise SystemExit(f"--storage: {e}") from None
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return _run(args) if args.command == "run" else _worker(args)
