"""Generate the config reference (docs/config.md) from the comments of the .proto sources.

    python tools/config_docs.py --out docs/config.md      # or: ... > docs/config.md

A developer tool, not part of the installed package.

The schema is compiled with grpc_tools.protoc (a dev dependency) into a descriptor set
with source info, so every message, field, enum and value comes with its leading comment
exactly as protoc sees it. Messages are listed in reading order: PipelineConfig first,
then every message in the order its fields reference it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

from recframe.config.generic import REQUIRED_ONEOFS, ranges_of
from recframe.config.names import ACTIVATIONS, DEFAULT_TOP_K, WEIGHT_INITS

FDP = descriptor_pb2.FieldDescriptorProto
ROOT_MESSAGE = "recframe.protos.PipelineConfig"
#: Repository root (protos/ and docs/ live there).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROTO_DIR = REPO_ROOT / "protos"

# DescriptorProto field numbers used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM = 4, 5
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2

_SCALAR_NAMES = {
    FDP.TYPE_DOUBLE: "double", FDP.TYPE_FLOAT: "float", FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64", FDP.TYPE_INT32: "int32", FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32", FDP.TYPE_BOOL: "bool", FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes", FDP.TYPE_UINT32: "uint32", FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64", FDP.TYPE_SINT32: "sint32", FDP.TYPE_SINT64: "sint64",
}

EXAMPLE_CONFIG = '''\
# DSSM on MovieLens-100k: who watches what next. Text format: "field: value",
# "message { ... }", repeated fields repeated or as [a, b]; "#" starts a comment.
train_input_path: "data/ml-100k/train.parquet"   # files, directories or globs, comma separated
eval_input_path: "data/ml-100k/valid.parquet"    # one row per user with its target item
test_input_path: "data/ml-100k/test.parquet"     # evaluated once, with the best checkpoint
item_input_path: "data/ml-100k/items.parquet"    # the catalogue ranked by evaluation
model_dir: "out/dssm_ml100k"                     # checkpoints, logs, exports

data_config {
  batch_size: 512
  item_id_field: "movie_id"      # the positive of each row: masking, logQ, evaluation target
  movielens {                    # write the four tables above when missing or out of date
    variant: "ml-100k"
    output_dir: "data/ml-100k"
  }
}

# Features: raw columns -> ids / values. Same transformation in training and serving.
feature_configs { id_feature { feature_name: "user_id" embedding_dim: 32 hash_bucket_size: 20000 } }
feature_configs { id_feature { feature_name: "gender" embedding_dim: 4 vocab_list: ["M", "F"] } }
feature_configs {
  raw_feature {                  # bucketized: a table of len(boundaries) + 1 rows
    feature_name: "age"
    boundaries: [18, 25, 35, 45, 50, 56]
    embedding_dim: 8
  }
}
feature_configs {
  sequence_id_feature {          # the user's earlier movies, most recent last
    feature_name: "hist_movie_ids"
    sequence_length: 50
    embedding_name: "movie_id"   # share the item table with the movie_id feature
    embedding_dim: 32
    num_buckets: 1683
  }
}
feature_configs { id_feature { feature_name: "movie_id" embedding_dim: 32 num_buckets: 1683 } }
feature_configs {
  id_feature {                   # "Action|Comedy" -> two ids, pooled (SUM by default)
    feature_name: "genres"
    embedding_dim: 8
    vocab_list: ["Action", "Adventure", "Animation", "Comedy", "Drama", "Horror", "Romance"]
    separator: "|"
  }
}

model_config {
  feature_groups { group_name: "user" feature_names: ["user_id", "gender", "age"] }
  feature_groups {
    group_name: "history"
    feature_names: "hist_movie_ids"
    group_type: SEQUENCE
    sequence_encoder { pooling_encoder { pooling_type: "mean" } }
  }
  feature_groups { group_name: "item" feature_names: ["movie_id", "genres"] }
  dssm_v2 {                      # one EmbeddingGroup: "movie_id" is one table for both towers
    user_tower {
      input: ["user", "history"]
      mlp { hidden_units: [128, 64] activation: "relu" }
    }
    item_tower {
      input: "item"
      mlp { hidden_units: [128, 64] }
    }
    similarity: COSINE
    temperature: 0.05            # logits = cosine / 0.05
    logq_correction: true        # correct the popularity bias of in-batch negatives
  }
  losses { softmax_cross_entropy {} }
  metrics { in_batch_recall_at_k { top_k: 10 } }
}

train_config {
  sparse_optimizer { adam_optimizer { lr: 0.001 } }
  dense_optimizer {
    adam_optimizer { lr: 0.001 }
    exponential_decay_learning_rate { decay_steps: 1000 decay_rate: 0.9 }
  }
  num_epochs: 10
  device: "auto"
}

eval_config {
  top_k: [10, 50, 100]
  exclude_items_field: "train_movie_ids"   # the user's training items are not candidates
  best_metric: "ndcg@10"
  early_stopping { metric: "ndcg@10" patience: 3 }
}
'''

INTRO = f'''\
# Pipeline config reference

<!-- Generated by `python tools/config_docs.py --out docs/config.md` from the comments
in protos/recframe/protos/*.proto and the ranges the plugin classes declare. Do not edit by
hand: edit the .proto comments (or tools/config_docs.py) and regenerate; a test fails when
this page is stale. -->

One file describes a whole retrieval pipeline: the data, the features, the feature groups,
the two towers, the losses and metrics, the optimizers and the evaluation. Its schema is the
`PipelineConfig` protobuf message below.

- **Formats.** Protobuf text format (`.config`, `.txt`, `.pbtxt`, `.prototxt`) or JSON
  (`.json`; field names in `snake_case` or `lowerCamelCase`). Enum values are written by name.
- **Validation.** Every entry point validates the config before it starts and reports *all*
  problems at once, each naming the file, the field path and what was expected:
  `python -m recframe.validate --pipeline_config my.config [--require train,eval,item]`.
  A field the code would not honour is an error, never silently ignored. Settings that are
  valid but may not do what was meant are printed as `warning: ...` lines (exit status 0).
  Validation needs a file that parses: in text format every unknown field name and enum
  value is listed at once (`file:line:col`, with a did-you-mean), but the parser stops at the
  first other error (a syntax error, a value of the wrong type or out of range), so those come
  one at a time; a JSON file stops at its first error.
- **Overrides.** Entry points take `--edit_config_json` with a JSON object mapping dotted
  paths to values, e.g.
  `{{"train_config.num_epochs": 3, "feature_configs[feature_name=user_id].id_feature.embedding_dim": 64,
  "model_config.dssm.user_tower.mlp.hidden_units": [64, 32], "model_config.dssm.similarity": "COSINE"}}`.
  `name[i]` picks element `i` of a repeated message, `name[field=value]` the element whose
  `field` (or its set oneof member's `field`) equals `value`; a JSON list replaces a repeated
  field, a JSON object is merged into a message, `null` clears a field.
- **Names.** `MLP.activation`: {", ".join(ACTIVATIONS)} (PyTorch spellings such as `nn.ReLU`
  are accepted). `MLP.weight_init`: {", ".join(WEIGHT_INITS)}. Evaluation metric names
  (`eval_config.best_metric`, `early_stopping.metric`): `hit_rate@K`, `recall@K`, `ndcg@K`
  for each K of `eval_config.top_k` (default {list(DEFAULT_TOP_K)}) and `mrr`; with
  `exclude_items_field` and `report_raw` also each of them prefixed `raw_` (nothing excluded).
- **Paths.** A relative `vocab_file` is resolved against the directory of the config file;
  input paths and `.py` files in `plugin_modules` against the working directory.

## Annotated example

```protobuf
{EXAMPLE_CONFIG}```
'''


#: .proto files that describe no config (serving.proto: the gRPC service of `recframe serve`).
NOT_CONFIG = ("serving.proto",)


def compile_descriptor_set(proto_dir: str | os.PathLike[str] = DEFAULT_PROTO_DIR,
                           source_info: bool = True, skip: tuple[str, ...] = NOT_CONFIG
                           ) -> descriptor_pb2.FileDescriptorSet:
    """Compile every ``recframe/protos/*.proto`` under ``proto_dir`` (but those named in
    ``skip``, by default the ones that describe no config) into a FileDescriptorSet.

    Runs grpc_tools.protoc in a subprocess (it is a dev dependency); with ``source_info``
    the set carries the comments.
    """
    from grpc_tools import protoc  # dev dependency, imported only when docs are built

    proto_dir = Path(proto_dir)
    sources = sorted(str(p.relative_to(proto_dir)) for p in (proto_dir / "recframe" / "protos").glob("*.proto")
                     if p.name not in skip)
    if not sources:
        raise FileNotFoundError(f"no .proto files under {proto_dir}/recframe/protos")
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
                f"--descriptor_set_out={out}"]
        if source_info:
            args.append("--include_source_info")
        result = subprocess.run(args + sources, capture_output=True, text=True, cwd=proto_dir)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed on {proto_dir}:\n{result.stderr}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(text: str) -> str:
    """A comment as Markdown: one paragraph per blank-line-separated block, ``<``/``>`` escaped."""
    paragraphs, current = [], []
    for line in text.replace("<", "&lt;").replace(">", "&gt;").splitlines():
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return _comment(text).replace("\n\n", "<br>").replace("|", "\\|")


class _Schema:
    """Messages and enums of a descriptor set, with their comments and reading order."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str, tuple[int, ...]]] = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, str, tuple[int, ...]]] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in files.file:
            for loc in file.source_code_info.location:
                text = loc.leading_comments or loc.trailing_comments
                if text:
                    self.comments[(file.name, tuple(loc.path))] = text
            self._add_messages(file.name, file.package, file.message_type, (_FILE_MESSAGE,))
            for i, enum in enumerate(file.enum_type):
                self.enums[f"{file.package}.{enum.name}"] = (enum, file.name, (_FILE_ENUM, i))

    def _add_messages(self, file: str, scope: str, messages: Iterable[descriptor_pb2.DescriptorProto],
                      prefix: tuple[int, ...]) -> None:
        for i, message in enumerate(messages):
            name, path = f"{scope}.{message.name}", prefix + (i,)
            self.messages[name] = (message, file, path)
            self._add_messages(file, name, message.nested_type, path + (_MSG_NESTED,))
            for j, enum in enumerate(message.enum_type):
                self.enums[f"{name}.{enum.name}"] = (enum, file, path + (_MSG_ENUM, j))

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")

    def reading_order(self, root: str) -> tuple[list[str], list[str]]:
        """Messages depth-first from ``root`` in field order, enums as first referenced; then the rest."""
        messages: list[str] = []
        enums: list[str] = []

        def visit(name: str) -> None:
            if name in messages or name not in self.messages:
                return
            messages.append(name)
            for field in self.messages[name][0].field:
                target = field.type_name.lstrip(".")
                if field.type == FDP.TYPE_MESSAGE:
                    visit(target)
                elif field.type == FDP.TYPE_ENUM and target not in enums:
                    enums.append(target)

        visit(root)
        messages += [m for m in self.messages if m not in messages]
        enums += [e for e in self.enums if e not in enums]
        return messages, enums


def _short(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _link(full_name: str) -> str:
    return f"[{_short(full_name)}](#{_short(full_name).lower()})"


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        return _link(field.type_name.lstrip("."))
    return _SCALAR_NAMES[field.type]


def _label(field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto) -> str:
    if field.HasField("oneof_index"):
        return f"oneof `{message.oneof_decl[field.oneof_index].name}`"
    if field.label == FDP.LABEL_REQUIRED:
        return "**required**"
    if field.label == FDP.LABEL_REPEATED:
        return "repeated"
    if field.HasField("default_value"):
        value = f'"{field.default_value}"' if field.type == FDP.TYPE_STRING else field.default_value
        return f"default `{value}`"
    return "optional"


def _message_section(schema: _Schema, name: str) -> list[str]:
    message, file, path = schema.messages[name]
    lines = [f"### {_short(name)}", "", f"*Defined in `{file}`.*", ""]
    comment = _comment(schema.comment(file, path))
    if comment:
        lines += [comment, ""]
    required = REQUIRED_ONEOFS.get(message.name)
    for k, oneof in enumerate(message.oneof_decl):
        members = ", ".join(f"`{f.name}`" for f in message.field if f.HasField("oneof_index") and f.oneof_index == k)
        rule = "exactly one" if oneof.name == required else "at most one"
        note = _comment(schema.comment(file, path + (_MSG_ONEOF, k)))
        lines += [f"Oneof `{oneof.name}`: {rule} of {members}." + (f" {note}" if note else ""), ""]
    if not message.field:
        return lines + ["No fields.", ""]
    lines += ["| Field | Type | Label / default | Description |", "| --- | --- | --- | --- |"]
    for j, field in enumerate(message.field):
        description = _cell(schema.comment(file, path + (_MSG_FIELD, j)))
        bound = ranges_of(message.name).get(field.name)
        if bound is not None and bound.describe() not in description:
            description += f" Valid: {bound.describe()}." if description else f"Valid: {bound.describe()}."
        lines.append(f"| `{field.name}` | {_type(field)} | {_label(field, message)} | {description} |")
    return lines + [""]


def _enum_section(schema: _Schema, name: str) -> list[str]:
    enum, file, path = schema.enums[name]
    lines = [f"### {_short(name)}", "", f"*Defined in `{file}`.*", ""]
    comment = _comment(schema.comment(file, path))
    if comment:
        lines += [comment, ""]
    lines += ["| Value | Number | Description |", "| --- | --- | --- |"]
    for j, value in enumerate(enum.value):
        lines.append(f"| `{value.name}` | {value.number} | {_cell(schema.comment(file, path + (_ENUM_VALUE, j)))} |")
    return lines + [""]


def generate_config_doc(proto_dir: str | os.PathLike[str] = DEFAULT_PROTO_DIR) -> str:
    """Return the Markdown text of docs/config.md for the .proto files under ``proto_dir``."""
    schema = _Schema(compile_descriptor_set(proto_dir))
    messages, enums = schema.reading_order(ROOT_MESSAGE)
    lines = [INTRO, "## Messages", ""]
    for name in messages:
        lines += _message_section(schema, name)
    lines += ["## Enums", ""]
    for name in enums:
        lines += _enum_section(schema, name)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the config reference to ``--out`` (atomically) or to stdout."""
    parser = argparse.ArgumentParser(prog="python tools/config_docs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output file (default: stdout)")
    parser.add_argument("--proto_dir", default=str(DEFAULT_PROTO_DIR), help="root of the .proto sources")
    args = parser.parse_args(argv)
    text = generate_config_doc(args.proto_dir)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
