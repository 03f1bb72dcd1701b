"""Make a small query -> document pair table from the MovieLens item table.

Each movie is one document: ``doc_text`` = its title + " " + its genres joined by spaces
(e.g. "Toy Story Animation Children's Comedy"), ``doc_id`` = its ``movie_id``. Queries are
the title made noisy the way a user might type it: words dropped, characters swapped with
their neighbour, deleted or inserted, and sometimes lower-cased.

Outputs (Parquet) in ``--out`` (default ``data/query_document``):

- ``docs.parquet``: ``doc_id`` int64, ``doc_text`` string, one row per movie (the corpus
  that evaluation ranks and the negative sampler draws from);
- ``train.parquet``: ``query`` string, ``doc_id`` int64, ``doc_text`` string —
  ``--train_queries`` noisy queries per movie (the item tower reads ``doc_text`` of the row);
- ``valid.parquet`` / ``test.parquet``: same columns, one held-out noisy query per movie,
  each split drawn from its own random stream (different noise seeds);
- ``edges.parquet``: ``query`` string, ``doc_id`` int64 — the distinct (query, document)
  positives of ``train.parquet``: the edge table of ``negative_sampler_v2``, which draws 4
  random documents per query and never the query's own document(s).

Deterministic: every split's noise comes from ``numpy.random.default_rng([seed, split])``.

    python examples/query_document/make_pairs.py            # from the repo root
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

LETTERS = string.ascii_lowercase
SPLITS = {"train": 0, "valid": 1, "test": 2}


def typo(word: str, rng: np.random.Generator) -> str:
    """One character edit of a word: swap two neighbours, delete one, or insert a letter."""
    kind = rng.integers(3) if len(word) >= 2 else 2
    if kind == 0:  # swap position i and i + 1
        i = int(rng.integers(len(word) - 1))
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # delete position i
        i = int(rng.integers(len(word)))
        return word[:i] + word[i + 1:]
    i = int(rng.integers(len(word) + 1))  # insert a random letter before position i
    return word[:i] + LETTERS[int(rng.integers(len(LETTERS)))] + word[i:]


def noisy_query(title: str, rng: np.random.Generator, p_drop: float, p_typo: float,
                p_lower: float) -> str:
    """A noisy copy of ``title``: never empty, and redrawn (up to 10 times) while it equals the
    title up to case, so that nearly every query has a word dropped or a typo."""
    words = title.split()
    for _ in range(10):  # redraw a query that came out identical to the title (rare)
        keep = rng.random(len(words)) >= p_drop
        if not keep.any():  # keep at least one word
            keep[int(rng.integers(len(words)))] = True
        out = []
        for w, k in zip(words, keep):
            if not k:
                continue
            if len(w) >= 3 and rng.random() < p_typo:
                w = typo(w, rng)
            out.append(w)
        query = " ".join(out)
        if rng.random() < p_lower:
            query = query.lower()
        if query.lower() != title.lower():
            break
    return query


def make_split(titles: list[str], doc_ids: np.ndarray, doc_texts: list[str], copies: int,
               rng: np.random.Generator, args) -> pa.Table:
    queries, ids, texts = [], [], []
    for _ in range(copies):
        for title, doc_id, text in zip(titles, doc_ids, doc_texts):
            queries.append(noisy_query(title, rng, args.p_drop, args.p_typo, args.p_lower))
            ids.append(doc_id)
            texts.append(text)
    return pa.table({"query": pa.array(queries, pa.string()),
                     "doc_id": pa.array(ids, pa.int64()),
                     "doc_text": pa.array(texts, pa.string())})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="data/ml-100k/items.parquet",
                        help="items table (movie_id, title, genres), from recframe prepare --movielens ml-100k")
    parser.add_argument("--out", default="data/query_document")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--train_queries", type=int, default=8, help="noisy training queries per movie")
    parser.add_argument("--p_drop", type=float, default=0.25, help="probability of dropping each word")
    parser.add_argument("--p_typo", type=float, default=0.3, help="probability of one edit per word of >= 3 chars")
    parser.add_argument("--p_lower", type=float, default=0.5, help="probability of lower-casing the query")
    args = parser.parse_args(argv)

    items = pq.read_table(args.items, columns=["movie_id", "title", "genres"]).sort_by("movie_id")
    doc_ids = items["movie_id"].to_numpy().astype(np.int64)
    titles = [t if t else "unknown" for t in items["title"].to_pylist()]
    genres = pc.binary_join(items["genres"], " ").to_pylist()
    doc_texts = [(t + " " + (g or "")).strip() for t, g in zip(titles, genres)]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"doc_id": pa.array(doc_ids, pa.int64()),
                             "doc_text": pa.array(doc_texts, pa.string())}), out / "docs.parquet")
    counts = {"docs": len(doc_ids)}
    train_queries = set()
    overlap = {}
    for split, index in SPLITS.items():
        rng = np.random.default_rng([args.seed, index])
        copies = args.train_queries if split == "train" else 1
        table = make_split(titles, doc_ids, doc_texts, copies, rng, args)
        pq.write_table(table, out / f"{split}.parquet")
        counts[split] = table.num_rows
        pairs = set(zip(pc.utf8_lower(table["query"]).to_pylist(), table["doc_id"].to_pylist()))
        if split == "train":
            train_queries = pairs
            edges = table.select(["query", "doc_id"]).group_by(["query", "doc_id"]).aggregate([])
            pq.write_table(edges.sort_by([("query", "ascending"), ("doc_id", "ascending")]), out / "edges.parquet")
            counts["edges"] = edges.num_rows
        else:  # held-out (query, doc) pairs that also occur in train (up to case)
            overlap[split] = len(pairs & train_queries)
    summary = {"rows": counts, "held_out_pairs_also_in_train": overlap,
               "duplicate_titles": len(titles) - len(set(titles)), "seed": args.seed}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    example = pq.read_table(out / "test.parquet").slice(0, 5).to_pylist()
    for row in example:
        print(f"  {row['query']!r} -> {row['doc_text']!r}")


if __name__ == "__main__":
    main()
