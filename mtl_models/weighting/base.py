"""The weighting interface: per-task losses in, one backward pass done, the weights used out.

Weighting objects are ``nn.Module``s that live beside the model (their learnable state is not in the
model's ``state_dict``); the trainer puts their parameters in a separate optimizer group without
weight decay and checkpoints ``weighting.state_dict()`` next to the model's.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional, Sequence

from torch import Tensor, nn

__all__ = ["Weighting", "WEIGHTINGS", "register_weighting"]

WEIGHTINGS: dict[str, type["Weighting"]] = {}


def register_weighting(name: str) -> Callable[[type["Weighting"]], type["Weighting"]]:
    """Class decorator: makes ``adaptive_params={"method": name}`` build this class."""
    def wrap(cls: type["Weighting"]) -> type["Weighting"]:
        if name in WEIGHTINGS:
            raise ValueError(f"weighting method {name!r} is registered twice")
        cls.name = name
        WEIGHTINGS[name] = cls
        return cls
    return wrap


def _identity(t: Tensor) -> Tensor:
    return t


class Weighting(nn.Module):
    """Subclasses implement ``backward`` (and ``current_weights`` when the weights are state)."""

    name: ClassVar[str] = ""

    def __init__(self, task_types: Sequence[str], model: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.task_types = list(task_types)
        self.n_task = len(self.task_types)
        self.model = [model]  # a list, so the model's parameters are not registered as ours
        self.distributed = False
        self.mean_over_ranks: Callable[[Tensor], Tensor] = _identity

    def distribute(self, mean_over_ranks: Callable[[Tensor], Tensor]) -> None:
        """Called by the trainer under data parallelism with the all-reduce average over ranks. Each rank
        sees only its shard of the batch, and DDP averages the model's gradients but not ours: a method
        with state must build its update from global quantities (averaged losses, gradients or norms) so
        that its state stays identical on every rank."""
        self.distributed = True
        self.mean_over_ranks = mean_over_ranks

    def backward(self, losses: Tensor, extra_loss: Optional[Tensor] = None) -> Tensor:
        """losses: ``[n_task]`` (with graph). Runs the backward pass of the weighted total (plus
        ``extra_loss``, already weighted) and returns the ``[n_task]`` weights used, detached."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after ``optimizer.step()`` (GradNorm renormalises its weights here)."""

    def current_weights(self) -> Tensor:
        """The ``[n_task]`` weights the next step would use, for reporting."""
        raise NotImplementedError

    @staticmethod
    def _total(weighted: Tensor, extra_loss: Optional[Tensor]) -> Tensor:
        total = weighted.sum()
        return total + extra_loss if extra_loss is not None else total
