"""Small shared helpers: configs from protobuf text format, features, models, batches."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recframe.features import BatchParser, create_features
from recframe.negatives import BatchNegatives
from recframe.protos import feature_pb2, model_pb2, module_pb2, pipeline_pb2


@pytest.fixture
def raw_dir() -> Path:
    """$RECFRAME_DATA_DIR/ml-100k, or skip: MovieLens is read from outside the repo, never shipped."""
    data_dir = os.environ.get("RECFRAME_DATA_DIR")
    if not data_dir:
        pytest.skip("RECFRAME_DATA_DIR is not set (it should hold ml-100k/u.data; MovieLens is not redistributed)")
    if not (Path(data_dir) / "ml-100k" / "u.data").is_file():
        pytest.skip(f"$RECFRAME_DATA_DIR/ml-100k/u.data is absent (RECFRAME_DATA_DIR={data_dir})")
    return Path(data_dir) / "ml-100k"


def quickstart_data_edit(data: Path) -> dict:
    """--edit_config_json entries that point examples/dssm_movielens.config at MovieLens-100K
    tables prepared in ``data`` (instead of the config's relative data/ml-100k)."""
    return {
        "data_config.movielens.output_dir": str(data),
        "train_input_path": str(data / "train.parquet"),
        "eval_input_path": str(data / "valid.parquet"),
        "test_input_path": str(data / "test.parquet"),
        "item_input_path": str(data / "items.parquet"),
        "data_config.negative_sampler.input_path": str(data / "items.parquet"),
    }


# One intra-op thread: on a small shared machine torch's default (all cores) makes the
# many tiny training runs of the suite several times slower and their timing erratic.
torch.set_num_threads(1)


def pipeline(text: str) -> pipeline_pb2.PipelineConfig:
    """A PipelineConfig parsed from text format."""
    return text_format.Parse(text, pipeline_pb2.PipelineConfig())


def feature_config(text: str) -> feature_pb2.FeatureConfig:
    """One FeatureConfig from text format, e.g. 'id_feature { feature_name: "x" ... }'."""
    return text_format.Parse(text, feature_pb2.FeatureConfig())


def feature(text: str):
    """The single feature built from one FeatureConfig in text format."""
    (built,) = create_features([feature_config(text)]).values()
    return built


def features(*texts: str) -> dict:
    """Features built from FeatureConfig texts, keyed by name, in order."""
    return create_features([feature_config(t) for t in texts])


def group(text: str) -> model_pb2.FeatureGroupConfig:
    return text_format.Parse(text, model_pb2.FeatureGroupConfig())


def mlp_config(text: str) -> module_pb2.MLP:
    return text_format.Parse(text, module_pb2.MLP())


def build(text: str, label_fields=()):
    """(PipelineConfig, features, model) from a pipeline config in text format."""
    from recframe.models import create_model

    cfg = pipeline(text)
    feats = create_features(cfg.feature_configs)
    labels = list(label_fields) or list(cfg.data_config.label_fields)
    return cfg, feats, create_model(cfg.model_config, feats, labels)


def parse_batch(cfg: pipeline_pb2.PipelineConfig, feats: dict, table: pa.Table, item_frequency=None):
    """A Batch of ``table`` parsed with the data_config of ``cfg``."""
    dc = cfg.data_config
    parser = BatchParser(
        list(feats.values()),
        label_fields=list(dc.label_fields),
        sample_weight_field=dc.sample_weight_field,
        item_id_field=dc.item_id_field,
        negatives=BatchNegatives(item_frequency=item_frequency) if item_frequency is not None else None,
    )
    return parser(table, "test")


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)
