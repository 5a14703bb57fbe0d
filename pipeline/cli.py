"""``mtlp``: run the pipeline locally, compile it for Kubernetes, submit it, promote a model."""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]


def _config(path: Optional[str], image: Optional[str] = None):
    """The validated config; ``--image`` (compile/submit) overrides its image."""
    from .config import load_config
    config = load_config(path)
    if image:
        config.image = image
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from .local import run_local

    config = _config(args.config)
    print(f"mtlp run: {len(config.models)} model(s) {config.models} on {config.dataset.name}; "
          f"{config.search.n_trials} search trials, {config.train.n_epoch} epochs; work dir "
          f"{Path(args.runs_root) / (args.run_name or '<new run>')}", flush=True)
    result = run_local(config, run_name=args.run_name, runs_root=args.runs_root, caching=not args.no_cache,
                       warm_worker=not args.cold_tasks, parallel_tasks=args.parallel_tasks)
    summary = result.work_dir / "summary.md"
    print("\n" + (summary.read_text() if summary.exists() else "(no summary was written)"))
    print(f"Run {result.run_name} finished in {result.seconds:.0f} s; outputs in {result.work_dir}")
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
    from components.promote import main as promote_main
    return promote_main(list(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline on this machine (KFP local runner, SQLite MLflow)")
    run.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    run.add_argument("--run-name", help="re-use a name to resume a killed run (finished steps are cached)")
    run.add_argument("--runs-root", default="mtlp-runs", help="where run folders go (default: ./mtlp-runs)")
    run.add_argument("--no-cache", action="store_true", help="re-run every step even when cached")
    run.add_argument("--cold-tasks", action="store_true",
                     help="start every task as a fresh Python process (KFP's own launcher) instead of forking "
                          "a warm worker that has imported torch and MLflow once")
    run.add_argument("--parallel-tasks", type=int, default=1,
                     help="tasks of independent branches (the models) run at once (default 1: each training "
                          "task uses every core; raise it on a machine with cores to spare)")
    run.set_defaults(func=cmd_run)

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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["promote"]:
        return cmd_promote(argv[1:])
    args = build_parser().parse_args(argv)
    from components.errors import DataError
    from .config import ConfigError
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"mtlp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
