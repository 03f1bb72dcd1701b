"""``python -m recframe.predict --export_dir D/item --input items.parquet --output emb.parquet``.

Embeds every row of ``--input`` with an exported tower, in batches, and writes Parquet with
two columns: the id column (same name, type and values as in the input) and ``embedding``
(list<float32>, the tower's output_dim values). The output is written to a temporary file
and renamed, so ``--output`` is either absent / old or complete.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recframe.data import DataError, RecordBatchDataset
from recframe.features import FeatureInputError
from recframe.files import atomic_write
from recframe.serving.tower import TowerLoadError, load_tower

EMBEDDING_COLUMN = "embedding"


def embedding_array(embeddings: np.ndarray) -> pa.ListArray:
    """(N, D) float32 -> list<float32> Arrow array of N lists of D values."""
    n, d = embeddings.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(embeddings, np.float32).ravel()))


def predict(export_dir: str, input_path: str, output: str, id_column: str | None = None,
            batch_size: int = 4096, dataset_type: str | None = None, progress: bool = True) -> int:
    """Write the embeddings of every row of ``input_path``; returns the number of rows."""
    tower = load_tower(export_dir)
    id_column = id_column or tower.id_column
    if dataset_type is None:
        dataset_type = "csv" if input_path.lower().endswith(".csv") else "parquet"
    columns = list(dict.fromkeys([id_column, *tower.input_columns]))
    dataset = RecordBatchDataset(input_path, columns=columns, parse_fn=None, batch_size=batch_size,
                                 dataset_type=dataset_type, shuffle=False, drop_remainder=False)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    rows = 0

    def write(sink) -> None:
        nonlocal rows
        schema = pa.schema([(id_column, pa.int64()), (EMBEDDING_COLUMN, pa.list_(pa.float32()))])
        writer = None
        with tqdm(total=dataset.reader.num_rows, unit="rows", desc=f"{tower.side} embeddings",
                  disable=not progress, file=sys.stderr) as bar:
            for chunk in dataset:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recframe.predict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed every row of a Parquet/CSV file with an exported tower (python -m recframe.export).\n"
                    "Writes Parquet: the id column as in the input, and 'embedding' (list<float32>).",
        epilog="examples:\n"
               "  python -m recframe.predict --export_dir out/export/item --input data/ml-100k/items.parquet \\\n"
               "      --output out/item_emb.parquet\n"
               "  python -m recframe.predict --export_dir out/export/user --input data/ml-100k/test.parquet \\\n"
               "      --output out/user_emb.parquet --id_column user_id\n"
               "exit status: 0 done, 2 error in the export, the input or its columns (one line on stderr)",
    )
    parser.add_argument("--export_dir", required=True, help="an exported tower: EXPORT_DIR/user or EXPORT_DIR/item")
    parser.add_argument("--input", required=True, help="input file(s): path, glob or comma-separated list")
    parser.add_argument("--output", required=True, help="output Parquet file")
    parser.add_argument("--id_column", default=None,
                        help="column copied to the output (default: the item id field for the item tower, "
                             "the first input column for the user tower)")
    parser.add_argument("--batch_size", type=int, default=4096, help="rows per batch (default 4096)")
    parser.add_argument("--input_format", choices=("parquet", "csv"), default=None,
                        help="default: csv for a .csv path, else parquet")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = predict(args.export_dir, args.input, args.output, args.id_column, args.batch_size,
                       args.input_format, progress=not args.no_progress)
    except (FileNotFoundError, TowerLoadError, FeatureInputError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {rows} embeddings to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
