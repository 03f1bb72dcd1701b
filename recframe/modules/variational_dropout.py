"""Variational (concrete) dropout over the features of one feature group."""

from __future__ import annotations

import math

import torch
from torch import nn

from recframe.protos import module_pb2


class VariationalDropout(nn.Module):
    """Learnable drop probabilities over a group's features, trained with a relaxed-Bernoulli mask.

    One drop logit per feature, or with ``config.embedding_wise`` one per embedding
    dimension (TorchEasyRec's embedding-wise variational dropout). Training: for each row and
    logit, z ~ RelaxedBernoulli(temperature, p_drop) and the feature's slice (or the
    dimension) is multiplied by (1 - z). Evaluation: it is multiplied by the expected keep
    probability (1 - p_drop). The penalty (:meth:`penalty`)
    ``regularization_lambda / B * sum_logits (1 - p_drop)``, added to the loss, rewards
    dropping, so features the loss does not need drift towards p_drop = 1. A feature's
    importance is its keep probability (embedding-wise: the mean over its dimensions).

    Args:
        feature_names: names of the F features, in the order of their slices.
        feature_dims: width of each feature's slice; sum = D.
        config: the VariationalDropout message.
    Input: (B, D). Output: (B, D) masked input.
    Parameter: ``drop_logit``, (F,), or (D,) embedding-wise.
    """

    def __init__(self, feature_names: list[str], feature_dims: list[int], config: module_pb2.VariationalDropout) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.dims = [int(d) for d in feature_dims]
        self.register_buffer("feature_dims", torch.tensor(self.dims, dtype=torch.long), persistent=False)
        self.embedding_wise = bool(config.embedding_wise)
        p = config.initial_drop_probability
        size = sum(self.dims) if self.embedding_wise else len(self.dims)
        self.drop_logit = nn.Parameter(torch.full((size,), math.log(p / (1 - p))))
        self.temperature = config.temperature
        self.regularization_lambda = config.regularization_lambda

    def drop_probability(self) -> torch.Tensor:
        """(F,) current drop probability of each feature; (D,) of each dimension embedding-wise."""
        return torch.sigmoid(self.drop_logit)

    def dimension_keep_probability(self) -> torch.Tensor:
        """(D,) the expected keep probability of every dimension of the input: the
        evaluation-time mask."""
        keep = 1.0 - self.drop_probability()
        if self.embedding_wise:
            return keep
        return torch.repeat_interleave(keep, self.feature_dims, output_size=sum(self.dims))

    def feature_keep_probability(self) -> torch.Tensor:
        """(F,) each feature's importance: its keep probability 1 - p_drop (embedding-wise,
        the mean keep probability of its dimensions)."""
        keep = 1.0 - self.drop_probability()
        if not self.embedding_wise:
            return keep
        return torch.stack([part.mean() for part in torch.split(keep, self.dims)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            u = torch.rand(x.shape[0], self.drop_logit.shape[0], device=x.device).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
            z = torch.sigmoid((self.drop_logit.unsqueeze(0) + noise) / self.temperature)
            keep = 1.0 - z
            if not self.embedding_wise:
                keep = torch.repeat_interleave(keep, self.feature_dims, dim=1, output_size=x.shape[1])
            return x * keep
        if self.embedding_wise:
            return x * (1.0 - self.drop_probability()).unsqueeze(0)
        keep = (1.0 - self.drop_probability()).unsqueeze(0).expand(x.shape[0], -1)
        keep = torch.repeat_interleave(keep, self.feature_dims, dim=1, output_size=x.shape[1])
        return x * keep

    def penalty(self, batch_size: int) -> torch.Tensor:
        """Scalar ``regularization_lambda / batch_size * sum (1 - p_drop)``, the sum over the
        drop logits: the F features, or the D dimensions embedding-wise."""
        return self.regularization_lambda / batch_size * torch.sum(1.0 - self.drop_probability())

    def feature_importance(self) -> dict[str, float]:
        """{feature: keep probability} in the group's feature order."""
        keep = self.feature_keep_probability().detach().cpu().tolist()
        return dict(zip(self.feature_names, keep))

    def feature_ranking(self) -> list[tuple[str, float]]:
        """(feature, keep probability) pairs, most useful (highest keep) first; ties keep the
        group's feature order."""
        return sorted(self.feature_importance().items(), key=lambda item: -item[1])
