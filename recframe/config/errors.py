"""The error type of configuration problems and the "did you mean" helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class ConfigError(ValueError):
    """A pipeline config cannot be loaded, edited or used.

    ``problems`` holds every individual problem (one line each); ``str(error)`` lists them
    all, each naming the config file, the field path and what was expected.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        self.problems: list[str] = list(problems) if problems else [message]
        super().__init__(message)


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate most similar to ``name`` (case-insensitive), or None."""
    pool = [c for c in dict.fromkeys(candidates) if c]
    if not name or not pool:
        return None
    lowered = {c.lower(): c for c in pool}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return lowered[name.lower()]
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hits[0]] if hits else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'X'?)"`` for the closest candidate, or ``""`` if none is close."""
    match = closest_match(name, candidates)
    return f" (did you mean '{match}'?)" if match is not None and match != name else ""
