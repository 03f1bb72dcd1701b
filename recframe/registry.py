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

from typing import Callable, Iterator, TypeVar

from recframe.errors import close_matches

T = TypeVar("T")


class RegistryError(KeyError):
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
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
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

__all__ = [
    "Registry",
    "RegistryError",
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
