"""SequenceIdFeature / SequenceRawFeature: a list of ids / numbers per row, kept per position (padded)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import SequenceIds, SequenceValues
from recframe.features.base import SEQUENCE, EmbeddingSpec, Feature, IdMapper, pooling_name
from recframe.features.columns import flatten_to_offsets
from recframe.protos import feature_pb2
from recframe.registry import FEATURES


def pad_last(values: np.ndarray, offsets: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's last ``max_length`` values, right-padded with 0.

    Args:
        values: (N,) int64 jagged values; offsets: (B + 1,) int64.
    Returns:
        ids: (B, max_length) int64, row i holds its kept values in order at positions
        0..lengths[i]-1; lengths: (B,) int64.
    """
    lengths = np.minimum(np.diff(offsets), max_length)
    starts = offsets[1:] - lengths
    positions = np.arange(max_length, dtype=np.int64)
    valid = positions[None, :] < lengths[:, None]
    gather = np.where(valid, starts[:, None] + positions[None, :], 0)
    ids = np.where(valid, values[gather] if len(values) else 0, 0).astype(np.int64)
    return ids, lengths.astype(np.int64)


@FEATURES.register()
class SequenceIdFeature(Feature):
    """Sequence of ids (most recent last), truncated to the last ``sequence_length``.

    Input: (B,) list column or string split by ``sequence_delim``.
    Output of :meth:`parse`: :class:`SequenceIds` with ids (B, sequence_length) and
    lengths (B,).
    """

    kind = SEQUENCE

    def __init__(self, config: feature_pb2.SequenceIdFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.mapper = IdMapper(config, config_dir)
        self.sequence_length = int(config.sequence_length)
        self.pooling = pooling_name(config.pooling)
        self.embedding = EmbeddingSpec.from_config(config, self.mapper.table_size)

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SequenceIds:
        values, offsets = flatten_to_offsets(column, self.config.sequence_delim or None)
        ids = self.mapper.map(values, self, source)
        padded, lengths = pad_last(ids, offsets, self.sequence_length)
        return SequenceIds(torch.from_numpy(padded), torch.from_numpy(lengths))


@FEATURES.register()
class SequenceRawFeature(Feature):
    """Sequence of numbers (e.g. history timestamps), truncated to the last ``sequence_length``.

    Not looked up in a table: a SEQUENCE group hands it to its encoder (time decay pooling).
    Input: (B,) list column of numbers or string split by ``sequence_delim``.
    Output of :meth:`parse`: :class:`SequenceValues` with values (B, sequence_length)
    float32 right-padded with 0 and lengths (B,), aligned with an id sequence of the same
    column layout.
    """

    kind = SEQUENCE

    def __init__(self, config: feature_pb2.SequenceRawFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.sequence_length = int(config.sequence_length)
        self.embedding = None

    @property
    def output_dim(self) -> int:
        return 0  # not embedded: an input of the group's encoder

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SequenceValues:
        values, offsets = flatten_to_offsets(column, self.config.sequence_delim or None)
        try:
            numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(source, f"expected numbers, got {values.type} ({e})") from None
        lengths = np.minimum(np.diff(offsets), self.sequence_length)
        starts = offsets[1:] - lengths
        positions = np.arange(self.sequence_length, dtype=np.int64)
        valid = positions[None, :] < lengths[:, None]
        gather = np.where(valid, starts[:, None] + positions[None, :], 0)
        padded = np.where(valid, numbers[gather] if len(numbers) else 0.0, 0.0).astype(np.float32)
        return SequenceValues(torch.from_numpy(padded), torch.from_numpy(lengths.astype(np.int64)))
