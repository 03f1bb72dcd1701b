"""Table-driven checks applied to every message of a config tree.

One table per kind of rule, keyed by the proto message name, so a rule that holds for a
message type holds wherever that message appears (both optimizers, both models, ...).
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from recframe.config.report import (AT_LEAST_ONE, NON_NEGATIVE, OPEN_UNIT, POSITIVE, UNIT_LEFT_OPEN, UNIT_RIGHT_OPEN,
                                    Bound, Report, join_path, one_of, show)
from recframe.registry import plugin_for_message


_ADAM_LIKE = {"lr": POSITIVE, "beta1": UNIT_RIGHT_OPEN, "beta2": UNIT_RIGHT_OPEN,
              "weight_decay": NON_NEGATIVE, "eps": POSITIVE}

#: message name -> {field name -> allowed interval} of the messages that are not plugins
#: (a plugin class declares its own ``config_ranges``); checked on every element of repeated
#: fields, wherever the message appears.
RANGES: dict[str, dict[str, Bound]] = {
    "NormalInitializer": {"std": POSITIVE},
    "XavierUniformInitializer": {"gain": POSITIVE},
    "ZScoreNormalizer": {"std": POSITIVE},
    "DenseProjection": {"output_dim": AT_LEAST_ONE},
    "MLP": {"hidden_units": AT_LEAST_ONE, "dropout_ratio": UNIT_RIGHT_OPEN},
    "LossConfig": {"weight": POSITIVE},
    "VariationalDropout": {"regularization_lambda": NON_NEGATIVE, "temperature": POSITIVE,
                           "initial_drop_probability": OPEN_UNIT},
    "DataConfig": {"batch_size": POSITIVE, "shuffle_buffer_size": POSITIVE, "prefetch_factor": POSITIVE},
    "AdamOptimizer": _ADAM_LIKE,
    "AdamWOptimizer": _ADAM_LIKE,
    "AdagradOptimizer": {"lr": POSITIVE, "initial_accumulator_value": NON_NEGATIVE,
                         "weight_decay": NON_NEGATIVE, "eps": POSITIVE},
    "SGDOptimizer": {"lr": POSITIVE, "momentum": NON_NEGATIVE, "weight_decay": NON_NEGATIVE},
    "RowWiseAdagradOptimizer": {"lr": POSITIVE, "initial_accumulator_value": NON_NEGATIVE, "eps": POSITIVE},
    "ExponentialDecayLearningRate": {"decay_steps": POSITIVE, "decay_rate": UNIT_LEFT_OPEN,
                                     "min_learning_rate": NON_NEGATIVE},
    "CosineLearningRate": {"min_learning_rate": NON_NEGATIVE},
    "TrainConfig": {"gradient_clip_norm": NON_NEGATIVE, "log_step_count_steps": POSITIVE,
                    "process_group_timeout_seconds": AT_LEAST_ONE, "gradient_accumulation_steps": AT_LEAST_ONE},
    "EvalConfig": {"top_k": AT_LEAST_ONE, "user_chunk_size": POSITIVE},
    "EarlyStopping": {"min_delta": NON_NEGATIVE},
    "ApproximateSearch": {"hnsw_m": Bound(2), "ef_construction": AT_LEAST_ONE, "ef_search": AT_LEAST_ONE,
                          "nprobe": AT_LEAST_ONE},
}


def ranges_of(message_name: str) -> dict[str, Bound]:
    """The allowed intervals of a message's fields: RANGES, else its plugin class's."""
    if message_name in RANGES:
        return RANGES[message_name]
    return dict(getattr(plugin_for_message(message_name), "config_ranges", None) or {})


#: message name -> (lower field, upper field): upper must be > lower.
ORDERED_PAIRS: dict[str, tuple[str, str]] = {
    "MinMaxNormalizer": ("min", "max"),
    "UniformInitializer": ("a", "b"),
}

#: message name -> oneof that must be set (the message means nothing without it).
REQUIRED_ONEOFS: dict[str, str] = {
    "FeatureConfig": "feature",
    "ModelConfig": "model",
    "Initializer": "initializer",
    "Normalizer": "normalizer",
    "SequenceEncoder": "encoder",
    "LossConfig": "loss",
    "MetricConfig": "metric",
    "PointwiseMetricConfig": "metric",
}


def walk(message: Message, path: str = "") -> Iterator[tuple[Message, str]]:
    """Yield ``(message, path)`` for ``message`` and every sub-message that is set, depth first."""
    yield message, path
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            for i, item in enumerate(value):
                yield from walk(item, f"{join_path(path, field.name)}[{i}]")
        else:
            yield from walk(value, join_path(path, field.name))


def _check_ranges(report: Report, message: Message, path: str) -> None:
    for name, bound in ranges_of(message.DESCRIPTOR.name).items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            values = [(f"{join_path(path, name)}[{i}]", v) for i, v in enumerate(getattr(message, name))]
        else:
            values = [(join_path(path, name), getattr(message, name))]
        for where, value in values:
            if not bound.contains(value):
                report.add(where, f"got {show(value)}, expected {bound.describe()}")


def _check_ordered(report: Report, message: Message, path: str) -> None:
    pair = ORDERED_PAIRS.get(message.DESCRIPTOR.name)
    if pair is None:
        return
    low, high = (getattr(message, name) for name in pair)
    if not high > low:
        report.add(join_path(path, pair[1]),
                   f"got {show(high)} with {pair[0]} {show(low)}, expected {pair[1]} > {pair[0]}")


def _check_oneof(report: Report, message: Message, path: str) -> None:
    oneof = REQUIRED_ONEOFS.get(message.DESCRIPTOR.name)
    if oneof is None or message.WhichOneof(oneof) is not None:
        return
    members = [f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields]
    report.add(path or message.DESCRIPTOR.name, f"no {oneof} set, expected exactly one of {one_of(members)}")


def check_generic(report: Report, root: Message) -> None:
    """Apply the ranges (:func:`ranges_of`), ORDERED_PAIRS and REQUIRED_ONEOFS to every
    message under ``root``."""
    for message, path in walk(root):
        _check_ranges(report, message, path)
        _check_ordered(report, message, path)
        _check_oneof(report, message, path)
