"""Pointwise binary cross-entropy on a label column."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean BCE of sigmoid(logits) against labels in [0, 1].

    Args:
        logits: (B,); labels: (B,); sample_weight: (B,) or None.
    Returns:
        scalar loss.
    """
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if sample_weight is None:
        return per_row.mean()
    return (per_row * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)
