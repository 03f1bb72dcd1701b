"""Encoders that reduce a SEQUENCE group's (B, L, D) embeddings to (B, D_out)."""

from __future__ import annotations

import torch
from torch import nn

from recframe.protos import model_pb2
from recframe.registry import SEQUENCE_ENCODERS


def masked_pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sum or mean of x over valid positions.

    Args:
        x: (B, L, D); mask: (B, L) bool; pooling: "sum" or "mean".
    Returns:
        (B, D); rows without a valid position are zero.
    """
    weights = mask.to(x.dtype).unsqueeze(-1)
    summed = (x * weights).sum(dim=1)
    if pooling == "sum":
        return summed
    return summed / weights.sum(dim=1).clamp(min=1.0)


@SEQUENCE_ENCODERS.register()
class PoolingEncoder(nn.Module):
    """Masked mean or sum pooling. Input (B, L, D) + mask (B, L). Output (B, D)."""

    def __init__(self, input_dim: int, config: model_pb2.PoolingEncoder) -> None:
        super().__init__()
        self.pooling = config.pooling_type
        self.output_dim = input_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_pool(x, mask, self.pooling)


def create_sequence_encoder(input_dim: int, config: model_pb2.SequenceEncoder | None) -> nn.Module:
    """Build the registered encoder named by the oneof that is set (default: mean pooling)."""
    if config is None or config.WhichOneof("encoder") is None:
        return PoolingEncoder(input_dim, model_pb2.PoolingEncoder())
    message = getattr(config, config.WhichOneof("encoder"))
    return SEQUENCE_ENCODERS.get(type(message).DESCRIPTOR.name)(input_dim, message)
