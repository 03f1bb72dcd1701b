"""One call for the entry points: load, apply --edit_config_json, validate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recframe.config.loader import load_pipeline_config
from recframe.config.overrides import apply_edit_config_json
from recframe.config.validator import check_pipeline_config
from recframe.protos import pipeline_pb2


def prepare_pipeline_config(path: str, edit_config_json: str | Mapping[str, Any] | None = None,
                            need: Iterable[str] = ()) -> pipeline_pb2.PipelineConfig:
    """Load ``path``, apply the edits (if any), validate, and return the config.

    ``need`` lists the paths the run requires (see :func:`check_paths_for`), e.g.
    ``("train", "eval", "item", "model_dir")`` for training with evaluation.

    Raises:
        ConfigError: loading, editing or validation failed; every problem is listed.
    """
    config = load_pipeline_config(path)
    if edit_config_json:
        apply_edit_config_json(config, edit_config_json, source=f"{path} (--edit_config_json)")
    check_pipeline_config(config, path, need=need)
    return config
