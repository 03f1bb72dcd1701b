"""Full-corpus retrieval: exact top-K and HitRate / Recall / NDCG / MRR against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recframe.metrics import (
    ItemIndex,
    RetrievalMetrics,
    evaluate_retrieval,
    exact_top_k,
    remove_targets_from_exclusion,
)
from recframe.metrics.retrieval import merge_top_k

U, N, D = 37, 101, 8
TOP_K = [1, 5, 10, 200]


# --------------------------------------------------------------------------------------
# brute-force reference: plain Python loops, full sort by (-score, index)
# --------------------------------------------------------------------------------------


def reference_ranking(scores: np.ndarray, exclude: set[int], k: int) -> list[int]:
    """Item indices of one user, best first, excluded removed, padded with -1 to k."""
    candidates = sorted((-float(s), j) for j, s in enumerate(scores) if j not in exclude)
    ranked = [j for _, j in candidates[:k]]
    return ranked + [-1] * (k - len(ranked))


def reference_metrics(
    scores: np.ndarray, targets: list[list[int]], exclude: list[list[int]], top_k: list[int]
) -> dict[str, float]:
    """Mean metrics over users with targets; targets are never excluded."""
    k_max = max(top_k)
    totals: dict[str, float] = {}
    count = 0
    for u in range(scores.shape[0]):
        t = set(targets[u])
        if not t:
            continue
        count += 1
        ranked = reference_ranking(scores[u], set(exclude[u]) - t, k_max)
        for k in top_k:
            hit_ranks = [r + 1 for r, j in enumerate(ranked[:k]) if j in t]
            dcg = sum(1.0 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(t), k) + 1))
            values = {
                f"hit_rate@{k}": float(len(hit_ranks) > 0),
                f"recall@{k}": len(hit_ranks) / len(t),
                f"ndcg@{k}": dcg / idcg,
            }
            for name, v in values.items():
                totals[name] = totals.get(name, 0.0) + v
        first = [r + 1 for r, j in enumerate(ranked) if j in t]
        totals["mrr"] = totals.get("mrr", 0.0) + (1.0 / first[0] if first else 0.0)
    return {name: v / count for name, v in totals.items()}


def to_jagged(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.tensor([v for lst in lists for v in lst], dtype=torch.int64)
    offsets = torch.tensor([0] + list(np.cumsum([len(lst) for lst in lists])), dtype=torch.int64)
    return values, offsets


def random_problem(seed: int, quantized: bool = True):
    """Embeddings (quantized to multiples of 1/4 so float32 scores are exact and tie
    often), 0-3 targets and 0-30 excluded items per user, some targets also excluded."""
    rng = np.random.default_rng(seed)
    if quantized:
        user = rng.integers(-4, 5, size=(U, D)) / 4.0
        item = rng.integers(-4, 5, size=(N, D)) / 4.0
    else:
        user, item = rng.normal(size=(U, D)), rng.normal(size=(N, D))
    user_t = torch.tensor(user, dtype=torch.float32)
    item_t = torch.tensor(item, dtype=torch.float32)
    targets = [sorted(rng.choice(N, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(U)]
    exclude = [rng.choice(N, size=rng.integers(0, 31), replace=False).tolist() for _ in range(U)]
    for u in range(0, U, 5):  # some targets are also in the exclusion list
        exclude[u] += targets[u][:1]
    exclude[3] = list(range(N - 3))  # fewer non-excluded items than K
    scores = (user_t.double() @ item_t.double().T).numpy()  # exact for quantized data
    return user_t, item_t, targets, exclude, scores


def assert_metrics_equal(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        tol = 1e-12 if name.startswith(("hit_rate", "recall")) else 1e-6
        assert got[name] == pytest.approx(value, abs=tol), name


# --------------------------------------------------------------------------------------
# agreement with the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_metrics_match_bruteforce(seed: int, chunk_size: int) -> None:
    user, item, targets, exclude, scores = random_problem(seed)
    got = evaluate_retrieval(user, item, to_jagged(targets), to_jagged(exclude), TOP_K, chunk_size)
    assert_metrics_equal(got, reference_metrics(scores, targets, exclude, TOP_K))
    assert set(got) == {f"{m}@{k}" for m in ("hit_rate", "recall", "ndcg") for k in TOP_K} | {"mrr"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", TOP_K)
def test_top_k_matches_bruteforce(seed: int, k: int) -> None:
    user, item, _, exclude, scores = random_problem(seed)
    got_scores, got_idx = exact_top_k(user, item, k, to_jagged(exclude), chunk_size=7)
    want = [reference_ranking(scores[u], set(exclude[u]), k) for u in range(U)]
    assert got_idx.tolist() == want
    want_scores = np.array(
        [[scores[u, j] if j >= 0 else -np.inf for j in row] for u, row in enumerate(want)]
    )
    np.testing.assert_array_equal(got_scores.double().numpy(), want_scores)


@pytest.mark.parametrize("seed", [5, 6])
def test_continuous_scores_match_reference(seed: int) -> None:
    user, item, targets, exclude, _ = random_problem(seed, quantized=False)
    scores = (user @ item.T).double().numpy()  # same float32 product as one chunk
    got = evaluate_retrieval(user, item, to_jagged(targets), to_jagged(exclude), TOP_K, 1024)
    assert_metrics_equal(got, reference_metrics(scores, targets, exclude, TOP_K))


# --------------------------------------------------------------------------------------
# hand-computed example
# --------------------------------------------------------------------------------------


def test_hand_computed_example() -> None:
    # item_emb = identity, so each user row is its score vector over 5 items.
    item = torch.eye(5)
    user = torch.tensor(
        [
            [0.1, 0.5, 0.3, 0.9, 0.2],  # excl {3} -> ranking 1, 2, 4, 0
            [0.4, 0.4, 0.8, 0.1, 0.6],  # ranking 2, 4, 0, 1, 3 (0 before 1: tie)
            [0.9, 0.0, 0.0, 0.0, 0.0],  # no target: skipped
        ]
    )
    targets = to_jagged([[2], [4, 1], []])
    exclude = to_jagged([[3], [], []])
    got = evaluate_retrieval(user, item, targets, exclude, top_k=[1, 3, 5])
    l3, l5 = 1 / math.log2(3), 1 / math.log2(5)
    want = {
        # user 0: target at rank 2. user 1: targets at ranks 2 and 4.
        "hit_rate@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0,
        "hit_rate@3": 1.0, "recall@3": (1 + 0.5) / 2, "ndcg@3": (l3 + l3 / (1 + l3)) / 2,
        "hit_rate@5": 1.0, "recall@5": 1.0, "ndcg@5": (l3 + (l3 + l5) / (1 + l3)) / 2,
        "mrr": (1 / 2 + 1 / 2) / 2,
    }  # fmt: skip
    assert_metrics_equal(got, want)
    scores, idx = exact_top_k(user, item, 5, exclude)
    assert idx.tolist() == [[1, 2, 4, 0, -1], [2, 4, 0, 1, 3], [0, 1, 2, 3, 4]]
    assert scores[0, 4] == float("-inf")


def test_mrr_is_truncated_at_largest_k() -> None:
    item = torch.eye(4)
    user = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([3])  # rank 4
    assert evaluate_retrieval(user, item, target, top_k=[3])["mrr"] == 0.0
    assert evaluate_retrieval(user, item, target, top_k=[4])["mrr"] == 0.25


# --------------------------------------------------------------------------------------
# properties of exact_top_k
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantized", [True, False])
def test_chunk_size_does_not_change_results(quantized: bool) -> None:
    user, item, targets, exclude, _ = random_problem(7, quantized)
    outs = [exact_top_k(user, item, 20, to_jagged(exclude), chunk_size=c) for c in (1, 3, 1024)]
    for scores, idx in outs[1:]:
        assert torch.equal(idx, outs[0][1])
        if quantized:
            assert torch.equal(scores, outs[0][0])
        else:
            torch.testing.assert_close(scores, outs[0][0], rtol=1e-6, atol=1e-6)
    metrics = [
        evaluate_retrieval(user, item, to_jagged(targets), to_jagged(exclude), TOP_K, c)
        for c in (1, 3, 1024)
    ]
    assert metrics[0] == metrics[1] == metrics[2]


@pytest.mark.parametrize("quantized", [True, False])
def test_item_chunks_do_not_change_results(quantized: bool) -> None:
    """Scoring the catalogue in item chunks and merging the chunks' top lists is exact, ties
    and exclusions included, and asks for more results than some chunks hold."""
    user, item, _, exclude, _ = random_problem(11, quantized)
    full_scores, full_idx = exact_top_k(user, item, 20, to_jagged(exclude), chunk_size=4)
    for item_chunk in (1, 7, 19, item.shape[0] - 1, item.shape[0] + 5):
        scores, idx = exact_top_k(user, item, 20, to_jagged(exclude), chunk_size=4, item_chunk_size=item_chunk)
        assert torch.equal(idx, full_idx), item_chunk
        torch.testing.assert_close(scores, full_scores, rtol=1e-6, atol=1e-6)
    ties = torch.ones(50, 4)
    _, idx = exact_top_k(torch.ones(2, 4), ties, 7, item_chunk_size=3)
    assert idx.tolist() == [list(range(7))] * 2


def test_merge_top_k_of_shards_pads_and_orders() -> None:
    # two shards' lists of one user: (score, global item); the merge keeps score order, ties by item
    values = [torch.tensor([[3.0, 1.0]]), torch.tensor([[3.0, 2.0, float("-inf")]])]
    indices = [torch.tensor([[5, 0]]), torch.tensor([[2, 9, -1]])]
    v, i = merge_top_k(values, indices, 6)
    assert i.tolist() == [[2, 5, 9, 0, -1, -1]]
    assert v.tolist() == [[3.0, 3.0, 2.0, 1.0, float("-inf"), float("-inf")]]


def test_ties_broken_toward_lower_index() -> None:
    # Every item has the same score: the answer is 0..k-1 whatever topk picks. (Integer
    # embeddings: with random floats, BLAS may round the same dot product differently
    # at different item positions, so the scores would not really be tied.)
    item = torch.ones(50, 4)
    user = torch.randint(-3, 4, (6, 4)).float()
    _, idx = exact_top_k(user, item, 7, chunk_size=4)
    assert idx.tolist() == [list(range(7))] * 6
    # A tie across the k boundary: items 10 and 40 tie for 3rd place behind 20 and 30.
    item = torch.zeros(50, 2)
    item[[10, 40], 0] = 1.0
    item[20, 0], item[30, 0] = 3.0, 2.0
    item[:, 1] = 1.0  # everything else scores 1 * 0 + 1 * 0 = 0 for user (1, 0)
    _, idx = exact_top_k(torch.tensor([[1.0, 0.0]]), item, 3)
    assert idx.tolist() == [[20, 30, 10]]
    _, idx = exact_top_k(torch.tensor([[1.0, 0.0]]), item, 5)
    assert idx.tolist() == [[20, 30, 10, 40, 0]]


def test_excluded_items_never_returned() -> None:
    user, item, _, exclude, _ = random_problem(8)
    scores, idx = exact_top_k(user, item, 200, to_jagged(exclude), chunk_size=5)
    for u in range(U):
        row = [j for j in idx[u].tolist() if j >= 0]
        assert not set(row) & set(exclude[u])
        assert len(row) == len(set(row)) == N - len(set(exclude[u]))
        assert torch.isinf(scores[u, len(row) :]).all()
        assert (idx[u, len(row) :] == -1).all()


def test_padding_counts_as_miss() -> None:
    # 3 items, 2 excluded, target excluded-not-possible -> only item 2 can be returned.
    item = torch.eye(3)
    user = torch.tensor([[3.0, 2.0, 1.0]])
    metrics = evaluate_retrieval(user, item, torch.tensor([2]), to_jagged([[0, 1]]), top_k=[1, 10])
    assert metrics["hit_rate@1"] == 1.0 and metrics["mrr"] == 1.0
    # A query with no hit among the padded ranks.
    m = RetrievalMetrics([5])
    m.update(torch.tensor([[-1, -1, -1, -1, -1]]), torch.tensor([0]))
    assert m.compute() == {"hit_rate@5": 0.0, "recall@5": 0.0, "ndcg@5": 0.0, "mrr": 0.0}


def test_target_in_exclusion_stays_candidate() -> None:
    item = torch.eye(4)
    user = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    got = evaluate_retrieval(user, item, torch.tensor([0]), to_jagged([[0, 1]]), top_k=[1])
    assert got["hit_rate@1"] == 1.0
    values, offsets = remove_targets_from_exclusion(
        to_jagged([[0, 1], [2, 3, 0]]), to_jagged([[0], [3, 9]]), 2
    )
    assert values.tolist() == [1, 2, 0] and offsets.tolist() == [0, 1, 3]


def test_queries_without_targets_skipped_and_duplicates_count_once() -> None:
    top = torch.tensor([[0, 1], [2, 3], [4, 5]])
    m = RetrievalMetrics([2])
    m.update(top, to_jagged([[1, 1], [], [9]]))  # duplicate target 1 counts once
    assert int(m.count) == 2
    assert m.compute()["recall@2"] == 0.5
    assert m.compute()["mrr"] == pytest.approx(0.25)


def test_streaming_and_merge_equal_one_shot() -> None:
    user, item, targets, exclude, _ = random_problem(9)
    t_values, t_offsets = to_jagged(targets)
    ex = remove_targets_from_exclusion(to_jagged(exclude), (t_values, t_offsets), U)
    _, idx = exact_top_k(user, item, 200, ex)
    one_shot = RetrievalMetrics(TOP_K)
    one_shot.update(idx, (t_values, t_offsets))
    parts = [RetrievalMetrics(TOP_K), RetrievalMetrics(TOP_K)]
    for part, (lo, hi) in zip(parts, [(0, 20), (20, U)]):
        for start in range(lo, hi, 6):
            end = min(start + 6, hi)
            rows = to_jagged(targets[start:end])
            part.update(idx[start:end], rows)
    parts[0].merge(parts[1])
    assert int(parts[0].count) == int(one_shot.count)
    for name, v in one_shot.compute().items():
        assert parts[0].compute()[name] == pytest.approx(v, abs=1e-12)
    one_shot.reset()
    with pytest.raises(ValueError, match="no query"):
        one_shot.compute()


def test_input_validation() -> None:
    user, item = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="outside"):
        exact_top_k(user, item, 2, to_jagged([[4], []]))
    with pytest.raises(ValueError, match="offsets"):
        exact_top_k(user, item, 2, (torch.tensor([0]), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="targets"):
        evaluate_retrieval(user, item, torch.tensor([0, 7]), top_k=[1])
    with pytest.raises(ValueError, match="L >= 10"):
        RetrievalMetrics([10]).update(torch.zeros(2, 5, dtype=torch.int64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=">= 0"):
        RetrievalMetrics([1]).update(torch.zeros(2, 1, dtype=torch.int64), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="finite"):
        exact_top_k(torch.full((1, 3), float("nan")), item, 1)


# --------------------------------------------------------------------------------------
# ItemIndex
# --------------------------------------------------------------------------------------


def test_item_index_lookup() -> None:
    index = ItemIndex(np.array([50, 7, 1_000_000_000_000, -3], dtype=np.int64))
    assert len(index) == 4
    got = index.lookup(np.array([[7, 8], [-3, 1_000_000_000_000], [50, 51]]))
    np.testing.assert_array_equal(got, [[1, -1], [3, 2], [0, -1]])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(ItemIndex(np.array([], dtype=np.int64)).lookup([1, 2]), [-1, -1])


def test_item_index_targets_and_exclude_policy() -> None:
    index = ItemIndex(np.array([10, 20, 30]))
    np.testing.assert_array_equal(index.lookup_targets(np.array([30, 10])), [2, 0])
    with pytest.raises(ValueError, match=r"2 of 3 target item ids .* e.g. \[40, 50\]"):
        index.lookup_targets(np.array([10, 40, 50]))
    rows, offsets = index.lookup_exclude(np.array([10, 99, 30, 98, 97, 20]), np.array([0, 3, 5, 5, 6]))
    np.testing.assert_array_equal(rows, [0, 2, 1])
    np.testing.assert_array_equal(offsets, [0, 2, 2, 2, 3])
    with pytest.raises(ValueError, match="duplicated"):
        ItemIndex(np.array([1, 2, 1]))
