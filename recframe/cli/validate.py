"""Validate a pipeline config: ``python -m recframe.validate --pipeline_config X``.

Prints ``OK: X`` and exits 0, or prints every problem (one per line) and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recframe.config import (
    ConfigError,
    apply_edit_config_json,
    check_paths_for,
    load_pipeline_config,
    validate_pipeline_config,
)
from recframe.config.validator import PATH_NEEDS


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recframe.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline_config", required=True, help="pipeline config (.config/.txt/.pbtxt or .json)")
    parser.add_argument("--edit_config_json", default=None,
                        help='JSON object of edits, e.g. \'{"train_config.num_epochs": 3}\'')
    parser.add_argument("--require", default="",
                        help="comma-separated paths the run needs, some of: " + ", ".join(PATH_NEEDS)
                             + " (default: check the schema alone)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 valid, 1 invalid)."""
    args = _parse_args(argv)
    path = args.pipeline_config
    need = [n.strip() for n in args.require.split(",") if n.strip()]
    unknown = [n for n in need if n not in PATH_NEEDS]
    if unknown:
        print(f"--require: unknown {', '.join(unknown)}, expected some of {', '.join(PATH_NEEDS)}", file=sys.stderr)
        return 2
    try:
        config = load_pipeline_config(path)
        if args.edit_config_json:
            apply_edit_config_json(config, args.edit_config_json, source=f"{path} (--edit_config_json)")
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 1
    problems = validate_pipeline_config(config, path)
    problems += [p for p in check_paths_for(config, path, need) if p not in problems]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {path}", file=sys.stderr)
        return 1
    print(f"OK: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
