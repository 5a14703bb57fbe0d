"""Builds any of the five models from a flat hyperparameter dict (what MLflow logs and Optuna samples).

Flat keys, so that a run's params read the same in the MLflow UI, the config file and a search trial:
``embed_dim``, ``bottom_dims`` (SharedBottom/ESMM/AITM), ``expert_dims`` (MMOE/PLE), ``tower_dims``,
``dropout``, ``activation``, ``norm`` (every MLP's normalisation, explicit so that a library default never
changes what a config meant), ``n_expert`` (MMOE), ``n_level``/``n_expert_specific``/``n_expert_shared``
(PLE), ``attention_dim`` (AITM); the numeric encoding of the dense features: ``numeric_encoding`` (one of
``feature_spec.NUMERIC_ENCODINGS``), ``bin_source`` (quantile / tree), ``n_bins``, ``numeric_embed_dim``,
``periodic_sigma``; training keys (``lr``, ``lr_schedule``, ``optimizer``, ``weight_decay``, ``weighting``,
``gradnorm_alpha``, ``batch_size``) ride along and are ignored here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["MODEL_NAMES", "ARCH_KEYS", "TRAIN_KEYS", "default_params", "build_model", "resolve_params"]

MODEL_NAMES = ("shared_bottom", "esmm", "mmoe", "ple", "aitm")

_COMMON = {"embed_dim": 16, "tower_dims": [32], "dropout": 0.1, "activation": "relu", "norm": "none",
           "numeric_encoding": "standard", "bin_source": "quantile", "n_bins": 32, "numeric_embed_dim": 8,
           "periodic_sigma": 0.01}
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "shared_bottom": {"bottom_dims": [128, 64]},
    "esmm": {"bottom_dims": [128, 64]},
    "mmoe": {"n_expert": 8, "expert_dims": [128, 64]},
    "ple": {"n_level": 2, "n_expert_specific": 2, "n_expert_shared": 2, "expert_dims": [128, 64]},
    "aitm": {"bottom_dims": [128, 64], "attention_dim": 64},
}
TRAIN_KEYS = {"lr": 1e-3, "lr_schedule": "constant", "optimizer": "adam", "weight_decay": 0.0, "weighting": "equal",
              "gradnorm_alpha": 1.5, "batch_size": 1024}
ARCH_KEYS = {name: set(_COMMON) | set(d) for name, d in _ARCH_DEFAULTS.items()}


def _check_model(model_name: str) -> None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose from {list(MODEL_NAMES)}")


def default_params(model_name: str) -> dict[str, Any]:
    """Every key the model understands, with the defaults used when a config or trial leaves it out."""
    _check_model(model_name)
    return {**_COMMON, **_ARCH_DEFAULTS[model_name], **TRAIN_KEYS}


def resolve_params(model_name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``; a key the model does not have is an error, not silently dropped."""
    resolved = default_params(model_name)
    unknown = set(params or {}) - set(resolved)
    if unknown:
        raise ValueError(f"unknown hyperparameters for {model_name}: {sorted(unknown)}; allowed: {sorted(resolved)}")
    resolved.update(params or {})
    return resolved


def _mlp(dims: Sequence[int], p: Mapping[str, Any]) -> dict[str, Any]:
    return {"dims": list(dims), "dropout": p["dropout"], "activation": p["activation"], "norm": p["norm"]}


def build_model(model_name: str, spec: Any, params: Mapping[str, Any] | None = None):
    """A fresh model for ``spec`` (a ``FeatureSpec``: its features and task types) and ``params``."""
    from mtl_models import AITM, ESMM, MMOE, PLE, SharedBottom

    p = resolve_params(model_name, params)
    features = spec.to_features(embed_dim=int(p["embed_dim"]), numeric_encoding=str(p["numeric_encoding"]),
                                n_bins=int(p["n_bins"]), numeric_embed_dim=int(p["numeric_embed_dim"]),
                                periodic_sigma=float(p["periodic_sigma"]), bin_source=str(p["bin_source"]))
    task_types = list(spec.task_types)
    towers = [_mlp(p["tower_dims"], p) for _ in task_types]
    if model_name == "shared_bottom":
        return SharedBottom(features=features, task_types=task_types, bottom_params=_mlp(p["bottom_dims"], p),
                            tower_params_list=towers)
    if model_name == "esmm":
        return ESMM(features=features, task_types=task_types,
                    bottom_params=_mlp(p["bottom_dims"], p) if p["bottom_dims"] else None, tower_params_list=towers)
    if model_name == "mmoe":
        return MMOE(features=features, task_types=task_types, n_expert=int(p["n_expert"]),
                    expert_params=_mlp(p["expert_dims"], p), tower_params_list=towers)
    if model_name == "ple":
        return PLE(features=features, task_types=task_types, n_level=int(p["n_level"]),
                   n_expert_specific=int(p["n_expert_specific"]), n_expert_shared=int(p["n_expert_shared"]),
                   expert_params=_mlp(p["expert_dims"], p), tower_params_list=towers)
    return AITM(features=features, task_types=task_types, bottom_params=_mlp(p["bottom_dims"], p),
                tower_params_list=towers, attention_params={"attention_dim": int(p["attention_dim"]), "dropout": p["dropout"]})
