"""Feature declarations: the only thing a model needs to know about its input columns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

__all__ = ["SparseFeature", "DenseFeature", "Feature", "validate_features", "PiecewiseLinear", "Periodic",
           "QuantileBins", "NumericEncoding"]


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


def _check_edges(edges: object, name: str, minimum: int) -> None:
    if (not isinstance(edges, tuple) or len(edges) < minimum
            or not all(isinstance(e, float) and math.isfinite(e) for e in edges)
            or any(a >= b for a, b in zip(edges, edges[1:]))):
        raise ValueError(f"edges of feature {name!r} must be a tuple of at least {minimum} finite, strictly "
                         f"increasing floats, got {edges!r}")


@dataclass(frozen=True)
class PiecewiseLinear:
    """Piecewise-linear encoding over bin ``edges`` (Gorishniy et al., NeurIPS 2022: bin i's component is 0 below
    the bin, 1 above it, linear inside), then a per-feature Linear to ``embed_dim`` and a ReLU. Edges come from
    the train split (quantiles, or a target-aware tree), so a tree-like threshold is one learned weight away."""

    edges: tuple[float, ...]

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1


@dataclass(frozen=True)
class Periodic:
    """``cos/sin(2 pi c x)`` over ``n_frequencies`` learned frequencies c (initialised N(0, sigma)), then a
    per-feature Linear to ``embed_dim`` and a ReLU (the paper's PLR). ``sigma`` sets how fine the first features
    are on the standardised scale, and is the one setting that matters."""

    n_frequencies: int = 48
    sigma: float = 0.01


@dataclass(frozen=True)
class QuantileBins:
    """The value's bin among ``edges`` as an id into a learned ``[n_bins, embed_dim]`` table: a sparse id made
    from a number, values below the first edge in bin 0 and above the last in the last bin.

    ``gated``: the embedding is mixed with a linear map of the value itself, ``g * table[bin] + (1 - g) * (x w + b)``
    with ``g = sigmoid(a)`` learned per column and width (``a`` starts at 0: half of each). A task that wants the
    smooth value (a bin is flat inside) and one that wants the bins' steps then share one input."""

    edges: tuple[float, ...]
    gated: bool = False

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1


NumericEncoding = Union[PiecewiseLinear, Periodic, QuantileBins]


@dataclass(frozen=True)
class DenseFeature:
    """A numeric column. Without ``encoding``: ``embed_dim=1`` feeds the value as is, ``embed_dim>1`` maps it to
    ``value * w + b``. With an ``encoding`` (``PiecewiseLinear``, ``Periodic``, ``QuantileBins``) the value
    becomes an ``embed_dim``-wide embedding of that kind."""

    name: str
    embed_dim: int = 1
    encoding: Optional[NumericEncoding] = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.embed_dim, "embed_dim", self.name)
        enc = self.encoding
        if enc is None:
            return
        if isinstance(enc, (PiecewiseLinear, QuantileBins)):
            _check_edges(enc.edges, self.name, 2)
        elif isinstance(enc, Periodic):
            _check_positive_int(enc.n_frequencies, "n_frequencies", self.name)
            if not isinstance(enc.sigma, (int, float)) or isinstance(enc.sigma, bool) or not enc.sigma > 0:
                raise ValueError(f"sigma of feature {self.name!r} must be a positive number, got {enc.sigma!r}")
        else:
            raise ValueError(f"encoding of feature {self.name!r} must be PiecewiseLinear, Periodic or QuantileBins, "
                             f"got {type(enc).__name__}")


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
