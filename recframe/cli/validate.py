"""Validate a pipeline config: ``recframe validate --pipeline_config X``.

Prints ``OK: X`` and exits 0, or prints every problem (one per line) and exits 2, the status
of every user error (:mod:`recframe.cli.common`). The warnings of a valid config (settings
that may not do what was meant) are printed on stderr as ``warning: ...`` lines; exit 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recframe.cli.common import EXIT_USER_ERROR
from recframe.config import (
    ConfigError,
    apply_edit_config_json,
    check_paths_for,
    load_pipeline_config,
    validate_with_warnings,
)
from recframe.config.validator import PATH_NEEDS


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recframe validate", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline_config", "--pipeline_config_path", dest="pipeline_config", required=True,
                        help="pipeline config (.config/.txt/.pbtxt or .json); --pipeline_config_path is TorchEasyRec's "
                             "name for it")
    parser.add_argument("--edit_config_json", default=None,
                        help='JSON object of edits, e.g. \'{"train_config.num_epochs": 3}\'')
    parser.add_argument("--require", default="",
                        help="comma-separated paths the run needs, some of: " + ", ".join(PATH_NEEDS)
                             + " (default: check the schema alone)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 valid, 2 invalid or unreadable)."""
    args = _parse_args(argv)
    path = args.pipeline_config
    need = [n.strip() for n in args.require.split(",") if n.strip()]
    unknown = [n for n in need if n not in PATH_NEEDS]
    if unknown:
        print(f"--require: unknown {', '.join(unknown)}, expected some of {', '.join(PATH_NEEDS)}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        config = load_pipeline_config(path)
        if args.edit_config_json:
            apply_edit_config_json(config, args.edit_config_json, source=f"{path} (--edit_config_json)")
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return EXIT_USER_ERROR
    problems, warnings = validate_with_warnings(config, path)
    problems += [p for p in check_paths_for(config, path, need) if p not in problems]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {path}", file=sys.stderr)
        return EXIT_USER_ERROR
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"OK: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
