"""Pre-flight: every input of a run opened and checked before anything is written.

:func:`check_inputs` reads the schemas of the training, evaluation, test and item-catalogue
files (every column a parser reads present, with a type its feature accepts), counts their
rows, and reads the id columns that evaluation would otherwise first read after an epoch: the
catalogue's ids (not null, unique, not empty) and the evaluation and test targets (every one in
the catalogue). The explicit ``eval_config.top_k`` cut-offs must fit the catalogue. With
``auc`` among ``eval_config.pointwise_metrics`` the evaluation and test label columns are read
too: both classes must occur (the columns of the item features and the label are part of the
evaluation parser's columns, checked like the others). Every
failure is a :class:`~recframe.data.inputs.DataError` or
:class:`~recframe.config.ConfigError` naming the file or field and what was expected.

Its cost is one pass over the id columns (8 bytes per catalogue item and per evaluation row),
which evaluation reads anyway; the training rows are not read, only their metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recframe.config import ConfigError
from recframe.data.inputs import PARQUET, DataError, normalize_dataset_type, open_parquet
from recframe.features.hashing import item_keys

if TYPE_CHECKING:
    from recframe.data.dataset import RecordBatchDataset
    from recframe.features import BatchParser
    from recframe.pipeline import Pipeline


@dataclass
class InputSummary:
    """Row counts of the inputs :func:`check_inputs` opened (0 for an input not set)."""

    train_rows: int = 0
    eval_rows: int = 0
    test_rows: int = 0
    num_items: int = 0


def check_column_types(paths: Sequence[str], parser: "BatchParser", dataset_type: str, field: str) -> None:
    """Raise DataError when a Parquet file's column has a type its feature cannot parse
    (CSV columns are typed when read: their values are checked by the parser)."""
    if normalize_dataset_type(dataset_type) != PARQUET:
        return
    numeric = list(parser.label_fields) + ([parser.sample_weight_field] if parser.sample_weight_field else [])
    for path in paths:
        schema = open_parquet(path).schema_arrow
        for feature in parser.features:
            t = schema.field(feature.input_name).type
            problem = feature.column_type_problem(t.value_type if pa.types.is_dictionary(t) else t)
            if problem is not None:
                raise DataError(f"{field}: {path}: column '{feature.input_name}' (feature '{feature.name}'): "
                                f"expected {problem}, got {t}")
        for name in numeric:
            t = schema.field(name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise DataError(f"{field}: {path}: column '{name}': expected numbers, got {t}")


def read_keys(pipeline: "Pipeline", spec: str, column: str, field: str) -> np.ndarray:
    """(N,) int64 item keys of ``column`` over the files of ``spec``, in file order; raises
    DataError naming the file region of the first null id."""
    dataset = pipeline.dataset(spec, columns=[column], parse_fn=None, shuffle=False, drop_remainder=False,
                               batch_size=1 << 16)
    keys, row = [np.zeros(0, np.int64)], 0
    for chunk in dataset:
        values = chunk.column(column)
        if values.null_count:
            first = row + int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{field}: {spec}: column '{column}' has {values.null_count} null item id(s), first at "
                            f"row {first}; expected every row to name an item")
        try:
            keys.append(item_keys(values))
        except (TypeError, ValueError) as e:
            raise DataError(f"{field}: {spec}: column '{column}': {e}") from None
        row += len(values)
    return np.concatenate(keys)


def _opened(pipeline: "Pipeline", field: str, parser: "BatchParser") -> int:
    """The row count of an input opened with ``parser``'s columns (DataError naming ``field``)."""
    spec = getattr(pipeline.config, field)
    try:
        dataset = pipeline.dataset(spec, parser.columns(), None, shuffle=False, drop_remainder=False)
    except DataError as e:
        raise DataError(f"{field}: {e}") from None
    return _checked(pipeline, dataset, parser, field)


def _checked(pipeline: "Pipeline", dataset: "RecordBatchDataset", parser: "BatchParser", field: str) -> int:
    """The row count of an opened input, its column types checked; DataError when it is empty."""
    check_column_types(dataset.paths, parser, pipeline.data_config.dataset_type, field)
    rows = int(dataset.reader.num_rows)
    if rows == 0:
        raise DataError(f"{field}: {getattr(pipeline.config, field)!r} has no rows; expected at least one")
    return rows


def _check_auc_labels(pipeline: "Pipeline", spec: str, field: str) -> None:
    """With ``auc`` among eval_config.pointwise_metrics, the label column of ``spec`` must hold
    both classes (label > 0.5 positive): AUC is undefined otherwise."""
    label = pipeline.pointwise_label()
    if label is None or not any(m.HasField("auc") for m in pipeline.config.eval_config.pointwise_metrics):
        return
    dataset = pipeline.dataset(spec, columns=[label], parse_fn=None, shuffle=False, drop_remainder=False,
                               batch_size=1 << 16)
    rows = positives = 0
    for chunk in dataset:
        values = pc.cast(chunk.column(label), pa.float64())
        rows += len(values)
        positives += int(pc.sum(pc.greater(values, 0.5)).as_py() or 0)
    if not 0 < positives < rows:
        raise DataError(f"{field}: {spec}: column '{label}' has {positives} positive (> 0.5) of {rows} rows; "
                        "expected both classes among the evaluation rows (eval_config.pointwise_metrics asks for "
                        "auc, which is undefined with one class)")


def check_inputs(pipeline: "Pipeline", train_dataset: "RecordBatchDataset | None" = None,
                 train_parser: "BatchParser | None" = None,
                 eval_fields: Sequence[str] = ("eval_input_path", "test_input_path")) -> InputSummary:
    """Open and check every input of ``pipeline`` (module docstring); returns their row counts.

    ``train_dataset`` / ``train_parser``: the training dataset and parser the caller built (the
    files are opened once: a CSV file is counted by streaming it); without them the training
    input is not checked.
    ``eval_fields``: the evaluation inputs to check against the catalogue.
    """
    config, data = pipeline.config, pipeline.data_config
    summary = InputSummary()
    if train_dataset is not None and train_parser is not None:
        summary.train_rows = _checked(pipeline, train_dataset, train_parser, "train_input_path")
    if not config.item_input_path:
        return summary
    summary.num_items = _opened(pipeline, "item_input_path", pipeline.item_parser())
    id_field = data.item_id_field
    catalogue = read_keys(pipeline, config.item_input_path, id_field, "item_input_path")
    ordered = np.sort(catalogue)
    duplicated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if duplicated.size:
        raise DataError(f"item_input_path: {config.item_input_path}: column '{id_field}' has {duplicated.size} "
                        f"duplicated item id(s), e.g. {_examples(duplicated)}; expected one row "
                        "per item")
    top_k = sorted(set(int(k) for k in config.eval_config.top_k))
    if top_k and top_k[-1] > len(catalogue):
        raise ConfigError(f"{pipeline.source}: eval_config.top_k: {top_k[-1]} is more than the {len(catalogue)} "
                          f"items of item_input_path {config.item_input_path!r}; expected cut-offs <= {len(catalogue)} "
                          "(every item would be a hit)")
    for field in eval_fields:
        spec = getattr(config, field)
        if not spec:
            continue
        rows = _opened(pipeline, field, pipeline.eval_user_parser())
        targets = read_keys(pipeline, spec, id_field, field)
        pos = np.clip(np.searchsorted(ordered, targets), 0, max(len(ordered) - 1, 0))
        unknown = np.unique(targets[ordered[pos] != targets])
        if unknown.size:
            raise DataError(f"{field}: {spec}: {int((ordered[pos] != targets).sum())} of {len(targets)} target "
                            f"item ids in column '{id_field}' are not in the item catalogue ({len(catalogue)} items "
                            f"of {config.item_input_path}), e.g. {_examples(unknown)}; expected "
                            "every evaluated item in item_input_path")
        _check_auc_labels(pipeline, spec, field)
        if field == "eval_input_path":
            summary.eval_rows = rows
        else:
            summary.test_rows = rows
    return summary


def _examples(keys: np.ndarray) -> str:
    """Up to five example keys (integer ids as they are; string ids by their 64-bit hash)."""
    return str(keys[:5].tolist())


__all__ = ["InputSummary", "check_column_types", "check_inputs", "read_keys"]
