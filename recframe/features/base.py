"""Feature base class and the id mapping shared by categorical features."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recframe.batch import DENSE, SEQUENCE, SPARSE
from recframe.features.columns import FeatureInputError
from recframe.features.hashing import hash_bucket
from recframe.protos import feature_pb2

class Feature(ABC):
    """One configured feature: parses a raw column into model inputs.

    Subclasses set ``kind`` to ``"sparse"`` (jagged ids, pooled), ``"dense"`` (floats) or
    ``"sequence"`` (padded ids kept per position).
    """

    kind: str

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.feature_name
        self.input_name: str = config.input_name or config.feature_name

    @abstractmethod
    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> Any:
        """Parse the feature's input column of one batch."""

    @property
    def output_dim(self) -> int:
        """Width of the feature's pooled vector in a DEEP group."""
        raise NotImplementedError

    def error(self, source: str, message: str) -> FeatureInputError:
        where = f"{source}: " if source else ""
        return FeatureInputError(f"{where}feature '{self.name}' (column '{self.input_name}'): {message}")


class EmbeddingSpec:
    """Size and layout of the embedding table a categorical feature looks up."""

    def __init__(self, name: str, num_embeddings: int, embedding_dim: int, initializer: feature_pb2.Initializer | None):
        self.name = name
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.initializer = initializer

    @classmethod
    def from_config(cls, config: Any, num_embeddings: int) -> "EmbeddingSpec":
        """The table a feature message names (embedding_name, default feature_name)."""
        return cls(
            config.embedding_name or config.feature_name,
            num_embeddings,
            int(config.embedding_dim),
            config.initializer if config.HasField("initializer") else None,
        )


def pooling_name(pooling: int) -> str:
    """"mean" or "sum" for a feature_pb2.Pooling value."""
    return "mean" if pooling == feature_pb2.MEAN else "sum"


class IdMapper:
    """Maps raw categorical values to table rows, identically everywhere.

    Exactly one of: ``num_buckets`` (integers used as they are, out of range is an error),
    ``hash_bucket_size`` (FNV-1a 64 modulo the size), a vocabulary (value i -> i + 1,
    anything else -> 0, the out-of-vocabulary row).
    """

    def __init__(self, config: Any, config_dir: str = "") -> None:
        self.num_buckets = int(config.num_buckets) if config.HasField("num_buckets") else 0
        self.hash_bucket_size = int(config.hash_bucket_size) if config.HasField("hash_bucket_size") else 0
        vocab = list(config.vocab_list)
        if config.HasField("vocab_file"):
            path = config.vocab_file
            if not os.path.isabs(path) and config_dir:
                path = os.path.join(config_dir, path)
            with open(path, encoding="utf-8") as f:
                vocab = [line.rstrip("\n\r") for line in f if line.strip()]
        self.vocab = pa.array(vocab, pa.string()) if vocab else None
        if self.vocab is not None:
            self.table_size = len(vocab) + 1
        elif self.hash_bucket_size:
            self.table_size = self.hash_bucket_size
        elif self.num_buckets:
            self.table_size = self.num_buckets
        else:
            raise ValueError(
                f"feature '{config.feature_name}': set one of num_buckets, hash_bucket_size, vocab_list, vocab_file"
            )

    def map(self, values: pa.Array, feature: Feature, source: str) -> np.ndarray:
        """(N,) raw values -> (N,) int64 table rows."""
        if self.vocab is not None:
            as_text = values if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) else pc.cast(values, pa.string())
            index = pc.index_in(as_text, value_set=self.vocab)
            return pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if self.hash_bucket_size:
            try:
                return hash_bucket(values, self.hash_bucket_size)
            except TypeError as e:
                raise feature.error(source, f"hash_bucket_size needs string or integer values ({e})") from None
        return self._checked_ids(values, feature, source)

    def _checked_ids(self, values: pa.Array, feature: Feature, source: str) -> np.ndarray:
        if pa.types.is_null(values.type):  # an all-null column (e.g. a CSV block): no ids
            values = values.cast(pa.int64())
        if not pa.types.is_integer(values.type):
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                try:
                    values = pc.cast(values, pa.int64())
                except pa.ArrowInvalid as e:
                    raise feature.error(source, f"num_buckets needs integer ids, got a non-integer string ({e})") from None
            else:
                raise feature.error(source, f"num_buckets needs integer ids, got column type {values.type}")
        ids = values.to_numpy(zero_copy_only=False).astype(np.int64)
        if len(ids):
            bad = (ids < 0) | (ids >= self.num_buckets)
            if bad.any():
                raise feature.error(
                    source,
                    f"id {int(ids[bad][0])} is outside [0, num_buckets={self.num_buckets}) "
                    f"({int(bad.sum())} ids out of range); raise num_buckets or use hash_bucket_size",
                )
        return ids
