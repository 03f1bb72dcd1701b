"""recframe: a config-driven two-tower retrieval framework.

The library API (docs/api.md), imported on first use so that ``import recframe`` stays light:
:func:`prepare`, :func:`init_config`, :func:`load_pipeline`, :func:`train`, :func:`evaluate`,
:func:`export`, :func:`load_tower`, and :class:`Pipeline`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Pipeline", "evaluate", "export", "init_config", "load_pipeline", "load_tower", "prepare", "train")

if TYPE_CHECKING:  # for type checkers and IDEs; at run time they load lazily
    from recframe.api import (Pipeline, evaluate, export, init_config, load_pipeline, load_tower, prepare,
                              train)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("recframe.api"), name)
    raise AttributeError(f"module 'recframe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
