"""Task-weighting methods, separate from the architectures (LibMTL style): one class per file, each
registering itself under its config name. A new method is one new file in this folder."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from .base import WEIGHTINGS, Weighting, register_weighting

for _info in pkgutil.iter_modules(__path__):  # every module here registers its class on import
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

from .equal import EqualWeighting  # noqa: E402
from .gradnorm import GradNormWeighting  # noqa: E402
from .uwl import UncertaintyWeighting  # noqa: E402

__all__ = ["Weighting", "WEIGHTINGS", "register_weighting", "build_weighting",
           "EqualWeighting", "UncertaintyWeighting", "GradNormWeighting"]

# keys of adaptive_params that configure the optimizer group, not the method
OPTIMIZER_KEYS = ("method", "lr")


def build_weighting(adaptive_params: Optional[Mapping[str, Any]], task_types: Sequence[str],
                    model: Optional[nn.Module] = None) -> Weighting:
    """``{"method": "uwl", ...}`` -> the registered class built with the remaining keys."""
    params = dict(adaptive_params or {})
    method = str(params.get("method", "equal")).lower()
    if method not in WEIGHTINGS:
        raise ValueError(f"adaptive_params['method'] must be one of {sorted(WEIGHTINGS)}, got {method!r}")
    kwargs = {k: v for k, v in params.items() if k not in OPTIMIZER_KEYS}
    try:
        return WEIGHTINGS[method](task_types, model, **kwargs)
    except TypeError as err:
        raise ValueError(f"adaptive_params for {method!r} has an unknown key: {err}") from err
