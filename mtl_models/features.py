"""Feature declarations: the only thing a model needs to know about its input columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

__all__ = ["SparseFeature", "DenseFeature", "Feature", "validate_features"]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"feature name must be a non-empty string, got {name!r}")


def _check_positive_int(value: object, argument: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} of feature {name!r} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class SparseFeature:
    """A categorical column of int64 ids in ``[0, vocab_size)``; id 0 is reserved for unseen/missing.

    Frozen and stateless on purpose: two models built from the same feature list get their own tables.
    """

    name: str
    vocab_size: int
    embed_dim: int = 16

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.vocab_size, "vocab_size", self.name)
        _check_positive_int(self.embed_dim, "embed_dim", self.name)


@dataclass(frozen=True)
class DenseFeature:
    """A numeric column. ``embed_dim=1`` feeds the value as is; ``embed_dim>1`` maps it to a learned vector."""

    name: str
    embed_dim: int = 1

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.embed_dim, "embed_dim", self.name)


Feature = Union[SparseFeature, DenseFeature]


def validate_features(features: Sequence[Feature]) -> list[Feature]:
    """Return the features as a list, raising ``ValueError`` for an empty list, foreign objects or duplicates."""
    if features is None or len(features) == 0:
        raise ValueError("features must be a non-empty list of SparseFeature/DenseFeature")
    seen: set[str] = set()
    for feature in features:
        if not isinstance(feature, (SparseFeature, DenseFeature)):
            raise ValueError(f"features must hold SparseFeature/DenseFeature objects, got {type(feature).__name__}")
        if feature.name in seen:
            raise ValueError(f"features has duplicate feature names: {feature.name!r}")
        seen.add(feature.name)
    return list(features)
