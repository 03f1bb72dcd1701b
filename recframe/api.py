"""recframe as a library: the commands' work as functions (``import recframe``).

Every function is what the command of the same name does, without the printing of tables
and the exit codes; errors are raised (:class:`recframe.errors.RecframeError` for the user's
config, data and files).

Example (docs/api.md; runs in the tests)::

    import recframe

    recframe.prepare("clicks.csv", "data/clicks", user_col="uid", item_col="sku", time_col="ts")
    recframe.init_config("data/clicks", "clicks.config")
    pipeline = recframe.load_pipeline("clicks.config", edits={"train_config.num_epochs": 2})
    result = recframe.train(pipeline, "runs/clicks")           # {"step", "eval", "test"}
    recframe.export(pipeline, "out/clicks", model_dir="runs/clicks")
    items = recframe.load_tower("out/clicks/item")
    vectors = items.embed(pyarrow.parquet.read_table("data/clicks/items.parquet"))  # (N, 64) float32
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from recframe.pipeline import Pipeline


def load_pipeline(config: str | os.PathLike, edits: Mapping[str, Any] | str | None = None) -> Pipeline:
    """A validated :class:`~recframe.pipeline.Pipeline` from a config file, or from the text of
    a config (a string holding a newline or a ``{``); ``edits`` as ``--edit_config_json``
    (a dict of dotted paths to values, or its JSON)."""
    edit_json = json.dumps(edits) if isinstance(edits, Mapping) else edits
    text = str(config)
    if "\n" in text or "{" in text:
        return Pipeline.from_string(text, edit_json)
    return Pipeline.from_file(text, edit_json)


def train(pipeline: Pipeline, model_dir: str | os.PathLike | None = None, *, continue_train: bool = False,
          device: str | None = None, restart_epoch: bool = False) -> dict:
    """Train and evaluate (``recframe train``); returns {"step", "eval": metrics, "test": metrics}.
    ``model_dir`` defaults to the config's."""
    from recframe.config.errors import ConfigError
    from recframe.recipes.train import train_and_evaluate

    model_dir = str(model_dir or pipeline.config.model_dir)
    if not model_dir:
        raise ConfigError(f"{pipeline.source}: model_dir: not set; set it in the config or pass model_dir")
    pipeline.config.model_dir = model_dir
    pipeline.print_warnings()
    return train_and_evaluate(pipeline, model_dir, continue_train=continue_train, device_name=device,
                              restart_epoch=restart_epoch)


def evaluate(pipeline: Pipeline, checkpoint: str = "best", *, model_dir: str | os.PathLike | None = None,
             eval_path: str | None = None, device: str | None = None) -> dict:
    """Full-corpus metrics of a checkpoint ("best", "latest" or a file) on ``eval_path``
    (default eval_input_path), and the pointwise ``auc`` / ``accuracy`` of
    eval_config.pointwise_metrics, like ``recframe evaluate``; returns the metrics with "step"."""
    from recframe.recipes.evaluate import evaluate_checkpoint
    from recframe.training.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(str(model_dir or pipeline.config.model_dir), checkpoint, pipeline.source)
    metrics, step = evaluate_checkpoint(pipeline, path, eval_path, device)
    return {**metrics, "step": step}


def export(pipeline: Pipeline, export_dir: str | os.PathLike, checkpoint: str = "best", *,
           model_dir: str | os.PathLike | None = None, overwrite: bool = False,
           device: str | None = None, compile_cpu: bool = True) -> dict[str, Path]:
    """Export the user and item towers of a checkpoint (``recframe export``; ``compile_cpu=False``
    is ``--no_compile``); returns {"user": dir, "item": dir}."""
    from recframe.device import resolve_device
    from recframe.recipes.export import export_checkpoint
    from recframe.training.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(str(model_dir or pipeline.config.model_dir), checkpoint, pipeline.source)
    dirs, _ = export_checkpoint(pipeline, path, export_dir, overwrite=overwrite,
                                device=resolve_device(device or "cpu"), compile_cpu=compile_cpu)
    return dirs


def load_tower(path: str | os.PathLike, device: str | None = None):
    """An exported tower (``EXPORT_DIR/user`` or ``/item``): ``.embed(rows)`` gives (N, D)
    float32 embeddings of raw rows (see :class:`recframe.serving.Tower`)."""
    from recframe.serving.tower import load_tower as load

    return load(path, device)


def prepare(interactions: str, out_dir: str, *, user_col: str, item_col: str, time_col: str,
            users: str | None = None, items: str | None = None, overwrite: bool = False, **split: Any):
    """Split an interaction log into train / valid / test / items tables (``recframe prepare``);
    ``split`` takes the other fields of :class:`recframe.data.prepare.SplitSpec` (``split="time"``,
    ``max_history``, ``repeats``, ...). Returns the :class:`~recframe.data.prepare.Prepared` paths
    and manifest."""
    from recframe.data.prepare import SplitSpec, prepare_interactions

    spec = SplitSpec(user_col=user_col, item_col=item_col, time_col=time_col, **split)
    return prepare_interactions(interactions, out_dir, spec, users, items, overwrite)


def init_config(data_dir: str, out: str, *, model_dir: str | None = None, epochs: int = 10,
                overwrite: bool = False) -> list[str]:
    """Write a starter config for a prepared folder (``recframe init``); returns the files written."""
    from recframe.config.starter import write_starter_config

    return write_starter_config(data_dir, out, model_dir, epochs, overwrite)


__all__ = ["Pipeline", "evaluate", "export", "init_config", "load_pipeline", "load_tower", "prepare", "train"]
