"""SequenceIdFeature / SequenceRawFeature: a list of ids / numbers per row, kept per position (padded)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import SEQUENCE, SequenceIds, SequenceValues
from recframe.config.report import AT_LEAST_ONE
from recframe.features.base import (EmbeddingSpec, Feature, IdMapper, is_id_type, is_list_type, is_number_type,
                                    is_string_type, pooling_name)
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
    config_ranges = {"sequence_length": AT_LEAST_ONE}

    def __init__(self, config: feature_pb2.SequenceIdFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.mapper = IdMapper(config, config_dir)
        self.sequence_length = int(config.sequence_length)
        self.pooling = pooling_name(config.pooling)
        self.embedding = EmbeddingSpec.from_config(config, self.mapper.table_size)

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        IdMapper.check_config(message, path, ctx)

    def table_mapping(self) -> tuple:
        return self.mapper.table_mapping()

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SequenceIds:
        values, offsets = flatten_to_offsets(column, self.config.sequence_delim or None)
        ids = self.mapper.map(values, self, source)
        padded, lengths = pad_last(ids, offsets, self.sequence_length)
        return SequenceIds(torch.from_numpy(padded), torch.from_numpy(lengths))

    def describe(self) -> dict:
        out = {"type": type(self).__name__, **self.mapper.describe(), "pooling": self.pooling,
               "sequence_length": self.sequence_length}
        if self.config.sequence_delim:
            out["sequence_delim"] = self.config.sequence_delim
        return out

    def column_type_problem(self, t: pa.DataType) -> str | None:
        delim = self.config.sequence_delim
        ok = (is_list_type(t) and is_id_type(t.value_type)) or (delim and is_string_type(t)) or pa.types.is_null(t)
        return None if ok else "a list of ids" + (f" or a string split by {delim!r}" if delim else "")


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
    config_ranges = {"sequence_length": AT_LEAST_ONE}

    def __init__(self, config: feature_pb2.SequenceRawFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.sequence_length = int(config.sequence_length)

    # output_dim 0 (no table): not embedded, an input of its group's encoder.

    def tensor_specs(self) -> list[dict]:
        return [{"name": f"{self.name}.values", "dtype": "float32", "shape": ["B", "L"]},
                {"name": f"{self.name}.lengths", "dtype": "int64", "shape": ["B"]}]

    def to_tensors(self, value: SequenceValues) -> list[torch.Tensor]:
        return [value.values, value.lengths]

    def from_tensors(self, tensors: list[torch.Tensor]) -> SequenceValues:
        return SequenceValues(*tensors)

    def example_tensors(self, lengths: torch.Tensor, width: int, generator: torch.Generator) -> list[torch.Tensor]:
        values = torch.rand(len(lengths), width, generator=generator)
        values[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        return [values, lengths.clone()]

    def describe(self) -> dict:
        out = {"type": type(self).__name__, "mapping": "values", "sequence_length": self.sequence_length}
        if self.config.sequence_delim:
            out["sequence_delim"] = self.config.sequence_delim
        return out

    def column_type_problem(self, t: pa.DataType) -> str | None:
        delim = self.config.sequence_delim
        ok = (is_list_type(t) and is_number_type(t.value_type)) or (delim and is_string_type(t)) or pa.types.is_null(t)
        return None if ok else "a list of numbers" + (f" or a string split by {delim!r}" if delim else "")

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
