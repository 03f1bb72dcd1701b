"""``recframe retrieve``: top-K items per user from item / user embedding files."""

from __future__ import annotations

import argparse
import sys

from recframe.cli.common import add_device_argument, run
from recframe.config.names import INDEX_TYPES, SEARCH_METRICS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recframe retrieve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Top-K items per user from item and user embedding files (Parquet: an id column and\n"
                    "'embedding' list<float>), with an exact (flat) or approximate faiss (ivf, hnsw) index.\n"
                    "With --ground_truth, prints HitRate/Recall/NDCG@K and MRR (the metrics of\n"
                    "recframe.evaluate) and, for ivf/hnsw, index_recall@K against exact search; the metrics\n"
                    "are also written as JSON next to --output.",
        epilog="examples:\n"
               "  recframe retrieve --item_embeddings item_emb.parquet --user_embeddings user_emb.parquet \\\n"
               "      --top_k 10 --output topk.parquet --export_dir out/export\n"
               "  recframe retrieve ... --index hnsw --hnsw_m 32 --ef_search 256 \\\n"
               "      --ground_truth data/test.parquet --target_column movie_id --exclude_column seen_items\n"
               "output: one row per user: <user id>, item_ids list (best first), scores list<float32>\n"
               "exit status: 0 done, 2 error in the arguments or the input files (one line on stderr)",
    )
    parser.add_argument("--item_embeddings", required=True, help="item embeddings Parquet file")
    parser.add_argument("--user_embeddings", required=True, help="user embeddings Parquet file")
    parser.add_argument("--output", required=True, help="top-K Parquet file to write")
    parser.add_argument("--top_k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--item_id_column", default=None,
                        help="id column of --item_embeddings (default: first column other than 'embedding')")
    parser.add_argument("--user_id_column", default=None,
                        help="id column of --user_embeddings (default: first column other than 'embedding')")
    parser.add_argument("--metric", choices=SEARCH_METRICS, default=None,
                        help="ip: inner product; cosine: L2-normalise both sides, then inner product "
                             "(default: from --export_dir, else ip)")
    parser.add_argument("--export_dir", default=None,
                        help="exported towers (D/user, D/item with tower.json): the metric follows their similarity")
    parser.add_argument("--index", choices=INDEX_TYPES, default="flat",
                        help="flat: exact (default); ivf: faiss IndexIVFFlat; hnsw: faiss IndexHNSWFlat")
    parser.add_argument("--nlist", type=int, default=None, help="ivf lists (default ~4*sqrt(items), <= items/39)")
    parser.add_argument("--nprobe", type=int, default=16, help="ivf lists visited per query (default 16)")
    parser.add_argument("--hnsw_m", type=int, default=32, help="hnsw neighbours per node (default 32)")
    parser.add_argument("--ef_construction", type=int, default=80, help="hnsw build list size (default 80)")
    parser.add_argument("--ef_search", type=int, default=128,
                        help="hnsw search list size (default 128; raised to the number of neighbours asked)")
    parser.add_argument("--index_path", default=None, help="also save the faiss index here (faiss.read_index reads it)")
    parser.add_argument("--ground_truth", default=None,
                        help="Parquet with one row per user: user id, target item id, optional excluded ids")
    parser.add_argument("--user_column", default=None,
                        help="user id column of --ground_truth (default: the user embeddings' id column name)")
    parser.add_argument("--target_column", default=None, help="target item id column of --ground_truth")
    parser.add_argument("--exclude_column", default=None,
                        help="list column of item ids never recommended to the user (e.g. seen_items)")
    parser.add_argument("--metrics_top_k", type=int, nargs="+", default=None,
                        help="metric cut-offs, each <= --top_k (default: --top_k)")
    parser.add_argument("--metrics_output", default=None,
                        help="metrics JSON path (default: <output without extension>_metrics.json)")
    parser.add_argument("--chunk_size", type=int, default=1024, help="users searched at once (default 1024)")
    parser.add_argument("--item_chunk_size", type=int, default=65536,
                        help="items scored at once by the flat search (default 65536): with --chunk_size, the "
                             "scores held at once (1024 x 65536 float32 = 256 MiB)")
    add_device_argument(parser, "cpu", "; where the flat search runs (faiss indexes run on the CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> None:
        from recframe.recipes.retrieve import RetrieveOptions, retrieve

        retrieve(RetrieveOptions(**vars(args)))

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
