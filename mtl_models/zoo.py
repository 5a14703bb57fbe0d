"""The model zoo: every architecture the pipeline, the tests and the benchmarks can build, one entry each.

An entry is plain data plus one function: the model's name, its class, the flat hyperparameters it adds to
``COMMON_DEFAULTS`` (with their defaults), its default search space over those keys (the spec forms of
``workflow.search.space``, as plain data: this package imports no Optuna) and a builder
``(features, task_types, params) -> model``. The tuple at the end of this file holds the built-in entries (``names()``
lists them, in that order); ``register`` adds one at run time. Nothing else lists the models: configs (``models:
all``), search spaces, training, export, ``mtl_models``' exports and the tests read the entries (``docs/models.md``,
"Adding a model").
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .features import Feature
from .models import AITM, ESMM, MMOE, PLE, MultiTaskModel, SharedBottom

__all__ = ["ZooEntry", "COMMON_DEFAULTS", "register", "unregister", "names", "get", "entries", "defaults", "space",
           "build", "mlp", "towers", "HIDDEN_WIDTHS"]

# keys every model has: its towers and the settings shared by all its MLPs
COMMON_DEFAULTS: dict[str, Any] = {"tower_dims": [32], "dropout": 0.1, "activation": "relu", "norm": "none"}

Builder = Callable[[Sequence[Feature], Sequence[str], Mapping[str, Any]], MultiTaskModel]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # used in file, study and MLflow run names


@dataclass(frozen=True)
class ZooEntry:
    """One model: ``builder(features, task_types, params)`` gets ``params`` resolved over ``COMMON_DEFAULTS`` and
    ``defaults``. ``single_task``: the zoo model that is this one's one-task form (a funnel or a transfer
    between tasks has none of its own); ``None`` when the model itself takes one task."""

    name: str
    model_class: type
    defaults: Mapping[str, Any]
    space: Mapping[str, Any]
    builder: Builder
    single_task: Optional[str] = None


_ENTRIES: dict[str, ZooEntry] = {}


def mlp(dims: Sequence[int], params: Mapping[str, Any]) -> dict[str, Any]:
    """An MLP parameter dict of ``dims`` with the flat ``dropout`` / ``activation`` / ``norm`` of ``params``."""
    return {"dims": list(dims), "dropout": params["dropout"], "activation": params["activation"], "norm": params["norm"]}


def towers(params: Mapping[str, Any], n_task: int) -> list[dict[str, Any]]:
    """One tower per task, each ``tower_dims`` wide."""
    return [mlp(params["tower_dims"], params) for _ in range(n_task)]


def _check_entry(entry: ZooEntry) -> None:
    if not isinstance(entry.name, str) or not _NAME.match(entry.name):
        raise ValueError(f"zoo entry name {entry.name!r}: use lower case letters, digits and '_' (e.g. 'my_model')")
    if not (isinstance(entry.model_class, type) and issubclass(entry.model_class, MultiTaskModel)):
        raise ValueError(f"zoo entry {entry.name!r}: model_class must be a MultiTaskModel subclass")
    if not callable(entry.builder):
        raise ValueError(f"zoo entry {entry.name!r}: builder must be callable (features, task_types, params) -> model")
    stray = sorted(set(entry.space) - set(entry.defaults) - set(COMMON_DEFAULTS))
    if stray:
        raise ValueError(f"zoo entry {entry.name!r}: space keys {stray} have no default; add them to defaults")


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry``; a name already taken is an error (``unregister`` it first to replace it)."""
    _check_entry(entry)
    if entry.name in _ENTRIES:
        raise ValueError(f"model {entry.name!r} is already in the zoo")
    if entry.single_task is not None and entry.single_task not in _ENTRIES and entry.single_task != entry.name:
        raise ValueError(f"zoo entry {entry.name!r}: single_task {entry.single_task!r} is not in the zoo")
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> ZooEntry:
    """Remove and return the entry ``name`` (a model added at run time that is no longer wanted)."""
    entry = get(name)
    del _ENTRIES[name]
    return entry


def names() -> list[str]:
    """The models in the zoo, built-in ones first, then in the order they were registered."""
    return list(_ENTRIES)


def entries() -> list[ZooEntry]:
    return list(_ENTRIES.values())


def get(name: str) -> ZooEntry:
    """The entry ``name``; an unknown name is a one-line error that lists the zoo."""
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose from {names()}") from None


def defaults(name: str) -> dict[str, Any]:
    """Every flat hyperparameter model ``name`` understands, with its default (a copy)."""
    return copy.deepcopy({**COMMON_DEFAULTS, **get(name).defaults})


def space(name: str) -> dict[str, Any]:
    """Model ``name``'s default search space over its own keys (a copy; the workflow adds the common keys)."""
    return copy.deepcopy(dict(get(name).space))


def build(name: str, features: Sequence[Feature], task_types: Sequence[str],
          params: Optional[Mapping[str, Any]] = None) -> MultiTaskModel:
    """A fresh model ``name``: ``params`` over its defaults; a key it does not have is an error, not ignored."""
    resolved = defaults(name)
    unknown = sorted(set(params or {}) - set(resolved))
    if unknown:
        raise ValueError(f"unknown hyperparameters for {name}: {unknown}; allowed: {sorted(resolved)}")
    resolved.update(copy.deepcopy(dict(params or {})))
    return get(name).builder(list(features), list(task_types), resolved)


# ---- the built-in models ------------------------------------------------------------------------------------

# hidden widths over 64..256 (the workflow's search fits them to the data's number of columns); experts are
# several per model, so they stay shallower than a bottom
HIDDEN_WIDTHS = [64, 128, 256]
_BOTTOM_SPACE = {"bottom_dims": {"depth": [1, 3], "widths": HIDDEN_WIDTHS, "shape": "funnel"}}
_EXPERT_SPACE = {"expert_dims": {"depth": [1, 2], "widths": HIDDEN_WIDTHS, "shape": "funnel"}}


def _shared_bottom(features: Sequence[Feature], task_types: Sequence[str], p: Mapping[str, Any]) -> MultiTaskModel:
    return SharedBottom(features=features, task_types=task_types, bottom_params=mlp(p["bottom_dims"], p),
                        tower_params_list=towers(p, len(task_types)))


def _esmm(features: Sequence[Feature], task_types: Sequence[str], p: Mapping[str, Any]) -> MultiTaskModel:
    bottom = mlp(p["bottom_dims"], p) if p["bottom_dims"] else None  # no bottom: towers on the embeddings
    return ESMM(features=features, task_types=task_types, bottom_params=bottom,
                tower_params_list=towers(p, len(task_types)))


def _mmoe(features: Sequence[Feature], task_types: Sequence[str], p: Mapping[str, Any]) -> MultiTaskModel:
    return MMOE(features=features, task_types=task_types, n_expert=int(p["n_expert"]),
                expert_params=mlp(p["expert_dims"], p), tower_params_list=towers(p, len(task_types)))


def _ple(features: Sequence[Feature], task_types: Sequence[str], p: Mapping[str, Any]) -> MultiTaskModel:
    return PLE(features=features, task_types=task_types, n_level=int(p["n_level"]),
               n_expert_specific=int(p["n_expert_specific"]), n_expert_shared=int(p["n_expert_shared"]),
               expert_params=mlp(p["expert_dims"], p), tower_params_list=towers(p, len(task_types)))


def _aitm(features: Sequence[Feature], task_types: Sequence[str], p: Mapping[str, Any]) -> MultiTaskModel:
    return AITM(features=features, task_types=task_types, bottom_params=mlp(p["bottom_dims"], p),
                tower_params_list=towers(p, len(task_types)),
                attention_params={"attention_dim": int(p["attention_dim"]), "dropout": p["dropout"]})


for _entry in (
    ZooEntry("shared_bottom", SharedBottom, {"bottom_dims": [128, 64]}, _BOTTOM_SPACE, _shared_bottom),
    ZooEntry("esmm", ESMM, {"bottom_dims": [128, 64]}, _BOTTOM_SPACE, _esmm, single_task="shared_bottom"),
    ZooEntry("mmoe", MMOE, {"n_expert": 8, "expert_dims": [128, 64]}, {"n_expert": {"low": 2, "high": 8}, **_EXPERT_SPACE},
             _mmoe),
    ZooEntry("ple", PLE, {"n_level": 2, "n_expert_specific": 2, "n_expert_shared": 2, "expert_dims": [128, 64]},
             {"n_level": {"low": 1, "high": 2}, "n_expert_specific": {"low": 1, "high": 4},
              "n_expert_shared": {"low": 1, "high": 4}, **_EXPERT_SPACE}, _ple),
    ZooEntry("aitm", AITM, {"bottom_dims": [128, 64], "attention_dim": 64}, {**_BOTTOM_SPACE, "attention_dim": [16, 32, 64]},
             _aitm, single_task="shared_bottom"),
):
    register(_entry)
