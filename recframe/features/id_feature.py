"""IdFeature: categorical ids (one or several per row) pooled into one embedding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recframe.batch import SPARSE, SparseIds
from recframe.features.base import EmbeddingSpec, Feature, IdMapper, is_id_type, is_list_type, pooling_name
from recframe.features.columns import flatten_to_offsets
from recframe.protos import feature_pb2
from recframe.registry import FEATURES


@FEATURES.register()
class IdFeature(Feature):
    """Categorical feature.

    Input: (B,) integer/string column, list column, or delimited string (``separator``).
    Output of :meth:`parse`: :class:`SparseIds` with (N,) table rows and (B + 1,) offsets;
    null or empty rows own no ids and pool to the zero vector.

    Example::

        feature = IdFeature(text_format.Parse('feature_name: "genre" vocab_list: ["a", "b"] '
                                              'embedding_dim: 4', feature_pb2.IdFeature()))
        feature.parse(pa.array([["a", "x"], None]))   # values [1, 0], offsets [0, 2, 2]
    """

    kind = SPARSE

    def __init__(self, config: feature_pb2.IdFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.mapper = IdMapper(config, config_dir)
        self.pooling = pooling_name(config.pooling)
        self.embedding = EmbeddingSpec.from_config(config, self.mapper.table_size)

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        IdMapper.check_config(message, path, ctx)

    def table_mapping(self) -> tuple:
        return self.mapper.table_mapping()

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SparseIds:
        values, offsets = flatten_to_offsets(column, self.config.separator or None)
        ids = self.mapper.map(values, self, source)
        return SparseIds(torch.from_numpy(np.ascontiguousarray(ids)), torch.from_numpy(offsets))

    def describe(self) -> dict:
        out = {"type": type(self).__name__, **self.mapper.describe(), "pooling": self.pooling}
        if self.config.separator:
            out["separator"] = self.config.separator
        return out

    def column_type_problem(self, t: pa.DataType) -> str | None:
        ok = is_id_type(t) or (is_list_type(t) and is_id_type(t.value_type))
        return None if ok else "ids (integers or strings) or lists of ids"
