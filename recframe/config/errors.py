"""The error type of configuration problems."""

from __future__ import annotations

from collections.abc import Sequence

from recframe.errors import RecframeError


class ConfigError(RecframeError, ValueError):
    """A pipeline config cannot be loaded, edited or used.

    ``problems`` holds every individual problem (one line each); ``str(error)`` lists them
    all, each naming the config file, the field path and what was expected.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        self.problems: list[str] = list(problems) if problems else [message]
        super().__init__(message)
