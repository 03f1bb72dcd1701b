"""The base class of errors a user can act on, and the "did you mean" suggestions they carry.

Every error caused by the user's config, data, paths or files derives from
:class:`RecframeError` (most also from the builtin class their callers expect, e.g.
``ValueError``); the commands print its message on one line and exit with status 2
(:mod:`recframe.cli.common`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RecframeError(Exception):
    """An error in the user's config, data, arguments or files (not a bug in recframe)."""


def close_matches(name: str, candidates: Iterable[str], n: int = 1) -> list[str]:
    """Up to ``n`` candidates most similar to ``name``, best first (case-insensitive).

    A candidate equal to ``name`` up to case comes first.
    """
    pool = [c for c in dict.fromkeys(candidates) if c]
    if not name or not pool:
        return []
    lowered = {c.lower(): c for c in pool}
    exact = [lowered[name.lower()]] if name.lower() in lowered else []
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return list(dict.fromkeys(exact + [lowered[h] for h in hits]))[:n]


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None."""
    found = close_matches(name, candidates, n=1)
    return found[0] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the closest candidate, or ``""`` if none is close."""
    match = closest_match(name, candidates)
    return f" (did you mean '{match}'?)" if match is not None and match != name else ""


__all__ = ["RecframeError", "close_matches", "closest_match", "did_you_mean"]
