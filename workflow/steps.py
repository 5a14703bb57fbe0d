"""What each task of the pipeline graph does, as plain functions over paths and parameters.

Each function composes one step module (prepare, search, train, registry...) with its MLflow logging,
so that the KFP components in ``pipeline/graph.py`` are one-line wrappers and every step runs and tests
without KFP. Runs nest as: pipeline run (parent) -> one run per model -> one run per search trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from mtl_models.atomic import atomic_path

from . import tracking
from .data.feature_spec import SPEC_FILE, FeatureSpec

__all__ = ["start_pipeline_run", "prepare_step", "start_model_run", "search_step", "train_step",
           "report_step", "export_step", "register_step", "promote_step", "summary_step"]

PathLike = str | os.PathLike


@contextlib.contextmanager
def _marks_failure(client: Any, run_id: str) -> Iterator[None]:
    """A step that fails marks the model run FAILED (a KFP retry may still finish it later)."""
    try:
        yield
    except BaseException:
        tracking.end_run(client, run_id, "FAILED")
        raise


def start_pipeline_run(config: Mapping[str, Any], work_dir: PathLike, pipeline_run_id: str,
                       tracking_uri: Optional[str] = None, experiment: Optional[str] = None) -> str:
    """Check the tracking store answers (before any training) and create or find the parent run. The config is
    logged with URL passwords masked (:func:`workflow.tracking.mask_credentials`)."""
    experiment = experiment or config.get("tracking", {}).get("experiment") or "mtl-pipeline"
    t = tracking.setup_tracking(experiment, work_dir, tracking_uri or None)
    return tracking.start_parent_run(t, pipeline_run_id, dataset=config.get("dataset", {}).get("name"),
                                     config=config, run_name=f"pipeline-{pipeline_run_id}")


def prepare_step(dataset: str, out_dir: PathLike, data_dir: Optional[str], seed: int, val_fraction: float,
                 options: Mapping[str, Any], parent_run_id: str, work_dir: PathLike,
                 tracking_uri: Optional[str] = None) -> FeatureSpec:
    """Prepare the data, then tag the parent run with the dataset's hashes and attach the feature spec."""
    from .data.prepare import prepare

    spec = prepare(dataset, out_dir, data_dir=data_dir or None, seed=seed, val_fraction=val_fraction,
                   options=dict(options or {}))
    client, _ = tracking.open_client(work_dir, tracking_uri)
    tags = {"mtlp.dataset": spec.dataset, "mtlp.raw_sha256": json.dumps(spec.raw_sha256, sort_keys=True)}
    tags.update({f"mtlp.raw_sha256.{name}": digest for name, digest in spec.raw_sha256.items()})
    for key, value in tags.items():
        tracking.retry_call(client.set_tag, parent_run_id, key, str(value)[:5000])
    tracking.log_artifact_files(client, parent_run_id, [Path(out_dir) / SPEC_FILE], "data")
    tracking.log_ceiling(client, parent_run_id, spec.ceiling)  # generated data: what a perfect model would score
    return spec


def start_model_run(run_name: str, experiment: str, model_name: str, work_dir: PathLike,
                    tracking_uri: Optional[str] = None) -> str:
    """The model's child run under the pipeline run named ``run_name``: the search's trials nest under it,
    and training logs into it. The parent is found by its run-name tag rather than passed in, so a task
    needs only the pipeline's parameters to find it (from any pod, on any retry)."""
    client, _ = tracking.open_client(work_dir, tracking_uri)
    exp = tracking.retry_call(client.get_experiment_by_name, experiment)
    parent = tracking.find_parent_run(client, exp.experiment_id, run_name) if exp is not None else None
    if parent is None:
        raise RuntimeError(f"no pipeline run {run_name!r} in experiment {experiment!r}: the start step must run first")
    # idempotent: a re-run of the same pipeline run (or a retried task) finds the model's run again
    existing = tracking.retry_call(
        client.search_runs, [exp.experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
        filter_string=f"tags.`{tracking.TAGS['parent']}` = '{parent}' and tags.`{tracking.TAGS['role']}` = 'model' "
                      f"and tags.`{tracking.TAGS['model_name']}` = '{model_name}'")
    if existing:
        return existing[0].info.run_id
    # named <pipeline run>/<model>: in one store across runs, the UI's runs table and compare page tell them apart
    return tracking.create_child_run(client, parent, f"{run_name}/{model_name}", role="model",
                                     tags={tracking.TAGS["model_name"]: model_name})


def resolve_storage(storage: Optional[str]) -> Optional[str]:
    """The study storage to use. Empty: ``$OPTUNA_STORAGE`` when set (on the cluster, Kubernetes puts the
    ``optuna-db`` Secret there, so the password never becomes a pipeline parameter), else None (a journal
    file in the work directory). ``"env"`` / ``"env:VAR"`` insist on that variable."""
    from .search.storage import resolve_storage as resolve

    return resolve(storage)


def search_step(prepared_dir: PathLike, model_name: str, work_dir: PathLike, model_run_id: str,
                search: Mapping[str, Any], seed: int = 42, device: str = "auto",
                tracking_uri: Optional[str] = None, run_name: str = "run") -> dict[str, Any]:
    """Optuna search for one model; returns the best flat hyperparameters (``{}`` when trials are 0)."""
    from .search import search as run_search

    client, uri = tracking.open_client(work_dir, tracking_uri)
    with _marks_failure(client, model_run_id):
        result = run_search(prepared_dir, model_name, Path(work_dir) / "search" / model_name,
                            n_trials=int(search["n_trials"]), n_epoch=int(search["n_epoch"]),
                            storage=resolve_storage(search.get("storage")), study_name=f"{run_name}-{model_name}",
                            pruner=search.get("pruner", "median"), objective=search.get("objective", "mean"),
                            multi_objective=bool(search.get("multi_objective", False)), seed=seed,
                            search_space=search.get("space") or None, device=device, timeout=search.get("timeout"),
                            trial_timeout=search.get("trial_timeout"), max_params=search.get("max_params"),
                            parent_run_id=model_run_id, tracking_uri=uri, progress=True)
    return dict(result.best_params)


def train_step(prepared_dir: PathLike, model_name: str, out_dir: PathLike, model_run_id: str, work_dir: PathLike,
               best_params: Optional[Mapping[str, Any]] = None, fixed_params: Optional[Mapping[str, Any]] = None,
               n_epoch: int = 10, patience: int = 3, device: str = "auto", seed: int = 42,
               tracking_uri: Optional[str] = None, nproc_per_node: int = 1, n_nodes: int = 1,
               job: Optional[Mapping[str, Any]] = None, single_task: bool = False):
    """Final training with the search's best params (the config's fixed ones on top), logged per epoch.

    ``single_task``: then one model of the same family per task, trained on that task alone with the same params
    (``workflow.training.train.single_task_baselines``, into ``work_dir/single-task/<model>``), their test metrics logged
    on the model's run as ``single_task/<task>/<metric>`` beside the multi-task model's ``test/<task>/<metric>``.

    ``nproc_per_node > 1`` on one node: ``torchrun`` on this machine; ``n_nodes > 1``: a PyTorchJob
    (``workflow.training.pytorchjob``; ``job`` holds its settings: image, namespace, shared volume...). Either way
    rank 0 logs to the model's MLflow run and writes ``out_dir``, and ``batch_size`` is the global batch.
    """
    from .training.train import train

    if nproc_per_node < 1 or n_nodes < 1:
        raise ValueError(f"nproc_per_node and n_nodes must be >= 1, got {nproc_per_node} and {n_nodes}")
    client, uri = tracking.open_client(work_dir, tracking_uri)
    params = {**dict(best_params or {}), **dict(fixed_params or {})}
    with _marks_failure(client, model_run_id):
        if n_nodes > 1:
            from .training.pytorchjob import run_training_job

            return run_training_job(prepared_dir, model_name, out_dir, model_run_id, work_dir, params, n_epoch,
                                    patience, device, seed, uri, nproc_per_node, n_nodes, dict(job or {}))
        if nproc_per_node > 1:
            from .training.torchrun import launch_local, read_result, worker_args

            launch_local(nproc_per_node, worker_args(prepared_dir, model_name, out_dir, params, n_epoch, patience,
                                                     device, seed, model_run_id, work_dir, uri))
            return read_result(out_dir)
        callback = tracking.MlflowCallback(model_run_id, client=client)
        result = train(prepared_dir, model_name, out_dir, params=params, n_epoch=n_epoch, patience=patience,
                       device=device, seed=seed, callbacks=[callback], plots=True)
        tracking.log_train_result(client, model_run_id, result, log_history=False)  # logs out_dir/plots/*.png
        if single_task:
            _single_task_baselines(client, model_run_id, prepared_dir, model_name, work_dir, params, n_epoch,
                                   patience, device, seed)
    return result


def _single_task_baselines(client: Any, run_id: str, prepared_dir: PathLike, model_name: str, work_dir: PathLike,
                           params: Mapping[str, Any], n_epoch: int, patience: int, device: str, seed: int) -> None:
    import time

    from mlflow.entities import Metric

    from .training.train import single_task_baselines

    results = single_task_baselines(prepared_dir, model_name, Path(work_dir) / "single-task" / model_name, params,
                                    n_epoch=n_epoch, patience=patience, device=device, seed=seed)
    now = int(time.time() * 1000)
    metrics = [Metric(f"single_task/{task}/{name}", float(v), now, 0) for task, r in results.items()
               for name, v in r.test_metrics[task].items() if math.isfinite(float(v))]
    tracking.retry_call(client.log_batch, run_id, metrics=metrics)


def report_step(trained_dir: PathLike, report_html: PathLike, report_md: Optional[PathLike] = None) -> dict[str, float]:
    """Flat test metrics of a trained model (``<task>/<metric>`` and ``test_score``, read from its ``metrics.json``)
    plus an HTML/Markdown report with its plots, for the KFP UI. The train step evaluated and drew them."""
    from .reports.model_report import render

    return render(trained_dir, report_html, report_md)


def export_step(trained_dir: PathLike, prepared_dir: PathLike, model_run_id: str, work_dir: PathLike,
                tracking_uri: Optional[str] = None) -> float:
    """ONNX export with the parity check on real test rows; the parity figure is logged on the model run."""
    from .training.export import export

    client, _ = tracking.open_client(work_dir, tracking_uri)
    with _marks_failure(client, model_run_id):
        result = export(trained_dir, prepared_dir)
        tracking.retry_call(client.log_metric, model_run_id, "onnx/parity_max_abs_diff", result.parity_max_abs_diff)
        tracking.log_artifact_files(client, model_run_id, [result.onnx_path], "onnx")
    return result.parity_max_abs_diff


def register_step(trained_dir: PathLike, model_run_id: str, registered_model: str, work_dir: PathLike,
                  pipeline_run_id: str, tracking_uri: Optional[str] = None, input_example: Any = None) -> str:
    """Log the raw-rows pyfunc (ONNX inside) on the model run and register it as a candidate version, tagged with
    ``metric.val_score`` (what promotion selects on; only when the train step recorded it, never a stand-in) and
    the test scores (reported).

    ``input_example``: a few raw rows as the raw data spells them (else made up from the feature spec).
    """
    from . import registry, serving

    trained_dir = Path(trained_dir)
    client, _ = tracking.open_client(work_dir, tracking_uri)
    saved = json.loads((trained_dir / "metrics.json").read_text())
    spec = FeatureSpec.load(trained_dir / SPEC_FILE)
    with _marks_failure(client, model_run_id):
        info = serving.log_candidate_model(client, model_run_id, trained_dir / "model.onnx", trained_dir / SPEC_FILE,
                                           input_example=input_example)
        version = registry.register_candidate(
            client, registered_model, info.model_uri, run_id=model_run_id, architecture=saved["model_name"],
            test_metrics=saved["test_metrics"], test_score=saved["test_score"], val_score=saved.get("val_score"),
            pipeline_run_id=pipeline_run_id, eval_data_id=registry.data_fingerprint(spec))
    tracking.end_run(client, model_run_id, "FINISHED")  # the model run's last step
    return str(version.version)


def promote_step(versions: Sequence[str], registered_model: str, work_dir: PathLike, metric: str = "val_score",
                 margin: float = 0.0, tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """The run's best candidate by ``metric`` (validation) against the champion on the same validation data;
    returns the decision as a dict, the test scores of both reported in it."""
    from dataclasses import asdict

    from . import registry

    client, _ = tracking.open_client(work_dir, tracking_uri)
    decision = registry.promote_best(client, registered_model, list(versions), metric=metric, margin=margin,
                                     reason="pipeline promotion")
    return {**asdict(decision), "current_champion": registry.champion_version(client, registered_model)}


CEILING_KEY = "ceiling"  # feature_spec.json: {"split", "source", "metrics": {task: {metric: value}}}, when known


def _architectures(client: Any, registered_model: str, versions: Sequence[Optional[str]]) -> dict[str, str]:
    """version -> the model architecture registered under it (the version's ``mtlp.architecture`` tag)."""
    from . import registry

    names: dict[str, str] = {}
    for version in {str(v) for v in versions if v not in (None, "", "none")}:
        with contextlib.suppress(Exception):
            names[version] = tracking.retry_call(client.get_model_version, registered_model, version, attempts=2
                                                 ).tags.get(registry.TAG["architecture"], "model")
    return names


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def _test_note(decision: Mapping[str, Any]) -> str:
    """The test scores the decision reports (never compared): `` (test_score: candidate 0.7012, champion 0.6990)``."""
    cand, champ = decision.get("candidate_test_score"), decision.get("champion_test_score")
    if not isinstance(cand, (int, float)) or decision.get("metric") == "test_score":
        return ""
    return f" (test_score, reported: candidate {_score(cand)}" + (
        f", champion {_score(champ)})" if isinstance(champ, (int, float)) else ")")


def _decision_words(decision: Mapping[str, Any], name: Any) -> str:
    cand, champ = decision.get("candidate_version"), decision.get("champion_version")
    metric, margin = decision.get("metric", "val_score"), float(decision.get("margin") or 0.0)
    cs, hs = _score(decision.get("candidate_score")), _score(decision.get("champion_score"))
    kind = decision.get("decision")
    if kind == "no_champion":
        return f"{name(cand)} is now champion: there was none"
    if kind == "promoted":
        return f"{name(cand)} is now champion: {metric} {cs} >= {name(champ)}'s {hs} + margin {margin:g}"
    if kind == "rejected" and str(cand) == str(champ):
        return f"kept {name(champ)}: the run's best candidate already is the champion"
    if kind == "rejected":
        return f"kept {name(champ)}: {name(cand)} scored {metric} {cs} < {hs} + margin {margin:g}"
    if kind == "not_comparable":
        return f"kept {name(champ)}: {name(cand)} was scored on other data and the champion was not re-scored on it"
    if kind == "unscored":
        kept = f"kept {name(champ)}" if champ else "no champion"
        return f"{kept}: {name(cand)} has no {metric} (a validation metric is undefined, e.g. one class only)"
    current = decision.get("current_champion")
    return f"champion: {name(current)}" if current else "no champion"


def describe_decision(decision: Mapping[str, Any], architectures: Mapping[str, str]) -> str:
    """The promotion in plain words, models named by architecture and version, e.g. ``ple (v5) is now champion:
    there was none`` or ``kept mmoe (v3): ple (v5) scored val_score 0.6710 < 0.6750 + margin 0.002``, followed by
    the test scores the decision reports (selection and the guard use validation only)."""
    def name(version: Any) -> str:
        return f"{architectures.get(str(version), 'version')} (v{version})"

    words = _decision_words(decision, name)
    return words + (_test_note(decision) if decision.get("decision") in ("promoted", "rejected", "no_champion",
                                                                         "not_comparable") else "")


def _load_ceiling(client: Any, parent_run_id: str, work_dir: PathLike) -> Optional[Mapping[str, Any]]:
    """The feature spec's ceiling (what the data's true probabilities score), from the spec the prepare step
    attached to the parent run; None when the data has none (real data) or it cannot be read."""
    import tempfile
    import urllib.parse

    with contextlib.suppress(Exception):
        root = urllib.parse.urlsplit(tracking.retry_call(client.get_run, parent_run_id).info.artifact_uri)
        if root.scheme in ("", "file"):  # the embedded store: read it where it lies
            return json.loads((Path(urllib.parse.unquote(root.path)) / "data" / SPEC_FILE).read_text()).get(CEILING_KEY)
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            path = client.download_artifacts(parent_run_id, f"data/{SPEC_FILE}", tmp)
            return json.loads(Path(path).read_text()).get(CEILING_KEY)
    return None


def _ceiling_metrics(ceiling: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """The ceiling's metrics under the summary's column names (``<task>/<metric>``); empty without a ceiling."""
    return {f"{task}/{name}": float(v) for task, ms in (ceiling or {}).get("metrics", {}).items()
            for name, v in ms.items()}


# columns only some models have, and what they are
EXTRA_COLUMNS = {"cvr/": "ESMM's own CVR tower (conversion given a click), scored on the clicked test rows only; "
                            "the other models predict no such thing"}


def summary_table(results: Mapping[str, Mapping[str, float]], ceiling: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Markdown rows: one per model (best val_score first: what promotion selects on; test_score otherwise), then
    the ceiling row when the data has one, and a note on each column only some models have."""
    scores = [k for k in ("val_score", "test_score") if any(k in m for m in results.values())]
    tasks = sorted({k for m in results.values() for k in m if k not in ("test_score", "val_score")})
    lines = ["| model | " + " | ".join(scores + tasks) + " |", "|---" * (len(scores) + len(tasks) + 1) + "|"]
    for model, m in sorted(results.items(), key=lambda kv: -kv[1].get(scores[0], float("-inf"))):
        lines.append(f"| {model} | " + " | ".join(f"{m[t]:.4f}" if t in m else "" for t in scores + tasks) + " |")
    flat = _ceiling_metrics(ceiling)
    if flat:
        lines.append("| true probabilities (ceiling) | " + " | ".join(
            f"{flat[t]:.4f}" if t in flat else "" for t in scores + tasks) + " |")
        lines += ["", f"Ceiling: {ceiling.get('source', 'the true probabilities')}, on the same "
                      f"{ceiling.get('split', 'test')} rows: no model can expect to score above it."]
    lines += [f"`{col}*`: {why}." for col, why in EXTRA_COLUMNS.items() if any(t.startswith(col) for t in tasks)]
    return lines


def _champion_of_run(client: Any, registered_model: str, version: Any, parent_run_id: str
                     ) -> tuple[Optional[str], str]:
    """(the champion's model when this run registered it, else None; the comparison chart's title naming it)."""
    from . import registry

    with contextlib.suppress(Exception):
        mv = tracking.retry_call(client.get_model_version, registered_model, str(version), attempts=2)
        tags = tracking.retry_call(client.get_run, parent_run_id, attempts=2).data.tags
        run = tags.get(tracking.TAGS["pipeline_run_id"])
        arch, origin = mv.tags.get(registry.TAG["architecture"], "?"), mv.tags.get(registry.TAG["pipeline_run_id"])
        mine = origin == run
        return (arch if mine else None), (f"metrics by model; champion {arch} (v{version}"
                                          + (")" if mine else f", from run {origin})"))
    return None, "metrics by model"


def summary_step(parent_run_id: str, results: Mapping[str, Mapping[str, float]], decision: Mapping[str, Any],
                 registered_model: str, work_dir: PathLike, out_md: PathLike, tracking_uri: Optional[str] = None,
                 ceiling: Optional[Mapping[str, Any]] = None) -> str:
    """A Markdown summary (metrics table with the data's ceiling when known, the promotion in plain words, the
    store) on the parent run and in ``out_md``. ``ceiling``: default, the one in the run's feature spec."""
    client, uri = tracking.open_client(work_dir, tracking_uri)
    if ceiling is None:
        ceiling = _load_ceiling(client, parent_run_id, work_dir)
    versions = [decision.get(k) for k in ("candidate_version", "champion_version", "current_champion")]
    words = describe_decision(decision, _architectures(client, registered_model, versions))
    lines = summary_table(results, ceiling)
    lines += ["", f"Champion of `{registered_model}`: {words}."]
    notes = tracking.search_budget_notes(client, parent_run_id)  # when a budget cut a model's search short
    lines += ["", "Search budget: " + "; ".join(notes) + "."] if notes else []
    lines += ["", f"MLflow store: `{tracking.mask_credentials(uri)}`"]
    text = "\n".join(lines) + "\n"
    for path in (Path(out_md), Path(work_dir) / "summary.md"):  # the second is where `mtlp run` finds it
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    tracking.retry_call(client.log_text, parent_run_id, text, "summary.md")
    champion, title = _champion_of_run(client, registered_model, decision.get("current_champion"), parent_run_id)
    tracking.log_comparison(client, parent_run_id, results, Path(work_dir) / "comparison",
                            reference=_ceiling_metrics(ceiling) or None, champion=champion, title=title)
    tracking.end_run(client, parent_run_id, "FINISHED")
    return text
