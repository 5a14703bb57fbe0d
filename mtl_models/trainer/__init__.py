"""Training: ``MTLTrainer`` plus its callback contract and checkpoint helpers."""

from .callbacks import Callback, StopTraining
from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import MTLTrainer

__all__ = ["MTLTrainer", "Callback", "StopTraining", "load_checkpoint", "save_checkpoint"]
