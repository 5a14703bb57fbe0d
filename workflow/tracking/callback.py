"""Per-epoch logging from the trainer: the library (``mtl_models``) stays free of MLflow and only sees this
callback; a failed logging call warns and training goes on.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, Callable, Mapping, Optional

from .retry import retry_call
from .store import client_for

__all__ = ["MlflowCallback"]

log = logging.getLogger("workflow.tracking")


def _system_metrics(trainer: Any = None) -> dict[str, float]:
    try:
        import psutil
    except ImportError:
        return {}
    out: dict[str, float] = {}
    with contextlib.suppress(Exception):
        out["system/cpu_utilization_percentage"] = float(psutil.cpu_percent(interval=None))
        vm = psutil.virtual_memory()
        out["system/system_memory_usage_percentage"] = float(vm.percent)
        out["system/process_rss_megabytes"] = psutil.Process().memory_info().rss / 2 ** 20
    with contextlib.suppress(Exception):
        import torch
        if torch.cuda.is_available():
            out["system/gpu_memory_allocated_megabytes"] = torch.cuda.memory_allocated() / 2 ** 20
            out["system/gpu_max_memory_allocated_megabytes"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


class MlflowCallback:
    """Trainer callback (the ``mtl_models.Callback`` contract) that logs each epoch's metrics to ``run_id``.

    Every logging call is retried (``retries`` extra attempts, exponential backoff from ``backoff`` seconds);
    when a batch still cannot be logged, the callback warns, counts it in ``failed_batches`` and training
    goes on. Non-finite values are logged as they are (MLflow stores NaN/inf) so a diverging run is visible.
    """

    def __init__(self, run_id: str, client: Any = None, tracking_uri: Optional[str] = None, retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 8.0, system_metrics: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.run_id = run_id
        self.client = client if client is not None else client_for(tracking_uri or _current_uri())
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.system_metrics = system_metrics
        self.sleep = sleep
        self.failed_batches = 0
        self.logged_steps: list[int] = []

    def _log(self, metrics: Mapping[str, float], step: int) -> bool:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not items:
            return True
        try:
            for i in range(0, len(items), 1000):
                retry_call(self.client.log_batch, self.run_id, metrics=items[i:i + 1000],
                           attempts=self.retries + 1, backoff=self.backoff, max_backoff=self.max_backoff,
                           sleep=self.sleep)
            return True
        except Exception as e:
            self.failed_batches += 1
            msg = (f"MLflow: could not log {len(items)} metrics for step {step} of run {self.run_id} after "
                   f"{self.retries + 1} attempts ({type(e).__name__}: {e}); training continues")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            return False

    def on_fit_start(self, trainer: Any) -> None:
        if self.system_metrics:
            with contextlib.suppress(Exception):
                import psutil
                psutil.cpu_percent(interval=None)  # primes the CPU counter

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        values = dict(metrics)
        if self.system_metrics:
            values.update(_system_metrics(trainer))
        if self._log(values, int(epoch)):
            self.logged_steps.append(int(epoch))

    def on_fit_end(self, trainer: Any) -> None:
        return None


def _current_uri() -> str:
    import mlflow
    return mlflow.get_tracking_uri()
