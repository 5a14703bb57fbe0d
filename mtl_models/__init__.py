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

# Every model in mtl_models/zoo.py is exported by its class name: `from mtl_models import <Class>` needs no line here
# for a model added to the zoo (docs/models.md, "Adding a model"). Entries registered later, at run time, are not.
for _entry in zoo.entries():
    _name = _entry.model_class.__name__
    if globals().setdefault(_name, _entry.model_class) is not _entry.model_class:
        raise ImportError(f"zoo model {_entry.name!r}: its class name {_name} is already taken in mtl_models")
    if _name not in __all__:
        __all__.append(_name)
del _entry, _name
