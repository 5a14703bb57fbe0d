"""mtl_models: multi-task ranking models in pure PyTorch, with the Torch-RecHub-style API.

Imports neither MLflow nor KFP; the pipeline talks to the trainer through callbacks. ``mtl_models.zoo`` lists
every model with its flat defaults, search space and builder (``docs/models.md``: adding a model).
"""

from .features import DenseFeature, Periodic, PiecewiseLinear, QuantileBins, SparseFeature
from .models import AITM, ESMM, MMOE, PLE, MultiTaskModel, SharedBottom
from .data import DataGenerator, TensorLoader, make_loader
from .device import resolve_device
from .onnx_export import export_onnx
from .trainer import Callback, MTLTrainer, StopTraining
from .weighting import WEIGHTINGS, Weighting
from . import zoo  # noqa: E402  (after .models: the zoo's entries hold the model classes)

__all__ = [
    "SparseFeature", "DenseFeature", "PiecewiseLinear", "Periodic", "QuantileBins",
    "MultiTaskModel", "SharedBottom", "ESMM", "MMOE", "PLE", "AITM",
    "export_onnx",
    "MTLTrainer", "Callback", "StopTraining", "DataGenerator", "TensorLoader", "make_loader",
    "Weighting", "WEIGHTINGS", "resolve_device", "zoo",
]
