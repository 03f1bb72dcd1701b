"""``recframe convert-tzrec IN OUT``: convert a TorchEasyRec DSSM / DSSMV2 config to recframe.

Writes OUT (atomically) headed by comments listing every TorchEasyRec setting that was not
mapped as it was, with its nearest recframe equivalent; prints that list, then validates
OUT with recframe's validator.
"""

from __future__ import annotations

import argparse
import os
import sys

from recframe.cli.common import EXIT_OK, EXIT_USER_ERROR, run
from recframe.config.loader import TEXT_SUFFIXES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe convert-tzrec",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a TorchEasyRec (tzrec) DSSM or DSSMV2 pipeline config into a recframe config.\n"
                    "OUT starts with comments listing what was not mapped, each with the nearest recframe\n"
                    "equivalent; the same list is printed. OUT is then validated (schema and semantics).",
        epilog="examples:\n"
               "  recframe convert-tzrec dssm_taobao.config dssm_taobao_recframe.config\n"
               "  recframe convert-tzrec dssm_taobao.config out.config --overwrite\n"
               "exit status: 0 written and valid; 2 IN cannot be read or parsed, is not a DSSM/DSSMV2 config, or\n"
               "  OUT exists (one line on stderr, nothing written), or OUT was written but the validator\n"
               "  reports problems (printed one per line: edit OUT)",
    )
    parser.add_argument("input", metavar="IN", help="TorchEasyRec pipeline config (protobuf text format)")
    parser.add_argument("output", metavar="OUT",
                        help=f"recframe config to write (text format: {', '.join(TEXT_SUFFIXES)})")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 written and valid, 2 error or written but invalid)."""
    args = build_parser().parse_args(argv)

    def command() -> int:
        from recframe.config import ConfigError, load_pipeline_config, validate_pipeline_config
        from recframe.config.convert_tzrec import convert_tzrec, format_converted_config
        from recframe.files import atomic_write_text

        source, target = args.input, args.output
        if os.path.splitext(target)[1].lower() not in TEXT_SUFFIXES:
            raise ConfigError(f"{target}: unsupported suffix for OUT, expected one of {', '.join(TEXT_SUFFIXES)} "
                              "(the converted config is protobuf text format with comments)")
        if os.path.exists(target) and not args.overwrite:
            raise ConfigError(f"{target}: exists, expected a new file (pass --overwrite to replace it)")
        if os.path.isdir(target):
            raise ConfigError(f"{target}: is a directory, expected a file path")
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{source}: cannot read the config file: {err}") from None
        result = convert_tzrec(text, source)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        atomic_write_text(target, format_converted_config(result))
        print(f"wrote {target} (recframe {result.model}, from {source})")
        if result.unmapped:
            print(f"not mapped ({len(result.unmapped)}), each with the nearest recframe equivalent:")
            for note in result.unmapped:
                print(f"  - {note}")
        problems = validate_pipeline_config(load_pipeline_config(target), target)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {target}: edit it, then "
                  f"check it with recframe validate --pipeline_config {target}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"OK: {target} is a valid recframe config (the input paths are not checked)")
        return EXIT_OK

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
