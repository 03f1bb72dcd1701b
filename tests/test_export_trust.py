"""Opening an exported tower treats every file of it as untrusted (recframe.serving.tower).

Export records the sha256 of every file in tower.json ("files"); load_tower checks tower.json's
structure, confines every path it names to the tower directory and checks the digests before
anything else is parsed; a damaged or modified export raises TowerLoadError naming the file.
The payload tests also rewrite tower.json's digests (whoever writes the whole directory can):
the archive check then refuses what torch.export.load would unpickle or run as code, and a
control shows that torch.export.load itself does run the same payload.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

import synthetic
from recframe.features import BatchParser
from recframe.pipeline import Pipeline
from recframe.recipes import export as export_lib
from recframe.serving import TowerLoadError, load_tower
from recframe.serving.tower import file_digests

ITEM_ROWS = {"item_id": [0, 7, 199], "category": ["c0", "c7", "zz"], "price": [1.5, 99.0, 50.0]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    config_path, paths = synthetic.write_config(tmp, model_dir=tmp / "model")
    pipeline = Pipeline.from_file(config_path)
    torch.manual_seed(0)
    model = pipeline.build_model().eval()
    export_lib.export_towers(pipeline, model, tmp / "export", compile_cpu=False)
    item = load_tower(tmp / "export" / "item")
    return dict(dir=tmp / "export", pipeline=pipeline, model=model, paths=paths, item_emb=item.embed(ITEM_ROWS))


@pytest.fixture
def tower(exported, tmp_path) -> Path:
    """A fresh copy of the item tower, to tamper with."""
    dst = tmp_path / "item"
    shutil.copytree(exported["dir"] / "item", dst)
    return dst


def read_meta(tower: Path) -> dict:
    return json.loads((tower / "tower.json").read_text())


def write_meta(tower: Path, meta: dict) -> None:
    (tower / "tower.json").write_text(json.dumps(meta, indent=2))


def resign(tower: Path) -> None:
    """Rewrite tower.json's digests to the files now there (what a writer of the whole directory can do)."""
    meta = read_meta(tower)
    meta["files"] = file_digests(tower)
    write_meta(tower, meta)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_archive(path: Path, replace: dict | None = None, add: dict | None = None) -> None:
    """Rewrite the PT2 archive ``path`` with records replaced (name -> bytes -> bytes) or added."""
    reader = PT2ArchiveReader(str(path))
    records = {name: reader.read_bytes(name) for name in reader.get_file_names()
               if not name.startswith(".data/") and name != "byteorder"}  # the writer adds these
    for name, edit in (replace or {}).items():
        records[name] = edit(records[name])
    records.update(add or {})
    tmp = path.with_name("rewritten.pt2")
    with PT2ArchiveWriter(str(tmp)) as writer:
        for name, data in records.items():
            writer.write_bytes(name, data)
    os.replace(tmp, path)


class Payload:
    """Unpickling it creates ``marker`` (builtins open): a stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def edit_program(edit):
    def apply(data: bytes) -> bytes:
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()
    return apply


def error(tower: Path, **kwargs) -> str:
    with pytest.raises(TowerLoadError) as info:
        load_tower(tower, **kwargs)
    return str(info.value)


# ---- the untampered export ---------------------------------------------------------------


def test_export_records_a_digest_of_every_file(exported):
    for side in ("user", "item"):
        tower = exported["dir"] / side
        meta = read_meta(tower)
        assert meta["format_version"] == 2 == export_lib.FORMAT_VERSION
        assert sorted(meta["files"]) == sorted(set(os.listdir(tower)) - {"tower.json"}) == ["pipeline.config",
                                                                                          "tower.pt2"]
        for name, digest in meta["files"].items():
            assert digest == sha256(tower / name)


def test_untampered_export_loads_and_embeds_as_the_model(exported):
    pipeline, model = exported["pipeline"], exported["model"]
    valid = pq.read_table(exported["paths"]["valid"])
    items = pq.read_table(exported["paths"]["items"])
    user = load_tower(exported["dir"] / "user")
    item = load_tower(exported["dir"] / "item")
    assert user.runtime == item.runtime == "torch.export"
    with torch.no_grad():
        want_user = model.user_embedding(BatchParser(pipeline.user_features)(valid)).numpy()
        want_item = model.item_embedding(BatchParser(pipeline.item_features)(items)).numpy()
    np.testing.assert_allclose(user.embed(valid), want_user, atol=1e-5, rtol=0)
    np.testing.assert_allclose(item.embed(items), want_item, atol=1e-5, rtol=0)


def test_symlink_inside_the_directory_is_accepted(exported, tower):
    os.replace(tower / "tower.pt2", tower / "program.bin")
    os.symlink("program.bin", tower / "tower.pt2")
    np.testing.assert_array_equal(load_tower(tower).embed(ITEM_ROWS), exported["item_emb"])


# ---- modified files ----------------------------------------------------------------------


def test_flipped_byte_in_the_program_is_refused(tower):
    path = tower / "tower.pt2"
    expected = sha256(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert error(tower) == (f"{path} has been modified since export: sha256 mismatch, expected {expected}, got "
                            f"{sha256(path)} (tower.json's files); export the tower again or restore the file")


def test_edited_pipeline_config_is_refused(tower):
    path = tower / "pipeline.config"
    expected = sha256(path)
    text = path.read_text()
    assert text.count("hash_bucket_size: 32") == 1
    path.write_text(text.replace("hash_bucket_size: 32", "hash_bucket_size: 64"))
    assert error(tower).startswith(f"{path} has been modified since export: sha256 mismatch, expected {expected}, "
                                   f"got {sha256(path)}")


def test_missing_file_is_refused(tower):
    (tower / "tower.pt2").unlink()
    assert error(tower) == (f"{tower / 'tower.pt2'} is missing ({tower / 'tower.json'} names it in "
                            "artifacts.torch_export): the export is incomplete, export the tower again")
    (tower / "pipeline.config").unlink()
    assert error(tower).startswith(f"{tower / 'pipeline.config'} is missing (")


def test_edited_config_reading_a_file_outside_is_refused_even_when_resigned(tower):
    path = tower / "pipeline.config"
    path.write_text(path.read_text().replace("hash_bucket_size: 32", 'vocab_file: "/etc/hostname"'))
    resign(tower)
    assert error(tower) == (f"{path}: feature 'category' reads vocab_file '/etc/hostname'; an exported "
                            "pipeline.config has its vocabularies inlined (vocab_list) and reads no other file: "
                            "refused")


# ---- pickle and code payloads ------------------------------------------------------------


def test_pickle_payload_in_the_program_never_runs(tower, tmp_path):
    marker = tmp_path / "pwned"
    path = tower / "tower.pt2"
    expected = sha256(path)
    rewrite_archive(path, replace={"data/sample_inputs/model.pt": lambda _: pickled(Payload(marker))})
    assert error(tower).startswith(f"{path} has been modified since export: sha256 mismatch, expected {expected}")
    resign(tower)  # tower.json rewritten too: the archive check refuses it
    message = error(tower)
    assert message.startswith(f"{path}: the sample inputs (data/sample_inputs/model.pt) are not plain tensors "
                              "(UnpicklingError: Weights only load failed.")
    assert message.endswith("torch.export.load would unpickle them; refusing to load it (loading it could run code); "
                            "an export must come from a trusted source (see docs/export.md, 'What is safe to load')")
    assert not marker.exists()
    # The control: torch.export.load itself runs the payload (torch 2.13 retries with weights_only=False).
    with pytest.raises(Exception):
        torch.export.load(str(path))
    assert marker.exists()


def test_program_replaced_by_a_pickle_is_refused(tower, tmp_path):
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), tower / "tower.pt2")
    resign(tower)
    assert error(tower).startswith(f"{tower / 'tower.pt2'}: not a torch.export (PT2) archive (RuntimeError: ")
    assert not marker.exists()


def _pickled_weight(marker: Path):
    def config(data: bytes) -> bytes:
        weights = json.loads(data)
        weights["config"]["tower.embedding_group.tables.item_emb.weight"]["use_pickle"] = True
        return json.dumps(weights).encode()
    return {"data/weights/model_weights_config.json": config, "data/weights/weight_0": lambda _: pickled(Payload(marker))}


def _expression(marker: Path):
    def edit(program):
        text = json.dumps(program).replace(
            "Symbol('s21', positive=True, integer=True)",
            f"Symbol('s21', positive=True, integer=True) + 0*len(str(open('{marker}', 'w')))", 1)
        program.clear()
        program.update(json.loads(text))
    return {"models/model.json": edit_program(edit)}


def _guard(marker: Path):
    def edit(program):
        program["guards_code"][0] = f"len(str(open('{marker}', 'w'))) > 0"
    return {"models/model.json": edit_program(edit)}


def _input_name(marker: Path):
    def edit(program):
        text = json.dumps(program).replace('"inputs_4"', json.dumps(f"inputs_4=len(str(open('{marker}', 'w')))"))
        program.clear()
        program.update(json.loads(text))
    return {"models/model.json": edit_program(edit)}


@pytest.mark.parametrize("make, add, expected, runs_in_torch_load", [
    (_pickled_weight, None, "'tower.embedding_group.tables.item_emb.weight' is stored as a pickled object "
                            "(data/weights/model_weights_config.json), which torch.export.load would unpickle", True),
    (_expression, None, "the program's expr_str \"Symbol('s21', positive=True, integer=True) + 0*len(", True),
    (_input_name, None, "the program's name \"inputs_4=len(str(open(", True),
    (_guard, None, "the program's guards_code \"len(str(open(", False),  # runs when the module is called
    (lambda marker: {}, {"data/aotinductor/model/model.so": b"\x7fELF"},
     "unexpected record 'data/aotinductor/model/model.so' in the archive", False),
], ids=["pickled-weight", "sympy-expression", "input-name", "guard", "aoti-library"])
def test_code_paths_of_the_archive_are_refused(tower, tmp_path, make, add, expected, runs_in_torch_load):
    marker = tmp_path / "pwned"
    path = tower / "tower.pt2"
    rewrite_archive(path, replace=make(marker), add=add)
    resign(tower)
    message = error(tower)
    assert message.startswith(f"{path}: ") and expected in message
    assert "an export must come from a trusted source (see docs/export.md, 'What is safe to load')" in message
    assert not marker.exists()
    if runs_in_torch_load:  # the control: the payload is live
        try:
            torch.export.load(str(path))
        except Exception:  # noqa: BLE001 - some payloads break the program after running
            pass
        assert marker.exists()


def test_damaged_program_is_a_tower_load_error(tower):
    path = tower / "tower.pt2"
    rewrite_archive(path, replace={"data/weights/weight_0": lambda data: data[:len(data) // 2]})
    resign(tower)
    assert error(tower).startswith(f"{path}: cannot be loaded as a torch.export program (")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    resign(tower)
    assert error(tower).startswith(f"{path}: not a torch.export (PT2) archive (")


# ---- a damaged tower.json ----------------------------------------------------------------


def _set(*keys_and_value):
    *path, last, value = keys_and_value

    def edit(meta):
        target = meta
        for key in path:
            target = target[key]
        target[last] = value
    return edit


def _delete(key):
    return lambda meta: meta.pop(key)


@pytest.mark.parametrize("edit, expected", [
    (_delete("output_dim"), "missing key 'output_dim' (expected a positive integer); {sidecar} is damaged or was not "
                            "written by `recframe export`: export the tower again"),
    (_set("output_dim", "16"), "key 'output_dim': expected a positive integer, got str \"16\""),
    (_set("output_dim", True), "key 'output_dim': expected a positive integer, got bool true"),
    (_set("features", 0, "kind", 3), "key 'features[0].kind': expected a string, got int 3"),
    (_set("features", {}), "key 'features': expected a non-empty list, got dict {}"),
    (_set("artifacts", ["tower.pt2"]), "key 'artifacts': expected an object, got list [\"tower.pt2\"]"),
    (_delete("artifacts"), "missing key 'artifacts' (expected an object)"),
    (_set("similarity", "L2"), "key 'similarity': expected 'COSINE' or 'INNER_PRODUCT', got str \"L2\""),
    (_delete("files"), "missing key 'files' (expected an object {file name: sha256 hex digest})"),
    (_set("files", "tower.pt2", "abc"), "key 'files.tower.pt2': expected a sha256 hex digest (64 lowercase hex digits), "
                                     "got str \"abc\""),
    (_set("format_version", "2"), "key 'format_version': expected an integer, got str \"2\""),
    (_set("format_version", 3), "format_version 3 is not supported (this recframe reads (2,); (1,) with "
                                "trust_unverified=True)"),
], ids=["missing-key", "str-for-int", "bool-for-int", "feature-kind", "features-dict", "artifacts-list",
        "no-artifacts", "similarity", "no-files", "bad-digest", "version-str", "version-3"])
def test_damaged_tower_json_names_the_key(tower, edit, expected):
    meta = read_meta(tower)
    edit(meta)
    write_meta(tower, meta)
    sidecar = tower / "tower.json"
    assert error(tower).startswith(f"{sidecar}: " + expected.replace("{sidecar}", str(sidecar)))


def test_truncated_or_non_json_tower_json(tower):
    sidecar = tower / "tower.json"
    text = sidecar.read_text()
    sidecar.write_text(text[:len(text) // 2])
    assert re.fullmatch(re.escape(f"{sidecar}: not valid JSON (") + r"Expecting .* \(char \d+\)\)" + re.escape(
        f"; {sidecar} is damaged or was not written by `recframe export`: export the tower again"), error(tower))
    sidecar.write_bytes(b"\xff\xfe\x00")
    assert error(tower).startswith(f"{sidecar}: not valid JSON ('utf-8' codec can't decode")
    sidecar.write_text("[1, 2]")
    assert error(tower).startswith(f"{sidecar}: expected a JSON object, got list [1, 2]")


def test_output_dim_must_match_the_program(tower):
    meta = read_meta(tower)
    meta["output_dim"] = 8  # tower.json is not in its own digests
    write_meta(tower, meta)
    assert error(tower).startswith(f"{tower / 'tower.pt2'}: the program returns 16-dimensional embeddings, "
                                   "tower.json says output_dim 8")


# ---- paths outside the directory ---------------------------------------------------------


@pytest.mark.parametrize("key, name", [
    ("artifacts.torch_export", "../x"),
    ("artifacts.torch_export", "/etc/passwd"),
    ("artifacts.torch_export", "sub/../../tower.pt2"),
    ("pipeline_config", "../user/pipeline.config"),
    ("files", "../user/tower.pt2"),
    ("files", "/etc/hostname"),
])
def test_paths_outside_the_directory_are_refused(tower, key, name):
    meta = read_meta(tower)
    if key == "files":
        meta["files"][name] = "0" * 64
        label = f"files.{name}"
    elif key == "pipeline_config":
        meta["pipeline_config"] = name
        label = key
    else:
        meta["artifacts"]["torch_export"] = name
        label = key
    write_meta(tower, meta)
    assert error(tower) == (f"{tower / 'tower.json'}: {label} {name!r} is not a file name inside the tower directory "
                            "(absolute paths and '..' are refused)")


def test_symlink_escaping_the_directory_is_refused(tower, tmp_path):
    outside = tmp_path / "outside.config"
    os.replace(tower / "pipeline.config", outside)
    os.symlink(outside, tower / "pipeline.config")  # same content, same digest: still refused
    assert error(tower) == (f"{tower / 'pipeline.config'} (pipeline_config in {tower / 'tower.json'}) resolves to "
                            f"{outside.resolve()}, outside the tower directory {tower.resolve()} (a symbolic link?): "
                            "refused")
    os.replace(outside, tower / "pipeline.config")
    os.replace(tower / "tower.json", tmp_path / "tower.json")
    os.symlink(tmp_path / "tower.json", tower / "tower.json")
    assert error(tower) == (f"{tower / 'tower.json'} resolves to {(tmp_path / 'tower.json').resolve()}, outside the "
                            f"tower directory {tower.resolve()} (a symbolic link?): refused")


# ---- format_version 1 and the compiled package -------------------------------------------


def test_format_version_1_needs_trust_unverified(exported, tower):
    meta = read_meta(tower)
    meta["format_version"] = 1
    del meta["files"]
    write_meta(tower, meta)
    assert error(tower) == (
        f"{tower / 'tower.json'}: format_version 1 has no file digests, so the files of this export cannot be "
        "checked: export the tower again with this recframe (format_version 2), or, if you trust the directory, "
        "load it with load_tower(path, trust_unverified=True)")
    np.testing.assert_array_equal(load_tower(tower, trust_unverified=True).embed(ITEM_ROWS), exported["item_emb"])
    # Still confined and still checked as an archive.
    (tower / "tower.pt2").write_bytes(b"not a zip")
    assert error(tower, trust_unverified=True).startswith(f"{tower / 'tower.pt2'}: not a torch.export (PT2) archive")


def test_compiled_package_is_digested_and_checked(exported, tmp_path, monkeypatch):
    """No real compile (tens of seconds): a stand-in package shows it is listed, checked, and
    that a package AOTInductor cannot load is a TowerLoadError naming it."""
    def fake_compile(program, path, module, features):
        path.write_bytes(b"not an AOTInductor package")
        return True

    monkeypatch.setattr(export_lib, "compile_package", fake_compile)
    export_lib.export_towers(exported["pipeline"], exported["model"], tmp_path / "export", sides=("item",))
    tower = tmp_path / "export" / "item"
    meta = read_meta(tower)
    assert meta["artifacts"] == {"torch_export": "tower.pt2", "aoti_cpu": "tower.cpu.pt2"}
    assert sorted(meta["files"]) == ["pipeline.config", "tower.cpu.pt2", "tower.pt2"]
    assert meta["files"]["tower.cpu.pt2"] == sha256(tower / "tower.cpu.pt2")
    assert error(tower).startswith(f"{tower / 'tower.cpu.pt2'}: cannot be loaded as an AOTInductor package (")
    (tower / "tower.cpu.pt2").write_bytes(b"a shared library with a payload")
    assert error(tower).startswith(f"{tower / 'tower.cpu.pt2'} has been modified since export: sha256 mismatch")
