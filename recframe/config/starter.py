"""A starter DSSM config for a folder written by ``recframe prepare`` (``recframe init``).

:func:`starter_config` reads the prepared tables' schema and statistics and the manifest's
column roles, and writes a commented config that validates and trains as is:

- **ids** (the user and item columns): integer ids that fill their range (at most 4x as wide as
  they are many) are used as table rows (``num_buckets`` = largest + 1); other ids get a
  vocabulary file written beside the config (every id of the data, most frequent first; an
  unknown id maps to the out-of-vocabulary row); beyond :data:`MAX_VOCAB` distinct values, a
  hash table twice as large as the number of ids;
- the **history** names the item id's table (``embedding_name``: same rows and id mapping),
  mean-pooled; under ``dssm`` each tower trains its own copy of it (``dssm_v2`` would share it);
- **side columns** (from ``--users`` to the user tower, from ``--items`` or ``--item_features``
  to the item tower): strings and lists of strings with up to :data:`MAX_VOCAB_LIST` values
  become a ``vocab_list``, beyond that a hash table; numbers are bucketised at their deciles;
  other interaction columns (outcomes such as a rating, unknown when serving) are left out and
  named in a comment;
- **negatives**: in-batch plus items drawn uniformly from the catalogue, logQ-corrected, the
  row's history never its negative; full-corpus evaluation with the seen items excluded.
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.protobuf import text_format

from recframe.data.prepare import PrepareError, read_manifest
from recframe.protos import feature_pb2, model_pb2, pipeline_pb2

MAX_VOCAB = 1_000_000
MAX_VOCAB_LIST = 200


def _flat(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pc.list_flatten(column)
    return column


def _is_id(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


class _Writer:
    """Collects the features, their comments and the vocabulary files of one starter config."""

    def __init__(self, config_path: Path, tables: dict[str, pa.Table]) -> None:
        self.config_path = config_path
        self.tables = tables
        self.features: list[tuple[str, feature_pb2.FeatureConfig]] = []
        self.vocab_files: dict[Path, list[str]] = {}

    def values(self, column: str, sources: tuple[str, ...]) -> pa.ChunkedArray:
        chunks = [_flat(self.tables[s].column(column)) for s in sources if column in self.tables[s].column_names]
        return pa.chunked_array([c for chunk in chunks for c in chunk.chunks], type=chunks[0].type)

    def id_table(self, column: str, sources: tuple[str, ...], dim: int, message, embedding_name: str = "") -> str:
        """Size the table of an id column on ``message``; returns the comment saying how."""
        values = self.values(column, sources).drop_null()
        distinct = pc.unique(values)
        if pa.types.is_integer(values.type) and len(values):
            low, high = pc.min(values).as_py(), pc.max(values).as_py()
            if low >= 0 and high + 1 <= 4 * len(distinct):
                message.num_buckets = high + 1
                how = (f"{len(distinct):,} integer ids in 0..{high}: the id is the table row "
                       f"(a new id above {high} needs a larger num_buckets)")
                return self._finish(message, dim, embedding_name, how)
        if len(distinct) <= MAX_VOCAB:
            counts = pc.value_counts(values)
            order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")
            ids = [str(v) for v in counts.field("values").take(pa.array(order)).to_pylist()]
            path = self.config_path.with_name(f"{self.config_path.stem}.{embedding_name or column}.vocab")
            self.vocab_files[path] = ids
            message.vocab_file = path.name
            how = f"{len(distinct):,} distinct ids: a vocabulary ({path.name}, most frequent first; unknown -> row 0)"
        else:
            message.hash_bucket_size = 1 << math.ceil(math.log2(2 * len(distinct)))
            how = f"{len(distinct):,} distinct ids: hashed into {message.hash_bucket_size:,} rows"
        return self._finish(message, dim, embedding_name, how)

    @staticmethod
    def _finish(message, dim: int, embedding_name: str, how: str) -> str:
        message.embedding_dim = dim
        if embedding_name:
            message.embedding_name = embedding_name
        return how

    def add(self, comment: str, config: feature_pb2.FeatureConfig) -> None:
        self.features.append((comment, config))

    def side_feature(self, column: str, sources: tuple[str, ...]) -> str | None:
        """A feature of a side column (its name), or None when the column is not usable."""
        t = self.tables[sources[0]].column(column).type
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
        inner = t.value_type if is_list else t
        values = self.values(column, sources).drop_null()
        if not len(values):
            return None
        config = feature_pb2.FeatureConfig()
        if pa.types.is_string(inner) or pa.types.is_large_string(inner):
            feature = config.id_feature
            feature.feature_name = column
            distinct = pc.unique(values.cast(pa.string()))
            if len(distinct) <= MAX_VOCAB_LIST:
                feature.vocab_list.extend(sorted(str(v) for v in distinct.to_pylist()))
                how = f"{len(distinct)} distinct values: a vocabulary"
            else:
                feature.hash_bucket_size = 1 << math.ceil(math.log2(2 * len(distinct)))
                how = f"{len(distinct):,} distinct values: hashed into {feature.hash_bucket_size:,} rows"
            feature.embedding_dim = 16
            if is_list:
                feature.pooling = feature_pb2.MEAN
                how = "a list column, mean-pooled; " + how
        elif (pa.types.is_integer(inner) or pa.types.is_floating(inner)) and not is_list:
            feature = config.raw_feature
            feature.feature_name = column
            numbers = values.to_numpy(zero_copy_only=False).astype(np.float64)
            numbers = numbers[np.isfinite(numbers)]
            edges = np.unique(np.quantile(numbers, np.linspace(0.1, 0.9, 9))) if len(numbers) else np.array([])
            edges = [float(e) for e in edges if numbers.min() < e <= numbers.max()]
            if not edges:
                return None  # a constant column carries nothing
            feature.boundaries.extend(edges)
            feature.embedding_dim = 8
            how = f"numbers from {numbers.min():g} to {numbers.max():g}: {len(edges) + 1} buckets at the deciles"
        elif pa.types.is_integer(inner):  # a list of integers: ids
            feature = config.id_feature
            feature.feature_name = column
            feature.pooling = feature_pb2.MEAN
            how = "a list of integers, mean-pooled; " + self.id_table(column, sources, 16, feature)
        else:
            return None
        self.add(f"{column}: {how}", config)
        return column


def starter_config(data_dir: str, out: str, model_dir: str | None = None, epochs: int = 10) -> tuple[str, dict]:
    """The text of a starter config for the prepared folder ``data_dir`` (written to ``out`` by
    :func:`write_starter_config`) and {vocabulary file path: ids}."""
    manifest = read_manifest(data_dir)
    roles = manifest["columns"]
    paths = {name: os.path.join(data_dir, f"{name}.parquet") for name in ("train", "valid", "test", "items")}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise PrepareError(f"{data_dir}: no {name}.parquet (prepare it again)")
    tables = {name: pq.read_table(path) for name, path in paths.items()}
    user, item, history, seen = roles["user"], roles["item"], roles["history"], roles["seen"]
    writer = _Writer(Path(out), tables)
    rows = ("train", "valid", "test")

    config = feature_pb2.FeatureConfig()
    how = writer.id_table(user, rows, 32, config.id_feature)
    config.id_feature.feature_name = user
    writer.add(f"{user} (the user id): {how}", config)
    config = feature_pb2.FeatureConfig()
    item_how = writer.id_table(item, ("items", *rows), 64, config.id_feature, embedding_name="item_emb")
    config.id_feature.feature_name = item
    writer.add(f"{item} (the item id): {item_how}", config)
    item_mapping = config.id_feature
    config = feature_pb2.FeatureConfig()
    sequence = config.sequence_id_feature
    sequence.feature_name = history
    sequence.sequence_length = int(manifest["spec"]["max_history"])
    sequence.embedding_dim, sequence.embedding_name, sequence.pooling = 64, "item_emb", feature_pb2.MEAN
    for field in ("num_buckets", "vocab_file", "hash_bucket_size"):
        if item_mapping.HasField(field):
            setattr(sequence, field, getattr(item_mapping, field))
    writer.add(f"{history} (the user's last {sequence.sequence_length} items): the item id's embedding_name, rows "
               "and id mapping, mean-pooled (dssm trains a copy of the table per tower; dssm_v2 shares one)", config)
    user_features = [f for f in roles["user_features"] if writer.side_feature(f, rows)]
    item_features = [f for f in roles["item_features"] if writer.side_feature(f, ("items", *rows))]
    since_last = roles.get("since_last")  # absent from sets prepared before format 2
    roles_taken = {user, item, history, seen, roles["history_time"], roles["time"], since_last,
                   *roles["user_features"], *roles["item_features"]}
    history_side = [c for c in roles.get("history_item_features", {}).values() if c in tables["train"].column_names]
    unused = [c for c in tables["train"].column_names if c not in roles_taken and c not in history_side]

    catalogue = tables["items"].num_rows
    train_rows = tables["train"].num_rows
    batch = int(min(512, max(32, train_rows // 20)))
    samples = int(min(512, max(1, catalogue // 4)))
    top_k = [k for k in (10, 50, 100) if k <= catalogue] or [catalogue]
    best = f"hit_rate@{50 if 50 in top_k else top_k[0]}"
    steps = max(1, train_rows // batch)
    log_every = max(1, min(100, steps // 4))
    model_dir = model_dir or os.path.join("runs", Path(out).stem)

    def block(message) -> str:
        return _compact(text_format.MessageToString(message)).rstrip()

    pipeline = pipeline_pb2.PipelineConfig()
    data = pipeline.data_config
    data.batch_size, data.item_id_field = batch, item
    data.negative_sampler.input_path, data.negative_sampler.num_sample = paths["items"], samples
    data.negative_sampler.alpha = 0.0
    data.exclude_negatives_field = history
    train = pipeline.train_config
    train.num_epochs, train.log_step_count_steps, train.seed = epochs, log_every, 42
    train.sparse_optimizer.rowwise_adagrad_optimizer.lr = 0.05
    train.dense_optimizer.adam_optimizer.lr = 0.001
    evaluation = pipeline.eval_config
    evaluation.top_k.extend(top_k)
    evaluation.exclude_items_field, evaluation.best_metric = seen, best
    model = pipeline.model_config
    model.feature_groups.add(group_name="user", feature_names=[user, *user_features, history])
    model.feature_groups.add(group_name="item", feature_names=[item, *item_features])
    dssm = model.dssm
    dssm.user_tower.input.append("user")
    dssm.item_tower.input.append("item")
    dssm.user_tower.mlp.hidden_units.extend([256, 128])
    dssm.item_tower.mlp.hidden_units.extend([256, 128])
    dssm.output_dim, dssm.similarity, dssm.temperature = 64, model_pb2.COSINE, 0.1
    dssm.in_batch_negative, dssm.logq_correction = True, True
    model.losses.add().softmax_cross_entropy.SetInParent()
    model.metrics.add().in_batch_recall_at_k.top_k = 10

    info = manifest.get("info", {})
    lines = [
        f"# Starter config written by `recframe init --data_dir {data_dir}` on "
        f"{datetime.date.today().isoformat()}, from {data_dir}/_manifest.json:",
        f"# {info.get('num_users', '?'):,} users, {catalogue:,} items, {train_rows:,} training rows "
        f"({manifest['spec']['split']} split). It validates and trains as is:",
        f"#   recframe train --pipeline_config {out}",
        "# then tune it (docs/your_data.md; every field: docs/config.md).",
        f'train_input_path: "{paths["train"]}"',
        f'eval_input_path: "{paths["valid"]}"',
        f'test_input_path: "{paths["test"]}"',
        f'item_input_path: "{paths["items"]}"',
        f'model_dir: "{model_dir}"',
        "",
        f"# Data: batches of {batch} rows. Each row's positive is contrasted with the other rows' items",
        f"# (in-batch negatives) and {samples} items drawn uniformly from the catalogue per batch, with the",
        "# logQ correction (model_config); items in the row's history are never its negatives.",
        f"data_config {{\n{_indent(block(data))}\n}}",
        "",
        "# Training: row-wise Adagrad on the embedding tables (only the rows a batch looks up move),",
        f"# Adam on the rest; {epochs} epochs, evaluated after each, the best checkpoint kept.",
        f"train_config {{\n{_indent(block(train))}\n}}",
        "",
        "# Evaluation: every catalogue item ranked for every validation user (full corpus), the items",
        f"# the user has seen ({seen}) left out; the best checkpoint by {best}, then scored on test.",
        f"eval_config {{\n{_indent(block(evaluation))}\n}}",
        "",
        "# Features: how each column was read from the data.",
    ]
    for comment, feature in writer.features:
        lines.append(f"# {comment}")
        one_line = " ".join(line.strip() for line in _compact(text_format.MessageToString(feature)).splitlines())
        lines.append(f"feature_configs {{ {one_line} }}")
    if history_side:
        lines.append(f"# Not used: {', '.join(history_side)} (each {history} item's side columns, position by "
                     "position; a SEQUENCE group with a sequence encoder can read them beside the item ids, "
                     "docs/models.md).")
    if since_last and since_last in tables["train"].column_names:
        lines.append(f"# Not used: {since_last} (seconds from the user's previous interaction to the row, -1 "
                     "without one: known when serving as the request time minus the last history time; a "
                     "raw_feature with boundaries can read it, examples/dssm_movielens_best.config).")
    if unused:
        lines.append(f"# Not used: {', '.join(unused)} (interaction columns: outcomes of the row, not known when "
                     "serving; add a feature_configs entry to use one).")
    lines += [
        "",
        "# Model: a two-tower DSSM; the user tower reads the user's features and history, the item tower",
        "# the item's; cosine similarity / temperature, softmax over the candidates.",
        f"model_config {{\n{_indent(block(model))}\n}}",
        "",
    ]
    return "\n".join(lines), writer.vocab_files


def _compact(text: str) -> str:
    """text_format's lines with the consecutive values of a repeated scalar field joined into
    ``name: [a, b, c]``, as one writes them by hand."""
    out: list[str] = []
    previous_key, values = None, []

    def flush() -> None:
        if previous_key is not None:
            out.append(f"{previous_key}: [{', '.join(values)}]" if len(values) > 1 else f"{previous_key}: {values[0]}")

    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not value.endswith("{"):
            if key == previous_key:
                values.append(value)
                continue
            flush()
            previous_key, values = key, [value]
            continue
        flush()
        previous_key, values = None, []
        out.append(line)
    flush()
    return "\n".join(out)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())


def write_starter_config(data_dir: str, out: str, model_dir: str | None = None, epochs: int = 10,
                         overwrite: bool = False) -> list[str]:
    """Write the starter config (and its vocabulary files) after checking that it validates;
    returns the files written."""
    from recframe.config.loader import parse_pipeline_config
    from recframe.config.validator import check_paths_for, validate_pipeline_config
    from recframe.files import atomic_write_text

    if os.path.exists(out) and not overwrite:
        raise PrepareError(f"--out {out!r} exists: pass --overwrite to replace it")
    text, vocab_files = starter_config(data_dir, out, model_dir, epochs)
    for path, ids in vocab_files.items():
        atomic_write_text(path, "\n".join(ids) + "\n")
    parsed = parse_pipeline_config(text, out)
    problems = validate_pipeline_config(parsed, out) + check_paths_for(parsed, out, ("train", "eval", "item"))
    if problems:  # a bug here, not the user's: say so with the problems
        raise RuntimeError("the starter config does not validate:\n" + "\n".join(problems))
    atomic_write_text(out, text)
    return [out, *map(str, vocab_files)]


__all__ = ["MAX_VOCAB", "MAX_VOCAB_LIST", "starter_config", "write_starter_config"]
