"""Synthetic interaction logs at any scale, written to Parquet in row groups (for the scale benchmark).

Users have power-law activity (a few users have many rows) and items Zipf popularity; each row
carries user side features (segment, age), item side features (category, price) and the user's
history (a list of earlier-looking items, most recent last, Zipf-distributed, 0 to
``max_history`` long). Rows are generated and written ``row_group_rows`` at a time, so memory
stays flat whatever ``num_rows`` is.

    python benchmarks/synthetic_logs.py --out /tmp/logs --num_rows 10000000 --num_items 1000000

writes ``train.parquet`` (num_rows rows), ``items.parquet`` (the catalogue) and
``valid.parquet`` (one row per user of a sample, with ``seen_items``), in the layout of
recframe's MovieLens tables (user_id, item_id, segment, age, hist_item_ids, category, price).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_SEGMENTS = 100
NUM_CATEGORIES = 1000


def zipf_ids(rng: np.random.Generator, n: int, num_ids: int, exponent: float) -> np.ndarray:
    """(n,) ids in [0, num_ids) with P(rank r) ~ 1 / (r + 1) ** exponent (inverse CDF of the
    continuous approximation: no table of num_ids probabilities is built)."""
    u = rng.random(n)
    if exponent == 1.0:
        ranks = np.exp(u * np.log(num_ids + 1.0)) - 1.0
    else:
        a = 1.0 - exponent
        ranks = (u * ((num_ids + 1.0) ** a - 1.0) + 1.0) ** (1.0 / a) - 1.0
    return np.minimum(ranks.astype(np.int64), num_ids - 1)


def _list_column(rng: np.random.Generator, n: int, num_items: int, max_history: int) -> pa.Array:
    lengths = np.minimum(rng.geometric(1.0 / (max_history / 2 + 1), size=n) - 1, max_history)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = zipf_ids(rng, int(offsets[-1]), num_items, 1.05)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def rows_table(rng: np.random.Generator, n: int, num_users: int, num_items: int, max_history: int) -> pa.Table:
    users = zipf_ids(rng, n, num_users, 0.8)  # power-law activity
    items = zipf_ids(rng, n, num_items, 1.05)
    return pa.table({
        "user_id": users,
        "item_id": items,
        "segment": users % NUM_SEGMENTS,
        "age": 18 + users % 60,
        "hist_item_ids": _list_column(rng, n, num_items, max_history),
        "category": (items % NUM_CATEGORIES).astype(np.int64),
        "price": np.round(1.0 + (items * 2654435761 % 10007) / 100.0, 2),
    })


def write_logs(out_dir: str, num_rows: int, num_users: int, num_items: int, *, max_history: int = 20,
               row_group_rows: int = 1 << 18, num_eval_users: int = 10000, seed: int = 0) -> dict[str, str]:
    """Write train / items / valid Parquet files; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {name: os.path.join(out_dir, f"{name}.parquet") for name in ("train", "items", "valid")}
    writer = None
    for start in range(0, num_rows, row_group_rows):
        table = rows_table(rng, min(row_group_rows, num_rows - start), num_users, num_items, max_history)
        writer = writer or pq.ParquetWriter(paths["train"], table.schema)
        writer.write_table(table, row_group_size=row_group_rows)
    writer.close()
    item_writer = None
    for start in range(0, num_items, row_group_rows):
        ids = np.arange(start, min(start + row_group_rows, num_items), dtype=np.int64)
        table = pa.table({"item_id": ids, "category": ids % NUM_CATEGORIES,
                          "price": np.round(1.0 + (ids * 2654435761 % 10007) / 100.0, 2)})
        item_writer = item_writer or pq.ParquetWriter(paths["items"], table.schema)
        item_writer.write_table(table)
    item_writer.close()
    valid = rows_table(rng, num_eval_users, num_users, num_items, max_history)
    valid = valid.set_column(0, "user_id", pa.array(np.arange(num_eval_users, dtype=np.int64) % num_users))
    valid = valid.append_column("seen_items", valid.column("hist_item_ids"))
    pq.write_table(valid, paths["valid"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--num_rows", type=int, default=1_000_000)
    parser.add_argument("--num_users", type=int, default=1_000_000)
    parser.add_argument("--num_items", type=int, default=1_000_000)
    parser.add_argument("--max_history", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    paths = write_logs(args.out, args.num_rows, args.num_users, args.num_items, max_history=args.max_history,
                       seed=args.seed)
    print(f"wrote {paths} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
