"""A trained model's results on its run (params, final metrics, the files the train step wrote, its plots) and the
run-level figures: the models compared on the parent, the data's ceiling, the search history.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from mtl_models.atomic import atomic_path

from .params import log_params, set_tags
from .retry import retry_call
from .runs import TAGS
from .ui import share_view

log = logging.getLogger("workflow.tracking")

__all__ = ["log_artifact_files", "key_metrics", "log_ceiling", "log_train_result", "log_comparison",
           "search_budget_notes", "log_search_plots"]


def log_artifact_files(client: Any, run_id: str, paths: Iterable[str | os.PathLike],
                       artifact_path: Optional[str] = None) -> None:
    """Existing files among ``paths`` -> the run's artifacts (retried)."""
    for p in paths:
        if p is not None and Path(p).is_file():
            retry_call(client.log_artifact, run_id, str(p), artifact_path)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def key_metrics(test_metrics: Mapping[str, Mapping[str, float]], test_score: Optional[float] = None) -> dict[str, float]:
    """Short names for the numbers a reader compares first: each task's AUC (classification) or RMSE (regression)
    as ``<task>_auc`` / ``<task>_rmse``, and ``score`` (the test score, higher is better: reported; promotion
    selects on ``val/score``)."""
    out: dict[str, float] = {}
    for task, values in test_metrics.items():
        for name in ("auc", "rmse"):
            if _finite(values.get(name)):
                out[f"{task}_{name}"] = float(values[name])
    if test_score is not None and _finite(test_score):
        out["score"] = float(test_score)
    return out


def log_ceiling(client: Any, run_id: str, ceiling: Mapping[str, Any]) -> dict[str, float]:
    """The feature spec's ``ceiling`` (what the generator's true probabilities reach on the test rows) as
    ``ceiling/<task>_auc`` metrics on the pipeline's parent run, beside the models' ``<task>_auc/<model>``."""
    from mlflow.entities import Metric

    values = {f"ceiling/{task}_{name}": float(v) for task, ms in (ceiling or {}).get("metrics", {}).items()
              for name, v in ms.items() if _finite(v)}
    if values:
        now = int(time.time() * 1000)
        retry_call(client.log_batch, run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    return values


def _log_on_parent(client: Any, run_id: str, model_name: str, metrics: Mapping[str, float]) -> None:
    """A model run's key metrics on its parent as ``<metric>/<model>``: the parent's row in the runs table then
    compares the models side by side (same metric, adjacent columns) without expanding it."""
    from mlflow.entities import Metric

    parent = retry_call(client.get_run, run_id).data.tags.get(TAGS["parent"])
    if not parent or not metrics:
        return
    now = int(time.time() * 1000)
    retry_call(client.log_batch, parent, metrics=[Metric(f"{k}/{model_name}", v, now, 0) for k, v in metrics.items()])
    share_view(client, parent, list(metrics))


def _final_metrics(result: Any) -> dict[str, float]:
    """``test/<task>/<metric>``, ``test/score``, ``val/score`` (when the train step recorded it), the short names
    and the run's facts (best epoch, parameters, seconds)."""
    final = {f"test/{task}/{name}": float(value) for task, values in result.test_metrics.items()
             for name, value in values.items() if _finite(value)}
    final["test/score"] = float(result.test_score)
    val_score = getattr(result, "val_score", None)
    if _finite(val_score):
        final["val/score"] = float(val_score)
    final.update(key_metrics(result.test_metrics, result.test_score))
    final.update({"best_epoch": float(result.best_epoch), "best/val_monitor": float(result.best_score),
                  "n_parameters": float(result.n_parameters), "train_seconds": float(result.train_seconds)})
    return final


def _log_val_metrics(client: Any, run_id: str, result: Any) -> None:
    """The restored checkpoint's validation metrics with their intervals (``val/<task>/<metric>``, ``..._lo``,
    ``..._hi``), at the best epoch's step, beside that epoch's ``val/<task>/auc``; keys the epoch already holds are
    not logged twice."""
    from mlflow.entities import Metric

    history = list(getattr(result, "history", None) or [])
    epoch = int(result.best_epoch)
    logged = history[epoch] if 0 <= epoch < len(history) else {}
    now = int(time.time() * 1000)
    items = [Metric(f"val/{task}/{name}", float(v), now, epoch)
             for task, values in (getattr(result, "val_metrics", None) or {}).items() for name, v in values.items()
             if _finite(v) and f"val/{task}/{name}" not in logged]
    if items:
        retry_call(client.log_batch, run_id, metrics=items)


def _log_history(client: Any, run_id: str, history: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch history, for a run whose trainer had no MLflow callback."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(row.get("epoch", step))) for step, row in enumerate(history)
             for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), 1000):
        retry_call(client.log_batch, run_id, metrics=items[i:i + 1000])


def _log_out_dir(client: Any, run_id: str, out_dir: Path) -> None:
    """The files the train step wrote: spec, params, metrics, the ONNX file once exported, and its plots."""
    log_artifact_files(client, run_id, [out_dir / "feature_spec.json", out_dir / "params.json",
                                        out_dir / "metrics.json"])
    log_artifact_files(client, run_id, [out_dir / "model.onnx"], "onnx")
    log_artifact_files(client, run_id, sorted((out_dir / "plots").glob("*.png")), "plots")


def log_train_result(client: Any, run_id: str, result: Any, *, log_history: Optional[bool] = None) -> dict[str, float]:
    """Params, final metrics and the files of one ``workflow.training.train.TrainResult`` on its model run.

    Only logs: the plots are the PNG files the train step drew into ``<out_dir>/plots/``; nothing is drawn or
    inferred here. ``log_history`` None: the per-epoch history is logged only when the run has none yet (no
    callback ran). The key metrics also go under short names (:func:`key_metrics`) on this run and as
    ``<name>/<model>`` on its parent run. Returns the final metrics as logged on this run.
    """
    from mlflow.entities import Metric

    log_params(client, run_id, {"model_name": result.model_name, **dict(result.params)})
    set_tags(client, run_id, {TAGS["model_name"]: result.model_name})
    final = _final_metrics(result)
    now = int(time.time() * 1000)
    retry_call(client.log_batch, run_id, metrics=[Metric(k, v, now, 0) for k, v in final.items()])
    _log_on_parent(client, run_id, result.model_name, key_metrics(result.test_metrics, result.test_score))
    if log_history is None:
        log_history = not retry_call(client.get_metric_history, run_id, "train/loss")
    if log_history and result.history:
        _log_history(client, run_id, result.history)
    _log_val_metrics(client, run_id, result)
    _log_out_dir(client, run_id, Path(result.out_dir))
    return final


def search_budget_notes(client: Any, parent_run_id: str) -> list[str]:
    """``<model>: <what the search budget did>`` for each model run of the pipeline run whose search a budget cut
    short or bounded (the search step's ``mtlp.search.budget`` tag); [] when none did."""
    try:
        runs = retry_call(client.search_runs, [retry_call(client.get_run, parent_run_id).info.experiment_id],
                          filter_string=f"tags.`{TAGS['parent']}` = '{parent_run_id}' and "
                                        f"tags.`{TAGS['role']}` = 'model'")
    except Exception as e:  # noqa: BLE001 - a note in the summary must not fail the run
        log.debug("could not read the search budget notes: %s", e)
        return []
    return sorted(f"{r.data.tags.get(TAGS['model_name'], r.info.run_name)}: {r.data.tags[TAGS['search_budget']]}"
                  for r in runs if r.data.tags.get(TAGS["search_budget"]))


def log_comparison(client: Any, parent_run_id: str, table: Mapping[str, Mapping[str, float]],
                   out_dir: str | os.PathLike, reference: Optional[Mapping[str, float]] = None,
                   champion: Optional[str] = None, title: str = "metrics by model") -> Path:
    """The models of one pipeline run compared on its parent run under ``comparison/``: a bar chart and the table
    as ``comparison.json`` (``table``: model -> ``val_score``, ``test_score`` and ``<task>/<metric>``);
    ``reference`` ({``<task>/auc``: value}) draws e.g. the generator's ceiling; ``champion`` marks that model."""
    from ..reports import plots as plotting

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "comparison.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2, sort_keys=True))
    png = plotting.model_comparison(table, out_dir / "model_comparison.png", title=title, reference=reference,
                                    champion=champion)
    log_artifact_files(client, parent_run_id, [png, out_dir / "comparison.json"], "comparison")
    return png


def log_search_plots(client: Any, run_id: str, values: Sequence[Optional[float]], out_dir: str | os.PathLike,
                     maximize: bool = True, extra_files: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The search's plots on ``run_id`` (usually the parent run) under ``search/``: the objective per trial with
    the best-so-far line, plus any ``extra_files`` the search step drew itself (e.g. Optuna's matplotlib plots)."""
    from ..reports import plots as plotting

    out_dir = Path(out_dir)
    files = [plotting.search_history(values, out_dir / "search_history.png", maximize=maximize)]
    files += [Path(p) for p in extra_files]
    log_artifact_files(client, run_id, files, "search")
    return files
