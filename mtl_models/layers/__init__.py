"""Building blocks shared by the models: the fused embedding, MLPs and batched expert groups."""

from .embedding import EmbeddedBatch, FeatureEmbedding, linear
from .experts import ExpertGroup, mix_experts
from .mlp import MLP, make_activation, build_tower, parallel_mlps

__all__ = ["FeatureEmbedding", "EmbeddedBatch", "linear", "ExpertGroup", "mix_experts", "MLP", "make_activation", "build_tower", "parallel_mlps"]
