"""Variational (concrete) dropout over the features of one feature group."""

from __future__ import annotations

import math

import torch
from torch import nn

from recframe.protos import module_pb2


class VariationalDropout(nn.Module):
    """One learnable drop probability per feature, trained with a relaxed-Bernoulli mask.

    Training: for each row and feature, z ~ RelaxedBernoulli(temperature, p_drop) and the
    feature's slice is multiplied by (1 - z). Evaluation: the slice is multiplied by the
    expected keep probability (1 - p_drop). The penalty (:meth:`penalty`)
    ``regularization_lambda / B * sum_features (1 - p_drop)``, added to the loss, rewards
    dropping features, so features the loss does not need drift towards p_drop = 1.

    Args:
        feature_names: names of the F features, in the order of their slices.
        feature_dims: width of each feature's slice; sum = D.
        config: the VariationalDropout message.
    Input: (B, D). Output: (B, D) masked input.
    """

    def __init__(self, feature_names: list[str], feature_dims: list[int], config: module_pb2.VariationalDropout) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.register_buffer("feature_dims", torch.tensor(feature_dims, dtype=torch.long), persistent=False)
        p = config.initial_drop_probability
        self.drop_logit = nn.Parameter(torch.full((len(feature_dims),), math.log(p / (1 - p))))
        self.temperature = config.temperature
        self.regularization_lambda = config.regularization_lambda

    def drop_probability(self) -> torch.Tensor:
        """(F,) current drop probability of each feature."""
        return torch.sigmoid(self.drop_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.drop_probability()
        if self.training:
            u = torch.rand(x.shape[0], p.shape[0], device=x.device).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
            z = torch.sigmoid((self.drop_logit.unsqueeze(0) + noise) / self.temperature)
            keep = 1.0 - z
        else:
            keep = (1.0 - p).unsqueeze(0).expand(x.shape[0], -1)
        keep = torch.repeat_interleave(keep, self.feature_dims, dim=1, output_size=x.shape[1])
        return x * keep

    def penalty(self, batch_size: int) -> torch.Tensor:
        """Scalar ``regularization_lambda / batch_size * sum_features (1 - p_drop)``."""
        return self.regularization_lambda / batch_size * torch.sum(1.0 - self.drop_probability())

    def feature_ranking(self) -> list[tuple[str, float]]:
        """(feature, keep probability) pairs, most useful (highest keep) first."""
        keep = (1.0 - self.drop_probability()).detach().cpu().tolist()
        return sorted(zip(self.feature_names, keep), key=lambda item: -item[1])
