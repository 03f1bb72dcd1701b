"""Rules on feature_configs: names, table sizes, vocabularies, bucketizing, shared tables."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from recframe.config.features import TABLE_SIZE_FIELDS, FeatureInfo, list_features, table_size_fields_set
from recframe.config.loader import resolve_config_path
from recframe.config.report import Report, join_path, one_of, show
from recframe.config.vocab import read_vocab_file
from recframe.protos import pipeline_pb2


@dataclass(frozen=True)
class TableSpec:
    """What an embedding table looks like from one feature's side."""

    feature: FeatureInfo
    dim: int
    rows: int | None  # None: unknown (unreadable vocab file)
    mapping: tuple  # how values become rows: ("num_buckets",), ("vocab", values...), ...


class _Vocabs:
    """Reads each vocab file once per validation."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.cache: dict[str, list[str] | None] = {}

    def read(self, report: Report, path: str, written: str) -> list[str] | None:
        resolved = resolve_config_path(written, self.source)
        if resolved not in self.cache:
            values: list[str] | None = None
            if not os.path.isfile(resolved):
                report.add(path, f"file '{written}' not found (resolved to '{resolved}'), expected an "
                                 "existing file (relative paths are resolved against the config's directory)")
            else:
                try:
                    values = read_vocab_file(resolved)
                except (OSError, UnicodeDecodeError) as err:
                    report.add(path, f"cannot read '{resolved}': {err}, expected a UTF-8 text file")
                else:
                    if not values:
                        report.add(path, f"'{written}' has no values, expected one value per line")
                        values = None
            self.cache[resolved] = values
        return self.cache[resolved]


def _duplicate(values: list) -> object | None:
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _check_id_like(report: Report, info: FeatureInfo, vocabs: _Vocabs) -> TableSpec | None:
    """id_feature / sequence_id_feature: embedding_dim and exactly one table size."""
    msg, path = info.message, info.path
    ok = True
    if msg.embedding_dim == 0:
        what = "got 0" if msg.HasField("embedding_dim") else "not set"
        report.add(join_path(path, "embedding_dim"), f"{what}, expected > 0")
        ok = False
    sizes = table_size_fields_set(msg)
    if len(sizes) != 1:
        what = "no table size set" if not sizes else f"{', '.join(sizes)} are all set"
        report.add(path, f"{what}, expected exactly one of {one_of(TABLE_SIZE_FIELDS)} to size the table")
        return None
    size = sizes[0]
    rows: int | None
    if size in ("num_buckets", "hash_bucket_size"):
        rows = int(getattr(msg, size))
        if rows == 0:
            report.add(join_path(path, size), "got 0, expected > 0")
            ok = False
        mapping: tuple = (size,)
    else:
        if size == "vocab_list":
            values: list[str] | None = list(msg.vocab_list)
        elif not msg.vocab_file:
            report.add(join_path(path, "vocab_file"), "empty, expected a file path")
            values = None
        else:
            values = vocabs.read(report, join_path(path, "vocab_file"), msg.vocab_file)
        if values is not None:
            dup = _duplicate(values)
            if dup is not None:
                report.add(join_path(path, size), f"value '{dup}' appears twice, expected unique values")
        rows = None if values is None else len(values) + 1
        mapping = ("vocab", tuple(values) if values is not None else None)
    return TableSpec(info, int(msg.embedding_dim), rows, mapping) if ok else None


def _check_raw(report: Report, info: FeatureInfo) -> TableSpec | None:
    """raw_feature: boundaries sorted and finite, bucketizing needs value_dim 1 and embedding_dim."""
    msg, path = info.message, info.path
    boundaries = list(msg.boundaries)
    if not boundaries:
        for name in ("embedding_dim", "embedding_name", "initializer"):
            if msg.HasField(name):
                report.add(join_path(path, name), "set without boundaries (it would be ignored), "
                                                  "expected boundaries to bucketize, or no " + name)
        return None
    ok = True
    for i, value in enumerate(boundaries):
        if not math.isfinite(value):
            report.add(f"{path}.boundaries[{i}]", f"got {show(value)}, expected a finite number")
            ok = False
        elif i > 0 and not value > boundaries[i - 1]:
            report.add(f"{path}.boundaries[{i}]", f"got {show(value)} after {show(boundaries[i - 1])}, "
                                                  "expected strictly ascending boundaries")
            ok = False
    if msg.value_dim != 1:
        report.add(join_path(path, "value_dim"), f"got {msg.value_dim} with boundaries, expected 1")
    if msg.embedding_dim == 0:
        what = "got 0" if msg.HasField("embedding_dim") else "not set"
        report.add(join_path(path, "embedding_dim"),
                   f"{what}, expected > 0 with boundaries (a bucketized feature is embedded)")
        ok = False
    if not ok:
        return None
    return TableSpec(info, int(msg.embedding_dim), len(boundaries) + 1, ("boundaries", tuple(boundaries)))


def _check_text(report: Report, info: FeatureInfo) -> TableSpec | None:
    """text_feature: embedding_dim, hash_bucket_size, at least one kind of n-gram."""
    msg, path = info.message, info.path
    ok = True
    for name in ("embedding_dim", "hash_bucket_size"):
        if getattr(msg, name) == 0:
            what = "got 0" if msg.HasField(name) else "not set"
            report.add(join_path(path, name), f"{what}, expected > 0")
            ok = False
    kinds = ("letter_trigrams", "word_unigrams", "word_bigrams")
    if not any(getattr(msg, k) for k in kinds):
        report.add(path, f"no n-grams enabled (every row would be empty), expected at least one of {one_of(kinds)} true")
        ok = False
    if not ok:
        return None
    mapping = ("text", msg.letter_trigrams, msg.word_unigrams, msg.word_bigrams, msg.lowercase)
    return TableSpec(info, int(msg.embedding_dim), int(msg.hash_bucket_size), mapping)


def _describe(spec: TableSpec) -> str:
    rows = "an unknown number of" if spec.rows is None else str(spec.rows)
    return f"embedding_dim {spec.dim} and {rows} rows ({spec.mapping[0]})"


def _check_shared_tables(report: Report, specs: list[TableSpec]) -> None:
    """Features naming the same embedding table must agree on its shape and id mapping."""
    first_by_name: dict[str, TableSpec] = {}
    for spec in specs:
        name = spec.feature.embedding_name
        first = first_by_name.setdefault(name, spec)
        if first is spec:
            continue
        same_rows = spec.rows is None or first.rows is None or spec.rows == first.rows
        same_mapping = spec.mapping[0] == first.mapping[0] and (
            None in (spec.mapping[1:] + first.mapping[1:]) or spec.mapping == first.mapping
        )
        init, first_init = spec.feature.message.initializer, first.feature.message.initializer
        if (spec.feature.message.HasField("initializer") and first.feature.message.HasField("initializer")
                and init != first_init):
            report.add(join_path(spec.feature.path, "initializer"),
                       f"differs from the initializer of feature '{first.feature.name}', which shares embedding "
                       f"table '{name}' (one table has one initializer), expected the same initializer or none")
        if spec.dim != first.dim or not same_rows or not same_mapping:
            report.add(spec.feature.path,
                       f"embedding table '{name}' is shared with feature '{first.feature.name}' "
                       f"({first.feature.path}: {_describe(first)}) but this feature has {_describe(spec)}, "
                       "expected the same embedding_dim, table size and id mapping "
                       "(or a different embedding_name)")


def check_features(report: Report, config: pipeline_pb2.PipelineConfig) -> None:
    """All feature_configs rules."""
    vocabs = _Vocabs(report.source)
    first_index: dict[str, int] = {}
    specs: list[TableSpec] = []
    for info in list_features(config):
        if info.message.HasField("feature_name"):
            if not info.name:
                report.add(join_path(info.path, "feature_name"), "empty, expected a name")
            elif info.name in first_index:
                report.add(join_path(info.path, "feature_name"),
                           f"duplicate feature name '{info.name}' (also feature_configs"
                           f"[{first_index[info.name]}]), expected unique names")
            else:
                first_index[info.name] = info.index
        if info.kind == "raw_feature":
            spec = _check_raw(report, info)
        elif info.kind == "text_feature":
            spec = _check_text(report, info)
        elif info.kind == "sequence_raw_feature":
            spec = None  # no table; sequence_length is range-checked by the generic rules
        else:
            spec = _check_id_like(report, info, vocabs)
        if spec is not None and info.name:
            specs.append(spec)
    _check_shared_tables(report, specs)
