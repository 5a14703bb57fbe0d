"""``mtlp check-model NAME``: one zoo model through the whole pipeline, small, with a verdict per step.

The proof a contributor runs after adding a model (docs/models.md, "Adding a model"): the graph ``mtlp run`` runs
(KFP's local runner, the warm worker, the same steps), on a config of its own (``CHECK``): the model alone on
generated funnel data, a two-trial search, a two-epoch training, ONNX export with the parity check, registration and
promotion. The run gets its own MLflow store and Optuna journal in its run folder
(``MLFLOW_TRACKING_URI`` / ``OPTUNA_STORAGE`` are ignored for it), so its first candidate meets no champion. Then
the store is read back and each step's result is checked and printed on one line.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .config import PipelineConfig, load_config

__all__ = ["CHECK", "Verdict", "check_config", "verdicts", "add_parser", "main"]

N_TRIALS = 2
MAX_PARITY = 1e-5  # the export step's own bound (workflow/training/export.py)

# small enough for about a minute of graph on 2 cores, large enough that every step has real data to work on
CHECK: dict[str, Any] = {
    "name": "mtlp-check-model",
    "dataset": {"name": "synthetic-funnel", "seed": 7,
                "options": {"n_rows": 4000, "n_users": 200, "n_items": 60, "ctr": 0.3, "cvr": 0.3}},
    "search": {"n_trials": N_TRIALS, "n_epoch": 1, "pruner": "none"},
    "train": {"n_epoch": 2, "patience": 1, "batch_size": 256, "device": "cpu"},
    "tracking": {"experiment": "mtlp-check-model", "isolated": True},  # its own store, in its run folder
}


@dataclass
class Verdict:
    step: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.step:<9} {self.detail}"


def check_config(name: str) -> PipelineConfig:
    """``CHECK`` for model ``name`` (an unknown name is the config's one-line error listing the zoo)."""
    return load_config({**CHECK, "models": [name]})


@contextlib.contextmanager
def _own_stores() -> Iterator[None]:
    """The run's MLflow store and Optuna journal in its own folder, whatever the environment points at."""
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _metrics(run: Any, prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in run.data.metrics.items() if k.startswith(prefix)}


def _short(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())) or "none"


def verdicts(config: PipelineConfig, work_dir: Path) -> list[Verdict]:
    """What each step of the run in ``work_dir`` left in its MLflow store, checked."""
    from workflow.tracking import client_for

    name = config.models[0]
    client = client_for(f"sqlite:///{Path(work_dir) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    model_runs = [r for r in runs if r.data.tags.get("mtlp.role") == "model"  # named <pipeline run>/<model>
                  and r.info.run_name.rsplit("/", 1)[-1] == name]
    if len(model_runs) != 1:
        return [Verdict("runs", False, f"expected one model run named {name!r}, found {len(model_runs)}")]
    model_run = model_runs[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == model_run.info.run_id
              and r.data.tags.get("mtlp.role") == "trial" and r.info.status == "FINISHED"]
    objectives = [r.data.metrics.get("trial/objective_0", math.nan) for r in trials]
    out = [Verdict("search", len(trials) >= N_TRIALS and all(0.0 <= v <= 1.0 for v in objectives),
                   f"{len(trials)} finished trial(s) of {N_TRIALS}, objectives (mean val AUC) "
                   f"{', '.join(f'{v:.3f}' for v in objectives) or 'none'}")]
    test = {k[:-4]: v for k, v in _metrics(model_run, "test/").items() if k.endswith("/auc")}  # task -> AUC
    trained = bool(test) and all(0.0 <= v <= 1.0 for v in test.values())
    out.append(Verdict("train", trained, f"test AUC {_short(test)}"))
    parity = model_run.data.metrics.get("onnx/parity_max_abs_diff", math.nan)
    out.append(Verdict("export", 0.0 <= parity <= MAX_PARITY, f"ONNX against PyTorch, max abs diff {parity:.2e} "
                                                              f"(bound {MAX_PARITY:g})"))
    registered = config.registered_model
    versions = [v for v in client.search_model_versions(f"name='{registered}'")
                if v.tags.get("mtlp.architecture") == name]
    out.append(Verdict("register", len(versions) == 1, f"{registered}: {len(versions)} version(s) of {name}"))
    champion = client.get_registered_model(registered).aliases.get("champion") if versions else None
    out.append(Verdict("promote", bool(versions) and champion == versions[0].version,
                       f"champion alias on version {champion}" if champion else "no champion alias"))
    out.append(Verdict("finish", model_run.info.status == "FINISHED", f"model run {model_run.info.status}"))
    return out


def add_parser(sub: Any) -> None:
    """``mtlp check-model``'s arguments, on ``mtlp``'s sub-command parsers."""
    check = sub.add_parser("check-model", help="run one zoo model through the whole pipeline, small "
                                               "(search, train, export, register, promote) and check each step")
    check.add_argument("name", help="the model's zoo name (mtl_models/zoo.py), e.g. mmoe")
    check.add_argument("--runs-root", default="mtlp-runs", help="where the run folder goes (default: ./mtlp-runs)")
    check.add_argument("--run-name", help="default: check-<name>-<date>-<time>")
    check.add_argument("-v", "--verbose", action="store_true", help="show every task's full output")
    check.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .local import PipelineFailed, run_local

    config = check_config(args.name)
    run_name = args.run_name or time.strftime(f"check-{args.name}-%Y%m%d-%H%M%S")
    folder = Path(args.runs_root) / run_name  # as the user gave it
    print(f"mtlp check-model: {args.name} through search, train, export, register and promote on "
          f"{config.dataset.options['n_rows']} generated funnel rows ({N_TRIALS} trials, {config.train.n_epoch} "
          f"epochs); run folder {folder}", flush=True)
    start = time.perf_counter()
    try:
        with _own_stores():
            run = run_local(config, run_name=run_name, runs_root=args.runs_root, verbose=args.verbose)
    except PipelineFailed as exc:
        log = f" (task log: {exc.failure.log})" if exc.failure else ""
        print(f"mtlp check-model: {args.name} FAILED in {exc.failure.label if exc.failure else 'the run'}: "
              f"{exc}{log}", file=sys.stderr)
        return 1
    results = verdicts(config, run.work_dir)
    print("\n".join(v.line() for v in results))
    passed = all(v.ok for v in results)
    print(f"mtlp check-model: {args.name} {'passed' if passed else 'FAILED'} in {time.perf_counter() - start:.0f} s; "
          f"run folder {folder}")
    return 0 if passed else 1
