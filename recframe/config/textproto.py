"""Protobuf text format read without its schema, into nested dicts of lists.

recframe reads its own configs with ``google.protobuf.text_format`` and its generated
classes. A config written for another schema (TorchEasyRec's, to convert it) has no
generated classes here, so :func:`parse_text_proto` reads the text format on its own: every
message becomes a :class:`TextMessage`, a dict from field name to the list of that field's
values in file order (a field written once is a list of one), and each value is a ``str``
(quoted string), ``int``, ``float``, :class:`Identifier` (a bare word: an enum value or a
boolean) or a nested :class:`TextMessage`.

Accepted: ``#`` comments, ``name: value``, ``name { ... }`` and ``name: { ... }`` (also with
``< >``), ``name: [a, b]`` lists (of scalars or messages), fields separated by whitespace,
``,`` or ``;``, single- or double-quoted strings with C escapes (``\\n``, ``\\x02``, octal
``\\002``, ``\\u00e9``) and adjacent strings concatenated, decimal / hex / octal integers,
floats (``1e-3``, ``.5``, ``2.0f``, ``inf``, ``nan``) and negative numbers.
"""

from __future__ import annotations

import re
from typing import Any, Union

from recframe.config.errors import ConfigError

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fF]?)(?![\w.]))
  | (?P<word>-?[A-Za-z_][\w.]*)
  | (?P<punct>[{}\[\]<>:,;])
""", re.VERBOSE)

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"', "?": "?"}
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_SPECIAL_FLOATS = {"inf": float("inf"), "infinity": float("inf"), "-inf": float("-inf"),
                   "-infinity": float("-inf"), "nan": float("nan"), "-nan": float("nan")}


class Identifier(str):
    """A bare word of the text format (``DEEP``, ``true``): an enum value or a boolean."""


Value = Union[str, int, float, "TextMessage"]


class TextMessage(dict):
    """One message: field name -> list of its values, in file order.

    ``line`` is the line (1-based) where the message starts and ``lines`` maps each field
    name to the lines of its values, for messages that point at the source; ``columns`` holds
    their columns (1-based) and ``names`` the (line, column) of each occurrence of a field name.
    """

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, list[int]] = {}
        self.columns: dict[str, list[int]] = {}
        self.names: dict[str, list[tuple[int, int]]] = {}

    def add(self, name: str, value: Value, line: int, column: int = 0) -> None:
        """Append a value of field ``name`` read on ``line`` (at ``column``)."""
        self.setdefault(name, []).append(value)
        self.lines.setdefault(name, []).append(line)
        self.columns.setdefault(name, []).append(column)

    def first(self, name: str, default: Any = None) -> Any:
        """The first value of ``name``, or ``default`` when the field is absent."""
        values = self.get(name)
        return values[0] if values else default

    def last(self, name: str, default: Any = None) -> Any:
        """The last value of ``name`` (what protobuf keeps for a singular field written twice)."""
        values = self.get(name)
        return values[-1] if values else default


def _unescape(body: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escape = match.group()[1:]
        if escape[0] in "xX" and len(escape) > 1:
            return chr(int(escape[1:], 16))
        if escape[0] in "uU" and len(escape) > 1:
            return chr(int(escape[1:], 16))
        if escape[0] in "01234567":
            return chr(int(escape, 8))
        return _SIMPLE_ESCAPES.get(escape, "\\" + escape)
    return _ESCAPE.sub(replace, body)


def _number(text: str) -> int | float:
    lowered = text.lower()
    if lowered.startswith(("0x", "-0x")):
        return int(text, 16)
    if re.fullmatch(r"-?0[0-7]+", text):
        return int(text, 8)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return float(text.rstrip("fF"))


class _Tokens:
    """The tokens of a text, with their line and column, and a cursor."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.items: list[tuple[str, str, int, int]] = []  # kind, text, line, column
        pos, line, line_start = 0, 1, 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise ConfigError(f"{source}:{line}:{pos - line_start + 1}: unexpected character "
                                  f"{text[pos]!r}, expected a field name, a value or one of {{ }} [ ] : , ;")
            kind = match.lastgroup or ""
            if kind != "space":
                self.items.append((kind, match.group(), line, match.start() - line_start + 1))
            newlines = match.group().count("\n")
            if newlines:
                line += newlines
                line_start = match.start() + match.group().rindex("\n") + 1
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str, int, int] | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def next(self, expected: str) -> tuple[str, str, int, int]:
        token = self.peek()
        if token is None:
            last = self.items[-1] if self.items else ("", "", 1, 1)
            raise ConfigError(f"{self.source}:{last[2]}:{last[3]}: unexpected end of the file, expected {expected}")
        self.index += 1
        return token

    def error(self, token: tuple[str, str, int, int], expected: str) -> ConfigError:
        return ConfigError(f"{self.source}:{token[2]}:{token[3]}: unexpected {token[1]!r}, expected {expected}")

    def accept(self, punct: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "punct" and token[1] == punct:
            self.index += 1
            return True
        return False


def _parse_message(tokens: _Tokens, line: int, close: str | None) -> TextMessage:
    message = TextMessage(line)
    while True:
        token = tokens.peek()
        if token is None:
            if close is not None:
                tokens.next(f"'{close}' to close the message opened on line {line}")
            return message
        if token[0] == "punct" and token[1] == close:
            tokens.index += 1
            return message
        kind, name, name_line, name_column = tokens.next("a field name")
        if kind != "word" or name.startswith("-"):
            raise tokens.error(token, "a field name" + (f" or '{close}'" if close else ""))
        message.names.setdefault(name, []).append((name_line, name_column))
        colon = tokens.accept(":")
        opener = tokens.peek()
        if opener is not None and opener[0] == "punct" and opener[1] in "{<":
            tokens.index += 1
            message.add(name, _parse_message(tokens, opener[2], "}" if opener[1] == "{" else ">"), opener[2],
                        opener[3])
        elif colon and tokens.accept("["):
            _parse_list(tokens, message, name)
        elif colon:
            value, value_line, value_column = _parse_scalar(tokens)
            message.add(name, value, value_line, value_column)
        else:
            raise tokens.error(opener or token, f"':' or '{{' after field name '{name}'")
        if not tokens.accept(","):
            tokens.accept(";")


def _parse_list(tokens: _Tokens, message: TextMessage, name: str) -> None:
    if tokens.accept("]"):
        message.setdefault(name, [])
        message.lines.setdefault(name, [])
        return
    while True:
        opener = tokens.peek()
        if opener is not None and opener[0] == "punct" and opener[1] in "{<":
            tokens.index += 1
            message.add(name, _parse_message(tokens, opener[2], "}" if opener[1] == "{" else ">"), opener[2],
                        opener[3])
        else:
            value, value_line, value_column = _parse_scalar(tokens)
            message.add(name, value, value_line, value_column)
        if tokens.accept("]"):
            return
        token = tokens.next(f"',' or ']' in the list of '{name}'")
        if not (token[0] == "punct" and token[1] == ","):
            raise tokens.error(token, f"',' or ']' in the list of '{name}'")


def _parse_scalar(tokens: _Tokens) -> tuple[Value, int, int]:
    token = tokens.next("a value")
    kind, text, line, column = token
    if kind == "string":
        parts = [_unescape(text[1:-1])]
        while (following := tokens.peek()) is not None and following[0] == "string":
            tokens.index += 1
            parts.append(_unescape(following[1][1:-1]))
        return "".join(parts), line, column
    if kind == "number":
        return _number(text), line, column
    if kind == "word":
        special = _SPECIAL_FLOATS.get(text.lower())
        if special is not None:
            return special, line, column
        if not text.startswith("-"):
            return Identifier(text), line, column
    raise tokens.error(token, "a value (a quoted string, a number or a name)")


def parse_text_proto(text: str, source: str = "<string>") -> TextMessage:
    """Parse protobuf text format without a schema.

    Args:
        text: the text.
        source: name used in error messages (normally the file path).

    Returns:
        The top-level message: field name -> list of values (see the module docstring).

    Raises:
        ConfigError: ``{source}:{line}:{column}: ...`` at the first syntax error.
    """
    tokens = _Tokens(text, source)
    return _parse_message(tokens, 1, None)


__all__ = ["Identifier", "TextMessage", "parse_text_proto"]
