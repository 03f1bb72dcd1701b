"""Tests of recframe.negatives.samplers: alias table, pool loading, the three samplers, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from recframe.data.inputs import DataError
from recframe.negatives.alias import AliasTable
from recframe.negatives.item_frequency import ItemFrequency
from recframe.negatives.edge_samplers import HardNegativeSampler, NegativeSamplerV2
from recframe.negatives.samplers import BaseSampler, NegativeSampler, SamplerConfigError, WholePoolSampler, create_sampler
from recframe.negatives.tables import align_types
from recframe.protos import data_pb2, sampler_pb2
from recframe.registry import SAMPLERS

NUM_ITEMS = 20
ITEM_COLUMNS = ["item_id", "genre", "price"]


def chi_square_critical(df: int, z: float = 3.090) -> float:
    """Upper quantile of chi-square(df) at p = 1e-3 (z = 3.090), Wilson-Hilferty."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * np.sqrt(c)) ** 3


def assert_frequencies_match(draws: np.ndarray, p: np.ndarray) -> None:
    n = draws.size
    counts = np.bincount(draws, minlength=p.size)
    assert counts[p == 0].sum() == 0, "an item of weight 0 was drawn"
    support = p > 0
    if support.sum() == 1:
        assert counts[support][0] == n
        return
    expected = n * p[support]
    statistic = float(((counts[support] - expected) ** 2 / expected).sum())
    assert statistic < chi_square_critical(int(support.sum()) - 1), statistic


# ------------------------------------------------------------------------------------------
# Alias table
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "uniform", "one_hot", "skewed_with_zeros"])
def test_alias_frequencies_match_weights(kind):
    rng = np.random.default_rng(123)
    n = 50
    weights = {
        "random": rng.random(n),
        "uniform": np.ones(n),
        "one_hot": np.eye(n)[17] * 3.0,
        "skewed_with_zeros": np.where(np.arange(n) % 3 == 0, 0.0, rng.pareto(1.0, n) + 0.01),
    }[kind]
    table = AliasTable(weights)
    p = weights / weights.sum()
    np.testing.assert_allclose(table.probabilities, p, rtol=1e-12)
    # the (prob, alias) columns encode exactly these probabilities
    np.testing.assert_allclose(table.implied_probabilities(), p, rtol=1e-9, atol=1e-15)
    draws = table.draw(100_000, np.random.default_rng(7))
    assert draws.dtype == np.int64 and draws.shape == (100_000,)
    assert_frequencies_match(draws, p)


def test_alias_extreme_weights_are_exact():
    weights = np.ones(10_000)
    weights[0] = 1e9
    weights[1:100] = 0.0
    table = AliasTable(weights)
    p = weights / weights.sum()
    np.testing.assert_allclose(table.implied_probabilities(), p, rtol=1e-9, atol=1e-15)
    assert np.all((table.prob >= 0) & (table.prob <= 1))


@pytest.mark.parametrize("weights, match", [
    ([], "empty"),
    ([1.0, -0.5], ">= 0"),
    ([0.0, 0.0], "not all be zero"),
    ([1.0, np.nan], "finite"),
])
def test_alias_rejects_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        AliasTable(np.asarray(weights, dtype=np.float64))


def test_alias_is_deterministic_for_a_seed():
    table = AliasTable(np.arange(1, 30, dtype=np.float64))
    a = table.draw(1000, np.random.default_rng(5))
    b = table.draw(1000, np.random.default_rng(5))
    c = table.draw(1000, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


def pool_table(n: int = NUM_ITEMS) -> pa.Table:
    ids = np.arange(n, dtype=np.int64)
    return pa.table({
        "item_id": ids,
        "genre": [f"g{i % 4}" for i in range(n)],
        "price": (ids * 1.5).astype(np.float64),
        "weight": (ids % 5).astype(np.float64) + 1.0,
        "unused": ids,
    })


@pytest.fixture
def pool_path(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pool_table(), path)
    return str(path)


def write(tmp_path, name: str, table: pa.Table) -> str:
    path = tmp_path / name
    if name.endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


def edges(pairs) -> pa.Table:
    users, items = zip(*pairs) if pairs else ((), ())
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64())})


def message(cls, **fields):
    return getattr(sampler_pb2, cls)(**fields)


def build(cls, item_frequency=None, item_columns=ITEM_COLUMNS, **fields):
    sampler_cls = {"NegativeSampler": NegativeSampler, "NegativeSamplerV2": NegativeSamplerV2,
                   "HardNegativeSampler": HardNegativeSampler, "WholePoolSampler": WholePoolSampler}[cls]
    return sampler_cls(message(cls, **fields), item_id_field="item_id", item_columns=item_columns,
                       item_frequency=item_frequency)


def user_batch(users) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.int64()),
                     "item_id": pa.array(np.zeros(len(users)), pa.int64())})


# ------------------------------------------------------------------------------------------
# NegativeSampler
# ------------------------------------------------------------------------------------------


def test_negative_sampler_weight_field_probabilities_and_sample(pool_path):
    sampler = build("NegativeSampler", input_path=pool_path, num_sample=64, weight_field="weight")
    w = (np.arange(NUM_ITEMS) % 5) + 1.0
    np.testing.assert_allclose(sampler.probability(np.arange(NUM_ITEMS)), w / w.sum(), rtol=1e-12)
    np.testing.assert_array_equal(sampler.probability(np.array([-1, 999, 3])),
                                  [0.0, 0.0, w[3] / w.sum()])
    out = sampler.sample(user_batch([1, 2, 3]), np.random.default_rng(0))
    assert out.shared_table.column_names == ITEM_COLUMNS
    assert out.shared_table.num_rows == 64 and out.shared_keys.shape == (64,)
    np.testing.assert_array_equal(out.shared_table.column("item_id").to_numpy(), out.shared_keys)
    # the rows are the pool's rows of those items (same feature values)
    np.testing.assert_allclose(out.shared_table.column("price").to_numpy(), out.shared_keys * 1.5)
    np.testing.assert_allclose(out.shared_probability, w[out.shared_keys] / w.sum())
    assert out.row_table is None and out.num_row_items == 0 and out.row_index.dtype == np.int64


def test_whole_pool_sampler_returns_every_pool_item_once_with_probability_1_over_n(pool_path):
    sampler = build("WholePoolSampler", input_path=pool_path)
    assert sampler.num_sample == NUM_ITEMS
    for seed in (0, 1):  # the same items whatever the generator
        out = sampler.sample(user_batch([1, 2, 3]), np.random.default_rng(seed))
        np.testing.assert_array_equal(out.shared_keys, np.arange(NUM_ITEMS))
        assert out.shared_table.column_names == ITEM_COLUMNS
        np.testing.assert_allclose(out.shared_table.column("price").to_numpy(), np.arange(NUM_ITEMS) * 1.5)
        np.testing.assert_allclose(out.shared_probability, np.full(NUM_ITEMS, 1 / NUM_ITEMS))
        assert out.row_table is None and out.num_row_items == 0
    with pytest.raises(SamplerConfigError, match=r"whole_pool_sampler.input_path: not set"):
        build("WholePoolSampler")


def test_negative_sampler_frequencies_follow_weights(pool_path):
    sampler = build("NegativeSampler", input_path=pool_path, num_sample=100_000, weight_field="weight")
    out = sampler.sample(user_batch([1]), np.random.default_rng(11))
    assert_frequencies_match(out.shared_keys, sampler.probability(np.arange(NUM_ITEMS)))


def test_count_alpha_weights_from_item_frequency(pool_path):
    # training counts: item i seen i times for i in 1..9; items 0 and 10..19 never seen (count 1)
    ids = np.repeat(np.arange(1, 10), np.arange(1, 10))
    frequency = ItemFrequency.from_item_ids(np.concatenate([ids, [500, 500]]))  # 500: not in the pool
    counts = np.ones(NUM_ITEMS)
    counts[1:10] = np.arange(1, 10)
    uniform = build("NegativeSampler", frequency, input_path=pool_path, num_sample=4)
    np.testing.assert_allclose(uniform.probability(np.arange(NUM_ITEMS)), np.full(NUM_ITEMS, 1 / NUM_ITEMS))
    uniform_no_counts = build("NegativeSampler", None, input_path=pool_path, num_sample=4, alpha=0.0)
    np.testing.assert_allclose(uniform_no_counts.probability(np.arange(NUM_ITEMS)), 1 / NUM_ITEMS)
    popular = build("NegativeSampler", frequency, input_path=pool_path, num_sample=4, alpha=0.75)
    expected = counts ** 0.75 / (counts ** 0.75).sum()
    np.testing.assert_allclose(popular.probability(np.arange(NUM_ITEMS)), expected, rtol=1e-12)
    assert popular.probability(np.array([500]))[0] == 0.0


def test_num_sample_larger_than_the_pool_draws_with_replacement(pool_path):
    sampler = build("NegativeSampler", input_path=pool_path, num_sample=500)
    out = sampler.sample(user_batch([1]), np.random.default_rng(0))
    assert out.shared_keys.size == 500
    assert set(out.shared_keys.tolist()) == set(range(NUM_ITEMS))


def test_samples_are_deterministic_for_a_seed_and_survive_pickling(pool_path, tmp_path):
    path = write(tmp_path, "edges.parquet", edges([(1, i) for i in range(10)]))
    sampler = build("NegativeSamplerV2", input_path=pool_path, edge_input_path=path,
                    user_id_field="user_id", num_sample=8)
    clone = pickle.loads(pickle.dumps(sampler))  # what spawned DataLoader workers receive
    batch = user_batch([1, 2, 1])
    a = sampler.sample(batch, np.random.default_rng([3, 0, 0, 1]))
    b = clone.sample(batch, np.random.default_rng([3, 0, 0, 1]))
    c = sampler.sample(batch, np.random.default_rng([3, 0, 0, 2]))
    np.testing.assert_array_equal(a.row_keys, b.row_keys)
    np.testing.assert_array_equal(a.row_probability, b.row_probability)
    assert a.row_table.equals(b.row_table)
    assert not np.array_equal(a.row_keys, c.row_keys)


def test_csv_pool_and_string_ids(tmp_path):
    table = pa.table({"item_id": [f"i{k}" for k in range(6)], "genre": list("abcabc"),
                      "price": [1.0, 2, 3, 4, 5, 6], "weight": [1.0, 0, 1, 0, 1, 0]})
    path = write(tmp_path, "items.csv", table)
    msg = message("NegativeSampler", input_path="items.csv", num_sample=1000, weight_field="weight")
    sampler = NegativeSampler(msg, item_id_field="item_id", item_columns=ITEM_COLUMNS,
                              dataset_type="CsvDataset", config_dir=str(tmp_path))
    assert sampler.num_items == 6
    out = sampler.sample(user_batch([1]), np.random.default_rng(0))
    assert set(out.shared_table.column("item_id").to_pylist()) == {"i0", "i2", "i4"}
    np.testing.assert_allclose(out.shared_probability, 1 / 3)
    assert path.endswith("items.csv")


# ------------------------------------------------------------------------------------------
# NegativeSamplerV2
# ------------------------------------------------------------------------------------------


def v2_sampler(tmp_path, pool_path, max_retries=5, num_sample=50):
    pairs = ([(1, i) for i in range(NUM_ITEMS - 1)]          # user 1: all but item 19
             + [(2, i) for i in range(10)] + [(2, 3)]      # user 2: items 0..9 (one duplicate edge)
             + [(4, i) for i in range(NUM_ITEMS)]          # user 4: every item
             + [(5, 999)])                                 # an item outside the pool: ignored
    path = write(tmp_path, "edges.parquet", edges(pairs))
    return build("NegativeSamplerV2", input_path=pool_path, edge_input_path=path,
                 user_id_field="user_id", num_sample=num_sample, max_retries=max_retries)


def test_v2_never_returns_a_positive_and_marks_the_fallback(tmp_path, pool_path):
    sampler = v2_sampler(tmp_path, pool_path)
    users = np.array([1, 2, 3, 4, 2, 5])
    out = sampler.sample(user_batch(users), np.random.default_rng(0))
    assert out.shared_table is None and out.num_shared == 0
    assert out.row_keys.size == users.size * 50
    np.testing.assert_array_equal(out.row_index, np.repeat(np.arange(users.size), 50))
    np.testing.assert_array_equal(out.row_table.column("item_id").to_numpy(), out.row_keys)
    row_users = users[out.row_index]
    positives = {(1, i) for i in range(19)} | {(2, i) for i in range(10)} | {(4, i) for i in range(20)}
    is_positive = np.array([(u, k) in positives for u, k in zip(row_users, out.row_keys)])
    assert not np.any(is_positive & out.row_valid)          # a valid slot is never a positive
    np.testing.assert_array_equal(out.row_valid, ~is_positive)  # and every fallback slot is marked
    assert not out.row_valid[row_users == 4].any()          # user 4 has no negative at all
    user1 = row_users == 1
    assert 0 < out.row_valid[user1].sum() < user1.sum()     # retries exhausted for some draws
    assert set(out.row_keys[user1 & out.row_valid]) == {19}
    assert out.row_valid[(row_users == 3) | (row_users == 5)].all()
    # probability of a valid draw given validity: q / (1 - pool mass of the user's positives)
    q = 1 / NUM_ITEMS
    expected = np.select([row_users == 1, row_users == 2], [q / (1 / 20), q / (10 / 20)], q)
    np.testing.assert_allclose(out.row_probability[out.row_valid], expected[out.row_valid])


def test_v2_enough_retries_resolve_every_conflict(tmp_path, pool_path):
    sampler = v2_sampler(tmp_path, pool_path, max_retries=600, num_sample=20)
    out = sampler.sample(user_batch([1, 2, 2]), np.random.default_rng(1))
    assert out.row_valid.all()
    np.testing.assert_array_equal(out.row_keys[:20], np.full(20, 19))
    assert np.all(out.row_keys[20:] >= 10)
    # per-row draws of user 2 are uniform over items 10..19
    many = v2_sampler(tmp_path, pool_path, max_retries=600, num_sample=20_000)
    keys = many.sample(user_batch([2]), np.random.default_rng(2)).row_keys
    assert_frequencies_match(keys, np.r_[np.zeros(10), np.full(10, 0.1)])


def test_v2_no_retries_keeps_the_first_draw(tmp_path, pool_path):
    sampler = v2_sampler(tmp_path, pool_path, max_retries=0, num_sample=2000)
    out = sampler.sample(user_batch([2]), np.random.default_rng(3))
    np.testing.assert_array_equal(out.row_valid, out.row_keys >= 10)
    assert abs(out.row_valid.mean() - 0.5) < 0.05


def test_v2_batch_user_column_errors(tmp_path, pool_path):
    sampler = v2_sampler(tmp_path, pool_path)
    with pytest.raises(DataError, match=r"'user_id' is not in the batch \(did you mean 'userid'\?\)"):
        sampler.sample(pa.table({"userid": [1, 2]}), np.random.default_rng(0))
    with pytest.raises(DataError, match="integer and string ids never match"):
        sampler.sample(pa.table({"user_id": ["1", "2"]}), np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# HardNegativeSampler
# ------------------------------------------------------------------------------------------


def hard_sampler(tmp_path, pool_path, num_hard_sample=4, name="hard.parquet"):
    pairs = [(1, 3), (1, 4), (1, 5), (1, 4), (2, 7)] + [(5, i) for i in range(10)]
    path = write(tmp_path, name, edges(pairs))
    return build("HardNegativeSampler", input_path=pool_path, hard_neg_edge_input_path=path,
                 user_id_field="user_id", num_sample=6, num_hard_sample=num_hard_sample)


def test_hard_negatives_land_in_the_right_rows(tmp_path, pool_path):
    sampler = hard_sampler(tmp_path, pool_path)
    users = [1, 2, 3, 5, 1, 9]
    out = sampler.sample(user_batch(users), np.random.default_rng(0))
    assert out.num_shared == 6 and out.shared_table.num_rows == 6
    assert np.all(np.diff(out.row_index) >= 0)
    per_row = {r: out.row_keys[out.row_index == r].tolist() for r in range(len(users))}
    assert sorted(per_row[0]) == [3, 4, 5] and sorted(per_row[4]) == [3, 4, 5]
    assert per_row[1] == [7]
    assert per_row[2] == [] and per_row[5] == []           # users without hard negatives
    assert len(per_row[3]) == 4 and len(set(per_row[3])) == 4 and set(per_row[3]) <= set(range(10))
    np.testing.assert_array_equal(out.row_table.column("item_id").to_numpy(), out.row_keys)
    np.testing.assert_allclose(out.row_table.column("price").to_numpy(), out.row_keys * 1.5)
    assert np.isnan(out.row_probability).all() and out.row_valid.all()
    # the subset of a user with more than num_hard_sample is random: every item shows up
    seen = set()
    for seed in range(30):
        seen |= set(sampler.sample(user_batch([5]), np.random.default_rng(seed)).row_keys.tolist())
    assert seen == set(range(10))


def test_hard_batch_without_any_hard_negative(tmp_path, pool_path):
    out = hard_sampler(tmp_path, pool_path).sample(user_batch([3, 4]), np.random.default_rng(0))
    assert out.num_row_items == 0 and out.row_table.num_rows == 0 and out.num_shared == 6


def test_hard_items_of_one_user_and_record_batch_input(tmp_path, pool_path):
    sampler = hard_sampler(tmp_path, pool_path)
    assert sampler.pool_keys[sampler.hard_items(1)].tolist() == [3, 4, 5]  # duplicate (1, 4) dropped
    assert sampler.hard_items(3).size == 0
    batch = user_batch([2, 3]).to_batches()[0]  # a pyarrow.RecordBatch works like a Table
    out = sampler.sample(batch, np.random.default_rng(0))
    assert out.row_index.tolist() == [0] and out.row_keys.tolist() == [7]


def test_pool_split_over_several_files(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    table = pool_table()
    pq.write_table(table.slice(0, 7), folder / "a.parquet")
    pq.write_table(table.slice(7), folder / "b.parquet")
    sampler = build("NegativeSampler", input_path=str(folder), num_sample=3, weight_field="weight")
    assert sampler.num_items == NUM_ITEMS
    np.testing.assert_array_equal(sampler.pool_keys, np.arange(NUM_ITEMS))


def test_hard_ids_absent_from_the_pool_are_an_error(tmp_path, pool_path):
    path = write(tmp_path, "hard_bad.parquet", edges([(1, 3), (1, 77), (2, 88), (2, 4)]))
    with pytest.raises(DataError, match=r"hard_bad.parquet.*2 hard-negative item\(s\) are not in the item pool.*77, 88"):
        build("HardNegativeSampler", input_path=pool_path, hard_neg_edge_input_path=path,
              user_id_field="user_id", num_sample=2, num_hard_sample=2)


# ------------------------------------------------------------------------------------------
# Errors and config
# ------------------------------------------------------------------------------------------


def test_pool_missing_column_suggests_a_name(pool_path):
    with pytest.raises(DataError, match=r"data_config.negative_sampler.input_path: item pool .*items.parquet: "
                                        r"column 'genres' not found; did you mean 'genre'"):
        build("NegativeSampler", item_columns=["item_id", "genres"], input_path=pool_path, num_sample=2)


@pytest.mark.parametrize("table, fields, match", [
    (pool_table().slice(0, 0), {}, "the pool is empty"),
    (pa.concat_tables([pool_table(3), pool_table(5)]), {}, r"duplicate ids: 0, 1, 2"),
    (pool_table().set_column(0, "item_id", pa.array([None] + list(range(1, NUM_ITEMS)), pa.int64())),
     {}, "null id"),
    (pool_table().set_column(3, "weight", pa.array([-1.0] + [1.0] * (NUM_ITEMS - 1))),
     {"weight_field": "weight"}, r"column 'weight' has 1 negative or non-finite weight"),
    (pool_table().set_column(3, "weight", pa.array([0.0] * NUM_ITEMS)),
     {"weight_field": "weight"}, "every weight is zero"),
    (pool_table().set_column(3, "weight", pa.array(["x"] * NUM_ITEMS)),
     {"weight_field": "weight"}, "expected numbers"),
])
def test_bad_pools_are_clear_errors(tmp_path, table, fields, match):
    path = write(tmp_path, "bad_items.parquet", table)
    with pytest.raises(DataError, match=match) as info:
        build("NegativeSampler", input_path=path, num_sample=2, **fields)
    assert "bad_items.parquet" in str(info.value)


def test_pool_ids_unknown_to_the_training_counts(pool_path):
    frequency = ItemFrequency.from_item_ids(pa.array(["0", "1", "2"]))  # strings, the pool has ints
    with pytest.raises(DataError, match="none of its 20 ids occurs in the training data"):
        build("NegativeSampler", frequency, input_path=pool_path, num_sample=2, alpha=0.75)
    with pytest.raises(SamplerConfigError, match="alpha: 0.75 needs the item counts"):
        build("NegativeSampler", None, input_path=pool_path, num_sample=2, alpha=0.75)


def test_missing_files_and_empty_edges(tmp_path, pool_path):
    with pytest.raises(DataError, match="negative_sampler.input_path: .*nope.parquet"):
        build("NegativeSampler", input_path=str(tmp_path / "nope.parquet"), num_sample=2)
    path = write(tmp_path, "no_edges.parquet", edges([]))
    with pytest.raises(DataError, match="edge_input_path.*the table is empty"):
        build("NegativeSamplerV2", input_path=pool_path, edge_input_path=path,
              user_id_field="user_id", num_sample=2)
    strings = write(tmp_path, "str_edges.parquet", pa.table({"user_id": [1], "item_id": ["3"]}))
    with pytest.raises(DataError, match="integer and string ids never match"):
        build("NegativeSamplerV2", input_path=pool_path, edge_input_path=strings,
              user_id_field="user_id", num_sample=2)


@pytest.mark.parametrize("cls, fields, match", [
    ("NegativeSampler", {"num_sample": 0}, r"negative_sampler.num_sample: got 0, expected >= 1"),
    ("NegativeSampler", {"num_sample": 3, "alpha": -1.0}, r"negative_sampler.alpha: got -1"),
    ("NegativeSampler", {"num_sample": 3, "alpha": 0.5, "weight_field": "weight"}, "set together with weight_field"),
    ("NegativeSamplerV2", {"num_sample": 3, "edge_input_path": "e.parquet"}, r"negative_sampler_v2.user_id_field: not set"),
    ("HardNegativeSampler", {"num_sample": 3, "user_id_field": "u", "hard_neg_edge_input_path": "h.parquet"},
     r"hard_negative_sampler.num_hard_sample: got 0"),
])
def test_config_problems(pool_path, cls, fields, match):
    with pytest.raises(SamplerConfigError, match=match):
        build(cls, input_path=pool_path, **fields)


def test_create_sampler_from_data_config(tmp_path, pool_path):
    assert {"NegativeSampler", "NegativeSamplerV2", "HardNegativeSampler", "WholePoolSampler"} <= set(SAMPLERS.names())
    config = text_format.Parse(
        'item_id_field: "item_id" negative_sampler { input_path: "items.parquet" num_sample: 5 }',
        data_pb2.DataConfig())
    assert BaseSampler.config_problems(config.negative_sampler, "data_config.negative_sampler", "item_id") == []
    sampler = create_sampler(config, item_columns=["genre", "item_id"], config_dir=str(tmp_path))
    assert isinstance(sampler, NegativeSampler)
    assert sampler.sample(user_batch([0]), np.random.default_rng(0)).shared_table.column_names == ["genre", "item_id"]
    assert create_sampler(data_pb2.DataConfig(), item_columns=["item_id"]) is None
    bad = text_format.Parse('negative_sampler_v2 { num_sample: 0 }', data_pb2.DataConfig())
    problems = NegativeSamplerV2.config_problems(bad.negative_sampler_v2, "data_config.negative_sampler_v2", "")
    paths = [path for path, _ in problems]
    assert paths == ["data_config.negative_sampler_v2.input_path", "data_config.negative_sampler_v2.num_sample",
                     "data_config.negative_sampler_v2.item_id_field",
                     "data_config.negative_sampler_v2.edge_input_path",
                     "data_config.negative_sampler_v2.user_id_field"]


def test_align_types(pool_path):
    sampler = build("NegativeSampler", input_path=pool_path, num_sample=3)
    schema = pa.schema([("item_id", pa.int32()), ("price", pa.float32()), ("other", pa.string())])
    sampler.align_pool_types(schema)
    out = sampler.sample(user_batch([1]), np.random.default_rng(0))
    assert out.shared_table.schema.field("item_id").type == pa.int32()
    assert out.shared_table.schema.field("price").type == pa.float32()
    assert out.shared_table.schema.field("genre").type == pa.string()
    with pytest.raises(DataError, match=r"column 'genre' has type string, which cannot be cast to .*int64"):
        align_types(pool_table(), pa.schema([("genre", pa.int64())]))


# ------------------------------------------------------------------------------------------
# Frequency weighting presets (frequency_weighting)
# ------------------------------------------------------------------------------------------

# Training counts: item i seen i times for i in 1..9, item 10 seen 40 times; items 0 and
# 11..19 of the pool never seen (count 1); item 500 seen twice but not in the pool (it still
# counts among the training rows: total = 45 + 40 + 2 = 87).
TRAIN_COUNTS = {**{i: i for i in range(1, 10)}, 10: 40, 500: 2}
TOTAL_ROWS = 87
THRESHOLD = 0.05  # WORD2VEC_SUBSAMPLING's t in these tests: items 1..9 kept, item 10 damped


def training_frequency() -> ItemFrequency:
    return ItemFrequency.from_item_ids(np.repeat(list(TRAIN_COUNTS), list(TRAIN_COUNTS.values())))


def pool_counts() -> np.ndarray:
    return np.array([TRAIN_COUNTS.get(i, 1) for i in range(NUM_ITEMS)], dtype=np.float64)


def expected_probabilities(preset: str, alpha: float = 0.0) -> np.ndarray:
    """The documented formulas, written out independently of recframe.negatives.weighting."""
    counts = pool_counts()
    if preset == "COUNT_POWER":
        weights = counts ** alpha
    elif preset == "LOG_COUNT":
        weights = np.log(counts + 1.0)
    elif preset == "LOG_UNIFORM_RANK":
        # p(rank k) = (log(k + 2) - log(k + 1)) / log(N + 1), k = 0 for the most frequent item;
        # items of equal count share the mass of their ranks equally
        n = NUM_ITEMS
        rank_mass = [(np.log(k + 2) - np.log(k + 1)) / np.log(n + 1) for k in range(n)]
        by_count = sorted(set(counts.tolist()), reverse=True)
        weights, first_rank = np.zeros(n), 0
        for c in by_count:
            members = [i for i in range(n) if counts[i] == c]
            share = sum(rank_mass[first_rank:first_rank + len(members)]) / len(members)
            weights[members] = share
            first_rank += len(members)
    elif preset == "WORD2VEC_SUBSAMPLING":
        t = float(np.float32(THRESHOLD))  # the proto field is a float
        f = counts / TOTAL_ROWS
        weights = counts * np.minimum(1.0, np.sqrt(t / f) + t / f)
    else:
        raise AssertionError(preset)
    return weights / weights.sum()


def preset_fields(preset: str, alpha: float | None = None) -> dict:
    fields = {"frequency_weighting": sampler_pb2.FrequencyWeighting.Value(preset)}
    if preset == "WORD2VEC_SUBSAMPLING":
        fields["subsampling_threshold"] = THRESHOLD
    if alpha is not None:
        fields["alpha"] = alpha
    return fields


PRESETS = [("COUNT_POWER", None), ("COUNT_POWER", 0.75), ("LOG_COUNT", None), ("LOG_UNIFORM_RANK", None),
           ("WORD2VEC_SUBSAMPLING", None)]


def build_with_preset(cls, tmp_path, pool_path, preset, alpha=None, num_sample=8):
    extra = {}
    if cls == "NegativeSamplerV2":  # user 7's only positive is the heaviest item, 10
        extra = dict(edge_input_path=write(tmp_path, "edges.parquet", edges([(7, 10)])), user_id_field="user_id")
    if cls == "HardNegativeSampler":
        extra = dict(hard_neg_edge_input_path=write(tmp_path, "hard.parquet", edges([(7, 3)])),
                     user_id_field="user_id", num_hard_sample=1)
    return build(cls, training_frequency(), input_path=pool_path, num_sample=num_sample,
                 **preset_fields(preset, alpha), **extra)


def test_the_preset_formulas_by_hand():
    # a few values worked out on paper, so the formulas above are not only checked against themselves
    p = expected_probabilities("LOG_COUNT")
    assert p[10] / p[1] == pytest.approx(np.log(41) / np.log(2), rel=1e-12)
    p = expected_probabilities("LOG_UNIFORM_RANK")
    # item 10 alone at rank 0: (log 2 - log 1) / log 21
    assert p[10] == pytest.approx(np.log(2) / np.log(21), rel=1e-12)
    # items 9..2 take ranks 1..8; item 1 and the 10 never-seen items (0, 11..19) all count 1:
    # ranks 9..19, mass (log 21 - log 10) / log 21 shared by 11
    assert p[0] == p[1] == pytest.approx((np.log(21) - np.log(10)) / np.log(21) / 11, rel=1e-12)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    p = expected_probabilities("WORD2VEC_SUBSAMPLING")
    t = float(np.float32(THRESHOLD))
    # item 10: f = 40/87 > 2.618 t, weight = sqrt(t * 87 * 40) + t * 87; items 1..9 keep their count
    w10 = np.sqrt(t * 87 * 40) + t * 87
    assert p[10] / p[9] == pytest.approx(w10 / 9, rel=1e-12)
    assert p[9] / p[1] == pytest.approx(9.0, rel=1e-12)


@pytest.mark.parametrize("cls", ["NegativeSampler", "NegativeSamplerV2", "HardNegativeSampler"])
@pytest.mark.parametrize("preset, alpha", PRESETS)
def test_preset_probabilities_travel_with_the_batch(tmp_path, pool_path, cls, preset, alpha):
    sampler = build_with_preset(cls, tmp_path, pool_path, preset, alpha, num_sample=64)
    expected = expected_probabilities(preset, alpha or 0.0)
    np.testing.assert_allclose(sampler.probability(np.arange(NUM_ITEMS)), expected, rtol=1e-6, atol=1e-6)
    out = sampler.sample(user_batch([7, 8]), np.random.default_rng(3))
    if cls == "NegativeSamplerV2":
        # row 0 (user 7) avoids item 10: q / (1 - q(10)); row 1 (user 8, no edges): q
        assert out.row_keys.size == 128 and 10 not in out.row_keys[out.row_index == 0]
        rest = np.where(out.row_index == 0, 1.0 - expected[10], 1.0)
        np.testing.assert_allclose(out.row_probability, expected[out.row_keys] / rest, rtol=1e-6, atol=1e-6)
    else:
        assert out.shared_keys.size == 64
        np.testing.assert_allclose(out.shared_probability, expected[out.shared_keys], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", ["NegativeSampler", "NegativeSamplerV2", "HardNegativeSampler"])
@pytest.mark.parametrize("preset", ["LOG_COUNT", "LOG_UNIFORM_RANK", "WORD2VEC_SUBSAMPLING"])
def test_preset_draw_frequencies_follow_the_formula(tmp_path, pool_path, cls, preset):
    sampler = build_with_preset(cls, tmp_path, pool_path, preset, num_sample=100_000)
    out = sampler.sample(user_batch([8]), np.random.default_rng(2024))  # user 8 has no edges
    draws = out.row_keys if cls == "NegativeSamplerV2" else out.shared_keys
    assert draws.size == 100_000
    assert_frequencies_match(draws, expected_probabilities(preset))
    # and the presets really differ from uniform and from each other on these counts
    assert not np.allclose(expected_probabilities(preset), 1 / NUM_ITEMS)


def test_presets_need_the_training_counts(pool_path):
    for preset in ("LOG_COUNT", "LOG_UNIFORM_RANK", "WORD2VEC_SUBSAMPLING"):
        assert NegativeSampler.needs_item_counts(message("NegativeSampler", **preset_fields(preset)))
        with pytest.raises(SamplerConfigError, match=rf"negative_sampler.frequency_weighting: {preset} needs the "
                                                     r"item counts of the training data"):
            build("NegativeSampler", None, input_path=pool_path, num_sample=4, **preset_fields(preset))
    assert not NegativeSampler.needs_item_counts(message("NegativeSampler", alpha=0.0))
    assert NegativeSampler.needs_item_counts(message("NegativeSampler", alpha=0.5))
    assert not NegativeSampler.needs_item_counts(message("NegativeSampler", weight_field="weight"))


LOG = sampler_pb2.LOG_COUNT
W2V = sampler_pb2.WORD2VEC_SUBSAMPLING


@pytest.mark.parametrize("cls, fields, match", [
    ("NegativeSampler", {"frequency_weighting": LOG, "alpha": 0.75},
     r"^data_config.negative_sampler.alpha: set with frequency_weighting: LOG_COUNT, but alpha is the exponent of "
     r"COUNT_POWER only; expected no alpha \(or frequency_weighting: COUNT_POWER\)$"),
    ("NegativeSamplerV2", {"frequency_weighting": sampler_pb2.LOG_UNIFORM_RANK, "alpha": 0.0,
                           "edge_input_path": "e.parquet", "user_id_field": "u"},
     r"^data_config.negative_sampler_v2.alpha: set with frequency_weighting: LOG_UNIFORM_RANK"),
    ("HardNegativeSampler", {"frequency_weighting": LOG, "weight_field": "weight", "num_hard_sample": 1,
                             "hard_neg_edge_input_path": "h.parquet", "user_id_field": "u"},
     r"^data_config.hard_negative_sampler.frequency_weighting: LOG_COUNT set together with weight_field, expected "
     r"one of them"),
    ("NegativeSampler", {"frequency_weighting": sampler_pb2.COUNT_POWER, "weight_field": "weight"},
     r"^data_config.negative_sampler.frequency_weighting: COUNT_POWER set together with weight_field"),
    ("NegativeSampler", {"frequency_weighting": LOG, "subsampling_threshold": 1e-4},
     r"^data_config.negative_sampler.subsampling_threshold: set with frequency_weighting: LOG_COUNT, but it is "
     r"the threshold of WORD2VEC_SUBSAMPLING only"),
    ("NegativeSampler", {"subsampling_threshold": 1e-4},
     r"^data_config.negative_sampler.subsampling_threshold: set with frequency_weighting: COUNT_POWER"),
    ("NegativeSampler", {"frequency_weighting": W2V, "subsampling_threshold": 0.0},
     r"^data_config.negative_sampler.subsampling_threshold: got 0, expected a number in \(0, 1\]"),
    ("NegativeSampler", {"frequency_weighting": W2V, "subsampling_threshold": 2.0},
     r"^data_config.negative_sampler.subsampling_threshold: got 2, expected a number in \(0, 1\]"),
    ("NegativeSampler", {"frequency_weighting": W2V, "subsampling_threshold": float("nan")},
     r"^data_config.negative_sampler.subsampling_threshold: got nan, expected"),
])
def test_preset_config_errors(pool_path, cls, fields, match):
    with pytest.raises(SamplerConfigError, match=match):
        build(cls, training_frequency(), input_path=pool_path, num_sample=3, **fields)


def test_preset_config_errors_through_validate():
    from recframe.config import apply_edit_config_json, load_pipeline_config, validate_pipeline_config

    path = str(Path(__file__).resolve().parents[1] / "examples" / "dssm_movielens.config")
    config = load_pipeline_config(path)
    # the quick start writes alpha: 0.0, so switching the preset alone is refused, naming alpha
    apply_edit_config_json(config, {"data_config.negative_sampler.frequency_weighting": "LOG_COUNT"})
    problems = validate_pipeline_config(config, path)
    assert len(problems) == 1 and "data_config.negative_sampler.alpha: set with frequency_weighting: LOG_COUNT" \
        in problems[0], problems
    apply_edit_config_json(config, {"data_config.negative_sampler.alpha": None})
    assert validate_pipeline_config(config, path) == []
    # the text format takes the enum by name
    text = text_format.Parse('negative_sampler { input_path: "i.parquet" num_sample: 2 '
                             'frequency_weighting: WORD2VEC_SUBSAMPLING subsampling_threshold: 1e-4 }',
                             data_pb2.DataConfig())
    assert NegativeSampler.config_problems(text.negative_sampler, "data_config.negative_sampler", "id") == []
