"""Features: raw Arrow columns -> ids / values / padded sequences, and the BatchParser."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import feature, feature_config, features
from recframe.batch import Batch, SequenceIds, SparseIds
from recframe.negatives import BatchNegatives, ItemFrequency
from recframe.features import (
    DENSE, SEQUENCE, SPARSE, BatchParser, FeatureInputError, IdFeature, RawFeature,
    SequenceIdFeature, create_features, hash_bucket, item_keys,
)
from recframe.features.columns import flatten_column, offsets_from_rows
from recframe.features.sequence_feature import pad_last


def ids_of(parsed: SparseIds) -> list[list[int]]:
    """Row-wise python lists of a SparseIds."""
    v, o = parsed.values.tolist(), parsed.offsets.tolist()
    return [v[o[i]:o[i + 1]] for i in range(len(o) - 1)]


# --- column flattening ------------------------------------------------------------------------

def test_flatten_column_drops_nulls_and_empty_strings():
    values, row_of = flatten_column(pa.array(["a|b", None, "", "c", "d||e"]), "|")
    assert values.to_pylist() == ["a", "b", "c", "d", "e"]
    assert row_of.tolist() == [0, 0, 3, 4, 4]
    assert offsets_from_rows(row_of, 5).tolist() == [0, 2, 2, 2, 3, 5]
    values, row_of = flatten_column(pa.array([[1, None], None, [], [2, 3]]).slice(0), None)
    assert values.to_pylist() == [1, 2, 3] and row_of.tolist() == [0, 3, 3]
    assert offsets_from_rows(np.zeros(0, np.int64), 3).tolist() == [0, 0, 0, 0]


# --- IdFeature ---------------------------------------------------------------------------------

def test_id_feature_hash_buckets_and_kind():
    f = feature('id_feature { feature_name: "u" input_name: "user" hash_bucket_size: 97 embedding_dim: 4 }')
    assert isinstance(f, IdFeature) and f.kind == SPARSE and f.input_name == "user"
    assert f.embedding.name == "u" and f.embedding.num_embeddings == 97 and f.output_dim == 4
    parsed = f.parse(pa.array(["foobar", "a", None]))
    assert ids_of(parsed) == [[0x85944171F73967E8 % 97], [0xAF63DC4C8601EC8C % 97], []]
    assert parsed.values.dtype == torch.int64 and parsed.offsets.dtype == torch.int64


def test_list_column_and_separator_string_give_identical_ids():
    for sizing in ("hash_bucket_size: 1000", 'vocab_list: ["Action", "Comedy", "Drama"]'):
        sep = feature(f'id_feature {{ feature_name: "g" {sizing} embedding_dim: 2 separator: "|" }}')
        lst = feature(f'id_feature {{ feature_name: "g" {sizing} embedding_dim: 2 }}')
        a = sep.parse(pa.array(["Action|Comedy", "", None, "Drama|Horror|Action"]))
        b = lst.parse(pa.array([["Action", "Comedy"], [], None, ["Drama", "Horror", "Action"]]))
        assert ids_of(a) == ids_of(b)
        assert a.offsets.tolist() == [0, 2, 2, 2, 5]
    # vocab: value i -> i + 1, unknown -> 0
    assert ids_of(a) == [[1, 2], [], [], [3, 0, 1]]


def test_vocab_ids_and_integer_values():
    f = feature('id_feature { feature_name: "c" vocab_list: ["7", "x", "3"] embedding_dim: 2 }')
    assert f.embedding.num_embeddings == 4
    assert ids_of(f.parse(pa.array([3, 7, 8]))) == [[3], [1], [0]]
    assert ids_of(f.parse(pa.array(["x", "zz", "7"]))) == [[2], [0], [1]]


def test_vocab_file_relative_to_config_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("red\ngreen\n\nblue\n", encoding="utf-8")
    f = create_features([feature_config('id_feature { feature_name: "c" vocab_file: "vocab.txt" embedding_dim: 2 }')],
                        str(tmp_path))["c"]
    assert f.embedding.num_embeddings == 4
    assert ids_of(f.parse(pa.array(["blue", "red", "pink", "green"]))) == [[3], [1], [0], [2]]


def test_num_buckets_ids_used_as_they_are():
    f = feature('id_feature { feature_name: "i" num_buckets: 10 embedding_dim: 2 }')
    assert ids_of(f.parse(pa.array([0, 9, None, 4], pa.int32()))) == [[0], [9], [], [4]]
    assert ids_of(f.parse(pa.array(["3", "0"]))) == [[3], [0]]
    # an all-null column (Arrow type null) just has no ids
    assert ids_of(f.parse(pa.array([None, None]))) == [[], []]


def test_num_buckets_out_of_range_names_feature_column_and_id():
    f = feature('id_feature { feature_name: "movie" input_name: "movie_id" num_buckets: 10 embedding_dim: 2 }')
    with pytest.raises(FeatureInputError) as e:
        f.parse(pa.array([1, 12, 3, 40]), "train.parquet")
    msg = str(e.value)
    assert "train.parquet" in msg and "'movie'" in msg and "'movie_id'" in msg
    assert "id 12 " in msg and "num_buckets=10" in msg and "2 ids out of range" in msg
    with pytest.raises(FeatureInputError, match="id -1 "):
        f.parse(pa.array([-1]))
    with pytest.raises(FeatureInputError, match="non-integer string"):
        f.parse(pa.array(["abc"]))


def test_hashing_a_float_column_names_feature_and_column():
    f = feature('id_feature { feature_name: "cat" input_name: "cat_col" hash_bucket_size: 10 embedding_dim: 2 }')
    with pytest.raises(FeatureInputError, match=r"src: feature 'cat' \(column 'cat_col'\): hash_bucket_size needs string"):
        f.parse(pa.array([1.0, 2.0]), "src")


def test_id_feature_needs_a_table_size():
    with pytest.raises(ValueError, match="'x'.*num_buckets, hash_bucket_size"):
        feature('id_feature { feature_name: "x" embedding_dim: 2 }')


# --- RawFeature --------------------------------------------------------------------------------

def test_raw_feature_normalizers():
    col = pa.array([0.0, 3.0, -2.0, None])
    z = feature('raw_feature { feature_name: "a" default_value: 1.0 normalizer { z_score { mean: 1.0 std: 2.0 } } }')
    assert z.kind == DENSE and z.output_dim == 1
    out = z.parse(col)
    assert out.dtype == torch.float32 and out.shape == (4, 1)
    assert out[:, 0].tolist() == pytest.approx([-0.5, 1.0, -1.5, 0.0])  # null row: default 1.0, normalized
    mm = feature('raw_feature { feature_name: "a" normalizer { min_max { min: -2.0 max: 6.0 } } }')
    assert mm.parse(col)[:, 0].tolist() == pytest.approx([0.25, 0.625, 0.0, 0.25])
    lg = feature('raw_feature { feature_name: "a" normalizer { log1p {} } }')
    assert lg.parse(col)[:, 0].tolist() == pytest.approx([0.0, math.log(4.0), -math.log(3.0), 0.0])
    plain = feature('raw_feature { feature_name: "a" }')
    assert plain.parse(pa.array([1, 2], pa.int64()))[:, 0].tolist() == [1.0, 2.0]


def test_raw_feature_large_int64_values_such_as_unix_timestamps():
    # int64 beyond 2^24 (a Unix timestamp, time_decay_pooling's sample_time_feature) must
    # parse, rounded to float32, instead of failing the safe int64 -> float32 cast.
    f = feature('raw_feature { feature_name: "timestamp" }')
    out = f.parse(pa.array([874965478, 893286638], pa.int64()))
    assert out.dtype == torch.float32
    assert out[:, 0].tolist() == [float(np.float32(874965478)), float(np.float32(893286638))]


def test_raw_feature_value_dim_from_list_and_separator_string():
    lst = feature('raw_feature { feature_name: "v" value_dim: 3 default_value: -1.0 }')
    from_list = lst.parse(pa.array([[1.0, 2.0, 3.0], None, [4.5, 5.0, 6.0]]))
    assert from_list.tolist() == [[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0], [4.5, 5.0, 6.0]]
    sep = feature('raw_feature { feature_name: "v" value_dim: 3 default_value: -1.0 separator: "," }')
    assert torch.equal(sep.parse(pa.array(["1,2,3", None, "4.5,5,6"])), from_list)
    assert sep.output_dim == 3


def test_raw_feature_wrong_value_count_names_row():
    f = feature('raw_feature { feature_name: "v" input_name: "vec" value_dim: 2 separator: "," }')
    with pytest.raises(FeatureInputError, match=r"src: feature 'v' \(column 'vec'\): row 1 has 3 values, expected value_dim=2"):
        f.parse(pa.array(["1,2", "1,2,3"]), "src")
    with pytest.raises(FeatureInputError, match="expected numbers"):
        f.parse(pa.array(["1,x"]))


def test_raw_feature_boundaries_bucketize_value_on_boundary_to_upper_bucket():
    f = feature('raw_feature { feature_name: "age" boundaries: [18, 25, 40] embedding_dim: 3 }')
    assert f.kind == SPARSE and f.embedding.num_embeddings == 4 and f.output_dim == 3
    parsed = f.parse(pa.array([10.0, 18.0, 24.9, 25.0, 39.0, 40.0, 99.0, None]))
    assert ids_of(parsed) == [[0], [1], [1], [2], [2], [3], [3], [0]]  # null -> default 0.0 -> bucket 0
    # boundaries apply to the normalized value
    g = feature('raw_feature { feature_name: "x" boundaries: [0.0, 1.0] embedding_dim: 2 '
                'normalizer { z_score { mean: 10.0 std: 5.0 } } }')
    assert ids_of(g.parse(pa.array([5.0, 10.0, 14.0, 15.0]))) == [[0], [1], [1], [2]]


# --- SequenceIdFeature -------------------------------------------------------------------------

def test_sequence_truncation_keeps_last_items_in_order_right_padded():
    f = feature('sequence_id_feature { feature_name: "hist" num_buckets: 100 sequence_length: 3 embedding_dim: 2 }')
    assert isinstance(f, SequenceIdFeature) and f.kind == SEQUENCE
    parsed = f.parse(pa.array([[1, 2, 3, 4, 5], [7], [], None, [8, 9, 10]]))
    assert parsed.ids.tolist() == [[3, 4, 5], [7, 0, 0], [0, 0, 0], [0, 0, 0], [8, 9, 10]]
    assert parsed.lengths.tolist() == [3, 1, 0, 0, 3]
    assert parsed.mask().tolist()[1] == [True, False, False]


def test_sequence_from_delimited_string_with_vocab_and_hash():
    v = feature('sequence_id_feature { feature_name: "h" vocab_list: ["a", "b", "c"] sequence_delim: ";" '
                'sequence_length: 2 embedding_dim: 2 }')
    parsed = v.parse(pa.array(["a;b;c", "zz", "", "c;a"]))
    assert parsed.ids.tolist() == [[2, 3], [0, 0], [0, 0], [3, 1]]
    assert parsed.lengths.tolist() == [2, 1, 0, 2]  # an OOV id is still a position
    h = feature('sequence_id_feature { feature_name: "h" hash_bucket_size: 50 sequence_delim: ";" '
                'sequence_length: 4 embedding_dim: 2 }')
    parsed = h.parse(pa.array(["foo;foobar"]))
    assert parsed.ids.tolist() == [[0xDCB27518FED9D577 % 50, 0x85944171F73967E8 % 50, 0, 0]]


def test_pad_last_direct():
    ids, lengths = pad_last(np.array([5, 6, 7, 8], np.int64), np.array([0, 0, 4], np.int64), 2)
    assert ids.tolist() == [[0, 0], [7, 8]] and lengths.tolist() == [0, 2]
    ids, lengths = pad_last(np.zeros(0, np.int64), np.array([0, 0], np.int64), 3)
    assert ids.tolist() == [[0, 0, 0]] and lengths.tolist() == [0]


# --- create_features ---------------------------------------------------------------------------

def test_create_features_in_config_order_with_registered_classes():
    feats = features(
        'raw_feature { feature_name: "age" }',
        'id_feature { feature_name: "uid" num_buckets: 5 embedding_dim: 2 }',
        'sequence_id_feature { feature_name: "hist" num_buckets: 5 embedding_dim: 2 embedding_name: "uid" }',
    )
    assert list(feats) == ["age", "uid", "hist"]
    assert [type(f) for f in feats.values()] == [RawFeature, IdFeature, SequenceIdFeature]
    assert feats["hist"].embedding.name == "uid"


# --- BatchParser -------------------------------------------------------------------------------

def make_parser(**kwargs):
    feats = features(
        'id_feature { feature_name: "user" input_name: "user_id" hash_bucket_size: 10 embedding_dim: 2 }',
        'raw_feature { feature_name: "age" }',
        'sequence_id_feature { feature_name: "hist" num_buckets: 10 sequence_length: 2 embedding_dim: 2 }',
    )
    return BatchParser(list(feats.values()), **kwargs)


def test_batch_parser_fills_every_part():
    table = pa.table({
        "user_id": ["u1", "u2", "u3"], "age": [20.0, 30.0, 40.0], "hist": [[1, 2, 3], [4], []],
        "label": [1, 0, 1], "w": [0.5, 1.0, 2.0], "item": ["foobar", "a", "foobar"],
        "seen": [[1, 2], None, [3]],
    })
    parser = make_parser(label_fields=["label"], sample_weight_field="w", item_id_field="item",
                         list_fields=["seen"])
    assert parser.columns() == ["user_id", "age", "hist", "label", "seen", "w", "item"]
    batch = parser(table, "part-0.parquet")
    assert isinstance(batch, Batch) and batch.batch_size == 3
    assert ids_of(batch.sparse["user"]) == [[int(b)] for b in hash_bucket(["u1", "u2", "u3"], 10)]
    assert batch.dense["age"][:, 0].tolist() == [20.0, 30.0, 40.0]
    assert batch.sequence["hist"].ids.tolist() == [[2, 3], [4, 0], [0, 0]]
    assert batch.labels["label"].dtype == torch.float32 and batch.labels["label"].tolist() == [1.0, 0.0, 1.0]
    assert batch.sample_weight.tolist() == [0.5, 1.0, 2.0]
    # string item ids -> FNV-1a keys, equal for equal ids, stable
    assert batch.item_key.view(torch.int64).tolist() == item_keys(pa.array(["foobar", "a", "foobar"])).tolist()
    assert batch.item_key[0] == batch.item_key[2] != batch.item_key[1]
    assert np.int64(batch.item_key[1]).view(np.uint64) == 0xAF63DC4C8601EC8C
    assert batch.item_log_q is None
    values, offsets = batch.extra["seen"]
    assert values.tolist() == [1, 2, 3] and offsets.tolist() == [0, 2, 2, 3]
    # same table parsed twice: identical keys
    assert torch.equal(parser(table).item_key, batch.item_key)


def test_batch_parser_missing_column_names_source_and_column():
    table = pa.table({"user_id": ["u"], "hist": [[1]]})
    with pytest.raises(FeatureInputError, match=r"part-7\.parquet: missing column\(s\) \['age'\]"):
        make_parser()(table, "part-7.parquet")
    with pytest.raises(FeatureInputError, match="'label'"):
        make_parser(label_fields=["label"])(pa.table({"user_id": ["u"], "age": [1.0], "hist": [[1]]}), "s")


def test_batch_parser_bad_labels_and_lists():
    base = {"user_id": ["u", "v"], "age": [1.0, 2.0], "hist": [[1], [2]]}
    with pytest.raises(FeatureInputError, match="s: column 'label' has 1 null"):
        make_parser(label_fields=["label"])(pa.table({**base, "label": [1.0, None]}), "s")
    with pytest.raises(FeatureInputError, match="column 'label' must be numeric"):
        make_parser(label_fields=["label"])(pa.table({**base, "label": ["x", "y"]}), "s")
    with pytest.raises(FeatureInputError, match="column 'seen' must be a list"):
        make_parser(list_fields=["seen"])(pa.table({**base, "seen": [1, 2]}), "s")


def test_batch_parser_item_log_q_from_item_frequency():
    freq = ItemFrequency.from_item_ids(pa.array(["a", "a", "a", "b"]))
    table = pa.table({"user_id": ["u", "v", "w"], "age": [1.0, 2.0, 3.0], "hist": [[1], [2], [3]],
                      "item": ["a", "b", "never_seen"]})
    batch = make_parser(item_id_field="item", negatives=BatchNegatives(item_frequency=freq))(table)
    assert batch.item_log_q.dtype == torch.float32
    assert batch.item_log_q.tolist() == pytest.approx([math.log(3 / 4), math.log(1 / 4), math.log(1 / 4)])


def test_item_frequency_integer_ids():
    freq = ItemFrequency.from_item_ids(np.array([5, 5, 9, 1, 5, 9]))
    got = freq.log_q(np.array([9, 5, 1, 7], np.int64))
    assert got.tolist() == pytest.approx([math.log(2 / 6), math.log(3 / 6), math.log(1 / 6), math.log(1 / 6)])


def test_batch_to_moves_every_tensor_and_keeps_extra():
    b = Batch(batch_size=1, sparse={"a": SparseIds(torch.tensor([1]), torch.tensor([0, 1]))},
              sequence={"s": SequenceIds(torch.tensor([[1, 0]]), torch.tensor([1]))},
              dense={"d": torch.ones(1, 1)}, extra={"k": object()})
    moved = b.to("cpu")
    assert moved.sparse["a"].values.tolist() == [1] and moved.sequence["s"].lengths.tolist() == [1]
    assert moved.extra is b.extra and moved.batch_size == 1 and moved.item_key is None
