"""What ``MTLTrainer`` writes to ``last.pt`` (everything ``fit(..., resume=True)`` needs; ``best.pt`` is the best
epoch's ``last.pt``) and how it reads it back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checkpoint import load_checkpoint, rng_state, set_rng_state

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import MTLTrainer

__all__ = ["StateMixin", "BEST_FILE", "LAST_FILE", "CHECKPOINT_FORMAT"]

BEST_FILE, LAST_FILE = "best.pt", "last.pt"
CHECKPOINT_FORMAT = 1


class StateMixin:
    """Checkpoint state of ``MTLTrainer`` (it provides the attributes used here)."""

    def _full_state(self: "MTLTrainer", epoch: int) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "weighting": self.weighting.state_dict(),
                "weighting_method": self.weighting.name, "epoch": epoch, "best_score": self.best_score,
                "task_names": list(self.task_names or []), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "best_epoch": self.best_epoch, "bad_epochs": self._bad_epochs,
                "global_step": self._global_step, "history": self.history, "rng": rng_state()}

    def _load_state(self: "MTLTrainer", state: dict[str, Any]) -> int:
        """Restore a ``_full_state`` -> the epoch it was written after."""
        if state.get("weighting_method") != self.weighting.name:
            raise ValueError(f"checkpoint was trained with weighting {state.get('weighting_method')!r}, "
                             f"this trainer uses {self.weighting.name!r}")
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self._bad_epochs, self._global_step = int(state["bad_epochs"]), int(state["global_step"])
        self.history = [dict(h) for h in state["history"]]
        set_rng_state(state["rng"])
        return int(state["epoch"])

    def restore_best(self: "MTLTrainer") -> bool:
        """Load ``model_path/best.pt`` into the model and weighting; False when there is none. Data-parallel:
        rank 0 reads it and sends the weights to the others (no storage shared between nodes is needed)."""
        path = self.model_path / BEST_FILE
        if not self.dist.broadcast_object(path.exists()):
            return False
        if self.dist.is_main:
            state = load_checkpoint(path, map_location=self.device)
            self.model.load_state_dict(state["model"])
            self.weighting.load_state_dict(state["weighting"])
        if self.dist.enabled:
            self.dist.broadcast_tensors(list(self.model.state_dict().values()))
            self._sync_weighting_from_rank0()
        return True
