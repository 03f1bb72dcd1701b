"""Read and write pipeline configs (protobuf text format or JSON)."""

from __future__ import annotations

import json
import os
import re

from google.protobuf import descriptor_pool, json_format, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from recframe.config.errors import ConfigError
from recframe.errors import closest_match
from recframe.files import atomic_write_text
from recframe.protos import pipeline_pb2

PipelineConfig = pipeline_pb2.PipelineConfig

#: File suffixes read as protobuf text format.
TEXT_SUFFIXES = (".config", ".txt", ".pbtxt", ".prototxt")
#: File suffixes read as JSON (``google.protobuf.json_format``).
JSON_SUFFIXES = (".json",)

_UNKNOWN_FIELD = re.compile(r'Message type "(?P<type>[\w.]+)" has no field named "(?P<name>[^"]+)"')
_UNKNOWN_ENUM_TEXT = re.compile(r'Enum type "(?P<type>[\w.]+)" has no value named (?P<name>[\w-]+)')
_UNKNOWN_ENUM_JSON = re.compile(r"Invalid enum value (?P<name>\S+) for enum type (?P<type>[\w.]+)")
_JSON_AT = re.compile(r' at "?(?P<at>[\w.\[\]]+?)"?$')
_JSON_PREFIX_ONE = re.compile(r"^Failed to parse (?P<name>\w+) field: ")
_WRONG_INT = re.compile(r"^invalid literal for int\(\) with base 10: (?P<value>.*)$")
_NOT_A_LIST = re.compile(r"^repeated field (?P<name>\w+) must be in \[\] which is (?P<value>.*)$")
_NOT_AN_OBJECT = re.compile(r"^'\w+' object (is not iterable|has no attribute 'items')$")


def _format_of(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSON_SUFFIXES:
        return "json"
    raise ConfigError(
        f"{path}: unsupported config file suffix '{suffix}', expected one of "
        + ", ".join(TEXT_SUFFIXES + JSON_SUFFIXES)
    )


def _message_type(full_name: str) -> Descriptor | None:
    try:
        return descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        return None


def _enum_type(full_name: str) -> EnumDescriptor | None:
    try:
        return descriptor_pool.Default().FindEnumTypeByName(full_name)
    except KeyError:
        return None


def _suggest(name: str, candidates: list[str]) -> str:
    match = closest_match(name, candidates)
    if match is not None:
        return f" (did you mean '{match}'?)"
    return ", expected one of " + ", ".join(candidates)


def _explain(detail: str) -> str:
    """Rewrite protobuf's parser message about unknown names into one with a suggestion."""
    found = _UNKNOWN_FIELD.search(detail)
    if found:
        desc = _message_type(found["type"])
        what = f"unknown field '{found['name']}' in {found['type'].rsplit('.', 1)[-1]}"
        if desc is None:
            return what
        return what + _suggest(found["name"], [f.name for f in desc.fields])
    found = _UNKNOWN_ENUM_TEXT.search(detail) or _UNKNOWN_ENUM_JSON.search(detail)
    if found:
        enum = _enum_type(found["type"])
        what = f"unknown value '{found['name']}' of enum {found['type'].rsplit('.', 1)[-1]}"
        if enum is None:
            return what
        return what + _suggest(found["name"], [v.name for v in enum.values])
    return detail


def _chain_path(names: list[str], root: Descriptor | None) -> str:
    """The field path of json_format's "Failed to parse <name> field: " chain below ``root``,
    when every name is a field of the message before it ("" otherwise: the chain skips the
    index of a repeated message and the member of a oneof)."""
    message, path = root, []
    for name in names:
        field = message.fields_by_name.get(name) if message is not None else None
        if field is None:
            return ""
        path.append(name)
        message = field.message_type if not field.is_repeated else None
    return ".".join(path)


def _readable(detail: str) -> str:
    """Python's wording of a JSON value of the wrong type, in the config's terms."""
    found = _WRONG_INT.search(detail)
    if found:
        return f"expected an integer, got {found['value']}"
    found = _NOT_A_LIST.search(detail)
    if found:
        return f"expected a JSON list for '{found['name']}', got {found['value']}"
    if _NOT_AN_OBJECT.search(detail):
        return "expected a JSON object"
    return _explain(detail)


def describe_json_error(err: json_format.ParseError, root: Descriptor | None = None) -> tuple[str, str]:
    """Split a json_format.ParseError into (field path below the root, readable detail).

    The path comes from the error's "at ..." clause, else (given ``root``, the descriptor of
    the message parsed) from its chain of "Failed to parse <field> field" prefixes.
    """
    detail = str(err).split("\n", 1)[0]
    names = []
    while (prefix := _JSON_PREFIX_ONE.match(detail)) is not None:
        names.append(prefix["name"])
        detail = detail[prefix.end():]
    detail = detail.rstrip(". ")
    at = _JSON_AT.search(detail)
    if at:
        field_path = at["at"].split(".", 1)[1].rstrip(".") if "." in at["at"] else ""
        detail = detail[:at.start()].rstrip(". ")
    else:
        field_path = _chain_path(names, root)
    return field_path, _readable(detail)


def _position_in_json(text: str, key: str) -> tuple[int, int] | None:
    """Line and column (1-based) of the first ``"key":`` in a JSON text, if any."""
    match = re.search(r'"' + re.escape(key) + r'"\s*:', text)
    if match is None:
        return None
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    return line, column


def _unknown_names(text: str, source: str, error: tuple[int | None, int | None, str], first: str) -> list[str]:
    """Every unknown field name and enum value of a text-format config and protobuf's error
    (``error`` = (line, column, what), written ``first``: it stops the parser), in file order;
    ``[first]`` when the text does not even parse without the schema (a syntax error)."""
    from recframe.config.textproto import Identifier, TextMessage, parse_text_proto

    try:
        tree = parse_text_proto(text, source)
    except ConfigError:
        return [first]
    found: list[tuple[int, int, str]] = []

    def walk(message: TextMessage, desc: Descriptor) -> None:
        for name, values in message.items():
            field = desc.fields_by_name.get(name)
            lines, columns = message.lines.get(name, []), message.columns.get(name, [])
            if field is None:
                what = f"unknown field '{name}' in {desc.name}" + _suggest(name, [f.name for f in desc.fields])
                found.extend((line, column, what) for line, column in message.names.get(name, []))
                continue
            for value, line, column in zip(values, lines, columns):
                if isinstance(value, TextMessage) and field.message_type is not None:
                    walk(value, field.message_type)
                elif (isinstance(value, Identifier) and field.enum_type is not None
                      and value not in field.enum_type.values_by_name):
                    what = (f"unknown value '{value}' of enum {field.enum_type.name}"
                            + _suggest(value, [v.name for v in field.enum_type.values]))
                    found.append((line, column, what))

    walk(tree, PipelineConfig.DESCRIPTOR)
    line, column, what = error
    if line is None or column is None:
        return [first]
    if not any(f[0] == line and f[2] == what for f in found):
        found.append((line, column, what))  # another kind of error (a value of the wrong type, out of range, ...)
    return [f"{source}:{line}:{column}: {what}" for line, column, what in sorted(found)]


def parse_pipeline_config(text: str, source: str = "<string>", fmt: str = "text") -> PipelineConfig:
    """Parse a pipeline config from a string.

    Args:
        text: the config, protobuf text format (``fmt="text"``) or JSON (``fmt="json"``).
        source: name used in error messages (normally the file path).
        fmt: "text" or "json".

    Raises:
        ConfigError: naming ``source``, the line:column and what was wrong.
    """
    config = PipelineConfig()
    if fmt == "text":
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as err:
            detail = re.sub(r"^\d+:\d+ : ", "", str(err))
            detail = re.sub(r"^'.*?': ", "", detail)  # protobuf quotes the whole line first
            where = f"{err.GetLine()}:{err.GetColumn()}" if err.GetLine() is not None else "?"
            first = f"{source}:{where}: {_explain(detail)}"
            problems = _unknown_names(text, source, (err.GetLine(), err.GetColumn(), _explain(detail)), first)
            if len(problems) == 1:
                raise ConfigError(first) from None
            raise ConfigError(f"{source}: cannot parse the config ({len(problems)} problems):\n  "
                              + "\n  ".join(problems), problems) from None
        return config
    if fmt != "json":
        raise ValueError(f"fmt must be 'text' or 'json', got {fmt!r}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level, got {type(obj).__name__}")
    try:
        json_format.ParseDict(obj, config)
    except json_format.ParseError as err:
        field_path, detail = describe_json_error(err, config.DESCRIPTOR)
        unknown = _UNKNOWN_FIELD.search(str(err))
        pos = _position_in_json(text, unknown["name"]) if unknown else None
        where = f":{pos[0]}:{pos[1]}" if pos else ""
        prefix = f"{field_path}: " if field_path else ""
        raise ConfigError(f"{source}{where}: {prefix}{detail}") from None
    return config


def load_pipeline_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read a pipeline config file.

    ``.config``, ``.txt``, ``.pbtxt`` and ``.prototxt`` files are protobuf text format,
    ``.json`` files are JSON (field names in snake_case or lowerCamelCase). The result is
    parsed only; call :func:`recframe.config.check_pipeline_config` to validate it.

    Raises:
        ConfigError: the file is missing, has an unknown suffix, or does not parse (the
            message names the file, the line:column and what was wrong).
    """
    path = os.fspath(path)
    fmt = _format_of(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from None
    return parse_pipeline_config(text, source=path, fmt=fmt)


def format_pipeline_config(config: PipelineConfig, fmt: str = "text") -> str:
    """Render a config as protobuf text format (``fmt="text"``) or JSON (``fmt="json"``)."""
    if fmt == "text":
        return text_format.MessageToString(config)
    if fmt == "json":
        return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=2) + "\n"
    raise ValueError(f"fmt must be 'text' or 'json', got {fmt!r}")


def save_pipeline_config(config: PipelineConfig, path: str | os.PathLike[str]) -> None:
    """Write a config atomically: to a temporary file in the same directory, then rename.

    The format follows the suffix: JSON for ``.json``, protobuf text format otherwise.
    """
    path = os.fspath(path)
    fmt = "json" if os.path.splitext(path)[1].lower() in JSON_SUFFIXES else "text"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, format_pipeline_config(config, fmt))


def resolve_config_path(path: str, source: str) -> str:
    """Resolve a path written in a config: absolute as is, relative against the config's directory.

    ``source`` is the config file path (as given to the validator); ``~`` is expanded.
    """
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(source)), path)


def read_vocab_file(path: str) -> list[str]:
    """The values of a vocabulary file: its lines without the line break; blank lines skipped.

    Value i gets bucket i + 1 (bucket 0 is out-of-vocabulary), as for ``vocab_list``.
    """
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]
