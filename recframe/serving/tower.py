"""Load an exported tower (``recframe export``) and embed raw rows with it (``recframe.serving.load_tower``).

::

    from recframe.serving import load_tower
    items = load_tower("out/export/item")
    emb = items.embed({"movie_id": [1, 2], "genres": [["Comedy"], ["Action", "Drama"]], "year": [1995, 1994]})
    emb.shape  # (2, items.output_dim), float32

Rows are parsed by recframe's own feature code (the features of the tower's
``pipeline.config``), exactly as in training and evaluation, and fed to the exported
``torch.export`` program; no model class is rebuilt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch.export.passes import move_to_device_pass

from recframe.batch import Batch
from recframe.config import load_pipeline_config
from recframe.device import resolve_device
from recframe.errors import RecframeError
from recframe.features import BatchParser, Feature, FeatureInputError, create_features
from recframe.protoutil import oneof_message

SUPPORTED_FORMAT_VERSIONS = (1,)


class TowerLoadError(RecframeError, ValueError):
    """The directory is not a loadable exported tower."""


def to_arrow(rows: Any) -> pa.Table:
    """A pyarrow Table from a dict of lists / arrays, a pyarrow Table or RecordBatch, or a
    pandas DataFrame (its index is dropped)."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, dict):
        lengths = {name: len(values) for name, values in rows.items()}
        if len(set(lengths.values())) > 1:
            raise FeatureInputError(f"columns have different numbers of rows: {lengths}")
        columns = {}
        for name, values in rows.items():
            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                columns[name] = values
                continue
            try:
                columns[name] = pa.array(values.tolist() if isinstance(values, np.ndarray) and values.dtype == object
                                         else values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
                raise FeatureInputError(f"column '{name}': cannot be converted to an Arrow array ({e})") from None
        return pa.table(columns)
    if type(rows).__module__.startswith("pandas") and hasattr(rows, "columns"):
        try:
            return pa.Table.from_pandas(rows, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise FeatureInputError(f"cannot convert the DataFrame to Arrow: {e}") from None
    raise TypeError(f"rows must be a dict of lists, a pyarrow Table/RecordBatch or a pandas DataFrame, "
                    f"got {type(rows).__name__}")


def batch_to_tensors(batch: Batch, features: Sequence[Feature]) -> list[torch.Tensor]:
    """The flat tensor inputs of an exported tower (each feature's ``tensor_specs``, in
    order) from a parsed Batch."""
    return [t for f in features for t in f.to_tensors(batch.slot(f.kind)[f.name])]


def tensors_to_batch(tensors: Sequence[torch.Tensor], features: Sequence[Feature]) -> Batch:
    """The Batch of flat tensor inputs (the inverse of :func:`batch_to_tensors`)."""
    batch, i = Batch(batch_size=0), 0
    for feature in features:
        count = len(feature.tensor_specs())
        batch.slot(feature.kind)[feature.name] = feature.from_tensors(list(tensors[i:i + count]))
        i += count
    return batch


def load_compiled(path: str | os.PathLike):
    """A compiled tower (an AOTInductor package written by export): a callable of the flat
    tensor inputs that returns the (N, output_dim) embeddings."""
    from torch._inductor import aoti_load_package

    return _FirstOutput(aoti_load_package(str(path)))


class _FirstOutput:
    """The tower's one output tensor from an AOTInductor model (which may hand back the
    program's outputs as a list)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.compiled(*tensors)
        return out[0] if isinstance(out, (list, tuple)) else out


class Tower:
    """An exported tower: raw rows in, (N, output_dim) float32 embeddings out.

    Attributes:
        path: the tower directory; side: "user" or "item"; meta: tower.json.
        input_columns: the raw columns ``embed`` reads.
        id_column: the id column (item side: data_config.item_id_field).
        output_dim, similarity ("COSINE" / "INNER_PRODUCT"), normalized, temperature.
        device: where the program runs (the inputs are parsed on the host and copied there).
        runtime: "aoti" (the export's AOTInductor package, picked on the CPU when the export has
            one) or "torch.export" (the exported program).
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None) -> None:
        self.path = Path(path)
        self.device = resolve_device(str(device) if device is not None else "cpu")
        sidecar = self.path / "tower.json"
        if not sidecar.is_file():
            raise TowerLoadError(f"{str(self.path)!r} is not an exported tower: no tower.json "
                                 "(pass EXPORT_DIR/user or EXPORT_DIR/item)")
        self.meta = json.loads(sidecar.read_text())
        if self.meta.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise TowerLoadError(f"{sidecar}: format_version {self.meta.get('format_version')!r} is not "
                                 f"supported (this recframe reads {SUPPORTED_FORMAT_VERSIONS})")
        self.side: str = self.meta["side"]
        self.input_columns: list[str] = list(self.meta["input_columns"])
        self.id_column: str = self.meta["id_column"]
        self.output_dim: int = int(self.meta["output_dim"])
        self.similarity: str = self.meta["similarity"]
        self.normalized: bool = bool(self.meta["normalized"])
        self.temperature: float = float(self.meta["temperature"])
        config = load_pipeline_config(str(self.path / self.meta["pipeline_config"]))
        names = [f["feature_name"] for f in self.meta["features"]]
        configs = [fc for fc in config.feature_configs if oneof_message(fc, "feature").feature_name in names]
        built = create_features(configs, str(self.path))
        missing = [n for n in names if n not in built]
        if missing:
            raise TowerLoadError(f"{self.path / self.meta['pipeline_config']}: no feature_configs for {missing}")
        self.features: list[Feature] = [built[n] for n in names]
        for feature, spec in zip(self.features, self.meta["features"]):
            if feature.kind != spec["kind"] or feature.input_name != spec["input_column"]:
                raise TowerLoadError(f"{sidecar}: feature '{feature.name}' does not match pipeline.config")
        self.parser = BatchParser(self.features)
        compiled = self.meta["artifacts"].get("aoti_cpu")
        if compiled and self.device.type == "cpu" and (self.path / compiled).is_file():
            self.program = load_compiled(self.path / compiled)
            self.runtime = "aoti"
        else:
            program = torch.export.load(str(self.path / self.meta["artifacts"]["torch_export"]))
            if self.device.type != "cpu":  # the artifact holds CPU weights; the pass rewrites every device in it
                program = move_to_device_pass(program, self.device)
            self.program = program.module()
            self.runtime = "torch.export"

    def __repr__(self) -> str:
        return (f"Tower(side={self.side!r}, input_columns={self.input_columns}, output_dim={self.output_dim}, "
                f"similarity={self.similarity!r})")

    def check_columns(self, table: pa.Table) -> None:
        """Raise FeatureInputError naming the first missing or mistyped input column."""
        present = set(table.column_names)
        for feature in self.features:
            column = feature.input_name
            if column not in present:
                raise FeatureInputError(
                    f"missing column '{column}' (feature '{feature.name}'); the {self.side} tower reads "
                    f"{self.input_columns}, got {table.column_names}")
            t = table.schema.field(column).type
            expected = feature.column_type_problem(t.value_type if pa.types.is_dictionary(t) else t)
            if expected is not None:
                raise FeatureInputError(f"column '{column}' (feature '{feature.name}'): expected {expected}, got {t}")

    @torch.no_grad()
    def embed(self, rows: Any, batch_size: int | None = None, source: str = "") -> np.ndarray:
        """(N, output_dim) float32 embeddings of raw rows (dict of lists, pyarrow Table /
        RecordBatch, pandas DataFrame with the original columns); ``batch_size`` splits
        large inputs (default: all rows at once)."""
        table = to_arrow(rows)
        self.check_columns(table)
        step = batch_size or max(table.num_rows, 1)
        if table.num_rows <= step:  # one call (a request): no slicing, no copy into an output array
            return self._embed_chunk(table, source)
        out = np.empty((table.num_rows, self.output_dim), dtype=np.float32)
        for start in range(0, table.num_rows, step):
            chunk = table.slice(start, step)
            out[start:start + chunk.num_rows] = self._embed_chunk(chunk, source)
        return out

    def _embed_chunk(self, table: pa.Table, source: str) -> np.ndarray:
        try:
            batch = self.parser(table, source)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise FeatureInputError(f"{source + ': ' if source else ''}cannot parse the rows: {e}") from None
        tensors = batch_to_tensors(batch, self.features)
        if self.device.type != "cpu":
            tensors = [t.to(self.device, non_blocking=True) for t in tensors]
        return self.program(*tensors).cpu().numpy()


def load_tower(path: str | os.PathLike, device: str | torch.device | None = None) -> Tower:
    """Load ``EXPORT_DIR/user`` or ``EXPORT_DIR/item`` written by ``recframe export``,
    to run on ``device`` (default the CPU; "cuda", "cuda:N" or "auto")."""
    return Tower(path, device)


__all__ = ["Tower", "TowerLoadError", "batch_to_tensors", "load_compiled", "load_tower", "tensors_to_batch", "to_arrow"]
