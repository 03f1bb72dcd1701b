"""Semantic validation of pipeline configs: every rule names the field and what was expected."""

from __future__ import annotations

import glob
import os

import pytest

from recframe.config import (
    ConfigError,
    activation_name,
    apply_edit_config_json,
    check_paths_for,
    check_pipeline_config,
    eval_metric_names,
    load_pipeline_config,
    parse_pipeline_config,
    resolve_top_k,
    validate_pipeline_config,
    validate_with_warnings,
)
from config_docs import EXAMPLE_CONFIG
from recframe.protos import eval_pb2
from recframe.cli.validate import main as validate_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "cfg.config"

VALID = """\
train_input_path: "train.parquet"
eval_input_path: "valid.parquet"
item_input_path: "items.parquet"
model_dir: "out"
data_config { batch_size: 64 item_id_field: "movie_id" }
feature_configs { id_feature { feature_name: "user_id" embedding_dim: 8 num_buckets: 10 } }
feature_configs { id_feature { feature_name: "gender" embedding_dim: 4 vocab_list: ["M", "F"] } }
feature_configs { raw_feature { feature_name: "age" boundaries: [18, 30] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "score" value_dim: 2 normalizer { z_score { mean: 1 std: 2 } } } }
feature_configs {
  sequence_id_feature {
    feature_name: "hist_movie_ids" embedding_name: "movie_id" embedding_dim: 8 num_buckets: 20
  }
}
feature_configs { id_feature { feature_name: "movie_id" embedding_dim: 8 num_buckets: 20 } }
feature_configs { id_feature { feature_name: "genres" embedding_dim: 4 hash_bucket_size: 50 separator: "|" } }
model_config {
  feature_groups { group_name: "user" feature_names: ["user_id", "gender", "age", "score"] }
  feature_groups { group_name: "hist" feature_names: "hist_movie_ids" group_type: SEQUENCE }
  feature_groups { group_name: "item" feature_names: ["movie_id", "genres"] }
  dssm {
    user_tower { input: ["user", "hist"] mlp { hidden_units: [16, 8] activation: "nn.ReLU" dropout_ratio: 0.1 } }
    item_tower { input: "item" mlp { hidden_units: [16, 8] } }
    temperature: 0.1
  }
  losses { softmax_cross_entropy {} }
  metrics { in_batch_recall_at_k { top_k: 5 } }
}
train_config { num_epochs: 2 }
eval_config { top_k: [10, 20] best_metric: "ndcg@10" }
"""


def config_with(edit: dict | None = None, source: str = SOURCE):
    config = parse_pipeline_config(VALID, source)
    if edit:
        apply_edit_config_json(config, edit)
    return config


def problems_of(edit: dict | None = None) -> list[str]:
    return validate_pipeline_config(config_with(edit), SOURCE)


def test_valid_config_has_no_problems():
    assert problems_of() == []
    assert problems_of({"data_config.exclude_negatives_field": "hist_movie_ids"}) == []
    check_pipeline_config(config_with(), SOURCE, need=("train", "eval", "item", "model_dir"))


F = "feature_configs"
G = "model_config.feature_groups"
T = "model_config.dssm"

MALFORMED = [
    # features
    ({f"{F}[1]": None}, None),  # placeholder replaced below (clearing a list element is not an edit)
    ({f"{F}[0].id_feature.embedding_dim": 0}, "feature_configs[0].id_feature.embedding_dim: got 0, expected > 0"),
    ({f"{F}[0].id_feature.hash_bucket_size": 5},
     "feature_configs[0].id_feature: num_buckets, hash_bucket_size are all set, expected exactly one of "
     "num_buckets, hash_bucket_size, vocab_list or vocab_file"),
    ({f"{F}[1].id_feature.vocab_list": []},
     "feature_configs[1].id_feature: no table size set, expected exactly one of"),
    ({f"{F}[1].id_feature.vocab_list": ["M", "F", "M"]},
     "feature_configs[1].id_feature.vocab_list: value 'M' appears twice, expected unique values"),
    ({f"{F}[5].id_feature.feature_name": "user_id"},
     "feature_configs[5].id_feature.feature_name: duplicate feature name 'user_id' (also feature_configs[0])"),
    ({f"{F}[2].raw_feature.boundaries": [30, 18]},
     "feature_configs[2].raw_feature.boundaries[1]: got 18 after 30, expected strictly ascending boundaries"),
    ({f"{F}[2].raw_feature.value_dim": 2}, "feature_configs[2].raw_feature.value_dim: got 2 with boundaries, expected 1"),
    ({f"{F}[2].raw_feature.embedding_dim": None},
     "feature_configs[2].raw_feature.embedding_dim: not set, expected > 0 with boundaries"),
    ({f"{F}[3].raw_feature.embedding_dim": 4},
     "feature_configs[3].raw_feature.embedding_dim: set without boundaries (it would be ignored)"),
    ({f"{F}[3].raw_feature.value_dim": 0}, "feature_configs[3].raw_feature.value_dim: got 0, expected >= 1"),
    ({f"{F}[3].raw_feature.normalizer.z_score.std": 0},
     "feature_configs[3].raw_feature.normalizer.z_score.std: got 0, expected > 0"),
    ({f"{F}[3].raw_feature.normalizer": {"min_max": {"min": 2, "max": 1}}},
     "feature_configs[3].raw_feature.normalizer.min_max.max: got 1 with min 2, expected max > min"),
    ({f"{F}[2].raw_feature.normalizer": {}},
     "feature_configs[2].raw_feature.normalizer: no normalizer set, expected exactly one of z_score, min_max or log1p"),
    ({f"{F}[0].id_feature.initializer": {"uniform": {"a": 1, "b": 0}}},
     "feature_configs[0].id_feature.initializer.uniform.b: got 0 with a 1, expected b > a"),
    ({f"{F}[4].sequence_id_feature.embedding_dim": 16},
     "feature_configs[5].id_feature: embedding table 'movie_id' is shared with feature 'hist_movie_ids' "
     "(feature_configs[4].sequence_id_feature: embedding_dim 16 and 20 rows (num_buckets)) but this feature has "
     "embedding_dim 8 and 20 rows (num_buckets), expected the same embedding_dim, table size and id mapping"),
    ({f"{F}[4].sequence_id_feature.num_buckets": 21}, "embedding table 'movie_id' is shared with feature"),
    ({f"{F}[2].raw_feature.embedding_name": "gender"},
     "embedding table 'gender' is shared with feature 'gender' (feature_configs[1].id_feature: embedding_dim 4 "
     "and 3 rows (vocab)) but this feature has embedding_dim 4 and 3 rows (boundaries)"),
    ({f"{F}[4].sequence_id_feature.initializer": {"normal": {"std": 0.1}},
      f"{F}[5].id_feature.initializer": {"normal": {"std": 0.2}}},
     "feature_configs[5].id_feature.initializer: differs from the initializer of feature 'hist_movie_ids', which "
     "shares embedding table 'movie_id'"),
    # feature groups
    ({f"{G}[0].feature_names[0]": "usr_id"},
     "model_config.feature_groups[0].feature_names[0]: unknown feature 'usr_id' (did you mean 'user_id'?)"),
    ({f"{G}[0].feature_names": ["user_id", "user_id"]},
     "model_config.feature_groups[0].feature_names[1]: feature 'user_id' appears twice in group 'user'"),
    ({f"{G}[2].feature_names": []},
     "model_config.feature_groups[2].feature_names: empty, expected at least one feature name"),
    ({f"{G}[2].group_name": "user"}, "model_config.feature_groups[2].group_name: duplicate group name 'user'"),
    ({f"{G}[1].feature_names": ["hist_movie_ids", "genres"]},
     "model_config.feature_groups[1].feature_names[1]: feature 'genres' is a id_feature, expected only "
     "sequence_id_feature features in a SEQUENCE group"),
    ({f"{G}[1].sequence_encoder.pooling_encoder.pooling_type": "max"},
     "model_config.feature_groups[1].sequence_encoder.pooling_encoder.pooling_type: unknown pooling_type 'max', "
     "expected one of mean, sum"),
    ({f"{G}[0].sequence_encoder": {"pooling_encoder": {}}},
     "model_config.feature_groups[0].sequence_encoder: set on a DEEP group, expected it only on SEQUENCE groups"),
    # towers
    ({f"{T}.user_tower.input[1]": "hst"},
     "model_config.dssm.user_tower.input[1]: unknown feature group 'hst' (did you mean 'hist'?)"),
    ({f"{T}.item_tower.input": []}, "model_config.dssm.item_tower.input: empty, expected at least one feature group name"),
    ({f"{T}.item_tower.input": ["item", "hist"]},
     "model_config.dssm.item_tower.input[1]: group 'hist' is a SEQUENCE group, expected no sequence features in the "
     "item tower (a candidate item has no history)"),
    ({f"{G}[2].feature_names": ["movie_id", "genres", "hist_movie_ids"]},
     "model_config.dssm.item_tower.input[0]: group 'item' contains sequence feature 'hist_movie_ids'"),
    ({f"{T}.item_tower.input": ["item", "user"]},
     "model_config.dssm.item_tower.input[1]: group 'user' is also an input of user_tower, expected each feature group "
     "in one tower only"),
    ({f"{T}.user_tower.input": ["user"]},
     "model_config.feature_groups[1]: group 'hist' is not an input of any tower (it would be ignored)"),
    ({f"{T}.user_tower.mlp.hidden_units": []},
     "model_config.dssm.user_tower.mlp.hidden_units: empty, expected at least one layer width"),
    ({f"{T}.user_tower.mlp.hidden_units": [16, 0]}, "model_config.dssm.user_tower.mlp.hidden_units[1]: got 0, expected >= 1"),
    ({f"{T}.user_tower.mlp.activation": "rellu"},
     "model_config.dssm.user_tower.mlp.activation: unknown activation 'rellu' (did you mean 'relu'?), expected one of "
     "relu, tanh, prelu, gelu, sigmoid, silu, leaky_relu or none"),
    ({f"{T}.user_tower.mlp.use_bn": True, f"{T}.user_tower.mlp.use_ln": True},
     "model_config.dssm.user_tower.mlp: use_bn and use_ln are both true, expected at most one of them"),
    ({f"{T}.user_tower.mlp.dropout_ratio": [0.1, 0.2, 0.3]},
     "model_config.dssm.user_tower.mlp.dropout_ratio: got 3 values for 2 layers, expected 1 or 2 values"),
    ({f"{T}.user_tower.mlp.dropout_ratio": [1.0]},
     "model_config.dssm.user_tower.mlp.dropout_ratio[0]: got 1, expected in [0, 1)"),
    ({f"{T}.user_tower.mlp.weight_init": "xavier"},
     "model_config.dssm.user_tower.mlp.weight_init: unknown weight_init 'xavier'"),
    ({f"{T}.item_tower.mlp.hidden_units": [16, 4]},
     "model_config.dssm: user_tower outputs 8 values and item_tower 4, expected equal widths"),
    ({f"{T}.item_tower.mlp": None},
     "model_config.dssm: user_tower outputs 8 values and item_tower 12, expected equal widths"),
    ({f"{T}.temperature": 0}, "model_config.dssm.temperature: got 0, expected > 0"),
    ({"model_config.dssm": None}, "model_config: no model set, expected exactly one of dssm or dssm_v2"),
    # losses and metrics
    ({"model_config.losses": [{"softmax_cross_entropy": {}}, {"softmax_cross_entropy": {}}]},
     "model_config.losses[1]: second softmax_cross_entropy loss (first at model_config.losses[0]), expected at most "
     "one loss of each kind"),
    ({f"{T}.in_batch_negative": False},
     "model_config.dssm.in_batch_negative: false with softmax_cross_entropy (model_config.losses[0]) and no "
     "data_config sampler, expected true or a negative sampler"),
    ({"model_config.losses[0].softmax_cross_entropy.label_smoothing": 1.0},
     "model_config.losses[0].softmax_cross_entropy.label_smoothing: got 1, expected in [0, 1)"),
    ({"model_config.losses[0].weight": 0}, "model_config.losses[0].weight: got 0, expected > 0"),
    ({"model_config.losses": [{"binary_cross_entropy": {}}], "model_config.metrics": []},
     "data_config.label_fields: empty, but binary_cross_entropy (model_config.losses[0]) reads the label column"),
    ({"model_config.losses": [{"binary_cross_entropy": {}}], "model_config.metrics": [],
      "data_config.label_fields": ["label"], "data_config.exclude_negatives_field": "hist_movie_ids"},
     "data_config.exclude_negatives_field: set, but no loss has negatives to exclude (no softmax_cross_entropy and "
     "no data_config sampler), expected a listwise loss or a negative sampler, or no field"),
    ({"data_config.item_id_field": "", "data_config.exclude_negatives_field": "hist_movie_ids"},
     "data_config.item_id_field: not set, but softmax_cross_entropy (model_config.losses[0]) to mask accidental hits "
     "and data_config.exclude_negatives_field to find its items among the candidates need it, expected the item id "
     "column"),
    ({"model_config.losses": [{}]}, "model_config.losses[0]: no loss set, expected exactly one of"),
    ({"data_config.item_id_field": None},
     "data_config.item_id_field: not set, but softmax_cross_entropy (model_config.losses[0]) to mask accidental hits "
     "needs it, expected the item id column"),
    ({"model_config.losses": [{"binary_cross_entropy": {}}], "data_config.label_fields": ["click"],
      f"{T}.logq_correction": True},
     "model_config.dssm.logq_correction: true without a listwise loss, expected softmax_cross_entropy"),
    ({"model_config.losses": [{"binary_cross_entropy": {}}], "data_config.label_fields": ["click"]},
     "model_config.metrics[0].in_batch_recall_at_k: needs a softmax_cross_entropy loss"),
    ({"model_config.metrics": [{"auc": {}}]}, "model_config.metrics[0].auc: needs a binary_cross_entropy loss"),
    ({"model_config.metrics[0].in_batch_recall_at_k.top_k": 0},
     "model_config.metrics[0].in_batch_recall_at_k.top_k: got 0, expected >= 1"),
    ({"model_config.variational_dropout": {"initial_drop_probability": 1.0}},
     "model_config.variational_dropout.initial_drop_probability: got 1, expected in (0, 1)"),
    ({"model_config.variational_dropout": {"temperature": 0, "regularization_lambda": -1}},
     "model_config.variational_dropout.regularization_lambda: got -1, expected >= 0"),
    # data, train, eval
    ({"data_config.batch_size": 0}, "data_config.batch_size: got 0, expected > 0"),
    ({"data_config.shuffle_buffer_size": 0}, "data_config.shuffle_buffer_size: got 0, expected > 0"),
    ({"data_config.negative_sampler": {"input_path": "items.parquet", "num_sample": 0}},
     "data_config.negative_sampler.num_sample: got 0, expected >= 1"),
    ({"data_config.movielens": {"variant": "ml-10m", "output_dir": "d"}},
     "data_config.movielens.variant: unknown MovieLens variant 'ml-10m' (did you mean 'ml-1m'?)"),
    ({"data_config.movielens": {"variant": "ml-1m"}}, "data_config.movielens.output_dir: required field not set"),
    ({"data_config.movielens": {"variant": "ml-100k", "output_dir": "d", "max_history": 0}},
     "data_config.movielens.max_history: got 0, expected >= 1"),
    ({"data_config.dataset_type": "CsvDataset", "data_config.csv_delimiter": "::"},
     "data_config.csv_delimiter: got '::', expected a single character"),
    ({"train_config.num_epochs": 0},
     "train_config: num_epochs and num_steps are both 0, expected num_epochs >= 1 or num_steps > 0"),
    ({"train_config.device": "gpu"},
     "train_config.device: unknown device 'gpu' (did you mean 'cuda'?), expected auto, cpu, cuda or cuda:N"),
    ({"train_config.device": "mps"}, "train_config.device: unknown device 'mps', expected auto, cpu, cuda or cuda:N"),
    ({"train_config.dense_optimizer.adam_optimizer.lr": 0},
     "train_config.dense_optimizer.adam_optimizer.lr: got 0, expected > 0"),
    ({"train_config.sparse_optimizer.exponential_decay_learning_rate": {"decay_steps": 0, "decay_rate": 1.5}},
     "train_config.sparse_optimizer.exponential_decay_learning_rate.decay_rate: got 1.5, expected in (0, 1]"),
    ({"train_config.sparse_optimizer.exponential_decay_learning_rate": {"decay_steps": 0}},
     "train_config.sparse_optimizer.exponential_decay_learning_rate.decay_steps: got 0, expected > 0"),
    ({"train_config.dense_optimizer.sgd_optimizer": {"nesterov": True}},
     "train_config.dense_optimizer.sgd_optimizer.nesterov: true with momentum 0, expected momentum > 0"),
    ({"train_config.gradient_clip_norm": -1}, "train_config.gradient_clip_norm: got -1, expected >= 0"),
    ({"eval_config.top_k": [10, 0, 10]}, "eval_config.top_k[1]: got 0, expected >= 1"),
    ({"eval_config.top_k": [10, 20, 10]}, "eval_config.top_k[2]: 10 is listed twice, expected unique values"),
    ({"eval_config.best_metric": "ndcg@50"},
     "eval_config.best_metric: unknown metric 'ndcg@50' (did you mean 'ndcg@20'?), expected hit_rate@K, recall@K or "
     "ndcg@K with K in [10, 20] (eval_config.top_k), or mrr"),
    ({"eval_config.early_stopping": {"metric": "hitrate@10"}},
     "eval_config.early_stopping.metric: unknown metric 'hitrate@10' (did you mean 'hit_rate@10'?)"),
    ({"eval_config.user_chunk_size": 0}, "eval_config.user_chunk_size: got 0, expected > 0"),
    ({f"{F}[0].id_feature.feature_name": None}, "feature_configs[0].id_feature.feature_name: required field not set"),
]
MALFORMED = [case for case in MALFORMED if case[1] is not None]


@pytest.mark.parametrize("edit, expected", MALFORMED, ids=[e for _, e in MALFORMED])
def test_malformed_config_reports_field_and_expectation(edit, expected):
    problems = problems_of(edit)
    assert any(expected in p for p in problems), "\n".join(problems)
    assert all(p.startswith(f"{SOURCE}: ") for p in problems)


def test_feature_without_kind():
    config = config_with()
    config.feature_configs.add()
    assert (f"{SOURCE}: feature_configs[7]: no feature set, expected exactly one of id_feature, raw_feature, "
            "sequence_id_feature, sequence_raw_feature or text_feature") in validate_pipeline_config(config, SOURCE)


def test_missing_model_config():
    config = config_with()
    config.ClearField("model_config")
    assert validate_pipeline_config(config, SOURCE) == [
        f"{SOURCE}: model_config: not set, expected feature groups and a model (dssm or dssm_v2)"]


def test_sequence_group_needs_equal_lengths():
    config = config_with({"feature_configs[4].sequence_id_feature.sequence_length": 20})
    hist2 = config.feature_configs.add().sequence_id_feature
    hist2.CopyFrom(config.feature_configs[4].sequence_id_feature)
    hist2.feature_name, hist2.sequence_length = "hist2", 30
    config.model_config.feature_groups[1].feature_names.append("hist2")
    assert (f"{SOURCE}: model_config.feature_groups[1]: sequence_length differs (hist_movie_ids: 20, hist2: 30), "
            "expected equal sequence_length in a SEQUENCE group") in validate_pipeline_config(config, SOURCE)


def test_every_problem_is_reported_at_once():
    edit = {"data_config.batch_size": 0, "model_config.dssm.temperature": -1,
            "model_config.feature_groups[0].feature_names[0]": "usr_id", "eval_config.best_metric": "mmr"}
    with pytest.raises(ConfigError) as err:
        check_pipeline_config(config_with(edit), SOURCE)
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert f"{SOURCE}: eval_config.best_metric: unknown metric 'mmr' (did you mean 'mrr'?)" in str(err.value)
    assert str(err.value).startswith(f"{SOURCE}: invalid pipeline config (4 problems):\n")


def test_dssm_v2_rules_apply_too():
    text = VALID.replace("dssm {", "dssm_v2 {")
    config = parse_pipeline_config(text, SOURCE)
    assert validate_pipeline_config(config, SOURCE) == []
    apply_edit_config_json(config, {"model_config.dssm_v2.temperature": 0})
    assert validate_pipeline_config(config, SOURCE) == [
        f"{SOURCE}: model_config.dssm_v2.temperature: got 0, expected > 0"]


# ---------------------------------------------------------------- vocab files


def test_vocab_file_resolves_against_the_config_directory(tmp_path):
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "gender.txt").write_text("M\n\nF\n")
    source = str(tmp_path / "p.config")
    config = config_with({"feature_configs[1].id_feature.vocab_list": [],
                          "feature_configs[1].id_feature.vocab_file": "vocab/gender.txt"}, source)
    assert validate_pipeline_config(config, source) == []
    # the table has 2 values + OOV = 3 rows: sharing it with a 3-bucket table of another width fails
    apply_edit_config_json(config, {"feature_configs[0].id_feature.embedding_name": "gender",
                                    "feature_configs[0].id_feature.vocab_file": "vocab/gender.txt",
                                    "feature_configs[0].id_feature.num_buckets": None})
    assert any("embedding table 'gender' is shared with feature 'user_id'" in p and "3 rows (vocab)" in p
               for p in validate_pipeline_config(config, source))


def test_vocab_file_missing_or_empty(tmp_path):
    source = str(tmp_path / "p.config")
    edit = {"feature_configs[1].id_feature.vocab_list": [], "feature_configs[1].id_feature.vocab_file": "nope.txt"}
    problems = validate_pipeline_config(config_with(edit, source), source)
    assert any(f"feature_configs[1].id_feature.vocab_file: file 'nope.txt' not found (resolved to "
               f"'{tmp_path / 'nope.txt'}'), expected an existing file" in p for p in problems), problems
    (tmp_path / "empty.txt").write_text("\n \n")
    edit["feature_configs[1].id_feature.vocab_file"] = "empty.txt"
    problems = validate_pipeline_config(config_with(edit, source), source)
    assert any("vocab_file: 'empty.txt' has no values, expected one value per line" in p for p in problems), problems


# ---------------------------------------------------------------- paths


def test_check_paths_for():
    config = config_with({"eval_input_path": None, "data_config.item_id_field": None})
    assert check_paths_for(config, SOURCE, need=("train",)) == []
    problems = check_paths_for(config, SOURCE, need=("train", "eval", "item"))
    assert problems == [
        f"{SOURCE}: eval_input_path: not set, expected the evaluation data (one row per user query with its target item)",
        f"{SOURCE}: data_config.item_id_field: not set, expected the item id column (full-corpus evaluation matches "
        "each row's target item against the item table by it)",
    ]
    with pytest.raises(ValueError, match="unknown need 'bogus'"):
        check_paths_for(config, SOURCE, need=("bogus",))
    with pytest.raises(ConfigError, match="train_input_path: not set"):
        check_pipeline_config(config_with({"train_input_path": None}), SOURCE, need=("train",))


# ---------------------------------------------------------------- helpers


def test_resolve_top_k_and_metric_names():
    assert resolve_top_k(None) == [10, 50, 100]
    assert resolve_top_k(eval_pb2.EvalConfig()) == [10, 50, 100]
    assert resolve_top_k(eval_pb2.EvalConfig(top_k=[50, 5])) == [5, 50]
    assert eval_metric_names(eval_pb2.EvalConfig(top_k=[5])) == ["hit_rate@5", "recall@5", "ndcg@5", "mrr"]
    names = eval_metric_names(eval_pb2.EvalConfig(top_k=[5], exclude_items_field="seen"))
    assert names[4:] == ["raw_hit_rate@5", "raw_recall@5", "raw_ndcg@5", "raw_mrr"]
    assert "raw_mrr" not in eval_metric_names(eval_pb2.EvalConfig(report_raw=False, exclude_items_field="seen"))


@pytest.mark.parametrize("name, canonical", [
    ("relu", "relu"), ("nn.ReLU", "relu"), ("nn.Tanh", "tanh"), ("nn.LeakyReLU", "leaky_relu"), ("Tanh", "tanh"),
    ("GELU", "gelu"), ("nn.SiLU", "silu"), ("nn.PReLU", "prelu"), ("nn.Sigmoid", "sigmoid"),
    ("none", "none"), ("nn.Identity", "none"), ("leaky_relu", "leaky_relu"),
])
def test_activation_name(name, canonical):
    assert activation_name(name) == canonical


@pytest.mark.parametrize("name", ["nn.Dice", "swish", "nn.leaky_relu", "relu6", ""])
def test_activation_name_rejects_unknown(name):
    with pytest.raises(ValueError, match=f"unknown activation '{name}'"):
        activation_name(name)


def test_mlp_builds_every_activation_the_validator_accepts():
    torch = pytest.importorskip("torch")
    from recframe.modules.mlp import MLP
    from recframe.protos import module_pb2

    for name in ["relu", "RELU", "nn.ReLU", "nn.GELU", "nn.Identity", "nn.LeakyReLU", "none", "prelu"]:
        mlp = MLP(3, module_pb2.MLP(hidden_units=[2], activation=name))
        expected = {"none": torch.nn.Identity, "gelu": torch.nn.GELU, "leaky_relu": torch.nn.LeakyReLU,
                    "relu": torch.nn.ReLU, "prelu": torch.nn.PReLU}[activation_name(name)]
        assert isinstance(mlp.layers[0][-1], expected), name


# ---------------------------------------------------------------- CLI and examples


def test_cli_ok_and_errors(tmp_path, capsys):
    path = tmp_path / "p.config"
    path.write_text(VALID)
    assert validate_main(["--pipeline_config", str(path)]) == 0
    assert capsys.readouterr().out == f"OK: {path}\n"
    assert validate_main(["--pipeline_config_path", str(path)]) == 0  # TorchEasyRec's flag name
    assert capsys.readouterr().out == f"OK: {path}\n"
    assert validate_main(["--pipeline_config", str(path), "--edit_config_json",
                          '{"data_config.batch_size": 0, "train_config.device": "tpu"}']) == 2  # every user error exits 2
    err = capsys.readouterr().err
    assert f"{path}: data_config.batch_size: got 0, expected > 0" in err
    assert f"{path}: train_config.device: unknown device 'tpu'" in err
    assert "2 problems in" in err
    assert validate_main(["--pipeline_config", str(path), "--edit_config_json", '{"train_config.num_epoch": 1}']) == 2
    assert "did you mean 'num_epochs'?" in capsys.readouterr().err
    assert validate_main(["--pipeline_config", str(path), "--edit_config_json", '{"test_input_path": ""}',
                          "--require", "train,test"]) == 2
    assert f"{path}: test_input_path: not set" in capsys.readouterr().err


def test_docs_example_is_valid():
    config = parse_pipeline_config(EXAMPLE_CONFIG, "docs/config.md")
    assert validate_pipeline_config(config, "docs/config.md") == []


# Every shipped config: the examples and the experiments' configs.
EXAMPLES = sorted(glob.glob(os.path.join(REPO, "examples", "**", "*.config"), recursive=True)
                  + glob.glob(os.path.join(REPO, "experiments", "**", "*.config"), recursive=True))


def test_shipped_configs_are_found():
    assert len(EXAMPLES) >= 19, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.relpath(p, REPO) for p in EXAMPLES])
def test_example_configs_validate(path):
    config = load_pipeline_config(path)
    check_pipeline_config(config, path)


# ---------------------------------------------------------------- settings that would be ignored

BCE_ONLY = {"model_config.losses": [{"binary_cross_entropy": {}}], "model_config.metrics": [],
            "data_config.label_fields": ["click"]}


def test_csv_delimiter_needs_csv_files():
    assert problems_of({"data_config.csv_delimiter": ";"}) == [
        f"{SOURCE}: data_config.csv_delimiter: set to ';' with dataset_type ParquetDataset (it would be ignored), "
        "expected dataset_type: CsvDataset (or no csv_delimiter)"]
    assert problems_of({"data_config.dataset_type": "CsvDataset", "data_config.csv_delimiter": ";"}) == []
    assert problems_of({"data_config.dataset_type": "CsvDataset"}) == []  # the default "," applies


def test_dropout_before_linear_needs_dropout():
    mlp = f"{T}.item_tower.mlp"
    expected = (f"{SOURCE}: {mlp}.dropout_before_linear: true with {{}}: there is no dropout to move (it would be "
                "ignored), expected a dropout_ratio above 0 (or no dropout_before_linear)")
    assert problems_of({f"{mlp}.dropout_before_linear": True}) == [expected.format("no dropout_ratio")]
    assert problems_of({f"{mlp}.dropout_before_linear": True, f"{mlp}.dropout_ratio": [0, 0]}) == [
        expected.format("dropout_ratio [0, 0]")]
    assert problems_of({f"{mlp}.dropout_before_linear": True, f"{mlp}.dropout_ratio": [0, 0.2]}) == []
    assert problems_of({f"{mlp}.dropout_before_linear": False}) == []


def test_in_batch_negative_true_needs_negatives_to_add_to():
    assert problems_of({**BCE_ONLY, f"{T}.in_batch_negative": True}) == [
        f"{SOURCE}: {T}.in_batch_negative: true with only binary_cross_entropy and no data_config sampler, which "
        "scores each row's own (user, item) pair against the label column without negatives (it would be ignored), "
        "expected a data_config sampler (the other rows' positives then join the sampled negatives), a "
        "softmax_cross_entropy loss, or no in_batch_negative"]
    assert problems_of(BCE_ONLY) == []  # the default: nothing written
    assert problems_of({**BCE_ONLY, f"{T}.in_batch_negative": False}) == []  # says what happens
    sampled = {"model_config.losses": [{"binary_cross_entropy": {}}], "model_config.metrics": [],
               "data_config.negative_sampler": {"input_path": "items.parquet", "num_sample": 4},
               f"{T}.in_batch_negative": True}
    assert problems_of(sampled) == []
    both = {**BCE_ONLY, "model_config.losses": [{"binary_cross_entropy": {}}, {"softmax_cross_entropy": {}}],
            f"{T}.in_batch_negative": True}
    assert problems_of(both) == []


@pytest.mark.parametrize("field, value, purpose", [
    ("train_input_path", "", "the training data (files, directories or glob patterns, comma separated)"),
    ("eval_input_path", " , ", "the evaluation data (one row per user query with its target item)"),
    ("item_input_path", "", "the item table (every candidate of full-corpus evaluation)"),
])
def test_written_input_path_naming_no_file(field, value, purpose):
    expected = f"{SOURCE}: {field}: set to '{value}', which names no file, expected {purpose}"
    assert problems_of({field: value}) == [expected]
    need = {"train_input_path": "train", "eval_input_path": "eval", "item_input_path": "item"}[field]
    assert check_paths_for(config_with({field: value}), SOURCE, need=(need,)) == [expected]  # the same line once
    assert problems_of({field: None}) == []  # not written: checked by the commands that read it


def test_written_input_path_problem_reported_once_by_the_cli(tmp_path, capsys):
    path = tmp_path / "p.config"
    path.write_text(VALID)
    assert validate_main(["--pipeline_config", str(path), "--edit_config_json", '{"train_input_path": ""}',
                          "--require", "train"]) == 2
    err = capsys.readouterr().err
    assert err == (f"{path}: train_input_path: set to '', which names no file, expected the training data (files, "
                   f"directories or glob patterns, comma separated)\n1 problem in {path}\n")
    assert problems_of({"test_input_path": ""}) == []  # "" turns the test split off


def test_edit_errors_name_edit_config_json_not_the_config_file(tmp_path):
    path = str(tmp_path / "p.config")
    config = config_with()
    cases = [
        ('{"train_config.num_epoch": 1}', "edit 'train_config.num_epoch': at 'num_epoch': TrainConfig has no field "
                                          "'num_epoch' (did you mean 'num_epochs'?)"),
        ("{nope", "invalid JSON at 1:2: Expecting property name enclosed in double quotes"),
        ('{"data_config.batch_size": -1}', "edit 'data_config.batch_size': at 'batch_size': -1 does not fit "
                                           "'batch_size', expected an integer >= 0"),
        ('{"model_config.dssm.user_tower": {"mlp": {"hidden_units": "x"}}}',
         "edit 'model_config.dssm.user_tower': at 'user_tower': mlp: expected a JSON list for 'hidden_units', got x"),
        ('{"data_config": {"batch_size": "many"}}',
         "edit 'data_config': at 'data_config': batch_size: expected an integer, got 'many'"),
    ]
    for edit, what in cases:
        for source in (path, "<string>"):
            with pytest.raises(ConfigError) as err:
                apply_edit_config_json(config, edit, source=source)
            assert str(err.value) == f"{source} (--edit_config_json): {what}"
    with pytest.raises(ConfigError) as err:  # a source naming the edits is kept
        apply_edit_config_json(config, "{nope", source=f"{path} (--edit_config_json)")
    assert str(err.value).startswith(f"{path} (--edit_config_json): invalid JSON")
    apply_edit_config_json(config, '{"data_config.batch_size": 32}', source=path)
    assert config.data_config.batch_size == 32 and problems_of() == []


def test_pipeline_from_file_blames_the_edits(tmp_path):
    pytest.importorskip("torch")
    from recframe.pipeline import Pipeline

    path = tmp_path / "p.config"
    path.write_text(VALID)
    with pytest.raises(ConfigError) as err:
        Pipeline.from_file(str(path), '{"train_config.num_epoch": 1}')
    assert str(err.value).startswith(f"{path} (--edit_config_json): edit 'train_config.num_epoch': at 'num_epoch': ")


def test_shuffle_buffer_size_needs_shuffle():
    assert problems_of({"data_config.shuffle": False, "data_config.shuffle_buffer_size": 10}) == [
        f"{SOURCE}: data_config.shuffle_buffer_size: set to 10 with shuffle: false (it would be ignored), expected "
        "shuffle: true (or no shuffle_buffer_size)"]
    assert problems_of({"data_config.shuffle": False}) == []
    assert problems_of({"data_config.shuffle_buffer_size": 10}) == []  # shuffle defaults to true


def test_label_fields_need_a_loss_that_reads_them():
    assert problems_of({"data_config.label_fields": ["click"]}) == [
        f"{SOURCE}: data_config.label_fields: set, but no loss reads a label column (softmax_cross_entropy ranks each "
        "row's positive among its candidates; it would be ignored), expected a binary_cross_entropy loss (or no "
        "label_fields)"]
    sampler = {"data_config.negative_sampler": {"input_path": "items.parquet", "num_sample": 4}}
    assert problems_of({**BCE_ONLY, **sampler}) == [
        f"{SOURCE}: data_config.label_fields: set, but binary_cross_entropy reads no label column with "
        "data_config.negative_sampler (each row's positive is its 1 and the sampled negatives are its 0s; it would "
        "be ignored), expected no label_fields (or no sampler)"]
    assert problems_of(BCE_ONLY) == []
    assert problems_of({**BCE_ONLY, "model_config.losses": [{"binary_cross_entropy": {}},
                                                             {"softmax_cross_entropy": {}}]}) == []


def test_pooling_of_a_feature_only_in_sequence_groups():
    assert problems_of({f"{F}[4].sequence_id_feature.pooling": "SUM"}) == [
        f"{SOURCE}: feature_configs[4].sequence_id_feature.pooling: set to SUM, but 'hist_movie_ids' is only in "
        "SEQUENCE group 'hist' (model_config.feature_groups[1]), whose sequence_encoder reduces the positions (it "
        "would be ignored), expected no pooling (or the feature in a DEEP group)"]
    assert problems_of({f"{F}[4].sequence_id_feature.pooling": "SUM", f"{G}[1].group_type": "DEEP"}) == []


# ---------------------------------------------------------------- shared tables, warnings, model_class


def test_shared_table_refuses_an_initializer_written_on_one_feature_only():
    # The table is built once from one of its features: the other's initializer was silently dropped.
    assert problems_of({f"{F}[5].id_feature.initializer": {"uniform": {"a": -0.1, "b": 0.1}}}) == [
        f"{SOURCE}: feature_configs[5].id_feature.initializer: differs from the initializer of feature "
        "'hist_movie_ids', which shares embedding table 'movie_id' (feature_configs[4].sequence_id_feature: none "
        "(the default normal { std: 0.01 }); this feature 'movie_id': uniform { a: -0.1 b: 0.1 }), expected the "
        "same initializer on every feature of the table (it is built once, with one initializer: another would be "
        "silently dropped) or a different embedding_name"]
    # The same initializer on both, or the default written out on one: valid.
    same = {"uniform": {"a": -0.1, "b": 0.1}}
    assert problems_of({f"{F}[4].sequence_id_feature.initializer": same, f"{F}[5].id_feature.initializer": same}) == []
    assert problems_of({f"{F}[5].id_feature.initializer": {"normal": {"std": 0.01}}}) == []
    # A different embedding_name: two tables, each with its own initializer.
    assert problems_of({f"{F}[5].id_feature.initializer": same, f"{F}[5].id_feature.embedding_name": "movie"}) == []


TABLE_OF_BOTH_TOWERS = (
    f"{SOURCE}: model_config.dssm: embedding table 'movie_id' is named by features of both towers (user_tower: "
    "hist_movie_ids; item_tower: movie_id), but dssm gives each tower its own tables: two separate 'movie_id' "
    "tables are trained, one per tower (dssm_v2 shares one table between the towers)")


def test_dssm_warns_when_both_towers_name_a_table():
    assert validate_with_warnings(config_with(), SOURCE) == ([], [TABLE_OF_BOTH_TOWERS])
    assert check_pipeline_config(config_with(), SOURCE) == [TABLE_OF_BOTH_TOWERS]
    # dssm_v2 shares the table: nothing to warn about; nor when the names differ.
    assert validate_with_warnings(parse_pipeline_config(VALID.replace("dssm {", "dssm_v2 {"), SOURCE),
                                  SOURCE) == ([], [])
    assert validate_with_warnings(config_with({f"{F}[4].sequence_id_feature.embedding_name": "hist"}),
                                  SOURCE) == ([], [])


def test_cli_prints_warnings_and_exits_0(tmp_path, capsys):
    path = tmp_path / "p.config"
    path.write_text(VALID)
    assert validate_main(["--pipeline_config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"OK: {path}\n"
    assert err == "warning: " + TABLE_OF_BOTH_TOWERS.replace(SOURCE, str(path), 1) + "\n"


def test_training_prints_the_warnings(tmp_path, capsys, monkeypatch):
    import recframe.recipes.train as trainer
    from recframe.cli import train

    runs = []
    monkeypatch.setattr(trainer, "train_and_evaluate", lambda *args, **kwargs: runs.append(args))
    path = tmp_path / "p.config"
    path.write_text(VALID)
    assert train.main(["--pipeline_config", str(path), "--model_dir", str(tmp_path / "run")]) == 0
    assert len(runs) == 1 and runs[0][0].warnings == [TABLE_OF_BOTH_TOWERS.replace(SOURCE, str(path), 1)]
    assert capsys.readouterr().out == "warning: " + TABLE_OF_BOTH_TOWERS.replace(SOURCE, str(path), 1) + "\n"


def test_quick_start_warns_of_its_two_movie_tables(capsys):
    path = os.path.join(REPO, "examples", "dssm_movielens.config")
    assert validate_main(["--pipeline_config", path]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {path}: model_config.dssm: embedding table 'movie_emb' is named by features of both "
                   "towers (user_tower: hist_movie_ids, hist_recent; item_tower: movie_id), but dssm gives each tower "
                   "its own tables: two separate 'movie_emb' tables are trained, one per tower (dssm_v2 shares one "
                   "table between the towers)\n")


def test_unknown_model_class_is_refused_by_validate(tmp_path, capsys):
    # Refused before any build: by the validator, and by the CLI with exit status 2.
    expected = (f"{SOURCE}: model_config.model_class: unknown model class 'NoSuchModel', expected a class registered "
                "in recframe.registry.MODELS (DSSM, DSSMV2); name the module that registers it in plugin_modules")
    assert problems_of({"model_config.model_class": "NoSuchModel"}) == [expected]
    path = tmp_path / "p.config"
    path.write_text(VALID.replace("model_config {", 'model_config {\n  model_class: "NoSuchModel"'))
    assert validate_main(["--pipeline_config", str(path)]) == 2
    assert expected.replace(SOURCE, str(path), 1) in capsys.readouterr().err.splitlines()
