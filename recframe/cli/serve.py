"""``recframe serve``: the gRPC top-K service over an export (docs/serving.md)."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve top-K retrieval over gRPC: a user's raw features in, the nearest catalogue items out.\n"
                    "Concurrent requests are batched into one tower call; SIGHUP (or the Reload call) switches\n"
                    "to a new export without dropping requests. Needs grpcio (pip install 'recframe[serve]').",
        epilog="examples:\n"
               "  recframe serve --export_dir out/export --items data/ml-100k/items.parquet\n"
               "  recframe serve --export_dir out/export --item_embeddings out/item_emb.parquet --index hnsw\n"
               "exit status: 0 stopped (SIGINT / SIGTERM), 2 error in the export, the items or the options",
    )
    parser.add_argument("--export_dir", required=True, help="a directory written by recframe export")
    parser.add_argument("--items", default=None,
                        help="the catalogue to embed with the item tower (default: the export's item_input_path)")
    parser.add_argument("--item_embeddings", default=None,
                        help="or the catalogue's vectors: recframe predict's output for the item tower")
    parser.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat",
                        help="flat: exact (default); ivf / hnsw: faiss (the faiss extra)")
    parser.add_argument("--nlist", type=int, default=None, help="ivf lists (default ~4*sqrt(items))")
    parser.add_argument("--nprobe", type=int, default=16, help="ivf lists visited per query")
    parser.add_argument("--hnsw_m", type=int, default=32, help="hnsw neighbours per node")
    parser.add_argument("--ef_construction", type=int, default=80, help="hnsw build list size")
    parser.add_argument("--ef_search", type=int, default=128, help="hnsw search list size")
    parser.add_argument("--top_k", type=int, default=10, help="items per request when the request does not say")
    parser.add_argument("--max_batch_size", type=int, default=64, help="requests embedded together at most")
    parser.add_argument("--max_wait_ms", type=float, default=2.0,
                        help="how long a request waits for others to batch with (default 2 ms)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=50051, help="port (0: any free one, printed)")
    parser.add_argument("--workers", type=int, default=64, help="gRPC handler threads")
    add_device_argument(parser, "cpu", "; where the user tower and the exact index run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.serving.server import ServeOptions, serve

        serve(ServeOptions(**vars(args)))

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
