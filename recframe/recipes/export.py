"""Export the two towers of a trained model apart (``recframe export``).

Writes ``D/user/`` and ``D/item/``, each self-contained (see docs/export.md)::

    D/user/tower.pt2         the tower as a ``torch.export`` program (torch.export.load)
    D/user/tower.json        sidecar: input columns and their transforms, the tensor input
                             order, output_dim, similarity, normalisation, temperature, ...
    D/user/pipeline.config   the training config with vocab_file contents inlined into
                             vocab_list (the FULL config: serving reads only the
                             feature_configs that tower.json names)

``tower.json["files"]`` holds the sha256 of every other file of the tower directory, computed
once they are written and before the directory is published; :func:`recframe.serving.load_tower`
refuses a tower whose files do not match (see docs/export.md, "What is safe to load").

The exported program takes flat tensors, in the order of ``tower.json["tensor_inputs"]``:
each input feature's ``tensor_specs()`` in turn (:class:`recframe.features.base.Feature`), e.g.

- sparse (IdFeature, TextFeature, bucketized RawFeature): ``values`` (N,) int64 table rows and
  ``lengths`` (B,) int64 ids per row;
- dense (RawFeature): ``values`` (B, value_dim) float32, normalized;
- sequence (SequenceIdFeature): ``ids`` (B, L) int64 right-padded with 0 and ``lengths`` (B,) int64;
- numeric sequence (SequenceRawFeature, e.g. history timestamps for time-decay pooling):
  ``values`` (B, L) float32 right-padded with 0 and ``lengths`` (B,) int64;

and returns (B, output_dim) float32 embeddings (L2-normalized for COSINE). The batch size,
the number of ids and L are dynamic. The program is the model's own
:class:`~recframe.models.tower.Tower` behind an adapter from flat tensors to a Batch.
:func:`recframe.serving.load_tower` turns raw rows into these tensors with the same feature
code as training.

The export is written into a temporary directory next to ``D`` and renamed into place, so
``D`` holds either nothing, the old export (without ``--overwrite``) or the complete new one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.export.passes import move_to_device_pass

import recframe
from recframe.config import save_pipeline_config
from recframe.errors import RecframeError
from recframe.features import Feature
from recframe.files import atomic_directory, check_output_path
from recframe.models import MatchModel
from recframe.pipeline import Pipeline
from recframe.protos import model_pb2, pipeline_pb2
from recframe.protoutil import oneof_message
from recframe.serving.tower import FORMAT_VERSION, SIDECAR, file_digests, load_compiled, tensors_to_batch
from recframe.training.checkpoint import load_checkpoint, load_model_state

logger = logging.getLogger("recframe")

SIDES = ("user", "item")
ARTIFACT = "tower.pt2"
COMPILED_ARTIFACT = "tower.cpu.pt2"  # AOTInductor package: compiled for the CPU, loads without recframe's model code
CONFIG = "pipeline.config"


class ExportError(RecframeError, ValueError):
    """The export cannot be written (e.g. the export directory is not empty)."""


class TowerModule(nn.Module):
    """A trained tower over flat tensors (no Batch at the interface): the module export traces.

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
        self.side = side
        self.tower = (model.user_tower if side == "user" else model.item_tower).standalone()
        self.features = list(features)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.tower(tensors_to_batch(inputs, self.features))


def tensor_inputs(features: Sequence[Feature]) -> list[dict]:
    """Name, dtype and shape of every flat tensor input, in order."""
    return [spec for feature in features for spec in feature.tensor_specs()]


def example_inputs(features: Sequence[Feature], num_rows: int = 3, seed: int = 0,
                   random_lengths: bool = False) -> tuple[torch.Tensor, ...]:
    """In-range flat inputs of ``num_rows`` rows. Fixed lengths by default (2, 1, 1, ... ids;
    2, 1, 3, ... of 3 positions: no size is 0 or 1, which torch.export would specialize);
    ``random_lengths`` draws them (some rows empty), for checks. Sequences of one
    sequence_length share their lengths: a SEQUENCE group's members are aligned."""
    generator = torch.Generator().manual_seed(seed)
    seq_lengths: dict[int, torch.Tensor] = {}
    tensors: list[torch.Tensor] = []
    for feature in features:
        width = feature.sequence_length if random_lengths else 3
        if feature.sequence_length:
            if feature.sequence_length not in seq_lengths:
                seq_lengths[feature.sequence_length] = (
                    torch.randint(0, width + 1, (num_rows,), generator=generator) if random_lengths
                    else torch.tensor([2, 1, 3] * num_rows)[:num_rows])
            lengths = seq_lengths[feature.sequence_length]
        elif random_lengths:
            lengths = torch.randint(0, 4, (num_rows,), generator=generator)
        else:
            lengths = torch.tensor([2] + [1] * (num_rows - 1))
        tensors += feature.example_tensors(lengths, width, generator)
    return tuple(tensors)


def dynamic_shapes(features: Sequence[Feature]) -> dict:
    """torch.export dynamic shapes of the flat inputs: "B" (rows) shared by all, "N" per
    feature, "L" shared by the sequences of one sequence_length."""
    batch = torch.export.Dim("batch")
    seq_dims: dict[int, torch.export.Dim] = {}
    shapes = []
    for i, feature in enumerate(features):
        for spec in feature.tensor_specs():
            dims = {}
            for axis, symbol in enumerate(spec["shape"]):
                if symbol == "B":
                    dims[axis] = batch
                elif symbol == "N":
                    dims[axis] = torch.export.Dim(f"ids_{i}")
                elif symbol == "L":
                    length = feature.sequence_length
                    dims[axis] = seq_dims.setdefault(length, torch.export.Dim(f"seq_len_{length}"))
            shapes.append(dims)
    return {"inputs": tuple(shapes)}


def export_program(module: TowerModule, features: Sequence[Feature]) -> torch.export.ExportedProgram:
    """``torch.export`` of a tower module with dynamic batch size, id counts and lengths."""
    module.eval()
    with torch.no_grad():
        return torch.export.export(module, example_inputs(features), dynamic_shapes=dynamic_shapes(features))


# ---- sidecar ------------------------------------------------------------------------------


def sidecar(pipeline: Pipeline, model: MatchModel, side: str, features: Sequence[Feature],
            checkpoint: str, step: int, compiled: bool = False, files: dict[str, str] | None = None) -> dict:
    """The ``tower.json`` content of one tower (``compiled``: the AOTInductor package is there;
    ``files``: {file name: sha256} of the other files of the tower directory, see :func:`file_digests`)."""
    cfg = model.cfg
    tower = model.user_tower if side == "user" else model.item_tower
    id_column = pipeline.data_config.item_id_field if side == "item" else ""
    columns = list(dict.fromkeys(f.input_name for f in features))
    return {
        "format_version": FORMAT_VERSION,
        "side": side,
        "artifacts": {"torch_export": ARTIFACT, **({"aoti_cpu": COMPILED_ARTIFACT} if compiled else {})},
        "pipeline_config": CONFIG,
        "input_columns": columns,
        "id_column": id_column or columns[0],
        "features": [
            {"feature_name": f.name, "input_column": f.input_name, "kind": f.kind, "transform": f.describe()}
            for f in features
        ],
        "tensor_inputs": tensor_inputs(features),
        "output_dim": tower.output_dim,
        "similarity": model_pb2.Similarity.Name(cfg.similarity),
        "normalized": bool(model.cosine),
        "temperature": float(cfg.temperature),
        "model": type(model).__name__,
        "feature_groups": list(tower.group_names),
        "checkpoint": {"path": os.path.abspath(checkpoint), "step": int(step)},
        "recframe_version": recframe.__version__,
        "torch_version": torch.__version__,
        "files": dict(files or {}),
    }


def self_contained_config(pipeline: Pipeline) -> pipeline_pb2.PipelineConfig:
    """The pipeline config with every vocab_file replaced by its values (vocab_list)."""
    config = pipeline_pb2.PipelineConfig()
    config.CopyFrom(pipeline.config)
    for fc in config.feature_configs:
        message = oneof_message(fc, "feature")
        if "vocab_file" in message.DESCRIPTOR.fields_by_name and message.HasField("vocab_file"):
            values = pipeline.features[message.feature_name].mapper.vocab.to_pylist()
            message.ClearField("vocab_file")
            del message.vocab_list[:]
            message.vocab_list.extend(values)
    return config


# ---- writing ------------------------------------------------------------------------------


def check_export_dir(export_dir: str | os.PathLike, overwrite: bool) -> None:
    """Raise ExportError when ``export_dir`` is a file, or not empty without ``overwrite``."""
    export_dir = Path(export_dir)
    if export_dir.exists():
        if not export_dir.is_dir():
            raise ExportError(f"--export_dir {str(export_dir)!r} exists and is not a directory")
        if any(export_dir.iterdir()) and not overwrite:
            raise ExportError(f"--export_dir {str(export_dir)!r} already exists and is not empty: "
                              "pass --overwrite or choose another directory")
    check_output_path(export_dir, "--export_dir", directory=True)  # before the export's minutes of work


def compile_package(program: torch.export.ExportedProgram, path: Path, module: nn.Module,
                    features: Sequence[Feature]) -> bool:
    """Compile ``program`` with AOTInductor for the CPU into the package ``path`` and check it
    against the eager module (<= 1e-5); False (with a warning) when this machine cannot compile
    it (no C++ compiler): the export then serves through the torch.export program."""
    try:
        from torch._inductor import aoti_compile_and_package

        aoti_compile_and_package(program, package_path=str(path))
        compiled = load_compiled(path)  # as serving loads it: the check covers that path too
    except Exception as e:  # noqa: BLE001 - any compiler failure leaves a working (uncompiled) export
        logger.warning("the %s tower was not compiled with AOTInductor (%s: %s); it will be served by its "
                       "torch.export program", getattr(module, "side", "?"), type(e).__name__, str(e)[:300])
        path.unlink(missing_ok=True)
        return False
    check = example_inputs(features, num_rows=5, random_lengths=True)
    with torch.no_grad():
        diff = (compiled(*check) - module(*check)).abs().max().item()
    if not diff <= 1e-5:
        raise RuntimeError(f"{getattr(module, 'side', '?')} tower: the compiled package differs from the model by {diff}")
    return True


def export_towers(pipeline: Pipeline, model: MatchModel, export_dir: str | os.PathLike, *,
                  checkpoint: str = "", step: int = 0, overwrite: bool = False,
                  sides: Sequence[str] = SIDES, device: torch.device | None = None,
                  compile_cpu: bool = True) -> dict[str, Path]:
    """Export the towers of ``model`` (a model built by ``pipeline``) under ``export_dir``.

    The programs hold CPU weights (``load_tower(path, device)`` moves them); each is checked
    against the eager tower on the CPU and, with a CUDA ``device``, also moved there and
    checked against the eager tower on it. With ``compile_cpu``, each tower also gets an
    AOTInductor package for the CPU (``tower.cpu.pt2``, tens of seconds per tower), which
    ``load_tower`` prefers on the CPU. Returns {side: directory}. Raises ExportError when
    ``export_dir`` is not empty and ``overwrite`` is False.
    """
    export_dir = Path(export_dir)
    check_export_dir(export_dir, overwrite)
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
            check = example_inputs(features, num_rows=5, random_lengths=True)
            with torch.no_grad():
                diff = (program.module()(*check) - module(*check)).abs().max().item()
            if not diff <= 1e-5:
                raise RuntimeError(f"{side} tower: the exported program differs from the model by {diff}")
            if device is not None and device.type != "cpu":
                check_on_device(program, module, features, device)
            compiled = compile_cpu and compile_package(program, side_dir / COMPILED_ARTIFACT, module, features)
            save_pipeline_config(config, side_dir / CONFIG)
            # Last: the digests of every file written above (load_tower checks them).
            (side_dir / SIDECAR).write_text(json.dumps(
                sidecar(pipeline, model, side, features, checkpoint, step, compiled, file_digests(side_dir)),
                indent=2) + "\n")
    return {side: export_dir / side for side in sides}


def check_on_device(program: torch.export.ExportedProgram, module: TowerModule, features: Sequence[Feature],
                    device: torch.device) -> None:
    """Run ``program`` moved to ``device`` against the eager ``module`` on it (then back on the CPU)."""
    moved = move_to_device_pass(program, device).module()
    check = [t.to(device) for t in example_inputs(features, num_rows=5, random_lengths=True)]
    module.to(device)
    try:
        with torch.no_grad():
            diff = (moved(*check) - module(*check)).abs().max().item()
    finally:
        module.cpu()
    if not diff <= 1e-4:
        raise RuntimeError(f"{module.side} tower: the exported program moved to {device} differs from the model "
                           f"there by {diff}")


def export_checkpoint(pipeline: Pipeline, checkpoint: str, export_dir: str | os.PathLike,
                      overwrite: bool = False, device: torch.device | None = None,
                      compile_cpu: bool = True) -> tuple[dict[str, Path], int]:
    """Load ``checkpoint`` into the pipeline's model and export its towers (checked on
    ``device`` too, see :func:`export_towers`); returns ({side: directory}, the checkpoint's step)."""
    check_export_dir(export_dir, overwrite)
    state = load_checkpoint(checkpoint, map_location="cpu")
    model = pipeline.build_model()
    load_model_state(model, state, checkpoint)
    step = int(state.get("step", 0))
    return export_towers(pipeline, model, export_dir, checkpoint=checkpoint, step=step, overwrite=overwrite,
                         device=device, compile_cpu=compile_cpu), step


__all__ = ["ExportError", "TowerModule", "check_export_dir", "check_on_device", "compile_package", "example_inputs",
           "export_checkpoint",
           "export_program", "export_towers", "self_contained_config", "sidecar", "tensor_inputs"]
