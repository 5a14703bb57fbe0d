"""The study's outcome: best params (or the Pareto front), counts, ``search_summary.json``, plots, MLflow logging."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .space import SearchSpace
from .storage import PathLike
from .study import BUDGET_ATTR, CAPPED_ATTR, EPOCHS_ATTR, MONITOR_ATTR, PARAMS_ATTR, is_surplus, study_counts
from .trial_run import tracking_uri

log = logging.getLogger(__name__)

SUMMARY_FILE = "search_summary.json"


@dataclass
class SearchResult:
    model_name: str
    study_name: str
    storage: str                      # password masked
    directions: list[str]
    objective: str
    n_trials: int                     # the total asked for (COMPLETE + PRUNED)
    best_params: dict[str, Any]       # flat, resolved: feed these to workflow.training.train.train
    best_value: Optional[float]       # single objective: the best trial's value; multi: None
    best_values: Optional[list[float]]
    best_trial_number: Optional[int]
    n_complete: int
    n_pruned: int
    n_failed: int                     # failed trials, surplus ones excluded
    n_running: int
    epochs_spent: int                 # epochs trained over all finished trials
    pareto: list[dict[str, Any]] = field(default_factory=list)
    n_oversize: int = 0               # skipped untrained: more parameters than search.max_params
    n_capped: int = 0                 # trials whose training search.trial_timeout stopped
    budget_note: str = ""             # in words, when a budget cut the search short or bounded it
    summary_path: Optional[Path] = None
    plot_paths: list[Path] = field(default_factory=list)
    work_dir: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary_path"] = str(self.summary_path) if self.summary_path else None
        d["plot_paths"] = [str(p) for p in self.plot_paths]
        d["work_dir"] = str(self.work_dir) if self.work_dir else None
        return d


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and strictly better in one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


# ---------------------------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------------------------

def _saver(out_dir: Path, paths: list[Path]) -> Callable[[str, Callable[[], Any]], None]:
    """``save(name, draw)``: draw one Optuna figure into ``out_dir/name``; a figure that cannot be drawn
    (too few trials, a constant parameter...) is skipped."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    def save(name: str, draw: Callable[[], Any]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else (ax.flat[0].figure if hasattr(ax, "flat") else plt.gcf())
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            paths.append(out_dir / name)
        except Exception as e:
            log.info("plot %s skipped: %s", name, e)
        finally:
            plt.close("all")

    return save


def _multi_plots(study: Any, keys: Sequence[str], n_complete: int, save: Callable[..., None]) -> None:
    from optuna.visualization import matplotlib as ovm

    for i, key in enumerate(keys):
        tag, target = key.split("/")[1], (lambda t, i=i: t.values[i])
        save(f"optimization_history_{tag}.png",
             lambda target=target, key=key: ovm.plot_optimization_history(study, target=target, target_name=key))
        if n_complete >= 2:
            save(f"param_importances_{tag}.png",
                 lambda target=target, key=key: ovm.plot_param_importances(study, target=target, target_name=key))
    if len(keys) in (2, 3):
        save("pareto_front.png", lambda: ovm.plot_pareto_front(study, target_names=list(keys)))


def draw_plots(study: Any, settings: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances, intermediate values (single) or the Pareto front (multi)."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    keys, paths = list(settings["metric_keys"]), []
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    save = _saver(out_dir, paths)
    if len(keys) > 1:
        _multi_plots(study, keys, n_complete, save)
        return paths
    save("optimization_history.png", lambda: ovm.plot_optimization_history(study, target_name=keys[0]))
    if n_complete >= 2:
        save("param_importances.png", lambda: ovm.plot_param_importances(study, target_name=keys[0]))
    save("intermediate_values.png", lambda: ovm.plot_intermediate_values(study))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# the outcome
# ---------------------------------------------------------------------------------------------------------------

def _pareto(complete: list[Any], directions: Sequence[str]) -> tuple[Optional[Any], list[dict[str, Any]]]:
    """(the front's trial with the best mean score: the model to train, the front as plain data)."""
    front = [t for t in complete if not any(dominates(o.values, t.values, directions) for o in complete)]
    pareto = [{"number": t.number, "values": list(t.values), "val_monitor": t.user_attrs.get(MONITOR_ATTR),
               "params": t.user_attrs.get(PARAMS_ATTR, {})} for t in sorted(front, key=lambda t: t.number)]
    best = max(front, key=lambda t: t.user_attrs.get(MONITOR_ATTR, -math.inf)) if front else None
    return best, pareto


def _best(trials: list[Any], directions: Sequence[str]) -> tuple[Optional[Any], list[dict[str, Any]]]:
    """(best trial or None, Pareto front) among the complete trials with finite values."""
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and all(math.isfinite(v) for v in t.values)]
    if len(directions) > 1:
        return _pareto(complete, directions)
    pick = max if directions[0] == "maximize" else min
    return (pick(complete, key=lambda t: t.values[0]) if complete else None), []


def _best_params(settings: Mapping[str, Any], best_trial: Optional[Any]) -> dict[str, Any]:
    """The best trial's flat params resolved against the model's defaults (the defaults when none finished)."""
    from ..training.model_factory import resolve_params

    if best_trial is None:
        return resolve_params(settings["model_name"], None)
    space = SearchSpace(settings["model_name"], settings["space"])
    return resolve_params(settings["model_name"], best_trial.user_attrs.get(PARAMS_ATTR)
                          or space.params_of(best_trial.params))


def _epochs_spent(trials: list[Any]) -> int:
    return sum(int(t.user_attrs.get(EPOCHS_ATTR, len(t.intermediate_values))) for t in trials
               if t.state.name in ("COMPLETE", "PRUNED", "FAIL"))


def _trial_rows(trials: list[Any]) -> list[dict[str, Any]]:
    return [{"number": t.number, "state": t.state.name, "values": list(t.values) if t.values is not None else None,
             "epochs_run": t.user_attrs.get(EPOCHS_ATTR), "params": t.params,
             "retry_of": t.system_attrs.get("failed_trial"), "surplus": is_surplus(t)} for t in trials]


def _write_summary(result: SearchResult, settings: Mapping[str, Any], trials: list[Any], n_surplus: int) -> Path:
    from mtl_models.atomic import atomic_path

    summary = result.to_dict()
    summary.update(metric_keys=settings["metric_keys"], n_surplus=n_surplus,
                   n_finished=sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
                   search_space=settings["space"], pruner=settings["pruner"], n_epoch=settings["n_epoch"],
                   trials=_trial_rows(trials), written_at=datetime.now().isoformat(timespec="seconds"))
    path = Path(result.work_dir) / SUMMARY_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return path


def budget_note(study: Any, settings: Mapping[str, Any], n_oversize: int, n_capped: int) -> str:
    """What the budget did, in words ("" when it did nothing): the time budget stopping the search after some of
    its trials, trials stopped by the per-trial cap, models skipped for their size."""
    notes = []
    cut = study.user_attrs.get(BUDGET_ATTR)
    if cut:
        notes.append(f"search.timeout {cut['timeout']:g} s stopped the search after {cut['done']} of {cut['target']} "
                     "trials")
    if n_capped:
        notes.append(f"search.trial_timeout {settings.get('trial_timeout'):g} s stopped {n_capped} trial(s) early")
    if n_oversize:
        notes.append(f"{n_oversize} sampled model(s) over search.max_params {settings.get('max_params')} skipped")
    return "; ".join(notes)


def summarize(study: Any, settings: Mapping[str, Any], work_dir: PathLike, storage_desc: str,
              n_trials: Optional[int] = None, plots: bool = True) -> SearchResult:
    """The study's outcome; writes ``search_summary.json`` and the plots into ``work_dir``."""
    c, trials, directions = study_counts(study), study.get_trials(deepcopy=False), list(settings["directions"])
    best_trial, pareto = _best(trials, directions)
    values = [float(v) for v in best_trial.values] if best_trial is not None else None
    best_value = values[0] if values and len(directions) == 1 else None
    result = SearchResult(
        model_name=settings["model_name"], study_name=study.study_name, storage=storage_desc,
        directions=directions, objective=str(settings["objective"]), n_trials=int(n_trials or settings["n_trials"]),
        best_params=_best_params(settings, best_trial), best_value=best_value, best_values=values,
        best_trial_number=best_trial.number if best_trial is not None else None, n_complete=c.complete,
        n_pruned=c.pruned, n_failed=c.failed, n_running=c.running, epochs_spent=_epochs_spent(trials),
        pareto=pareto, work_dir=Path(work_dir), n_oversize=c.oversize,
        n_capped=sum(1 for t in trials if t.user_attrs.get(CAPPED_ATTR)))
    result.budget_note = budget_note(study, settings, result.n_oversize, result.n_capped)
    if plots:
        result.plot_paths = draw_plots(study, settings, Path(work_dir) / "plots")
    result.summary_path = _write_summary(result, settings, trials, c.surplus)
    return result


def log_to_mlflow(result: SearchResult, uri: Optional[str], parent_run_id: str) -> None:
    """The summary and plots as artifacts of the model's run, the counts as ``search/*`` metrics, two tags."""
    from mlflow.entities import Metric

    from ..tracking import TAGS, client_for, log_artifact_files, retry_call

    client = client_for(tracking_uri(uri))
    log_artifact_files(client, parent_run_id, [result.summary_path], "search")
    log_artifact_files(client, parent_run_id, result.plot_paths, "search/plots")
    now = int(time.time() * 1000)
    metrics = {"search/n_complete": result.n_complete, "search/n_pruned": result.n_pruned,
               "search/n_failed": result.n_failed, "search/epochs_spent": result.epochs_spent}
    if result.best_value is not None:
        metrics["search/best_value"] = result.best_value
    retry_call(client.log_batch, parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    retry_call(client.set_tag, parent_run_id, "mtlp.search.study", result.study_name)
    if result.best_trial_number is not None:
        retry_call(client.set_tag, parent_run_id, "mtlp.search.best_trial", str(result.best_trial_number))
    if result.budget_note:  # the run's summary repeats it (workflow.tracking.results.search_budget_notes)
        retry_call(client.set_tag, parent_run_id, TAGS["search_budget"], result.budget_note)
