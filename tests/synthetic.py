"""A small synthetic two-tower dataset and a pipeline config over it (for trainer / CLI tests).

Users belong to one of ``num_clusters`` clusters (``user_id % num_clusters``); items are split
into the same clusters (``item_id % num_clusters``). Every interaction of a user is an item of
the user's cluster, drawn with a per-cluster Zipf-like skew, so the target is a learnable
function of the user (its id, its ``segment`` feature and its history): a trained model ranks
the user's cluster first, and full-corpus HitRate@10 ends far above the random 10 / num_items.

Files written by :func:`write_dataset` (Parquet), in the MovieLens layout of recframe:

- ``train.parquet``: user_id, item_id, segment, age, hist_item_ids (earlier items, most
  recent last), category, price, label
- ``valid.parquet`` / ``test.parquet``: one row per user, same columns plus ``seen_items``
  (valid: the training items; test: the training items + the validation item)
- ``items.parquet``: item_id, category, price (the catalogue)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_USERS = 200
NUM_ITEMS = 200
NUM_CLUSTERS = 10
ROWS_PER_USER = 10  # training rows per user -> 2000 training rows
MAX_HISTORY = 20


def write_dataset(out_dir: str | os.PathLike, seed: int = 0, num_users: int = NUM_USERS,
                  num_items: int = NUM_ITEMS, rows_per_user: int = ROWS_PER_USER) -> dict[str, str]:
    """Write the synthetic tables into ``out_dir``; returns {"train", "valid", "test", "items"} paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = np.arange(num_items)
    cluster_items = [items[items % NUM_CLUSTERS == c] for c in range(NUM_CLUSTERS)]
    # Zipf-like popularity inside each cluster (a shuffled order per cluster).
    probs = []
    for c in range(NUM_CLUSTERS):
        w = 1.0 / np.arange(1, len(cluster_items[c]) + 1) ** 0.7
        probs.append(rng.permutation(w / w.sum()))
    prices = np.round(rng.uniform(1.0, 100.0, num_items), 2)

    def row(user, item, hist):
        return dict(user_id=int(user), item_id=int(item), segment=int(user % NUM_CLUSTERS),
                    age=int(18 + user % 50), hist_item_ids=[int(i) for i in hist[-MAX_HISTORY:]],
                    category=f"c{int(item % NUM_CLUSTERS)}", price=float(prices[item]), label=1)

    train, valid, test = [], [], []
    for user in range(num_users):
        c = user % NUM_CLUSTERS
        seq = rng.choice(cluster_items[c], size=rows_per_user + 2, p=probs[c])
        for t in range(rows_per_user):
            train.append(row(user, seq[t], seq[:t]))
        seen = sorted(set(int(i) for i in seq[:rows_per_user]))
        valid.append({**row(user, seq[rows_per_user], seq[:rows_per_user]), "seen_items": seen})
        seen_test = sorted(set(seen) | {int(seq[rows_per_user])})
        test.append({**row(user, seq[rows_per_user + 1], seq[:rows_per_user + 1]), "seen_items": seen_test})

    row_schema = pa.schema([
        ("user_id", pa.int64()), ("item_id", pa.int64()), ("segment", pa.int64()), ("age", pa.int64()),
        ("hist_item_ids", pa.list_(pa.int64())), ("category", pa.string()), ("price", pa.float64()),
        ("label", pa.int64()),
    ])
    eval_schema = row_schema.append(pa.field("seen_items", pa.list_(pa.int64())))
    paths = {name: str(out / f"{name}.parquet") for name in ("train", "valid", "test", "items")}
    pq.write_table(pa.Table.from_pylist(train, schema=row_schema), paths["train"])
    pq.write_table(pa.Table.from_pylist(valid, schema=eval_schema), paths["valid"])
    pq.write_table(pa.Table.from_pylist(test, schema=eval_schema), paths["test"])
    pq.write_table(pa.table({"item_id": pa.array(items, pa.int64()),
                             "category": pa.array([f"c{i % NUM_CLUSTERS}" for i in items]),
                             "price": pa.array(prices, pa.float64())}), paths["items"])
    return paths


def pipeline_config_text(paths: dict[str, str], model_dir: str | os.PathLike, *, num_epochs: int = 3,
                         batch_size: int = 100, lr: float = 0.01, seed: int = 7,
                         log_step_count_steps: int = 5, eval_every_n_steps: int = 0,
                         save_checkpoints_steps: int = 0, keep_checkpoint_max: int = 5,
                         num_workers: int = 0, extra_train: str = "", extra_eval: str = "",
                         dropout: float = 0.1, num_items: int = NUM_ITEMS, num_users: int = NUM_USERS) -> str:
    """A text-format PipelineConfig (DSSM, in-batch softmax) over :func:`write_dataset`'s files.

    The towers use dropout by default, so the torch RNG matters (resume must restore it).
    """
    return f"""
train_input_path: "{paths['train']}"
eval_input_path: "{paths['valid']}"
test_input_path: "{paths['test']}"
item_input_path: "{paths['items']}"
model_dir: "{model_dir}"

data_config {{
  batch_size: {batch_size}
  item_id_field: "item_id"
  num_workers: {num_workers}
  shuffle_buffer_size: 512
}}

train_config {{
  num_epochs: {num_epochs}
  sparse_optimizer {{ adam_optimizer {{ lr: {lr} }} }}
  dense_optimizer {{ adam_optimizer {{ lr: {lr} }} }}
  log_step_count_steps: {log_step_count_steps}
  save_checkpoints_steps: {save_checkpoints_steps}
  keep_checkpoint_max: {keep_checkpoint_max}
  seed: {seed}
  device: "cpu"
  {extra_train}
}}

eval_config {{
  top_k: [10, 50]
  exclude_items_field: "seen_items"
  best_metric: "hit_rate@10"
  eval_every_n_steps: {eval_every_n_steps}
  {extra_eval}
}}

feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: {num_users} embedding_dim: 16 }} }}
feature_configs {{ id_feature {{ feature_name: "segment" num_buckets: {NUM_CLUSTERS} embedding_dim: 8 }} }}
feature_configs {{ raw_feature {{ feature_name: "age" boundaries: [25, 35, 50] embedding_dim: 4 }} }}
feature_configs {{
  sequence_id_feature {{
    feature_name: "hist_item_ids"
    sequence_length: {MAX_HISTORY}
    num_buckets: {num_items}
    embedding_dim: 16
    embedding_name: "item_emb"
    pooling: MEAN
  }}
}}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: {num_items} embedding_dim: 16 embedding_name: "item_emb" }} }}
feature_configs {{ id_feature {{ feature_name: "category" hash_bucket_size: 32 embedding_dim: 8 }} }}
feature_configs {{ raw_feature {{ feature_name: "price" normalizer {{ min_max {{ min: 0 max: 100 }} }} }} }}

model_config {{
  feature_groups {{ group_name: "user" feature_names: ["user_id", "segment", "age", "hist_item_ids"] }}
  feature_groups {{ group_name: "item" feature_names: ["item_id", "category", "price"] }}
  dssm {{
    user_tower {{ input: "user" mlp {{ hidden_units: [32] dropout_ratio: {dropout} }} }}
    item_tower {{ input: "item" mlp {{ hidden_units: [32] dropout_ratio: {dropout} }} }}
    output_dim: 16
    similarity: COSINE
    temperature: 0.1
  }}
  losses {{ softmax_cross_entropy {{}} }}
  metrics {{ in_batch_recall_at_k {{ top_k: 5 }} }}
}}
"""


def write_config(tmp_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None, **options) -> tuple[str, dict[str, str]]:
    """Write the dataset under ``tmp_dir/data`` and a config ``tmp_dir/pipeline.config``.

    Returns (config path, data paths). ``options`` go to :func:`pipeline_config_text`.
    """
    tmp = Path(tmp_dir)
    paths = write_dataset(tmp / "data")
    config = tmp / "pipeline.config"
    config.write_text(pipeline_config_text(paths, model_dir or tmp / "model", **options))
    return str(config), paths
