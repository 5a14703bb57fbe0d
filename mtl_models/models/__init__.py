"""The five multi-task architectures, one file each."""

from .aitm import AITM
from .base import MultiTaskModel
from .esmm import ESMM
from .mmoe import MMOE
from .ple import PLE
from .shared_bottom import SharedBottom

__all__ = ["MultiTaskModel", "SharedBottom", "ESMM", "MMOE", "PLE", "AITM"]
