"""Embed every row of a table with an exported tower (``recframe predict``).

:func:`predict` embeds every row of ``--input`` with an exported tower, in batches, and writes Parquet with
two columns: the id column (same name, type and values as in the input) and ``embedding``
(list<float32>, the tower's output_dim values). The output is written to a temporary file
and renamed, so ``--output`` is either absent / old or complete.

The input is read by ``num_workers`` DataLoader workers (default: data_config.num_workers of
the export's pipeline.config; 0 = in the main process) in the order of one reader, so the
output rows are those of the input, in its order, whatever the number of workers; the tower
runs in the main process.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recframe.config import load_pipeline_config
from recframe.data import RecordBatchDataset, create_dataloader
from recframe.files import atomic_write, check_output_path
from recframe.serving.tower import load_tower

EMBEDDING_COLUMN = "embedding"


def embedding_array(embeddings: np.ndarray) -> pa.ListArray:
    """(N, D) float32 -> list<float32> Arrow array of N lists of D values."""
    n, d = embeddings.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(embeddings, np.float32).ravel()))


def predict(export_dir: str, input_path: str, output: str, id_column: str | None = None,
            batch_size: int = 4096, dataset_type: str | None = None, progress: bool = True,
            device: str | None = None, num_workers: int | None = None) -> int:
    """Write the embeddings of every row of ``input_path`` (the tower run on ``device``, default
    the CPU), in input order; returns the number of rows. ``num_workers`` processes read the
    input (default: data_config.num_workers of the export's pipeline.config)."""
    check_output_path(output, "--output")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    tower = load_tower(export_dir, device)
    if num_workers is None:
        config = load_pipeline_config(os.path.join(tower.path, tower.meta["pipeline_config"]))
        num_workers = int(config.data_config.num_workers)
    id_column = id_column or tower.id_column
    if dataset_type is None:
        dataset_type = "csv" if input_path.lower().endswith(".csv") else "parquet"
    columns = list(dict.fromkeys([id_column, *tower.input_columns]))
    dataset = RecordBatchDataset(input_path, columns=columns, parse_fn=None, batch_size=batch_size,
                                 dataset_type=dataset_type, shuffle=False, drop_remainder=False, keep_order=True)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    rows = 0

    def write(sink) -> None:
        nonlocal rows
        schema = pa.schema([(id_column, pa.int64()), (EMBEDDING_COLUMN, pa.list_(pa.float32()))])
        writer = None
        with tqdm(total=dataset.reader.num_rows, unit="rows", desc=f"{tower.side} embeddings",
                  disable=not progress or not sys.stderr.isatty(), file=sys.stderr) as bar:
            for chunk in create_dataloader(dataset, num_workers):
                table = chunk if isinstance(chunk, pa.Table) else pa.Table.from_batches([chunk])
                embeddings = tower.embed(table, source=input_path)
                out = pa.table({id_column: table.column(id_column), EMBEDDING_COLUMN: embedding_array(embeddings)})
                if writer is None:
                    writer = pq.ParquetWriter(sink, out.schema)
                writer.write_table(out)
                rows += table.num_rows
                bar.update(table.num_rows)
        # No rows: an empty file whose id column is int64.
        (writer or pq.ParquetWriter(sink, schema)).close()

    atomic_write(output, write)
    return rows
