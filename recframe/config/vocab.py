"""Vocabulary files: one value per line."""

from __future__ import annotations


def read_vocab_file(path: str) -> list[str]:
    """Return the values of a vocabulary file: its lines without the line break; blank lines skipped.

    Value i of the result gets bucket i + 1 (bucket 0 is out-of-vocabulary), as for
    ``vocab_list``; the table therefore has ``len(values) + 1`` rows.
    """
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]
