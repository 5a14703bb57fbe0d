"""``mtlp``: run the pipeline locally, compile it for Kubernetes, submit it, promote a model, compare two versions."""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from workflow.errors import cli_error

__all__ = ["main"]


def _config(path: Optional[str], image: Optional[str] = None):
    """The validated config; ``--image`` (compile/submit) overrides its image."""
    from .config import load_config
    config = load_config(path)
    if image:
        config.image = image
    return config


def _shown(path: Path) -> str:
    """``path`` as the user can type it from here: relative when under the current folder, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _mtlp_command() -> str:
    """How to call ``mtlp`` from this folder: ``mtlp`` when it is on PATH, else the venv's script (``.venv/bin/mtlp``
    from the repo root)."""
    import shutil

    script = Path(sys.executable).parent / "mtlp"
    found = shutil.which("mtlp")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "mtlp"
    if script.exists():
        return _shown(script)
    return f"{_shown(Path(sys.executable))} -m pipeline.cli"


def _containers(args: argparse.Namespace, config):
    """The container mode's settings (``--containers``), else None."""
    if not args.containers:
        return None
    import os

    from .containers import ContainerSettings
    from .image import default_image
    runtime = args.podman_runtime if args.podman_runtime is not None else \
        ("/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else None)
    return ContainerSettings(image=args.image or config.image or default_image(), retries=config.resources.retries,
                             runtime=runtime or None)


def cmd_run(args: argparse.Namespace) -> int:
    from .local import PipelineFailed, new_run_name, run_folder, run_local

    config = _config(args.config)
    if args.isolated_store:
        config.tracking.isolated = True
    ui_command = _mtlp_command()  # before the run puts the venv's bin folder on this process's PATH
    run_name = args.run_name or new_run_name()
    work_dir = run_folder(run_name, args.runs_root)
    print(f"mtlp run: {len(config.models)} model(s) {config.models} on {config.dataset.name}; "
          f"{config.search.n_trials} search trials, {config.train.n_epoch} epochs; run folder {_shown(work_dir)}",
          flush=True)
    containers = _containers(args, config)
    import os
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # ending runs on a server prints URLs
    try:
        result = run_local(config, run_name=run_name, runs_root=args.runs_root, caching=not args.no_cache,
                           warm_worker=not args.cold_tasks, parallel_tasks=args.parallel_tasks, verbose=args.verbose,
                           containers=containers)
    except PipelineFailed as exc:
        failure = exc.failure
        if args.verbose:
            import traceback
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        print(f"mtlp run: error: {failure.label}: {exc} (task log: {_shown(failure.log)})", file=sys.stderr)
        return 2 if failure.error_type in ("DataError", "ConfigError") else 1
    except KeyboardInterrupt as exc:
        why = str(exc) or "SIGINT"
        print(f"mtlp run: interrupted ({why}); the run's MLflow runs are marked FAILED; task logs in "
              f"{_shown(work_dir / 'logs')}; re-run with --run-name {run_name} to resume", file=sys.stderr)
        return 130 if why == "SIGINT" else 143
    summary = result.work_dir / "summary.md"
    print("\n" + (summary.read_text() if summary.exists() else "(no summary was written)"))
    if containers is not None:
        print(f"{containers.containers_run} containers of {containers.image} ran the tasks.")
    print(f"Run {result.run_name} finished in {result.seconds:.0f} s. Run folder {_shown(result.work_dir)}, "
          f"task logs in {_shown(result.logs_dir)}.")
    if containers is not None:  # the tasks logged to the tracking server, not to a store in the run folder
        print(f"MLflow UI: {config.tracking.uri or os.environ.get('MLFLOW_TRACKING_URI')}")
    else:
        print(f"MLflow UI: {ui_command} ui {_shown(result.work_dir)}")
    return 0


def _ui_store(args: argparse.Namespace) -> tuple[Path, str, Optional[str]]:
    """(what is shown, store URI, experiment or None) for ``mtlp ui``: a run folder's store (its ``tracking.json``,
    else its own ``mlflow.db``), or with no run the runs root's shared store, else the newest run's own."""
    from workflow.tracking.local_store import read_store_record, stores_under, store_of_run

    root = Path(args.runs_root)
    if args.run:
        folder = Path(args.run)
        if not folder.is_dir() and (root / folder).is_dir():
            folder = root / folder  # a bare run name
        if not folder.is_dir():
            raise FileNotFoundError(f"no run folder {args.run}: name a run folder, e.g. mtlp ui mtlp-runs/<run>")
        uri, experiment = store_of_run(folder)
        return folder, uri, experiment
    stores = stores_under(root)
    if not stores:
        raise FileNotFoundError(f"no run with an MLflow store under {args.runs_root}: name a run folder, e.g. "
                                "mtlp ui mtlp-runs/<run>")
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    uri = f"sqlite:///{stores[0].resolve()}"
    experiment = next((r.get("experiment") for r in map(read_store_record, runs)
                       if r and r.get("tracking_uri") == uri), None)
    return stores[0].parent, uri, experiment


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on a store (default: the runs root's), in the foreground until Ctrl-C, with the URL of the
    experiment's runs in the model-training layout. This process becomes the MLflow server (exec), so a signal to
    it stops the server and the workers it started. A run that logged to a server: its URL, nothing started."""
    import os

    from workflow.tracking.local_store import experiment_id, sqlite_path
    from workflow.tracking.ui import ui_url

    shown, uri, experiment = _ui_store(args)
    db = sqlite_path(uri)
    if db is None:
        if uri.startswith(("http://", "https://")):
            print(f"{_shown(shown)} logged to the tracking server {uri}: open {uri.rstrip('/')}/#/experiments "
                  f"(experiment {experiment or '?'}); nothing to start here", flush=True)
            return 0
        raise FileNotFoundError(f"{_shown(shown)} logged to {uri}: serve it with mlflow ui --backend-store-uri "
                                "<that URI> (its password is not kept)")
    if not db.is_file():
        raise FileNotFoundError(f"{_shown(shown)} logged to {db}, which does not exist (moved or deleted?)")
    exp_id = experiment_id(db, experiment)
    base = f"http://{args.host}:{args.port}"
    url = ui_url(base, exp_id) if exp_id else base + "/#/experiments"
    print(f"MLflow UI for {_shown(db)} at {url} (Ctrl-C stops it)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db.resolve()}",
               "--host", args.host, "--port", str(args.port)]
    os.execv(sys.executable, command)
    return 0  # not reached


def cmd_runs(args: argparse.Namespace) -> int:
    """The pipeline runs of one store side by side (``workflow.reports.runs_table``)."""
    from workflow.registry import RegistryError
    from workflow.registry.cli import resolve_store
    from workflow.reports.runs_table import runs_report
    from workflow.tracking import check_tracking_reachable, client_for, mask_credentials

    try:
        uri, _ = resolve_store(args.tracking_uri, args.work_dir, None, args.runs_root)
    except RegistryError as exc:
        raise FileNotFoundError(str(exc)) from None
    check_tracking_reachable(uri)
    print(f"store {mask_credentials(uri)}")
    print(runs_report(client_for(uri), args.experiment or None))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .submit import compile_pipeline

    path = compile_pipeline(_config(args.config, args.image), args.output)
    print(f"wrote {path}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .submit import submit

    url = submit(_config(args.config, args.image), args.host, experiment=args.experiment, run_name=args.run_name, namespace=args.namespace,
                 service_account=args.service_account or None)
    print(f"submitted: {url}")
    return 0


def cmd_promote(argv: Sequence[str]) -> int:
    from workflow.registry.cli import main as promote_main
    return promote_main(list(argv))


def cmd_compare(argv: Sequence[str]) -> int:
    from workflow.registry.compare import main as compare_main
    return compare_main(list(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline on this machine (KFP local runner, SQLite MLflow)")
    run.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    run.add_argument("--run-name", help="re-use a name to resume a killed run (finished steps are cached)")
    run.add_argument("--runs-root", default="mtlp-runs", help="where run folders go (default: ./mtlp-runs)")
    run.add_argument("--isolated-store", action="store_true",
                     help="log to this run's own MLflow store (<run folder>/mlflow.db) instead of the runs root's "
                          "shared one (same as tracking.isolated: true)")
    run.add_argument("--no-cache", action="store_true", help="re-run every step even when cached")
    run.add_argument("--cold-tasks", action="store_true",
                     help="start every task as a fresh Python process (KFP's own launcher) instead of forking "
                          "a warm worker that has imported torch and MLflow once")
    run.add_argument("--parallel-tasks", type=int, default=1,
                     help="tasks of independent branches (the models) run at once (default 1: each training "
                          "task uses every core; raise it on a machine with cores to spare)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show every task's full output (default: one line per task, the search's and training's "
                          "progress; the rest is in the run folder's logs/) and tracebacks")
    run.add_argument("--containers", action="store_true",
                     help="run each task in the project image under podman, as on the cluster (needs an MLflow "
                          "server and a study database: MLFLOW_TRACKING_URI, OPTUNA_STORAGE; make rehearsal)")
    run.add_argument("--image", help="with --containers: the image (default: the config's, else this commit's)")
    run.add_argument("--podman-runtime", help="with --containers: podman's OCI runtime (default /usr/sbin/runc "
                                              "where present; '' for podman's own)")
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="serve the MLflow UI on the runs' store (default: the runs root's shared one)")
    ui.add_argument("run", nargs="?", help="run folder (mtlp-runs/<run>) or run name: the store that run logged to")
    ui.add_argument("--runs-root", default="mtlp-runs", help="where run folders are (default: ./mtlp-runs)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    runs = sub.add_parser("runs", help="the pipeline runs of a store side by side: each model's val and test "
                                       "scores, its version, and which version was champion after each run")
    runs.add_argument("--runs-root", default="mtlp-runs", help="whose shared store (default: ./mtlp-runs)")
    runs.add_argument("--work-dir", help="the store this run folder logged to instead")
    runs.add_argument("--tracking-uri", help="an MLflow tracking server or database instead")
    runs.add_argument("--experiment", action="append", help="only this experiment (repeatable; default: all)")
    runs.set_defaults(func=cmd_runs)

    comp = sub.add_parser("compile", help="write the KFP IR YAML for a cluster")
    comp.add_argument("--config")
    comp.add_argument("--image", help="container image of every component (default: the config's, else this commit's)")
    comp.add_argument("-o", "--output", default="pipeline.yaml")
    comp.set_defaults(func=cmd_compile)

    subm = sub.add_parser("submit", help="create a run on a Kubeflow Pipelines endpoint")
    subm.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    subm.add_argument("--experiment")
    subm.add_argument("--run-name")
    subm.add_argument("--namespace")
    subm.add_argument("--service-account", default="mtl-pipeline-runner",
                      help="Kubernetes service account of the run's pods (default: mtl-pipeline-runner from "
                           "deploy/k8s; pass '' for KFP's default)")
    subm.add_argument("--config")
    subm.add_argument("--image")
    subm.set_defaults(func=cmd_submit)

    sub.add_parser("promote", help="promote or roll back a registered model by hand (see mtlp promote --help)",
                   add_help=False)
    sub.add_parser("compare", help="two registered versions on the same validation or test rows, per task, with "
                                   "paired intervals (see mtlp compare --help)", add_help=False)
    from .check_model import add_parser as add_check_model
    add_check_model(sub)  # mtlp check-model NAME: one zoo model through the whole pipeline, small
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["promote"]:
        return cmd_promote(argv[1:])
    if argv[:1] == ["compare"]:
        return cmd_compare(argv[1:])
    args = build_parser().parse_args(argv)
    from workflow.data.errors import DataError
    from workflow.tracking.uri import TrackingUnavailable
    from .config import ConfigError
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError, TrackingUnavailable) as exc:
        return cli_error(f"mtlp {args.command}", exc)


if __name__ == "__main__":
    sys.exit(main())
