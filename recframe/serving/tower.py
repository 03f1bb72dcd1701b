"""Load an exported tower (``recframe export``) and embed raw rows with it (``recframe.serving.load_tower``).

::

    from recframe.serving import load_tower
    items = load_tower("out/export/item")
    emb = items.embed({"movie_id": [1, 2], "genres": [["Comedy"], ["Action", "Drama"]], "year": [1995, 1994]})
    emb.shape  # (2, items.output_dim), float32

Rows are parsed by recframe's own feature code (the features of the tower's
``pipeline.config``), exactly as in training and evaluation, and fed to the exported
``torch.export`` program; no model class is rebuilt.

Every file of the directory is untrusted until checked: tower.json's structure is validated,
every path it names must stay inside the directory, every file must match the sha256 that
export recorded in tower.json's ``files``, and tower.pt2 must hold nothing that
``torch.export.load`` would unpickle or run as code (:func:`check_program_archive`). Exports
must still come from a trusted source: see docs/export.md, "What is safe to load".
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch.export.passes import move_to_device_pass

from recframe.batch import Batch
from recframe.config import ConfigError, load_pipeline_config
from recframe.device import resolve_device
from recframe.errors import RecframeError
from recframe.features import BatchParser, Feature, FeatureInputError, create_features
from recframe.protoutil import oneof_message


class TowerLoadError(RecframeError, ValueError):
    """The directory is not a loadable exported tower (or one that was modified since export)."""


# ---- trust: what is checked before anything in a tower directory is parsed -------------------
#
# docs/export.md, "What is safe to load", says what these checks do and do not guarantee.

FORMAT_VERSION = 2  # tower.json written by this recframe: v2 adds "files" (sha256 of every file)
SUPPORTED_FORMAT_VERSIONS = (2,)
UNVERIFIED_FORMAT_VERSIONS = (1,)  # no digests: read only with trust_unverified=True
SIDECAR = "tower.json"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()
_TRUST = "an export must come from a trusted source (see docs/export.md, 'What is safe to load')"


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(directory: str | os.PathLike) -> dict[str, str]:
    """{relative POSIX name: sha256} of every file under ``directory`` but ``tower.json`` (the
    ``files`` map of tower.json, computed by export once everything else is written)."""
    root = Path(directory)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() != SIDECAR}


def _describe(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _damaged(path: Path) -> str:
    return f"{path} is damaged or was not written by `recframe export`: export the tower again"


def read_sidecar(tower_dir: str | os.PathLike, trust_unverified: bool = False) -> dict:
    """``tower.json`` of ``tower_dir``, its structure checked: every key the loader reads is
    there with the expected type. Raises TowerLoadError naming the file, the key and what was
    expected. Version 1 (no ``files`` digests) is read only with ``trust_unverified``."""
    sidecar = Path(tower_dir) / SIDECAR
    if not sidecar.is_file():
        raise TowerLoadError(f"{str(Path(tower_dir))!r} is not an exported tower: no tower.json "
                             "(pass EXPORT_DIR/user or EXPORT_DIR/item)")
    base, resolved = Path(tower_dir).resolve(), sidecar.resolve()
    if resolved.parent != base:
        raise TowerLoadError(f"{sidecar} resolves to {resolved}, outside the tower directory {base} "
                             "(a symbolic link?): refused")
    try:
        meta = json.loads(sidecar.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TowerLoadError(f"{sidecar}: not valid JSON ({e}); {_damaged(sidecar)}") from None
    except OSError as e:
        raise TowerLoadError(f"{sidecar}: cannot be read ({e})") from None

    def get(obj: Any, key: str, label: str, ok, expected: str, default: Any = _MISSING) -> Any:
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            if default is not _MISSING:
                return default
            raise TowerLoadError(f"{sidecar}: missing key '{label}' (expected {expected}); {_damaged(sidecar)}")
        if not ok(value):
            raise TowerLoadError(f"{sidecar}: key '{label}': expected {expected}, got {_describe(value)}; "
                                 f"{_damaged(sidecar)}")
        return value

    def string(v: Any) -> bool:
        return isinstance(v, str) and v != ""

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(meta, dict):
        raise TowerLoadError(f"{sidecar}: expected a JSON object, got {_describe(meta)}; {_damaged(sidecar)}")
    version = get(meta, "format_version", "format_version", integer, "an integer")
    if version in UNVERIFIED_FORMAT_VERSIONS and not trust_unverified:
        raise TowerLoadError(
            f"{sidecar}: format_version {version} has no file digests, so the files of this export cannot be "
            f"checked: export the tower again with this recframe (format_version {FORMAT_VERSION}), or, if you "
            "trust the directory, load it with load_tower(path, trust_unverified=True)")
    if version not in SUPPORTED_FORMAT_VERSIONS + UNVERIFIED_FORMAT_VERSIONS:
        raise TowerLoadError(f"{sidecar}: format_version {version!r} is not supported (this recframe reads "
                             f"{SUPPORTED_FORMAT_VERSIONS}; {UNVERIFIED_FORMAT_VERSIONS} with trust_unverified=True)")
    get(meta, "side", "side", lambda v: v in ("user", "item"), "'user' or 'item'")
    artifacts = get(meta, "artifacts", "artifacts", lambda v: isinstance(v, dict), "an object")
    get(artifacts, "torch_export", "artifacts.torch_export", string, "a file name")
    get(artifacts, "aoti_cpu", "artifacts.aoti_cpu", string, "a file name", default=None)
    get(meta, "pipeline_config", "pipeline_config", string, "a file name")
    get(meta, "input_columns", "input_columns", lambda v: isinstance(v, list) and all(map(string, v)),
        "a list of column names")
    get(meta, "id_column", "id_column", string, "a column name")
    features = get(meta, "features", "features", lambda v: isinstance(v, list) and v != [], "a non-empty list")
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise TowerLoadError(f"{sidecar}: key 'features[{i}]': expected an object, got {_describe(feature)}; "
                                 f"{_damaged(sidecar)}")
        for key in ("feature_name", "input_column", "kind"):
            get(feature, key, f"features[{i}].{key}", string, "a string")
    get(meta, "output_dim", "output_dim", lambda v: integer(v) and v > 0, "a positive integer")
    get(meta, "similarity", "similarity", lambda v: v in ("COSINE", "INNER_PRODUCT"), "'COSINE' or 'INNER_PRODUCT'")
    get(meta, "normalized", "normalized", lambda v: isinstance(v, bool), "true or false")
    get(meta, "temperature", "temperature",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a number")
    if version in SUPPORTED_FORMAT_VERSIONS:
        files = get(meta, "files", "files", lambda v: isinstance(v, dict) and v != {},
                    "an object {file name: sha256 hex digest}")
        for name, digest in files.items():
            get(files, name, f"files.{name}", lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None,
                "a sha256 hex digest (64 lowercase hex digits)")
    return meta


def confined_file(tower_dir: str | os.PathLike, name: Any, label: str) -> Path:
    """The file ``name`` (named by tower.json's ``label``) of ``tower_dir``: a relative name
    without ``..`` that resolves, symbolic links followed, to a regular file inside the
    directory. Raises TowerLoadError otherwise (or when it is missing)."""
    tower_dir = Path(tower_dir)
    sidecar = tower_dir / SIDECAR
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (not parts or name.startswith("/") or "\\" in name or os.path.isabs(name)
            or any(part in ("..", ".") for part in parts) or name != "/".join(parts)):
        raise TowerLoadError(f"{sidecar}: {label} {name!r} is not a file name inside the tower directory "
                             "(absolute paths and '..' are refused)")
    path = tower_dir / name
    try:
        base = tower_dir.resolve(strict=True)
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symbolic link loop
        raise TowerLoadError(f"{path} ({label} in {sidecar}) cannot be resolved: {e}") from None
    if resolved != base and base not in resolved.parents:
        raise TowerLoadError(f"{path} ({label} in {sidecar}) resolves to {resolved}, outside the tower directory "
                             f"{base} (a symbolic link?): refused")
    if not os.path.lexists(path):
        raise TowerLoadError(f"{path} is missing ({sidecar} names it in {label}): the export is incomplete, "
                             "export the tower again")
    try:
        mode = resolved.stat().st_mode
    except OSError as e:
        raise TowerLoadError(f"{path} ({label} in {sidecar}) cannot be read: {e}") from None
    if not stat.S_ISREG(mode):
        raise TowerLoadError(f"{path} ({label} in {sidecar}) is not a regular file: refused")
    return path


def verify_files(tower_dir: str | os.PathLike, meta: dict) -> None:
    """Check every file of tower.json's ``files`` (confined to ``tower_dir``) against its sha256.
    Raises TowerLoadError on the first missing or modified file."""
    for name, expected in meta["files"].items():
        path = confined_file(tower_dir, name, f"files.{name}")
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise TowerLoadError(f"{path} cannot be read: {e}") from None
        if actual != expected:
            raise TowerLoadError(f"{path} has been modified since export: sha256 mismatch, expected {expected}, "
                                 f"got {actual} (tower.json's files); export the tower again or restore the file")


# What torch.export.load (torch 2.13) would unpickle, load as native code or evaluate as Python,
# refused before it runs (see check_program_archive).
_PT2_RECORDS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+|data/sample_inputs/model\.pt")
_PAYLOAD_NAME = {"data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
                 "data/constants/model_constants_config.json": re.compile(r"tensor_\d+")}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_TARGET = re.compile(r"#?[A-Za-z_][A-Za-z0-9_]*([.:][A-Za-z0-9_]+)*")
_KEY = re.compile(r"[A-Za-z0-9_.]*")
_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_TOKEN = re.compile(r"\s+|'(?:[a-z]+\d+|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)'|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
                         r"|[A-Za-z_][A-Za-z0-9_]*|\*\*|//|==|!=|<=|>=|[-+*/%(),<>=~&|^]")
_SYMPY_NAMES = frozenset((
    # sympy classes and constants in srepr / str of shape expressions
    "Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan "
    "StrictGreaterThan LessThan GreaterThan And Or Not Xor Piecewise ExprCondPair ITE floor ceiling sqrt true false "
    "True False oo zoo nan "
    # torch.utils._sympy.functions (the deserializer's sympy_functions)
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv IntTrueDiv FloatTrueDiv "
    "LShift RShift IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat "
    "FloatPow PowByNatural Identity "
    # keyword arguments (assumptions, Float precision)
    "positive negative nonnegative nonpositive nonzero zero integer real finite even odd precision").split())
_GUARD_NAMES = frozenset({"L", "math", "inf"}) | _SYMPY_NAMES
_GUARD_ATTRIBUTES = frozenset({"size", "stride", "storage_offset", "dim", "numel", "isnan", "isinf", "floor",
                               "ceil", "trunc", "sqrt"})
_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Subscript, ast.Call, ast.Name,
                ast.Attribute, ast.Constant, ast.Load, ast.boolop, ast.cmpop, ast.unaryop, ast.operator)


def _unsafe_expression(text: str) -> str | None:
    """Why a sympy expression string of the program (evaluated by sympy.sympify, i.e. eval)
    is refused: None for the arithmetic / comparisons of shape symbols that export writes."""
    position = 0
    while position < len(text):
        match = _EXPR_TOKEN.match(text, position)
        if match is None:
            return f"unexpected {text[position:position + 20]!r}"
        token = match.group()
        if (token[0].isalpha() or token[0] == "_") and token not in _SYMPY_NAMES and not _SYMBOL.fullmatch(token):
            return f"unexpected name {token!r}"
        position = match.end()
    return None


def _unsafe_guard(text: str) -> str | None:
    """Why a guard of the program (Python source that ``module()`` compiles and runs) is
    refused: None for comparisons of input sizes."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        return f"not an expression ({e.msg})"
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return f"unexpected {type(node).__name__}"
        if isinstance(node, ast.Name) and node.id not in _GUARD_NAMES:
            return f"unexpected name {node.id!r}"
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRIBUTES:
            return f"unexpected attribute {node.attr!r}"
        if isinstance(node, ast.Call) and node.keywords:
            return "unexpected keyword arguments"
        if isinstance(node, ast.Constant) and not (
                isinstance(node.value, (int, float, bool, type(None)))
                or (isinstance(node.value, str) and _KEY.fullmatch(node.value))):
            return f"unexpected constant {node.value!r}"
    return None


def _check_program_json(path: Path, program: Any) -> None:
    """Refuse the strings of models/model.json that torch would turn into code: names (into
    generated Python source), sympy expressions (eval) and guards (exec)."""
    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or not _KEY.fullmatch(k):
                    raise TowerLoadError(f"{path}: unexpected key {k!r} in the program (models/model.json): refused; "
                                         + _TRUST)
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            problem = None
            if key == "name" or key.endswith(("_name", "_names")) or key == "fqn":
                if value and not _IDENTIFIER.fullmatch(value):
                    problem = "not an identifier"
            elif key == "target":
                if not _TARGET.fullmatch(value):
                    problem = "not an operator name"
            elif key == "expr_str":
                problem = _unsafe_expression(value)
            elif key == "guards_code":
                problem = _unsafe_guard(value)
            if problem:
                raise TowerLoadError(f"{path}: the program's {key} {value[:80]!r} is refused ({problem}): torch would "
                                     f"evaluate it as code when loading; {_TRUST}")

    walk(program, "")


def check_program_archive(path: str | os.PathLike) -> None:
    """Refuse a ``tower.pt2`` that ``torch.export.load`` (torch 2.13) would not load as plain
    data: not a PT2 archive (torch then tries an older zip format that unpickles), records other
    than export writes (e.g. an AOTInductor shared library, which load_pt2 would load), pickled
    weights or constants, custom / opaque objects (pickle), sample inputs that need more than
    ``torch.load(weights_only=True)`` (torch falls back to full unpickling), and program strings
    torch evaluates as code (see :func:`_check_program_json`). Uses torch's own archive reader,
    so it sees the records torch.export.load reads."""
    path = Path(path)
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_PATH, ARCHIVE_VERSION_VALUE

    refused = f"refusing to load it (loading it could run code); {_TRUST}"
    try:
        with zipfile.ZipFile(path) as archive:
            legacy = "version" in archive.namelist()  # what makes torch.export.load read the older format
        reader = PT2ArchiveReader(str(path))
        version = reader.read_string(ARCHIVE_VERSION_PATH)
        records = reader.get_file_names()
    except Exception as e:  # noqa: BLE001 - any reader failure: not an archive export wrote
        raise TowerLoadError(f"{path}: not a torch.export (PT2) archive ({type(e).__name__}: {str(e)[:200]}); "
                             f"{_damaged(path)}") from None
    if legacy or version != ARCHIVE_VERSION_VALUE:
        raise TowerLoadError(f"{path}: not a PT2 archive of this torch (archive version {version!r}, expected "
                             f"{ARCHIVE_VERSION_VALUE!r}); {refused}")
    unexpected = [r for r in records if not _PT2_RECORDS.fullmatch(r)]
    if unexpected:
        raise TowerLoadError(f"{path}: unexpected record {unexpected[0]!r} in the archive (export writes a program, "
                             f"its weights and constants only); {refused}")
    if "models/model.json" not in records:
        raise TowerLoadError(f"{path}: no program (models/model.json) in the archive; {_damaged(path)}")
    try:
        for config_name, payload_name in _PAYLOAD_NAME.items():
            if config_name not in records:
                raise TowerLoadError(f"{path}: no {config_name} in the archive; {_damaged(path)}")
            config = json.loads(reader.read_string(config_name))["config"]
            for fqn, payload in config.items():
                if payload.get("use_pickle") is not False:
                    raise TowerLoadError(f"{path}: {fqn!r} is stored as a pickled object ({config_name}), which "
                                         f"torch.export.load would unpickle; {refused}")
                if not payload_name.fullmatch(str(payload.get("path_name"))):
                    raise TowerLoadError(f"{path}: {fqn!r} is stored as {payload.get('path_name')!r} ({config_name}), "
                                         f"not as a plain tensor; {refused}")
        if "data/sample_inputs/model.pt" in records:
            try:
                torch.load(io.BytesIO(reader.read_bytes("data/sample_inputs/model.pt")), weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch.export.load would retry with full unpickling
                raise TowerLoadError(f"{path}: the sample inputs (data/sample_inputs/model.pt) are not plain tensors "
                                     f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                                     f"torch.export.load would unpickle them; {refused}") from None
        program = json.loads(reader.read_string("models/model.json"))
    except TowerLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged JSON, wrong structure
        raise TowerLoadError(f"{path}: damaged archive ({type(e).__name__}: {str(e)[:200]}); {_damaged(path)}") from None
    try:
        _check_program_json(path, program)
    except RecursionError:
        raise TowerLoadError(f"{path}: the program (models/model.json) is nested too deeply; {refused}") from None


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

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, *,
                 trust_unverified: bool = False) -> None:
        self.path = Path(path)
        self.device = resolve_device(str(device) if device is not None else "cpu")
        sidecar = self.path / SIDECAR
        # Nothing but tower.json is parsed before every file it names is confined to the
        # directory and (format_version 2) matches its sha256.
        self.meta = read_sidecar(self.path, trust_unverified)
        config_path = confined_file(self.path, self.meta["pipeline_config"], "pipeline_config")
        program_path = confined_file(self.path, self.meta["artifacts"]["torch_export"], "artifacts.torch_export")
        compiled = self.meta["artifacts"].get("aoti_cpu")
        compiled_path = confined_file(self.path, compiled, "artifacts.aoti_cpu") if compiled else None
        if self.meta["format_version"] in SUPPORTED_FORMAT_VERSIONS:  # v1 (trust_unverified): no digests
            for label, name in (("pipeline_config", self.meta["pipeline_config"]),
                                ("artifacts.torch_export", self.meta["artifacts"]["torch_export"]),
                                ("artifacts.aoti_cpu", compiled)):
                if name and name not in self.meta["files"]:
                    raise TowerLoadError(f"{sidecar}: {label} {name!r} has no sha256 in 'files': refused")
            verify_files(self.path, self.meta)
        self.side: str = self.meta["side"]
        self.input_columns: list[str] = list(self.meta["input_columns"])
        self.id_column: str = self.meta["id_column"]
        self.output_dim: int = int(self.meta["output_dim"])
        self.similarity: str = self.meta["similarity"]
        self.normalized: bool = bool(self.meta["normalized"])
        self.temperature: float = float(self.meta["temperature"])
        self.features: list[Feature] = self._build_features(config_path, sidecar)
        self.parser = BatchParser(self.features)
        if compiled_path is not None and self.device.type == "cpu":
            try:  # native code by nature: trusted because its sha256 matched (docs/export.md)
                self.program = load_compiled(compiled_path)
            except Exception as e:  # noqa: BLE001 - a damaged package fails in many ways
                raise TowerLoadError(f"{compiled_path}: cannot be loaded as an AOTInductor package "
                                     f"({type(e).__name__}: {str(e)[:300]}); {_damaged(compiled_path)}") from None
            self.runtime = "aoti"
        else:
            self.program = self._load_program(program_path)
            self.runtime = "torch.export"

    def _build_features(self, config_path: Path, sidecar: Path) -> list[Feature]:
        """The features tower.json names, built from the export's pipeline.config."""
        try:
            config = load_pipeline_config(str(config_path))
        except ConfigError as e:
            raise TowerLoadError(f"{config_path}: {e}") from None
        names = [f["feature_name"] for f in self.meta["features"]]
        configs = [fc for fc in config.feature_configs if oneof_message(fc, "feature").feature_name in names]
        for fc in configs:  # export inlines vocabularies: nothing outside the directory is read
            message = oneof_message(fc, "feature")
            if "vocab_file" in message.DESCRIPTOR.fields_by_name and message.HasField("vocab_file"):
                raise TowerLoadError(f"{config_path}: feature '{message.feature_name}' reads vocab_file "
                                     f"{message.vocab_file!r}; an exported pipeline.config has its vocabularies "
                                     "inlined (vocab_list) and reads no other file: refused")
        try:
            built = create_features(configs, str(self.path))
        except (RecframeError, ValueError, KeyError, TypeError) as e:
            raise TowerLoadError(f"{config_path}: cannot build the tower's features: {e}") from None
        missing = [n for n in names if n not in built]
        if missing:
            raise TowerLoadError(f"{config_path}: no feature_configs for {missing}")
        features = [built[n] for n in names]
        for feature, spec in zip(features, self.meta["features"]):
            if feature.kind != spec["kind"] or feature.input_name != spec["input_column"]:
                raise TowerLoadError(f"{sidecar}: feature '{feature.name}' does not match pipeline.config")
        return features

    def _load_program(self, path: Path):
        """The torch.export program of ``path`` (checked by :func:`check_program_archive` first),
        on ``self.device``, as a callable module; its inputs and output match tower.json."""
        check_program_archive(path)
        try:
            program = torch.export.load(str(path))
            num_inputs = len(program.graph_signature.user_inputs)
            outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
            value = outputs[0].meta.get("val") if len(outputs) == 1 and hasattr(outputs[0], "meta") else None
            if self.device.type != "cpu":  # the artifact holds CPU weights; the pass rewrites every device in it
                program = move_to_device_pass(program, self.device)
            module = program.module()
        except Exception as e:  # noqa: BLE001 - a damaged program fails in many ways
            raise TowerLoadError(f"{path}: cannot be loaded as a torch.export program ({type(e).__name__}: "
                                 f"{str(e)[:300]}); {_damaged(path)}") from None
        expected = sum(len(f.tensor_specs()) for f in self.features)
        if num_inputs != expected:
            raise TowerLoadError(f"{path}: the program takes {num_inputs} tensors, the features of tower.json "
                                 f"{expected}; {_damaged(path)}")
        width = value.shape[-1] if value is not None and getattr(value, "ndim", 0) == 2 else None
        if isinstance(width, int) and width != self.output_dim:
            raise TowerLoadError(f"{path}: the program returns {width}-dimensional embeddings, tower.json says "
                                 f"output_dim {self.output_dim}; {_damaged(path)}")
        return module

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
        out = self.program(*tensors)
        if out.ndim != 2 or out.shape[1] != self.output_dim or out.shape[0] != table.num_rows:
            raise TowerLoadError(f"{self.path}: the program returned embeddings of shape {tuple(out.shape)} for "
                                 f"{table.num_rows} rows, tower.json says output_dim {self.output_dim}; "
                                 f"{_damaged(self.path)}")
        return out.cpu().numpy()


def load_tower(path: str | os.PathLike, device: str | torch.device | None = None, *,
               trust_unverified: bool = False) -> Tower:
    """Load ``EXPORT_DIR/user`` or ``EXPORT_DIR/item`` written by ``recframe export``,
    to run on ``device`` (default the CPU; "cuda", "cuda:N" or "auto").

    Before anything but tower.json is parsed, every file tower.json names must lie inside the
    directory and match the sha256 recorded at export; a damaged or modified export raises
    :class:`TowerLoadError`. ``trust_unverified=True`` also reads format_version 1 exports,
    which carry no digests. Load only exports from a trusted source: see docs/export.md,
    "What is safe to load"."""
    return Tower(path, device, trust_unverified=trust_unverified)


__all__ = ["FORMAT_VERSION", "Tower", "TowerLoadError", "batch_to_tensors", "check_program_archive", "confined_file",
           "file_digests", "load_compiled", "load_tower", "read_sidecar", "sha256_file", "tensors_to_batch", "to_arrow",
           "verify_files"]
