"""Hyperparameter search: an Optuna study per model over its search space, with pruning, many workers and resume.

One module per job: :mod:`.storage` (where a study lives), :mod:`.study` (create / load, counts, stale trials;
the only module that touches Optuna internals), :mod:`.objective` (one trial), :mod:`.trial_run` (a trial's
MLflow run), :mod:`.workers` (the trial loop and worker processes), :mod:`.progress`, :mod:`.summary` (best
params, Pareto front, plots, summary file, MLflow logging), :mod:`.run` (the step), :mod:`.cli`. See
``docs/search.md``.
"""

from .cli import main
from .objective import PruningCallback
from .run import search
from .storage import JOURNAL_FILE, describe_storage, open_storage, resolve_storage
from .study import create_or_load_study, load_study, make_pruner, study_counts
from .summary import SUMMARY_FILE, SearchResult, dominates, summarize
from .workers import launch_workers, run_worker

__all__ = ["SearchResult", "search", "run_worker", "launch_workers", "open_storage", "resolve_storage",
           "describe_storage", "create_or_load_study", "load_study", "make_pruner", "summarize", "study_counts",
           "dominates", "PruningCallback", "main", "JOURNAL_FILE", "SUMMARY_FILE"]
