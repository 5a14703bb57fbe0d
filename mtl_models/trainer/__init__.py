"""Training: ``MTLTrainer`` plus its callback contract and checkpoint helpers."""

from .callbacks import Callback, StopTraining
from .checkpoint import load_checkpoint, save_checkpoint
from .monitor import Monitor, higher_is_better, task_mean
from .scores import PRIMARY_METRIC, Scores
from .trainer import MTLTrainer

__all__ = ["MTLTrainer", "Scores", "PRIMARY_METRIC", "Monitor", "higher_is_better", "task_mean", "Callback", "StopTraining", "load_checkpoint", "save_checkpoint"]
