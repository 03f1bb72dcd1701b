"""Reusable neural network modules: MLP, EmbeddingGroup, VariationalDropout, encoders."""

from recframe.modules.embedding_group import EmbeddingGroup
from recframe.modules.mlp import MLP
from recframe.modules.sequence_encoders import PoolingEncoder, masked_pool
from recframe.modules.variational_dropout import VariationalDropout

__all__ = [
    "EmbeddingGroup", "MLP", "PoolingEncoder", "VariationalDropout", "masked_pool",
]
