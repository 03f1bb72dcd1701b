"""Facts about the features of a config that several rules need (kinds, widths, tables)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from recframe.protos import pipeline_pb2

#: Members of FeatureConfig.feature.
FEATURE_KINDS = ("id_feature", "raw_feature", "sequence_id_feature", "sequence_raw_feature", "text_feature")
#: Feature kinds kept per position (padded) for a SEQUENCE group.
SEQUENCE_KINDS = ("sequence_id_feature", "sequence_raw_feature")
#: Fields that size the table of an id or sequence id feature; exactly one must be set.
TABLE_SIZE_FIELDS = ("num_buckets", "hash_bucket_size", "vocab_list", "vocab_file")


@dataclass(frozen=True)
class FeatureInfo:
    """One feature of ``feature_configs``: where it is, what kind, its message."""

    index: int
    kind: str
    message: Message

    @property
    def name(self) -> str:
        """The feature_name."""
        return self.message.feature_name

    @property
    def path(self) -> str:
        """Field path of the feature message, e.g. ``feature_configs[2].id_feature``."""
        return f"feature_configs[{self.index}].{self.kind}"

    @property
    def is_sequence(self) -> bool:
        """True for sequence_id_feature and sequence_raw_feature."""
        return self.kind in SEQUENCE_KINDS

    @property
    def has_table(self) -> bool:
        """True if the feature is looked up in an embedding table."""
        if self.kind == "sequence_raw_feature":
            return False
        return self.kind != "raw_feature" or len(self.message.boundaries) > 0

    @property
    def embedding_name(self) -> str:
        """Name of its embedding table (embedding_name, default feature_name)."""
        return self.message.embedding_name or self.message.feature_name

    @property
    def width(self) -> int:
        """Width of the feature's vector in a DEEP group (embedding_dim, or value_dim unbucketized)."""
        if self.has_table:
            return int(self.message.embedding_dim)
        if self.kind == "sequence_raw_feature":
            return 0  # not embedded: an input of its group's encoder
        return int(self.message.value_dim)


def list_features(config: pipeline_pb2.PipelineConfig) -> list[FeatureInfo]:
    """Every feature_configs entry that has a feature kind set, in order."""
    out = []
    for i, feature_config in enumerate(config.feature_configs):
        kind = feature_config.WhichOneof("feature")
        if kind is not None:
            out.append(FeatureInfo(i, kind, getattr(feature_config, kind)))
    return out


def features_by_name(config: pipeline_pb2.PipelineConfig) -> dict[str, FeatureInfo]:
    """feature_name -> its (first) FeatureInfo."""
    out: dict[str, FeatureInfo] = {}
    for info in list_features(config):
        out.setdefault(info.name, info)
    return out


def table_size_fields_set(message: Message) -> list[str]:
    """Which of TABLE_SIZE_FIELDS an id / sequence id feature sets."""
    return [
        name for name in TABLE_SIZE_FIELDS
        if (len(getattr(message, name)) > 0 if name == "vocab_list" else message.HasField(name))
    ]
