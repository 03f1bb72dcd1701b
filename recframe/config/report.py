"""Collects validation problems, each naming the source file and the field path."""

from __future__ import annotations

import math
from collections.abc import Iterable

from recframe.errors import closest_match


def join_path(parent: str, name: str) -> str:
    """Join a field path and a field name: ``join_path("a.b", "c") == "a.b.c"``."""
    return f"{parent}.{name}" if parent else name


def show(value: object) -> str:
    """Render a config value for a message: floats compactly (float32 noise removed)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.7g}"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def one_of(names: Iterable[str]) -> str:
    """``"a, b or c"``."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def unknown_name(kind: str, name: str, known: list[str], expected: str | None = None) -> str:
    """Describe a name that is not among ``known``, with a "did you mean" when one is close.

    ``expected`` overrides the default "expected one of <known>" (which is left out when a
    close match is suggested).
    """
    match = closest_match(name, known)
    text = f"unknown {kind} {show(name)}"
    if match is not None:
        text += f" (did you mean '{match}'?)"
    if expected is not None:
        return f"{text}, expected {expected}"
    if match is not None:
        return text
    if not known:
        return f"{text}, none is defined"
    return f"{text}, expected one of " + ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")


class Report:
    """Ordered, de-duplicated list of problems of one config."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, path: str, what: str) -> None:
        """Record ``"{source}: {path}: {what}"`` (once)."""
        line = f"{self.source}: {path}: {what}" if path else f"{self.source}: {what}"
        if line not in self.problems:
            self.problems.append(line)
