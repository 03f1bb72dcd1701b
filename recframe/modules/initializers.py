"""Initializers of embedding tables (INITIALIZERS registry, by config message name)."""

from __future__ import annotations

import torch
from torch import nn

from recframe.protos import feature_pb2
from recframe.registry import INITIALIZERS


@INITIALIZERS.register("NormalInitializer")
def normal(weight: torch.Tensor, config: feature_pb2.NormalInitializer) -> None:
    """Normal(mean, std)."""
    nn.init.normal_(weight, config.mean, config.std)


@INITIALIZERS.register("UniformInitializer")
def uniform(weight: torch.Tensor, config: feature_pb2.UniformInitializer) -> None:
    """Uniform(a, b)."""
    nn.init.uniform_(weight, config.a, config.b)


@INITIALIZERS.register("XavierUniformInitializer")
def xavier_uniform(weight: torch.Tensor, config: feature_pb2.XavierUniformInitializer) -> None:
    """Xavier/Glorot uniform over the (num_embeddings, embedding_dim) table."""
    nn.init.xavier_uniform_(weight, gain=config.gain)


def init_table(weight: torch.Tensor, initializer: feature_pb2.Initializer | None) -> None:
    """Fill an embedding table in place by its Initializer message (default: normal, std 0.01)."""
    which = initializer.WhichOneof("initializer") if initializer is not None else None
    message = getattr(initializer, which) if which else feature_pb2.NormalInitializer()
    with torch.no_grad():
        INITIALIZERS.get(type(message).DESCRIPTOR.name)(weight, message)


__all__ = ["init_table"]
