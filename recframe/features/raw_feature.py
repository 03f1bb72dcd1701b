"""RawFeature: floats per row, normalized; bucketized into ids when boundaries are set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import SparseIds
from recframe.features.base import DENSE, SPARSE, EmbeddingSpec, Feature
from recframe.features.columns import flatten_column
from recframe.protos import feature_pb2
from recframe.registry import FEATURES


def normalize(values: np.ndarray, normalizer: feature_pb2.Normalizer) -> np.ndarray:
    """Apply a configured normalizer elementwise to float32 values."""
    which = normalizer.WhichOneof("normalizer")
    if which == "z_score":
        return (values - normalizer.z_score.mean) / normalizer.z_score.std
    if which == "min_max":
        return (values - normalizer.min_max.min) / (normalizer.min_max.max - normalizer.min_max.min)
    if which == "log1p":
        return np.sign(values) * np.log1p(np.abs(values))
    return values


@FEATURES.register()
class RawFeature(Feature):
    """Numeric feature of ``value_dim`` floats per row.

    Input: (B,) numeric column, list column of value_dim numbers, or a string split by
    ``separator``. Null rows take ``default_value``.
    Output of :meth:`parse`: (B, value_dim) float32 tensor; with ``boundaries``, a
    :class:`SparseIds` of one bucket per row (bucket = number of boundaries <= value).
    """

    def __init__(self, config: feature_pb2.RawFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.value_dim = int(config.value_dim)
        self.boundaries = np.asarray(list(config.boundaries), dtype=np.float32)
        self.kind = SPARSE if len(self.boundaries) else DENSE
        self.pooling = "sum"
        self.embedding = None
        if self.kind == SPARSE:
            self.embedding = EmbeddingSpec.from_config(config, len(self.boundaries) + 1)

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim if self.embedding else self.value_dim

    def values(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> np.ndarray:
        """(B, value_dim) float32 normalized values."""
        num_rows = len(column)
        flat, row_of = flatten_column(column, self.config.separator or None)
        try:
            # Via float64: a safe int64 -> float32 cast rejects integers beyond 2^24 (e.g. Unix
            # timestamps, the documented sample_time_feature of time_decay_pooling).
            numbers = pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(source, f"expected numbers, got {flat.type} ({e})") from None
        counts = np.bincount(row_of, minlength=num_rows)
        present = counts > 0
        bad = present & (counts != self.value_dim)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise self.error(
                source, f"row {row} has {int(counts[row])} values, expected value_dim={self.value_dim}"
            )
        out = np.full((num_rows, self.value_dim), self.config.default_value, dtype=np.float32)
        out[present] = numbers.reshape(-1, self.value_dim)
        if self.config.HasField("normalizer"):
            out = normalize(out, self.config.normalizer).astype(np.float32)
        return out

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> torch.Tensor | SparseIds:
        values = self.values(column, source)
        if self.kind == DENSE:
            return torch.from_numpy(values)
        buckets = np.searchsorted(self.boundaries, values[:, 0], side="right").astype(np.int64)
        offsets = np.arange(len(buckets) + 1, dtype=np.int64)
        return SparseIds(torch.from_numpy(buckets), torch.from_numpy(offsets))
