"""Data: streaming Parquet / CSV readers, sharding across ranks and workers, the Dataset.

See :mod:`recframe.data.inputs` (paths, file types, columns, work units),
:mod:`recframe.data.reader` (sharding, shuffling, batching),
:mod:`recframe.data.dataset` (DataLoader integration, resume semantics) and
:mod:`recframe.data.sources` (data sources that prepare tables, e.g. MovieLens).
"""

from recframe.data.dataset import (
    DataState,
    RecordBatchDataset,
    create_dataloader,
    round_robin_skips,
    seed_worker,
)
from recframe.data.inputs import (
    CSV,
    PARQUET,
    DataError,
    InputPathNotFoundError,
    WorkUnit,
    count_rows,
    expand_input_paths,
)
from recframe.data.reader import ReaderState, ReadPiece, StreamingReader, plan_epoch

__all__ = [
    "CSV",
    "PARQUET",
    "DataError",
    "DataState",
    "InputPathNotFoundError",
    "ReadPiece",
    "ReaderState",
    "RecordBatchDataset",
    "StreamingReader",
    "WorkUnit",
    "count_rows",
    "create_dataloader",
    "expand_input_paths",
    "plan_epoch",
    "round_robin_skips",
    "seed_worker",
]
