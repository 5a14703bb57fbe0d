"""The multi-task architectures, one file each. A model file added here needs no line in this file: the zoo
(``mtl_models/zoo.py``) imports it, and ``mtl_models`` exports every zoo model's class."""

from .aitm import AITM
from .base import MultiTaskModel
from .esmm import ESMM
from .mmoe import MMOE
from .ple import PLE
from .shared_bottom import SharedBottom

__all__ = ["MultiTaskModel", "SharedBottom", "ESMM", "MMOE", "PLE", "AITM"]
