"""Tower: one side of a two-tower model, from a Batch to its embeddings.

The same module trains inside the model and is exported for serving
(:mod:`recframe.recipes.export` wraps it with an adapter from flat tensors to a Batch).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import Batch
from recframe.modules import MLP, EmbeddingGroup, VariationalDropout
from recframe.protos import model_pb2, module_pb2


class Tower(nn.Module):
    """Feature groups -> [variational dropout] -> concat -> [LayerNorm] -> [MLP] -> [Linear] -> [L2 norm].

    Args:
        embedding_group: the EmbeddingGroup that embeds the tower's feature groups (it may
            serve the other tower too: DSSMV2 shares one).
        config: the Tower message (``input`` groups, ``mlp``, ``input_layer_norm``).
        output_dim: width of a final Linear projection; 0 = none.
        normalize: L2-normalize the output (COSINE similarity).
        variational_dropout: applied to each DEEP input group with two or more features and
            no dense_projection (one learnable drop probability per feature, or per
            dimension with ``embedding_wise``); None = off.

    Input: a :class:`~recframe.batch.Batch`. Output: (B, ``output_dim``) float, where
    ``output_dim`` is the projection's width, else the MLP's last width, else the
    concatenated group width.

    Example::

        tower = model.user_tower             # a trained DSSM's user side
        emb = tower(batch)                   # (B, D), L2-normalized for COSINE
        penalty = tower.penalty(batch.batch_size)   # variational dropout term of the loss
    """

    def __init__(self, embedding_group: EmbeddingGroup, config: model_pb2.Tower, output_dim: int = 0,
                 normalize: bool = False, variational_dropout: module_pb2.VariationalDropout | None = None) -> None:
        super().__init__()
        self.embedding_group = embedding_group
        self.group_names = list(config.input)
        self.dropouts = nn.ModuleDict()
        if variational_dropout is not None:
            for name in self.group_names:
                if embedding_group.is_plain_deep(name):
                    group = embedding_group.groups[name]
                    self.dropouts[name] = VariationalDropout(
                        list(group.feature_names), embedding_group.feature_dims(name), variational_dropout)
        in_features = sum(embedding_group.group_dim(n) for n in self.group_names)
        self.input_norm = nn.LayerNorm(in_features) if config.input_layer_norm else None
        self.mlp = MLP(in_features, config.mlp) if config.HasField("mlp") and config.mlp.hidden_units else None
        width = self.mlp.output_dim if self.mlp is not None else in_features
        self.projection = nn.Linear(width, output_dim) if output_dim > 0 else None
        self.output_dim = output_dim if output_dim > 0 else width
        self.normalize = normalize

    @staticmethod
    def output_width(config: model_pb2.Tower, output_dim: int, input_width: int | None) -> int | None:
        """The output width a tower config gives for a concatenated input of ``input_width``
        (None when it depends on an unknown input width)."""
        if output_dim > 0:
            return output_dim
        if config.HasField("mlp") and config.mlp.hidden_units:
            return int(config.mlp.hidden_units[-1])
        return input_width

    def forward(self, batch: Batch) -> torch.Tensor:
        outputs = self.embedding_group(batch, self.group_names)
        parts = [self.dropouts[n](outputs[n]) if n in self.dropouts else outputs[n] for n in self.group_names]
        x = torch.cat(parts, dim=-1)
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.mlp is not None:
            x = self.mlp(x)
        if self.projection is not None:
            x = self.projection(x)
        return F.normalize(x, dim=-1) if self.normalize else x

    def penalty(self, batch_size: int) -> torch.Tensor:
        """Scalar sum of the variational dropout penalties of the tower's groups (0 without)."""
        total = torch.zeros((), device=next(self.parameters()).device)
        for dropout in self.dropouts.values():
            total = total + dropout.penalty(batch_size)
        return total

    def standalone(self) -> "Tower":
        """This tower with an EmbeddingGroup of only its own groups' tables (for export: a
        DSSMV2 tower then carries no table the other tower alone uses). Parameters are
        shared, not copied; the result is in the same train/eval mode."""
        tower = copy.copy(self)
        tower._modules = dict(self._modules)
        tower.embedding_group = self.embedding_group.restricted_to(self.group_names)
        return tower

    def refer_to_embedding_group(self) -> None:
        """Keep the EmbeddingGroup as a plain reference, not a submodule: for a group shared
        with the other tower, which registers it, so that each shared table is one entry of
        the model's ``state_dict()`` (``model.train()``/``.to()`` reach it through that tower)."""
        group = self._modules.pop("embedding_group")
        object.__setattr__(self, "embedding_group", group)

    def feature_importance(self) -> dict[str, dict[str, float]]:
        """Per group with variational dropout: {feature: keep probability}, in the group's
        feature order (embedding-wise: the mean keep probability of the feature's dimensions)."""
        return {name: vd.feature_importance() for name, vd in self.dropouts.items()}

    def feature_ranking(self) -> dict[str, list[tuple[str, float]]]:
        """Per group with variational dropout: (feature, keep probability), best first."""
        return {name: vd.feature_ranking() for name, vd in self.dropouts.items()}


__all__ = ["Tower"]
