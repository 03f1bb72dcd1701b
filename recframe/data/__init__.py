"""Data: streaming Parquet / CSV readers, sharding across ranks and workers, the Dataset.

See :mod:`recframe.data.reader` (sharding, shuffling, batching) and
:mod:`recframe.data.dataset` (DataLoader integration, resume semantics).
"""

from recframe.data.dataset import (
    DataState,
    RecordBatchDataset,
    create_dataloader,
    round_robin_skips,
    seed_worker,
)
from recframe.data.reader import (
    CSV,
    PARQUET,
    DataError,
    InputPathNotFoundError,
    ReaderState,
    ReadPiece,
    StreamingReader,
    WorkUnit,
    count_rows,
    expand_input_paths,
    plan_epoch,
)

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
