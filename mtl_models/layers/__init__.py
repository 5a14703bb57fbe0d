"""The blocks models are built from: the feature embedding, ``MLP`` / ``MLPGroup`` / towers, ``ExpertGroup`` and
the gates. Each takes a ``[B, in]`` tensor or the embedding lookup (``FeatureEmbedding.lookup``) alike; how a
training step is made fast on CPU stays inside them."""

from .embedding import FeatureEmbedding
from .experts import ExpertGroup
from .gates import Gate, TaskGates
from .mlp import MLP, MLPGroup, build_tower, make_activation

__all__ = ["FeatureEmbedding", "MLP", "MLPGroup", "build_tower", "make_activation", "ExpertGroup", "Gate", "TaskGates"]
