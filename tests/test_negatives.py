"""The sampled-negatives path end to end (issue #4), against hand computations.

Unit part: a tiny model whose towers are bare embedding tables set by hand (so a user's and an
item's embeddings are known rows), real samplers over a hand-made item pool, and hand-made
batches parsed by :class:`BatchParser`; every expected logit, log q and loss is computed with
``math`` from the item ids, the training counts and the pool weights, never from the code under
test. Pipeline part: the synthetic dataset trained through ``recframe.train.main`` with each
sampler, determinism and a mid-epoch resume, and the user errors.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import build
from recframe.cli import train
from recframe.features import BatchParser, item_keys
from recframe.negatives import MASKED_LOGIT, BatchNegatives, ItemFrequency
from recframe.negatives.edge_samplers import HardNegativeSampler, NegativeSamplerV2
from recframe.negatives.samplers import NegativeSampler, SampledItems, WholePoolSampler
from recframe.features.columns import FeatureInputError
from recframe.protos import sampler_pb2

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

# ------------------------------------------------------------------------------------------
# Hand-made world: 8 users, 10 items (ids 0..9), embeddings set by hand
# ------------------------------------------------------------------------------------------

T = 0.5  # temperature
NUM_ITEMS = 10
WEIGHTS = [float(i + 1) for i in range(NUM_ITEMS)]  # pool weight_field: q_s(i) = (i + 1) / 55
COUNTS = {0: 20, 1: 10, 2: 5, 3: 3, 4: 2, 5: 1, 6: 1}  # training counts; 7, 8, 9 unseen (count 1)
TOTAL = sum(COUNTS.values())  # 42


def U(u: int) -> list[float]:
    return [0.3 * u - 0.5, 0.2 + 0.1 * u, 0.4 * (-1) ** u]


def E(i: int) -> list[float]:
    return [0.1 * i - 0.3, 0.5 - 0.05 * i, 0.2 * ((i % 3) - 1)]


def sim(u: int, i: int) -> float:
    return sum(a * b for a, b in zip(U(u), E(i))) / T


def q_freq(i: int) -> float:
    return COUNTS.get(i, 1) / TOTAL


def q_pool(i: int, weights=WEIGHTS) -> float:
    return weights[i] / sum(weights)


MODEL = """
data_config { item_id_field: "item_id" }
feature_configs { id_feature { feature_name: "user_id" num_buckets: 8 embedding_dim: 3 } }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 10 embedding_dim: 3 } }
model_config {
  feature_groups { group_name: "user" feature_names: "user_id" }
  feature_groups { group_name: "item" feature_names: "item_id" }
  dssm { user_tower { input: "user" } item_tower { input: "item" } temperature: 0.5
         in_batch_negative: IN_BATCH logq_correction: LOGQ }
  LOSSES
}
"""


def hand_model(in_batch: bool = True, logq: bool = True, losses: str = "losses { softmax_cross_entropy {} }"):
    """(features, model) with the user / item tables set to U / E (towers are the bare tables)."""
    text = (MODEL.replace("IN_BATCH", str(in_batch).lower()).replace("LOGQ", str(logq).lower())
            .replace("LOSSES", losses))
    _, feats, model = build(text)
    with torch.no_grad():
        model.user_tower.embedding_group.tables["user_id"].weight.copy_(torch.tensor([U(u) for u in range(8)]))
        model.item_tower.embedding_group.tables["item_id"].weight.copy_(torch.tensor([E(i) for i in range(NUM_ITEMS)]))
    model.eval()
    return feats, model


def frequency() -> ItemFrequency:
    ids = [i for i, c in COUNTS.items() for _ in range(c)]
    return ItemFrequency.from_item_ids(np.array(ids, dtype=np.int64))


@pytest.fixture
def pool_path(tmp_path):
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"item_id": pa.array(range(NUM_ITEMS), pa.int64()),
                             "weight": pa.array(WEIGHTS, pa.float64())}), path)
    return str(path)


def write_edges(tmp_path, name: str, pairs) -> str:
    users, items = zip(*pairs)
    path = tmp_path / name
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64())}), path)
    return str(path)


def sampler(cls, **fields):
    cls_ = {"NegativeSampler": NegativeSampler, "NegativeSamplerV2": NegativeSamplerV2,
            "HardNegativeSampler": HardNegativeSampler, "WholePoolSampler": WholePoolSampler}[cls]
    return cls_(getattr(sampler_pb2, cls)(**fields), item_id_field="item_id", item_columns=["item_id"])


class FixedSampler:
    """A real pool sampler whose draws are chosen by the test (for hand-placed accidental hits).

    ``rows``: one list of per-row item ids per batch row; ``invalid``: (row, slot) fallback slots.
    """

    def __init__(self, real, shared=(), rows=(), invalid=(), row_probability=None):
        self.real, self.config = real, real.config
        self.shared, self.rows, self.invalid = list(shared), [list(r) for r in rows], set(invalid)
        self.row_probability = row_probability

    def probability(self, keys):
        return self.real.probability(keys)

    def sample(self, batch, rng):
        table = self.real.pool_table
        shared = np.array(self.shared, dtype=np.int64)
        owner = np.array([r for r, items in enumerate(self.rows) for _ in items], dtype=np.int64)
        items = np.array([i for row in self.rows for i in row], dtype=np.int64)
        valid = np.array([(r, s) not in self.invalid for r, row in enumerate(self.rows) for s in range(len(row))], bool)
        prob = np.full(items.size, np.nan) if self.row_probability is None else self.probability(items) * 2.0
        return SampledItems(table.take(self.real.pool_rows(shared)[0]), shared, self.real.probability(shared),
                            table.take(self.real.pool_rows(items)[0]), owner, items, prob, valid)


def parse(table: dict, sampler_=None, *, in_batch: bool = True, logq: bool = True, seed: int = 0,
          feats=None, sample_weight=None, in_batch_ranks: int = 1, exclude=None):
    """Batch of the hand table with the model's features; item_frequency only for in-batch logQ;
    ``exclude``: per row, the item ids that are never its negatives (column "seen")."""
    feats = feats if feats is not None else hand_model()[0]
    columns = {"user_id": pa.array(table["user_id"], pa.int64()), "item_id": pa.array(table["item_id"], pa.int64())}
    if sample_weight is not None:
        columns["w"] = pa.array(sample_weight, pa.float64())
    if exclude is not None:
        columns["seen"] = pa.array(exclude, pa.list_(pa.int64()))
    negatives = BatchNegatives(
        sampler_, item_frequency=frequency() if (logq and in_batch) else None, in_batch_negative=in_batch,
        logq=logq, in_batch_ranks=in_batch_ranks, exclude_field="seen" if exclude is not None else None)
    parser = BatchParser(
        list(feats.values()), item_id_field="item_id", sample_weight_field="w" if sample_weight else None,
        item_features=[feats["item_id"]], negatives=negatives,
    )
    return parser(pa.table(columns), "hand", rng=np.random.default_rng(seed))


def logits_of(model, batch, **kwargs) -> list[list[float]]:
    with torch.no_grad():
        return model.score(model(batch), batch).candidates.logits(**kwargs).tolist()


def assert_logits(actual, expected):
    """``expected`` rows: floats, or None for a masked entry."""
    assert len(actual) == len(expected)
    for i, (row, want) in enumerate(zip(actual, expected)):
        assert len(row) == len(want), (i, row, want)
        for j, (a, w) in enumerate(zip(row, want)):
            if w is None:
                assert a == MASKED_LOGIT, (i, j, a)
            else:
                assert a == pytest.approx(w, rel=1e-5, abs=1e-5), (i, j, a, w)


USERS, ITEMS = [0, 1, 2], [0, 3, 9]  # popular, middling and rare (unseen in training) positives

# ------------------------------------------------------------------------------------------
# 1. logQ-corrected logits
# ------------------------------------------------------------------------------------------


def test_in_batch_only_logits_are_similarity_minus_log_frequency():
    feats, model = hand_model(in_batch=True, logq=True)
    batch = parse({"user_id": USERS, "item_id": ITEMS}, feats=feats)
    assert batch.item_key.tolist() == ITEMS and batch.num_shared == 0
    assert batch.item_log_q.tolist() == pytest.approx([math.log(q_freq(i)) for i in ITEMS], rel=1e-6)
    expected = [[sim(u, j) - math.log(q_freq(j)) for j in ITEMS] for u in USERS]
    assert_logits(logits_of(model, batch), expected)
    # The rare item gets the larger boost: -log q, log(42) for item 9 vs log(42/20) for item 0.
    raw = logits_of(model, batch, logq_correction=False)
    corrected = logits_of(model, batch)
    for u in range(3):
        boost = [c - r for c, r in zip(corrected[u], raw[u])]
        assert boost[2] == pytest.approx(math.log(42), rel=1e-5)
        assert boost[0] == pytest.approx(math.log(42 / 20), rel=1e-5)
        assert boost[2] > boost[1] > boost[0] > 0


def test_sampled_only_logits_use_the_pool_probability(pool_path):
    """in_batch_negative false: [own positive | shared]; q = q_sampler (no in-batch part)."""
    feats, model = hand_model(in_batch=False, logq=True)
    fixed = FixedSampler(sampler("NegativeSampler", input_path=pool_path, num_sample=2, weight_field="weight"),
                         shared=[5, 7])
    batch = parse({"user_id": USERS, "item_id": ITEMS}, fixed, in_batch=False, feats=feats)
    assert batch.item_key.tolist() == ITEMS + [5, 7] and batch.num_shared == 2
    assert batch.item_log_q.tolist() == pytest.approx([math.log(q_pool(i)) for i in ITEMS + [5, 7]], rel=1e-6)
    expected = [[sim(u, p) - math.log(q_pool(p))] + [sim(u, s) - math.log(q_pool(s)) for s in (5, 7)]
                for u, p in zip(USERS, ITEMS)]
    assert_logits(logits_of(model, batch), expected)
    # rare shared item 5 (q 6/55) is boosted more than popular 7 (q 8/55), and the sign is positive
    raw = logits_of(model, batch, logq_correction=False)
    boost = [c - r for c, r in zip(logits_of(model, batch)[0], raw[0])]
    assert boost[1:] == pytest.approx([math.log(55 / 6), math.log(55 / 8)], rel=1e-5)
    assert boost[1] > boost[2] > 0


def test_whole_pool_without_in_batch_negatives_is_the_exact_softmax_over_the_catalogue(pool_path):
    """[own positive | every pool item]: the positive's repeat in the pool is masked, every log q
    is log(1/10), so the loss is -log softmax over the 10 items (the pool's weight column is
    not read: the whole pool is taken, not drawn)."""
    feats, model = hand_model(in_batch=False, logq=True)
    whole = sampler("WholePoolSampler", input_path=pool_path)
    assert whole.num_sample == NUM_ITEMS
    batch = parse({"user_id": USERS, "item_id": ITEMS}, whole, in_batch=False, feats=feats)
    assert batch.item_key.tolist() == ITEMS + list(range(NUM_ITEMS)) and batch.num_shared == NUM_ITEMS
    assert batch.item_log_q.tolist() == pytest.approx([math.log(1 / NUM_ITEMS)] * (3 + NUM_ITEMS), rel=1e-6)
    expected = [[sim(u, p) + math.log(NUM_ITEMS)] + [None if c == p else sim(u, c) + math.log(NUM_ITEMS)
                                                    for c in range(NUM_ITEMS)] for u, p in zip(USERS, ITEMS)]
    assert_logits(logits_of(model, batch), expected)
    with torch.no_grad():
        loss = model.compute_loss(model(batch), batch)["softmax_cross_entropy"].item()
    exact = [-(sim(u, p) - math.log(sum(math.exp(sim(u, c)) for c in range(NUM_ITEMS))))
             for u, p in zip(USERS, ITEMS)]
    assert loss == pytest.approx(sum(exact) / 3, rel=1e-5)


def test_mixed_in_batch_and_shared_use_the_mixture_probability(pool_path):
    """q(x) = (B q_freq(x) + S q_sampler(x)) / (B + S) for every column, real sampler draws."""
    feats, model = hand_model(in_batch=True, logq=True)
    real = sampler("NegativeSampler", input_path=pool_path, num_sample=4, weight_field="weight")
    batch = parse({"user_id": USERS, "item_id": ITEMS}, real, seed=3, feats=feats)
    keys = batch.item_key.tolist()
    drawn = keys[3:]
    assert keys[:3] == ITEMS and len(drawn) == 4 and batch.num_shared == 4
    assert drawn == real.pool_keys[real.alias.draw(4, np.random.default_rng(3))].tolist()  # the seeded draw

    def mixture(x):
        return (3 * q_freq(x) + 4 * q_pool(x)) / 7

    assert batch.item_log_q.tolist() == pytest.approx([math.log(mixture(x)) for x in keys], rel=1e-5)
    assert math.log(mixture(9)) == pytest.approx(math.log((3 / 42 + 4 * 10 / 55) / 7))  # spelled out once
    expected = [[None if (j != i and c == p) else sim(u, c) - math.log(mixture(c)) for j, c in enumerate(keys)]
                for i, (u, p) in enumerate(zip(USERS, ITEMS))]
    assert_logits(logits_of(model, batch), expected)


def test_global_in_batch_negatives_weigh_the_in_batch_source_by_the_world_size(pool_path):
    """With global negatives over 2 ranks the in-batch pool has 2B rows: q = (2B q_freq + S q_s) / (2B + S)."""
    feats, _ = hand_model(in_batch=True, logq=True)
    real = sampler("NegativeSampler", input_path=pool_path, num_sample=4, weight_field="weight")
    batch = parse({"user_id": USERS, "item_id": ITEMS}, real, seed=3, feats=feats, in_batch_ranks=2)
    expected = [math.log((6 * q_freq(x) + 4 * q_pool(x)) / 10) for x in batch.item_key.tolist()]
    assert batch.item_log_q.tolist() == pytest.approx(expected, rel=1e-5)


def test_positive_outside_the_pool_gets_the_rarest_candidate_probability(tmp_path):
    """A positive the sampler cannot produce (q = 0 with in_batch false) is floored, not log(0)."""
    path = tmp_path / "small_pool.parquet"
    pq.write_table(pa.table({"item_id": pa.array([5, 7], pa.int64()), "weight": [1.0, 3.0]}), path)
    feats, model = hand_model(in_batch=False, logq=True)
    fixed = FixedSampler(sampler("NegativeSampler", input_path=str(path), num_sample=2, weight_field="weight"),
                         shared=[7, 7])
    batch = parse({"user_id": [0, 1], "item_id": [5, 3]}, fixed, in_batch=False, feats=feats)
    # q: item 5 -> 1/4, item 3 (not in the pool) -> floor = min positive q of the batch = 1/4, item 7 -> 3/4
    assert batch.item_log_q.tolist() == pytest.approx([math.log(0.25), math.log(0.25), math.log(0.75), math.log(0.75)])
    assert all(math.isfinite(v) for row in logits_of(model, batch) for v in row)


# ------------------------------------------------------------------------------------------
# 2. Accidental-hit masking of every source, and the loss over the unmasked candidates
# ------------------------------------------------------------------------------------------

# rows (user, positive): (0, 0), (1, 3), (2, 3): rows 1 and 2 share their positive.
HIT_USERS, HIT_ITEMS = [0, 1, 2], [0, 3, 3]
HIT_SHARED = [0, 5]  # item 0 is row 0's positive
HIT_ROWS = [[0, 6], [0, 8], []]  # row 0: its own positive + 6; row 1: item 0 (row 0's, not its own) + 8 (invalid)
HIT_INVALID = {(1, 1)}


def hit_batch(feats, in_batch: bool, logq: bool = False, sample_weight=None, pool_path="", exclude=None):
    fixed = FixedSampler(sampler("NegativeSampler", input_path=pool_path, num_sample=2, weight_field="weight"),
                         shared=HIT_SHARED, rows=HIT_ROWS, invalid=HIT_INVALID)
    return parse({"user_id": HIT_USERS, "item_id": HIT_ITEMS}, fixed, in_batch=in_batch, logq=logq, feats=feats,
                 sample_weight=sample_weight, exclude=exclude)


def hit_expected(in_batch: bool) -> list[list[float | None]]:
    """Raw (no logQ) logits with the masks placed by hand."""
    s = sim
    if in_batch:  # [in-batch 0, 3, 3 | shared 0, 5 | per-row padded to 2]
        return [
            [s(0, 0), s(0, 3), s(0, 3), None, s(0, 5), None, s(0, 6)],  # shared 0 and per-row 0 are hits
            [s(1, 0), s(1, 3), None, s(1, 0), s(1, 5), s(1, 0), None],  # in-batch dup; slot 8 invalid
            [s(2, 0), None, s(2, 3), s(2, 0), s(2, 5), None, None],  # in-batch dup; no per-row: padding
        ]
    return [  # [own positive | shared 0, 5 | per-row padded to 2]
        [s(0, 0), None, s(0, 5), None, s(0, 6)],
        [s(1, 3), s(1, 0), s(1, 5), s(1, 0), None],
        [s(2, 3), s(2, 0), s(2, 5), None, None],
    ]


@pytest.mark.parametrize("in_batch", [True, False])
def test_accidental_hits_of_every_source_are_masked_for_their_row_only(pool_path, in_batch):
    feats, model = hand_model(in_batch=in_batch, logq=False)
    batch = hit_batch(feats, in_batch, pool_path=pool_path)
    assert batch.item_key.tolist() == HIT_ITEMS + HIT_SHARED + [0, 6, 0, 8]
    assert batch.row_negative_row.tolist() == [0, 0, 1, 1]
    assert batch.row_negative_valid.tolist() == [True, True, True, False]
    logits = logits_of(model, batch)
    expected = hit_expected(in_batch)
    assert_logits(logits, expected)
    positive = model.score(model(batch), batch).candidates.positive_column.tolist()
    assert positive == ([0, 1, 2] if in_batch else [0, 0, 0])
    assert all(logits[i][positive[i]] != MASKED_LOGIT for i in range(3))  # never masked
    assert_softmax_loss_over_unmasked(model, batch, expected, positive)


def assert_softmax_loss_over_unmasked(model, batch, expected, positive):
    """The model's softmax loss = mean over rows of -z_pos + log sum of exp(z) over the
    row's unmasked candidates (``expected``: floats, None where masked)."""
    def row_loss(i):
        row = [z for z in expected[i] if z is not None]
        return -expected[i][positive[i]] + math.log(sum(math.exp(z) for z in row))

    with torch.no_grad():
        loss = model.compute_loss(model(batch), batch)["softmax_cross_entropy"].item()
    assert loss == pytest.approx(sum(row_loss(i) for i in range(len(expected))) / len(expected), rel=1e-5)


# Items never the row's negatives (data_config.exclude_negatives_field): row 0 excludes the
# shared 5, its per-row 6 and an item that is no candidate (42); row 1 its own positive 3 (kept)
# and item 0 (row 0's positive: in-batch, shared and per-row); row 2 nothing.
HIT_EXCLUDE = [[5, 6, 42], [3, 0], []]


def hit_expected_with_exclusions(in_batch: bool) -> list[list[float | None]]:
    s = sim
    if in_batch:  # [in-batch 0, 3, 3 | shared 0, 5 | per-row padded to 2]
        return [
            [s(0, 0), s(0, 3), s(0, 3), None, None, None, None],
            [None, s(1, 3), None, None, s(1, 5), None, None],
            [s(2, 0), None, s(2, 3), s(2, 0), s(2, 5), None, None],
        ]
    return [  # [own positive | shared 0, 5 | per-row padded to 2]
        [s(0, 0), None, None, None, None],
        [s(1, 3), None, s(1, 5), None, None],
        [s(2, 3), s(2, 0), s(2, 5), None, None],
    ]


@pytest.mark.parametrize("in_batch", [True, False])
def test_excluded_items_are_masked_from_their_row_negatives_never_the_positive(pool_path, in_batch):
    feats, model = hand_model(in_batch=in_batch, logq=False)
    batch = hit_batch(feats, in_batch, pool_path=pool_path, exclude=HIT_EXCLUDE)
    assert batch.excluded_negatives.values.tolist() == [5, 6, 42, 3, 0]
    assert batch.excluded_negatives.offsets.tolist() == [0, 3, 5, 5]
    logits = logits_of(model, batch)
    expected = hit_expected_with_exclusions(in_batch)
    assert_logits(logits, expected)
    assert_softmax_loss_over_unmasked(model, batch, expected, model.score(model(batch), batch).candidates.positive_column.tolist())
    # without the exclusions the same batch keeps them as negatives (the plain accidental-hit masks)
    assert_logits(logits_of(model, hit_batch(feats, in_batch, pool_path=pool_path)), hit_expected(in_batch))


def test_excluded_items_column_errors_name_the_column():
    feats = hand_model()[0]
    parser = BatchParser(list(feats.values()), item_id_field="item_id", negatives=BatchNegatives(exclude_field="seen"))
    table = pa.table({"user_id": pa.array([0], pa.int64()), "item_id": pa.array([1], pa.int64())})
    with pytest.raises(FeatureInputError, match=r"hand: missing column\(s\) \['seen'\]"):
        parser(table, "hand")
    with pytest.raises(FeatureInputError, match="hand: column 'seen' must be a list of item ids, got int64"):
        parser(table.append_column("seen", pa.array([3], pa.int64())), "hand")
    # string ids get the same keys as the item id column's
    strings = pa.table({"item_id": ["a", "b"], "seen": [["b", "c"], None]})
    batch = BatchParser([], item_id_field="item_id", negatives=BatchNegatives(exclude_field="seen"))(strings, "hand")
    assert batch.excluded_negatives.values.tolist() == [batch.item_key[1].item(), item_keys(pa.array(["c"]))[0]]
    assert batch.excluded_negatives.offsets.tolist() == [0, 2, 2]


def test_per_row_logq_uses_the_row_probability_and_hard_slots_no_correction(pool_path):
    """Per-row negatives: - log row_probability when finite (V2), 0 when NaN (hard negatives)."""
    feats, model = hand_model(in_batch=False, logq=True)
    real = sampler("NegativeSampler", input_path=pool_path, num_sample=2, weight_field="weight")
    fixed = FixedSampler(real, shared=[5], rows=[[6], [2], [7]], row_probability=True)  # row q = 2 * q_pool
    batch = parse({"user_id": [0, 1, 2], "item_id": [0, 3, 9]}, fixed, in_batch=False, feats=feats)
    expected = [[sim(u, p) - math.log(q_pool(p)), sim(u, 5) - math.log(q_pool(5)), sim(u, n) - math.log(2 * q_pool(n))]
                for u, p, n in zip([0, 1, 2], [0, 3, 9], [6, 2, 7])]
    assert_logits(logits_of(model, batch), expected)
    fixed.row_probability = None  # NaN: hard negatives
    batch = parse({"user_id": [0, 1, 2], "item_id": [0, 3, 9]}, fixed, in_batch=False, feats=feats)
    assert batch.item_log_q[-3:].tolist() == [0.0, 0.0, 0.0]
    assert [row[2] for row in logits_of(model, batch)] == pytest.approx([sim(0, 6), sim(1, 2), sim(2, 7)], rel=1e-5)


# ------------------------------------------------------------------------------------------
# 3. Hard negatives land in their own rows
# ------------------------------------------------------------------------------------------


def test_hard_negatives_are_scored_against_their_own_row(tmp_path, pool_path):
    # user 0: 3 hard items (> num_hard_sample 2: a random pair); user 1: item 4 and its own positive 3;
    # user 2: none.
    hard = write_edges(tmp_path, "hard.parquet", [(0, 7), (0, 8), (0, 9), (1, 4), (1, 3), (5, 1)])
    real = sampler("HardNegativeSampler", input_path=pool_path, hard_neg_edge_input_path=hard, num_sample=2,
                   num_hard_sample=2, user_id_field="user_id", weight_field="weight")
    feats, model = hand_model(in_batch=True, logq=True)
    batch = parse({"user_id": [0, 1, 2], "item_id": [0, 3, 5]}, real, seed=11, feats=feats)
    keys = batch.item_key.tolist()
    shared = keys[3:5]
    per_row = keys[5:]
    owner = batch.row_negative_row.tolist()
    assert owner == [0, 0, 1, 1]
    row0 = [k for k, o in zip(per_row, owner) if o == 0]
    assert len(set(row0)) == 2 and set(row0) <= {7, 8, 9}
    assert [k for k, o in zip(per_row, owner) if o == 1] == [4, 3]  # edge-table order, all of them

    def mixture(x):
        return (3 * q_freq(x) + 2 * q_pool(x)) / 5

    logits = logits_of(model, batch)
    first = 3 + 2
    # row 0: its own hard items, exactly user_0 . e_item / T (no logQ for hard negatives)
    assert logits[0][first:] == pytest.approx([sim(0, k) for k in row0], rel=1e-5)
    # row 1: item 4, then its own positive 3, masked
    assert logits[1][first] == pytest.approx(sim(1, 4), rel=1e-5)
    assert logits[1][first + 1] == MASKED_LOGIT
    # row 2: no hard negatives -> only masked padding
    assert logits[2][first:] == [MASKED_LOGIT, MASKED_LOGIT]
    # shared columns as for NegativeSampler, mixture logQ, hits masked
    for i, (u, p) in enumerate(zip([0, 1, 2], [0, 3, 5])):
        for j, s in enumerate(shared):
            want = MASKED_LOGIT if s == p else pytest.approx(sim(u, s) - math.log(mixture(s)), rel=1e-5)
            assert logits[i][3 + j] == want


# ------------------------------------------------------------------------------------------
# 4. V2 never scores a positive of the row's user as a valid negative
# ------------------------------------------------------------------------------------------


def test_v2_valid_negatives_are_never_a_positive_of_the_row_user(tmp_path, pool_path):
    positives = {0: set(range(8)), 1: {3}, 2: set()}  # user 0 holds 80% of the (uniform) pool mass
    edges = write_edges(tmp_path, "edges.parquet", [(u, i) for u, items in positives.items() for i in items]
                        + [(7, 9)])
    real = sampler("NegativeSamplerV2", input_path=pool_path, edge_input_path=edges, num_sample=6,
                   user_id_field="user_id", max_retries=1)  # uniform pool, few retries: fallbacks happen
    feats, model = hand_model(in_batch=False, logq=True)
    users, items = [0, 1, 2, 0], [1, 3, 9, 2]
    fallbacks = 0
    for seed in range(5):
        batch = parse({"user_id": users, "item_id": items}, real, in_batch=False, seed=seed, feats=feats)
        logits = logits_of(model, batch)
        per_row = batch.item_key[4:].tolist()
        owner, valid = batch.row_negative_row.tolist(), batch.row_negative_valid.tolist()
        assert owner == [r for r in range(4) for _ in range(6)]
        slots = {r: 0 for r in range(4)}
        for key, r, ok in zip(per_row, owner, valid):
            value = logits[r][1 + slots[r]]
            slots[r] += 1
            u = users[r]
            if not ok:
                fallbacks += 1
                assert key in positives[u] and value == MASKED_LOGIT
            elif key == items[r]:
                assert value == MASKED_LOGIT  # accidental hit of a non-edge target
            else:
                assert key not in positives[u]
                # q / (1 - m_u): user 0 -> 0.1 / 0.2, user 1 -> 0.1 / 0.9, user 2 -> 0.1
                q = 0.1 / (1 - len(positives[u]) / 10)
                assert value == pytest.approx(sim(u, key) - math.log(q), rel=1e-5)
        # positives (own column 0) are on the sampler's scale too: - log q_pool (0.1)
        assert [row[0] for row in logits] == pytest.approx([sim(u, p) - math.log(0.1) for u, p in zip(users, items)],
                                                           rel=1e-5)
        unmasked = [(r, batch.item_key[4 + k].item()) for k, r in enumerate(owner)
                    if logits[r][1 + k % 6] != MASKED_LOGIT]
        assert all(key not in positives[users[r]] for r, key in unmasked)
    assert fallbacks > 0  # the fallback branch was exercised


# ------------------------------------------------------------------------------------------
# 5. Sampled binary cross-entropy
# ------------------------------------------------------------------------------------------


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.mark.parametrize("in_batch", [False, True])
def test_sampled_bce_equals_a_hand_computation(pool_path, in_batch):
    """Label 1 at the positive column, 0 at the unmasked negatives, masked left out, row weights;
    logits without logQ even with logq_correction on."""
    feats, model = hand_model(in_batch=in_batch, logq=True, losses="losses { binary_cross_entropy {} }")
    weights = [1.0, 2.0, 0.5]
    batch = hit_batch(feats, in_batch, logq=True, sample_weight=weights, pool_path=pool_path)
    assert batch.item_log_q is not None
    expected = hit_expected(in_batch)
    positive = [0, 1, 2] if in_batch else [0, 0, 0]
    num = den = 0.0
    for i, row in enumerate(expected):
        for j, z in enumerate(row):
            if z is not None:
                num += weights[i] * bce(z, 1.0 if j == positive[i] else 0.0)
                den += weights[i]
    with torch.no_grad():
        losses = model.compute_loss(model(batch), batch)
    assert losses["binary_cross_entropy"].item() == pytest.approx(num / den, rel=1e-5)
    assert losses["total"].item() == pytest.approx(num / den, rel=1e-5)


# ------------------------------------------------------------------------------------------
# 8. AUC / accuracy of the sampled BCE (no label column)
# ------------------------------------------------------------------------------------------


def test_auc_and_accuracy_of_sampled_bce_use_its_pairs_without_a_label_column(pool_path):
    feats, model = hand_model(in_batch=False, logq=True, losses="losses { binary_cross_entropy {} } "
                              "metrics { auc {} } metrics { accuracy { threshold: 0.55 } }")
    assert model.label_field is None
    batch = hit_batch(feats, False, logq=True, pool_path=pool_path)
    assert batch.labels == {}
    with torch.no_grad():
        outputs = model(batch)
        model.compute_loss(outputs, batch)
        model.update_metrics(outputs, batch)
    metrics = model.compute_metrics()
    pairs = [(z, 1 if j == 0 else 0) for row in hit_expected(False) for j, z in enumerate(row) if z is not None]
    pos = [z for z, y in pairs if y]
    neg = [z for z, y in pairs if not y]
    assert len(pos) == 3 and len(neg) == 7
    auc = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    accuracy = sum((1 / (1 + math.exp(-z)) > 0.55) == bool(y) for z, y in pairs) / len(pairs)
    assert metrics["auc"] == pytest.approx(auc, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)


# ------------------------------------------------------------------------------------------
# Pipeline: recframe.train.main on the synthetic dataset
# ------------------------------------------------------------------------------------------

STEPS = 20  # 1 epoch: 2000 rows / batch_size 100
CHANCE_HIT_RATE = 10 / synthetic.NUM_ITEMS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("negatives_data")
    paths = synthetic.write_dataset(tmp)
    # Hard negatives: 3 items of another cluster per user.
    users = [u for u in range(synthetic.NUM_USERS) for _ in range(3)]
    items = [((u % 10) + 1) % 10 + 10 * ((u + k) % 20) for u in range(synthetic.NUM_USERS) for k in (0, 5, 11)]
    paths["hard"] = str(tmp / "hard.parquet")
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64())}),
                   paths["hard"])
    return paths


SAMPLERS = {
    # mixed in-batch + shared popularity sampler with logQ
    "negative_sampler": ('negative_sampler {{ input_path: "{items}" num_sample: 50 alpha: 0.75 }}',
                         "logq_correction: true"),
    # per-row negatives only, never a training positive of the user
    "negative_sampler_v2": ('negative_sampler_v2 {{ input_path: "{items}" edge_input_path: "{train}" '
                            'num_sample: 20 user_id_field: "user_id" }}',
                            "in_batch_negative: false logq_correction: true"),
    # shared uniform negatives + up to 2 hard negatives per row
    "hard_negative_sampler": ('hard_negative_sampler {{ input_path: "{items}" hard_neg_edge_input_path: "{hard}" '
                              'num_sample: 30 num_hard_sample: 2 user_id_field: "user_id" }}', ""),
    # the exact softmax over the whole catalogue
    "whole_pool_sampler": ('whole_pool_sampler {{ input_path: "{items}" }}', "in_batch_negative: false"),
    # torch-rechub-style pointwise BCE against 4 shared negatives, no label column, AUC metric
    "bce": ('negative_sampler {{ input_path: "{items}" num_sample: 4 }}', "in_batch_negative: false"),
}


def sampler_config(path: Path, data: dict, kind: str, pool: str = "", **options) -> str:
    """A one-epoch config of the synthetic data with sampler ``kind`` (pool: the item pool file,
    default the item catalogue)."""
    sampler_text, model_text = SAMPLERS[kind]
    options = {"num_epochs": 1, "log_step_count_steps": 5, "eval_every_n_steps": 10, **options}
    text = synthetic.pipeline_config_text(data, path.parent / "unused_model_dir", **options)
    text = text.replace("shuffle_buffer_size: 512", "shuffle_buffer_size: 512\n  " + sampler_text.format(**{**data, "items": pool or data["items"]}))
    text = text.replace("temperature: 0.1", "temperature: 0.1\n    " + model_text)
    if kind == "bce":
        text = text.replace("losses { softmax_cross_entropy {} }", "losses { binary_cross_entropy {} }")
        text = text.replace("metrics { in_batch_recall_at_k { top_k: 5 } }", "metrics { auc {} } metrics { accuracy {} }")
    path.write_text(text)
    return str(path)


def run(config: str, model_dir, *args: str) -> int:
    return train.main(["--pipeline_config", config, "--model_dir", str(model_dir), *args])


def log_records(model_dir, kind: str) -> list[dict]:
    with open(Path(model_dir) / "log.jsonl") as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


def eval_result(model_dir) -> dict:
    return json.loads((Path(model_dir) / "eval_result.json").read_text())


@pytest.fixture(autouse=True)
def fast_io(monkeypatch):
    """No PNG curves, no fsync: not what these tests look at."""
    import recframe.recipes.train as trainer

    monkeypatch.setattr(trainer, "write_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setenv("RECFRAME_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """{kind: (config, model_dir)}: one epoch of each sampler."""
    runs = {}
    mp = pytest.MonkeyPatch()
    import recframe.recipes.train as trainer

    mp.setattr(trainer, "write_curves", lambda *args, **kwargs: None)
    mp.setenv("RECFRAME_NO_PROGRESS", "1")
    try:
        for kind in SAMPLERS:
            tmp = tmp_path_factory.mktemp(kind)
            config = sampler_config(tmp / "pipeline.config", data, kind)
            assert run(config, tmp / "model") == 0, kind
            runs[kind] = (config, tmp / "model")
    finally:
        mp.undo()
    return runs


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_each_sampler_trains_loss_drops_and_metrics_rise(trained, kind):
    _, model_dir = trained[kind]
    train_records = log_records(model_dir, "train")
    assert [r["step"] for r in train_records] == [5, 10, 15, 20]
    losses = [r["loss"] for r in train_records]
    assert losses[-1] < losses[0] - 0.05, losses
    evals = log_records(model_dir, "eval")
    assert [r["step"] for r in evals] == [10, 20]
    # full-corpus hit rate far above chance (BCE against 4 shared negatives learns slower)
    assert evals[-1]["hit_rate@10"] > (2 if kind == "bce" else 4) * CHANCE_HIT_RATE, evals[-1]
    if kind == "bce":  # training AUC / accuracy over the (positive | 4 sampled) pairs, no label column
        for r in train_records:
            assert 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0, r
    else:
        recalls = [r["in_batch_recall@5"] for r in train_records]
        assert recalls[-1] > recalls[0], recalls


def test_same_seed_gives_identical_results(trained, tmp_path):
    config, model_dir = trained["negative_sampler"]
    assert run(config, tmp_path / "again") == 0
    assert eval_result(tmp_path / "again") == eval_result(model_dir)
    assert [r["loss"] for r in log_records(tmp_path / "again", "train")] == \
        [r["loss"] for r in log_records(model_dir, "train")]


@pytest.mark.parametrize("kind", ["negative_sampler_v2", "hard_negative_sampler"])
def test_mid_epoch_resume_with_a_sampler_matches_the_uninterrupted_run(trained, tmp_path, kind):
    """Stop at step 10 (num_steps) in the middle of the epoch, then --continue_train to 20.

    Equivalent to an interruption: both runs evaluate and checkpoint at step 10
    (eval_every_n_steps), the learning rate is constant (no schedule depends on total_steps),
    and the resumed epoch skips the first 10 batches; the sampler's per-batch generators are
    keyed by (seed, epoch, reader, batch) so the resumed batches draw the same negatives.
    """
    config, reference_dir = trained[kind]
    model_dir = tmp_path / "resumed"
    assert run(config, model_dir, "--edit_config_json", '{"train_config.num_steps": 10}') == 0
    assert [r["step"] for r in log_records(model_dir, "train")] == [5, 10]
    assert run(config, model_dir, "--continue_train") == 0
    resumed, reference = eval_result(model_dir), eval_result(reference_dir)
    assert resumed["step"] == reference["step"] == STEPS
    for split in ("eval", "test"):
        assert resumed[split].keys() == reference[split].keys()
        for key, value in reference[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    ref = {r["step"]: r for r in log_records(reference_dir, "train")}
    res = {r["step"]: r for r in log_records(model_dir, "train")}
    assert sorted(res) == sorted(ref) == [5, 10, 15, 20]
    for step in (15, 20):
        assert res[step]["loss"] == pytest.approx(ref[step]["loss"], abs=1e-6), step


# ------------------------------------------------------------------------------------------
# 7. Pool errors through the pipeline
# ------------------------------------------------------------------------------------------


def pool_config(tmp_path, data, pool: pa.Table, num_sample: int = 10) -> str:
    """Config of the mixed NegativeSampler run with ``pool`` as its item pool."""
    pool_file = tmp_path / "pool.parquet"
    pq.write_table(pool, pool_file)
    config = Path(sampler_config(tmp_path / "pipeline.config", data, "negative_sampler", str(pool_file)))
    config.write_text(config.read_text().replace("num_sample: 50", f"num_sample: {num_sample}"))
    return str(config)


def test_pool_missing_a_column_names_the_file_and_the_column(data, tmp_path, capsys):
    items = pq.read_table(data["items"]).drop_columns(["price"])
    config = pool_config(tmp_path, data, items)
    assert run(config, tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "pool.parquet") in err and "'price'" in err, err
    assert "negative_sampler.input_path" in err and len(err.strip().splitlines()) == 1, err


def test_empty_pool_is_a_clear_error(data, tmp_path, capsys):
    items = pq.read_table(data["items"]).slice(0, 0)
    config = pool_config(tmp_path, data, items)
    assert run(config, tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert "empty" in err and str(tmp_path / "pool.parquet") in err, err


def test_num_sample_larger_than_the_pool_draws_with_replacement(data, tmp_path):
    items = pq.read_table(data["items"]).slice(0, 5)  # 5 items, 40 draws per batch
    config = pool_config(tmp_path, data, items, num_sample=40)
    assert run(config, tmp_path / "model", "--edit_config_json", '{"train_config.num_steps": 5}') == 0
    assert eval_result(tmp_path / "model")["step"] == 5
    assert math.isfinite(log_records(tmp_path / "model", "train")[0]["loss"])
