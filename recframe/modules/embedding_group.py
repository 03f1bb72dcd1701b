"""EmbeddingGroup: embedding tables shared by name, and the feature-group outputs."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import Batch
from recframe.features import DENSE, SEQUENCE, SPARSE, EmbeddingSpec, Feature
from recframe.modules.sequence_encoders import create_sequence_encoder, masked_pool
from recframe.protos import feature_pb2, model_pb2


def init_table(weight: torch.Tensor, initializer: feature_pb2.Initializer | None) -> None:
    """Fill an embedding table in place (default: normal, std 0.01)."""
    which = initializer.WhichOneof("initializer") if initializer is not None else None
    with torch.no_grad():
        if which == "uniform":
            nn.init.uniform_(weight, initializer.uniform.a, initializer.uniform.b)
        elif which == "xavier_uniform":
            nn.init.xavier_uniform_(weight, gain=initializer.xavier_uniform.gain)
        elif which == "normal":
            nn.init.normal_(weight, initializer.normal.mean, initializer.normal.std)
        else:
            nn.init.normal_(weight, 0.0, feature_pb2.NormalInitializer().std)


class EmbeddingGroup(nn.Module):
    """Embedding tables for a set of feature groups, one table per embedding_name.

    Every feature naming the same ``embedding_name`` (in any of the groups) looks up the
    same ``nn.Embedding``. A DEEP group's output is the concatenation, in feature_names
    order, of each feature's pooled vector (sparse: pooled ids; dense: the values;
    sequence: masked pooling over valid positions). A SEQUENCE group concatenates its
    features' embeddings per position and applies the group's sequence encoder.

    Args:
        features: every configured feature by name.
        groups: the feature groups this EmbeddingGroup serves.
    Input: a Batch. Output of forward: {group_name: (B, group_dim)}.
    """

    def __init__(self, features: Mapping[str, Feature], groups: Iterable[model_pb2.FeatureGroupConfig]) -> None:
        super().__init__()
        self.groups = {g.group_name: g for g in groups}
        self.features = {name: features[name] for g in self.groups.values() for name in g.feature_names}
        specs: dict[str, EmbeddingSpec] = {}
        for feature in self.features.values():
            if feature.kind in (SPARSE, SEQUENCE):
                specs.setdefault(feature.embedding.name, feature.embedding)
        self.tables = nn.ModuleDict()
        for name, spec in specs.items():
            table = nn.Embedding(spec.num_embeddings, spec.embedding_dim)
            init_table(table.weight, spec.initializer)
            self.tables[name] = table
        self.encoders = nn.ModuleDict()
        for group in self.groups.values():
            if group.group_type == model_pb2.SEQUENCE:
                width = sum(self.features[n].output_dim for n in group.feature_names)
                encoder = group.sequence_encoder if group.HasField("sequence_encoder") else None
                self.encoders[group.group_name] = create_sequence_encoder(width, encoder)

    def feature_dims(self, group_name: str) -> list[int]:
        """Width of each feature's slice of a DEEP group's output, in order."""
        group = self.groups[group_name]
        return [self.features[n].output_dim for n in group.feature_names]

    def group_dim(self, group_name: str) -> int:
        """Width of a group's output."""
        if group_name in self.encoders:
            return self.encoders[group_name].output_dim
        return sum(self.feature_dims(group_name))

    def table_of(self, feature_name: str) -> nn.Embedding:
        """The table a categorical feature looks up."""
        return self.tables[self.features[feature_name].embedding.name]

    def _pooled(self, feature: Feature, batch: Batch) -> torch.Tensor:
        if feature.kind == DENSE:
            return batch.dense[feature.name]
        weight = self.tables[feature.embedding.name].weight
        if feature.kind == SPARSE:
            ids = batch.sparse[feature.name]
            return F.embedding_bag(ids.values, weight, ids.offsets, mode=feature.pooling, include_last_offset=True)
        seq = batch.sequence[feature.name]
        return masked_pool(F.embedding(seq.ids, weight), seq.mask(), feature.pooling)

    def forward(self, batch: Batch, group_names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """{group_name: (B, group_dim)} for ``group_names`` (default: every group)."""
        outputs = {}
        for name in group_names if group_names is not None else self.groups:
            group = self.groups[name]
            if name in self.encoders:
                seqs = [batch.sequence[n] for n in group.feature_names]
                if any(not torch.equal(s.lengths, seqs[0].lengths) for s in seqs[1:]):
                    raise ValueError(
                        f"feature group '{name}': its sequence features {list(group.feature_names)} must have "
                        "the same length in every row (aligned sequences)"
                    )
                x = torch.cat([F.embedding(s.ids, self.table_of(n).weight) for n, s in zip(group.feature_names, seqs)], dim=-1)
                outputs[name] = self.encoders[name](x, seqs[0].mask())
            else:
                outputs[name] = torch.cat([self._pooled(self.features[n], batch) for n in group.feature_names], dim=-1)
        return outputs
