"""EmbeddingGroup: embedding tables shared by name, and the feature-group outputs.

The module also owns the rules of ``model_config.feature_groups`` (:meth:`EmbeddingGroup.
check_config`) and the width of a group's output (:meth:`EmbeddingGroup.group_width`), the
same computation at validation and at build time.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recframe.batch import DENSE, SEQUENCE, SPARSE, Batch
from recframe.config.names import ACTIVATIONS, activation_name
from recframe.config.report import join_path, one_of, unknown_name
from recframe.features import EmbeddingSpec, Feature
from recframe.modules.initializers import init_table
from recframe.modules.mlp import activation_module
from recframe.modules.sequence_encoders import create_sequence_encoder, encoder_class, masked_pool
from recframe.protos import model_pb2


def dense_projection(in_features: int, config: model_pb2.DenseProjection) -> nn.Sequential:
    """Linear(in_features, output_dim) -> activation of a DEEP group's dense_projection."""
    return nn.Sequential(nn.Linear(in_features, config.output_dim), activation_module(config.activation))


def pool_jagged(values: torch.Tensor, offsets: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sum or mean of jagged rows: (N, D) values with (B + 1,) offsets -> (B, D); an empty
    row gives zeros (as ``F.embedding_bag``)."""
    lengths = offsets[1:] - offsets[:-1]
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=values.device), lengths,
                                   output_size=values.shape[0])
    summed = values.new_zeros((len(lengths), values.shape[-1])).index_add_(0, rows, values)
    if pooling == "sum":
        return summed
    return summed / lengths.clamp(min=1).unsqueeze(1).to(values.dtype)


#: batch.extra key of the embeddings a sharded lookup returned during the current forward pass.
_SHARDED_LOOKUPS = "_sharded_lookups"


def forget_sharded_lookups(batch: Batch) -> None:
    """End of a forward pass: drop the sharded lookups' embeddings cached on ``batch``."""
    batch.extra.pop(_SHARDED_LOOKUPS, None)


def is_embedded_sequence(feature: Feature) -> bool:
    """A sequence looked up in a table (a SEQUENCE group concatenates these per position)."""
    return feature.kind == SEQUENCE and feature.embedding is not None


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
        sparse: the tables get sparse gradients (``nn.Embedding(sparse=True)``): a backward
            pass produces gradients for the rows looked up only.
    Input: a Batch. Output of forward: {group_name: (B, group_dim)}.
    """

    def __init__(self, features: Mapping[str, Feature], groups: Iterable[model_pb2.FeatureGroupConfig],
                 sparse: bool = False) -> None:
        super().__init__()
        self.groups = {g.group_name: g for g in groups}
        self.features = {name: features[name] for g in self.groups.values() for name in g.feature_names}
        specs: dict[str, EmbeddingSpec] = {}
        for feature in self.features.values():
            if feature.kind in (SPARSE, SEQUENCE) and feature.embedding is not None:
                specs.setdefault(feature.embedding.name, feature.embedding)
        self.table_specs = dict(specs)  # the tables (name -> EmbeddingSpec), also when a lookup replaces them
        self.lookup: nn.Module | None = None  # a sharded lookup replacing the tables while training
        self.tables = nn.ModuleDict()
        for name, spec in specs.items():
            table = nn.Embedding(spec.num_embeddings, spec.embedding_dim, sparse=sparse)
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
        return [n for n in group.feature_names if is_embedded_sequence(self.features[n])]

    @staticmethod
    def group_width(group: model_pb2.FeatureGroupConfig, features: Mapping[str, Feature]) -> int | None:
        """Width of a group's output from its (built) features; None when a member is missing
        from ``features`` or has no width in a DEEP group (problems reported elsewhere)."""
        members = [features.get(n) for n in group.feature_names]
        if group.group_type == model_pb2.SEQUENCE:
            widths = [f.output_dim for f in members if f is not None and is_embedded_sequence(f)]
            if not widths or None in members:
                return None
            cls, message = encoder_class(group.sequence_encoder if group.HasField("sequence_encoder") else None)
            return cls.output_width(sum(widths), message)
        if group.HasField("dense_projection"):
            return int(group.dense_projection.output_dim) or None
        widths = [f.output_dim if f is not None else 0 for f in members]
        return sum(widths) if widths and all(w > 0 for w in widths) else None

    @classmethod
    def check_config(cls, ctx: Any) -> None:
        """Rules of every ``model_config.feature_groups`` entry: names, members, DEEP vs
        SEQUENCE, encoders (each encoder class checks its own message), projections. Fills
        ``ctx.groups`` (name -> (index, group))."""
        model_config = ctx.config.model_config
        if not model_config.feature_groups:
            ctx.add("model_config.feature_groups", "empty, expected at least one feature group per tower")
        for i, group in enumerate(model_config.feature_groups):
            path = f"model_config.feature_groups[{i}]"
            if group.HasField("group_name") and not group.group_name:
                ctx.add(join_path(path, "group_name"), "empty, expected a name")
            elif group.group_name in ctx.groups:
                ctx.add(join_path(path, "group_name"), f"duplicate group name '{group.group_name}' (also "
                                                       f"model_config.feature_groups[{ctx.groups[group.group_name][0]}]), "
                                                       "expected unique names")
            elif group.group_name:
                ctx.groups[group.group_name] = (i, group)
            cls._check_group(group, path, ctx)
        cls._check_unused_pooling(ctx)

    @staticmethod
    def _check_unused_pooling(ctx: Any) -> None:
        """A feature's ``pooling`` applies in DEEP groups only: a SEQUENCE group's encoder reduces
        the positions. Set on a feature that is only in SEQUENCE groups, it would be ignored."""
        groups = list(enumerate(ctx.config.model_config.feature_groups))
        for name in ctx.feature_names():
            feature, message = ctx.features.get(name), ctx.feature_message(name)
            if feature is None or not is_embedded_sequence(feature):
                continue  # other kinds in a SEQUENCE group are reported as members it cannot hold
            if "pooling" not in message.DESCRIPTOR.fields_by_name or not message.HasField("pooling"):
                continue
            member_of = [(i, g) for i, g in groups if name in g.feature_names]
            if not member_of or any(g.group_type != model_pb2.SEQUENCE for _, g in member_of):
                continue
            pooling = message.DESCRIPTOR.fields_by_name["pooling"].enum_type.values_by_number[message.pooling].name
            where = one_of(f"'{g.group_name}' (model_config.feature_groups[{i}])" for i, g in member_of)
            ctx.add(join_path(ctx.feature_paths[name], "pooling"),
                    f"set to {pooling}, but '{name}' is only in SEQUENCE group {where}, whose sequence_encoder "
                    "reduces the positions (it would be ignored), expected no pooling (or the feature in a DEEP "
                    "group)")

    @classmethod
    def _check_group(cls, group: model_pb2.FeatureGroupConfig, path: str, ctx: Any) -> None:
        if not group.feature_names:
            ctx.add(join_path(path, "feature_names"), "empty, expected at least one feature name")
        seen: set[str] = set()
        for j, name in enumerate(group.feature_names):
            where = f"{path}.feature_names[{j}]"
            if name in seen:
                ctx.add(where, f"feature '{name}' appears twice in group '{group.group_name}', expected each at most once")
            elif ctx.feature_field(name) is None:
                ctx.add(where, unknown_name("feature", name, ctx.feature_names()))
            seen.add(name)
        members = [n for n in dict.fromkeys(group.feature_names) if ctx.feature_field(n) is not None]
        if group.group_type == model_pb2.SEQUENCE:
            cls._check_sequence_group(group, path, members, ctx)
        else:
            cls._check_deep_group(group, path, ctx)

    @staticmethod
    def _check_sequence_group(group: model_pb2.FeatureGroupConfig, path: str, members: list[str], ctx: Any) -> None:
        """Members: embedded sequences of one length, and the features the encoder reads."""
        encoder_cls, message = encoder_class(group.sequence_encoder if group.HasField("sequence_encoder") else None)
        extra = set(encoder_cls.extra_inputs_of(message))
        built = {n: ctx.features[n] for n in members if n in ctx.features}
        embedded = [n for n, f in built.items() if is_embedded_sequence(f)]
        for j, name in enumerate(group.feature_names):
            feature = built.get(name)
            if feature is None or name in embedded or name in extra:
                continue
            kind, where = ctx.feature_field(name), f"{path}.feature_names[{j}]"
            if feature.kind == SEQUENCE or feature.output_dim == 0 or feature.kind == DENSE:
                ctx.add(where, f"{kind} '{name}' is not read by the group's sequence_encoder (it would be "
                               "ignored), expected it named by time_decay_pooling (timestamp_feature or "
                               "sample_time_feature) or left out of the group")
            else:
                ctx.add(where, f"feature '{name}' is a {kind}, expected only sequence_id_feature features in a "
                               "SEQUENCE group (and the sequence_raw_feature / raw_feature its encoder reads)")
        if members and len(built) == len(members) and not embedded:
            ctx.add(join_path(path, "feature_names"), "no sequence_id_feature, expected at least one "
                                                      "(the embedded sequence the encoder reduces)")
        lengths = {n: f.sequence_length for n, f in built.items() if f.kind == SEQUENCE}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{n}: {v}" for n, v in lengths.items())
            ctx.add(path, f"sequence_length differs ({listed}), expected equal sequence_length in a SEQUENCE group")
        which = group.sequence_encoder.WhichOneof("encoder")
        if which is not None:
            widths = [built[n].output_dim for n in embedded]
            width = sum(widths) if widths and len(built) == len(members) else None
            encoder_cls.check_config(message, join_path(path, f"sequence_encoder.{which}"), group, width, ctx)
        if group.HasField("dense_projection"):
            ctx.add(join_path(path, "dense_projection"), "set on a SEQUENCE group, expected it only on DEEP groups")

    @staticmethod
    def _check_deep_group(group: model_pb2.FeatureGroupConfig, path: str, ctx: Any) -> None:
        if group.HasField("sequence_encoder"):
            ctx.add(join_path(path, "sequence_encoder"), "set on a DEEP group, expected it only on SEQUENCE groups")
        for j, name in enumerate(group.feature_names):
            feature = ctx.features.get(name)
            if feature is not None and feature.output_dim == 0:  # nothing to pool: an encoder's input
                ctx.add(f"{path}.feature_names[{j}]", f"{ctx.feature_field(name)} '{name}' in a DEEP group, expected "
                                                      "it only in a SEQUENCE group whose encoder reads it")
        if group.HasField("dense_projection"):
            activation = group.dense_projection.activation
            try:
                activation_name(activation)
            except ValueError:
                ctx.add(join_path(path, "dense_projection.activation"), unknown_name(
                    "activation", activation, list(ACTIVATIONS),
                    expected=f"one of {one_of(ACTIVATIONS)} (or PyTorch style, e.g. 'nn.ReLU')"))

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
        sub.lookup = None
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
        return self.group_width(self.groups[group_name], self.features)

    def table_of(self, feature_name: str) -> nn.Embedding:
        """The table a categorical feature looks up."""
        return self.tables[self.features[feature_name].embedding.name]

    def _pooled(self, feature: Feature, batch: Batch, looked: dict | None) -> torch.Tensor:
        if feature.kind == DENSE:
            return batch.dense[feature.name]
        if feature.kind == SPARSE:
            ids = batch.sparse[feature.name]
            if looked is not None:  # the sharded lookup's embeddings of the ids, pooled here
                return pool_jagged(looked[feature.name], ids.offsets, feature.pooling)
            table = self.tables[feature.embedding.name]
            return F.embedding_bag(ids.values, table.weight, ids.offsets, mode=feature.pooling,
                                   include_last_offset=True, sparse=table.sparse)
        seq = batch.sequence[feature.name]
        return masked_pool(self._embedded_sequence(feature.name, seq, looked), seq.mask(), feature.pooling)

    def _embedded_sequence(self, name: str, seq, looked: dict | None) -> torch.Tensor:
        """(B, L, D) embeddings of a padded id sequence (0 at padded positions from a lookup)."""
        if looked is None:
            return self.table_of(name)(seq.ids)
        values = looked[name]
        out = values.new_zeros((*seq.ids.shape, values.shape[-1]))
        out[seq.mask()] = values
        return out

    def _looked_up(self, batch: Batch) -> dict | None:
        """With a sharded lookup (:mod:`recframe.modules.torchrec_tables`): every feature's
        embeddings of this batch, looked up once for both towers (one collective, and one fused
        update per table per step); the model forgets them at the end of its forward pass."""
        if self.lookup is None:
            return None
        cache = batch.extra.setdefault(_SHARDED_LOOKUPS, {})
        if id(self) not in cache:
            cache[id(self)] = self.lookup(batch)
        return cache[id(self)]

    def _encoder_input(self, feature_name: str, batch: Batch) -> torch.Tensor:
        """A non-embedded member of a SEQUENCE group: (B, L) sequence values or (B, value_dim) raw values."""
        if self.features[feature_name].kind == DENSE:
            return batch.dense[feature_name]
        return batch.sequence[feature_name].values

    def forward(self, batch: Batch, group_names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """{group_name: (B, group_dim)} for ``group_names`` (default: every group)."""
        looked = self._looked_up(batch)
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
                x = torch.cat([self._embedded_sequence(n, s, looked) for n, s in zip(embedded, seqs)], dim=-1)
                encoder = self.encoders[name]
                if getattr(encoder, "extra_inputs", ()):
                    outputs[name] = encoder(x, seqs[0].mask(), {n: self._encoder_input(n, batch) for n in encoder.extra_inputs})
                else:
                    outputs[name] = encoder(x, seqs[0].mask())
            else:
                outputs[name] = torch.cat([self._pooled(self.features[n], batch, looked) for n in group.feature_names],
                                          dim=-1)
                if name in self.projections:
                    outputs[name] = self.projections[name](outputs[name])
        return outputs
