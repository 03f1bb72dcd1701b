"""The ``recframe/<command>.py`` modules: ``python -m recframe.<command>`` still works.

``recframe.train``, ``recframe.evaluate`` and ``recframe.export`` are also the library API's
functions (:mod:`recframe.api`); once such a module is imported it shadows the function of the
same name on the package, so the module is made callable as that function.
"""

from __future__ import annotations

import importlib
import sys
import types


class _CallableCommand(types.ModuleType):
    def __call__(self, *args, **kwargs):
        api = importlib.import_module("recframe.api")
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def run_or_alias(module_name: str, command: str) -> None:
    """Run ``recframe <command>`` when executed as ``__main__``; when imported, make the module
    callable as the API function of its name, if there is one."""
    if module_name == "__main__":
        sys.exit(importlib.import_module(f"recframe.cli.{command}").main())
    if command in ("train", "evaluate", "export"):
        sys.modules[module_name].__class__ = _CallableCommand
