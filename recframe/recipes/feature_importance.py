"""Feature importance from variational dropout (``recframe feature-importance``).

A model trained with ``model_config.variational_dropout`` has learned a drop probability
for every feature of each DEEP group with two or more features (or for every embedding
dimension, ``embedding_wise``). A feature's importance is its keep probability 1 - p_drop
(embedding-wise: the mean over its dimensions): a feature the loss does not need is pushed
towards being dropped by the penalty. :func:`feature_importance` reads them from a
checkpoint and writes, into an output directory (each file atomically):

- ``feature_importance.csv``: ``group, feature, keep_probability, rank``; the groups in tower
  order (user first), each group's features by rank (1 = the highest keep probability; ties
  keep the config's order). Keep probabilities of different groups are not comparable (each
  group's mask feeds its own tower), so the rank is within the group;
- ``feature_importance.png``: one horizontal bar chart per group;
- with ``top_k``, ``pipeline_pruned.config``: the config with only the top-K features of each
  such group (the other groups untouched), the feature_configs no group uses any more
  removed, model_dir ``<model_dir>_top<K>``, relative vocab_file paths made absolute, and,
  with ``clear_variational_dropout``, without variational_dropout (TorchEasyRec's
  ``--clear_variational_dropout``). It is validated before it is written.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

from recframe.config import ConfigError, resolve_config_path, save_pipeline_config, validate_pipeline_config
from recframe.files import atomic_write_text, check_output_path
from recframe.pipeline import Pipeline
from recframe.protos import model_pb2, pipeline_pb2
from recframe.protoutil import oneof_message
from recframe.training.checkpoint import load_checkpoint, load_model_state
from recframe.training.plots import write_feature_importance_plot

CSV_NAME = "feature_importance.csv"
PNG_NAME = "feature_importance.png"
PRUNED_NAME = "pipeline_pruned.config"
CSV_COLUMNS = ("group", "feature", "keep_probability", "rank")


@dataclass(frozen=True)
class FeatureImportance:
    """One row of ``feature_importance.csv``."""

    group: str
    feature: str
    keep_probability: float
    rank: int  # 1 = the most important feature of its group


def require_variational_dropout(config: pipeline_pb2.PipelineConfig, source: str) -> None:
    """Raise ConfigError naming ``source`` when the config trains no variational dropout."""
    if not config.model_config.HasField("variational_dropout"):
        raise ConfigError(
            f"{source}: model_config.variational_dropout: not set, expected a variational_dropout message: feature "
            "importance is the keep probability each feature learns under variational dropout. Add e.g. "
            "'variational_dropout { regularization_lambda: 0.01 }' to model_config (it weighs every DEEP group with "
            "two or more features) and train the model with it (examples/dssm_v2_variational_dropout_movielens.config)")


def importance_table(ranking: dict[str, list[tuple[str, float]]]) -> list[FeatureImportance]:
    """The rows of ``feature_importance.csv`` from a model's ``feature_ranking()``."""
    return [FeatureImportance(group, feature, float(keep), rank)
            for group, features in ranking.items()
            for rank, (feature, keep) in enumerate(features, start=1)]


def format_csv(rows: list[FeatureImportance]) -> str:
    """The CSV text (keep probabilities written exactly: Python's shortest round-trip form)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row.group, row.feature, repr(row.keep_probability), row.rank])
    return out.getvalue()


def pruned_config(config: pipeline_pb2.PipelineConfig, source: str, ranking: dict[str, list[tuple[str, float]]],
                  top_k: int, clear_variational_dropout: bool = False) -> pipeline_pb2.PipelineConfig:
    """A copy of ``config`` keeping the ``top_k`` best features of each group of ``ranking``
    (the groups with variational dropout); see the module docstring. Raises ConfigError when
    ``top_k`` is below 1, or when the result would not validate (naming each problem)."""
    if top_k < 1:
        raise ConfigError(f"--top_k: got {top_k}, expected at least 1 feature per group")
    pruned = pipeline_pb2.PipelineConfig()
    pruned.CopyFrom(config)
    keep = {group: {name for name, _ in features[:top_k]} for group, features in ranking.items()}
    for group in pruned.model_config.feature_groups:
        if group.group_name in keep:
            names = [name for name in group.feature_names if name in keep[group.group_name]]
            del group.feature_names[:]
            group.feature_names.extend(names)
    used = {name for group in pruned.model_config.feature_groups for name in group.feature_names}
    features = [fc for fc in pruned.feature_configs if oneof_message(fc, "feature").feature_name in used]
    del pruned.feature_configs[:]
    pruned.feature_configs.extend(features)
    for fc in pruned.feature_configs:  # the pruned config lives elsewhere: vocab files by absolute path
        message = oneof_message(fc, "feature")
        if "vocab_file" in message.DESCRIPTOR.fields_by_name and message.HasField("vocab_file"):
            message.vocab_file = os.path.abspath(resolve_config_path(message.vocab_file, source))
    if pruned.model_dir:
        pruned.model_dir = f"{pruned.model_dir.rstrip('/')}_top{top_k}"
    if clear_variational_dropout:
        pruned.model_config.ClearField("variational_dropout")
    elif not any(group.group_type == model_pb2.DEEP and len(group.feature_names) >= 2
                 and not group.HasField("dense_projection") for group in pruned.model_config.feature_groups):
        raise ConfigError(
            f"{source}: --top_k {top_k} leaves no DEEP group with two or more features, so the pruned config's "
            "model_config.variational_dropout would weigh nothing (validation refuses it); pass "
            "--clear_variational_dropout to write it without variational dropout, or a larger --top_k")
    problems = validate_pipeline_config(pruned, source)
    if problems:
        raise ConfigError(f"{source}: the config pruned to the top {top_k} features per group does not validate, "
                          "so it was not written:\n  " + "\n  ".join(problems), problems)
    return pruned


def feature_importance(pipeline: Pipeline, checkpoint: str, output_dir: str, *, top_k: int | None = None,
                       clear_variational_dropout: bool = False) -> dict:
    """Read each variational-dropout group's feature keep probabilities from ``checkpoint``
    and write ``output_dir``'s files (see the module docstring). Returns {"checkpoint",
    "step", "rows": [FeatureImportance], "csv", "png" (None without matplotlib),
    "pruned_config" (None without ``top_k``)}."""
    config = pipeline.config
    require_variational_dropout(config, pipeline.source)
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top_k: got {top_k}, expected at least 1 feature per group")
    if clear_variational_dropout and top_k is None:
        raise ConfigError("--clear_variational_dropout: only applies to the pruned config, which needs --top_k")
    check_output_path(output_dir, "--output_dir", directory=True)
    state = load_checkpoint(checkpoint, map_location="cpu")
    model = pipeline.build_model()
    load_model_state(model, state, checkpoint)
    ranking = model.feature_ranking()
    rows = importance_table(ranking)
    pruned = (pruned_config(config, pipeline.source, ranking, top_k, clear_variational_dropout)
              if top_k is not None else None)
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, CSV_NAME)
    atomic_write_text(csv_path, format_csv(rows))
    dropout = config.model_config.variational_dropout
    title = (f"feature importance, checkpoint step {int(state.get('step', 0))}"
             + (" (embedding-wise: mean over each feature's dimensions)" if dropout.embedding_wise else ""))
    png_path = write_feature_importance_plot(ranking, os.path.join(output_dir, PNG_NAME), top_k, title)
    pruned_path = None
    if pruned is not None:
        pruned_path = os.path.join(output_dir, PRUNED_NAME)
        save_pipeline_config(pruned, pruned_path)
    # An earlier run's chart or pruned config must not pass for this checkpoint's.
    for name, written in ((PNG_NAME, png_path), (PRUNED_NAME, pruned_path)):
        if written is None and os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    return {"checkpoint": str(checkpoint), "step": int(state.get("step", 0)), "rows": rows, "csv": csv_path,
            "png": png_path, "pruned_config": pruned_path}


__all__ = ["CSV_COLUMNS", "CSV_NAME", "FeatureImportance", "PNG_NAME", "PRUNED_NAME", "feature_importance",
           "format_csv", "importance_table", "pruned_config", "require_variational_dropout"]
