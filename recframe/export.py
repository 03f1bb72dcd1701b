"""``python -m recframe.export --pipeline_config X --export_dir D``: the two towers, apart.

Writes ``D/user/`` and ``D/item/``, each self-contained (see docs/export.md)::

    D/user/tower.pt2         the tower as a ``torch.export`` program (torch.export.load)
    D/user/tower.json        sidecar: input columns and their transforms, the tensor input
                             order, output_dim, similarity, normalisation, temperature, ...
    D/user/pipeline.config   the training config with vocab_file contents inlined into
                             vocab_list (the FULL config: serving reads only the
                             feature_configs that tower.json names)

The exported program takes flat tensors, in the order of ``tower.json["tensor_inputs"]``:
for each input feature of the tower, in order,

- sparse (IdFeature, bucketized RawFeature): ``values`` (N,) int64 table rows and
  ``lengths`` (B,) int64 ids per row;
- dense (RawFeature): ``values`` (B, value_dim) float32, normalized;
- sequence (SequenceIdFeature): ``ids`` (B, L) int64 right-padded with 0 and ``lengths`` (B,) int64;
- numeric sequence (SequenceRawFeature, e.g. history timestamps for time-decay pooling):
  ``values`` (B, L) float32 right-padded with 0 and ``lengths`` (B,) int64;

and returns (B, output_dim) float32 embeddings (L2-normalized for COSINE). The batch size,
the number of ids and L are dynamic. :func:`recframe.serving.load_tower` turns raw rows into
these tensors with the same feature code as training.

The export is written into a temporary directory next to ``D`` and renamed into place, so
``D`` holds either nothing, the old export (without ``--overwrite``) or the complete new one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from google.protobuf import json_format
from torch import nn

import recframe
from recframe.batch import Batch, SequenceIds, SequenceValues, SparseIds
from recframe.config import save_pipeline_config
from recframe.features import DENSE, SPARSE, Feature, IdFeature, RawFeature, SequenceIdFeature
from recframe.features.text_feature import TextFeature
from recframe.files import atomic_directory
from recframe.models import MatchModel
from recframe.pipeline import Pipeline
from recframe.protos import model_pb2, pipeline_pb2
from recframe.serving.tower import batch_to_tensors, is_value_sequence, tensor_names  # noqa: F401  (re-exported)
from recframe.train import USER_ERRORS, error_message
from recframe.training.checkpoint import load_checkpoint, resolve_checkpoint

FORMAT_VERSION = 1
SIDES = ("user", "item")
ARTIFACT = "tower.pt2"
SIDECAR = "tower.json"
CONFIG = "pipeline.config"


class ExportError(ValueError):
    """The export cannot be written (e.g. the export directory is not empty)."""


class TowerModule(nn.Module):
    """A trained tower over flat tensors (no Batch at the interface): the adapter export traces.

    Turns the flat tensor inputs (see the module docstring) back into a Batch and calls the
    model's own :class:`~recframe.models.tower.Tower` (standalone: a DSSMV2 tower carries only
    its own groups' tables). Must be used in eval mode (dropouts off).

    Args:
        model: the trained model; side: "user" or "item"; features: the tower's input
            features, in the order of the tensor inputs.
    """

    def __init__(self, model: MatchModel, side: str, features: Sequence[Feature]) -> None:
        super().__init__()
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        self.tower = (model.user_tower if side == "user" else model.item_tower).standalone()
        self.kinds = [(f.name, "values" if is_value_sequence(f) else f.kind) for f in features]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = Batch(batch_size=0)
        i = 0
        for name, kind in self.kinds:
            if kind == SPARSE:
                values, lengths = inputs[i], inputs[i + 1]
                offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
                batch.sparse[name] = SparseIds(values, offsets)
                i += 2
            elif kind == DENSE:
                batch.dense[name] = inputs[i]
                i += 1
            elif kind == "values":
                batch.sequence[name] = SequenceValues(inputs[i], inputs[i + 1])
                i += 2
            else:
                batch.sequence[name] = SequenceIds(inputs[i], inputs[i + 1])
                i += 2
        return self.tower(batch)


def example_inputs(features: Sequence[Feature]) -> tuple[tuple[torch.Tensor, ...], dict]:
    """Example tensors (3 rows, row 0 of every table) and their dynamic shapes."""
    batch = torch.export.Dim("batch")
    seq_dims: dict[int, torch.export.Dim] = {}
    tensors, shapes = [], []
    lengths = torch.tensor([2, 1, 1], dtype=torch.int64)
    for i, feature in enumerate(features):
        if feature.kind == SPARSE:
            # A new tensor per input: torch.export treats one tensor passed twice as one input.
            tensors += [torch.zeros(4, dtype=torch.int64), lengths.clone()]
            shapes += [{0: torch.export.Dim(f"ids_{i}")}, {0: batch}]
        elif feature.kind == DENSE:
            tensors.append(torch.zeros(3, feature.value_dim, dtype=torch.float32))
            shapes.append({0: batch})
        else:
            length = feature.sequence_length
            # Sequences of one length share a Dim: aligned ids and timestamps must match.
            dim = seq_dims.setdefault(length, torch.export.Dim(f"seq_len_{length}"))
            dtype = torch.float32 if is_value_sequence(feature) else torch.int64
            tensors += [torch.zeros(3, 3, dtype=dtype), torch.tensor([2, 1, 3], dtype=torch.int64)]
            shapes += [{0: batch, 1: dim}, {0: batch}]
    return tuple(tensors), {"inputs": tuple(shapes)}


def export_program(module: TowerModule, features: Sequence[Feature]) -> torch.export.ExportedProgram:
    """``torch.export`` of a tower module with dynamic batch size, id counts and lengths."""
    module.eval()
    args, dynamic_shapes = example_inputs(features)
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes)


# ---- sidecar ------------------------------------------------------------------------------


def _transform(feature: Feature) -> dict:
    """How a feature turns its raw column into tensors (summary; the config has every field)."""
    cfg = feature.config
    out: dict = {"type": type(feature).__name__}
    if isinstance(feature, (IdFeature, SequenceIdFeature)):
        mapper = feature.mapper
        if mapper.vocab is not None:
            out.update(mapping="vocab", vocab_size=len(mapper.vocab), oov_row=0)
        elif mapper.hash_bucket_size:
            out.update(mapping="hash", hash="fnv1a64", hash_bucket_size=mapper.hash_bucket_size)
        else:
            out.update(mapping="identity", num_buckets=mapper.num_buckets)
        out["pooling"] = feature.pooling
        if isinstance(feature, SequenceIdFeature):
            out["sequence_length"] = feature.sequence_length
            if cfg.sequence_delim:
                out["sequence_delim"] = cfg.sequence_delim
        elif cfg.separator:
            out["separator"] = cfg.separator
    elif is_value_sequence(feature):
        out.update(mapping="values", sequence_length=feature.sequence_length)
        if cfg.sequence_delim:
            out["sequence_delim"] = cfg.sequence_delim
    elif isinstance(feature, TextFeature):
        out.update(mapping="hash", hash="fnv1a64", hash_bucket_size=feature.hash_bucket_size,
                   pooling=feature.pooling, ngrams=dict(feature.ngram_options))
    elif isinstance(feature, RawFeature):
        out["value_dim"] = feature.value_dim
        out["default_value"] = cfg.default_value
        if cfg.HasField("normalizer"):
            out["normalizer"] = json_format.MessageToDict(cfg.normalizer, preserving_proto_field_name=True)
        if len(feature.boundaries):
            out["boundaries"] = [float(b) for b in feature.boundaries]
        if cfg.separator:
            out["separator"] = cfg.separator
    return out


def sidecar(pipeline: Pipeline, model: MatchModel, side: str, features: Sequence[Feature],
            checkpoint: str, step: int) -> dict:
    """The ``tower.json`` content of one tower."""
    cfg = model.cfg
    id_column = pipeline.data_config.item_id_field if side == "item" else ""
    columns = list(dict.fromkeys(f.input_name for f in features))
    tensor_inputs = []
    for feature in features:
        for name in tensor_names(feature):
            part = name.rsplit(".", 1)[1]
            dtype = "float32" if feature.kind == DENSE or (is_value_sequence(feature) and part == "values") else "int64"
            if part == "values" and is_value_sequence(feature):
                shape = ["B", "L"]
            elif part == "values":
                shape = ["N"] if feature.kind == SPARSE else ["B", feature.value_dim]
            else:
                shape = ["B", "L"] if part == "ids" else ["B"]
            tensor_inputs.append({"name": name, "dtype": dtype, "shape": shape})
    return {
        "format_version": FORMAT_VERSION,
        "side": side,
        "artifacts": {"torch_export": ARTIFACT},
        "pipeline_config": CONFIG,
        "input_columns": columns,
        "id_column": id_column or columns[0],
        "features": [
            {"feature_name": f.name, "input_column": f.input_name, "kind": f.kind, "transform": _transform(f)}
            for f in features
        ],
        "tensor_inputs": tensor_inputs,
        "output_dim": (model.user_tower if side == "user" else model.item_tower).output_dim,
        "similarity": model_pb2.Similarity.Name(cfg.similarity),
        "normalized": bool(model.cosine),
        "temperature": float(cfg.temperature),
        "model": type(model).__name__,
        "feature_groups": list((model.user_tower if side == "user" else model.item_tower).group_names),
        "checkpoint": {"path": os.path.abspath(checkpoint), "step": int(step)},
        "recframe_version": recframe.__version__ if hasattr(recframe, "__version__") else "",
        "torch_version": torch.__version__,
    }


def self_contained_config(pipeline: Pipeline) -> pipeline_pb2.PipelineConfig:
    """The pipeline config with every vocab_file replaced by its values (vocab_list)."""
    config = pipeline_pb2.PipelineConfig()
    config.CopyFrom(pipeline.config)
    for fc in config.feature_configs:
        message = getattr(fc, fc.WhichOneof("feature"))
        if "vocab_file" in message.DESCRIPTOR.fields_by_name and message.HasField("vocab_file"):
            feature = pipeline.features[message.feature_name]
            values = feature.mapper.vocab.to_pylist()
            message.ClearField("vocab_file")
            del message.vocab_list[:]
            message.vocab_list.extend(values)
    return config


# ---- writing ------------------------------------------------------------------------------


def _check_target(export_dir: Path, overwrite: bool) -> None:
    if export_dir.exists():
        if not export_dir.is_dir():
            raise ExportError(f"--export_dir {str(export_dir)!r} exists and is not a directory")
        if any(export_dir.iterdir()) and not overwrite:
            raise ExportError(f"--export_dir {str(export_dir)!r} already exists and is not empty: "
                              "pass --overwrite or choose another directory")


def export_towers(pipeline: Pipeline, model: MatchModel, export_dir: str | os.PathLike, *,
                  checkpoint: str = "", step: int = 0, overwrite: bool = False,
                  sides: Sequence[str] = SIDES) -> dict[str, Path]:
    """Export the towers of ``model`` (a model built by ``pipeline``) under ``export_dir``.

    Returns {side: directory}. Raises ExportError when ``export_dir`` is not empty and
    ``overwrite`` is False.
    """
    export_dir = Path(export_dir)
    _check_target(export_dir, overwrite)
    model = model.cpu().eval()
    config = self_contained_config(pipeline)
    with atomic_directory(export_dir) as tmp:
        for side in sides:
            features = pipeline.user_features if side == "user" else pipeline.item_features
            side_dir = tmp / side
            side_dir.mkdir()
            module = TowerModule(model, side, features).eval()
            program = export_program(module, features)
            torch.export.save(program, str(side_dir / ARTIFACT))
            # Check the program against the eager module on fresh inputs (another batch size).
            check = _check_inputs(features)
            with torch.no_grad():
                diff = (program.module()(*check) - module(*check)).abs().max().item()
            if not diff <= 1e-5:
                raise RuntimeError(f"{side} tower: the exported program differs from the model by {diff}")
            meta = sidecar(pipeline, model, side, features, checkpoint, step)
            (side_dir / SIDECAR).write_text(json.dumps(meta, indent=2) + "\n")
            save_pipeline_config(config, side_dir / CONFIG)
    return {side: export_dir / side for side in sides}


def _check_inputs(features: Sequence[Feature]) -> tuple[torch.Tensor, ...]:
    """5 rows of random in-range inputs, different id counts per feature (some rows without ids);
    sequences of one length get the same lengths (a SEQUENCE group's members are aligned)."""
    g = torch.Generator().manual_seed(0)
    seq_lengths: dict[int, torch.Tensor] = {}
    tensors = []
    for feature in features:
        if feature.kind == SPARSE:
            rows = feature.embedding.num_embeddings
            lengths = torch.randint(0, 4, (5,), generator=g)
            tensors += [torch.randint(0, rows, (int(lengths.sum()),), generator=g), lengths]
        elif feature.kind == DENSE:
            tensors.append(torch.rand(5, feature.value_dim, generator=g))
        else:
            width = feature.sequence_length
            lengths = seq_lengths.setdefault(width, torch.randint(0, width + 1, (5,), generator=g))
            if is_value_sequence(feature):
                values = torch.rand(5, width, generator=g)
            else:
                values = torch.randint(0, feature.embedding.num_embeddings, (5, width), generator=g)
            values[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
            tensors += [values, lengths.clone()]
    return tuple(tensors)


# ---- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recframe.export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export the user tower and the item tower of a checkpoint separately, for serving:\n"
                    "EXPORT_DIR/user/ and EXPORT_DIR/item/, each with tower.pt2 (torch.export),\n"
                    "tower.json (inputs, transforms, output_dim, similarity) and pipeline.config.",
        epilog="examples:\n"
               "  python -m recframe.export --pipeline_config runs/x/pipeline.config --export_dir out/export\n"
               "  python -m recframe.export --pipeline_config X.config --checkpoint_path latest \\\n"
               "      --export_dir out/export --overwrite\n"
               "exit status: 0 done, 2 error in the config, the checkpoint or the export directory",
    )
    parser.add_argument("--pipeline_config", required=True, help="pipeline config file")
    parser.add_argument("--checkpoint_path", default="best",
                        help='"best" (default), "latest", or a checkpoint file path')
    parser.add_argument("--model_dir", default=None, help="overrides the config's model_dir")
    parser.add_argument("--export_dir", required=True, help="output directory (gets user/ and item/)")
    parser.add_argument("--edit_config_json", default=None, help="JSON of dotted-path overrides")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty export_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pipeline = Pipeline.from_file(args.pipeline_config, args.edit_config_json)
        _check_target(Path(args.export_dir), args.overwrite)
        model_dir = args.model_dir or pipeline.config.model_dir
        path = resolve_checkpoint(model_dir, args.checkpoint_path, args.pipeline_config)
        state = load_checkpoint(path, map_location="cpu")
        model = pipeline.build_model()
        model.load_state_dict(state["model"])
        dirs = export_towers(pipeline, model, args.export_dir, checkpoint=path, step=int(state.get("step", 0)),
                             overwrite=args.overwrite)
    except (FileNotFoundError, ExportError, *USER_ERRORS) as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2
    print(f"exported checkpoint {path} (step {state.get('step', 0)}): "
          + ", ".join(str(d) for d in dirs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
