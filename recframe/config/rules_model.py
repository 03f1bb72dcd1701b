"""Rules on model_config: feature groups, towers, MLPs, tower widths, losses and metrics."""

from __future__ import annotations

from google.protobuf.message import Message

from recframe.config.features import FeatureInfo, features_by_name
from recframe.config.names import (ACTIVATIONS, SELF_ATTENTION_POOLING, SEQUENCE_POOLING_TYPES, WEIGHT_INITS,
                                   activation_name)
from recframe.config.report import Report, join_path, one_of, unknown_name
from recframe.protos import model_pb2, pipeline_pb2

TOWERS = ("user_tower", "item_tower")
LISTWISE_LOSSES = ("softmax_cross_entropy",)
POINTWISE_LOSSES = ("binary_cross_entropy",)
#: metric kind -> the loss kinds it needs (one of them).
METRIC_NEEDS_LOSS = {
    "in_batch_recall_at_k": LISTWISE_LOSSES,
    "auc": POINTWISE_LOSSES,
    "accuracy": POINTWISE_LOSSES,
}


def _check_group(report: Report, group: model_pb2.FeatureGroupConfig, path: str,
                 features: dict[str, FeatureInfo]) -> None:
    if not group.feature_names:
        report.add(join_path(path, "feature_names"), "empty, expected at least one feature name")
    seen: set[str] = set()
    members: list[FeatureInfo] = []
    for j, name in enumerate(group.feature_names):
        where = f"{path}.feature_names[{j}]"
        if name in seen:
            report.add(where, f"feature '{name}' appears twice in group '{group.group_name}', "
                              "expected each at most once")
            continue
        seen.add(name)
        if name not in features:
            report.add(where, unknown_name("feature", name, list(features)))
            continue
        members.append(features[name])
    is_sequence = group.group_type == model_pb2.SEQUENCE
    if is_sequence:
        encoder_inputs = _encoder_inputs(group)
        for j, name in enumerate(group.feature_names):
            info = features.get(name)
            if info is None or info.kind == "sequence_id_feature":
                continue
            if info.kind in ("sequence_raw_feature", "raw_feature"):
                if name not in encoder_inputs:
                    report.add(f"{path}.feature_names[{j}]",
                               f"{info.kind} '{name}' is not read by the group's sequence_encoder (it would be "
                               "ignored), expected it named by time_decay_pooling (timestamp_feature or "
                               "sample_time_feature) or left out of the group")
                continue
            report.add(f"{path}.feature_names[{j}]", f"feature '{name}' is a {info.kind}, expected only "
                                                     "sequence_id_feature features in a SEQUENCE group (and the "
                                                     "sequence_raw_feature / raw_feature its encoder reads)")
        if members and not any(f.kind == "sequence_id_feature" for f in members):
            report.add(join_path(path, "feature_names"), "no sequence_id_feature, expected at least one "
                                                         "(the embedded sequence the encoder reduces)")
        lengths = {f.name: f.message.sequence_length for f in members if f.is_sequence}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{n}: {v}" for n, v in lengths.items())
            report.add(path, f"sequence_length differs ({listed}), expected equal sequence_length in a SEQUENCE group")
        _check_encoder(report, group, path, features)
        if group.HasField("dense_projection"):
            report.add(join_path(path, "dense_projection"), "set on a SEQUENCE group, expected it only on DEEP groups")
    else:
        if group.HasField("sequence_encoder"):
            report.add(join_path(path, "sequence_encoder"), "set on a DEEP group, expected it only on SEQUENCE groups")
        for j, name in enumerate(group.feature_names):
            info = features.get(name)
            if info is not None and info.kind == "sequence_raw_feature":
                report.add(f"{path}.feature_names[{j}]", f"sequence_raw_feature '{name}' in a DEEP group, expected "
                                                         "it only in a SEQUENCE group whose encoder reads it")
        if group.HasField("dense_projection"):
            activation = group.dense_projection.activation
            try:
                activation_name(activation)
            except ValueError:
                report.add(join_path(path, "dense_projection.activation"), unknown_name(
                    "activation", activation, list(ACTIVATIONS),
                    expected=f"one of {one_of(ACTIVATIONS)} (or PyTorch style, e.g. 'nn.ReLU')"))
    encoder = group.sequence_encoder
    if encoder.WhichOneof("encoder") == "pooling_encoder":
        pooling = encoder.pooling_encoder.pooling_type
        if pooling not in SEQUENCE_POOLING_TYPES:
            report.add(join_path(path, "sequence_encoder.pooling_encoder.pooling_type"),
                       unknown_name("pooling_type", pooling, list(SEQUENCE_POOLING_TYPES)))


def _encoder_inputs(group: model_pb2.FeatureGroupConfig) -> set[str]:
    """Features of a SEQUENCE group that its encoder reads besides the embedded sequences."""
    encoder = group.sequence_encoder
    if encoder.WhichOneof("encoder") == "time_decay_pooling":
        decay = encoder.time_decay_pooling
        return {decay.timestamp_feature, decay.sample_time_feature} - {""}
    return set()


def _sequence_width(group: model_pb2.FeatureGroupConfig, features: dict[str, FeatureInfo]) -> int | None:
    """Width of the embedded sequences of a SEQUENCE group (None: unknown)."""
    widths = [features[n].width for n in group.feature_names
              if n in features and features[n].kind == "sequence_id_feature"]
    return sum(widths) if widths and all(w > 0 for w in widths) else None


def _check_encoder(report: Report, group: model_pb2.FeatureGroupConfig, path: str,
                   features: dict[str, FeatureInfo]) -> None:
    """self_attention / time_decay_pooling rules (ranges are in the generic table)."""
    encoder, which = group.sequence_encoder, group.sequence_encoder.WhichOneof("encoder")
    epath = join_path(path, f"sequence_encoder.{which}")
    members = list(group.feature_names)
    if which == "self_attention":
        attention = encoder.self_attention
        if attention.pooling not in SELF_ATTENTION_POOLING:
            report.add(join_path(epath, "pooling"), unknown_name("pooling", attention.pooling, list(SELF_ATTENTION_POOLING)))
        width = _sequence_width(group, features)
        if width is not None and attention.num_heads > 0 and width % attention.num_heads:
            report.add(join_path(epath, "num_heads"), f"got {attention.num_heads} for a group width of {width} "
                                                      "(the sum of its sequences' embedding_dim), expected a divisor "
                                                      "of the group width")
    elif which == "time_decay_pooling":
        decay = encoder.time_decay_pooling
        for field, kind, extra in (("timestamp_feature", "sequence_raw_feature", ""),
                                   ("sample_time_feature", "raw_feature", " with value_dim 1")):
            name = getattr(decay, field)
            where = join_path(epath, field)
            if not name:
                report.add(where, f"not set, expected the {kind}{extra} of the group that holds the "
                                  + ("timestamp of each position" if kind != "raw_feature" else "row's sample time"))
            elif name not in members:
                report.add(where, unknown_name("feature", name, members,
                                               expected=f"a {kind} listed in the group's feature_names"))
            elif name in features and features[name].kind != kind:
                report.add(where, f"feature '{name}' is a {features[name].kind}, expected a {kind}{extra}")
            elif kind == "raw_feature":
                msg = features[name].message
                if msg.value_dim != 1 or len(msg.boundaries) or msg.HasField("normalizer"):
                    report.add(where, f"raw_feature '{name}' has value_dim {msg.value_dim}"
                                      f"{', boundaries' if len(msg.boundaries) else ''}"
                                      f"{', a normalizer' if msg.HasField('normalizer') else ''}, expected value_dim "
                                      "1, no boundaries and no normalizer (raw seconds)")


def check_mlp(report: Report, mlp: model_pb2.MLP, path: str) -> None:
    """MLP rules (layer widths are range-checked by the generic table)."""
    layers = len(mlp.hidden_units)
    if layers == 0:
        report.add(join_path(path, "hidden_units"), "empty, expected at least one layer width "
                                                    "(leave mlp out to pass the input straight through)")
    try:
        activation_name(mlp.activation)
    except ValueError:
        report.add(join_path(path, "activation"), unknown_name(
            "activation", mlp.activation, list(ACTIVATIONS),
            expected=f"one of {one_of(ACTIVATIONS)} (or PyTorch style, e.g. 'nn.ReLU')"))
    if mlp.use_bn and mlp.use_ln:
        report.add(path, "use_bn and use_ln are both true, expected at most one of them")
    ratios = len(mlp.dropout_ratio)
    if ratios not in (0, 1, layers):
        report.add(join_path(path, "dropout_ratio"),
                   f"got {ratios} values for {layers} layers, expected 1 or {layers} values")
    if mlp.weight_init not in WEIGHT_INITS:
        report.add(join_path(path, "weight_init"), unknown_name("weight_init", mlp.weight_init, list(WEIGHT_INITS)))


def _group_width(group: model_pb2.FeatureGroupConfig, features: dict[str, FeatureInfo]) -> int | None:
    if group.group_type == model_pb2.SEQUENCE:
        encoder = group.sequence_encoder
        if encoder.WhichOneof("encoder") == "self_attention" and encoder.self_attention.output_dim > 0:
            return int(encoder.self_attention.output_dim)
        return _sequence_width(group, features)
    if group.HasField("dense_projection"):
        return int(group.dense_projection.output_dim) or None
    widths = [features[n].width if n in features else 0 for n in group.feature_names]
    return sum(widths) if widths and all(w > 0 for w in widths) else None


def _tower_width(tower: model_pb2.Tower, output_dim: int, groups: dict[str, model_pb2.FeatureGroupConfig],
                 features: dict[str, FeatureInfo]) -> int | None:
    """Width of a tower's output, or None when it cannot be told (other problems)."""
    if output_dim > 0:
        return output_dim
    if tower.HasField("mlp") and len(tower.mlp.hidden_units) > 0:
        return int(tower.mlp.hidden_units[-1])
    widths = [_group_width(groups[g], features) if g in groups else None for g in tower.input]
    return sum(widths) if widths and None not in widths else None  # type: ignore[arg-type]


def _check_item_group(report: Report, where: str, group: model_pb2.FeatureGroupConfig,
                      features: dict[str, FeatureInfo]) -> None:
    """A candidate item has no history: no sequence features in the item tower."""
    expected = "expected no sequence features in the item tower (a candidate item has no history)"
    if group.group_type == model_pb2.SEQUENCE:
        report.add(where, f"group '{group.group_name}' is a SEQUENCE group, {expected}")
        return
    for name in group.feature_names:
        info = features.get(name)
        if info is not None and info.is_sequence:
            report.add(where, f"group '{group.group_name}' contains sequence feature '{name}', {expected}")


def _check_towers(report: Report, model: Message, mpath: str,
                  groups: dict[str, tuple[int, model_pb2.FeatureGroupConfig]],
                  features: dict[str, FeatureInfo]) -> None:
    used: dict[str, str] = {}  # group name -> tower
    for side in TOWERS:
        if not model.HasField(side):
            continue  # a required field: reported with the other missing required fields
        tower, tpath = getattr(model, side), join_path(mpath, side)
        if not tower.input:
            report.add(join_path(tpath, "input"), "empty, expected at least one feature group name")
        seen: set[str] = set()
        for j, name in enumerate(tower.input):
            where = f"{tpath}.input[{j}]"
            if name not in groups:
                report.add(where, unknown_name("feature group", name, list(groups)))
                continue
            if name in seen:
                report.add(where, f"group '{name}' is listed twice, expected each group once")
                continue
            seen.add(name)
            if name in used:
                report.add(where, f"group '{name}' is also an input of {used[name]}, "
                                  "expected each feature group in one tower only")
            used.setdefault(name, side)
            if side == "item_tower":
                _check_item_group(report, where, groups[name][1], features)
        if tower.HasField("mlp"):
            check_mlp(report, tower.mlp, join_path(tpath, "mlp"))
    for name, (i, _) in groups.items():
        if name and name not in used:
            report.add(f"model_config.feature_groups[{i}]", f"group '{name}' is not an input of any tower "
                                                            "(it would be ignored), expected it in user_tower.input "
                                                            "or item_tower.input")
    if all(model.HasField(side) for side in TOWERS):
        plain_groups = {n: g for n, (_, g) in groups.items()}
        user, item = (_tower_width(getattr(model, s), model.output_dim, plain_groups, features) for s in TOWERS)
        if user is not None and item is not None and user != item:
            report.add(mpath, f"user_tower outputs {user} values and item_tower {item}, expected equal widths for "
                              "the similarity (set output_dim, or make the last hidden_units agree)")


def _check_losses(report: Report, config: pipeline_pb2.PipelineConfig, model: Message, mpath: str) -> set[str]:
    """Loss rules; returns the effective loss kinds."""
    model_config, data = config.model_config, config.data_config
    kinds: dict[str, str] = {}  # kind -> path
    for i, loss in enumerate(model_config.losses):
        kind = loss.WhichOneof("loss")
        if kind is None:
            continue
        path = f"model_config.losses[{i}]"
        if kind in kinds:
            report.add(path, f"second {kind} loss (first at {kinds[kind]}), expected at most one loss of each kind")
        kinds.setdefault(kind, path)
    if not model_config.losses:
        kinds["softmax_cross_entropy"] = "model_config.losses (default softmax_cross_entropy)"
    needs_item_id: list[str] = []
    for kind in LISTWISE_LOSSES:
        if kind in kinds:
            needs_item_id.append(f"{kind} ({kinds[kind]}) to mask accidental hits")
            if not model.in_batch_negative and data.WhichOneof("sampler") is None:
                report.add(join_path(mpath, "in_batch_negative"),
                           f"false with {kind} ({kinds[kind]}) and no data_config sampler, expected true "
                           "or a negative sampler (the softmax would have no negatives)")
    for kind in POINTWISE_LOSSES:
        if kind in kinds and not data.label_fields and data.WhichOneof("sampler") is None:
            report.add("data_config.label_fields", f"empty, but {kind} ({kinds[kind]}) reads the label column, "
                                                   "expected at least one label field (or a negative sampler, "
                                                   "whose negatives are the 0 labels)")
    if model.logq_correction:
        if not any(k in kinds for k in LISTWISE_LOSSES):
            report.add(join_path(mpath, "logq_correction"),
                       f"true without a listwise loss, expected {one_of(LISTWISE_LOSSES)}")
        needs_item_id.append(f"{join_path(mpath, 'logq_correction')} to count item frequencies")
    if data.exclude_negatives_field:
        needs_item_id.append("data_config.exclude_negatives_field to find its items among the candidates")
        if not any(k in kinds for k in LISTWISE_LOSSES) and data.WhichOneof("sampler") is None:
            report.add("data_config.exclude_negatives_field",
                       f"set, but no loss has negatives to exclude (no {one_of(LISTWISE_LOSSES)} and no "
                       "data_config sampler), expected a listwise loss or a negative sampler, or no field")
    if needs_item_id and not data.item_id_field:
        verb = "needs" if len(needs_item_id) == 1 else "need"
        report.add("data_config.item_id_field", f"not set, but {' and '.join(needs_item_id)} {verb} it, "
                                                "expected the item id column")
    return set(kinds)


def _check_metrics(report: Report, metrics: list[model_pb2.MetricConfig] | Message, losses: set[str]) -> None:
    seen: dict[bytes, int] = {}
    for i, metric in enumerate(metrics):
        kind = metric.WhichOneof("metric")
        if kind is None:
            continue
        path = f"model_config.metrics[{i}]"
        key = metric.SerializeToString(deterministic=True)
        if key in seen:
            report.add(path, f"same metric as model_config.metrics[{seen[key]}], expected each metric once")
        seen.setdefault(key, i)
        needed = METRIC_NEEDS_LOSS.get(kind, ())
        if needed and not losses.intersection(needed):
            report.add(join_path(path, kind), f"needs a {one_of(needed)} loss, which model_config.losses does not "
                                              f"have, expected it only with {one_of(needed)}")


def check_model(report: Report, config: pipeline_pb2.PipelineConfig) -> None:
    """All model_config rules (presence of model_config itself is checked by the caller)."""
    model_config = config.model_config
    features = features_by_name(config)
    groups: dict[str, tuple[int, model_pb2.FeatureGroupConfig]] = {}
    if not model_config.feature_groups:
        report.add("model_config.feature_groups", "empty, expected at least one feature group per tower")
    for i, group in enumerate(model_config.feature_groups):
        path = f"model_config.feature_groups[{i}]"
        if group.HasField("group_name") and not group.group_name:
            report.add(join_path(path, "group_name"), "empty, expected a name")
        elif group.group_name in groups:
            report.add(join_path(path, "group_name"), f"duplicate group name '{group.group_name}' (also "
                                                      f"model_config.feature_groups[{groups[group.group_name][0]}]), "
                                                      "expected unique names")
        elif group.group_name:
            groups[group.group_name] = (i, group)
        _check_group(report, group, path, features)
    if model_config.HasField("variational_dropout") and not any(
            g.group_type == model_pb2.DEEP and len(g.feature_names) >= 2 and not g.HasField("dense_projection")
            for g in model_config.feature_groups):
        report.add("model_config.variational_dropout", "set, but no DEEP group has two or more features (it would "
                                                       "be ignored), expected such a group or no variational_dropout")
    which = model_config.WhichOneof("model")
    if which is None:
        return  # reported by the generic required-oneof rule
    model, mpath = getattr(model_config, which), f"model_config.{which}"
    _check_towers(report, model, mpath, groups, features)
    losses = _check_losses(report, config, model, mpath)
    _check_metrics(report, model_config.metrics, losses)
