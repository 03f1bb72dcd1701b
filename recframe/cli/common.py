"""The exit-code policy of every recframe command, in one place.

- 0: done.
- 2: an error in the user's config, data, arguments, files or environment (every
  :class:`~recframe.errors.RecframeError`; every ``OSError``: missing, unwritable or full
  paths; out of memory): one line ``error: ...`` on stderr, no traceback.
- 3: under torchrun, another rank died or timed out
  (:class:`~recframe.distributed.DistributedError`).
- 130: interrupted (Ctrl-C / SIGINT); training saves a checkpoint of its last finished step
  first and says so.
- 1: anything else is a bug in recframe: the traceback is kept, followed by one line that
  says so.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from recframe.errors import RecframeError

# Nothing here imports torch: a command's --help answers before any heavy import.

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_DISTRIBUTED = 3
EXIT_INTERRUPTED = 130

#: Errors reported as one line with exit status 2: the user's and the environment's.
USER_ERRORS: tuple[type[BaseException], ...] = (RecframeError, OSError, MemoryError)


def add_pipeline_arguments(parser: argparse.ArgumentParser, checkpoint: bool = False) -> None:
    """The arguments every command over a pipeline config takes: --pipeline_config (alias
    --pipeline_config_path), --model_dir, --edit_config_json and, with ``checkpoint``,
    --checkpoint_path."""
    parser.add_argument("--pipeline_config", "--pipeline_config_path", dest="pipeline_config", required=True,
                        help="pipeline config file (.config text format or .json); --pipeline_config_path is "
                             "TorchEasyRec's name for it")
    parser.add_argument("--model_dir", default=None, help="overrides the config's model_dir")
    parser.add_argument("--edit_config_json", default=None,
                        help='JSON of dotted-path overrides, e.g. \'{"train_config.num_epochs": 2}\'')
    if checkpoint:
        parser.add_argument("--checkpoint_path", default="best",
                            help='"best" (default), "latest", or a checkpoint file path')


def pipeline_from_args(args: argparse.Namespace):
    """The :class:`~recframe.pipeline.Pipeline` of the options of :func:`add_pipeline_arguments`:
    --pipeline_config with --edit_config_json applied, --model_dir (when given) in place of the
    config's model_dir."""
    from recframe.pipeline import Pipeline

    pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
    pipeline.config.model_dir = args.model_dir or pipeline.config.model_dir
    return pipeline


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto", note: str = "") -> None:
    """The ``--device`` option of a command (resolved by :func:`recframe.device.resolve_device`)."""
    parser.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N or auto (default: {default}){note}")


def error_message(error: BaseException) -> str:
    """The message of a user error; for one re-raised from a DataLoader worker (whose message
    carries the worker's traceback), only the original message; an OS error with its file."""
    if isinstance(error, OSError) and not isinstance(error, RecframeError) and error.strerror:
        where = f": {error.filename!r}" if error.filename else ""
        return f"{error.strerror}{where}" + (f" -> {error.filename2!r}" if error.filename2 else "")
    if isinstance(error, MemoryError):
        return f"out of memory{': ' + str(error) if str(error) else ''}"
    message = str(error)
    if "Original Traceback" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        prefix = f"{type(error).__module__}.{type(error).__name__}: "
        message = last[len(prefix):] if last.startswith(prefix) else last
    return message


def run(command: Callable[[], int | None]) -> int:
    """Run a command body under the exit-code policy; returns the exit status."""
    from recframe import distributed  # torch: only once a command runs

    import torch

    try:
        return command() or EXIT_OK
    except distributed.DistributedError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_DISTRIBUTED
    except USER_ERRORS as e:
        print(f"error: {error_message(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except torch.OutOfMemoryError as e:  # device memory: the environment, not a bug
        print(f"error: out of device memory ({str(e).splitlines()[0][:200]}); lower data_config.batch_size or "
              "eval_config's chunk sizes", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("error: this is a bug in recframe (an internal error, not a problem with your config or data); "
              "please report it with the traceback above", file=sys.stderr, flush=True)
        return EXIT_BUG
    finally:
        distributed.cleanup()


__all__ = ["EXIT_BUG", "EXIT_DISTRIBUTED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USER_ERROR", "USER_ERRORS", "add_device_argument", "add_pipeline_arguments",
           "error_message", "run"]
