"""Convert a TorchEasyRec (``tzrec``) DSSM / DSSMV2 pipeline config into a recframe config.

TorchEasyRec's protos are not needed: the text is read schema-less
(:func:`recframe.config.textproto.parse_text_proto`) and every field is mapped onto
recframe's messages by name. What has no recframe equivalent is never dropped silently:
each such field becomes an :class:`Unmapped` note naming the TorchEasyRec field, what is
lost and the nearest recframe equivalent (or what to do instead). A field this module does
not know at all is reported the same way, so a newer TorchEasyRec schema degrades into
notes, not into a wrong config.

Where the two schemas share a field name but not its default, the converter writes
TorchEasyRec's value explicitly (and notes it when the source left it unset), so that the
converted pipeline behaves like the original: ``in_batch_negative`` (false in TorchEasyRec,
true in recframe), ``data_config.shuffle``, the staircase of exponential decay, SGD momentum,
AdamW weight decay, sequence pooling.

Typical use::

    from recframe.config.convert_tzrec import convert_tzrec, format_converted_config
    result = convert_tzrec(open("dssm_taobao.config").read(), "dssm_taobao.config")
    for note in result.unmapped:
        print(note)
    text = format_converted_config(result)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from recframe.config.errors import ConfigError
from recframe.config.names import activation_name
from recframe.config.textproto import Identifier, TextMessage, parse_text_proto
from recframe.protos import data_pb2, feature_pb2, metric_pb2, model_pb2, module_pb2, pipeline_pb2, train_pb2
from recframe.protoutil import oneof_message

#: Model messages the converter accepts (TorchEasyRec ModelConfig members).
MODELS = ("dssm", "dssm_v2")

# TorchEasyRec FgMode values.
FG_NONE, FG_NORMAL, FG_DAG, FG_BUCKETIZE = "FG_NONE", "FG_NORMAL", "FG_DAG", "FG_BUCKETIZE"
_FG_RAW = (FG_NORMAL, FG_DAG)  # the input columns hold raw values, TorchEasyRec's FG transforms them

#: Feature kinds computed only by TorchEasyRec's feature generator (FG) from other columns.
FG_ONLY_FEATURES = ("combo_feature", "lookup_feature", "match_feature", "expr_feature", "overlap_feature",
                    "custom_feature", "kv_dot_product", "bool_mask_feature", "combine_feature")
#: Fields of the FG-only features that name their input columns.
_FG_INPUT_FIELDS = ("expression", "map", "key", "nested_map", "pkey", "skey", "variables", "query", "title",
                    "document")
_SIZE_FIELDS = ("zch", "dynamicemb", "hash_bucket_size", "num_buckets", "vocab_list", "vocab_dict", "vocab_file")

_ODPS = "odps://"
_DEFAULT_NEAREST = "none: recframe has no such setting"
_TZREC_DEFAULT_LR = 0.002
_EPOCHS_FOR_STEPS = 1_000_000


@dataclass(frozen=True)
class Unmapped:
    """A TorchEasyRec setting the converted config does not carry as it was.

    Attributes:
        path: the TorchEasyRec field, e.g. ``data_config.negative_sampler.attr_fields``;
            repeated messages are picked by name, e.g. ``feature_configs[feature_name=pid]``.
        what: what is not mapped (with its value) and why.
        nearest: the nearest recframe equivalent, or what to do instead.
    """

    path: str
    what: str
    nearest: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}; nearest in recframe: {self.nearest}"


@dataclass
class ConversionResult:
    """The converted config and what could not be mapped.

    Attributes:
        config: the recframe PipelineConfig.
        unmapped: every TorchEasyRec setting not carried over as it was, in the order of the
            conversion (inputs, data, features, model, training, evaluation, export).
        model: the converted model message, "dssm" or "dssm_v2".
        source: the name of the TorchEasyRec config (its path).
    """

    config: pipeline_pb2.PipelineConfig
    unmapped: list[Unmapped]
    model: str
    source: str = "<string>"


def _escape(text: str) -> str:
    """Control characters as \\xNN (a note is one line), everything else as it is."""
    return "".join(f"\\x{ord(ch):02x}" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)


def _quote(value: str) -> str:
    return '"' + _escape(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _show(value: Any) -> str:
    """A value as the text format writes it: strings quoted, messages as {...}."""
    if isinstance(value, TextMessage):
        inner = " ".join(f"{k}: {_show_values(v)}" if not all(isinstance(x, TextMessage) for x in v)
                         else " ".join(f"{k} {_show(x)}" for x in v) for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Identifier):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def _show_values(values: list[Any], limit: int = 8) -> str:
    if len(values) == 1:
        return _show(values[0])
    shown = [_show(v) for v in values[:limit]]
    more = f", ... ({len(values)} values)" if len(values) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


class _Node:
    """A TorchEasyRec message under conversion: its field path and the fields already read."""

    def __init__(self, message: TextMessage, path: str, converter: "_Converter") -> None:
        self.message = message
        self.path = path
        self.converter = converter
        self.used: set[str] = set()

    def at(self, name: str) -> str:
        """The path of field ``name``."""
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        """Whether field ``name`` is written (does not mark it read)."""
        return name in self.message

    def take(self, name: str) -> list[Any]:
        """Every value of ``name`` (marked read); [] when absent."""
        self.used.add(name)
        return list(self.message.get(name, []))

    def value(self, name: str, kind: str, default: Any = None) -> Any:
        """The last value of ``name`` as ``kind`` ("str", "int", "float", "bool", "enum"), or
        ``default`` when absent; marked read."""
        values = self.take(name)
        if not values:
            return default
        return self._convert(name, values[-1], kind, len(values) - 1)

    def values(self, name: str, kind: str) -> list[Any]:
        """Every value of ``name`` as ``kind``; marked read."""
        return [self._convert(name, v, kind, i) for i, v in enumerate(self.take(name))]

    def child(self, name: str) -> "_Node | None":
        """The last message value of ``name`` as a node, or None when absent; marked read."""
        nodes = self.children(name)
        return nodes[-1] if nodes else None

    def children(self, name: str, label: Callable[[TextMessage], str] | None = None) -> list["_Node"]:
        """Every message value of ``name`` as a node; ``label`` names each one in its path."""
        out = []
        for i, value in enumerate(self.take(name)):
            if not isinstance(value, TextMessage):
                raise self._error(name, i, f"got {_show(value)}, expected a message {{ ... }}")
            tag = label(value) if label else None
            suffix = f"[{tag}]" if tag else (f"[{i}]" if len(self.message[name]) > 1 else "")
            out.append(_Node(value, self.at(name) + suffix, self.converter))
        return out

    def unread(self) -> list[str]:
        """Fields written but not read, in file order."""
        return [name for name in self.message if name not in self.used]

    def _error(self, name: str, index: int, what: str) -> ConfigError:
        lines = self.message.lines.get(name) or [self.message.line]
        line = lines[min(index, len(lines) - 1)]
        return ConfigError(f"{self.converter.source}:{line}: {self.at(name)}: {what}")

    def _convert(self, name: str, value: Any, kind: str, index: int) -> Any:
        if isinstance(value, TextMessage):
            raise self._error(name, index, f"got a message, expected a {kind} value")
        if kind == "str":
            if isinstance(value, str) and not isinstance(value, Identifier):
                return value
            if isinstance(value, Identifier):
                return str(value)
        elif kind == "int":
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif kind == "bool":
            if isinstance(value, Identifier) and value.lower() in ("true", "t", "false", "f"):
                return value.lower() in ("true", "t")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
        elif kind == "enum":
            if isinstance(value, Identifier):
                return str(value)
            if isinstance(value, str):
                return value
        raise self._error(name, index, f"got {_show(value)}, expected a {kind} value")


def _feature_label(message: TextMessage) -> str | None:
    for kind, values in message.items():
        if values and isinstance(values[0], TextMessage):
            name = values[0].first("sequence_name" if kind == "sequence_feature" else "feature_name")
            if isinstance(name, str):
                key = "sequence_name" if kind == "sequence_feature" else "feature_name"
                return f"{key}={name}"
    return None


def _name_label(key: str) -> Callable[[TextMessage], str | None]:
    def label(message: TextMessage) -> str | None:
        value = message.first(key)
        return f"{key}={value}" if isinstance(value, str) else None
    return label


@dataclass
class _Feature:
    """One converted feature (before the embedding names are settled)."""

    name: str
    member: str  # recframe FeatureConfig member: id_feature, raw_feature, sequence_id_feature, ...
    message: Message
    path: str
    has_table: bool
    explicit_table: bool


@dataclass
class _SeqGroup:
    """A TorchEasyRec sequence group nested in a DEEP group."""

    name: str
    features: list[str]
    path: str
    used: bool = False


@dataclass
class _Converter:
    source: str
    unmapped: list[Unmapped] = field(default_factory=list)
    fg_mode: str = FG_NONE
    multival_sep: str = "\x03"
    features: dict[str, _Feature] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # feature name -> why it has no recframe feature
    loss_kinds: set[str] = field(default_factory=set)

    # -- notes
    def note(self, path: str, what: str, nearest: str) -> None:
        """Record a setting the converted config does not carry."""
        self.unmapped.append(Unmapped(path, what, nearest))

    def skip(self, node: _Node, name: str, nearest: str, why: str = "") -> None:
        """Note field ``name`` of ``node`` (when written) as not mapped."""
        if node.has(name):
            values = node.take(name)
            what = f"{name}: {_show_values(values)}" + (f" ({why})" if why else "")
            self.note(node.at(name), what, nearest)

    def rest(self, node: _Node, nearest: dict[str, str] | None = None) -> None:
        """Note every field of ``node`` not read so far (with its nearest equivalent when known)."""
        nearest = nearest or {}
        for name in node.unread():
            hint = nearest.get(name)
            if hint is None:
                self.skip(node, name, _DEFAULT_NEAREST, "no recframe equivalent")
            else:
                self.skip(node, name, hint)

    # -- the whole pipeline
    def convert(self, root: _Node) -> tuple[pipeline_pb2.PipelineConfig, str]:
        model_node = root.message.last("model_config")
        model = self._model_kind(model_node)
        config = pipeline_pb2.PipelineConfig()
        for name in ("train_input_path", "eval_input_path"):
            path = root.value(name, "str")
            if path is not None:
                setattr(config, name, path)
                self._check_path(root.at(name), path, name)
        model_dir = root.value("model_dir", "str")
        if model_dir is not None:
            config.model_dir = model_dir
        data = root.child("data_config") or _Node(TextMessage(), root.at("data_config"), self)
        self._fg_mode(data)
        self._data(data, config.data_config)
        for node in root.children("feature_configs", _feature_label):
            self._feature_config(node)
        self._settle_tables(config)
        model_config = root.child("model_config")
        assert model_config is not None  # checked by _model_kind
        self._model(model_config, config.model_config, model)
        self._leave_out_unread(config, data)
        train = root.child("train_config")
        if train is not None:
            self._train(train, config.train_config)
        evaluation = root.child("eval_config")
        self._eval(evaluation, root)
        export = root.child("export_config")
        if export is not None:
            self._export(export)
        self.rest(root)
        return config, model

    def _leave_out_unread(self, config: pipeline_pb2.PipelineConfig, data: _Node) -> None:
        """Leave out, with a note, what the converted model would not read (and recframe's
        validator refuses): label columns no loss reads, the pooling of sequence features that
        are only in SEQUENCE groups (their sequence_encoder reduces the positions)."""
        dc = config.data_config
        reads_label = dc.WhichOneof("sampler") is None and any(
            loss.WhichOneof("loss") == "binary_cross_entropy" for loss in config.model_config.losses)
        if dc.label_fields and not reads_label:
            self.note(data.at("label_fields"), f"label_fields: {list(dc.label_fields)} (no loss of the converted model "
                                               "reads a label: the softmax ranks each row's positive, BCE with a "
                                               "sampler takes the sampled items as its 0 labels)", "none: left out")
            del dc.label_fields[:]
        groups = config.model_config.feature_groups
        deep = {name for g in groups if g.group_type != model_pb2.SEQUENCE for name in g.feature_names}
        in_sequence = {name for g in groups if g.group_type == model_pb2.SEQUENCE for name in g.feature_names}
        for fc in config.feature_configs:
            message = oneof_message(fc, "feature")
            name = getattr(message, "feature_name", "")
            if ("pooling" in message.DESCRIPTOR.fields_by_name and message.HasField("pooling")
                    and name in in_sequence and name not in deep):
                self.note(f"feature_configs ({name}).pooling", f"pooling of '{name}', which is only in SEQUENCE "
                                                               "groups", "the group's sequence_encoder (left out)")
                message.ClearField("pooling")

    def _model_kind(self, model_config: Any) -> str:
        if not isinstance(model_config, TextMessage):
            raise ConfigError(f"{self.source}: model_config: not set, expected a TorchEasyRec model_config with "
                              "dssm or dssm_v2 (recframe convert-tzrec converts DSSM and DSSMV2 configs)")
        known = {"feature_groups", "losses", "metrics", "train_metrics", "variational_dropout", "num_class",
                 "kernel", "use_pareto_loss_weight"}
        models = [name for name in model_config if name not in known]
        found = [name for name in models if name in MODELS]
        if not found:
            got = f"got {', '.join(models)}" if models else "no model message"
            raise ConfigError(f"{self.source}:{model_config.line}: model_config: {got}, expected dssm or dssm_v2 "
                              "(recframe convert-tzrec converts TorchEasyRec DSSM and DSSMV2 configs only)")
        if len(found) > 1 or len(model_config[found[0]]) > 1:
            raise ConfigError(f"{self.source}:{model_config.line}: model_config: more than one model message "
                              f"({', '.join(found)}), expected one of dssm or dssm_v2")
        return found[0]

    def _check_path(self, path: str, value: str, field_name: str) -> None:
        odps = [p for p in value.split(",") if p.strip().startswith(_ODPS)]
        if odps:
            self.note(path, f"ODPS table {_quote(odps[0])}: recframe reads Parquet or CSV files, not MaxCompute tables "
                            "(kept as written)",
                      f"export the table to Parquet files and set {field_name} to them (files, directories or globs)")

    # -- data_config
    def _fg_mode(self, data: _Node) -> None:
        if data.has("fg_encoded"):
            encoded = data.value("fg_encoded", "bool")
            threads = data.value("fg_threads", "int", 1)
            self.fg_mode = FG_NONE if encoded else (FG_DAG if threads > 0 else FG_NORMAL)
            self.note(data.at("fg_encoded"), f"fg_encoded: {str(encoded).lower()} (deprecated in TorchEasyRec; "
                                             f"read as fg_mode {self.fg_mode})",
                      "see the fg_mode note")
            if data.has("fg_mode"):
                self.skip(data, "fg_mode", _DEFAULT_NEAREST, "overridden by fg_encoded in TorchEasyRec")
        else:
            self.fg_mode = data.value("fg_mode", "enum", FG_NONE)
            if self.fg_mode not in (FG_NONE, FG_NORMAL, FG_DAG, FG_BUCKETIZE):
                raise ConfigError(f"{self.source}: {data.at('fg_mode')}: unknown value {self.fg_mode}, expected "
                                  "FG_NONE, FG_NORMAL, FG_DAG or FG_BUCKETIZE")
        self.multival_sep = data.value("fg_encoded_multival_sep", "str", "\x03")
        fg_path = data.at("fg_mode")
        if self.fg_mode in _FG_RAW:
            self.note(fg_path, f"fg_mode {self.fg_mode}: TorchEasyRec's feature generator (FG) turns raw columns "
                               "into ids; recframe has no FG",
                      "recframe transforms the raw columns itself: each id_feature / raw_feature reads the column of "
                      "its expression (input_name), with recframe's own hashing (64-bit FNV-1a, so hash buckets "
                      "differ from FG's), vocabularies and boundaries; FG-only features must be precomputed")
            self.skip(data, "fg_threads", "none: recframe parses the columns in its DataLoader workers "
                                          "(data_config.num_workers)")
        elif self.fg_mode == FG_NONE:
            self.note(fg_path, f"fg_mode {self.fg_mode} (the default): the columns hold FG-encoded values, named like "
                               "the features",
                      "each id-like feature reads its column as num_buckets = its TorchEasyRec table size "
                      "(hash_bucket_size, num_buckets or vocabulary size); raw features with boundaries read "
                      "their bucket ids the same way; the normalizers were applied by FG already")
            self.skip(data, "fg_threads", "none: no FG in recframe")
        else:
            self.note(fg_path, f"fg_mode {self.fg_mode}: the columns hold FG outputs named like the features, "
                               "bucketized by TorchEasyRec",
                      "recframe bucketizes the same columns itself (hash_bucket_size, num_buckets, vocab_list, "
                      "boundaries); its hash is 64-bit FNV-1a, so hash buckets differ from FG's")
            self.skip(data, "fg_threads", "none: no FG in recframe")
        if self.fg_mode not in (FG_NONE, FG_BUCKETIZE) and data.has("fg_encoded_multival_sep"):
            self.note(data.at("fg_encoded_multival_sep"), f"fg_encoded_multival_sep: {_quote(self.multival_sep)} "
                                                          f"(only read with FG-encoded input)",
                      _DEFAULT_NEAREST)

    def _data(self, node: _Node, out: data_pb2.DataConfig) -> None:
        batch_size = node.value("batch_size", "int")
        if batch_size is not None:
            out.batch_size = batch_size
        dataset_type = node.value("dataset_type", "enum")
        if dataset_type in (None, "OdpsDataset", "OdpsDatasetV1", "KafkaDataset"):
            written = dataset_type or "OdpsDataset (the default)"
            self.note(node.at("dataset_type"), f"dataset_type {written}: recframe reads Parquet or CSV files",
                      "dataset_type: ParquetDataset (written): export the tables to Parquet")
            out.dataset_type = data_pb2.ParquetDataset
        elif dataset_type == "ParquetDataset":
            out.dataset_type = data_pb2.ParquetDataset
        elif dataset_type == "CsvDataset":
            out.dataset_type = data_pb2.CsvDataset
            if not node.value("with_header", "bool", False):
                self.note(node.at("with_header"), "with_header: false (TorchEasyRec's default): CSV files without a "
                                                  "header line, columns named by input_fields",
                          "recframe reads the column names from the first line of each CSV file: add a header line")
        else:
            raise ConfigError(f"{self.source}: {node.at('dataset_type')}: unknown value {dataset_type}, expected "
                              "OdpsDataset, ParquetDataset, CsvDataset, OdpsDatasetV1 or KafkaDataset")
        delimiter = node.value("delimiter", "str")
        if delimiter is not None:
            out.csv_delimiter = delimiter
        out.label_fields.extend(node.values("label_fields", "str"))
        num_workers = node.value("num_workers", "int")
        if num_workers is not None:
            out.num_workers = num_workers
        drop_remainder = node.value("drop_remainder", "bool")
        if drop_remainder is not None:
            out.drop_remainder = drop_remainder
        weights = node.values("sample_weight_fields", "str")
        if weights:
            out.sample_weight_field = weights[0]
            if len(weights) > 1:
                self.note(node.at("sample_weight_fields"), f"sample_weight_fields: {_show_values(weights)}: one "
                                                           "weight per row in recframe (one loss)",
                          f"sample_weight_field: {_quote(weights[0])} (the first, written)")
        shuffle = node.value("shuffle", "bool")
        out.shuffle = bool(shuffle)
        if shuffle is None:
            self.note(node.at("shuffle"), "not set: TorchEasyRec does not shuffle by default, recframe does",
                      "shuffle: false (written, TorchEasyRec's behaviour); set it true for a shuffled read")
        buffer = node.value("shuffle_buffer_size", "int")
        if buffer is not None and out.shuffle:
            rows = buffer * out.batch_size
            out.shuffle_buffer_size = rows
            self.note(node.at("shuffle_buffer_size"), f"shuffle_buffer_size: {buffer} counts batches in TorchEasyRec "
                                                      "(whole batches are shuffled)",
                      f"shuffle_buffer_size: {rows} rows (written: {buffer} x batch_size {out.batch_size}), "
                      "shuffled row by row")
        elif buffer is not None:
            self.note(node.at("shuffle_buffer_size"), f"shuffle_buffer_size: {buffer} without shuffle",
                      _DEFAULT_NEAREST)
        for kind in ("negative_sampler", "negative_sampler_v2", "hard_negative_sampler",
                     "hard_negative_sampler_v2", "tdm_sampler"):
            sampler = node.child(kind)
            if sampler is not None:
                self._sampler(kind, sampler, out)
        if not out.item_id_field:
            self.note(node.path, "no sampler names the item id column (item_id_field)",
                      "data_config.item_id_field: the item id column of the training data (recframe masks accidental "
                      "hits with it and evaluates against it); set it by hand")
        odps = "only for ODPS tables; recframe reads Parquet or CSV files"
        self.rest(node, {
            "pin_memory": "none needed: recframe pins batches in page-locked memory on CUDA by itself",
            "input_fields": "none: recframe reads column names and types from the files (Parquet schema, CSV "
                            "header)",
            "input_fields_str": "none: recframe reads column names and types from the files",
            "with_header": "none: recframe's CSV files always have a header line",
            "eval_batch_size": "data_config.batch_size, used for training and evaluation alike",
            "is_orderby_partition": odps,
            "odps_data_quota_name": odps,
            "odps_data_compression": odps,
            "sample_mask_prob": _DEFAULT_NEAREST + " (no feature masking while training)",
            "negative_sample_mask_prob": _DEFAULT_NEAREST + " (no feature masking while training)",
            "force_base_data_group": "none needed: recframe's DSSMV2 shares tables without it",
            "sample_cost_field": "data_config.batch_size (batches of a fixed number of rows)",
            "batch_cost_size": "data_config.batch_size (batches of a fixed number of rows)",
            "in_order": "none: recframe's DataLoader keeps the order of its workers' batches",
        })

    def _sampler(self, kind: str, node: _Node, out: data_pb2.DataConfig) -> None:
        item_id_field = node.value("item_id_field", "str")
        if item_id_field:
            out.item_id_field = item_id_field
        attrs = node.values("attr_fields", "str")
        num_sample = node.value("num_sample", "int")
        if kind == "negative_sampler":
            message: Message = out.negative_sampler
            pool = node.value("input_path", "str")
            pool_path = node.at("input_path")
        elif kind == "negative_sampler_v2":
            message = out.negative_sampler_v2
            pool = node.value("item_input_path", "str")
            pool_path = node.at("item_input_path")
            edges = node.value("pos_edge_input_path", "str")
            if edges is not None:
                message.edge_input_path = edges
                self._check_edges(node.at("pos_edge_input_path"), edges, "negative_sampler_v2.edge_input_path")
        elif kind in ("hard_negative_sampler", "hard_negative_sampler_v2"):
            message = out.hard_negative_sampler
            pool = node.value("item_input_path", "str")
            pool_path = node.at("item_input_path")
            edges = node.value("hard_neg_edge_input_path", "str")
            if edges is not None:
                message.hard_neg_edge_input_path = edges
                self._check_edges(node.at("hard_neg_edge_input_path"), edges,
                                  "hard_negative_sampler.hard_neg_edge_input_path")
            num_hard = node.value("num_hard_sample", "int")
            if num_hard is not None:
                message.num_hard_sample = num_hard
            if kind == "hard_negative_sampler_v2":
                self.note(node.path, "hard_negative_sampler_v2: recframe has no sampler that both avoids each user's "
                                     "positive edges and adds hard negatives",
                          "hard_negative_sampler (written; the shared negatives may hit a user's positives, masked "
                          "only as accidental hits), or negative_sampler_v2 without hard negatives")
                self.skip(node, "pos_edge_input_path", "negative_sampler_v2.edge_input_path (not combinable with "
                                                       "hard negatives)")
        else:
            self.note(node.path, "tdm_sampler: tree-based deep retrieval (TDM) sampling, not a DSSM sampler",
                      "none; use negative_sampler, negative_sampler_v2 or hard_negative_sampler")
            node.used.update(node.message)
            return
        if pool is not None:
            message.input_path = pool
            if num_sample is not None:
                message.num_sample = num_sample
            message.weight_field = "weight"
            columns = ", ".join(dict.fromkeys([item_id_field or "<item_id_field>", *attrs, "weight"]))
            self.note(pool_path, f"graph-learn item table {_quote(pool)} (id | weight | attrs, the attributes packed "
                                 f"in one string)",
                      f"{kind.replace('_v2', '') if kind == 'hard_negative_sampler_v2' else kind}.input_path: a "
                      f"Parquet/CSV pool with one column per field: {columns} (weight_field: \"weight\" written, "
                      f"TorchEasyRec draws by that weight)")
        if attrs:
            delimiter = node.value("attr_delimiter", "str", ":")
            self.note(node.at("attr_fields"), f"graph-learn attributes {_show_values(attrs, limit=20)} packed in one "
                                              f"string column (attr_delimiter {_quote(delimiter)})",
                      "recframe's sampler pool holds each item feature in its own column, with the names and types "
                      "of the training data; the sampled items go through the same features as the positives")
        elif node.has("attr_delimiter"):
            self.skip(node, "attr_delimiter", "none: recframe's pool has one column per item feature")
        user_id_field = node.value("user_id_field", "str")
        if user_id_field is not None and kind != "negative_sampler":
            message.user_id_field = user_id_field
        self.skip(node, "user_input_path", "none needed: recframe reads the user ids from user_id_field of the "
                                           "training data and the edge table")
        self.rest(node, {
            "field_delimiter": "none: recframe's pool and edge tables are Parquet/CSV files (data_config.dataset_type, "
                               "csv_delimiter)",
            "item_id_delim": "none: one item id per row of recframe's pool",
            "num_eval_sample": "eval_config (recframe's evaluation ranks the whole item_input_path catalogue, "
                               "no sampled negatives)",
        })

    def _check_edges(self, path: str, value: str, field_name: str) -> None:
        self.note(path, f"graph-learn edge table {_quote(value)} (userid | itemid | weight)",
                  f"{field_name}: a Parquet/CSV table with columns user_id_field and item_id_field (the weight is "
                  "not read)")

    # -- features
    def _feature_config(self, node: _Node) -> None:
        members = list(node.message)
        if len(members) != 1:
            raise ConfigError(f"{self.source}:{node.message.line}: {node.path}: expected exactly one feature message, "
                              f"got {', '.join(members) or 'none'}")
        member = members[0]
        inner = node.child(member)
        assert inner is not None
        if member == "sequence_feature":
            self._sequence_feature(inner)
            return
        sequence = member.startswith("sequence_")
        base = member[len("sequence_"):] if sequence else member
        name = inner.value("feature_name", "str")
        if not name:
            raise ConfigError(f"{self.source}:{inner.message.line}: {inner.at('feature_name')}: not set, expected a "
                              "feature name")
        if base == "id_feature":
            self._id_like(inner, name, sequence=sequence, seq=None)
        elif base == "raw_feature":
            self._raw_like(inner, name, sequence=sequence, seq=None)
        elif base in FG_ONLY_FEATURES:
            self._fg_only(inner, name, base, sequence=sequence, seq=None)
        elif base == "tokenize_feature":
            self._drop(inner, name, f"{member} (BPE / SentencePiece tokens computed by TorchEasyRec's FG)",
                       "text_feature (DSSM word hashing of a text column), or precompute the token ids into a list "
                       "column read by a sequence_id_feature / id_feature with num_buckets = the vocabulary size")
        else:
            self._drop(inner, name, f"{member}: unknown TorchEasyRec feature type",
                       "id_feature, raw_feature, sequence_id_feature, sequence_raw_feature or text_feature")

    def _drop(self, node: _Node, name: str, what: str, nearest: str) -> None:
        node.used.update(node.message)
        self.dropped[name] = what
        self.note(node.path, f"{what}: not converted", nearest)

    def _sequence_feature(self, node: _Node) -> None:
        seq = node.value("sequence_name", "str")
        if not seq:
            raise ConfigError(f"{self.source}:{node.message.line}: {node.at('sequence_name')}: not set, expected the "
                              "sequence name")
        length = node.value("sequence_length", "int")
        delim = node.value("sequence_delim", "str", ";")
        self.skip(node, "sequence_pk", "none: recframe's exported user tower takes the sequence columns of each "
                                       "request row itself (no item feature lookup by primary key)")
        for sub in node.children("features", _feature_label):
            members = list(sub.message)
            if len(members) != 1:
                raise ConfigError(f"{self.source}:{sub.message.line}: {sub.path}: expected exactly one feature "
                                  f"message, got {', '.join(members) or 'none'}")
            member = members[0]
            inner = sub.child(member)
            assert inner is not None
            feature_name = inner.value("feature_name", "str")
            if not feature_name:
                raise ConfigError(f"{self.source}:{inner.message.line}: {inner.at('feature_name')}: not set, expected "
                                  "a feature name")
            name = f"{seq}__{feature_name}"
            for own in ("sequence_length", "sequence_delim"):
                self.skip(inner, own, f"the sequence_feature's {own} (TorchEasyRec uses it too)")
            context = (seq, length, delim)
            if member == "id_feature":
                self._id_like(inner, name, sequence=True, seq=context)
            elif member == "raw_feature":
                self._raw_like(inner, name, sequence=True, seq=context)
            elif member in FG_ONLY_FEATURES:
                self._fg_only(inner, name, member, sequence=True, seq=context)
            else:
                self._drop(inner, name, f"sequence_feature.features.{member}",
                           "sequence_id_feature over a precomputed list column")
            self.rest(sub)
        self.rest(node)

    def _column(self, node: _Node, name: str, seq: tuple[str, int | None, str] | None) -> str:
        """The input column of an id_feature / raw_feature: its name for FG-encoded or bucketize-only input,
        else the input of its expression (prefixed "<sequence_name>__" inside a sequence_feature)."""
        if self.fg_mode not in _FG_RAW:
            self.skip(node, "expression", f"none needed: with fg_mode {self.fg_mode} the column is named like the "
                                          "feature")
            node.take("sequence_fields")
            return name
        expression = node.value("expression", "str")
        sequence_fields = node.values("sequence_fields", "str")
        if not expression or ":" not in expression:
            self.note(node.at("expression"), f"expression: {_quote(expression or '')}, expected side:column",
                      f"the converted feature reads column {_quote(name)} (its name)")
            return name
        side, column = expression.split(":", 1)
        if side == "const":
            self.note(node.at("expression"), f"expression: {_quote(expression)}: a constant computed by FG",
                      f"precompute it into column {_quote(name)} (read by the converted feature)")
            return name
        if seq is not None:
            is_sequence_input = column in sequence_fields if sequence_fields else side != "feature"
            if is_sequence_input:
                return f"{seq[0]}__{column}"
        return column

    def _table_size(self, node: _Node, out: Message) -> None:
        """Size the table of an id-like recframe message from TorchEasyRec's sizing fields."""
        present = [name for name in _SIZE_FIELDS if node.has(name)]
        if not present:
            return
        chosen = present[0]
        for other in present[1:]:
            self.skip(node, other, f"{chosen} (TorchEasyRec also sizes the table by {chosen} alone)",
                      f"ignored: {chosen} takes precedence")
        default_bucketize = node.value("default_bucketize_value", "int")
        if self.fg_mode == FG_NONE:
            size = self._encoded_size(node, chosen, default_bucketize is not None)
            if size is not None:
                out.num_buckets = size
            return
        if chosen == "zch":
            zch = node.child("zch")
            assert zch is not None
            size = zch.value("zch_size", "int")
            zch.used.update(zch.message)
            out.hash_bucket_size = size or 0
            self.note(node.at("zch"), f"zch: zero-collision hashing into {size} rows (with eviction)",
                      f"hash_bucket_size: {size} (written; hashed, so ids may collide)")
        elif chosen == "dynamicemb":
            dynamic = node.child("dynamicemb")
            assert dynamic is not None
            size = dynamic.value("max_capacity", "int")
            dynamic.used.update(dynamic.message)
            out.hash_bucket_size = size or 0
            self.note(node.at("dynamicemb"), f"dynamicemb: a dynamic embedding table of up to {size} rows",
                      f"hash_bucket_size: {size} (written; a fixed hashed table)")
        elif chosen == "hash_bucket_size":
            out.hash_bucket_size = node.value("hash_bucket_size", "int")
        elif chosen == "num_buckets":
            out.num_buckets = node.value("num_buckets", "int")
        elif chosen == "vocab_list":
            out.vocab_list.extend(node.values("vocab_list", "str"))
        elif chosen == "vocab_dict":
            entries = self._vocab_dict(node)
            ordered = [key for key, _ in sorted(entries, key=lambda kv: (kv[1], kv[0]))]
            out.vocab_list.extend(ordered)
            self.note(node.at("vocab_dict"), f"vocab_dict of {len(entries)} entries: values mapped to chosen indices "
                                             "(several values may share one)",
                      "vocab_list (written, in the order of the indices: each value its own bucket, 0 = out of "
                      "vocabulary)")
        elif chosen == "vocab_file":
            vocab_file = node.value("vocab_file", "str")
            out.vocab_file = vocab_file
            asset_dir = node.value("asset_dir", "str")
            if asset_dir:
                self.note(node.at("asset_dir"), f"asset_dir: {_quote(asset_dir)}",
                          "vocab_file is written as in TorchEasyRec; recframe resolves a relative vocab_file against "
                          "the directory of the config file")
            elif not os.path.isabs(vocab_file):
                self.note(node.at("vocab_file"), f"vocab_file: {_quote(vocab_file)}: a relative path",
                          "recframe resolves a relative vocab_file against the directory of the config file: check "
                          "that the file is there, or write an absolute path")
        if default_bucketize is not None:
            self.note(node.at("default_bucketize_value"), f"default_bucketize_value: {default_bucketize}",
                      "none: recframe maps every out-of-vocabulary value to bucket 0")

    def _vocab_dict(self, node: _Node) -> list[tuple[str, int]]:
        entries = []
        for entry in node.children("vocab_dict"):
            key = entry.value("key", "str", "")
            value = entry.value("value", "int", 0)
            entries.append((key, value))
        return entries

    def _encoded_size(self, node: _Node, chosen: str, has_default_bucketize: bool) -> int | None:
        """TorchEasyRec's table size of an FG-encoded id feature (its ids lie in [0, size))."""
        if chosen == "zch":
            zch = node.child("zch")
            assert zch is not None
            zch.used.update(zch.message)
            return zch.message.last("zch_size")
        if chosen == "dynamicemb":
            dynamic = node.child("dynamicemb")
            assert dynamic is not None
            dynamic.used.update(dynamic.message)
            return dynamic.message.last("max_capacity")
        if chosen in ("hash_bucket_size", "num_buckets"):
            return node.value(chosen, "int")
        if chosen == "vocab_list":
            vocab = node.values("vocab_list", "str")
            return len(vocab) + (0 if has_default_bucketize else 2)  # FG puts the default value and <OOV> first
        if chosen == "vocab_dict":
            entries = self._vocab_dict(node)
            return max(v for _, v in entries) + 1 if entries else None
        vocab_file = node.value("vocab_file", "str")
        node.take("asset_dir")
        self.note(node.at("vocab_file"), f"vocab_file {_quote(vocab_file or '')} with FG-encoded input: the table "
                                         "size is the size of the vocabulary",
                  "num_buckets: the number of lines of the file + 2 (FG's default value and <OOV> buckets), to write "
                  "by hand")
        return None

    def _initializer(self, node: _Node, out: Message) -> None:
        init_fn = node.value("init_fn", "str")
        if init_fn is None:
            return
        parts = [p.strip() for p in init_fn.split(",") if p.strip()]
        function = parts[0].rsplit(".", 1)[-1].rstrip("_") if parts else ""
        args: dict[str, float] = {}
        try:
            for part in parts[1:]:
                key, _, value = part.partition("=")
                args[key.strip()] = float(value)
        except ValueError:
            function = ""
        initializer = out.initializer
        if function == "uniform" and set(args) <= {"a", "b"}:
            initializer.uniform.a, initializer.uniform.b = args.get("a", 0.0), args.get("b", 1.0)
        elif function == "normal" and set(args) <= {"mean", "std"}:
            initializer.normal.mean, initializer.normal.std = args.get("mean", 0.0), args.get("std", 1.0)
        elif function == "xavier_uniform" and set(args) <= {"gain"}:
            initializer.xavier_uniform.gain = args.get("gain", 1.0)
        else:
            out.ClearField("initializer")
            self.note(node.at("init_fn"), f"init_fn: {_quote(init_fn)}",
                      "initializer with normal, uniform or xavier_uniform (recframe's default: normal, std 0.01)")

    def _pooling(self, node: _Node, explicit: bool) -> int | None:
        pooling = node.value("pooling", "str")
        if pooling is None:
            return feature_pb2.SUM if explicit else None
        if pooling.lower() not in ("sum", "mean"):
            self.note(node.at("pooling"), f"pooling: {_quote(pooling)}", "pooling SUM or MEAN")
            return None
        return feature_pb2.SUM if pooling.lower() == "sum" else feature_pb2.MEAN

    def _common_rest(self, node: _Node, member: str) -> None:
        """The FG and TorchRec settings every TorchEasyRec feature may carry."""
        fg = "none: recframe reads the column as it is (no FG)"
        self.rest(node, {
            "default_value": "none: a null or empty row gives no ids (a zero vector) in recframe",
            "fg_encoded_default_value": "none: a null or empty row gives no ids (a zero vector) in recframe",
            "separator": "separator of the recframe feature (a raw_feature's only with value_dim > 1)",
            "trainable": "none: recframe trains every embedding table",
            "use_mask": _DEFAULT_NEAREST + " (no feature masking while training)",
            "stub_type": "none: an FG intermediate result; precompute the final column",
            "data_type": "none: recframe's tables are float32 (train_config.mixed_precision for the towers)",
            "embedding_constraints": "train_config.embedding_sharding.tables[table].sharding_types",
            "fg_value_type": fg,
            "weighted": "none: recframe's id features are unweighted (each id counts once)",
            "value_dim": "none needed: recframe reads every value of the row (a list column or a separated string)"
            if member != "raw_feature" else "raw_feature.value_dim",
            "sequence_fields": fg,
            "asset_dir": "vocab_file (resolved against the config's directory)",
            "default_bucketize_value": "none: recframe maps every out-of-vocabulary value to bucket 0",
            "autodis": "raw_feature boundaries + embedding_dim (bucketized), or a dense_projection on the feature's "
                       "group",
            "mlp": "dense_projection on the feature's DEEP group",
            "normalizer": "raw_feature.normalizer (z_score, min_max or log1p)",
            "init_fn": "initializer",
        })

    def _id_like(self, node: _Node, name: str, sequence: bool, seq: tuple[str, int | None, str] | None) -> None:
        column = self._column(node, name, seq)
        out: Message = feature_pb2.SequenceIdFeature() if sequence else feature_pb2.IdFeature()
        out.feature_name = name
        if column != name:
            out.input_name = column
        dim = node.value("embedding_dim", "int")
        if dim is not None:
            out.embedding_dim = dim
        table = node.value("embedding_name", "str")
        if table:
            out.embedding_name = table
        self._table_size(node, out)
        self._initializer(node, out)
        if sequence:
            length = seq[1] if seq else node.value("sequence_length", "int")
            delim = seq[2] if seq else node.value("sequence_delim", "str", ";")
            if length:
                out.sequence_length = length
            elif seq is None:
                self.note(node.at("sequence_length"), "not set", "sequence_length (recframe's default 50 applies)")
            out.sequence_delim = delim
            pooling = self._pooling(node, explicit=seq is None)  # TorchEasyRec pools by sum, recframe by mean
            if pooling is not None:
                out.pooling = pooling
        else:
            pooling = self._pooling(node, explicit=False)
            if pooling is not None:
                out.pooling = pooling
            separator = self._separator(node)
            if separator:
                out.separator = separator
        self._add(name, "sequence_id_feature" if sequence else "id_feature", out, node.path, True, bool(table))
        self._common_rest(node, "id_feature")

    def _separator(self, node: _Node) -> str | None:
        """The multi-value separator TorchEasyRec applies to a string column of this feature."""
        if self.fg_mode in (FG_NONE, FG_BUCKETIZE):
            self.skip(node, "separator", "data_config.fg_encoded_multival_sep (the separator of FG-encoded columns, "
                                         "written as the feature's separator)")
            return self.multival_sep
        return node.value("separator", "str", "\x1d")

    def _raw_like(self, node: _Node, name: str, sequence: bool, seq: tuple[str, int | None, str] | None) -> None:
        column = self._column(node, name, seq)
        boundaries = node.values("boundaries", "float")
        value_dim = node.value("value_dim", "int")
        dim = node.value("embedding_dim", "int")
        table = node.value("embedding_name", "str")
        if sequence:
            self._sequence_raw(node, name, column, seq, boundaries)
            return
        if self.fg_mode == FG_NONE and boundaries:
            # FG wrote the bucket ids: an id feature over len(boundaries) + 1 buckets
            out: Message = feature_pb2.IdFeature(feature_name=name, num_buckets=len(boundaries) + 1)
            if dim is not None:
                out.embedding_dim = dim
            if table:
                out.embedding_name = table
            self._initializer(node, out)
            self.note(node.path, f"raw_feature with {len(boundaries)} boundaries and FG-encoded input: the column holds "
                                 "bucket ids",
                      f"id_feature {_quote(name)} with num_buckets: {len(boundaries) + 1} (written)")
            node.take("normalizer")
            self._add(name, "id_feature", out, node.path, True, bool(table))
            self._common_rest(node, "raw_feature")
            return
        out = feature_pb2.RawFeature(feature_name=name)
        if column != name:
            out.input_name = column
        if value_dim is not None:
            out.value_dim = value_dim
        if value_dim is not None and value_dim > 1:
            separator = self._separator(node)
            if separator:
                out.separator = separator
        if boundaries:
            out.boundaries.extend(boundaries)
            if dim is not None:
                out.embedding_dim = dim
            if table:
                out.embedding_name = table
            self._initializer(node, out)
        else:
            if table:
                self.note(node.at("embedding_name"), f"embedding_name: {_quote(table)} without boundaries",
                          "none: a raw feature without boundaries has no embedding table")
            if dim is not None:
                dense = "autodis" if node.has("autodis") else "mlp" if node.has("mlp") else ""
                self.note(node.at("embedding_dim"), f"embedding_dim: {dim} without boundaries"
                                                    + (f" ({dense} dense embedding)" if dense else ""),
                          "a raw feature enters the tower as its values; for an embedding, set boundaries "
                          "(bucketized) or a dense_projection on its group")
        if self.fg_mode in _FG_RAW:
            normalizer = node.value("normalizer", "str")
            if normalizer:
                self._normalizer(node, normalizer, out)
            default = node.value("default_value", "str")
            if default is not None:
                try:
                    out.default_value = float(default)
                except ValueError:
                    self.note(node.at("default_value"), f"default_value: {_quote(default)}", "raw_feature.default_value "
                                                                                             "(a number)")
        else:
            if node.has("normalizer"):
                node.take("normalizer")  # already applied by FG to the encoded column
            encoded_default = node.value("fg_encoded_default_value", "str")
            if encoded_default is not None:
                try:
                    out.default_value = float(encoded_default)
                except ValueError:
                    self.note(node.at("fg_encoded_default_value"), f"fg_encoded_default_value: "
                                                                   f"{_quote(encoded_default)}",
                              "raw_feature.default_value (a number)")
        if node.has("pooling"):
            self.skip(node, "pooling", "none: a raw feature has one value vector per row (nothing to pool)")
        self._add(name, "raw_feature", out, node.path, bool(boundaries), bool(table) and bool(boundaries))
        self._common_rest(node, "raw_feature")

    def _sequence_raw(self, node: _Node, name: str, column: str, seq: tuple[str, int | None, str] | None,
                      boundaries: list[float]) -> None:
        out = feature_pb2.SequenceRawFeature(feature_name=name)
        if column != name:
            out.input_name = column
        length = seq[1] if seq else node.value("sequence_length", "int")
        if length:
            out.sequence_length = length
        out.sequence_delim = seq[2] if seq else node.value("sequence_delim", "str", ";")
        if boundaries:
            self.note(node.at("boundaries"), f"boundaries on a sequence of numbers ({len(boundaries)} values)",
                      "none: recframe's sequence_raw_feature keeps the numbers (read by a time_decay_pooling "
                      "encoder); precompute the bucket ids into a list column read by a sequence_id_feature")
        node.take("embedding_dim")
        node.take("embedding_name")
        if node.has("normalizer") and self.fg_mode in _FG_RAW:
            self.skip(node, "normalizer", "none: precompute the normalized values (recframe normalizes only "
                                          "raw_feature)")
        self._add(name, "sequence_raw_feature", out, node.path, False, False)
        self._common_rest(node, "raw_feature")

    def _normalizer(self, node: _Node, text: str, out: feature_pb2.RawFeature) -> None:
        args = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        method = args.get("method", "").strip()
        try:
            if method == "zscore":
                out.normalizer.z_score.mean = float(args.get("mean", 0.0))
                out.normalizer.z_score.std = float(args.get("standard_deviation", 1.0))
                return
            if method == "minmax":
                out.normalizer.min_max.min = float(args["min"])
                out.normalizer.min_max.max = float(args["max"])
                return
        except (KeyError, ValueError):
            out.ClearField("normalizer")
        nearest = ("normalizer log1p (sign(x) * log(1 + |x|)), or precompute the values" if method == "log10"
                   else "precompute the column (recframe's normalizers: z_score, min_max, log1p)")
        self.note(node.at("normalizer"), f"normalizer: {_quote(text)}", nearest)

    def _fg_only(self, node: _Node, name: str, member: str, sequence: bool,
                 seq: tuple[str, int | None, str] | None) -> None:
        inputs: list[str] = []
        for key in _FG_INPUT_FIELDS:
            inputs.extend(str(v) for v in node.take(key))
        sparse = any(node.has(k) for k in _SIZE_FIELDS)
        boundaries = node.values("boundaries", "float")
        dim = node.value("embedding_dim", "int")
        table = node.value("embedding_name", "str")
        for fg_field in ("combiner", "need_discrete", "need_key", "show_pkey", "show_skey", "value_separator",
                         "fill_missing", "kv_delimiter", "method", "operator_name", "operator_lib_file",
                         "operator_params", "is_op_thread_safe", "value_map"):
            node.take(fg_field)
        out: Message
        if sparse or (boundaries and self.fg_mode == FG_NONE):
            out = feature_pb2.SequenceIdFeature() if sequence else feature_pb2.IdFeature()
            if boundaries and not sparse:
                out.num_buckets = len(boundaries) + 1
            else:
                self._table_size(node, out)
            kind = "sequence_id_feature" if sequence else "id_feature"
        elif sequence:
            out = feature_pb2.SequenceRawFeature()
            kind = "sequence_raw_feature"
        else:
            out = feature_pb2.RawFeature()
            if boundaries:
                out.boundaries.extend(boundaries)
            value_dim = node.value("value_dim", "int")
            if value_dim:
                out.value_dim = value_dim
            kind = "raw_feature"
        out.feature_name = name
        has_table = kind in ("id_feature", "sequence_id_feature") or (kind == "raw_feature" and bool(boundaries))
        if has_table:
            if dim is not None:
                out.embedding_dim = dim
            if table:
                out.embedding_name = table
            self._initializer(node, out)
        if sequence:
            length = seq[1] if seq else node.value("sequence_length", "int")
            if length:
                out.sequence_length = length
            out.sequence_delim = seq[2] if seq else node.value("sequence_delim", "str", ";")
        elif kind == "id_feature":
            separator = self._separator(node)
            if separator:
                out.separator = separator
        if self.fg_mode in _FG_RAW:
            computed = f" from {', '.join(inputs)}" if inputs else ""
            self.note(node.path, f"{member} is computed by TorchEasyRec's feature generator (FG){computed}",
                      f"precompute it into column {_quote(name)} of the training, evaluation and item tables; the "
                      f"converted config reads that column as {kind} {_quote(name)}")
        node.take("normalizer")
        self._add(name, kind, out, node.path, has_table, bool(table) and has_table)
        self._common_rest(node, member)

    def _add(self, name: str, member: str, message: Message, path: str, has_table: bool, explicit: bool) -> None:
        if name in self.features or name in self.dropped:
            raise ConfigError(f"{self.source}: {path}: duplicate feature name {_quote(name)}, expected unique names")
        self.features[name] = _Feature(name, member, message, path, has_table, explicit)

    def _settle_tables(self, config: pipeline_pb2.PipelineConfig) -> None:
        """TorchEasyRec names an unnamed table "<feature>_emb", recframe "<feature>": write the name
        where the two would share tables differently, then emit the features."""
        explicit = {f.message.embedding_name for f in self.features.values() if f.has_table and f.explicit_table}
        for feature in self.features.values():
            if feature.has_table and not feature.explicit_table and (
                    f"{feature.name}_emb" in explicit or feature.name in explicit):
                feature.message.embedding_name = f"{feature.name}_emb"
            wrapper = config.feature_configs.add()
            getattr(wrapper, feature.member).CopyFrom(feature.message)

    # -- model_config
    def _model(self, node: _Node, out: model_pb2.ModelConfig, model: str) -> None:
        groups = node.children("feature_groups", _name_label("group_name"))
        model_node = node.child(model)
        assert model_node is not None
        towers = {side: model_node.child(side) for side in ("user_tower", "item_tower")}
        inputs = {side: (tower.value("input", "str") if tower is not None else None) for side, tower in towers.items()}
        expanded = self._groups(groups, out, set(filter(None, inputs.values())))
        message = getattr(out, model)
        for side, tower in towers.items():
            if tower is None:
                continue
            target = getattr(message, side)
            target.input.extend(expanded.get(inputs[side] or "", [inputs[side]] if inputs[side] else []))
            mlp = tower.child("mlp")
            if mlp is not None:
                self._mlp(mlp, target.mlp)
            self.rest(tower)
        output_dim = model_node.value("output_dim", "int")
        if output_dim is not None:
            message.output_dim = output_dim
        similarity = model_node.value("similarity", "enum", "INNER_PRODUCT")
        if similarity == "EUCLID":
            self.note(model_node.at("similarity"), "similarity: EUCLID (negative euclidean distance)",
                      "similarity: COSINE (written; on L2-normalized vectors it ranks like the euclidean distance)")
            message.similarity = model_pb2.COSINE
        elif similarity in ("COSINE", "INNER_PRODUCT"):
            message.similarity = model_pb2.Similarity.Value(similarity)
        else:
            raise ConfigError(f"{self.source}: {model_node.at('similarity')}: unknown value {similarity}, expected "
                              "COSINE, INNER_PRODUCT or EUCLID")
        temperature = model_node.value("temperature", "float")
        if temperature is not None:
            message.temperature = temperature
        in_batch = model_node.value("in_batch_negative", "bool")
        message.in_batch_negative = bool(in_batch)
        if in_batch is None:
            self.note(model_node.at("in_batch_negative"), "not set: TorchEasyRec's default is false (only the sampled "
                                                          "negatives), recframe's is true",
                      "in_batch_negative: false (written explicitly, TorchEasyRec's behaviour)")
        self.rest(model_node)
        self._losses(node, out)
        self._metrics(node, out)
        dropout = node.child("variational_dropout")
        if dropout is not None:
            value = dropout.value("regularization_lambda", "float")
            out.variational_dropout.SetInParent()
            if value is not None:
                out.variational_dropout.regularization_lambda = value
            if dropout.value("embedding_wise_variational_dropout", "bool"):
                out.variational_dropout.embedding_wise = True
            self.rest(dropout)
        num_class = node.value("num_class", "int", 1)
        if num_class != 1:
            self.note(node.at("num_class"), f"num_class: {num_class}", "none: a two-tower model scores one similarity")
        self.rest(node, {"kernel": "none: recframe runs PyTorch kernels",
                         "use_pareto_loss_weight": "model_config.losses[].weight (fixed weights)"})

    def _groups(self, groups: list[_Node], out: model_pb2.ModelConfig, tower_inputs: set[str]) -> dict[str, list[str]]:
        """Convert the feature groups; returns TorchEasyRec group name -> recframe groups (tower inputs)."""
        taken = {g.message.first("group_name") for g in groups}
        expanded: dict[str, list[str]] = {}
        for group in groups:
            name = group.value("group_name", "str") or ""
            group_type = group.value("group_type", "enum", "DEEP")
            if name not in tower_inputs:
                group.used.update(group.message)
                self.note(group.path, f"group {_quote(name)} ({group_type}) is not the input of either tower",
                          "none: recframe rejects a feature group no tower reads (it was left out)")
                continue
            self.skip(group, "embedding_name_suffix", "embedding_name on the features (give the copies of a feature "
                                                      "in each tower their own embedding_name); DSSM's towers have "
                                                      "separate tables anyway")
            names = group.values("feature_names", "str")
            produced: list[str] = []
            if group_type in ("SEQUENCE", "JAGGED_SEQUENCE"):
                encoders = group.children("sequence_encoders")
                first = self._encoder(encoders[0]) if encoders else None
                self._sequence_group(out, name, names, group.at("feature_names"), group.path, first)
                produced.append(name)
                for extra in encoders[1:]:
                    extra.used.update(extra.message)
                    self.note(extra.path, "a second sequence encoder on one SEQUENCE group",
                              "one sequence_encoder per recframe SEQUENCE group (the first was converted)")
                if group_type == "JAGGED_SEQUENCE":
                    self.note(group.at("group_type"), "group_type: JAGGED_SEQUENCE",
                              "group_type: SEQUENCE (written; padded sequences with lengths)")
            else:
                if group_type == "WIDE":
                    self.note(group.at("group_type"), "group_type: WIDE (4-dimensional wide embeddings)",
                              "group_type: DEEP (written; each feature with its own embedding_dim)")
                elif group_type != "DEEP":
                    raise ConfigError(f"{self.source}: {group.at('group_type')}: unknown value {group_type}, expected "
                                      "DEEP, WIDE, SEQUENCE or JAGGED_SEQUENCE")
                members = self._members(names, group.at("feature_names"), deep=True)
                if members:
                    out.feature_groups.add(group_name=name, feature_names=members, group_type=model_pb2.DEEP)
                    produced.append(name)
                produced.extend(self._nested_sequences(group, out, taken))
            expanded[name] = produced
            self.rest(group)
        return expanded

    def _encoder(self, node: _Node) -> tuple[str, _Node]:
        """The one encoder message of a SeqEncoderConfig: (its kind, its node)."""
        kinds = list(node.message)
        if len(kinds) != 1:
            raise ConfigError(f"{self.source}:{node.message.line}: {node.path}: expected exactly one sequence "
                              f"encoder, got {', '.join(kinds) or 'none'}")
        inner = node.child(kinds[0])
        assert inner is not None
        return kinds[0], inner

    @staticmethod
    def _unique(name: str, taken: set[Any]) -> str:
        """``name``, or ``name_1``, ``name_2``... when it is taken; the result is taken then."""
        candidate, i = name, 1
        while candidate in taken or not candidate:
            candidate, i = f"{name}_{i}", i + 1
        taken.add(candidate)
        return candidate

    def _members(self, names: list[str], path: str, deep: bool) -> list[str]:
        """The group members that became recframe features fitting the group type (the rest noted)."""
        kept = []
        for name in names:
            feature = self.features.get(name)
            if feature is None:
                if name in self.dropped:
                    self.note(path, f"feature {_quote(name)} left out of the group: not converted", "see the feature's "
                                                                                                    "note")
                else:
                    kept.append(name)  # unknown here too: the validator names it
                continue
            if deep and feature.member == "sequence_raw_feature":
                self.note(path, f"sequence_raw_feature {_quote(name)} left out of a DEEP group",
                          "recframe reads a sequence of numbers only in a SEQUENCE group with a time_decay_pooling "
                          "encoder (timestamp_feature)")
                continue
            kept.append(name)
        return kept

    def _nested_sequences(self, group: _Node, out: model_pb2.ModelConfig, taken: set[Any]) -> list[str]:
        """The sequence_groups and sequence_encoders of a DEEP group, as recframe SEQUENCE groups."""
        nested: dict[str, _SeqGroup] = {}
        for seq in group.children("sequence_groups", _name_label("group_name")):
            seq_name = seq.value("group_name", "str") or ""
            nested[seq_name] = _SeqGroup(seq_name, seq.values("feature_names", "str"), seq.path)
            self.skip(seq, "embedding_name_suffix", "embedding_name on the features")
            self.rest(seq)
        produced = []
        for encoder_node in group.children("sequence_encoders"):
            kind, encoder = self._encoder(encoder_node)
            target = encoder.value("input", "str")
            if target is None and len(nested) == 1:
                target = next(iter(nested))
            seq = nested.get(target or "")
            if seq is None:
                encoder.used.update(encoder.message)
                self.note(encoder.path, f"input {_quote(target or '')} names no sequence_groups entry of this group",
                          "none: left out")
                continue
            seq.used = True
            name = self._unique(encoder.value("name", "str") or seq.name, taken)
            self._sequence_group(out, name, seq.features, f"{seq.path}.feature_names", seq.path, (kind, encoder))
            produced.append(name)
        for seq in nested.values():
            if not seq.used:
                self.note(seq.path, f"sequence group {_quote(seq.name)} is read by no sequence_encoders entry",
                          "none: left out (a SEQUENCE group with a sequence_encoder is recframe's equivalent)")
        return produced

    def _sequence_group(self, out: model_pb2.ModelConfig, name: str, names: list[str], path: str, group_path: str,
                        encoder: tuple[str, _Node] | None) -> None:
        """A recframe SEQUENCE group ``name`` of the id sequences among ``names``, reduced by ``encoder``."""
        members = []
        for feature_name in self._members(names, path, deep=False):
            feature = self.features.get(feature_name)
            if feature is None or feature.member == "sequence_id_feature":
                members.append(feature_name)
            elif feature.member == "sequence_raw_feature":
                self.note(path, f"sequence_raw_feature {_quote(feature_name)} left out of SEQUENCE group {_quote(name)}",
                          "recframe's sequence encoders embed id sequences; a sequence of numbers is read only as "
                          "time_decay_pooling.timestamp_feature")
            else:
                self.note(path, f"{feature.member} {_quote(feature_name)} (a query feature of the sequence group) "
                                f"left out of SEQUENCE group {_quote(name)}",
                          "none: a two-tower user tower has no candidate item to attend with; keep the feature in a "
                          "DEEP group")
        group = out.feature_groups.add(group_name=name, feature_names=members, group_type=model_pb2.SEQUENCE)
        if encoder is None:
            group.sequence_encoder.pooling_encoder.pooling_type = "mean"
            self.note(group_path, "a SEQUENCE group without a sequence encoder (its embeddings go to the model "
                                  "unpooled)",
                      "sequence_encoder pooling_encoder { pooling_type: \"mean\" } (written)")
            return
        kind, node = encoder
        if kind == "pooling_encoder":
            pooling = node.value("pooling_type", "str", "mean")
            group.sequence_encoder.pooling_encoder.pooling_type = pooling
        elif kind == "self_attention_encoder":
            attention = group.sequence_encoder.self_attention
            attention.num_heads = node.value("num_heads", "int", 8)
            attention.dropout = node.value("dropout", "float", 0.0)
            attention_dim = node.value("multihead_attn_dim", "int", 512)
            self.note(node.at("multihead_attn_dim"), f"multihead_attn_dim: {attention_dim} (the attention projects "
                                                     "the sequence to this width)",
                      "self_attention attends at the group width (the sum of the members' embedding_dim); "
                      "self_attention.output_dim projects its pooled output")
        else:
            group.sequence_encoder.pooling_encoder.pooling_type = "mean"
            node.used.update(node.message)
            self.note(node.path, f"{kind}: target attention of the sequence on the candidate item",
                      "sequence_encoder pooling_encoder { pooling_type: \"mean\" } (written): a two-tower user "
                      "tower never sees the candidate; self_attention attends within the sequence")
        self.skip(node, "max_seq_length", "sequence_length of the group's sequence features")
        node.take("name")
        node.take("input")
        self.rest(node)

    def _mlp(self, node: _Node, out: module_pb2.MLP) -> None:
        out.hidden_units.extend(node.values("hidden_units", "int"))
        out.dropout_ratio.extend(node.values("dropout_ratio", "float"))
        activation = node.value("activation", "str")
        try:
            if activation is not None:
                activation_name(activation)
                out.activation = activation
        except ValueError:
            self.note(node.at("activation"), f"activation: {_quote(activation)}",
                      "MLP.activation relu (recframe's default, kept); recframe knows relu, tanh, prelu, gelu, "
                      "sigmoid, silu, leaky_relu, none")
        for name in ("use_bn", "use_ln", "bias"):
            value = node.value(name, "bool")
            if value is not None:
                setattr(out, name, value)
        self.rest(node)

    def _losses(self, node: _Node, out: model_pb2.ModelConfig) -> None:
        for loss in node.children("losses"):
            kinds = list(loss.message)
            for kind in kinds:
                inner = loss.child(kind)
                assert inner is not None
                if kind == "softmax_cross_entropy":
                    out.losses.add().softmax_cross_entropy.SetInParent()
                    self.loss_kinds.add(kind)
                    self.skip(inner, "label_smoothing", "softmax_cross_entropy.label_smoothing (not written: "
                                                        "TorchEasyRec's match models ignore it; set it to smooth)",
                              "ignored by TorchEasyRec's DSSM")
                elif kind == "binary_cross_entropy":
                    out.losses.add().binary_cross_entropy.SetInParent()
                    self.loss_kinds.add(kind)
                    self.skip(inner, "label_smoothing", "none: recframe's binary_cross_entropy has no label smoothing")
                else:
                    inner.used.update(inner.message)
                    self.note(inner.path, f"{kind} loss", "softmax_cross_entropy (recframe's default when no loss is "
                                                          "written) or binary_cross_entropy")
                self.rest(inner)

    def _metrics(self, node: _Node, out: model_pb2.ModelConfig) -> None:
        seen: set[bytes] = set()

        def add(metric: metric_pb2.MetricConfig) -> None:
            key = metric.SerializeToString(deterministic=True)
            if key not in seen:
                seen.add(key)
                out.metrics.add().CopyFrom(metric)

        for which, label in (("metrics", "evaluation"), ("train_metrics", "training")):
            for entry in node.children(which):
                for kind in [k for k in entry.message if k not in ("decay_rate", "decay_step")]:
                    inner = entry.child(kind)
                    assert inner is not None
                    metric = metric_pb2.MetricConfig()
                    listwise = "softmax_cross_entropy" in self.loss_kinds or not self.loss_kinds
                    if kind == "recall_at_k" and listwise:
                        metric.in_batch_recall_at_k.top_k = inner.value("top_k", "int", 5)
                        add(metric)
                        if which == "metrics":
                            self.note(inner.path, f"recall_at_k (top_k {metric.in_batch_recall_at_k.top_k}): "
                                                  f"TorchEasyRec's {label} recall of the positive among the batch's "
                                                  "sampled candidates",
                                      f"in_batch_recall_at_k {{ top_k: {metric.in_batch_recall_at_k.top_k} }} "
                                      "(written, measured while training); recframe evaluates full-corpus "
                                      "hit_rate@K / recall@K / ndcg@K over eval_config.top_k")
                    elif kind in ("auc", "accuracy") and "binary_cross_entropy" in self.loss_kinds:
                        if kind == "auc":
                            metric.auc.SetInParent()
                            self.skip(inner, "thresholds", "none: recframe's AUC is exact")
                        else:
                            metric.accuracy.threshold = inner.value("threshold", "float", 0.5)
                            self.skip(inner, "top_k", _DEFAULT_NEAREST)
                        add(metric)
                        if which == "metrics":
                            self.note(inner.path, f"{kind}: TorchEasyRec's evaluation {kind}",
                                      f"model_config.metrics {{ {kind} }} (written, measured on the training "
                                      f"batches); for the held-out value add eval_config.pointwise_metrics "
                                      f"{{ {kind} {{}} }} (docs/training.md, Pointwise metrics)")
                    else:
                        inner.used.update(inner.message)
                        self.note(inner.path, f"{kind} metric",
                                  "eval_config (full-corpus hit_rate@K, recall@K, ndcg@K, mrr) or "
                                  "model_config.metrics in_batch_recall_at_k")
                    self.rest(inner)
                if which == "train_metrics":
                    self.rest(entry, {"decay_rate": "none: recframe logs each metric averaged over "
                                                    "log_step_count_steps", "decay_step": "log_step_count_steps"})

    # -- train / eval / export
    def _train(self, node: _Node, out: train_pb2.TrainConfig) -> None:
        sparse = node.child("sparse_optimizer")
        if sparse is not None:
            self._optimizer(sparse, out.sparse_optimizer, sparse=True)
        dense = node.child("dense_optimizer")
        if dense is not None:
            self._optimizer(dense, out.dense_optimizer, sparse=False)
        for name in ("num_steps", "num_epochs", "save_checkpoints_steps", "log_step_count_steps",
                     "keep_checkpoint_max", "gradient_accumulation_steps"):
            value = node.value(name, "int")
            if value is not None:
                setattr(out, name, value)
        if out.num_steps > 0 and (not out.HasField("num_epochs") or out.num_epochs == 0):
            out.num_epochs = _EPOCHS_FOR_STEPS
            self.note(node.at("num_steps"), f"num_steps: {out.num_steps} without num_epochs: TorchEasyRec passes over "
                                            "the data as often as num_steps needs",
                      f"num_epochs: {_EPOCHS_FOR_STEPS} (written, so that num_steps decides; recframe stops at "
                      "whichever limit comes first)")
        precision = node.value("mixed_precision", "str")
        if precision:
            lowered = precision.lower()
            if lowered in ("bf16", "fp16"):
                out.mixed_precision = lowered
            else:
                self.note(node.at("mixed_precision"), f"mixed_precision: {_quote(precision)}",
                          "train_config.mixed_precision: bf16 or fp16")
        clipping = node.child("grad_clipping")
        if clipping is not None:
            kind = clipping.value("clipping_type", "str", "none")
            max_gradient = clipping.value("max_gradient", "float", 1.0)
            norm_type = clipping.value("norm_type", "float", 2.0)
            if kind == "norm" and norm_type == 2.0:
                out.gradient_clip_norm = max_gradient
            elif kind != "none":
                self.note(clipping.path, f"grad_clipping {kind} (max_gradient {max_gradient:g}, norm_type "
                                         f"{norm_type:g})",
                          "train_config.gradient_clip_norm (clips the global L2 norm)")
            self.rest(clipping, {"enable_global_grad_clip": "train_config.gradient_clip_norm (always the global "
                                                            "norm of the gradients)"})
        use_tensorboard = node.value("use_tensorboard", "bool", True)
        if not use_tensorboard:
            self.note(node.at("use_tensorboard"), "use_tensorboard: false",
                      "none: recframe always writes model_dir/log.jsonl, and model_dir/tensorboard when the "
                      "tensorboard extra is installed")
        fine_tune = node.value("fine_tune_checkpoint", "str")
        if fine_tune is not None:
            self.note(node.at("fine_tune_checkpoint"), f"fine_tune_checkpoint: {_quote(fine_tune)}: a TorchEasyRec "
                                                       "checkpoint, which recframe cannot read (not written)",
                      "train_config.fine_tune_checkpoint (or recframe train --fine_tune_checkpoint) naming a recframe "
                      "checkpoint, checkpoints/ folder or model_dir: warm start by parameter and table name")
        self.rest(node, {
            "fine_tune_ckpt_param_map": "none: train_config.fine_tune_checkpoint matches parameters by name (and "
                                        "embedding tables by table name)",
            "is_profiling": "none: profile with torch.profiler around recframe.train",
            "save_checkpoints_epochs": "train_config.save_checkpoints_steps: 0 (a checkpoint at the end of each "
                                       "epoch)",
            "tensorboard_summaries": "none: recframe logs loss, learning rates and metrics",
            "cudnn_allow_tf32": _DEFAULT_NEAREST + " (PyTorch's defaults apply)",
            "cuda_matmul_allow_tf32": _DEFAULT_NEAREST + " (PyTorch's defaults apply)",
            "global_embedding_constraints": "train_config.embedding_sharding.sharding_types",
            "grad_scaler": "none: recframe's fp16 uses torch.amp.GradScaler with its defaults",
            "save_checkpoints_timestamp_interval": "train_config.save_checkpoints_steps",
            "save_checkpoints_timestamps": "train_config.save_checkpoints_steps",
            "save_checkpoints_timestamp_quorum": "train_config.save_checkpoints_steps",
            "delta_embedding_dump_config": "none: export the towers (recframe export) and embed the items "
                                           "(recframe predict)",
        })

    _SPARSE_OPTIMIZERS = {
        "sgd_optimizer": ("sgd_optimizer", ""),
        "adagrad_optimizer": ("adagrad_optimizer", ""),
        "adam_optimizer": ("adam_optimizer", ""),
        "rowwise_adagrad_optimizer": ("rowwise_adagrad_optimizer", ""),
        "partial_rowwise_adam_optimizer": ("adam_optimizer", "lazy Adam (adam_optimizer) keeps full per-value "
                                                             "moments"),
        "lamb_optimizer": ("adam_optimizer", "no LAMB in recframe; Adam without the trust ratio"),
        "partial_rowwise_lamb_optimizer": ("adam_optimizer", "no LAMB in recframe; Adam without the trust ratio"),
        "lars_sgd_optimizer": ("sgd_optimizer", "no LARS in recframe; plain SGD (momentum needs dense gradients)"),
        "adadelta_optimizer": ("adagrad_optimizer", "no Adadelta in recframe; Adagrad with the same lr"),
        "rmsprop_optimizer": ("adagrad_optimizer", "no RMSprop in recframe; Adagrad with the same lr"),
    }
    _DENSE_OPTIMIZERS = {
        "sgd_optimizer": ("sgd_optimizer", ""),
        "adagrad_optimizer": ("adagrad_optimizer", ""),
        "adam_optimizer": ("adam_optimizer", ""),
        "adamw_optimizer": ("adamw_optimizer", ""),
        "adadelta_optimizer": ("adam_optimizer", "no Adadelta in recframe; Adam with the same lr"),
        "rmsprop_optimizer": ("adam_optimizer", "no RMSprop in recframe; Adam with the same lr"),
    }
    # The fields that carry over by name, per recframe optimizer message.
    _OPTIMIZER_FIELDS = {
        "sgd_optimizer": ("momentum", "weight_decay", "nesterov"),
        "adagrad_optimizer": ("initial_accumulator_value", "weight_decay", "eps"),
        "adam_optimizer": ("beta1", "beta2", "weight_decay", "eps"),
        "adamw_optimizer": ("beta1", "beta2", "weight_decay", "eps"),
        "rowwise_adagrad_optimizer": (),
    }

    def _optimizer(self, node: _Node, out: Message, sparse: bool) -> None:
        table = self._SPARSE_OPTIMIZERS if sparse else self._DENSE_OPTIMIZERS
        schedules = ("constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate",
                     "cosine_annealing_learning_rate", "cosine_annealing_warm_restarts_learning_rate")
        for kind in [k for k in node.message if k not in schedules and k not in ("part_optimizers", "ema")]:
            inner = node.child(kind)
            assert inner is not None
            if kind not in table:
                inner.used.update(inner.message)
                self.note(inner.path, f"{kind}: unknown optimizer", f"one of {', '.join(sorted(set(table)))}")
                continue
            target_name, why = table[kind]
            target = getattr(out, target_name)
            target.lr = inner.value("lr", "float", _TZREC_DEFAULT_LR)
            if why:
                self.note(inner.path, f"{kind}: {why}", f"{target_name} (written, lr {target.lr:g})")
            for name in self._OPTIMIZER_FIELDS[target_name]:
                kind_of = "bool" if name == "nesterov" else "float"
                value = inner.value(name, kind_of)
                if sparse and name in ("weight_decay", "momentum") and value:
                    self.note(inner.at(name), f"{name}: {value:g} on the embedding tables",
                              "sparse_optimizer.dense_gradients: true with this value (recframe's sparse updates "
                              "have no weight decay or momentum; dense gradients update every row each step)")
                    continue
                if name == "momentum" and value is None and not sparse:
                    value = 0.9  # TorchEasyRec's SGD default; recframe's is 0
                if name == "weight_decay" and value is None and target_name == "adamw_optimizer":
                    value = 0.0  # TorchEasyRec's AdamW default; recframe's is 0.01
                if value is not None:
                    setattr(target, name, value)
            self.rest(inner, {
                "gradient_clipping": "train_config.gradient_clip_norm (dense and embedding gradients together)",
                "max_gradient": "train_config.gradient_clip_norm",
                "fused": "none: PyTorch chooses the kernels",
                "amsgrad": _DEFAULT_NEAREST + " (plain Adam)",
                "dampening": _DEFAULT_NEAREST + " (SGD without dampening)",
                "weight_decay_mode": "none: rowwise_adagrad_optimizer has no weight decay",
                "weight_decay": "none: rowwise_adagrad_optimizer has no weight decay",
                "momentum": "sgd_optimizer.momentum with sparse_optimizer.dense_gradients: true",
                "rho": _DEFAULT_NEAREST, "alpha": _DEFAULT_NEAREST,
            })
        for kind in [k for k in node.message if k in schedules]:
            inner = node.child(kind)
            assert inner is not None
            self._schedule(kind, inner, out)
        self.rest(node, {"part_optimizers": "none: one dense optimizer for every non-embedding parameter",
                         "ema": "none: recframe keeps no moving average of the parameters"})

    def _schedule(self, kind: str, node: _Node, out: Message) -> None:
        by_epoch = node.value("by_epoch", "bool", False)
        if by_epoch:
            self.note(node.at("by_epoch"), "by_epoch: true: the sizes below count epochs in TorchEasyRec",
                      "recframe's schedules count optimizer steps: multiply the written sizes by the steps per epoch")
        warmup_lr = node.value("warmup_learning_rate", "float", 0.0)
        if warmup_lr:
            self.note(node.at("warmup_learning_rate"), f"warmup_learning_rate: {warmup_lr:g} (warmup starts there)",
                      "warmup_steps (recframe's warmup starts at 0)")
        if kind == "constant_learning_rate":
            out.constant_learning_rate.SetInParent()
        elif kind == "exponential_decay_learning_rate":
            schedule = out.exponential_decay_learning_rate
            size = node.value("decay_size", "int")
            if size:
                schedule.decay_steps = size
            else:
                self.note(node.at("decay_size"), "not set", "decay_steps (recframe's default 1000 applies)")
            schedule.staircase = node.value("staircase", "bool", True)  # TorchEasyRec's default; recframe's is false
            self._copy(node, schedule, {"decay_factor": "decay_rate", "min_learning_rate": "min_learning_rate",
                                        "warmup_size": "warmup_steps"})
        elif kind in ("cosine_annealing_learning_rate", "cosine_annealing_warm_restarts_learning_rate"):
            schedule = out.cosine_learning_rate
            period = node.value("T_max" if kind == "cosine_annealing_learning_rate" else "T_0", "int")
            if period:
                schedule.decay_steps = period
            self._copy(node, schedule, {"min_learning_rate": "min_learning_rate", "warmup_size": "warmup_steps"})
            if kind == "cosine_annealing_warm_restarts_learning_rate":
                mult = node.value("T_mult", "int", 1)
                self.note(node.path, f"cosine annealing with warm restarts (period {period}, T_mult {mult})",
                          "cosine_learning_rate (written: one decay over the first period, then min_learning_rate)")
        else:
            node.used.update(node.message)
            self.note(node.path, f"{kind}: piecewise-constant learning rates",
                      "exponential_decay_learning_rate with staircase: true, or cosine_learning_rate (recframe "
                      "keeps a constant learning rate here)")
            out.constant_learning_rate.SetInParent()
        self.rest(node)

    @staticmethod
    def _copy(node: _Node, out: Message, names: dict[str, str]) -> None:
        """Copy the written numeric fields ``names`` (TorchEasyRec name -> recframe name)."""
        for name, target in names.items():
            descriptor = out.DESCRIPTOR.fields_by_name[target]
            floating = descriptor.cpp_type in (descriptor.CPPTYPE_FLOAT, descriptor.CPPTYPE_DOUBLE)
            value = node.value(name, "float" if floating else "int")
            if value is not None:
                setattr(out, target, value)

    def _eval(self, node: _Node | None, root: _Node) -> None:
        self.note(root.at("eval_config"), "TorchEasyRec evaluates recall_at_k on eval_input_path batches against "
                                              "their sampled negatives",
                  "recframe ranks the whole catalogue for each evaluation row: set item_input_path to the item table "
                  "(item id + item feature columns) and eval_config.top_k / best_metric (default hit_rate@50)")
        if node is None:
            return
        self.rest(node, {
            "num_steps": "none: recframe evaluates every row of eval_input_path",
            "log_step_count_steps": "none: recframe logs one line per evaluation",
            "use_dense_ema": "none: recframe keeps no moving average of the parameters",
        })

    def _export(self, node: _Node) -> None:
        exporter = node.value("exporter_type", "str", "latest")
        self.note(node.at("exporter_type"), f"exporter_type: {_quote(exporter)}",
                  f"recframe export --checkpoint_path {'best' if exporter == 'best' else 'latest'} (a command; the "
                  "user and item towers are exported separately)")
        self.rest(node, {
            "best_exporter_metric": "eval_config.best_metric (hit_rate@K, recall@K, ndcg@K or mrr; picks the best "
                                    "checkpoint)",
            "metric_larger_is_better": "none: recframe's evaluation metrics are all larger-is-better",
            "mixed_precision": "none: recframe exports float32 towers",
            "cudnn_allow_tf32": _DEFAULT_NEAREST, "cuda_matmul_allow_tf32": _DEFAULT_NEAREST,
            "use_dense_ema": "none: recframe keeps no moving average of the parameters",
        })


def convert_tzrec(text: str, source: str = "<string>") -> ConversionResult:
    """Convert a TorchEasyRec DSSM / DSSMV2 pipeline config (protobuf text format) to recframe.

    Args:
        text: the TorchEasyRec config.
        source: its path, used in error messages and notes.

    Returns:
        The recframe config (not validated: see
        :func:`recframe.config.validate_pipeline_config`) and the notes on what was not
        mapped as it was.

    Raises:
        ConfigError: the text does not parse, a value has the wrong type, or the model is
            not dssm / dssm_v2.
    """
    message = parse_text_proto(text, source)
    converter = _Converter(source)
    root = _Node(message, "", converter)
    config, model = converter.convert(root)
    return ConversionResult(config, converter.unmapped, model, source)


def format_converted_config(result: ConversionResult, wrap: int = 100) -> str:
    """The converted config as protobuf text format, headed by comments listing what was not mapped."""
    lines = [f"# Converted by `recframe convert-tzrec` from the TorchEasyRec {result.model} config {result.source}.",
             "# Check every note below: each names the TorchEasyRec field, what was not mapped as it was, and",
             "# the nearest recframe equivalent.",
             f"# Not mapped ({len(result.unmapped)}):"]
    for note in result.unmapped:
        words = _escape(str(note)).split(" ")
        line = "#   -"
        for word in words:
            if len(line) + 1 + len(word) > wrap and not line.endswith("-"):
                lines.append(line)
                line = "#    "
            line += " " + word
        lines.append(line)
    return "\n".join(lines) + "\n\n" + format_compact(result.config, wrap)


_FIELD_LINE = re.compile(r"^(?P<indent> *)(?P<name>\w+): (?P<value>.*)$")


def format_compact(message: Message, wrap: int = 100) -> str:
    """Protobuf text format with repeated scalars as ``name: [a, b]`` lists and empty
    messages as ``name {}`` (what recframe's example configs look like)."""
    lines = text_format.MessageToString(message).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.endswith(" {") and i + 1 < len(lines) and lines[i + 1] == " " * (len(line) - len(line.lstrip())) + "}":
            out.append(line + "}")
            i += 2
            continue
        match = _FIELD_LINE.match(line)
        j = i + 1
        values = [match["value"]] if match else []
        while match and j < len(lines):
            following = _FIELD_LINE.match(lines[j])
            if not following or following["indent"] != match["indent"] or following["name"] != match["name"]:
                break
            values.append(following["value"])
            j += 1
        if len(values) < 2:
            out.append(line)
            i += 1
            continue
        head = f"{match['indent']}{match['name']}: ["
        current = head
        for k, value in enumerate(values):
            piece = value + (", " if k < len(values) - 1 else "]")
            if len(current) + len(piece.rstrip()) > wrap and current.strip() != head.strip():
                out.append(current.rstrip())
                current = " " * len(head)
            current += piece
        out.append(current)
        i = j
    return "\n".join(out) + "\n"


__all__ = ["FG_ONLY_FEATURES", "MODELS", "ConversionResult", "Unmapped", "convert_tzrec", "format_compact",
           "format_converted_config"]
