"""``recframe predict --export_dir D/item --input items.parquet --output emb.parquet``."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe predict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed every row of a Parquet/CSV file with an exported tower (recframe export).\n"
                    "Writes Parquet: the id column as in the input, and 'embedding' (list<float32>).",
        epilog="examples:\n"
               "  recframe predict --export_dir out/export/item --input data/ml-100k/items.parquet \\\n"
               "      --output out/item_emb.parquet\n"
               "  recframe predict --export_dir out/export/user --input data/ml-100k/test.parquet \\\n"
               "      --output out/user_emb.parquet --id_column user_id\n"
               "exit status: 0 done, 2 error in the export, the input or its columns (one line on stderr)",
    )
    parser.add_argument("--export_dir", required=True, help="an exported tower: EXPORT_DIR/user or EXPORT_DIR/item")
    parser.add_argument("--input", required=True, help="input file(s): path, glob or comma-separated list")
    parser.add_argument("--output", required=True, help="output Parquet file")
    parser.add_argument("--id_column", default=None,
                        help="column copied to the output (default: the item id field for the item tower, "
                             "the first input column for the user tower)")
    parser.add_argument("--batch_size", type=int, default=4096, help="rows per batch (default 4096)")
    parser.add_argument("--input_format", choices=("parquet", "csv"), default=None,
                        help="default: csv for a .csv path, else parquet")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="processes reading the input (default: data_config.num_workers of the export's "
                             "pipeline.config; 0 = the main process); the output keeps the input's row order")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_device_argument(parser, "cpu", "; the tower runs there, parsing stays on the host")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.recipes.predict import predict

        rows = predict(args.export_dir, args.input, args.output, args.id_column, args.batch_size,
                       args.input_format, progress=not args.no_progress, device=args.device,
                       num_workers=args.num_workers)
        print(f"wrote {rows} embeddings to {args.output}")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
