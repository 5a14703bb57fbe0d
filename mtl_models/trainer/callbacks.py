"""The callback contract the pipeline (MLflow logging, Optuna pruning) is written against.

Methods are no-ops by default. A callback may raise to stop training: ``StopTraining`` ends ``fit``
normally (best checkpoint restored, ``on_fit_end`` called); any other exception propagates unchanged,
after the epoch's resumable checkpoint has been written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import MTLTrainer

__all__ = ["Callback", "StopTraining", "CallbackList"]


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` early as if patience had run out."""


class Callback:
    def on_fit_start(self, trainer: "MTLTrainer") -> None:
        """Before the first epoch (also when resuming)."""

    def on_epoch_end(self, trainer: "MTLTrainer", epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch; ``metrics`` uses the keys documented on ``MTLTrainer``."""

    def on_fit_end(self, trainer: "MTLTrainer") -> None:
        """After the best checkpoint has been restored."""


class CallbackList:
    """Calls every callback in order; exceptions are not swallowed."""

    def __init__(self, callbacks: Iterable[Callback] | None) -> None:
        self.callbacks: Sequence[Callback] = list(callbacks or [])
        for cb in self.callbacks:
            if not all(hasattr(cb, m) for m in ("on_fit_start", "on_epoch_end", "on_fit_end")):
                raise TypeError(f"callback {cb!r} must implement the Callback methods (subclass mtl_models.Callback)")

    def on_fit_start(self, trainer: "MTLTrainer") -> None:
        for cb in self.callbacks:
            cb.on_fit_start(trainer)

    def on_epoch_end(self, trainer: "MTLTrainer", epoch: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, epoch, dict(metrics))

    def on_fit_end(self, trainer: "MTLTrainer") -> None:
        for cb in self.callbacks:
            cb.on_fit_end(trainer)
