"""Name -> class registries.

Convention: the name of a config (proto) message equals the name of the class that
implements it, e.g. the config message ``DSSM`` is built by the class ``DSSM`` registered
in :data:`MODELS`. User code can add its own classes without editing recframe::

    from recframe.registry import MODELS

    @MODELS.register()
    class MyModel(MatchModel):
        ...
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

from recframe.errors import RecframeError, close_matches

T = TypeVar("T")


class RegistryError(RecframeError, KeyError):
    """Unknown name, or a name registered twice. Subclass of KeyError."""

    def __str__(self) -> str:  # KeyError.__str__ would repr() the message (quotes)
        return str(self.args[0]) if self.args else ""


class Registry:
    """A map from names to classes (or any callables) of one kind, e.g. "model"."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, object] = {}

    def register(self, name: str | None = None, *, override: bool = False) -> Callable[[T], T]:
        """Class decorator registering the class under ``name`` (default: its ``__name__``).

        Registering a second, different object under a taken name raises
        :class:`RegistryError` unless ``override=True``. Re-registering the same object
        (e.g. a module imported twice) is a no-op.
        """

        def decorator(obj: T) -> T:
            key = name if name is not None else getattr(obj, "__name__", None)
            if not key:
                raise RegistryError(f"cannot register {obj!r} as a {self.kind}: it has no name")
            existing = self._entries.get(key)
            if existing is not None and existing is not obj and not override:
                raise RegistryError(
                    f"{self.kind} {key!r} is already registered ({_qualname(existing)}); "
                    f"cannot register {_qualname(obj)} under the same name "
                    "(pass override=True to replace it)"
                )
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> object:
        """The object registered under ``name``; :class:`RegistryError` with suggestions if none."""
        load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            pass
        known = self.names()
        msg = f"unknown {self.kind} {name!r}."
        close = close_matches(str(name), known, n=3)
        if close:
            msg += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        msg += " Known: " + (", ".join(known) if known else "(none registered)") + "."
        raise RegistryError(msg)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _qualname(obj: object) -> str:
    mod = getattr(obj, "__module__", None)
    qn = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{mod}.{qn}" if mod else qn


MODELS = Registry("model")
FEATURES = Registry("feature")
SAMPLERS = Registry("sampler")
LOSSES = Registry("loss")
METRICS = Registry("training metric")
SEQUENCE_ENCODERS = Registry("sequence encoder")
INITIALIZERS = Registry("initializer")
DATA_SOURCES = Registry("data source")
LR_SCHEDULES = Registry("learning rate schedule")
OPTIMIZERS = Registry("optimizer")

#: recframe's own plugin packages; importing one registers its classes.
BUILTIN_PACKAGES = ("recframe.features", "recframe.modules", "recframe.negatives", "recframe.losses",
                    "recframe.metrics", "recframe.models", "recframe.data.sources", "recframe.training")
_loaded = {"builtins": False}


def load_builtins() -> None:
    """Import recframe's own plugin packages once (every lookup does this first), so that a
    registry is complete whichever module asked."""
    if _loaded["builtins"]:
        return
    _loaded["builtins"] = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)


def plugin_for_message(message_name: str) -> object | None:
    """The class registered under a config message's name in any registry, or None."""
    load_builtins()
    for registry in (MODELS, FEATURES, SAMPLERS, LOSSES, METRICS, SEQUENCE_ENCODERS, INITIALIZERS, DATA_SOURCES,
                     LR_SCHEDULES, OPTIMIZERS):
        if message_name in registry._entries:
            return registry._entries[message_name]
    return None


class PluginImportError(RecframeError, ImportError):
    """A module named in plugin_modules cannot be imported."""


def import_plugin_modules(names: Iterable[str]) -> None:
    """Import user modules that register plugins (``PipelineConfig.plugin_modules``).

    Each name is a module importable from the working directory or ``PYTHONPATH``
    (``"my_project.models"``), or a path to a ``.py`` file (absolute, or relative to the
    working directory) imported as a module named after the file. A module is imported once
    per process. Raises :class:`PluginImportError` naming the module and the cause.
    """
    for name in names:
        try:
            if name.endswith(".py"):
                path = os.path.abspath(os.path.expanduser(name))
                module_name = os.path.splitext(os.path.basename(path))[0]
                existing = sys.modules.get(module_name)
                if existing is not None and os.path.abspath(getattr(existing, "__file__", "") or "") == path:
                    continue
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"no file {path}")
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module  # registered first: the module may import itself
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(module_name, None)
                    raise
            else:
                importlib.import_module(name)
        except Exception as e:  # any failure of user code: one line naming the module
            raise PluginImportError(f"cannot import plugin module {name!r}: {type(e).__name__}: {e}") from e


__all__ = [
    "BUILTIN_PACKAGES",
    "PluginImportError",
    "Registry",
    "RegistryError",
    "import_plugin_modules",
    "load_builtins",
    "plugin_for_message",
    "MODELS",
    "FEATURES",
    "SAMPLERS",
    "LOSSES",
    "METRICS",
    "SEQUENCE_ENCODERS",
    "INITIALIZERS",
    "DATA_SOURCES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
]
