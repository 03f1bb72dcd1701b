"""IdFeature: categorical ids (one or several per row) pooled into one embedding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recframe.batch import SparseIds
from recframe.features.base import SPARSE, EmbeddingSpec, Feature, IdMapper, pooling_name
from recframe.features.columns import flatten_to_offsets
from recframe.protos import feature_pb2
from recframe.registry import FEATURES


@FEATURES.register()
class IdFeature(Feature):
    """Categorical feature.

    Input: (B,) integer/string column, list column, or delimited string (``separator``).
    Output of :meth:`parse`: :class:`SparseIds` with (N,) table rows and (B + 1,) offsets;
    null or empty rows own no ids and pool to the zero vector.
    """

    kind = SPARSE

    def __init__(self, config: feature_pb2.IdFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.mapper = IdMapper(config, config_dir)
        self.pooling = pooling_name(config.pooling)
        self.embedding = EmbeddingSpec.from_config(config, self.mapper.table_size)

    @property
    def output_dim(self) -> int:
        return self.embedding.embedding_dim

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SparseIds:
        values, offsets = flatten_to_offsets(column, self.config.separator or None)
        ids = self.mapper.map(values, self, source)
        return SparseIds(torch.from_numpy(np.ascontiguousarray(ids)), torch.from_numpy(offsets))
