"""Load, edit (``--edit_config_json``), validate and save pipeline configs.

Typical use::

    from recframe.config import check_pipeline_config, load_pipeline_config
    config = load_pipeline_config("examples/dssm_movielens.config")
    check_pipeline_config(config, "examples/dssm_movielens.config", need=("train", "eval", "item"))
"""

from recframe.config.errors import ConfigError
from recframe.config.loader import (
    format_pipeline_config,
    load_pipeline_config,
    parse_pipeline_config,
    read_vocab_file,
    resolve_config_path,
    save_pipeline_config,
)
from recframe.config.names import (
    ACTIVATIONS,
    DEFAULT_TOP_K,
    WEIGHT_INITS,
    activation_name,
    eval_metric_names,
    resolve_top_k,
)
from recframe.config.overrides import apply_edit_config_json
from recframe.config.validator import (check_paths_for, check_pipeline_config, validate_pipeline_config,
                                       validate_with_warnings)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_TOP_K",
    "WEIGHT_INITS",
    "ConfigError",
    "activation_name",
    "apply_edit_config_json",
    "check_paths_for",
    "check_pipeline_config",
    "eval_metric_names",
    "format_pipeline_config",
    "load_pipeline_config",
    "parse_pipeline_config",
    "read_vocab_file",
    "resolve_config_path",
    "resolve_top_k",
    "save_pipeline_config",
    "validate_pipeline_config",
    "validate_with_warnings",
]
