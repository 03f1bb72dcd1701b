"""Semantic validation of a whole pipeline config: every problem at once."""

from __future__ import annotations

from collections.abc import Iterable

from recframe.config.errors import ConfigError
from recframe.config.generic import check_generic
from recframe.config.report import Report
from recframe.config.rules_features import check_features
from recframe.config.rules_model import check_model
from recframe.config.rules_runtime import check_data, check_distributed, check_eval, check_train
from recframe.protos import pipeline_pb2

#: What check_paths_for can require: need -> (field, what it is for).
PATH_NEEDS: dict[str, tuple[str, str]] = {
    "train": ("train_input_path", "the training data (files, directories or glob patterns, comma separated)"),
    "eval": ("eval_input_path", "the evaluation data (one row per user query with its target item)"),
    "item": ("item_input_path", "the item table (every candidate of full-corpus evaluation)"),
    "test": ("test_input_path", "the held-out test data (same layout as eval_input_path)"),
    "model_dir": ("model_dir", "the directory of checkpoints, logs and exports"),
}


def validate_pipeline_config(config: pipeline_pb2.PipelineConfig, source: str) -> list[str]:
    """Return every problem of ``config`` (empty list = valid), schema and semantics alone.

    Each problem reads ``"{source}: {field path}: {what is wrong}, expected {what}"``.
    ``source`` is the config file path: it names the file in messages and relative
    ``vocab_file`` paths are resolved against its directory. Input paths are not required
    here; see :func:`check_paths_for`.
    """
    report = Report(source)
    for path in config.FindInitializationErrors():
        report.add(path, "required field not set")
    check_generic(report, config)
    check_features(report, config)
    if config.HasField("model_config"):
        check_model(report, config)
    else:
        report.add("model_config", "not set, expected feature groups and a model (dssm or dssm_v2)")
    check_data(report, config.data_config)
    check_train(report, config.train_config)
    check_eval(report, config)
    check_distributed(report, config)
    return report.problems


def check_paths_for(config: pipeline_pb2.PipelineConfig, source: str,
                    need: Iterable[str] = ("train", "eval", "item")) -> list[str]:
    """Return the problems of the input/output paths a run needs (empty list = all set).

    ``need`` names what the run does: "train" (train_input_path), "eval" (eval_input_path),
    "item" (item_input_path), "test" (test_input_path), "model_dir". Evaluation ("eval",
    "item", "test") also needs
    data_config.item_id_field, the target of full-corpus retrieval. Only presence is
    checked; the data readers report missing files.
    """
    report = Report(source)
    need = list(need)
    for what in need:
        if what not in PATH_NEEDS:
            raise ValueError(f"unknown need {what!r}, expected some of {', '.join(PATH_NEEDS)}")
        field, purpose = PATH_NEEDS[what]
        if not getattr(config, field).strip():
            report.add(field, f"not set, expected {purpose}")
    if {"eval", "item", "test"}.intersection(need) and not config.data_config.item_id_field:
        report.add("data_config.item_id_field", "not set, expected the item id column (full-corpus evaluation "
                                                "matches each row's target item against the item table by it)")
    return report.problems


def _raise_if_any(problems: list[str], source: str) -> None:
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{source}: invalid pipeline config ({count}):\n  " + "\n  ".join(problems), problems)


def check_pipeline_config(config: pipeline_pb2.PipelineConfig, source: str,
                          need: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``; return None if valid.

    ``need`` adds the path checks of :func:`check_paths_for` (e.g. ``("train", "eval", "item")``).
    """
    problems = validate_pipeline_config(config, source)
    need = tuple(need)
    if need:
        problems += [p for p in check_paths_for(config, source, need) if p not in problems]
    _raise_if_any(problems, source)
