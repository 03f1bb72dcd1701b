"""Collects validation problems, each naming the source file and the field path."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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
    """Ordered, de-duplicated lists of the problems of one config and of its warnings.

    A problem makes the config invalid; a warning is a valid setting that may not do what
    was meant (printed as ``warning: ...``, never fatal).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def _line(self, path: str, what: str) -> str:
        return f"{self.source}: {path}: {what}" if path else f"{self.source}: {what}"

    def add(self, path: str, what: str) -> None:
        """Record the problem ``"{source}: {path}: {what}"`` (once)."""
        line = self._line(path, what)
        if line not in self.problems:
            self.problems.append(line)

    def warn(self, path: str, what: str) -> None:
        """Record the warning ``"{source}: {path}: {what}"`` (once)."""
        line = self._line(path, what)
        if line not in self.warnings:
            self.warnings.append(line)


@dataclass(frozen=True)
class Bound:
    """An interval of allowed numbers; ``None`` = unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """True if ``value`` lies in the interval (NaN never does)."""
        if value != value:  # NaN
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        if self.high is not None and not (value < self.high if self.high_open else value <= self.high):
            return False
        return True

    def describe(self) -> str:
        """Human form: ``> 0``, ``>= 1``, ``in [0, 1)``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {show(self.low)}"
        return (
            f"in {'(' if self.low_open else '['}{show(self.low)}, "
            f"{show(self.high)}{')' if self.high_open else ']'}"
        )


POSITIVE = Bound(0, low_open=True)
NON_NEGATIVE = Bound(0)
AT_LEAST_ONE = Bound(1)
OPEN_UNIT = Bound(0, 1, low_open=True, high_open=True)  # (0, 1)
UNIT_RIGHT_OPEN = Bound(0, 1, high_open=True)  # [0, 1)
UNIT_LEFT_OPEN = Bound(0, 1, low_open=True)  # (0, 1]
