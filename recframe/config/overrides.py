"""``--edit_config_json``: change fields of a loaded config by dotted path.

In the style of TorchEasyRec: a JSON object mapping paths to values, e.g.::

    {"train_config.num_epochs": 3,
     "feature_configs[0].id_feature.embedding_dim": 32,
     "feature_configs[feature_name=user_id].id_feature.hash_bucket_size": 100000,
     "model_config.dssm.user_tower.mlp.hidden_units": [64, 32],
     "model_config.dssm.similarity": "COSINE",
     "data_config.negative_sampler": null}

Paths: field names joined by ".", ``name[i]`` picks element i of a repeated message
(negative i counts from the end), ``name[key=value]`` picks the one element whose field
``key`` (directly, or inside the element's set oneof member, e.g. the id_feature of a
FeatureConfig) equals ``value``. Values: scalars (enums by name or number, numbers also
as strings), a JSON list for a repeated field (replaces it), a JSON object for a message
(merged into it; naming another member of a oneof switches the oneof), ``null`` to clear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from recframe.config.errors import ConfigError
from recframe.errors import closest_match
from recframe.config.loader import JSON_SUFFIXES, TEXT_SUFFIXES, describe_json_error
from recframe.protos import pipeline_pb2

_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<sel>[^\]]*)\])?$")
_INT_TYPES = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_UNSIGNED_TYPES = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                   FieldDescriptor.TYPE_FIXED64}
#: The command-line option the edits come from (named in every message about them).
EDITS = "--edit_config_json"


class _EditError(Exception):
    """One failed path segment: ``segment`` and what was wrong."""

    def __init__(self, segment: str, what: str) -> None:
        super().__init__(what)
        self.segment = segment
        self.what = what


@dataclass(frozen=True)
class _Segment:
    text: str
    name: str
    index: int | None = None
    key: str | None = None
    value: str | None = None

    @property
    def has_selector(self) -> bool:
        return self.index is not None or self.key is not None


def _split(path: str) -> list[_Segment]:
    """Split ``a.b[0].c[k=v.w]`` into segments (dots inside brackets do not split)."""
    parts, depth, current = [], 0, ""
    for char in path:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    segments = []
    for text in parts:
        match = _NAME.match(text)
        if match is None:
            raise _EditError(text, "malformed path segment, expected name, name[index] or name[field=value]")
        selector = match["sel"]
        if selector is None:
            segments.append(_Segment(text, match["name"]))
        elif "=" in selector:
            key, value = selector.split("=", 1)
            segments.append(_Segment(text, match["name"], key=key.strip(), value=value.strip().strip("'\"")))
        elif re.fullmatch(r"\s*-?\d+\s*", selector):
            segments.append(_Segment(text, match["name"], index=int(selector)))
        else:
            raise _EditError(text, f"bad selector '[{selector}]', expected [index] or [field=value]")
    return segments


def _field(message: Message, seg: _Segment) -> FieldDescriptor:
    desc = message.DESCRIPTOR
    field = desc.fields_by_name.get(seg.name)
    if field is None:
        match = closest_match(seg.name, list(desc.fields_by_name))
        hint = f" (did you mean '{match}'?)" if match else f", expected one of {', '.join(desc.fields_by_name)}"
        raise _EditError(seg.text, f"{desc.name} has no field '{seg.name}'{hint}")
    if seg.has_selector and not field.is_repeated:
        raise _EditError(seg.text, f"'{seg.name}' is not a repeated field, expected no [...] after it")
    return field


def _selector_value(element: Message, key: str) -> tuple[bool, str]:
    """(has the field, its value as a string) for the selector key of one element."""
    if key in element.DESCRIPTOR.fields_by_name:
        return True, str(getattr(element, key))
    for oneof in element.DESCRIPTOR.oneofs:
        which = element.WhichOneof(oneof.name)
        if which is None:
            continue
        member = getattr(element, which)
        if isinstance(member, Message) and key in member.DESCRIPTOR.fields_by_name:
            return True, str(getattr(member, key))
    return False, ""


def _element_index(container: Any, seg: _Segment) -> int:
    """Index in a repeated field picked by ``[i]`` or ``[key=value]``."""
    size = len(container)
    if seg.index is not None:
        if not -size <= seg.index < size:
            raise _EditError(seg.text, f"index {seg.index} out of range, '{seg.name}' has {size} element(s)")
        return seg.index % size
    found, values = [], []
    for i, element in enumerate(container):
        if not isinstance(element, Message):
            raise _EditError(seg.text, f"'{seg.name}' holds scalars, expected [index] rather than [field=value]")
        has, value = _selector_value(element, seg.key or "")
        if has:
            values.append(value)
            if value == seg.value:
                found.append(i)
    if not values and size:
        raise _EditError(seg.text, f"the elements of '{seg.name}' have no field '{seg.key}'")
    if len(found) > 1:
        raise _EditError(seg.text, f"{len(found)} elements of '{seg.name}' have {seg.key}={seg.value}, expected one")
    if not found:
        match = closest_match(seg.value or "", values)
        hint = f" (did you mean '{match}'?)" if match else (f", expected one of {', '.join(values)}" if values else "")
        raise _EditError(seg.text, f"no element of '{seg.name}' has {seg.key}={seg.value}{hint}")
    return found[0]


def _scalar(field: FieldDescriptor, value: Any, seg: _Segment) -> Any:
    """Convert a JSON value to what the scalar field takes, or raise _EditError."""
    kind = field.type
    try:
        if kind == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            if isinstance(value, str) and value in enum.values_by_name:
                return enum.values_by_name[value].number
            if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
                return value
            names = list(enum.values_by_name)
            match = closest_match(str(value), names) if isinstance(value, str) else None
            hint = f" (did you mean '{match}'?)" if match else f", expected one of {', '.join(names)}"
            raise _EditError(seg.text, f"{json.dumps(value)} is not a value of enum {enum.name}{hint}")
        if kind == FieldDescriptor.TYPE_BOOL:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif kind in _INT_TYPES:
            number = None
            if isinstance(value, int) and not isinstance(value, bool):
                number = value
            elif isinstance(value, float) and value.is_integer():
                number = int(value)
            elif isinstance(value, str):
                number = int(value.strip())
            if number is not None and number < 0 and kind in _UNSIGNED_TYPES:
                raise _EditError(seg.text, f"{json.dumps(value)} does not fit '{seg.name}', expected an integer >= 0")
            if number is not None:
                return number
        elif kind in _FLOAT_TYPES:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
        elif kind == FieldDescriptor.TYPE_STRING:
            if isinstance(value, str):
                return value
        elif kind == FieldDescriptor.TYPE_BYTES:
            if isinstance(value, str):
                return value.encode()
    except ValueError:
        pass
    type_name = {FieldDescriptor.TYPE_BOOL: "a boolean", FieldDescriptor.TYPE_STRING: "a string"}.get(
        kind, "an integer" if kind in _INT_TYPES else "a number")
    raise _EditError(seg.text, f"{json.dumps(value)} does not fit '{seg.name}', expected {type_name}")


def _merge_object(value: Any, target: Message, seg: _Segment) -> None:
    if not isinstance(value, dict):
        raise _EditError(seg.text, f"'{seg.name}' is a {target.DESCRIPTOR.name} message, expected a JSON object")
    target.SetInParent()
    try:
        json_format.ParseDict(value, target)
    except json_format.ParseError as err:
        where, detail = describe_json_error(err, target.DESCRIPTOR)
        raise _EditError(seg.text, f"{where + ': ' if where else ''}{detail}") from None


def _set_scalar(message: Message, field: FieldDescriptor, value: Any, seg: _Segment, index: int | None = None) -> None:
    converted = _scalar(field, value, seg)
    try:
        if index is None:
            setattr(message, field.name, converted)
        else:
            getattr(message, field.name)[index] = converted
    except (ValueError, TypeError) as err:
        raise _EditError(seg.text, f"{json.dumps(value)} does not fit '{seg.name}': {err}") from None


def _assign(message: Message, field: FieldDescriptor, seg: _Segment, value: Any) -> None:
    """Set the field named by the last segment."""
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if not field.is_repeated:
        if value is None:
            message.ClearField(field.name)
        elif is_message:
            _merge_object(value, getattr(message, field.name), seg)
        else:
            _set_scalar(message, field, value, seg)
        return
    container = getattr(message, field.name)
    if seg.has_selector:
        index = _element_index(container, seg)
        if value is None:
            raise _EditError(seg.text, "null cannot remove one element, expected a value")
        if is_message:
            _merge_object(value, container[index], seg)
        else:
            _set_scalar(message, field, value, seg, index)
        return
    if value is None:
        message.ClearField(field.name)
        return
    if not isinstance(value, list):
        raise _EditError(seg.text, f"'{seg.name}' is a repeated field, expected a JSON list "
                                   "(or [i] to set one element)")
    if is_message:
        scratch = type(message)()
        for item in value:
            _merge_object(item, getattr(scratch, field.name).add(), seg)
        message.ClearField(field.name)  # detaches `container`: fetch the field anew
        getattr(message, field.name).extend(getattr(scratch, field.name))
    else:
        converted = [_scalar(field, item, seg) for item in value]
        message.ClearField(field.name)
        try:
            getattr(message, field.name).extend(converted)
        except (ValueError, TypeError) as err:
            raise _EditError(seg.text, f"{json.dumps(value)} does not fit '{seg.name}': {err}") from None


def _descend(message: Message, field: FieldDescriptor, seg: _Segment) -> Message:
    """The sub-message named by an inner segment (created when unset)."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        raise _EditError(seg.text, f"'{seg.name}' is a scalar field, it has no sub-fields")
    if field.is_repeated:
        if not seg.has_selector:
            raise _EditError(seg.text, f"'{seg.name}' is a repeated field, expected [index] or [field=value] after it")
        container = getattr(message, field.name)
        return container[_element_index(container, seg)]
    oneof = field.containing_oneof
    if oneof is not None:
        current = message.WhichOneof(oneof.name)
        if current not in (None, field.name):
            raise _EditError(seg.text, f"'{seg.name}' is not set: oneof '{oneof.name}' holds '{current}'; "
                                       f"expected a path through '{current}', or a JSON object for '{seg.name}' "
                                       "itself to switch the oneof")
    return getattr(message, field.name)


def _apply_one(config: Message, path: str, value: Any) -> None:
    segments = _split(path)
    message = config
    for seg in segments[:-1]:
        message = _descend(message, _field(message, seg), seg)
    last = segments[-1]
    _assign(message, _field(message, last), last, value)


def edits_source(source: str) -> str:
    """How messages name the edits: ``source`` itself, or ``"<source> (--edit_config_json)"``
    when ``source`` names a config file rather than the edits."""
    if EDITS in source:
        return source
    if source.lower().endswith(TEXT_SUFFIXES + JSON_SUFFIXES) or source.startswith("<"):
        return f"{source} ({EDITS})"
    return source


def apply_edit_config_json(config: pipeline_pb2.PipelineConfig, edit: str | Mapping[str, Any],
                           source: str = EDITS) -> pipeline_pb2.PipelineConfig:
    """Apply ``{dotted path: value}`` edits to ``config`` in place and return it.

    ``edit`` is a JSON object (as text or a dict); see the module docstring for the path
    and value syntax. Every edit is tried; if any fails, ``config`` is left unchanged.

    ``source`` names the edits in messages. Given the path of the config file they apply to
    (a name with a config file suffix, as the entry points pass it), the messages name
    ``"<path> (--edit_config_json)"``: a bad edit is never blamed on the file itself.

    Raises:
        ConfigError: naming ``source``, each failing path, the segment that failed and what
            was expected (with a "did you mean" for misspelt names).
    """
    source = edits_source(source)
    if isinstance(edit, str):
        try:
            edit = json.loads(edit)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{source}: invalid JSON at {err.lineno}:{err.colno}: {err.msg}") from None
    if not isinstance(edit, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of {{\"dotted.path\": value}}, got {type(edit).__name__}")
    work = type(config)()
    work.CopyFrom(config)
    problems = []
    for path, value in edit.items():
        try:
            _apply_one(work, str(path), value)
        except _EditError as err:
            problems.append(f"{source}: edit '{path}': at '{err.segment}': {err.what}")
    if problems:
        raise ConfigError("\n".join(problems), problems)
    config.CopyFrom(work)
    return config
