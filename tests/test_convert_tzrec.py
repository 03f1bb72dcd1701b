"""recframe convert-tzrec: TorchEasyRec DSSM / DSSMV2 configs -> valid recframe configs plus the
list of what could not be mapped.

The two TorchEasyRec configs below are written for these tests in the shape of TorchEasyRec's
public Taobao match examples (dssm_taobao / dssm_v2_taobao / mind_taobao): ODPS inputs, FG
expressions, hash buckets and vocabularies, shared embedding names, grouped sequence features
with their encoders, a SEQUENCE group, graph-learn samplers, optimizers with schedules, losses,
metrics, eval and export configs.
"""

from __future__ import annotations

import math
import os

import pytest

from recframe.cli.convert_tzrec import main
from recframe.config import ConfigError, load_pipeline_config, parse_pipeline_config, validate_pipeline_config
from recframe.config.convert_tzrec import convert_tzrec, format_converted_config
from recframe.config.textproto import Identifier, parse_text_proto
from recframe.protos import data_pb2, feature_pb2, model_pb2

# DSSM, raw columns transformed by TorchEasyRec's FG (FG_DAG), tables on ODPS.
TZREC_DSSM = r"""
# A TorchEasyRec DSSM of a shop: who clicks which item.
train_input_path: "odps://shop_project/tables/shop_click_train"
eval_input_path: "odps://shop_project/tables/shop_click_eval/ds=20240601"
model_dir: "experiments/shop_dssm"
train_config {
    sparse_optimizer {
        adagrad_optimizer { lr: 0.005 }
        exponential_decay_learning_rate { decay_size: 2000 decay_factor: 0.9 min_learning_rate: 0.0001 }
    }
    dense_optimizer {
        adam_optimizer { lr: 0.0005 amsgrad: true }
        cosine_annealing_learning_rate { T_max: 50000 warmup_size: 500 }
    }
    num_epochs: 3
    save_checkpoints_steps: 2000
    log_step_count_steps: 200
    use_tensorboard: false
    fine_tune_checkpoint: "experiments/shop_dssm_v0/model.ckpt-10000"
}
eval_config {
    num_steps: 100
}
export_config {
    exporter_type: "best"
    best_exporter_metric: "recall@5"
}
data_config {
    batch_size: 4096
    dataset_type: OdpsDataset
    fg_mode: FG_DAG
    label_fields: "click"
    num_workers: 4
    negative_sampler {
        input_path: "odps://shop_project/tables/shop_item_gl"
        num_sample: 512
        num_eval_sample: 512
        attr_fields: ["item_id", "shop_id", "category", "tags", "price", "ctr"]
        item_id_field: "item_id"
        attr_delimiter: "\x02"
    }
}
feature_configs {
    id_feature {
        feature_name: "uid"
        expression: "user:user_id"
        hash_bucket_size: 500000
        embedding_dim: 32
        init_fn: "nn.init.uniform_,a=-0.05,b=0.05"
    }
}
feature_configs { id_feature { feature_name: "gender" expression: "user:gender" vocab_list: ["m", "f"] embedding_dim: 4 } }
feature_configs {
    id_feature {
        feature_name: "city_level"
        expression: "user:city_level"
        vocab_dict { key: "tier2" value: 3 }
        vocab_dict { key: "tier1" value: 2 }
        embedding_dim: 4
    }
}
feature_configs { raw_feature { feature_name: "age" expression: "user:age" boundaries: [18, 25, 35, 50] embedding_dim: 8 } }
feature_configs {
    raw_feature {
        feature_name: "active_days"
        expression: "user:active_days"
        normalizer: "method=zscore,mean=12.5,standard_deviation=4.0"
    }
}
feature_configs { id_feature { feature_name: "hour" expression: "context:hour" num_buckets: 24 embedding_dim: 4 } }
feature_configs {
    combo_feature {
        feature_name: "gender_x_city"
        expression: ["user:gender", "user:city_level"]
        hash_bucket_size: 1000
        embedding_dim: 8
    }
}
feature_configs {
    lookup_feature {
        feature_name: "fav_cate_clicks"
        map: "user:cate_click_kv"
        key: "user:fav_category"
        boundaries: [1, 5, 20]
        embedding_dim: 4
    }
}
feature_configs {
    match_feature {
        feature_name: "brand_pref"
        nested_map: "user:brand_pref_kv"
        pkey: "user:fav_category"
        skey: "ALL"
        num_buckets: 10
        embedding_dim: 4
    }
}
feature_configs { id_feature { feature_name: "item_id" expression: "item:item_id" hash_bucket_size: 200000 embedding_dim: 32 } }
feature_configs {
    id_feature {
        feature_name: "shop_id"
        expression: "item:shop_id"
        hash_bucket_size: 50000
        embedding_dim: 16
        embedding_name: "shop_emb"
    }
}
feature_configs { id_feature { feature_name: "category" expression: "item:category" num_buckets: 1000 embedding_dim: 16 } }
feature_configs {
    id_feature {
        feature_name: "tags"
        expression: "item:tags"
        hash_bucket_size: 5000
        embedding_dim: 8
        pooling: "mean"
        separator: "|"
    }
}
feature_configs { raw_feature { feature_name: "price" expression: "item:price" boundaries: [9.9, 19.9, 49.9, 99.0] embedding_dim: 8 } }
feature_configs {
    expr_feature {
        feature_name: "ctr"
        expression: "click/(1+pv)"
        variables: ["item:click", "item:pv"]
        boundaries: [0.01, 0.05, 0.1]
        embedding_dim: 4
    }
}
feature_configs {
    sequence_feature {
        sequence_name: "click_seq"
        sequence_length: 50
        sequence_delim: ";"
        sequence_pk: "user:click_seq"
        features { id_feature { feature_name: "item_id" expression: "item:item_id" hash_bucket_size: 200000 embedding_dim: 32 } }
        features {
            id_feature {
                feature_name: "shop_id"
                expression: "item:shop_id"
                hash_bucket_size: 50000
                embedding_dim: 16
                embedding_name: "shop_emb"
            }
        }
        features { raw_feature { feature_name: "ts" expression: "item:ts" } }
    }
}
model_config {
    feature_groups {
        group_name: "user"
        feature_names: ["uid", "gender", "city_level", "age", "active_days", "hour"]
        feature_names: "gender_x_city"
        feature_names: "fav_cate_clicks"
        feature_names: "brand_pref"
        group_type: DEEP
        sequence_groups {
            group_name: "click_seq"
            feature_names: ["click_seq__item_id", "click_seq__shop_id", "click_seq__ts"]
        }
        sequence_encoders {
            pooling_encoder { input: "click_seq" pooling_type: "sum" }
        }
    }
    feature_groups {
        group_name: "item"
        feature_names: ["item_id", "shop_id", "category", "tags", "price", "ctr"]
        group_type: DEEP
    }
    dssm {
        user_tower {
            input: 'user'
            mlp { hidden_units: [256, 128] dropout_ratio: [0.1, 0.1] activation: "nn.ReLU" use_bn: True }
        }
        item_tower {
            input: 'item'
            mlp { hidden_units: [256, 128] }
        }
        output_dim: 32
        similarity: COSINE
        temperature: 0.05
    }
    losses { softmax_cross_entropy {} }
    metrics { recall_at_k { top_k: 1 } }
    metrics { recall_at_k { top_k: 5 } }
}
"""

# DSSMV2, FG-encoded columns (fg_mode left at its default FG_NONE), local Parquet files.
TZREC_DSSM_V2 = r"""
train_input_path: "data/shop/train/*.parquet"
eval_input_path: "data/shop/eval/*.parquet"
model_dir: "experiments/shop_dssm_v2"
train_config {
    sparse_optimizer {
        rowwise_adagrad_optimizer { lr: 0.02 weight_decay: 0.0001 }
        constant_learning_rate {}
    }
    dense_optimizer {
        sgd_optimizer { lr: 0.01 }
        manual_step_learning_rate { schedule_sizes: [1000, 5000] learning_rates: [0.01, 0.001] }
    }
    num_steps: 20000
    grad_clipping { clipping_type: "norm" max_gradient: 5.0 }
    mixed_precision: "BF16"
    keep_checkpoint_max: 3
}
data_config {
    batch_size: 1024
    dataset_type: ParquetDataset
    label_fields: "click"
    shuffle: true
    shuffle_buffer_size: 16
    force_base_data_group: true
    hard_negative_sampler {
        user_input_path: "data/shop/gl/user"
        item_input_path: "data/shop/gl/item"
        hard_neg_edge_input_path: "data/shop/gl/hard_neg_edge"
        num_sample: 256
        num_hard_sample: 8
        attr_fields: ["item_id", "price"]
        item_id_field: "item_id"
        user_id_field: "user_id"
    }
}
feature_configs { id_feature { feature_name: "user_id" hash_bucket_size: 100000 embedding_dim: 16 } }
feature_configs { id_feature { feature_name: "gender" vocab_list: ["m", "f"] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "age" boundaries: [18, 30, 50] embedding_dim: 4 } }
feature_configs {
    combo_feature { feature_name: "gender_x_age" expression: ["user:gender", "user:age"] hash_bucket_size: 64 embedding_dim: 4 }
}
feature_configs { id_feature { feature_name: "item_id" hash_bucket_size: 200000 embedding_dim: 32 embedding_name: "item_emb" } }
feature_configs { raw_feature { feature_name: "price" } }
feature_configs {
    tokenize_feature { feature_name: "title_tokens" expression: "item:title" vocab_file: "tokenizer.json" embedding_dim: 16 }
}
feature_configs {
    sequence_id_feature {
        feature_name: "hist_item_id"
        sequence_length: 30
        sequence_delim: ";"
        hash_bucket_size: 200000
        embedding_dim: 32
        embedding_name: "item_emb"
    }
}
feature_configs { sequence_raw_feature { feature_name: "hist_ts" sequence_length: 30 } }
model_config {
    feature_groups {
        group_name: "user"
        feature_names: ["user_id", "gender", "age", "gender_x_age"]
        group_type: DEEP
        sequence_groups { group_name: "hist" feature_names: ["hist_item_id", "hist_ts"] }
        sequence_encoders { self_attention_encoder { input: "hist" num_heads: 4 multihead_attn_dim: 64 dropout: 0.1 } }
        sequence_encoders { pooling_encoder { input: "hist" } }
    }
    feature_groups { group_name: "item" feature_names: ["item_id", "price", "title_tokens"] group_type: DEEP }
    feature_groups { group_name: "hist_seq" feature_names: ["hist_item_id", "hist_ts"] group_type: SEQUENCE }
    dssm_v2 {
        user_tower { input: "user" mlp { hidden_units: [64, 32] activation: "Dice" } }
        item_tower { input: "item" mlp { hidden_units: [64, 32] } }
        output_dim: 16
        temperature: 0.1
        in_batch_negative: true
    }
    losses { softmax_cross_entropy { label_smoothing: 0.1 } }
    metrics { recall_at_k { top_k: 10 } }
    metrics { auc {} }
}
"""


def _feature(config, name):
    for wrapper in config.feature_configs:
        message = getattr(wrapper, wrapper.WhichOneof("feature"))
        if message.feature_name == name:
            return wrapper.WhichOneof("feature"), message
    raise AssertionError(f"no feature {name}")


def _group(config, name):
    return next(g for g in config.model_config.feature_groups if g.group_name == name)


def _notes(result, path):
    """The notes whose TorchEasyRec path is ``path``."""
    return [n for n in result.unmapped if n.path == path]


def _one(result, path):
    found = _notes(result, path)
    assert len(found) == 1, (path, [str(n) for n in result.unmapped])
    return found[0]


@pytest.fixture(scope="module")
def dssm():
    return convert_tzrec(TZREC_DSSM, "shop_dssm.config")


@pytest.fixture(scope="module")
def dssm_v2():
    return convert_tzrec(TZREC_DSSM_V2, "shop_dssm_v2.config")


# -- the schema-less text format parser -----------------------------------------------------------------

def test_textproto_values_lists_comments_and_escapes():
    message = parse_text_proto(
        'a: "x\\x02\\t" \'y\'  # comment\n'
        "b: [1, -2.5, 0x10, 1e-3, inf]; c: True d { e: 1, f: DEEP } d: { e: 2 }\n"
        "g: [{h: 1}, {h: 2}] i < j: -3 > k: []\n", "t.config")
    assert message["a"] == ["x\x02\ty"]
    assert message["b"][:4] == [1, -2.5, 16, 0.001] and math.isinf(message["b"][4])
    assert message["c"] == ["True"] and isinstance(message["c"][0], Identifier)
    assert [d["e"] for d in message["d"]] == [[1], [2]] and message["d"][0]["f"] == ["DEEP"]
    assert [g["h"] for g in message["g"]] == [[1], [2]]
    assert message["i"][0]["j"] == [-3] and message["k"] == []
    assert message.lines["d"] == [2, 2] and message.lines["g"] == [3, 3]


@pytest.mark.parametrize("text, where", [
    ("a {\n b: 1\n", "t.config:2:"),            # unclosed message
    ("a: 1\nb: [1, 2\n", "t.config:2:"),        # unclosed list
    ("a: 1\n}\n", "t.config:2:1: unexpected '}'"),
    ('a: "unterminated\n', "t.config:1:4: unexpected character"),
    ("a 1\n", "t.config:1:3: unexpected '1', expected ':' or '{'"),
])
def test_textproto_errors_name_the_line(text, where):
    with pytest.raises(ConfigError, match=None) as err:
        parse_text_proto(text, "t.config")
    assert str(err.value).startswith(where), str(err.value)


# -- DSSM, FG_DAG, ODPS ----------------------------------------------------------------------------------

def test_dssm_converts_to_a_valid_config(dssm, tmp_path):
    assert dssm.model == "dssm"
    assert validate_pipeline_config(dssm.config, str(tmp_path / "shop_dssm.config")) == []
    # the written text (with its comment header) parses back to the same config
    text = format_converted_config(dssm)
    assert parse_pipeline_config(text) == dssm.config
    assert text.startswith("# Converted by `recframe convert-tzrec` from the TorchEasyRec dssm config")
    assert f"# Not mapped ({len(dssm.unmapped)}):" in text


def test_dssm_features(dssm):
    config = dssm.config
    kind, uid = _feature(config, "uid")
    assert kind == "id_feature" and uid.input_name == "user_id"  # the column of "user:user_id"
    assert uid.hash_bucket_size == 500000 and uid.embedding_dim == 32
    assert (uid.initializer.uniform.a, uid.initializer.uniform.b) == pytest.approx((-0.05, 0.05))
    assert uid.separator == "\x1d"  # FG's default multi-value separator, kept explicit
    assert not _feature(config, "gender")[1].HasField("input_name")
    assert list(_feature(config, "gender")[1].vocab_list) == ["m", "f"]
    assert list(_feature(config, "city_level")[1].vocab_list) == ["tier1", "tier2"]  # vocab_dict by index
    kind, age = _feature(config, "age")
    assert kind == "raw_feature" and list(age.boundaries) == [18, 25, 35, 50] and age.embedding_dim == 8
    active = _feature(config, "active_days")[1]
    assert (active.normalizer.z_score.mean, active.normalizer.z_score.std) == (12.5, 4.0)
    assert _feature(config, "hour")[1].num_buckets == 24
    _, shop = _feature(config, "shop_id")
    assert shop.embedding_name == "shop_emb" and shop.hash_bucket_size == 50000
    _, tags = _feature(config, "tags")
    assert tags.pooling == feature_pb2.MEAN and tags.separator == "|"
    # FG-only features read a precomputed column named like the feature
    kind, combo = _feature(config, "gender_x_city")
    assert kind == "id_feature" and combo.hash_bucket_size == 1000 and not combo.HasField("input_name")
    kind, lookup = _feature(config, "fav_cate_clicks")
    assert kind == "raw_feature" and list(lookup.boundaries) == [1, 5, 20] and lookup.embedding_dim == 4
    assert _feature(config, "brand_pref")[1].num_buckets == 10
    assert list(_feature(config, "ctr")[1].boundaries) == pytest.approx([0.01, 0.05, 0.1])
    # the grouped sequence: "<sequence_name>__<feature>", reading the prefixed item-side column
    kind, hist = _feature(config, "click_seq__item_id")
    assert kind == "sequence_id_feature" and not hist.HasField("input_name")
    assert (hist.sequence_length, hist.sequence_delim, hist.hash_bucket_size) == (50, ";", 200000)
    assert _feature(config, "click_seq__shop_id")[1].embedding_name == "shop_emb"
    assert _feature(config, "click_seq__ts")[0] == "sequence_raw_feature"


def test_dssm_model_data_and_training(dssm):
    config = dssm.config
    model = config.model_config.dssm
    assert list(model.user_tower.input) == ["user", "click_seq"]
    assert list(model.item_tower.input) == ["item"]
    assert list(model.user_tower.mlp.hidden_units) == [256, 128]
    assert list(model.user_tower.mlp.dropout_ratio) == pytest.approx([0.1, 0.1]) and model.user_tower.mlp.use_bn
    assert model.output_dim == 32 and model.similarity == model_pb2.COSINE
    assert model.temperature == pytest.approx(0.05)
    assert model.HasField("in_batch_negative") and model.in_batch_negative is False  # explicit, tzrec's default
    seq = _group(config, "click_seq")
    assert seq.group_type == model_pb2.SEQUENCE
    assert list(seq.feature_names) == ["click_seq__item_id", "click_seq__shop_id"]
    assert seq.sequence_encoder.pooling_encoder.pooling_type == "sum"
    assert "gender_x_city" in _group(config, "user").feature_names
    assert [m.in_batch_recall_at_k.top_k for m in config.model_config.metrics] == [1, 5]
    assert [loss.WhichOneof("loss") for loss in config.model_config.losses] == ["softmax_cross_entropy"]

    data = config.data_config
    assert data.dataset_type == data_pb2.ParquetDataset and data.batch_size == 4096 and data.num_workers == 4
    assert list(data.label_fields) == [] and data.item_id_field == "item_id"  # the softmax reads no label
    assert any("label_fields: ['click'] (no loss of the converted model reads a label" in n.what
               for n in dssm.unmapped)
    assert data.HasField("shuffle") and data.shuffle is False
    sampler = data.negative_sampler
    assert (sampler.num_sample, sampler.input_path, sampler.weight_field) == (
        512, "odps://shop_project/tables/shop_item_gl", "weight")

    train = config.train_config
    assert train.sparse_optimizer.adagrad_optimizer.lr == pytest.approx(0.005)
    decay = train.sparse_optimizer.exponential_decay_learning_rate
    assert (decay.decay_steps, decay.staircase) == (2000, True)  # tzrec's staircase default, written
    assert decay.decay_rate == pytest.approx(0.9) and decay.min_learning_rate == pytest.approx(0.0001)
    assert train.dense_optimizer.adam_optimizer.lr == pytest.approx(0.0005)
    cosine = train.dense_optimizer.cosine_learning_rate
    assert (cosine.decay_steps, cosine.warmup_steps) == (50000, 500)
    assert (train.num_epochs, train.save_checkpoints_steps, train.log_step_count_steps) == (3, 2000, 200)
    assert config.train_input_path == "odps://shop_project/tables/shop_click_train"
    assert config.model_dir == "experiments/shop_dssm"


def test_dssm_unmapped(dssm):
    note = _one(dssm, "train_input_path")
    assert "ODPS table" in note.what and "export the table to Parquet" in note.nearest
    assert "ODPS table" in _one(dssm, "eval_input_path").what
    assert "set item_input_path to the item table" in _one(dssm, "eval_config").nearest
    assert "OdpsDataset" in _one(dssm, "data_config.dataset_type").what
    assert "FG_DAG" in _one(dssm, "data_config.fg_mode").what
    note = _one(dssm, "model_config.dssm.in_batch_negative")
    assert "TorchEasyRec's default is false" in note.what and "in_batch_negative: false" in note.nearest
    # graph-learn sampler: the pool layout, the packed attributes, the eval sample count
    pool = _one(dssm, "data_config.negative_sampler.input_path")
    assert "graph-learn item table" in pool.what
    assert "item_id, shop_id, category, tags, price, ctr, weight" in pool.nearest
    attrs = _one(dssm, "data_config.negative_sampler.attr_fields")
    assert 'attr_delimiter "\\x02"' in attrs.what and "its own column" in attrs.nearest
    assert "whole item_input_path catalogue" in _one(dssm, "data_config.negative_sampler.num_eval_sample").nearest
    # FG-only features, each with the column to precompute
    for name, kind, target in [("gender_x_city", "combo_feature", "id_feature"),
                               ("fav_cate_clicks", "lookup_feature", "raw_feature"),
                               ("brand_pref", "match_feature", "id_feature"),
                               ("ctr", "expr_feature", "raw_feature")]:
        note = _one(dssm, f"feature_configs[feature_name={name}].{kind}")
        assert note.what.startswith(f"{kind} is computed by TorchEasyRec's feature generator (FG)")
        assert f'precompute it into column "{name}"' in note.nearest and f'{target} "{name}"' in note.nearest
    assert "from user:gender, user:city_level" in _one(dssm, "feature_configs[feature_name=gender_x_city]."
                                                             "combo_feature").what
    # the sequence of numbers cannot be embedded; the serving key has no equivalent
    seq_path = "model_config.feature_groups[group_name=user].sequence_groups[group_name=click_seq].feature_names"
    assert 'sequence_raw_feature "click_seq__ts" left out' in _one(dssm, seq_path).what
    assert _notes(dssm, "feature_configs[sequence_name=click_seq].sequence_feature.sequence_pk")
    # training, evaluation and export settings without a config field
    note = _one(dssm, "train_config.fine_tune_checkpoint")
    assert "recframe cannot read" in note.what and "train_config.fine_tune_checkpoint" in note.nearest
    assert not dssm.config.train_config.fine_tune_checkpoint
    assert _one(dssm, "train_config.use_tensorboard").what == "use_tensorboard: false"
    assert "amsgrad" in _one(dssm, "train_config.dense_optimizer.adam_optimizer.amsgrad").what
    assert "every row of eval_input_path" in _one(dssm, "eval_config.num_steps").nearest
    assert "--checkpoint_path best" in _one(dssm, "export_config.exporter_type").nearest
    assert "eval_config.best_metric" in _one(dssm, "export_config.best_exporter_metric").nearest
    assert "full-corpus" in _one(dssm, "model_config.metrics[0].recall_at_k").nearest
    # every note reads "path: what; nearest in recframe: ..."
    assert all(str(n).startswith(n.path + ": ") and "; nearest in recframe: " in str(n) for n in dssm.unmapped)


# -- DSSMV2, FG-encoded input -----------------------------------------------------------------------------

def test_dssm_v2_converts_to_a_valid_config(dssm_v2, tmp_path):
    assert dssm_v2.model == "dssm_v2"
    assert validate_pipeline_config(dssm_v2.config, str(tmp_path / "v2.config")) == []
    assert parse_pipeline_config(format_converted_config(dssm_v2)) == dssm_v2.config


def test_dssm_v2_encoded_features(dssm_v2):
    config = dssm_v2.config
    # FG-encoded columns hold bucket ids: each id-like feature reads them as num_buckets
    _, user = _feature(config, "user_id")
    assert user.num_buckets == 100000 and not user.HasField("hash_bucket_size") and user.separator == "\x03"
    _, gender = _feature(config, "gender")
    assert gender.num_buckets == 4 and not gender.vocab_list  # 2 values + FG's default and <OOV> buckets
    kind, age = _feature(config, "age")
    assert kind == "id_feature" and age.num_buckets == 4  # 3 boundaries -> 4 bucket ids
    kind, combo = _feature(config, "gender_x_age")
    assert kind == "id_feature" and combo.num_buckets == 64
    kind, price = _feature(config, "price")
    assert kind == "raw_feature" and not price.boundaries
    _, item = _feature(config, "item_id")
    kind, hist = _feature(config, "hist_item_id")
    assert kind == "sequence_id_feature" and hist.embedding_name == item.embedding_name == "item_emb"
    assert (hist.num_buckets, hist.sequence_length, hist.sequence_delim) == (200000, 30, ";")
    # Only in a SEQUENCE group: its encoder pools, a feature pooling would be ignored (and is refused)
    assert not hist.HasField("pooling")
    assert any(n.what == "pooling of 'hist_item_id', which is only in SEQUENCE groups" for n in dssm_v2.unmapped)
    assert _feature(config, "hist_ts")[0] == "sequence_raw_feature"
    with pytest.raises(AssertionError):
        _feature(config, "title_tokens")


def test_dssm_v2_model_data_and_training(dssm_v2):
    config = dssm_v2.config
    model = config.model_config.dssm_v2
    assert model.in_batch_negative is True and model.temperature == pytest.approx(0.1) and model.output_dim == 16
    assert list(model.user_tower.input) == ["user", "hist", "hist_1"]  # one SEQUENCE group per encoder
    attention = _group(config, "hist").sequence_encoder.self_attention
    assert (attention.num_heads, attention.dropout) == (4, pytest.approx(0.1))
    assert _group(config, "hist_1").sequence_encoder.pooling_encoder.pooling_type == "mean"
    assert list(_group(config, "hist").feature_names) == ["hist_item_id"]
    assert list(_group(config, "item").feature_names) == ["item_id", "price"]
    assert "hist_seq" not in [g.group_name for g in config.model_config.feature_groups]
    assert model.user_tower.mlp.activation == "relu" and not model.user_tower.mlp.HasField("activation")
    assert not config.model_config.losses[0].softmax_cross_entropy.HasField("label_smoothing")
    assert [m.WhichOneof("metric") for m in config.model_config.metrics] == ["in_batch_recall_at_k"]

    data = config.data_config
    sampler = data.hard_negative_sampler
    assert (sampler.input_path, sampler.hard_neg_edge_input_path) == ("data/shop/gl/item", "data/shop/gl/hard_neg_edge")
    assert (sampler.num_sample, sampler.num_hard_sample, sampler.user_id_field) == (256, 8, "user_id")
    assert data.item_id_field == "item_id" and data.shuffle is True
    assert data.shuffle_buffer_size == 16 * 1024  # TorchEasyRec's buffer counts batches

    train = config.train_config
    assert train.sparse_optimizer.rowwise_adagrad_optimizer.lr == pytest.approx(0.02)
    sgd = train.dense_optimizer.sgd_optimizer
    assert sgd.lr == pytest.approx(0.01) and sgd.momentum == pytest.approx(0.9)  # tzrec's default momentum
    assert train.dense_optimizer.HasField("constant_learning_rate")  # manual steps have no equivalent
    assert train.num_steps == 20000 and train.num_epochs == 1_000_000  # num_steps decides, as in tzrec
    assert train.gradient_clip_norm == pytest.approx(5.0) and train.mixed_precision == "bf16"
    assert train.keep_checkpoint_max == 3


def test_dssm_v2_unmapped(dssm_v2):
    assert "FG_NONE" in _one(dssm_v2, "data_config.fg_mode").what
    assert "in_batch_negative" not in {n.path.rsplit(".", 1)[-1] for n in dssm_v2.unmapped}  # it was written
    assert "weight_decay" in _one(dssm_v2, "train_config.sparse_optimizer.rowwise_adagrad_optimizer."
                                           "weight_decay").what
    assert "piecewise-constant" in _one(dssm_v2, "train_config.dense_optimizer.manual_step_learning_rate").what
    assert "num_epochs: 1000000" in _one(dssm_v2, "train_config.num_steps").nearest
    assert "text_feature" in _one(dssm_v2, "feature_configs[feature_name=title_tokens].tokenize_feature").nearest
    assert 'feature "title_tokens" left out' in _one(dssm_v2, "model_config.feature_groups[group_name=item]."
                                                              "feature_names").what
    assert "not the input of either tower" in _one(dssm_v2, "model_config.feature_groups[group_name=hist_seq]").what
    assert "Dice" in _one(dssm_v2, "model_config.dssm_v2.user_tower.mlp.activation").what
    assert "ignore" in _one(dssm_v2, "model_config.losses.softmax_cross_entropy.label_smoothing").nearest
    assert "auc metric" == _one(dssm_v2, "model_config.metrics[1].auc").what
    assert "multihead_attn_dim: 64" in _one(
        dssm_v2, "model_config.feature_groups[group_name=user].sequence_encoders[0].self_attention_encoder."
                 "multihead_attn_dim").what
    assert "none needed" in _one(dssm_v2, "data_config.hard_negative_sampler.user_input_path").nearest
    assert "none needed" in _one(dssm_v2, "data_config.force_base_data_group").nearest
    assert _notes(dssm_v2, "data_config.hard_negative_sampler.hard_neg_edge_input_path")


# -- other TorchEasyRec constructs ------------------------------------------------------------------------

TZREC_OTHER = r"""
train_input_path: "data/train.csv"
eval_input_path: "data/eval.csv"
model_dir: "m"
data_config {
    dataset_type: CsvDataset
    delimiter: "\t"
    with_header: true
    fg_encoded: false
    negative_sampler_v2 {
        user_input_path: "gl/user" item_input_path: "gl/item" pos_edge_input_path: "gl/pos_edge"
        num_sample: 8 attr_fields: "iid" item_id_field: "iid" user_id_field: "uid"
    }
}
feature_configs { id_feature { feature_name: "uid" expression: "user:uid" zch { zch_size: 1000 lru {} } embedding_dim: 8 } }
feature_configs { raw_feature { feature_name: "score" expression: "user:score" normalizer: "method=minmax,min=0,max=5" } }
feature_configs { raw_feature { feature_name: "clicks" expression: "user:clicks" normalizer: "method=log10,threshold=1e-10" } }
feature_configs { id_feature { feature_name: "iid" expression: "item:iid" hash_bucket_size: 100 embedding_dim: 8 } }
feature_configs { sequence_id_feature { feature_name: "hist" expression: "user:hist_iids" sequence_length: 5 hash_bucket_size: 100 embedding_dim: 8 } }
model_config {
    feature_groups {
        group_name: "u" feature_names: ["uid", "score", "clicks"] group_type: WIDE
        sequence_groups { group_name: "s" feature_names: ["iid", "hist"] }
        sequence_encoders { din_encoder { attn_mlp { hidden_units: [8] } } }
    }
    feature_groups { group_name: "i" feature_names: ["iid"] group_type: DEEP }
    dssm {
        user_tower { input: "u" mlp { hidden_units: [8] } }
        item_tower { input: "i" mlp { hidden_units: [8] } }
        output_dim: 4
        similarity: EUCLID
    }
}
train_config {
    sparse_optimizer { adam_optimizer { lr: 0.01 weight_decay: 0.1 } constant_learning_rate {} }
    dense_optimizer {
        adamw_optimizer { lr: 0.01 }
        exponential_decay_learning_rate { decay_size: 10 by_epoch: true }
    }
    num_epochs: 2
}
"""


def test_other_constructs(tmp_path):
    result = convert_tzrec(TZREC_OTHER, "other.config")
    config = result.config
    assert validate_pipeline_config(config, str(tmp_path / "other.config")) == []
    data = config.data_config
    assert data.dataset_type == data_pb2.CsvDataset and data.csv_delimiter == "\t"
    sampler = data.negative_sampler_v2
    assert (sampler.input_path, sampler.edge_input_path, sampler.num_sample, sampler.user_id_field) == (
        "gl/item", "gl/pos_edge", 8, "uid")
    assert "FG_DAG" in _one(result, "data_config.fg_encoded").what  # fg_encoded false, fg_threads 1
    assert _feature(config, "uid")[1].hash_bucket_size == 1000
    assert "zero-collision" in _one(result, "feature_configs[feature_name=uid].id_feature.zch").what
    score = _feature(config, "score")[1]
    assert (score.normalizer.min_max.min, score.normalizer.min_max.max) == (0, 5)
    assert "log1p" in _one(result, "feature_configs[feature_name=clicks].raw_feature.normalizer").nearest
    _, hist = _feature(config, "hist")
    assert hist.input_name == "hist_iids" and not hist.HasField("pooling")  # only in a SEQUENCE group
    assert _group(config, "u").group_type == model_pb2.DEEP
    assert "WIDE" in _one(result, "model_config.feature_groups[group_name=u].group_type").what
    # the target-attention encoder becomes mean pooling over the id sequence, its query left out
    assert list(_group(config, "s").feature_names) == ["hist"]
    assert _group(config, "s").sequence_encoder.pooling_encoder.pooling_type == "mean"
    assert "target attention" in _one(result, "model_config.feature_groups[group_name=u].sequence_encoders."
                                              "din_encoder").what
    assert config.model_config.dssm.similarity == model_pb2.COSINE
    assert "EUCLID" in _one(result, "model_config.dssm.similarity").what
    train = config.train_config
    assert not train.sparse_optimizer.adam_optimizer.HasField("weight_decay")
    assert "dense_gradients: true" in _one(result, "train_config.sparse_optimizer.adam_optimizer."
                                                   "weight_decay").nearest
    assert train.dense_optimizer.adamw_optimizer.weight_decay == 0  # tzrec's default, not recframe's 0.01
    assert train.dense_optimizer.exponential_decay_learning_rate.decay_steps == 10
    assert "count epochs" in _one(result, "train_config.dense_optimizer.exponential_decay_learning_rate."
                                          "by_epoch").what


def test_variational_dropout_and_its_embedding_wise_option(tmp_path):
    text = TZREC_DSSM_V2.replace("    dssm_v2 {", "    variational_dropout { regularization_lambda: 0.02 "
                                                  "embedding_wise_variational_dropout: true }\n    dssm_v2 {")
    result = convert_tzrec(text, "x.config")
    dropout = result.config.model_config.variational_dropout
    assert dropout.regularization_lambda == pytest.approx(0.02) and dropout.embedding_wise
    assert not [n for n in result.unmapped if "variational_dropout" in n.path]
    assert validate_pipeline_config(result.config, str(tmp_path / "x.config")) == []
    plain = convert_tzrec(TZREC_DSSM_V2.replace("    dssm_v2 {", "    variational_dropout {}\n    dssm_v2 {"), "x.config")
    assert plain.config.model_config.HasField("variational_dropout")
    assert not plain.config.model_config.variational_dropout.embedding_wise


# -- what is refused ------------------------------------------------------------------------------------

def test_not_a_dssm_config_is_refused():
    text = TZREC_DSSM.replace("dssm {", "mind {")
    with pytest.raises(ConfigError, match=r"x\.config:\d+: model_config: got mind, expected dssm or dssm_v2"):
        convert_tzrec(text, "x.config")
    with pytest.raises(ConfigError, match="model_config: not set"):
        convert_tzrec('model_dir: "m"', "x.config")


def test_wrong_value_type_names_line_and_field():
    text = TZREC_DSSM.replace("num_sample: 512", 'num_sample: "many"')
    with pytest.raises(ConfigError, match=r'x\.config:\d+: data_config\.negative_sampler\.num_sample: got "many", '
                                          r"expected a int value"):
        convert_tzrec(text, "x.config")


def test_unknown_fields_are_listed_not_dropped():
    text = TZREC_DSSM.replace("num_epochs: 3", "num_epochs: 3\n    shiny_new_option: 7")
    result = convert_tzrec(text, "x.config")
    note = _one(result, "train_config.shiny_new_option")
    assert note.what == "shiny_new_option: 7 (no recframe equivalent)"


def test_unset_embedding_names_keep_tzrec_sharing():
    # tzrec names an unnamed table "<feature>_emb": a feature that names "item_emb" shares item's table
    text = TZREC_DSSM.replace('embedding_name: "shop_emb"', 'embedding_name: "item_id_emb"')
    result = convert_tzrec(text, "x.config")
    assert _feature(result.config, "item_id")[1].embedding_name == "item_id_emb"
    assert not _feature(result.config, "category")[1].embedding_name


# -- the command ----------------------------------------------------------------------------------------

def test_cli_writes_a_valid_config(tmp_path, capsys):
    source, target = tmp_path / "dssm_taobao.config", tmp_path / "out" / "dssm.config"
    source.write_text(TZREC_DSSM)
    assert main([str(source), str(target)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and f"OK: {target}" in out
    assert "  - data_config.negative_sampler.attr_fields: graph-learn attributes" in out
    text = target.read_text()
    assert "#   - train_input_path: ODPS table" in text
    config = load_pipeline_config(target)
    assert config.model_config.dssm.in_batch_negative is False
    assert _feature(config, "uid")[1].hash_bucket_size == 500000
    assert [p.name for p in target.parent.iterdir()] == ["dssm.config"]  # no temporary left behind


def test_cli_refuses_existing_output_without_overwrite(tmp_path, capsys):
    source, target = tmp_path / "v2.config", tmp_path / "out.config"
    source.write_text(TZREC_DSSM_V2)
    target.write_text("# mine\n")
    assert main([str(source), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {target}: exists, expected a new file (pass --overwrite to replace it)"
    assert target.read_text() == "# mine\n"
    assert main([str(source), str(target), "--overwrite"]) == 0
    assert load_pipeline_config(target).model_config.HasField("dssm_v2")


@pytest.mark.parametrize("text, message", [
    ("model_config {\n  dssm {\n", "unexpected end of the file"),
    (TZREC_DSSM.replace("dssm {", "deepfm {"), "got deepfm, expected dssm or dssm_v2"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, text, message):
    source, target = tmp_path / "in.config", tmp_path / "out.config"
    source.write_text(text)
    target.write_text("# old\n")
    assert main([str(source), str(target), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}") and message in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "# old\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.config", "out.config"]


def test_cli_missing_input_and_bad_suffix(tmp_path, capsys):
    assert main([str(tmp_path / "absent.config"), str(tmp_path / "out.config")]) == 2
    assert "config file not found" in capsys.readouterr().err
    source = tmp_path / "in.config"
    source.write_text(TZREC_DSSM)
    assert main([str(source), str(tmp_path / "out.json")]) == 2
    assert "unsupported suffix" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out.config") and not os.path.exists(tmp_path / "out.json")


def test_cli_invalid_result_is_written_and_its_problems_printed(tmp_path, capsys):
    # no sampler and in_batch_negative false: the converted model has no negatives at all
    text = TZREC_DSSM.replace("negative_sampler {", "unused_sampler {")
    source, target = tmp_path / "in.config", tmp_path / "out.config"
    source.write_text(text)
    status = main([str(source), str(target)])
    captured = capsys.readouterr()
    assert status == 2, captured
    assert target.exists() and "  - data_config: no sampler names the item id column" in captured.out
    assert (f"{target}: model_config.dssm.in_batch_negative: false with softmax_cross_entropy "
            "(model_config.losses[0]) and no data_config sampler") in captured.err
    assert captured.err.strip().endswith(f"check it with recframe validate --pipeline_config {target}")


def test_evaluation_auc_of_a_pointwise_model_names_pointwise_metrics():
    text = TZREC_DSSM_V2.replace("losses { softmax_cross_entropy { label_smoothing: 0.1 } }",
                                 "losses { binary_cross_entropy {} }")
    result = convert_tzrec(text, "pointwise.config")
    note = _one(result, "model_config.metrics[1].auc")
    assert note.what == "auc: TorchEasyRec's evaluation auc"
    assert "measured on the training batches" in str(note)
    assert "eval_config.pointwise_metrics { auc {} }" in str(note)
