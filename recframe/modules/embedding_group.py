"""EmbeddingGroup: embedding tables shared by name, and the feature-group outputs."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import Batch
from recframe.features import DENSE, SEQUENCE, SPARSE, EmbeddingSpec, Feature
from recframe.modules.sequence_encoders import create_sequence_encoder, masked_pool
from recframe.modules.initializers import init_table
from recframe.protos import model_pb2


def dense_projection(in_features: int, config: model_pb2.DenseProjection) -> nn.Sequential:
    """Linear(in_features, output_dim) -> activation of a DEEP group's dense_projection."""
    from recframe.modules.mlp import activation_module

    return nn.Sequential(nn.Linear(in_features, config.output_dim), activation_module(config.activation))


class EmbeddingGroup(nn.Module):
    """Embedding tables for a set of feature groups, one table per embedding_name.

    Every feature naming the same ``embedding_name`` (in any of the groups) looks up the
    same ``nn.Embedding``. A DEEP group's output is the concatenation, in feature_names
    order, of each feature's pooled vector (sparse: pooled ids; dense: the values;
    sequence: masked pooling over valid positions). A SEQUENCE group concatenates its
    features' embeddings per position and applies the group's sequence encoder; its
    sequence_raw_feature / raw_feature members are not embedded but handed to the encoder
    (``extra_inputs``, e.g. time decay pooling). A DEEP group with ``dense_projection`` is
    passed through Linear + activation.

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
            if feature.kind in (SPARSE, SEQUENCE) and feature.embedding is not None:
                specs.setdefault(feature.embedding.name, feature.embedding)
        self.tables = nn.ModuleDict()
        for name, spec in specs.items():
            table = nn.Embedding(spec.num_embeddings, spec.embedding_dim)
            init_table(table.weight, spec.initializer)
            self.tables[name] = table
        self.encoders = nn.ModuleDict()
        for group in self.groups.values():
            if group.group_type == model_pb2.SEQUENCE:
                embedded = self._embedded(group)
                width = sum(self.features[n].output_dim for n in embedded)
                length = max((self.features[n].sequence_length for n in embedded), default=0)
                encoder = group.sequence_encoder if group.HasField("sequence_encoder") else None
                self.encoders[group.group_name] = create_sequence_encoder(width, encoder, sequence_length=length)
        self.projections = nn.ModuleDict()
        for group in self.groups.values():
            if group.group_type == model_pb2.DEEP and group.HasField("dense_projection"):
                width = sum(self.feature_dims(group.group_name))
                self.projections[group.group_name] = dense_projection(width, group.dense_projection)

    def _embedded(self, group: model_pb2.FeatureGroupConfig) -> list[str]:
        """The id sequences of a SEQUENCE group (the others are inputs of its encoder)."""
        return [n for n in group.feature_names
                if self.features[n].kind == SEQUENCE and self.features[n].embedding is not None]

    def restricted_to(self, group_names: Iterable[str]) -> "EmbeddingGroup":
        """An EmbeddingGroup of only ``group_names``, sharing this one's tables, encoders and
        projections (nothing is copied); ``self`` when that is every group."""
        names = list(group_names)
        if set(names) == set(self.groups):
            return self
        sub = EmbeddingGroup.__new__(EmbeddingGroup)
        nn.Module.__init__(sub)
        sub.groups = {n: self.groups[n] for n in names}
        sub.features = {f: self.features[f] for g in sub.groups.values() for f in g.feature_names}
        used = {f.embedding.name for f in sub.features.values() if f.embedding is not None}
        sub.tables = nn.ModuleDict({n: t for n, t in self.tables.items() if n in used})
        sub.encoders = nn.ModuleDict({n: e for n, e in self.encoders.items() if n in sub.groups})
        sub.projections = nn.ModuleDict({n: p for n, p in self.projections.items() if n in sub.groups})
        return sub

    def is_plain_deep(self, group_name: str) -> bool:
        """A DEEP group of two or more features without dense_projection: its output is the
        concatenation of its features' vectors (what variational dropout weighs)."""
        group = self.groups[group_name]
        return (group.group_type == model_pb2.DEEP and len(group.feature_names) > 1
                and not group.HasField("dense_projection"))

    def feature_dims(self, group_name: str) -> list[int]:
        """Width of each feature's slice of a DEEP group's output, in order."""
        group = self.groups[group_name]
        return [self.features[n].output_dim for n in group.feature_names]

    def group_dim(self, group_name: str) -> int:
        """Width of a group's output."""
        if group_name in self.encoders:
            return self.encoders[group_name].output_dim
        if group_name in self.projections:
            return self.projections[group_name][0].out_features
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

    def _encoder_input(self, feature_name: str, batch: Batch) -> torch.Tensor:
        """A non-embedded member of a SEQUENCE group: (B, L) sequence values or (B, value_dim) raw values."""
        if self.features[feature_name].kind == DENSE:
            return batch.dense[feature_name]
        return batch.sequence[feature_name].values

    def forward(self, batch: Batch, group_names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """{group_name: (B, group_dim)} for ``group_names`` (default: every group)."""
        outputs = {}
        for name in group_names if group_names is not None else self.groups:
            group = self.groups[name]
            if name in self.encoders:
                embedded = self._embedded(group)
                seqs = [batch.sequence[n] for n in embedded]
                seqs += [batch.sequence[n] for n in group.feature_names
                         if n not in embedded and self.features[n].kind == SEQUENCE]
                # A data-dependent check: kept in eager mode, skipped while torch.export traces.
                if not torch.compiler.is_exporting() and any(
                        not torch.equal(s.lengths, seqs[0].lengths) for s in seqs[1:]):
                    raise ValueError(
                        f"feature group '{name}': its sequence features {list(group.feature_names)} must have "
                        "the same length in every row (aligned sequences)"
                    )
                x = torch.cat([F.embedding(s.ids, self.table_of(n).weight) for n, s in zip(embedded, seqs)], dim=-1)
                encoder = self.encoders[name]
                if getattr(encoder, "extra_inputs", ()):
                    outputs[name] = encoder(x, seqs[0].mask(), {n: self._encoder_input(n, batch) for n in encoder.extra_inputs})
                else:
                    outputs[name] = encoder(x, seqs[0].mask())
            else:
                outputs[name] = torch.cat([self._pooled(self.features[n], batch) for n in group.feature_names], dim=-1)
                if name in self.projections:
                    outputs[name] = self.projections[name](outputs[name])
        return outputs
