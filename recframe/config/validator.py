"""Semantic validation of a whole pipeline config: every problem at once.

The validator keeps the generic rules (required fields, ranges, ordered pairs, required
oneofs: :mod:`recframe.config.generic`) and the cross-field rules (feature names, shared
tables, losses <-> metrics, what needs the item id column, data / train / eval settings:
:mod:`recframe.config.rules`). Everything specific to one kind of plugin is asked of the
plugin's class, found in the registries by the name of its config message: each feature
class, the model class (towers, feature groups and their encoders), each loss, metric,
sampler and data source checks its own message through a :class:`ConfigContext`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from recframe.config.errors import ConfigError
from recframe.config.generic import check_generic
from recframe.config.loader import read_vocab_file, resolve_config_path
from recframe.config.report import Report, join_path, one_of, show, unknown_name
from recframe.config.rules import check_data, check_eval, check_train
from recframe.protos import feature_pb2, loss_pb2, model_pb2, pipeline_pb2
from recframe.protoutil import oneof_field_name, oneof_message
from recframe.registry import FEATURES, LOSSES, METRICS, MODELS, PluginImportError, import_plugin_modules

#: What check_paths_for can require: need -> (field, what it is for).
PATH_NEEDS: dict[str, tuple[str, str]] = {
    "train": ("train_input_path", "the training data (files, directories or glob patterns, comma separated)"),
    "eval": ("eval_input_path", "the evaluation data (one row per user query with its target item)"),
    "item": ("item_input_path", "the item table (every candidate of full-corpus evaluation)"),
    "test": ("test_input_path", "the held-out test data (same layout as eval_input_path)"),
    "model_dir": ("model_dir", "the directory of checkpoints, logs and exports"),
}


class ConfigContext:
    """What a plugin's ``check_config`` sees: the config, the report, and established facts.

    Attributes:
        config: the PipelineConfig; source: its file (names it in every problem).
        features: the features that passed their own rules, built (name -> Feature).
        groups: feature group name -> (index, FeatureGroupConfig), filled by the group rules.
        model_message, model_path: the set model message and its path (e.g. model_config.dssm).
        loss_kinds: the LossConfig member name of each configured loss -> its kind.
    """

    def __init__(self, config: pipeline_pb2.PipelineConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.report = Report(source)
        self.features: dict[str, Any] = {}
        self.feature_paths: dict[str, str] = {}
        self._feature_messages: dict[str, tuple[str, Message]] = {}
        self.groups: dict[str, tuple[int, model_pb2.FeatureGroupConfig]] = {}
        self.model_message: Message | None = None
        self.model_path = ""
        self.loss_kinds: dict[str, str] = {}
        self._item_id_needs: list[str] = []
        self._vocab_cache: dict[str, list[str] | None] = {}

    def add(self, path: str, what: str) -> None:
        """Record a problem at a field path."""
        self.report.add(path, what)

    def warn(self, path: str, what: str) -> None:
        """Record a warning at a field path: a valid setting that may not do what was meant
        (``recframe validate`` and training print it as ``warning: ...``; never fatal)."""
        self.report.warn(path, what)

    def has_problem_under(self, path: str) -> bool:
        """Whether a problem was recorded at ``path`` or below it."""
        prefix = f"{self.source}: {path}"
        return any(p.startswith((prefix + ":", prefix + ".", prefix + "[")) for p in self.report.problems)

    # -- features
    def feature_field(self, name: str) -> str | None:
        """The FeatureConfig member (e.g. "id_feature") of the feature named ``name``, or None."""
        entry = self._feature_messages.get(name)
        return entry[0] if entry else None

    def feature_message(self, name: str) -> Message:
        """The config message of the feature named ``name``."""
        return self._feature_messages[name][1]

    def feature_names(self) -> list[str]:
        """Every named feature, in config order."""
        return list(self._feature_messages)

    def read_vocab_file(self, path: str, written: str) -> list[str] | None:
        """The values of a vocab file written in the config (resolved against its directory),
        or None after reporting why it cannot be used. Each file is read once."""
        resolved = resolve_config_path(written, self.source)
        if resolved not in self._vocab_cache:
            values: list[str] | None = None
            if not os.path.isfile(resolved):
                self.add(path, f"file '{written}' not found (resolved to '{resolved}'), expected an existing file "
                               "(relative paths are resolved against the config's directory)")
            else:
                try:
                    values = read_vocab_file(resolved)
                except (OSError, UnicodeDecodeError) as err:
                    self.add(path, f"cannot read '{resolved}': {err}, expected a UTF-8 text file")
                else:
                    if not values:
                        self.add(path, f"'{written}' has no values, expected one value per line")
                        values = None
            self._vocab_cache[resolved] = values
        return self._vocab_cache[resolved]

    # -- losses and item ids
    def require_item_id(self, reason: str) -> None:
        """Note that ``reason`` (e.g. "softmax_cross_entropy (model_config.losses[0]) to mask
        accidental hits") needs data_config.item_id_field."""
        self._item_id_needs.append(reason)

    @staticmethod
    def loss_name(cls: type) -> str:
        """The LossConfig member holding a loss class's message, e.g. "softmax_cross_entropy"."""
        return oneof_field_name(loss_pb2.LossConfig.DESCRIPTOR, "loss", cls.__name__)

    def loss_names_of_kind(self, kind: str) -> list[str]:
        """The LossConfig members whose registered loss has ``kind``."""
        return [f.name for f in loss_pb2.LossConfig.DESCRIPTOR.oneofs_by_name["loss"].fields
                if f.message_type.name in LOSSES and getattr(LOSSES.get(f.message_type.name), "kind", None) == kind]

    def finish(self) -> None:
        """Report the item id needs when data_config.item_id_field is not set."""
        needs = self._item_id_needs
        if needs and not self.config.data_config.item_id_field:
            verb = "needs" if len(needs) == 1 else "need"
            self.add("data_config.item_id_field", f"not set, but {' and '.join(needs)} {verb} it, "
                                                  "expected the item id column")


def _check_features(ctx: ConfigContext) -> None:
    """Names, each feature class's own rules, then the tables shared by name."""
    first_index: dict[str, int] = {}
    for i, feature_config in enumerate(ctx.config.feature_configs):
        which = feature_config.WhichOneof("feature")
        if which is None:
            continue  # reported by the generic required-oneof rule
        message, path = getattr(feature_config, which), f"feature_configs[{i}].{which}"
        name, first = message.feature_name, False
        if message.HasField("feature_name"):
            if not name:
                ctx.add(join_path(path, "feature_name"), "empty, expected a name")
            elif name in first_index:
                ctx.add(join_path(path, "feature_name"), f"duplicate feature name '{name}' (also feature_configs"
                                                         f"[{first_index[name]}]), expected unique names")
            else:
                first_index[name], first = i, True
                ctx._feature_messages[name] = (which, message)
                ctx.feature_paths[name] = path
        cls = FEATURES.get(type(message).DESCRIPTOR.name)
        cls.check_config(message, path, ctx)
        if first and not ctx.has_problem_under(path):
            try:
                ctx.features[name] = cls(message, os.path.dirname(os.path.abspath(ctx.source)))
            except (ValueError, OSError) as e:
                ctx.add(path, f"cannot be built: {e}")
    _check_shared_tables(ctx)


def _describe_table(feature: Any) -> str:
    return (f"embedding_dim {feature.embedding.embedding_dim} and {feature.embedding.num_embeddings} rows "
            f"({feature.table_mapping()[0]})")


def _effective_initializer(spec: Any) -> tuple:
    """What fills a table (as :func:`recframe.modules.initializers.init_table` does): the set
    initializer member and its values; not set = the default normal { std: 0.01 }."""
    which = spec.initializer.WhichOneof("initializer") if spec.initializer is not None else None
    message = getattr(spec.initializer, which) if which else feature_pb2.NormalInitializer()
    return which or "normal", tuple(getattr(message, f.name) for f in message.DESCRIPTOR.fields)


def _describe_initializer(spec: Any) -> str:
    which = spec.initializer.WhichOneof("initializer") if spec.initializer is not None else None
    if which is None:
        return "none (the default normal { std: 0.01 })"
    message = getattr(spec.initializer, which)
    values = " ".join(f"{f.name}: {show(getattr(message, f.name))}" for f in message.DESCRIPTOR.fields)
    return f"{which} {{ {values} }}"


def _check_shared_tables(ctx: ConfigContext) -> None:
    """Features naming the same embedding table must agree on its shape, id mapping and initializer.

    A table is built once, from one of its features: a differing initializer (also one feature
    with an initializer and another without) would be silently dropped."""
    first_of_table: dict[str, Any] = {}
    for name, feature in ctx.features.items():
        if feature.embedding is None:
            continue
        table = feature.embedding.name
        first = first_of_table.setdefault(table, feature)
        if first is feature:
            continue
        path, first_path = ctx.feature_paths[name], ctx.feature_paths[first.name]
        spec, first_spec = feature.embedding, first.embedding
        if _effective_initializer(spec) != _effective_initializer(first_spec):
            ctx.add(join_path(path, "initializer"),
                    f"differs from the initializer of feature '{first.name}', which shares embedding table '{table}' "
                    f"({first_path}: {_describe_initializer(first_spec)}; this feature '{name}': "
                    f"{_describe_initializer(spec)}), "
                    "expected the same initializer on every feature of the table (it is built once, with one "
                    "initializer: another would be silently dropped) or a different embedding_name")
        if (spec.embedding_dim, spec.num_embeddings, feature.table_mapping()) != (
                first_spec.embedding_dim, first_spec.num_embeddings, first.table_mapping()):
            ctx.add(path, f"embedding table '{table}' is shared with feature '{first.name}' ({first_path}: "
                          f"{_describe_table(first)}) but this feature has {_describe_table(feature)}, expected the "
                          "same embedding_dim, table size and id mapping (or a different embedding_name)")


def _check_losses_and_metrics(ctx: ConfigContext) -> None:
    """One loss of each kind, each loss class's rules; each metric once and with the loss it reads."""
    model_config = ctx.config.model_config
    losses = [(f"model_config.losses[{i}]", loss) for i, loss in enumerate(model_config.losses)]
    if not model_config.losses:
        losses = [("model_config.losses (default softmax_cross_entropy)",
                   loss_pb2.LossConfig(softmax_cross_entropy=loss_pb2.SoftmaxCrossEntropy()))]
    first_path: dict[str, str] = {}
    for path, loss in losses:
        message = oneof_message(loss, "loss")
        if message is None:
            continue  # reported by the generic required-oneof rule
        name = loss.WhichOneof("loss")
        if name in first_path:
            ctx.add(path, f"second {name} loss (first at {first_path[name]}), expected at most one loss of each kind")
            continue
        first_path[name] = path
        cls = LOSSES.get(type(message).DESCRIPTOR.name)
        ctx.loss_kinds[name] = cls.kind
        cls.check_config(message, path, ctx)
    seen: dict[bytes, int] = {}
    for i, metric in enumerate(model_config.metrics):
        message = oneof_message(metric, "metric")
        if message is None:
            continue
        path = f"model_config.metrics[{i}]"
        key = metric.SerializeToString(deterministic=True)
        if key in seen:
            ctx.add(path, f"same metric as model_config.metrics[{seen[key]}], expected each metric once")
        seen.setdefault(key, i)
        cls = METRICS.get(type(message).DESCRIPTOR.name)
        needed = cls.requires_loss
        if needed not in ctx.loss_kinds.values():
            alternatives = one_of(ctx.loss_names_of_kind(needed))
            ctx.add(join_path(path, metric.WhichOneof("metric")), f"needs a {alternatives} loss, which "
                                                                  "model_config.losses does not have, expected it only "
                                                                  f"with {alternatives}")


def _check_model(ctx: ConfigContext) -> None:
    """The model class's rules (towers, feature groups, ...) after losses and metrics."""
    model_config = ctx.config.model_config
    which = model_config.WhichOneof("model")
    if which is not None:
        ctx.model_message, ctx.model_path = getattr(model_config, which), f"model_config.{which}"
    _check_losses_and_metrics(ctx)
    if which is None:
        return  # reported by the generic required-oneof rule
    message_class = type(ctx.model_message).DESCRIPTOR.name
    cls = MODELS.get(message_class)
    if model_config.model_class:
        if model_config.model_class in MODELS:
            cls = MODELS.get(model_config.model_class)
        else:
            ctx.add("model_config.model_class", unknown_name(
                "model class", model_config.model_class, MODELS.names(),
                expected=f"a class registered in recframe.registry.MODELS ({', '.join(MODELS.names())}); "
                         "name the module that registers it in plugin_modules"))
    cls.check_config(ctx.model_message, ctx.model_path, ctx)


#: The input paths that must name files when they are written: test_input_path "" is how a run
#: turns the test split off (the trainer skips an empty test_input_path).
_NON_EMPTY_PATHS = ("train", "eval", "item")


def _check_written_paths(ctx: ConfigContext) -> None:
    """An input path written in the config (or set by --edit_config_json) that names no file
    (empty, blank or only commas): reported here, with its field, rather than by the reader."""
    for need in _NON_EMPTY_PATHS:
        problem = _written_path_problem(ctx.config, need)
        if problem is not None:
            ctx.add(PATH_NEEDS[need][0], problem)


def _names_no_path(value: str) -> bool:
    """An input path spec (comma separated) without a single path in it."""
    return not value.replace(",", " ").strip()


def _written_path_problem(config: pipeline_pb2.PipelineConfig, need: str) -> str | None:
    """The problem of an input path of ``need`` written as a value that names no file."""
    field, purpose = PATH_NEEDS[need]
    value = getattr(config, field)
    if need in _NON_EMPTY_PATHS and config.HasField(field) and _names_no_path(value):
        return f"set to {show(value)}, which names no file, expected {purpose}"
    return None


def _import_plugins(ctx: ConfigContext) -> bool:
    """Import the config's plugin_modules; False (after reporting) when one fails."""
    for i, name in enumerate(ctx.config.plugin_modules):
        try:
            import_plugin_modules([name])
        except PluginImportError as e:
            ctx.add(f"plugin_modules[{i}]", str(e))
            return False
    return True


def validate_pipeline_config(config: pipeline_pb2.PipelineConfig, source: str) -> list[str]:
    """Return every problem of ``config`` (empty list = valid), schema and semantics alone.

    Each problem reads ``"{source}: {field path}: {what is wrong}, expected {what}"``.
    ``source`` is the config file path: it names the file in messages and relative
    ``vocab_file`` paths are resolved against its directory. The config's ``plugin_modules``
    are imported first (they may register the classes it names). Input paths are not
    required here; see :func:`check_paths_for`. The warnings: :func:`validate_with_warnings`.
    """
    return validate_with_warnings(config, source)[0]


def validate_with_warnings(config: pipeline_pb2.PipelineConfig, source: str) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of ``config``: the problems of :func:`validate_pipeline_config`,
    and the valid settings that may not do what was meant, each ``"{source}: {field path}:
    {what}"`` (printed as ``warning: ...`` by ``recframe validate`` and training; never fatal).
    """
    ctx = ConfigContext(config, source)
    for path in config.FindInitializationErrors():
        ctx.add(path, "required field not set")
    if not _import_plugins(ctx):
        return ctx.report.problems, ctx.report.warnings
    check_generic(ctx.report, config)
    _check_written_paths(ctx)
    _check_features(ctx)
    if config.HasField("model_config"):
        _check_model(ctx)
    else:
        ctx.add("model_config", "not set, expected feature groups and a model (dssm or dssm_v2)")
    check_data(ctx)
    check_train(ctx)
    check_eval(ctx)
    ctx.finish()
    return ctx.report.problems, ctx.report.warnings


def check_paths_for(config: pipeline_pb2.PipelineConfig, source: str,
                    need: Iterable[str] = ("train", "eval", "item")) -> list[str]:
    """Return the problems of the input/output paths a run needs (empty list = all set).

    ``need`` names what the run does: "train" (train_input_path), "eval" (eval_input_path),
    "item" (item_input_path), "test" (test_input_path), "model_dir". Evaluation ("eval",
    "item", "test") also needs data_config.item_id_field, the target of full-corpus
    retrieval. Only presence is checked; the data readers report missing files.
    """
    report = Report(source)
    need = list(need)
    for what in need:
        if what not in PATH_NEEDS:
            raise ValueError(f"unknown need {what!r}, expected some of {', '.join(PATH_NEEDS)}")
        field, purpose = PATH_NEEDS[what]
        value = getattr(config, field)
        if not value.strip() if what == "model_dir" else _names_no_path(value):  # input paths: comma separated
            report.add(field, _written_path_problem(config, what) or f"not set, expected {purpose}")
    if {"eval", "item", "test"}.intersection(need) and not config.data_config.item_id_field:
        report.add("data_config.item_id_field", "not set, expected the item id column (full-corpus evaluation "
                                                "matches each row's target item against the item table by it)")
    return report.problems


def check_pipeline_config(config: pipeline_pb2.PipelineConfig, source: str, need: Iterable[str] = ()) -> list[str]:
    """Raise :class:`ConfigError` listing every problem of ``config``; if valid, return its
    warnings (see :func:`validate_with_warnings`; usually none).

    ``need`` adds the path checks of :func:`check_paths_for` (e.g. ``("train", "eval", "item")``).
    """
    problems, warnings = validate_with_warnings(config, source)
    need = tuple(need)
    if need:
        problems += [p for p in check_paths_for(config, source, need) if p not in problems]
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{source}: invalid pipeline config ({count}):\n  " + "\n  ".join(problems), problems)
    return warnings
