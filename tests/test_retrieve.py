"""``python -m recframe.retrieve`` on synthetic embedding files: exact and faiss indexes, metrics, errors."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recframe.cli import retrieve as retrieve_cli
from recframe.recipes import retrieve
from recframe.metrics.retrieval import evaluate_retrieval, exact_top_k
from recframe.serving.index import build_index, index_recall, normalize_rows, search_index

N, U, D, CLUSTERS = 400, 60, 16, 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the test machine is small and shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    """Points near random cluster centers (an easy set for IVF / HNSW)."""
    return (centers[rng.integers(len(centers), size=n)] + 0.3 * rng.standard_normal((n, D))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Item ids (shuffled, not row numbers), user ids, embeddings (clustered)."""
    rng = np.random.default_rng(0)
    centers = 2.0 * rng.standard_normal((CLUSTERS, D))
    return {
        "item_ids": (1000 + rng.permutation(N)).astype(np.int64),
        "item_emb": clustered(rng, N, centers),
        "user_ids": (7 * rng.permutation(U) + 3).astype(np.int64),
        "user_emb": clustered(rng, U, centers),
    }


def write_embeddings(path, ids, emb, id_name) -> str:
    pq.write_table(pa.table({id_name: pa.array(ids),
                             "embedding": pa.array(list(emb), type=pa.list_(pa.float32()))}), path)
    return str(path)


@pytest.fixture
def files(tmp_path, data):
    return {
        "items": write_embeddings(tmp_path / "item_emb.parquet", data["item_ids"], data["item_emb"], "movie_id"),
        "users": write_embeddings(tmp_path / "user_emb.parquet", data["user_ids"], data["user_emb"], "user_id"),
        "output": str(tmp_path / "topk.parquet"),
    }


def run(files, *extra) -> int:
    return retrieve_cli.main(["--item_embeddings", files["items"], "--user_embeddings", files["users"],
                          "--output", files["output"], *map(str, extra)])


def read_output(path) -> tuple[np.ndarray, list[list[int]], list[list[float]]]:
    table = pq.read_table(path)
    return table.column(0).to_numpy(), table.column("item_ids").to_pylist(), table.column("scores").to_pylist()


@pytest.fixture(scope="module")
def ground_truth(data):
    """A subset of users in another order: target id, seen ids (some unknown, one holding the target, one null)."""
    rng = np.random.default_rng(1)
    order = rng.permutation(U)[: U - 10]
    targets = rng.integers(N, size=len(order))
    seen = [list(rng.choice(N, size=int(rng.integers(0, 40)), replace=False)) for _ in order]
    seen_ids = [[int(data["item_ids"][j]) for j in s] for s in seen]
    seen_ids[0] = seen_ids[0] + [int(data["item_ids"][targets[0]])]  # target also "seen": stays a candidate
    seen_ids[1] = seen_ids[1] + [99_999]  # unknown id: dropped
    seen_ids[2] = None
    table = pa.table({"user_id": pa.array(data["user_ids"][order]),
                      "movie_id": pa.array(data["item_ids"][targets]),
                      "seen_items": pa.array(seen_ids, type=pa.list_(pa.int64()))})
    return {"table": table, "order": order, "targets": targets, "seen": seen}


def write_ground_truth(tmp_path, ground_truth) -> list[str]:
    path = tmp_path / "test.parquet"
    pq.write_table(ground_truth["table"], path)
    return ["--ground_truth", str(path), "--target_column", "movie_id", "--exclude_column", "seen_items"]


def reference_metrics(data, ground_truth, top_k, user_emb=None, item_emb=None) -> dict[str, float]:
    """evaluate_retrieval on the same embeddings, exclusion as row lists (targets removed inside)."""
    order, seen = ground_truth["order"], [list(s) for s in ground_truth["seen"]]
    seen[2] = []
    values = torch.tensor([j for s in seen for j in s], dtype=torch.int64)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(s) for s in seen])]), dtype=torch.int64)
    user_emb = data["user_emb"] if user_emb is None else user_emb
    item_emb = data["item_emb"] if item_emb is None else item_emb
    return evaluate_retrieval(torch.from_numpy(user_emb[order]), torch.from_numpy(item_emb),
                              torch.from_numpy(ground_truth["targets"]), (values, offsets), top_k)


# --------------------------------------------------------------------------------------
# exact (flat)
# --------------------------------------------------------------------------------------


def test_flat_top_k_equals_exact_top_k(files, data):
    assert run(files, "--top_k", 10) == 0
    users, item_ids, scores = read_output(files["output"])
    np.testing.assert_array_equal(users, data["user_ids"])
    exact_scores, exact_rows = exact_top_k(torch.from_numpy(data["user_emb"]), torch.from_numpy(data["item_emb"]), 10)
    assert item_ids == data["item_ids"][exact_rows.numpy()].tolist()
    np.testing.assert_array_equal(np.array(scores, dtype=np.float32), exact_scores.numpy())
    assert pq.read_table(files["output"]).schema.field("scores").type == pa.list_(pa.float32())
    record = json.loads(open(files["output"].replace(".parquet", "_metrics.json")).read())
    assert record["index"] == "flat" and record["index_recall@10"] == 1.0 and record["num_items"] == N
    # atomic writes leave no temporary file behind
    assert sorted(os.listdir(os.path.dirname(files["output"]))) == [
        "item_emb.parquet", "topk.parquet", "topk_metrics.json", "user_emb.parquet"]


def test_flat_metrics_equal_evaluate_retrieval(files, data, ground_truth, tmp_path, capsys):
    args = write_ground_truth(tmp_path, ground_truth)
    assert run(files, "--top_k", 20, "--metrics_top_k", 1, 5, 20, *args) == 0
    record = json.loads(open(files["output"].replace(".parquet", "_metrics.json")).read())
    expected = reference_metrics(data, ground_truth, [1, 5, 20])
    assert {k: record[k] for k in expected} == expected  # exactly
    assert record["num_queries"] == U - 10
    assert 0 < record["hit_rate@20"] < 1  # not a degenerate case
    out = capsys.readouterr().out
    assert "hit_rate" in out and "ndcg" in out and "mrr" in out
    # excluded items (except the target) never appear; users without ground truth exclude nothing
    users, item_ids, _ = read_output(files["output"])
    row_of = {int(u): i for i, u in enumerate(users)}
    for g, u in enumerate(ground_truth["table"].column("user_id").to_pylist()):
        seen = set(ground_truth["table"].column("seen_items")[g].as_py() or [])
        seen.discard(ground_truth["table"].column("movie_id")[g].as_py())
        assert not seen & set(item_ids[row_of[u]])


def test_cosine_normalises_both_sides(files, data, tmp_path):
    rng = np.random.default_rng(2)
    scaled = {  # rescaling rows changes inner products but not cosines
        "items": write_embeddings(tmp_path / "items_scaled.parquet", data["item_ids"],
                                  data["item_emb"] * rng.uniform(0.1, 10, (N, 1)).astype(np.float32), "movie_id"),
        "users": write_embeddings(tmp_path / "users_scaled.parquet", data["user_ids"],
                                  data["user_emb"] * rng.uniform(0.1, 10, (U, 1)).astype(np.float32), "user_id"),
        "output": str(tmp_path / "scaled.parquet"),
    }
    assert run(scaled, "--metric", "cosine", "--top_k", 5) == 0
    _, item_ids, scores = read_output(scaled["output"])
    _, rows = exact_top_k(torch.from_numpy(normalize_rows(data["user_emb"])),
                          torch.from_numpy(normalize_rows(data["item_emb"])), 5)
    assert item_ids == data["item_ids"][rows.numpy()].tolist()
    assert np.all(np.array(scores) <= 1.0 + 1e-6)
    assert run(scaled, "--metric", "ip", "--top_k", 5) == 0
    assert read_output(scaled["output"])[1] != item_ids  # inner product ranks differently

    # --export_dir: an unnormalised COSINE tower means cosine
    export = tmp_path / "export"
    for side in ("user", "item"):
        (export / side).mkdir(parents=True)
        (export / side / "tower.json").write_text(json.dumps({"similarity": "COSINE", "normalized": False}))
    assert run(scaled, "--export_dir", export, "--top_k", 5) == 0
    assert read_output(scaled["output"])[1] == item_ids
    assert json.loads(open(str(tmp_path / "scaled_metrics.json")).read())["metric"] == "cosine"
    assert retrieve.resolve_metric(None, None) == "ip"


def test_export_dir_metric_resolution(tmp_path, capsys):
    def export(similarity, normalized):
        d = tmp_path / f"{similarity}_{normalized}"
        for side in ("user", "item"):
            (d / side).mkdir(parents=True, exist_ok=True)
            (d / side / "tower.json").write_text(json.dumps({"similarity": similarity, "normalized": normalized}))
        return str(d)

    assert retrieve.resolve_metric(None, export("COSINE", True)) == "ip"  # already unit vectors
    assert retrieve.resolve_metric("cosine", export("COSINE", True)) == "ip"
    assert retrieve.resolve_metric(None, export("COSINE", False)) == "cosine"
    assert retrieve.resolve_metric(None, export("INNER_PRODUCT", False)) == "ip"
    with pytest.raises(retrieve.RetrieveError, match="contradicts"):
        retrieve.resolve_metric("cosine", export("INNER_PRODUCT", True))
    with pytest.raises(retrieve.RetrieveError, match="contradicts"):
        retrieve.resolve_metric("ip", str(tmp_path / "COSINE_False"))


# --------------------------------------------------------------------------------------
# faiss indexes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("index_args", [("--index", "ivf", "--nlist", 8, "--nprobe", 3),
                                        ("--index", "hnsw", "--hnsw_m", 16, "--ef_search", 64)],
                         ids=["ivf", "hnsw"])
def test_approximate_index_reports_index_recall(files, data, ground_truth, tmp_path, index_args):
    faiss = pytest.importorskip("faiss")
    args = write_ground_truth(tmp_path, ground_truth)
    index_path = tmp_path / "items.faiss"
    assert run(files, "--top_k", 10, *index_args, *args, "--index_path", index_path) == 0
    record = json.loads(open(files["output"].replace(".parquet", "_metrics.json")).read())
    assert 0.9 <= record["index_recall@10"] <= 1.0
    assert {"hit_rate@10", "recall@10", "ndcg@10", "mrr"} <= set(record)
    exact = reference_metrics(data, ground_truth, [10])
    assert abs(record["hit_rate@10"] - exact["hit_rate@10"]) <= 0.1
    index = faiss.read_index(str(index_path))
    assert index.ntotal == N and index.metric_type == faiss.METRIC_INNER_PRODUCT
    # excluded items are filtered out of the approximate results too
    users, item_ids, scores = read_output(files["output"])
    row_of = {int(u): i for i, u in enumerate(users)}
    for g, u in enumerate(ground_truth["table"].column("user_id").to_pylist()):
        seen = set(ground_truth["table"].column("seen_items")[g].as_py() or [])
        seen.discard(ground_truth["table"].column("movie_id")[g].as_py())
        assert not seen & set(item_ids[row_of[u]]) and len(item_ids[row_of[u]]) == 10
    assert all(s == sorted(s, reverse=True) for s in scores)


def test_index_recall_drops_when_the_index_is_starved(files, tmp_path):
    pytest.importorskip("faiss")
    assert run(files, "--top_k", 10, "--index", "ivf", "--nlist", 16, "--nprobe", 1) == 0
    record = json.loads(open(files["output"].replace(".parquet", "_metrics.json")).read())
    assert 0 < record["index_recall@10"] < 1


def test_search_index_with_exclusion_matches_exact_search(data):
    """The k + excluded search-then-filter on a faiss Flat index equals exact_top_k with exclusion."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    excl = [rng.choice(N, size=int(rng.integers(0, 60)), replace=False) for _ in range(U)]
    values = np.concatenate(excl).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in excl])]).astype(np.int64)
    index = build_index(data["item_emb"], "flat")
    scores, rows = search_index(index, data["user_emb"], 15, (values, offsets), chunk_size=7)
    exact_scores, exact_rows = exact_top_k(torch.from_numpy(data["user_emb"]), torch.from_numpy(data["item_emb"]), 15,
                                           (torch.from_numpy(values), torch.from_numpy(offsets)))
    np.testing.assert_array_equal(rows, exact_rows.numpy())
    np.testing.assert_allclose(scores, exact_scores.numpy(), rtol=1e-5, atol=1e-5)
    # k larger than the non-excluded items: unfilled ranks are -1 / -inf
    few = build_index(data["item_emb"][:5], "flat")
    scores, rows = search_index(few, data["user_emb"][:2], 4, (np.array([0, 1, 3]), np.array([0, 2, 3])))
    assert (rows[0, 3] == -1 and scores[0, 3] == -np.inf and set(rows[0, :3]) == {2, 3, 4}
            and set(rows[1]) == {0, 1, 2, 4})


def test_index_recall_values():
    approx = np.array([[1, 2, 3], [4, 5, -1], [7, 8, 9]])
    exact = np.array([[1, 2, 9], [4, 5, 6], [-1, -1, -1]])  # third user: nothing to find, skipped
    assert index_recall(approx, exact) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert index_recall(exact, exact) == 1.0


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_missing_columns(files, ground_truth, tmp_path, capsys):
    assert run(files, "--item_id_column", "item_id") == 2
    err = error_of(capsys)
    assert "--item_embeddings" in err and "no id column 'item_id'" in err
    no_emb = tmp_path / "no_emb.parquet"
    pq.write_table(pa.table({"user_id": [1, 2]}), no_emb)
    assert run({**files, "users": str(no_emb)}) == 2
    assert "no 'embedding' column" in error_of(capsys)
    args = write_ground_truth(tmp_path, ground_truth)
    args[args.index("--target_column") + 1] = "item_id"
    assert run(files, *args) == 2
    assert "no column 'item_id' (--target_column" in error_of(capsys)
    assert not os.path.exists(files["output"])  # nothing written on error


def test_mismatched_dimensions(files, data, tmp_path, capsys):
    small = write_embeddings(tmp_path / "small.parquet", data["user_ids"], data["user_emb"][:, :8], "user_id")
    assert run({**files, "users": small}) == 2
    assert "embedding sizes differ" in error_of(capsys)
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"id": [1, 2], "embedding": pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))}),
                   ragged)
    assert run({**files, "items": str(ragged)}) == 2
    assert "same length" in error_of(capsys)
    dup = write_embeddings(tmp_path / "dup.parquet", [1, 1], data["item_emb"][:2], "movie_id")
    assert run({**files, "items": dup}) == 2
    assert "1 duplicated ids in column 'movie_id', e.g. [1]" in error_of(capsys)


def test_unknown_target_and_missing_user(files, data, ground_truth, tmp_path, capsys):
    table = ground_truth["table"]
    bad = table.set_column(1, "movie_id", pa.array([5] * len(table), pa.int64()))
    pq.write_table(bad, tmp_path / "bad.parquet")
    assert run(files, "--ground_truth", tmp_path / "bad.parquet", "--target_column", "movie_id") == 2
    assert "not in the item catalogue" in error_of(capsys)
    bad = table.set_column(0, "user_id", pa.array([-1] * len(table), pa.int64()))
    pq.write_table(bad.slice(0, 1), tmp_path / "bad.parquet")
    assert run(files, "--ground_truth", tmp_path / "bad.parquet", "--target_column", "movie_id") == 2
    assert "have no embedding" in error_of(capsys)


def test_missing_faiss_names_the_extra(files, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert run(files, "--index", "hnsw") == 2
    assert "pip install 'recframe[faiss]'" in error_of(capsys)
    assert run(files, "--index_path", os.path.join(os.path.dirname(files["output"]), "x.faiss")) == 2
    assert "recframe[faiss]" in error_of(capsys)
    assert run(files) == 0  # the exact flat search needs no faiss
