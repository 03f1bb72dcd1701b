"""``recframe init``: a starter config for a folder written by ``recframe prepare``."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe init",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a commented starter DSSM config for a folder written by recframe prepare: ids sized\n"
                    "from the data, side columns bucketised or given vocabularies, the history sharing the item\n"
                    "table, in-batch + sampled negatives with logQ, full-corpus evaluation. It validates and\n"
                    "trains as is.",
        epilog="example:\n"
               "  recframe init --data_dir data/clicks --out clicks.config && recframe train --pipeline_config "
               "clicks.config\n"
               "exit status: 0 done, 2 error in the folder or the options (one line on stderr)",
    )
    parser.add_argument("--data_dir", required=True, help="a folder written by recframe prepare")
    parser.add_argument("--out", required=True, help="the config file to write (vocabulary files go beside it)")
    parser.add_argument("--model_dir", default=None, help="the config's model_dir (default runs/<config name>)")
    parser.add_argument("--epochs", type=int, default=10, help="train_config.num_epochs (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.config.starter import write_starter_config

        written = write_starter_config(args.data_dir, args.out, args.model_dir, args.epochs, args.overwrite)
        print(f"wrote {', '.join(written)} (it validates)")
        print(f"next: recframe train --pipeline_config {args.out}")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
