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
from .reports.summary import ceiling_metrics, describe_decision, summary_table

__all__ = ["start_pipeline_run", "prepare_step", "start_model_run", "search_step", "train_step",
           "gbdt_step", "report_step", "export_step", "register_step", "promote_step", "summary_step"]

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
                 tracking_uri: Optional[str] = None, user_column: Optional[str] = None) -> FeatureSpec:
    """Prepare the data, then tag the parent run with the dataset's hashes and attach the feature spec."""
    from .data.prepare import prepare

    spec = prepare(dataset, out_dir, data_dir=data_dir or None, seed=seed, val_fraction=val_fraction,
                   options=dict(options or {}), user_column=user_column)
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
    """Optuna search for one model; returns the best flat hyperparameters (``{}`` when trials are 0).

    ``search["batch_size"]`` (the final training's): trials train at that batch unless the space searches it."""
    from .search import search as run_search
    from .search.space import with_default

    space = search.get("space") or None
    if search.get("batch_size"):
        space = with_default(space, "batch_size", int(search["batch_size"]))

    client, uri = tracking.open_client(work_dir, tracking_uri)
    with _marks_failure(client, model_run_id):
        result = run_search(prepared_dir, model_name, Path(work_dir) / "search" / model_name,
                            n_trials=int(search["n_trials"]), n_epoch=int(search["n_epoch"]),
                            storage=resolve_storage(search.get("storage")), study_name=f"{run_name}-{model_name}",
                            pruner=search.get("pruner", "median"), objective=search.get("objective", "mean"),
                            multi_objective=bool(search.get("multi_objective", False)), seed=seed,
                            search_space=space, device=device, timeout=search.get("timeout"),
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


def gbdt_step(prepared_dir: PathLike, parent_run_id: str, work_dir: PathLike, seed: int = 42,
              tracking_uri: Optional[str] = None) -> dict[str, float]:
    """HistGradientBoosting per task on the prepared splits (``workflow.training.gbdt``), in a child run ``gbdt``
    (role ``baseline``) of the pipeline run: ``test/<task>/<metric>`` and ``test_score`` as a model run logs them.
    Returns the flat metrics, the summary's baseline row."""
    from .training.gbdt import gbdt_baseline

    client, _ = tracking.open_client(work_dir, tracking_uri)
    run_id = tracking.create_child_run(client, parent_run_id, "gbdt", role="baseline",
                                       tags={tracking.TAGS["model_name"]: "gbdt"})
    with _marks_failure(client, run_id):
        result = gbdt_baseline(prepared_dir, seed=seed)
        flat = result.flat()
        tracking.retry_call(client.log_param, run_id, "estimator", "sklearn HistGradientBoosting, defaults, per task")
        tracking.retry_call(client.log_param, run_id, "categorical", ",".join(result.categorical) or "none")
        for key, value in flat.items():
            tracking.retry_call(client.log_metric, run_id, key if key == "test_score" else f"test/{key}", value)
    tracking.end_run(client, run_id, "FINISHED")
    return flat


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
                 margin: float = 0.0, tracking_uri: Optional[str] = None, prepared_dir: Optional[PathLike] = None,
                 promotion: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The run's best candidate by ``metric`` (validation) against the champion; returns the decision as a dict,
    the test scores of both reported in it. ``promotion``: the config's section; its ``rule`` ``paired`` (the
    default) scores the champion, the best candidate and the runner-up on ``prepared_dir``'s validation rows
    through their logged models (``workflow.registry.rule``); ``margin`` compares recorded scores."""
    from dataclasses import asdict

    from . import registry
    from .registry.rescore import read_rows
    from .registry.rule import PairedRule

    cfg = dict(promotion or {})
    rule = cfg.get("rule", "paired" if prepared_dir else "margin")
    client, uri = tracking.open_client(work_dir, tracking_uri)
    rows = None
    if rule == "paired":
        tracking.use_globally(uri)  # models:/ URIs resolve on this store (no MLFLOW_* variable left behind)
        rows = read_rows(prepared_dir, "val") if prepared_dir else None
    decision = registry.promote_best(client, registered_model, list(versions), metric=metric, margin=margin,
                                     reason="pipeline promotion", rule=rule, paired=PairedRule.from_config(cfg),
                                     rows=rows)
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
                 ceiling: Optional[Mapping[str, Any]] = None,
                 baselines: Optional[Mapping[str, Mapping[str, float]]] = None) -> str:
    """A Markdown summary (metrics table with the baselines' rows and the data's ceiling when known, the promotion in
    plain words, the store) on the parent run and in ``out_md``. ``ceiling``: default, the run's feature spec's."""
    client, uri = tracking.open_client(work_dir, tracking_uri)
    Path(work_dir).mkdir(parents=True, exist_ok=True)  # a task's own fresh /tmp (a pod, a container) has none yet
    if ceiling is None:
        ceiling = _load_ceiling(client, parent_run_id, work_dir)
    versions = [decision.get(k) for k in ("candidate_version", "champion_version", "current_champion")]
    words = describe_decision(decision, _architectures(client, registered_model, versions))
    lines = summary_table(results, ceiling, baselines)
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
                            reference=ceiling_metrics(ceiling) or None, champion=champion, title=title)
    tracking.end_run(client, parent_run_id, "FINISHED")
    return text
