"""Building blocks shared by the models: the fused embedding, MLPs and batched expert groups."""

from .embedding import FeatureEmbedding
from .experts import ExpertGroup
from .mlp import MLP, make_activation, build_tower

__all__ = ["FeatureEmbedding", "ExpertGroup", "MLP", "make_activation", "build_tower"]
