"""``recframe prepare``: an interaction log (or MovieLens) -> train / valid / test / items tables."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recframe.cli.common import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe prepare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Split an interaction log into train / valid / test Parquet tables with each row's history\n"
                    "(items and times, most recent last), the items each evaluation row has seen, and the\n"
                    "item catalogue; side tables of users and items are joined in. See docs/your_data.md.",
        epilog="examples:\n"
               "  recframe prepare --interactions clicks.csv --user_col uid --item_col sku --time_col ts \\\n"
               "      --items products.parquet --out data/clicks\n"
               "  recframe prepare --interactions logs/ --user_col uid --item_col sku --time_col ts --split time \\\n"
               "      --test_start 2024-06-01 --valid_start 2024-05-25 --out data/logs\n"
               "  recframe prepare --movielens ml-100k --out data/ml-100k\n"
               "exit status: 0 done, 2 error in the input or the options (one line on stderr; nothing written)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--interactions", help="interaction log: Parquet or CSV file(s), folder, glob or comma list")
    source.add_argument("--movielens", choices=("ml-100k", "ml-1m"),
                        help="prepare MovieLens by the reference protocol instead (raw files from "
                             "$RECFRAME_DATA_DIR/<variant> or --raw_dir, else downloaded)")
    parser.add_argument("--out", required=True, help="output folder (replaced whole when done)")
    parser.add_argument("--users", default=None, help="user side table, joined on --user_col")
    parser.add_argument("--items", default=None, help="item side table (the catalogue), joined on --item_col")
    parser.add_argument("--user_col", help="user id column")
    parser.add_argument("--item_col", help="item id column")
    parser.add_argument("--time_col", help="time column: Unix seconds, an Arrow timestamp or ISO-8601 text")
    parser.add_argument("--split", choices=("leave_last_out", "time"), default="leave_last_out",
                        help="per user the last interaction to test and the one before to validation (default), "
                             "or a global split by time")
    parser.add_argument("--valid_start", default=None, help="time split: first validation time (seconds or ISO-8601)")
    parser.add_argument("--test_start", default=None, help="time split: first test time (seconds or ISO-8601)")
    parser.add_argument("--valid_fraction", type=float, default=0.1,
                        help="time split without times: about this share of the interactions to validation (0.1)")
    parser.add_argument("--test_fraction", type=float, default=0.1, help="... and this share to test (0.1)")
    parser.add_argument("--max_history", type=int, default=50, help="most recent items kept in a history (50)")
    parser.add_argument("--min_interactions", type=int, default=3,
                        help="leave_last_out: users with fewer interactions stay in train only (3)")
    parser.add_argument("--repeats", choices=("keep", "first", "last"), default="keep",
                        help="the same user and item more than once: keep every interaction (default), or only "
                             "the first / last")
    parser.add_argument("--catalogue", choices=("interacted", "all"), default="interacted",
                        help="with --items: only the items that occur in the interactions (default), or all")
    parser.add_argument("--item_features", default="",
                        help="without --items: comma-separated interaction columns that describe the item "
                             "(copied into the catalogue)")
    parser.add_argument("--history_item_features", default="",
                        help="comma-separated item side columns also listed per history item, as hist_<column> "
                             "(a list column's values joined by '|')")
    parser.add_argument("--raw_dir", default=None, help="--movielens: folder of the GroupLens files")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


def _seconds(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    import pyarrow as pa

    from recframe.data.prepare import to_seconds

    try:
        return float(text)
    except ValueError:
        return float(to_seconds(pa.chunked_array([[text]]), flag)[0])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.interactions is not None:
        missing = [f"--{name}" for name in ("user_col", "item_col", "time_col") if not getattr(args, name)]
        if missing:
            parser.error(f"--interactions needs {', '.join(missing)}")

    def command() -> None:
        import time

        from recframe.data.prepare import SplitSpec, prepare_interactions

        start = time.perf_counter()
        if args.movielens:
            from recframe.data.sources.movielens import TABLES, prepare_movielens

            # Idempotent: a folder holding an up-to-date set is left as it is (--overwrite rebuilds).
            paths = prepare_movielens(args.movielens, args.out, args.raw_dir, force=args.overwrite,
                                      max_history=args.max_history)
            counts = json.loads(Path(paths["manifest"]).read_text())["row_counts"]
            print(f"{args.movielens}: " + ", ".join(f"{k} {counts[k]:,}" for k in TABLES)
                  + f" rows in {args.out} ({time.perf_counter() - start:.1f} s)")
            return
        spec = SplitSpec(user_col=args.user_col, item_col=args.item_col, time_col=args.time_col, split=args.split,
                         valid_start=_seconds(args.valid_start, "--valid_start"),
                         test_start=_seconds(args.test_start, "--test_start"),
                         valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
                         max_history=args.max_history, min_interactions=args.min_interactions,
                         repeats=args.repeats, catalogue=args.catalogue,
                         item_features=tuple(c for c in args.item_features.split(",") if c),
                         history_item_features=tuple(c for c in args.history_item_features.split(",") if c))
        prepared = prepare_interactions(args.interactions, args.out, spec, args.users, args.items, args.overwrite)
        info, counts = prepared.manifest["info"], prepared.manifest["row_counts"]
        print(f"prepared {info['num_interactions']:,} interactions of {info['num_users']:,} users and "
              f"{info['num_items']:,} items ({args.split}): " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
              + f" rows ({time.perf_counter() - start:.1f} s)")
        if info["cold_users"] or info["cold_items"]:
            print(f"cold: {info['cold_users']:,} users with fewer than {spec.min_interactions} interactions (train "
                  f"only), {info['cold_items']:,} items seen only in validation or test")
        print(f"wrote {args.out}/: " + ", ".join(f"{k}.parquet" for k in counts) + ", _manifest.json")
        print(f"next: recframe init --data_dir {args.out} --out {os.path.basename(args.out.rstrip('/'))}.config")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
