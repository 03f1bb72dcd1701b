"""Rules on data_config, train_config and eval_config."""

from __future__ import annotations

from google.protobuf.message import Message

from recframe.config.names import (
    DEVICES,
    MOVIELENS_VARIANTS,
    eval_metric_names,
    is_valid_device,
    resolve_top_k,
)
from recframe.config.report import Report, join_path, show, unknown_name
from recframe.protos import data_pb2, eval_pb2, pipeline_pb2, train_pb2

MIXED_PRECISIONS = ("none", "bf16", "fp16")
SAMPLERS = ("negative_sampler", "negative_sampler_v2", "hard_negative_sampler")


def check_data(report: Report, data: data_pb2.DataConfig) -> None:
    """data_config rules (batch and buffer sizes are range-checked by the generic table)."""
    from recframe.negatives.samplers import BaseSampler  # transitional: the validator walks the registries

    which = data.WhichOneof("sampler")
    if which is not None:
        for path, problem in BaseSampler.config_problems(getattr(data, which), f"data_config.{which}",
                                                         data.item_id_field):
            report.add(path, problem)
    if data.HasField("movielens") and data.movielens.variant not in MOVIELENS_VARIANTS:
        report.add("data_config.movielens.variant",
                   unknown_name("MovieLens variant", data.movielens.variant, list(MOVIELENS_VARIANTS)))
    if data.dataset_type == data_pb2.CsvDataset and len(data.csv_delimiter) != 1:
        report.add("data_config.csv_delimiter", f"got {show(data.csv_delimiter)}, expected a single character")
    seen: set[str] = set()
    for i, label in enumerate(data.label_fields):
        if not label:
            report.add(f"data_config.label_fields[{i}]", "empty, expected a column name")
        elif label in seen:
            report.add(f"data_config.label_fields[{i}]", f"'{label}' is listed twice, expected unique columns")
        seen.add(label)


def _base_lr(optimizer: Message) -> float | None:
    which = optimizer.WhichOneof("optimizer")
    return getattr(optimizer, which).lr if which else None


def _check_optimizer(report: Report, optimizer: Message, path: str) -> None:
    """SGD nesterov needs momentum; a schedule's floor must not exceed the base learning rate."""
    if optimizer.WhichOneof("optimizer") == "sgd_optimizer":
        sgd = optimizer.sgd_optimizer
        if sgd.nesterov and not sgd.momentum > 0:
            report.add(join_path(path, "sgd_optimizer.nesterov"),
                       f"true with momentum {show(sgd.momentum)}, expected momentum > 0")
    schedule = optimizer.WhichOneof("learning_rate")
    lr = _base_lr(optimizer)
    if schedule is None or lr is None:
        return
    floor = getattr(getattr(optimizer, schedule), "min_learning_rate", 0.0)
    if floor > lr:
        report.add(join_path(path, f"{schedule}.min_learning_rate"),
                   f"got {show(floor)}, above the base learning rate {show(lr)}, expected <= {show(lr)}")


def check_train(report: Report, train: train_pb2.TrainConfig) -> None:
    """train_config rules (rates and sizes are range-checked by the generic table)."""
    if train.num_epochs == 0 and train.num_steps == 0:
        report.add("train_config", "num_epochs and num_steps are both 0, expected num_epochs >= 1 or num_steps > 0")
    if not is_valid_device(train.device):
        expected = "auto, cpu, cuda or cuda:N"
        if train.device.lower().startswith("gpu"):  # closer in spelling to "cpu" than to what is meant
            what = f"unknown device {show(train.device)} (did you mean 'cuda'?), expected {expected}"
        else:
            what = unknown_name("device", train.device, list(DEVICES), expected=expected)
        report.add("train_config.device", what)
    for name in ("sparse_optimizer", "dense_optimizer"):
        if train.HasField(name):
            _check_optimizer(report, getattr(train, name), f"train_config.{name}")
    if train.mixed_precision not in MIXED_PRECISIONS:
        report.add("train_config.mixed_precision",
                   unknown_name("mixed precision", train.mixed_precision, list(MIXED_PRECISIONS),
                                expected="none, bf16 or fp16"))
    elif train.mixed_precision == "fp16" and train.device.lower() == "cpu":
        report.add("train_config.mixed_precision",
                   'fp16 with device "cpu", expected bf16 or none on CPU (fp16 autocast and its '
                   "gradient scaler need CUDA)")


def check_distributed(report: Report, config: pipeline_pb2.PipelineConfig) -> None:
    """global_in_batch_negative needs the model's in-batch negatives."""
    if not config.train_config.global_in_batch_negative or not config.model_config.WhichOneof("model"):
        return
    which = config.model_config.WhichOneof("model")
    model = getattr(config.model_config, which)
    if hasattr(model, "in_batch_negative") and not model.in_batch_negative:
        report.add("train_config.global_in_batch_negative",
                   f"true with model_config.{which}.in_batch_negative false, expected "
                   "in_batch_negative: true (the global batch's positives are the in-batch negatives)")


def check_eval(report: Report, config: pipeline_pb2.PipelineConfig) -> None:
    """eval_config rules: unique cut-offs, metric names the evaluator reports, exclusion needs item ids."""
    evaluation: eval_pb2.EvalConfig = config.eval_config
    seen: set[int] = set()
    for i, k in enumerate(evaluation.top_k):
        if k in seen:
            report.add(f"eval_config.top_k[{i}]", f"{k} is listed twice, expected unique values")
        seen.add(k)
    names = eval_metric_names(evaluation)
    ks = ", ".join(str(k) for k in resolve_top_k(evaluation))
    expected = f"hit_rate@K, recall@K or ndcg@K with K in [{ks}] (eval_config.top_k), or mrr"
    if evaluation.report_raw and evaluation.exclude_items_field:
        expected += "; each also prefixed raw_"
    metric_fields = [("eval_config.best_metric", evaluation.best_metric)]
    if evaluation.HasField("early_stopping"):
        metric_fields.append(("eval_config.early_stopping.metric", evaluation.early_stopping.metric))
    for path, metric in metric_fields:
        if metric not in names:
            report.add(path, unknown_name("metric", metric, names, expected=expected))
    if evaluation.exclude_items_field and not config.data_config.item_id_field:
        report.add("eval_config.exclude_items_field",
                   "set without data_config.item_id_field, expected the item id column in "
                   "data_config.item_id_field (the excluded ids are its values)")
