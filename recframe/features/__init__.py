"""Features: raw columns -> ids / values / padded sequences, vectorized on Arrow/NumPy.

One implementation serves training, evaluation, export and serving. Each feature class
(FEATURES registry) owns its config rules, widths, parsing and flat tensors
(:class:`~recframe.features.base.Feature`); a new one is a proto message (a member of
``FeatureConfig.feature``), a file here and its import below.
"""

from __future__ import annotations

from typing import Iterable

from recframe.batch import DENSE, SEQUENCE, SPARSE
from recframe.features.base import EmbeddingSpec, Feature
from recframe.features.columns import FeatureInputError
from recframe.features.hashing import fnv1a64, hash_bucket, item_keys
from recframe.features.id_feature import IdFeature
from recframe.features.parse import BatchParser
from recframe.features.raw_feature import RawFeature
from recframe.features.sequence_feature import SequenceIdFeature, SequenceRawFeature
from recframe.features.text_feature import TextFeature, text_buckets, text_ngrams
from recframe.protos import feature_pb2
from recframe.protoutil import oneof_message
from recframe.registry import FEATURES


def create_features(feature_configs: Iterable[feature_pb2.FeatureConfig], config_dir: str = "") -> dict[str, Feature]:
    """Build every configured feature, keyed by feature_name, in config order.

    The class is looked up in the FEATURES registry by the proto message name of the
    oneof that is set (message name == class name).
    """
    features: dict[str, Feature] = {}
    for config in feature_configs:
        message = oneof_message(config, "feature")
        cls = FEATURES.get(type(message).DESCRIPTOR.name)
        feature = cls(message, config_dir)
        features[feature.name] = feature
    return features


__all__ = [
    "BatchParser", "DENSE", "EmbeddingSpec", "Feature", "FeatureInputError", "IdFeature",
    "RawFeature", "SEQUENCE", "SPARSE", "SequenceIdFeature", "SequenceRawFeature",
    "TextFeature", "create_features",
    "fnv1a64", "hash_bucket", "item_keys", "text_buckets", "text_ngrams",
]
