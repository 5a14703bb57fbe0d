"""Training: ``MTLTrainer`` plus its callback contract and checkpoint helpers."""

from .callbacks import Callback, StopTraining
from .checkpoint import load_checkpoint, save_checkpoint
from .scores import PRIMARY_METRIC, Scores
from .trainer import MTLTrainer

__all__ = ["MTLTrainer", "Scores", "PRIMARY_METRIC", "Callback", "StopTraining", "load_checkpoint", "save_checkpoint"]
