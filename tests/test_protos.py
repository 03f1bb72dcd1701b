"""The generated *_pb2 modules and docs/config.md must match the .proto sources."""

from __future__ import annotations

import importlib
import os
import struct

import pytest
from google.protobuf import descriptor_pb2

pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) compiles the .proto sources")

from config_docs import DEFAULT_PROTO_DIR, compile_descriptor_set, generate_config_doc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "config.md")
PROTO_FILES = sorted(p for p in os.listdir(DEFAULT_PROTO_DIR / "recframe" / "protos") if p.endswith(".proto"))
STALE = "regenerate the modules: pip install -e . (runs protoc over protos/)"


def _default_json_name(name: str) -> str:
    """protoc's default json_name: underscores dropped, the letter after each capitalized."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _normalized(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what the Python generator leaves out or respells.

    It drops source info and default json_names, and writes float defaults at float32
    precision ("0.100000001" for 0.1); float defaults are compared as float32 bits.
    """
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(file)
    out.ClearField("source_code_info")
    stack = list(out.message_type)
    while stack:
        message = stack.pop()
        stack.extend(message.nested_type)
        for field in message.field:
            if field.json_name == _default_json_name(field.name):
                field.ClearField("json_name")
            if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT and field.HasField("default_value"):
                field.default_value = struct.pack("<f", float(field.default_value)).hex()
    return out


@pytest.fixture(scope="module")
def compiled() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = compile_descriptor_set(DEFAULT_PROTO_DIR, source_info=False, skip=())
    return {f.name: f for f in files.file}


def test_every_proto_has_a_generated_module(compiled):
    assert sorted(os.path.basename(name) for name in compiled) == PROTO_FILES
    for name in PROTO_FILES:
        importlib.import_module(f"recframe.protos.{name[:-len('.proto')]}_pb2")


@pytest.mark.parametrize("proto", PROTO_FILES)
def test_generated_module_matches_proto_source(compiled, proto):
    module = importlib.import_module(f"recframe.protos.{proto[:-len('.proto')]}_pb2")
    installed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    source = compiled[f"recframe/protos/{proto}"]
    assert _normalized(installed) == _normalized(source), (
        f"recframe/protos/{proto} changed since its _pb2 module was generated; {STALE}")


def test_config_doc_is_up_to_date():
    with open(DOC, encoding="utf-8") as handle:
        current = handle.read()
    assert current == generate_config_doc(DEFAULT_PROTO_DIR), (
        "docs/config.md is stale: python tools/config_docs.py --out docs/config.md")


def test_every_message_and_field_is_documented():
    files = compile_descriptor_set(DEFAULT_PROTO_DIR)
    doc = generate_config_doc(DEFAULT_PROTO_DIR)
    for file in files.file:
        for message in file.message_type:
            assert f"### {message.name}\n" in doc
            for field in message.field:
                assert f"| `{field.name}` |" in doc
        for enum in file.enum_type:
            assert f"### {enum.name}\n" in doc
