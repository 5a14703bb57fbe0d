"""One builder of every model for the tests: the zoo's entries (``mtl_models.zoo``) at small sizes, so a model
added to the zoo is in every test parametrized over ``zoo.names()`` without a line here."""

from __future__ import annotations

from typing import Any, Sequence

from mtl_models import MultiTaskModel, SparseFeature, zoo


def small_params(name: str, widths: Sequence[int] = (16,), tower: Sequence[int] = (8,), **overrides: Any) -> dict:
    """Model ``name``'s own hyperparameters with every MLP narrowed: each ``*_dims`` key to ``widths``, the
    towers to ``tower``; ``overrides`` (flat keys: ``norm``, ``dropout``, ``n_expert``...) on top."""
    own: dict[str, Any] = {k: list(widths) for k in zoo.defaults(name) if k.endswith("_dims")}
    own["tower_dims"] = list(tower)
    return {**own, **overrides}


def task_types_for(name: str, wanted: Sequence[str]) -> list[str]:
    """``wanted`` when model ``name`` takes those tasks, else as many classification tasks (a funnel such as
    ESMM's, or AITM's conversion steps, takes only those)."""
    try:
        zoo.build(name, [SparseFeature("probe", 2, 2)], list(wanted), small_params(name, norm="none"))
    except ValueError as e:
        if "task_types" not in str(e):
            raise
        return ["classification"] * len(wanted)
    return list(wanted)


def build(name: str, features: Sequence[Any], task_types: Sequence[str], widths: Sequence[int] = (16,),
          tower: Sequence[int] = (8,), **overrides: Any) -> MultiTaskModel:
    """Model ``name`` at small sizes for ``task_types`` (or all-classification tasks where it needs those)."""
    return zoo.build(name, features, task_types_for(name, task_types), small_params(name, widths, tower, **overrides))
