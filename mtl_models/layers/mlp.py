"""MLPs configured the Torch-RecHub way: ``{"dims": [...], "dropout": p, "activation": name, "norm": ...}``.

As in Torch-RecHub, every hidden layer has BatchNorm unless ``"norm"`` says otherwise (``"layer"``, or ``None`` /
``"none"`` for no normalisation): the same parameter dicts then train the same network. BatchNorm cannot
normalise a training batch of one row, so such a batch is a one-line error naming the MLP (``MTLTrainer``
drops a trailing one-row batch instead); in eval mode a batch of one uses the running statistics.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .embedding import EmbeddedBatch, linear
from .table_product import unstack

__all__ = ["MLP", "MLPGroup", "make_activation", "build_tower", "ACTIVATIONS", "check_mlp_params", "parallel_mlps",
           "check_batch_rows", "DEFAULT_NORM"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "none": nn.Identity,
}
NORMS = (None, "none", "batch", "layer")
DEFAULT_NORM = "batch"  # Torch-RecHub's MLP always normalises
_KNOWN_KEYS = {"dims", "dropout", "activation", "norm"}


def make_activation(name: Optional[str], inplace: bool = False) -> nn.Module:
    """``inplace=True`` gives an in-place ReLU (others ignore it): safe right after a Linear or a norm, whose
    backward does not read their output, and it saves a fresh ``[B, width]`` buffer per layer."""
    key = "none" if name is None else str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return nn.ReLU(inplace=True) if key == "relu" and inplace else ACTIVATIONS[key]()


def check_batch_rows(rows: int, argument: str) -> None:
    """Torch's own error for a one-row BatchNorm batch ("Expected more than 1 value per channel") names neither
    the layer nor the fix; this one does."""
    if rows == 1:
        raise ValueError(f"{argument}: a training batch of 1 row cannot be batch-normalised (BatchNorm is the "
                         f"default norm); use batches of 2+ rows or set {argument}['norm'] to None")


def check_mlp_params(params: Optional[Mapping[str, Any]], argument: str, allow_empty: bool = False) -> dict:
    """Validate an MLP config and fill defaults; errors name ``argument`` (e.g. ``tower_params_list[1]``)."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{argument} must be a dict like {{'dims': [64, 32]}}, got {type(params).__name__}")
    unknown = set(params) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"{argument} has unknown keys {sorted(unknown)}; allowed: {sorted(_KNOWN_KEYS)}")
    dims = list(params.get("dims", []))
    if not dims and not allow_empty:
        raise ValueError(f"{argument}['dims'] must be a non-empty list of positive ints")
    if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
        raise ValueError(f"{argument}['dims'] must hold positive ints, got {dims}")
    dropout = float(params.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{argument}['dropout'] must be in [0, 1), got {dropout}")
    activation = params.get("activation", "relu")
    make_activation(activation)  # raises for unknown names
    norm = params.get("norm", DEFAULT_NORM)
    if norm not in NORMS:
        raise ValueError(f"{argument}['norm'] must be one of {NORMS}, got {norm!r}")
    return {"dims": dims, "dropout": dropout, "activation": activation, "norm": None if norm == "none" else norm}


class _InputLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same init) that also reads the embedding lookup: an MLP's first layer."""

    def forward(self, x: Union[Tensor, EmbeddedBatch]) -> Tensor:
        return linear(x, self.weight, self.bias)


class MLP(nn.Sequential):
    """``Linear -> [norm] -> activation -> [dropout]`` per entry of ``dims``, plus an optional output unit. Its
    input is ``[B, input_dim]`` or the embedding lookup."""

    def __init__(self, input_dim: int, params: Optional[Mapping[str, Any]], output_dim: Optional[int] = None,
                 argument: str = "mlp_params") -> None:
        cfg = check_mlp_params(params, argument, allow_empty=output_dim is not None)
        layers: list[nn.Module] = []
        width = input_dim
        for dim in cfg["dims"]:
            layers.append((_InputLinear if not layers else nn.Linear)(width, dim))
            layers.extend(_after_linear(dim, cfg))
            width = dim
        if output_dim is not None:
            layers.append((_InputLinear if not layers else nn.Linear)(width, output_dim))
            width = output_dim
        super().__init__(*layers)
        self.output_dim = width
        self.argument = argument
        self.has_batch_norm = cfg["norm"] == "batch" and bool(cfg["dims"])

    def forward(self, x: Union[Tensor, EmbeddedBatch]) -> Tensor:  # [B, input_dim] -> [B, output_dim]
        if self.has_batch_norm and self.training:
            check_batch_rows(len(x), self.argument)
        return super().forward(x)

    def _after_first(self, h: Tensor, owns_input: bool = True) -> Tensor:
        """Every layer after the first Linear: h ``[B, dims[0]]`` -> ``[B, output_dim]``. ``owns_input=False``: h is
        a view of a grouped product (``unstack``), which an in-place ReLU right after the Linear must not write."""
        for i, layer in enumerate(self):
            if i == 1 and not owns_input and isinstance(layer, nn.ReLU) and layer.inplace:
                h = torch.relu(h)
            elif i:
                h = layer(h)
        return h

    @property
    def last_linear(self) -> nn.Linear:
        return [m for m in self if isinstance(m, nn.Linear)][-1]


def _after_linear(dim: int, cfg: dict) -> list[nn.Module]:
    """A hidden layer's modules after its Linear: norm, activation (in place: right after a Linear or a norm,
    whose backward does not read their output), dropout."""
    layers: list[nn.Module] = []
    if cfg["norm"] == "batch":
        layers.append(nn.BatchNorm1d(dim))
    elif cfg["norm"] == "layer":
        layers.append(nn.LayerNorm(dim))
    layers.append(make_activation(cfg["activation"], inplace=True))
    if cfg["dropout"] > 0:
        layers.append(nn.Dropout(cfg["dropout"]))
    return layers


class MLPGroup(nn.ModuleList):
    """MLPs that all read the same input (AITM's per-task bottoms, ESMM's towers): ``forward(x)`` -> one output
    per MLP, as ``[mlp(x) for mlp in group]`` computes it."""

    def forward(self, x: Union[Tensor, EmbeddedBatch]) -> list[Tensor]:
        return parallel_mlps(x, list(self))


def build_tower(input_dim: int, params: Optional[Mapping[str, Any]], argument: str) -> MLP:
    """A task tower: the configured hidden layers and one output unit (the task's logit or value)."""
    return MLP(input_dim, params, output_dim=1, argument=argument)


def parallel_mlps(x: Union[Tensor, EmbeddedBatch], mlps: Sequence[MLP]) -> list[Tensor]:
    """``[mlp(x) for mlp in mlps]``: ``MLPGroup``'s forward.

    When the lookup takes the table-product path and the first Linears have one width, those Linears run as
    one grouped product: one gather-sum over G*H-wide rows, where G separate ones would each pay the per-row
    cost of the gather and of its backward."""
    firsts = [m[0] for m in mlps]
    for m in mlps:
        if m.has_batch_norm and m.training and isinstance(x, EmbeddedBatch):
            check_batch_rows(x.batch_size, m.argument)
    if (len(mlps) < 2 or not isinstance(x, EmbeddedBatch) or not x.uses_products()
            or len({f.out_features for f in firsts}) > 1 or any(f.bias is None for f in firsts)):
        return [m(x) for m in mlps]
    weight = torch.stack([f.weight.t() for f in firsts])  # [G, input_dim, H]
    bias = torch.stack([f.bias for f in firsts]).unsqueeze(1)  # [G, 1, H]
    return [m._after_first(h, owns_input=False)
            for m, h in zip(mlps, unstack(x.grouped_linear(weight, bias)))]  # G x [B, out]
