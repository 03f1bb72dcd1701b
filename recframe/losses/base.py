"""The base class of registered losses."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recframe.config.names import LISTWISE, POINTWISE
from recframe.negatives.candidates import ScoredBatch


class Loss(nn.Module):
    """A loss term over a :class:`~recframe.negatives.candidates.ScoredBatch`.

    Subclasses are registered in :data:`recframe.registry.LOSSES` under the name of their
    config message (a member of ``LossConfig.loss``), set ``kind`` (LISTWISE or POINTWISE) and
    implement ``forward(scored) -> scalar``; ``check_config`` adds their config rules.

    Args:
        config: the loss's config message (e.g. ``SoftmaxCrossEntropy``).
    """

    kind: ClassVar[str] = LISTWISE
    #: (low, high) the label column must lie in when the loss reads it (pointwise losses read
    #: the first of data_config.label_fields); None: no label, or any finite value.
    label_bounds: ClassVar[tuple[float, float] | None] = None

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def check_config(cls, message: Any, path: str, ctx: Any) -> None:
        """Report the problems of the loss message at ``path`` (config validation)."""

    def forward(self, scored: ScoredBatch) -> torch.Tensor:
        raise NotImplementedError


__all__ = ["LISTWISE", "POINTWISE", "Loss"]
