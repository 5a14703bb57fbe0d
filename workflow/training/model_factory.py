"""The pipeline's view of the model zoo: a flat hyperparameter dict (what MLflow logs and Optuna samples) and a
prepared ``FeatureSpec`` -> a model of any zoo entry (``mtl_models.zoo``).

Flat keys, so that a run's params read the same in the MLflow UI, the config file and a search trial: the
model's own keys come from its zoo entry (``zoo.defaults``: towers, dropout, activation, norm, and e.g.
``n_expert``); this module adds the keys that turn the spec into features (``embed_dim`` and the numeric encoding
of the dense columns: ``numeric_encoding``, one of ``feature_spec.NUMERIC_ENCODINGS``, ``bin_source``,
``n_bins``, ``numeric_embed_dim``, ``periodic_sigma``) and the training keys (``lr``, ``lr_schedule``,
``optimizer``, ``weight_decay``, ``weighting``, ``gradnorm_alpha``, ``batch_size``), which ride along and are
read by the train step.
"""

from __future__ import annotations

from typing import Any, Mapping

from mtl_models import zoo

__all__ = ["FEATURE_KEYS", "TRAIN_KEYS", "default_params", "build_model", "resolve_params", "single_task_family"]

FEATURE_KEYS = {"embed_dim": 16, "numeric_encoding": "standard", "bin_source": "quantile", "n_bins": 32,
                "numeric_embed_dim": 8, "periodic_sigma": 0.01}
TRAIN_KEYS = {"lr": 1e-3, "lr_schedule": "constant", "optimizer": "adam", "weight_decay": 0.0, "weighting": "equal",
              "gradnorm_alpha": 1.5, "batch_size": 1024}


def default_params(model_name: str) -> dict[str, Any]:
    """Every key the model understands, with the defaults used when a config or trial leaves it out."""
    return {**FEATURE_KEYS, **zoo.defaults(model_name), **TRAIN_KEYS}


def resolve_params(model_name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``; a key the model does not have is an error, not silently dropped."""
    resolved = default_params(model_name)
    unknown = set(params or {}) - set(resolved)
    if unknown:
        raise ValueError(f"unknown hyperparameters for {model_name}: {sorted(unknown)}; allowed: {sorted(resolved)}")
    resolved.update(params or {})
    return resolved


def single_task_family(model_name: str) -> str:
    """The zoo model that trains ``model_name``'s one-task baseline (itself unless its entry names another)."""
    return zoo.get(model_name).single_task or model_name


def build_model(model_name: str, spec: Any, params: Mapping[str, Any] | None = None):
    """A fresh model for ``spec`` (a ``FeatureSpec``: its features and task types) and ``params``."""
    p = resolve_params(model_name, params)
    features = spec.to_features(embed_dim=int(p["embed_dim"]), numeric_encoding=str(p["numeric_encoding"]),
                                n_bins=int(p["n_bins"]), numeric_embed_dim=int(p["numeric_embed_dim"]),
                                periodic_sigma=float(p["periodic_sigma"]), bin_source=str(p["bin_source"]))
    own = {k: p[k] for k in zoo.defaults(model_name)}
    return zoo.build(model_name, features, list(spec.task_types), own)
