"""One line per finished trial, and the search's opening and closing lines, on stderr."""

from __future__ import annotations

import sys
from typing import Any, Sequence

from .study import CAPPED_ATTR, OVERSIZE_ATTR, study_counts


def say(model_name: str, text: str) -> None:
    print(f"[search {model_name}] {text}", file=sys.stderr, flush=True)


def _best(study: Any, n_complete: int) -> str:
    if len(study.directions) != 1 or not n_complete:
        return ""
    try:
        return f" best={study.best_value:.4f} (#{study.best_trial.number})"
    except ValueError:  # no finite value yet
        return ""


class Progress:
    """``study.optimize`` callback: the trial's state and value, and the study's totals so far."""

    def __init__(self, model_name: str, target: int, enabled: bool) -> None:
        self.model_name, self.target, self.enabled = model_name, target, enabled

    def __call__(self, study: Any, trial: Any) -> None:
        if not self.enabled:
            return
        c = study_counts(study)
        if trial.user_attrs.get(OVERSIZE_ATTR):
            say(self.model_name, f"trial {trial.number} skipped untrained: {trial.user_attrs[OVERSIZE_ATTR]:,} "
                                 "parameters > search.max_params (not counted)")
            return
        value = "-" if trial.values is None else ", ".join(f"{v:.4f}" for v in trial.values)
        if trial.user_attrs.get(CAPPED_ATTR):
            value += f" (stopped by search.trial_timeout after {trial.user_attrs[CAPPED_ATTR]} epoch(s))"
        extra = f" after {len(trial.intermediate_values)} epoch(s)" if trial.state.name == "PRUNED" else ""
        say(self.model_name, f"trial {trial.number} {trial.state.name}{extra} value={value} | "
                             f"{c.done}/{self.target} done (complete {c.complete}, pruned {c.pruned}, "
                             f"failed {c.failed}, running {c.running}){_best(study, c.complete)}")


def opening(study: Any, model_name: str, desc: str, n_trials: int, n_searched: int, keys: Sequence[str],
            directions: Sequence[str], n_workers: int) -> None:
    say(model_name, f"study {study.study_name!r} on {desc}: {study_counts(study).done}/{n_trials} trials done, "
                    f"{n_searched} hyperparameters searched, objective {list(keys)} ({list(directions)}), "
                    f"{n_workers} worker(s)")


def closing(result: Any) -> None:
    best = (f"best {result.best_value:.4f} (trial {result.best_trial_number})" if result.best_value is not None
            else f"Pareto front of {len(result.pareto)}")
    say(result.model_name, f"done: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} "
                           f"failed, {result.epochs_spent} epochs; {best}"
                           + (f"; {result.budget_note}" if result.budget_note else ""))
