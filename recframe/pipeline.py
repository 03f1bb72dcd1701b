"""Everything built from a pipeline config before training or evaluation starts.

:class:`Pipeline` loads and validates the config, prepares MovieLens data when asked,
creates the features, and hands out the parsers (train / evaluation users / item
catalogue), the datasets over them and the model. The entry points (train, evaluate)
are thin loops over what it builds.
"""

from __future__ import annotations

import os
from typing import Sequence

import pyarrow as pa
import torch

from recframe import distributed
from recframe.config import (ConfigError, apply_edit_config_json, check_pipeline_config, load_pipeline_config,
                             parse_pipeline_config)
from recframe.data import RecordBatchDataset, create_dataloader
from recframe.data.inputs import InputPathNotFoundError, expand_input_paths
from recframe.features import BatchParser, Feature, create_features
from recframe.models import MatchModel, create_model
from recframe.negatives import BatchNegatives, ItemFrequency, create_sampler
from recframe.protos import model_pb2, pipeline_pb2
from recframe.protoutil import oneof_message
from recframe.registry import DATA_SOURCES, LOSSES, SAMPLERS
from recframe.training.optim import sparse_gradients


class Pipeline:
    """A validated pipeline config and the objects it describes.

    Args:
        config: the parsed PipelineConfig.
        source: the config file path (for error messages and relative vocab files).
    """

    def __init__(self, config: pipeline_pb2.PipelineConfig, source: str = "<config>") -> None:
        self.config = config
        self.source = source
        self.config_dir = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else ""
        #: The config's warnings (valid settings that may not do what was meant); training prints them.
        self.warnings: list[str] = check_pipeline_config(config, source)
        self.data_config = config.data_config
        self.features: dict[str, Feature] = create_features(config.feature_configs, self.config_dir)
        model = oneof_message(config.model_config, "model")
        groups = {g.group_name: g for g in config.model_config.feature_groups}
        self.user_features = self._features_of(groups, model.user_tower.input)
        self.item_features = self._features_of(groups, model.item_tower.input)
        self.item_frequency: ItemFrequency | None = None

    def print_warnings(self) -> None:
        """Print each warning of the config as ``warning: ...`` with the run's other output (stdout;
        stderr is kept for the one-line error of a failed run); rank 0 only under torchrun."""
        if os.environ.get("RANK", "0") in ("", "0"):
            for warning in self.warnings:
                print(f"warning: {warning}", flush=True)

    @classmethod
    def from_file(cls, path: str, edit_config_json: str | None = None) -> "Pipeline":
        """Load, override (``--edit_config_json``) and validate a config file."""
        config = load_pipeline_config(path)
        if edit_config_json:
            apply_edit_config_json(config, edit_config_json, source=path)
        return cls(config, path)

    @classmethod
    def from_string(cls, text: str, edit_config_json: str | None = None, source: str = "<string>",
                    fmt: str = "text") -> "Pipeline":
        """Parse, override and validate a config held in a string (text format, or ``fmt="json"``);
        relative paths in it are relative to the working directory."""
        config = parse_pipeline_config(text, source, fmt)
        if edit_config_json:
            apply_edit_config_json(config, edit_config_json, source=source)
        return cls(config, source)

    def _features_of(self, groups: dict[str, model_pb2.FeatureGroupConfig], names: Sequence[str]) -> list[Feature]:
        ordered = [f for g in names for f in groups[g].feature_names]
        return [self.features[n] for n in dict.fromkeys(ordered)]

    # ---- data ---------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Let every data source data_config sets (e.g. movielens) prepare its tables: each
        source writes them when they are missing or out of date and leaves an up-to-date set
        alone (existing files alone are not enough: a set of another history length or an older
        table format must be rebuilt)."""
        for field, value in self.data_config.ListFields():
            if field.message_type is not None and field.message_type.name in DATA_SOURCES:
                DATA_SOURCES.get(field.message_type.name)(value).prepare()

    def check_input_paths(self, fields: Sequence[str] = ("train_input_path", "eval_input_path",
                                                         "item_input_path", "test_input_path")) -> None:
        """Raise ConfigError naming the config field when a set input path matches no file."""
        for name in fields:
            spec = getattr(self.config, name)
            if not spec:
                continue
            try:
                expand_input_paths(spec)
            except InputPathNotFoundError as e:
                raise ConfigError(f"{self.source}: {name}: {e}") from None

    def uses_logq(self) -> bool:
        model = oneof_message(self.config.model_config, "model")
        return bool(model.logq_correction)

    def load_item_frequency(self) -> ItemFrequency:
        """Count data_config.item_id_field over the training data (one column read)."""
        if self.item_frequency is None:
            dataset = self.dataset(self.config.train_input_path, columns=[self.data_config.item_id_field],
                                   parse_fn=None, shuffle=False, batch_size=1 << 16)
            chunks = [b.column(self.data_config.item_id_field) for b in dataset]
            self.item_frequency = ItemFrequency.from_item_ids(pa.chunked_array(chunks))
        return self.item_frequency

    def _model_message(self):
        return oneof_message(self.config.model_config, "model")

    def build_sampler(self):
        """The data_config negative sampler (None without one), its pool aligned to the
        training data's column types."""
        if self.data_config.WhichOneof("sampler") is None:
            return None
        sampler_config = oneof_message(self.data_config, "sampler")
        needs_counts = SAMPLERS.get(type(sampler_config).DESCRIPTOR.name).needs_item_counts(sampler_config)
        sampler = create_sampler(
            self.data_config,
            item_columns=list(dict.fromkeys(f.input_name for f in self.item_features)),
            item_frequency=self.load_item_frequency() if needs_counts else None,
            config_dir="",  # data paths are relative to the working directory, like the input paths
        )
        first_rows = self.dataset(self.config.train_input_path, columns=None, parse_fn=None,
                                  shuffle=False, batch_size=1)
        sampler.align_pool_types(next(iter(first_rows)).schema)
        return sampler

    def train_parser(self) -> BatchParser:
        """Parser of training rows: every feature, labels, weights, item id, log q, the items
        excluded from each row's negatives, and the negative sampler's items appended to the
        item-side features."""
        dc = self.data_config
        model = self._model_message()
        sampler = self.build_sampler()
        needs_frequency = self.uses_logq() and model.in_batch_negative
        negatives = BatchNegatives(
            sampler,
            item_frequency=self.load_item_frequency() if needs_frequency else None,
            in_batch_negative=model.in_batch_negative,
            logq=self.uses_logq(),
            in_batch_ranks=distributed.world_size() if self.config.train_config.global_in_batch_negative else 1,
            exclude_field=dc.exclude_negatives_field or None,
        )
        return BatchParser(
            [*self.user_features, *self.item_features],
            label_fields=dc.label_fields,
            label_bounds=self.label_bounds(sampled=sampler is not None),
            sample_weight_field=dc.sample_weight_field or None,
            item_id_field=dc.item_id_field or None,
            item_features=self.item_features,
            negatives=negatives,
        )

    def label_bounds(self, sampled: bool) -> dict[str, tuple[float, float]]:
        """{label column: (low, high)} of the losses that read the label (the first label
        field, read by pointwise losses without sampled negatives)."""
        if sampled or not self.data_config.label_fields:
            return {}
        for loss in self.config.model_config.losses:
            bounds = LOSSES.get(type(oneof_message(loss, "loss")).DESCRIPTOR.name).label_bounds
            if bounds is not None:
                return {self.data_config.label_fields[0]: bounds}
        return {}

    def pointwise_label(self) -> str | None:
        """The label column eval_config.pointwise_metrics scores the evaluation rows against
        (data_config.label_fields[0], the one binary_cross_entropy reads), or None without
        pointwise metrics."""
        if not self.config.eval_config.pointwise_metrics or not self.data_config.label_fields:
            return None
        return self.data_config.label_fields[0]

    def eval_user_parser(self) -> BatchParser:
        """Parser of evaluation rows: user features, the target item id, excluded items; with
        eval_config.pointwise_metrics also the item tower's features and the label column
        (each row is scored as a (user, item) pair)."""
        exclude = self.config.eval_config.exclude_items_field
        label = self.pointwise_label()
        features = self.user_features
        if label is not None:
            names = {f.name for f in features}
            features = [*features, *(f for f in self.item_features if f.name not in names)]
        return BatchParser(features, item_id_field=self.data_config.item_id_field,
                           list_fields=[exclude] if exclude else [], label_fields=[label] if label else [],
                           label_bounds=self.label_bounds(sampled=False) if label else None)

    def item_parser(self) -> BatchParser:
        """Parser of the item catalogue: item features and the item id."""
        return BatchParser(self.item_features, item_id_field=self.data_config.item_id_field)

    def dataset(self, paths: str, columns: Sequence[str], parse_fn, *, seed: int = 0, rank: int = 0,
                world_size: int = 1, **overrides) -> RecordBatchDataset:
        """A RecordBatchDataset over ``paths`` with data_config's options (``overrides`` win)."""
        return RecordBatchDataset.from_data_config(
            paths, self.data_config, columns=columns, parse_fn=parse_fn, seed=seed,
            rank=rank, world_size=world_size, **overrides,
        )

    def eval_loader(self, paths: str, parser: BatchParser, rank: int = 0, world_size: int = 1,
                    device: torch.device | None = None):
        """Unshuffled loader over every row of ``paths`` (no row dropped), parsed by
        data_config.num_workers workers in the order of num_workers 0 (same batches, same order:
        ``keep_order``); batches pinned when they go to a CUDA ``device``."""
        dataset = self.dataset(paths, parser.columns(), parser, rank=rank, world_size=world_size,
                               shuffle=False, drop_remainder=False, keep_order=True)
        return create_dataloader(dataset, num_workers=self.data_config.num_workers,
                                 pin_memory=device is not None and device.type == "cuda",
                                 prefetch_factor=self.data_config.prefetch_factor)

    # ---- model --------------------------------------------------------------------------

    def build_model(self) -> MatchModel:
        """The model the config describes (fresh parameters)."""
        train_config = self.config.train_config
        sparse_optimizer = train_config.sparse_optimizer if train_config.HasField("sparse_optimizer") else None
        return create_model(self.config.model_config, self.features, list(self.data_config.label_fields),
                            global_in_batch_negative=train_config.global_in_batch_negative,
                            sparse_embeddings=sparse_gradients(sparse_optimizer))
