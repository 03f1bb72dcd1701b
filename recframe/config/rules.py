"""Rules on data_config, train_config and eval_config (the samplers and data sources that
data_config names check their own messages)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from recframe.config.names import (COMPILE_MODES, DEVICES, FUSED_OPTIMIZERS, INDEX_TYPES, LISTWISE, POINTWISE,
                                   SHARDING_TYPES, eval_metric_names, is_valid_device,
                                   pointwise_metric_names, resolve_top_k)
from recframe.config.report import join_path, one_of, show, unknown_name
from recframe.protos import data_pb2, eval_pb2, train_pb2
from recframe.protoutil import oneof_message
from recframe.registry import DATA_SOURCES, SAMPLERS

MIXED_PRECISIONS = ("none", "bf16", "fp16")


def check_data(ctx: Any) -> None:
    """data_config rules (batch and buffer sizes are range-checked by the generic table)."""
    data: data_pb2.DataConfig = ctx.config.data_config
    sampler = oneof_message(data, "sampler")
    if sampler is not None:
        SAMPLERS.get(type(sampler).DESCRIPTOR.name).check_config(sampler, f"data_config.{data.WhichOneof('sampler')}",
                                                                 ctx)
    for field, value in data.ListFields():
        if field.message_type is not None and field.message_type.name in DATA_SOURCES:
            DATA_SOURCES.get(field.message_type.name).check_config(value, f"data_config.{field.name}", ctx)
    if data.HasField("prefetch_factor") and data.num_workers == 0:
        ctx.add("data_config.prefetch_factor", f"set to {data.prefetch_factor} with num_workers 0, expected "
                                               "num_workers > 0 (the main process reads one batch at a time)")
    if data.dataset_type == data_pb2.CsvDataset and len(data.csv_delimiter) != 1:
        ctx.add("data_config.csv_delimiter", f"got {show(data.csv_delimiter)}, expected a single character")
    elif data.dataset_type != data_pb2.CsvDataset and data.HasField("csv_delimiter"):
        dataset_type = data_pb2.DatasetType.Name(data.dataset_type)
        ctx.add("data_config.csv_delimiter", f"set to {show(data.csv_delimiter)} with dataset_type {dataset_type} "
                                             "(it would be ignored), expected dataset_type: CsvDataset (or no "
                                             "csv_delimiter)")
    if data.HasField("shuffle_buffer_size") and not data.shuffle:
        ctx.add("data_config.shuffle_buffer_size", f"set to {data.shuffle_buffer_size} with shuffle: false (it would "
                                                   "be ignored), expected shuffle: true (or no shuffle_buffer_size)")
    seen: set[str] = set()
    for i, label in enumerate(data.label_fields):
        if not label:
            ctx.add(f"data_config.label_fields[{i}]", "empty, expected a column name")
        elif label in seen:
            ctx.add(f"data_config.label_fields[{i}]", f"'{label}' is listed twice, expected unique columns")
        seen.add(label)
    if data.label_fields:
        _check_label_reader(ctx, sampler)
    if data.exclude_negatives_field:
        ctx.require_item_id("data_config.exclude_negatives_field to find its items among the candidates")
        if LISTWISE not in ctx.loss_kinds.values() and sampler is None:
            listwise = one_of(ctx.loss_names_of_kind(LISTWISE))
            ctx.add("data_config.exclude_negatives_field",
                    f"set, but no loss has negatives to exclude (no {listwise} and no data_config sampler), "
                    "expected a listwise loss or a negative sampler, or no field")


def _check_label_reader(ctx: Any, sampler: Message | None) -> None:
    """data_config.label_fields is read by a pointwise loss (and the binary metrics) only, and
    only without a sampler: with sampled negatives the positives and negatives are the labels."""
    losses = ctx.config.model_config.losses
    names = [loss.WhichOneof("loss") for loss in losses if loss.WhichOneof("loss")] or ["softmax_cross_entropy"]
    pointwise = [name for name in names if ctx.loss_kinds.get(name) == POINTWISE]
    if not ctx.loss_kinds:
        return  # no loss could be checked: reported elsewhere
    if not pointwise:
        expected = f"a {one_of(ctx.loss_names_of_kind(POINTWISE))} loss" + (" and no sampler" if sampler else "")
        ctx.add("data_config.label_fields",
                f"set, but no loss reads a label column ({one_of(names)} ranks each row's positive among its "
                f"candidates; it would be ignored), expected {expected} (or no label_fields)")
    elif sampler is not None:
        which = ctx.config.data_config.WhichOneof("sampler")
        ctx.add("data_config.label_fields",
                f"set, but {one_of(pointwise)} reads no label column with data_config.{which} (each row's positive "
                "is its 1 and the sampled negatives are its 0s; it would be ignored), expected no label_fields "
                "(or no sampler)")


def _check_optimizer(ctx: Any, optimizer: Message, path: str) -> None:
    """SGD nesterov needs momentum; sparse embedding gradients exclude AdamW, weight decay and
    momentum; a schedule's floor must not exceed the base learning rate."""
    sub, which = oneof_message(optimizer, "optimizer"), optimizer.WhichOneof("optimizer")
    if which == "sgd_optimizer" and sub.nesterov and not sub.momentum > 0:
        ctx.add(join_path(path, "sgd_optimizer.nesterov"), f"true with momentum {show(sub.momentum)}, expected momentum > 0")
    if sub is not None and "dense_gradients" in optimizer.DESCRIPTOR.fields_by_name and not optimizer.dense_gradients:
        needs_dense = "needs dense gradients, expected sparse_optimizer.dense_gradients: true"
        if which == "adamw_optimizer":
            ctx.add(join_path(path, which), f"AdamW {needs_dense} (or adam_optimizer, lazy Adam, with sparse ones)")
        for field in ("weight_decay", "momentum"):
            if field in sub.DESCRIPTOR.fields_by_name and getattr(sub, field) != 0 and which != "adamw_optimizer":
                ctx.add(join_path(path, f"{which}.{field}"), f"got {show(getattr(sub, field))}: {field} {needs_dense} "
                                                             f"(or {field} 0)")
    schedule = optimizer.WhichOneof("learning_rate")
    if schedule is None or sub is None:
        return
    floor = getattr(getattr(optimizer, schedule), "min_learning_rate", 0.0)
    if floor > sub.lr:
        ctx.add(join_path(path, f"{schedule}.min_learning_rate"),
                f"got {show(floor)}, above the base learning rate {show(sub.lr)}, expected <= {show(sub.lr)}")


def check_train(ctx: Any) -> None:
    """train_config rules (rates and sizes are range-checked by the generic table)."""
    train: train_pb2.TrainConfig = ctx.config.train_config
    if train.num_epochs == 0 and train.num_steps == 0:
        ctx.add("train_config", "num_epochs and num_steps are both 0, expected num_epochs >= 1 or num_steps > 0")
    if not is_valid_device(train.device):
        expected = "auto, cpu, cuda or cuda:N"
        if train.device.lower().startswith("gpu"):  # closer in spelling to "cpu" than to what is meant
            what = f"unknown device {show(train.device)} (did you mean 'cuda'?), expected {expected}"
        else:
            what = unknown_name("device", train.device, list(DEVICES), expected=expected)
        ctx.add("train_config.device", what)
    for name in ("sparse_optimizer", "dense_optimizer"):
        if train.HasField(name):
            _check_optimizer(ctx, getattr(train, name), f"train_config.{name}")
    if train.HasField("embedding_sharding"):
        _check_embedding_sharding(ctx, train)
    if train.compile_mode not in COMPILE_MODES:
        ctx.add("train_config.compile_mode", unknown_name("compile mode", train.compile_mode, list(COMPILE_MODES)))
    elif train.HasField("compile_mode") and not train.compile:
        ctx.add("train_config.compile_mode", f"set to '{train.compile_mode}' without compile: true, expected "
                                             "compile: true (or no compile_mode)")
    if train.compile and train.HasField("embedding_sharding"):
        ctx.add("train_config.compile", "true with train_config.embedding_sharding, expected one of them (the "
                                        "towers' TorchRec lookups are not compiled)")
    if train.mixed_precision not in MIXED_PRECISIONS:
        ctx.add("train_config.mixed_precision", unknown_name("mixed precision", train.mixed_precision,
                                                             list(MIXED_PRECISIONS), expected="none, bf16 or fp16"))
    elif train.mixed_precision == "fp16" and train.device.lower() == "cpu":
        ctx.add("train_config.mixed_precision", 'fp16 with device "cpu", expected bf16 or none on CPU (fp16 autocast '
                                                "and its gradient scaler need CUDA)")


def _check_sharding_types(ctx: Any, types: Any, path: str, device: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(types):
        if name not in SHARDING_TYPES:
            ctx.add(f"{path}[{i}]", unknown_name("sharding type", name, list(SHARDING_TYPES)))
        elif name in seen:
            ctx.add(f"{path}[{i}]", f"'{name}' is listed twice, expected unique values")
        elif name == "row_wise" and device.lower() == "cpu":
            ctx.add(f"{path}[{i}]", 'row_wise with device "cpu", expected table_wise, column_wise or data_parallel '
                                    "(TorchRec shards rows on CUDA only)")
        seen.add(name)


def _check_embedding_sharding(ctx: Any, train: train_pb2.TrainConfig) -> None:
    """TorchRec sharding: known sharding types and tables; the fused optimizer updates each table
    inside the backward pass, so nothing may stand between a backward and its update."""
    path = "train_config.embedding_sharding"
    sharding = train.embedding_sharding
    _check_sharding_types(ctx, sharding.sharding_types, f"{path}.sharding_types", train.device)
    tables = sorted({f.embedding.name for f in ctx.features.values() if f.embedding is not None})
    named: set[str] = set()
    for i, entry in enumerate(sharding.tables):
        where = f"{path}.tables[{i}]"
        if ctx.features and entry.table not in tables:
            ctx.add(f"{where}.table", unknown_name("embedding table", entry.table, tables,
                                                   expected="an embedding_name (or the name of a feature with its "
                                                            "own table)"))
        elif entry.table in named:
            ctx.add(f"{where}.table", f"'{entry.table}' is listed twice, expected one entry per table")
        named.add(entry.table)
        if not entry.sharding_types:
            ctx.add(f"{where}.sharding_types", "empty, expected at least one sharding type")
        _check_sharding_types(ctx, entry.sharding_types, f"{where}.sharding_types", train.device)
    fused = "the sharded tables are updated inside the backward pass (TorchRec's fused optimizer)"
    if train.gradient_clip_norm > 0:
        ctx.add("train_config.gradient_clip_norm", f"got {show(train.gradient_clip_norm)} with {path}: {fused}, "
                                                   "before any clipping, expected 0")
    if train.gradient_accumulation_steps > 1:
        ctx.add("train_config.gradient_accumulation_steps",
                f"got {train.gradient_accumulation_steps} with {path}: {fused}, at every micro-batch, expected 1")
    if train.mixed_precision == "fp16":
        ctx.add("train_config.mixed_precision", f'fp16 with {path}: {fused}, out of the gradient scaler\'s reach, '
                                                "expected bf16 or none")
    sparse = train.sparse_optimizer
    which = sparse.WhichOneof("optimizer")
    if sparse.dense_gradients:
        ctx.add("train_config.sparse_optimizer.dense_gradients", f"true with {path}, whose tables always take the "
                                                                 "fused sparse update, expected false")
    elif which not in (None, *FUSED_OPTIMIZERS):
        ctx.add(f"train_config.sparse_optimizer.{which}",
                f"not available with {path}, expected one of {', '.join(FUSED_OPTIMIZERS)}")
    sub = oneof_message(sparse, "optimizer")
    if sub is not None and getattr(sub, "initial_accumulator_value", 0.0) != 0:
        ctx.add(f"train_config.sparse_optimizer.{which}.initial_accumulator_value",
                f"got {show(sub.initial_accumulator_value)} with {path}: the fused kernels start every accumulator "
                "at 0, expected 0")


def check_eval(ctx: Any) -> None:
    """eval_config rules: unique cut-offs, metric names the evaluator reports, exclusion needs item ids."""
    evaluation: eval_pb2.EvalConfig = ctx.config.eval_config
    seen: set[int] = set()
    for i, k in enumerate(evaluation.top_k):
        if k in seen:
            ctx.add(f"eval_config.top_k[{i}]", f"{k} is listed twice, expected unique values")
        seen.add(k)
    names = eval_metric_names(evaluation)
    pointwise = pointwise_metric_names(evaluation)
    ks = ", ".join(str(k) for k in resolve_top_k(evaluation))
    expected = f"hit_rate@K, recall@K or ndcg@K with K in [{ks}] (eval_config.top_k), or mrr"
    if evaluation.report_raw and evaluation.exclude_items_field:
        expected += "; each also prefixed raw_"
    if pointwise:
        expected += f"; or {one_of(pointwise)} (eval_config.pointwise_metrics)"
    metric_fields = [("eval_config.best_metric", evaluation.best_metric)]
    if evaluation.HasField("early_stopping"):
        metric_fields.append(("eval_config.early_stopping.metric", evaluation.early_stopping.metric))
    members = [f.name for f in eval_pb2.PointwiseMetricConfig.DESCRIPTOR.oneofs_by_name["metric"].fields]
    for path, metric in metric_fields:
        if metric in names:
            continue
        if metric in members:  # a pointwise metric the evaluation was not asked for
            ctx.add(path, f"'{metric}' is a pointwise metric, reported only when eval_config.pointwise_metrics "
                          f"has {metric} {{}}, expected {expected} (or pointwise_metrics {{ {metric} {{}} }})")
        else:
            ctx.add(path, unknown_name("metric", metric, names, expected=expected))
    _check_pointwise_metrics(ctx, evaluation)
    if evaluation.HasField("approximate") and evaluation.approximate.index not in INDEX_TYPES:
        ctx.add("eval_config.approximate.index", unknown_name("index", evaluation.approximate.index, list(INDEX_TYPES)))
    if evaluation.exclude_items_field and not ctx.config.data_config.item_id_field:
        ctx.add("eval_config.exclude_items_field", "set without data_config.item_id_field, expected the item id "
                                                   "column in data_config.item_id_field (the excluded ids are its values)")


def _check_pointwise_metrics(ctx: Any, evaluation: eval_pb2.EvalConfig) -> None:
    """eval_config.pointwise_metrics: each metric once; a binary_cross_entropy model that reads a
    label column (data_config.label_fields, no sampler), which the evaluation rows must carry."""
    if not evaluation.pointwise_metrics:
        return
    first: dict[str, int] = {}
    for i, metric in enumerate(evaluation.pointwise_metrics):
        name = metric.WhichOneof("metric")
        if name is None:
            continue  # reported by the generic required-oneof rule
        if name in first:
            ctx.add(f"eval_config.pointwise_metrics[{i}]", f"second {name} (first at eval_config.pointwise_metrics"
                                                           f"[{first[name]}]), expected each metric once (both "
                                                           f"would be reported as '{name}')")
        first.setdefault(name, i)
    path, data = "eval_config.pointwise_metrics", ctx.config.data_config
    sampler = data.WhichOneof("sampler")
    pointwise_losses = one_of(ctx.loss_names_of_kind(POINTWISE))
    if not ctx.loss_kinds:
        return  # no loss could be checked: reported elsewhere
    if POINTWISE not in ctx.loss_kinds.values():
        ctx.add(path, f"set, but model_config.losses has no {pointwise_losses} loss ({one_of(ctx.loss_kinds)} does "
                      "not make sigmoid(similarity / temperature) a probability of the label), expected a "
                      f"{pointwise_losses} loss (or no pointwise_metrics)")
    elif sampler is not None:
        ctx.add(path, f"set with data_config.{sampler}: the {pointwise_losses} learns from sampled negatives, not "
                      "from a label column, and data_config.label_fields is refused with a sampler, so the "
                      "evaluation rows have no label to score, expected no pointwise_metrics (or label_fields and "
                      "no sampler)")
    elif not data.label_fields:
        ctx.add(path, f"set without data_config.label_fields, expected the label column that {pointwise_losses} "
                      "reads (and the evaluation rows carry) in data_config.label_fields")
