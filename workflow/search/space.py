"""Search spaces per model: defaults, overrides from the config file, and sampling into flat hyperparameters.

A space is a mapping from a flat hyperparameter name (the keys of ``model_factory.default_params``) to a
spec. The default space is ``DEFAULT_COMMON`` plus the model's zoo entry's ``space`` (``mtl_models.zoo``).
The spec forms, as they read in the config file::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # float range (log scale when ``log``)
    n_expert: {low: 2, high: 16}                  # int range (both bounds ints); ``step`` allowed
    weighting: [equal, uwl, gradnorm]            # categorical
    activation: relu                              # a fixed value (not searched, still applied)
    expert_dims: {depth: [1, 4], widths: [32, 64, 128, 256], shape: funnel}   # a list of layer widths
    n_level: null                                 # drop from the search: the model default is used

``*_dims`` specs sample a depth (int, or ``[low, high]``) and widths from a set. ``shape``: ``funnel``
(first width sampled, each further layer half the previous, never below the smallest width in the set),
``constant`` (one width for every layer) or ``free`` (each layer's width sampled on its own).

Overrides (``search_space`` in the config) are ``{"common": {...}, "<model>": {...}}``, or one flat mapping
applied to every model. ``common`` keys a model does not have are skipped (a model without experts searches
only what it has); a key under a model's own section that the model does not have is an error. Overrides are
meant to narrow the default (``within``); one that reaches beyond it is applied and listed in ``widened``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional

from mtl_models import zoo

from ..training.model_factory import default_params

__all__ = ["DEFAULT_COMMON", "SearchSpace", "default_space", "build_space", "within", "with_default",
           "DIMS_SHAPES"]

DIMS_SHAPES = ("funnel", "constant", "free")

# Every model searches these, on any data (what worked on Adult, docs/benchmarks.md part 1, made the default):
# the dense columns' encoding over target-aware tree bins fitted on the train split, AdamW with its weight decay,
# the lr schedule. ``default_space(name, spec)`` fits them to the prepared data (``_fit_to_data``).
DEFAULT_COMMON: dict[str, Any] = {
    "numeric_encoding": ["bins", "gated_bins", "periodic"],
    "bin_source": "tree",
    "n_bins": [16, 32],
    "numeric_embed_dim": [8, 16],
    "periodic_sigma": {"low": 0.05, "high": 1.0, "log": True},
    "embed_dim": [8, 16, 32],
    "lr": {"low": 1e-3, "high": 4e-3, "log": True},
    "lr_schedule": ["constant", "cosine"],
    "optimizer": "adamw",
    "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.3},
    "norm": "none",
    "weighting": ["equal", "uwl"],
    "tower_dims": {"depth": [1, 2], "widths": [16, 32, 64], "shape": "funnel"},
}
NUMERIC_KEYS = ("numeric_encoding", "bin_source", "n_bins", "numeric_embed_dim", "periodic_sigma")
MANY_ROWS, FEW_ROWS = 100_000, 10_000  # train rows from which 64 tree bins per label join, below which 8 replace 32
def _is_dims_key(name: str) -> bool:
    return name.endswith("_dims")


def _check_spec(model_name: str, name: str, spec: Any) -> None:
    where = f"search space for {model_name}: {name!r}"
    if _is_dims_key(name):
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"depth", "widths", "shape"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: depth, widths, shape)")
            depth = spec.get("depth", 1)
            lo, hi = (depth, depth) if isinstance(depth, int) else tuple(depth)
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
                raise ValueError(f"{where}: depth must be an int or [low, high] with 0 <= low <= high, got {depth!r}")
            widths = spec.get("widths")
            if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
                raise ValueError(f"{where}: widths must be a non-empty list of positive ints, got {widths!r}")
            if spec.get("shape", "funnel") not in DIMS_SHAPES:
                raise ValueError(f"{where}: shape must be one of {list(DIMS_SHAPES)}, got {spec.get('shape')!r}")
            return
        if isinstance(spec, list) and all(isinstance(w, int) for w in spec):
            return  # a fixed list of widths
        raise ValueError(f"{where}: expected {{depth, widths, shape}} or a fixed list of ints, got {spec!r}")
    if isinstance(spec, Mapping):
        if "low" not in spec or "high" not in spec:
            raise ValueError(f"{where}: a range needs low and high, got {dict(spec)!r}")
        unknown = set(spec) - {"low", "high", "log", "step", "type"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: low, high, log, step, type)")
        if not spec["low"] <= spec["high"]:
            raise ValueError(f"{where}: low > high in {dict(spec)!r}")
        if spec.get("log") and spec["low"] <= 0:
            raise ValueError(f"{where}: a log range needs low > 0")
    elif isinstance(spec, (list, tuple)) and not spec:
        raise ValueError(f"{where}: an empty list of choices")


class SearchSpace:
    """One model's resolved space; ``sample(trial)`` -> flat params for ``model_factory``/``train``."""

    def __init__(self, model_name: str, specs: Mapping[str, Any]) -> None:
        allowed = default_params(model_name)  # an unknown model is an error naming the zoo
        for name, spec in specs.items():
            if name not in allowed:
                raise ValueError(f"search space for {model_name}: {name!r} is not a hyperparameter of the model; "
                                 f"allowed: {sorted(allowed)}")
            _check_spec(model_name, name, spec)
        self.model_name = model_name
        self.specs: dict[str, Any] = copy.deepcopy(dict(specs))
        self.widened: list[str] = []  # keys a config searches beyond the default space (``build_space``)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.specs)

    def searched(self) -> list[str]:
        """Names of the flat hyperparameters that vary (fixed values excluded)."""
        return [n for n, s in self.specs.items() if isinstance(s, (Mapping, tuple)) or
                (isinstance(s, list) and not _is_dims_key(n))]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Flat params from an ``optuna`` trial (or ``optuna.trial.FixedTrial`` of a trial's ``params``)."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if _is_dims_key(name):
                out[name] = self._sample_dims(trial, name, spec)
            elif isinstance(spec, Mapping):
                out[name] = self._sample_range(trial, name, spec)
            elif isinstance(spec, (list, tuple)):
                out[name] = trial.suggest_categorical(name, list(spec))
            else:
                out[name] = spec
        return out

    @staticmethod
    def _sample_range(trial: Any, name: str, spec: Mapping[str, Any]) -> Any:
        lo, hi = spec["low"], spec["high"]
        kind = spec.get("type") or ("int" if isinstance(lo, int) and isinstance(hi, int) and not spec.get("log") else "float")
        if kind == "int":
            return trial.suggest_int(name, int(lo), int(hi), step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        if spec.get("step") is not None:
            return trial.suggest_float(name, float(lo), float(hi), step=float(spec["step"]))
        return trial.suggest_float(name, float(lo), float(hi), log=bool(spec.get("log", False)))

    @staticmethod
    def _sample_dims(trial: Any, name: str, spec: Any) -> list[int]:
        if isinstance(spec, list):
            return [int(w) for w in spec]
        depth = spec.get("depth", 1)
        lo, hi = (depth, depth) if isinstance(depth, int) else (int(depth[0]), int(depth[1]))
        base = name[: -len("_dims")]
        n = trial.suggest_int(f"{base}_depth", lo, hi) if lo != hi else lo
        widths = sorted(int(w) for w in spec["widths"])
        shape = spec.get("shape", "funnel")
        if n == 0:
            return []
        if shape == "free":
            return [int(trial.suggest_categorical(f"{base}_width_{i}", widths)) for i in range(n)]
        first = int(trial.suggest_categorical(f"{base}_width", widths)) if len(widths) > 1 else widths[0]
        if shape == "constant":
            return [first] * n
        floor = widths[0]
        return [max(floor, first >> i) for i in range(n)]

    def params_of(self, trial_params: Mapping[str, Any]) -> dict[str, Any]:
        """The flat params a finished trial's Optuna ``params`` stand for (e.g. the best trial's)."""
        import optuna

        return self.sample(optuna.trial.FixedTrial(dict(trial_params)))

    def n_points_hint(self) -> float:
        """Rough size of the discrete part of the space (inf with any float range); for messages only."""
        size = 1.0
        for name, spec in self.specs.items():
            if isinstance(spec, (list, tuple)) and not _is_dims_key(name):
                size *= len(spec)
            elif isinstance(spec, Mapping) and "low" in spec:
                lo, hi = spec["low"], spec["high"]
                if isinstance(lo, int) and isinstance(hi, int) and not spec.get("log"):
                    size *= (hi - lo) // int(spec.get("step", 1)) + 1
                else:
                    return math.inf
        return size


def _fit_to_data(specs: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The default space fitted to a prepared ``FeatureSpec``: the zoo's hidden widths follow the number of input
    columns (the widest choice the power of two at or above 16 per column, within 64..512, its half and quarter),
    64 tree bins join from ``MANY_ROWS`` train rows and 8 replace 32 below ``FEW_ROWS``, bins come from quantiles
    when no label is a classification (trees need one), and data without a varying dense column drops the numeric
    keys."""
    from ..data.encoders import DenseEncoder

    dense = [f for f in spec.features if isinstance(f, DenseEncoder) and f.min != f.max]
    if not dense:
        for key in NUMERIC_KEYS:
            specs.pop(key, None)
    elif "classification" not in spec.task_types or any(f.tree_edges is None for f in dense):
        specs["bin_source"] = "quantile"
    elif isinstance(specs.get("n_bins"), list) and int(spec.rows.get("train", 0)) >= MANY_ROWS:
        specs["n_bins"] = sorted(set(specs["n_bins"]) | {64})
    elif isinstance(specs.get("n_bins"), list) and int(spec.rows.get("train", 0)) < FEW_ROWS:
        specs["n_bins"] = sorted(set(specs["n_bins"]) - {32} | {8})
    widest = min(512, max(64, 1 << max(0, 16 * len(spec.features) - 1).bit_length()))
    for key, value in specs.items():  # a registered model's own widths are its author's choice: kept
        if key in ("bottom_dims", "expert_dims") and isinstance(value, Mapping) and value["widths"] == zoo.HIDDEN_WIDTHS:
            value["widths"] = [widest // 4, widest // 2, widest]
    return specs


def default_space(model_name: str, spec: Any = None) -> dict[str, Any]:
    """The default spec mapping for ``model_name`` (a copy); fitted to the prepared data when ``spec`` (a
    ``FeatureSpec``) is given, as the search step does."""
    specs = {**copy.deepcopy(DEFAULT_COMMON), **zoo.space(model_name)}
    return _fit_to_data(specs, spec) if spec is not None else specs


def _values(spec: Any) -> Optional[tuple[str, Any]]:
    """What a spec lets the search pick: ``("range", (lo, hi))``, ``("set", values)`` or ``("fixed", value)``."""
    if isinstance(spec, Mapping) and "low" in spec:
        return "range", (spec["low"], spec["high"])
    if isinstance(spec, (list, tuple)):
        return "set", list(spec)
    return "fixed", spec


def _dims_within(name: str, spec: Any, default: Any) -> bool:
    if not isinstance(default, Mapping):
        return spec == default or isinstance(spec, list) and spec == list(default)
    depth = default.get("depth", 1)
    lo, hi = (depth, depth) if isinstance(depth, int) else tuple(depth)
    widths = set(default.get("widths") or [])
    if isinstance(spec, list):
        return lo <= len(spec) <= hi and set(spec) <= widths
    d = spec.get("depth", 1)
    slo, shi = (d, d) if isinstance(d, int) else tuple(d)
    same_shape = spec.get("shape", "funnel") == default.get("shape", "funnel") or (slo == shi == 1)
    return lo <= slo and shi <= hi and set(spec.get("widths") or []) <= widths and same_shape


def within(name: str, spec: Any, default: Any) -> bool:
    """Whether a config's ``spec`` for ``name`` lies inside the default's (a sub-range, a subset of the choices, a
    value the default could pick); a key the default does not search (absent or fixed) may be fixed to anything."""
    if _is_dims_key(name):
        return default is None or _dims_within(name, spec, default)
    kind, value = _values(spec)
    dkind, dvalue = _values(default) if default is not None else ("fixed", None)
    if dkind == "fixed":
        return kind == "fixed"
    if dkind == "set":
        return set(value if kind == "set" else [value] if kind == "fixed" else [object()]) <= set(dvalue)
    lo, hi = dvalue
    if kind == "range":
        return lo <= value[0] and value[1] <= hi
    values = value if kind == "set" else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi for v in values)


def build_space(model_name: str, overrides: Optional[Mapping[str, Any]] = None, data: Any = None) -> SearchSpace:
    """Defaults for ``model_name`` (fitted to ``data``, a ``FeatureSpec``, when given) overlaid with the config's
    ``search_space`` (see the module docstring).

    A value of ``None`` removes the key from the search (the model default then applies). A config's spec is
    meant to narrow the default's; one that reaches beyond it (``within``) is still applied, and its key is listed
    in the returned space's ``widened`` (the search step names them on stderr).
    """
    specs = default_space(model_name, data)
    defaults = copy.deepcopy(specs)
    allowed = default_params(model_name)
    overrides = dict(overrides or {})
    models = zoo.names()
    sectioned = any(k == "common" or k in models for k in overrides)
    if sectioned:
        stray = [k for k in overrides if k != "common" and k not in models]
        if stray:
            raise ValueError(f"search space overrides: keys {stray} are neither 'common' nor a model name "
                             f"({models}); put hyperparameters under one of those")
        layers = [(dict(overrides.get("common") or {}), False), (dict(overrides.get(model_name) or {}), True)]
    else:
        layers = [(overrides, False)]
    for layer, strict in layers:
        for name, spec in layer.items():
            if name not in allowed:
                if strict:
                    raise ValueError(f"search space for {model_name}: {name!r} is not a hyperparameter of the model; "
                                     f"allowed: {sorted(allowed)}")
                continue  # e.g. n_expert under common: only the models that have experts use it
            if spec is None:
                specs.pop(name, None)
            else:
                specs[name] = copy.deepcopy(spec)
    space = SearchSpace(model_name, specs)
    space.widened = sorted(n for n, spec in specs.items() if n not in defaults or spec != defaults[n]
                           if not within(n, spec, defaults.get(n)))
    return space


def with_default(overrides: Optional[Mapping[str, Any]], name: str, value: Any) -> dict[str, Any]:
    """``overrides`` with ``name`` fixed to ``value`` for every model, unless they already name it (under ``common``,
    a model's section or the flat mapping): e.g. the final training's ``batch_size``, so trials train as it will."""
    out = copy.deepcopy(dict(overrides or {}))
    models = zoo.names()
    if any(k == "common" or k in models for k in out):
        if any(name in (section or {}) for section in out.values()):
            return out
        out["common"] = {**(out.get("common") or {}), name: value}
    elif name not in out:
        out[name] = value
    return out
