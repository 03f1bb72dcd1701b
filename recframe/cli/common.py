"""The exit-code policy of every recframe command, in one place.

- 0: done.
- 2: an error in the user's config, data, arguments, files or environment (every
  :class:`~recframe.errors.RecframeError`, and missing or unusable paths): one line
  ``error: ...`` on stderr, no traceback.
- 3: under torchrun, another rank died or timed out
  (:class:`~recframe.distributed.DistributedError`).
- Anything else is a bug in recframe: the traceback is kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from recframe import distributed
from recframe.errors import RecframeError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_DISTRIBUTED = distributed.EXIT_DISTRIBUTED

#: Errors reported as one line with exit status 2, besides RecframeError.
USER_ERRORS: tuple[type[BaseException], ...] = (RecframeError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError)


def error_message(error: BaseException) -> str:
    """The message of a user error; for one re-raised from a DataLoader worker (whose message
    carries the worker's traceback), only the original message."""
    message = str(error)
    if "Original Traceback" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        message = last[len(prefix):] if last.startswith(prefix) else last
    return message


def run(command: Callable[[], int | None]) -> int:
    """Run a command body under the exit-code policy; returns the exit status."""
    try:
        return command() or EXIT_OK
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_DISTRIBUTED
    except USER_ERRORS as e:
        print(f"error: {error_message(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    finally:
        distributed.cleanup()


__all__ = ["EXIT_DISTRIBUTED", "EXIT_OK", "EXIT_USER_ERROR", "USER_ERRORS", "error_message", "run"]
