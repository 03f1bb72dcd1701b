"""Loading, saving and --edit_config_json overrides of pipeline configs."""

from __future__ import annotations

import json
import os

import pytest

from recframe.config import (
    ConfigError,
    apply_edit_config_json,
    load_pipeline_config,
    parse_pipeline_config,
    save_pipeline_config,
)
from recframe.protos import model_pb2, pipeline_pb2

CONFIG = """\
train_input_path: "train.parquet"
data_config { batch_size: 64 item_id_field: "movie_id" }
feature_configs { id_feature { feature_name: "user_id" embedding_dim: 8 num_buckets: 10 } }
feature_configs { raw_feature { feature_name: "age" boundaries: [18, 30] embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "movie_id" embedding_dim: 8 num_buckets: 20 } }
model_config {
  feature_groups { group_name: "user" feature_names: ["user_id", "age"] }
  feature_groups { group_name: "item" feature_names: "movie_id" }
  dssm {
    user_tower { input: "user" mlp { hidden_units: [16, 8] } }
    item_tower { input: "item" mlp { hidden_units: [16, 8] } }
  }
}
train_config { num_epochs: 2 }
"""


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def config() -> pipeline_pb2.PipelineConfig:
    return parse_pipeline_config(CONFIG, "test.config")


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("suffix", [".config", ".txt", ".pbtxt"])
def test_load_text_format(tmp_path, suffix):
    cfg = load_pipeline_config(write(tmp_path, "p" + suffix, CONFIG))
    assert cfg.data_config.batch_size == 64
    assert cfg.feature_configs[1].raw_feature.boundaries == [18.0, 30.0]
    assert cfg.model_config.dssm.user_tower.mlp.hidden_units == [16, 8]


def test_load_json_snake_and_camel_case(tmp_path):
    text = json.dumps({
        "train_config": {"num_epochs": 3},
        "dataConfig": {"batchSize": 32},
        "model_config": {"dssm": {"similarity": "COSINE"}},
    })
    cfg = load_pipeline_config(write(tmp_path, "p.json", text))
    assert cfg.train_config.num_epochs == 3
    assert cfg.data_config.batch_size == 32
    assert cfg.model_config.dssm.similarity == model_pb2.COSINE


def test_unknown_top_level_field_names_line_column_and_suggestion(tmp_path):
    path = write(tmp_path, "p.config", 'train_input_path: "x"\ntrain_confg { num_epochs: 1 }\n')
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2:1: ")
    assert "unknown field 'train_confg' in PipelineConfig (did you mean 'train_config'?)" in message


def test_unknown_nested_field_suggests_from_that_message(tmp_path):
    path = write(tmp_path, "p.config", "train_config {\n  num_epoch: 3\n}\n")
    with pytest.raises(ConfigError, match=r":2:3: unknown field 'num_epoch' in TrainConfig \(did you mean 'num_epochs'\?\)"):
        load_pipeline_config(path)


def test_unknown_field_without_close_match_lists_fields(tmp_path):
    path = write(tmp_path, "p.config", "eval_config { zzz: 3 }\n")
    with pytest.raises(ConfigError, match=r"unknown field 'zzz' in EvalConfig, expected one of top_k, "):
        load_pipeline_config(path)


def test_misspelt_enum_value(tmp_path):
    path = write(tmp_path, "p.config", "model_config {\n dssm { similarity: COSIN } }\n")
    with pytest.raises(ConfigError, match=r"p.config:2:.*unknown value 'COSIN' of enum Similarity \(did you mean 'COSINE'\?\)"):
        load_pipeline_config(path)


def test_syntax_error_has_position(tmp_path):
    path = write(tmp_path, "p.config", "train_config {\n  num_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"p\.config:2:\d+: Expected \"}\""):
        load_pipeline_config(path)


def test_value_out_of_range(tmp_path):
    path = write(tmp_path, "p.config", "data_config { batch_size: -1 }")
    with pytest.raises(ConfigError, match=r"p\.config:1:\d+: Value out of range: -1"):
        load_pipeline_config(path)


def test_every_unknown_field_and_enum_value_of_a_text_file_at_once(tmp_path, capsys):
    """The parser stops at the first error; the unknown names elsewhere are listed with it."""
    text = ("train_config { num_epoch: 3 }\n"
            "model_config {\n  dssm { similarity: COSIN }\n}\n"
            "feature_configs { id_feature { feature_nme: \"a\" } }\n"
            "eval_config { top_k: -1 topk: 5 }\n")
    path = write(tmp_path, "p.config", text)
    expected = [
        f"{path}:1:16: unknown field 'num_epoch' in TrainConfig (did you mean 'num_epochs'?)",
        f"{path}:3:22: unknown value 'COSIN' of enum Similarity (did you mean 'COSINE'?)",
        f"{path}:5:32: unknown field 'feature_nme' in IdFeature (did you mean 'feature_name'?)",
        f"{path}:6:25: unknown field 'topk' in EvalConfig (did you mean 'top_k'?)",
    ]
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    assert err.value.problems == expected
    assert str(err.value) == f"{path}: cannot parse the config (4 problems):\n  " + "\n  ".join(expected)
    from recframe.cli.validate import main as validate_main
    assert validate_main(["--pipeline_config", path]) == 2
    assert capsys.readouterr().err == "\n".join(expected) + "\n"
    # Once the names are right, the other errors come one at a time (the parser stops at the first).
    fixed = text.replace("num_epoch:", "num_epochs:").replace("COSIN", "COSINE").replace("feature_nme", "feature_name")
    path = write(tmp_path, "q.config", fixed)
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    assert err.value.problems == [f"{path}:6:22: Value out of range: -1",
                                  f"{path}:6:25: unknown field 'topk' in EvalConfig (did you mean 'top_k'?)"]
    # A syntax error is reported alone, even after an unknown field.
    path = write(tmp_path, "r.config", "train_config { num_epoch: 3 }\neval_config {{ }\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    assert err.value.problems == [f"{path}:1:16: unknown field 'num_epoch' in TrainConfig (did you mean 'num_epochs'?)"]


def test_json_syntax_error_has_position(tmp_path):
    path = write(tmp_path, "p.json", '{\n  "train_config": {"num_epochs": 3,}\n}')
    with pytest.raises(ConfigError, match=r"p\.json:2:\d+: invalid JSON"):
        load_pipeline_config(path)


def test_json_unknown_field_names_path_position_and_suggestion(tmp_path):
    path = write(tmp_path, "p.json", '{\n  "train_config": {\n    "num_epoch": 3\n  }\n}')
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(path)
    assert str(err.value) == (f"{path}:3:5: train_config: unknown field 'num_epoch' in TrainConfig "
                              "(did you mean 'num_epochs'?)")


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unsupported config file suffix '.yaml'"):
        load_pipeline_config(write(tmp_path, "p.yaml", CONFIG))
    with pytest.raises(ConfigError, match=r"nope\.config: config file not found"):
        load_pipeline_config(str(tmp_path / "nope.config"))


@pytest.mark.parametrize("name", ["out.config", "out.json"])
def test_save_load_round_trip(tmp_path, config, name):
    path = str(tmp_path / "sub" / name)
    save_pipeline_config(config, path)
    assert load_pipeline_config(path) == config
    assert os.listdir(tmp_path / "sub") == [name]  # no temporary file left behind


def test_save_replaces_atomically(tmp_path, config):
    path = tmp_path / "p.config"
    path.write_text("old")
    save_pipeline_config(config, str(path))
    assert load_pipeline_config(str(path)) == config


# ---------------------------------------------------------------- overrides


def test_edit_scalar_list_index_repeated_and_enum(config):
    apply_edit_config_json(config, json.dumps({
        "train_config.num_epochs": 3,
        "feature_configs[0].id_feature.embedding_dim": 32,
        "model_config.dssm.user_tower.mlp.hidden_units": [64, 32],
        "data_config.batch_size": "512",  # numbers may come as strings
        "model_config.dssm.similarity": "COSINE",
        "model_config.dssm.temperature": 0.05,
        "data_config.label_fields": ["click"],
    }))
    assert config.train_config.num_epochs == 3
    assert config.feature_configs[0].id_feature.embedding_dim == 32
    assert list(config.model_config.dssm.user_tower.mlp.hidden_units) == [64, 32]
    assert config.data_config.batch_size == 512
    assert config.model_config.dssm.similarity == model_pb2.COSINE
    assert config.model_config.dssm.temperature == pytest.approx(0.05)
    assert list(config.data_config.label_fields) == ["click"]


def test_edit_selector_and_element_of_repeated_scalar(config):
    apply_edit_config_json(config, {
        "feature_configs[feature_name=movie_id].id_feature.num_buckets": 99,
        "model_config.feature_groups[group_name=user].feature_names[1]": "user_id2",
        "feature_configs[-2].raw_feature.boundaries[0]": 10,
    })
    assert config.feature_configs[2].id_feature.num_buckets == 99
    assert list(config.model_config.feature_groups[0].feature_names) == ["user_id", "user_id2"]
    assert list(config.feature_configs[1].raw_feature.boundaries) == [10.0, 30.0]


def test_edit_message_values_merge_switch_and_clear(config):
    apply_edit_config_json(config, {
        "train_config": {"seed": 7},  # merged: num_epochs stays
        "model_config.losses": [{"softmax_cross_entropy": {"label_smoothing": 0.1}}],
        "feature_configs[1]": {"id_feature": {"feature_name": "age", "embedding_dim": 4, "num_buckets": 100}},
        "model_config.dssm.item_tower.mlp": None,
    })
    assert config.train_config.seed == 7 and config.train_config.num_epochs == 2
    assert config.model_config.losses[0].softmax_cross_entropy.label_smoothing == pytest.approx(0.1)
    assert config.feature_configs[1].WhichOneof("feature") == "id_feature"
    assert not config.model_config.dssm.item_tower.HasField("mlp")


def test_edit_empty_message_sets_presence(config):
    apply_edit_config_json(config, {"model_config.variational_dropout": {}, "model_config.losses": [{}]})
    assert config.model_config.HasField("variational_dropout")
    assert len(config.model_config.losses) == 1


@pytest.mark.parametrize("edit, expected", [
    ({"train_config.num_epoch": 1},
     "edit 'train_config.num_epoch': at 'num_epoch': TrainConfig has no field 'num_epoch' (did you mean 'num_epochs'?)"),
    ({"feature_configs[5].id_feature.embedding_dim": 1},
     "at 'feature_configs[5]': index 5 out of range, 'feature_configs' has 3 element(s)"),
    ({"feature_configs[feature_name=movie_idd].id_feature.embedding_dim": 1},
     "at 'feature_configs[feature_name=movie_idd]': no element of 'feature_configs' has "
     "feature_name=movie_idd (did you mean 'movie_id'?)"),
    ({"feature_configs[1].id_feature.embedding_dim": 1},
     "at 'id_feature': 'id_feature' is not set: oneof 'feature' holds 'raw_feature'"),
    ({"model_config.dssm.similarity": "COSINUS"},
     "at 'similarity': \"COSINUS\" is not a value of enum Similarity (did you mean 'COSINE'?)"),
    ({"data_config.batch_size": "many"}, "at 'batch_size': \"many\" does not fit 'batch_size', expected an integer"),
    ({"data_config.batch_size": -1}, "at 'batch_size': -1 does not fit 'batch_size'"),
    ({"model_config.dssm.user_tower.mlp.hidden_units": 5},
     "at 'hidden_units': 'hidden_units' is a repeated field, expected a JSON list"),
    ({"feature_configs.id_feature": {}},
     "at 'feature_configs': 'feature_configs' is a repeated field, expected [index] or [field=value] after it"),
    ({"train_config.num_epochs.x": 1}, "at 'num_epochs': 'num_epochs' is a scalar field, it has no sub-fields"),
    ({"train_config[0].seed": 1}, "at 'train_config[0]': 'train_config' is not a repeated field"),
    ({"train_config": {"sed": 1}}, "at 'train_config': unknown field 'sed' in TrainConfig (did you mean 'seed'?)"),
    ({"train_config..seed": 1}, "at '': malformed path segment"),
])
def test_edit_errors_name_the_failing_segment(config, edit, expected):
    before = config.SerializeToString()
    with pytest.raises(ConfigError) as err:
        apply_edit_config_json(config, edit, source="cli")
    assert expected in str(err.value)
    assert str(err.value).startswith("cli: edit '")
    assert config.SerializeToString() == before  # a failed edit changes nothing


def test_edit_reports_every_failing_path(config):
    with pytest.raises(ConfigError) as err:
        apply_edit_config_json(config, {"a": 1, "train_config.num_epochs": 5, "b": 2})
    assert len(err.value.problems) == 2
    assert config.train_config.num_epochs == 2  # nothing applied


def test_edit_must_be_a_json_object(config):
    with pytest.raises(ConfigError, match="invalid JSON at 1:"):
        apply_edit_config_json(config, "{nope")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        apply_edit_config_json(config, "[1, 2]")
