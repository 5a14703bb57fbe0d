"""The blocks models are built from: the feature embedding, ``MLP`` / ``MLPGroup`` / towers, ``ExpertGroup`` and
the gates. Each takes a ``[B, in]`` tensor or the embedding lookup (``FeatureEmbedding.lookup``) alike; how a
training step is made fast on CPU stays inside them."""

from .embedding import FeatureEmbedding
from .experts import ExpertGroup
from .gates import Gate, TaskGates
from .mlp import MLP, MLPGroup, build_tower, make_activation
from .mlp import parallel_mlps  # noqa: F401 - ESMM's towers; new models use MLPGroup

__all__ = ["FeatureEmbedding", "MLP", "MLPGroup", "build_tower", "make_activation", "ExpertGroup", "Gate", "TaskGates"]
