"""TextFeature: DSSM word hashing of a text column (letter trigrams, words, word pairs).

The tokens of one text, in order:

1. the text is lower-cased (``lowercase``, Arrow's ``utf8_lower``) and split into words at
   every run of characters that are not letters or digits (regex ``[^\\p{L}\\p{N}]+``);
   empty words are dropped, so "Toy Story (1995)" gives ``toy``, ``story``, ``1995``;
2. ``letter_trigrams``: for each word in order, every 3-character window of ``"#" + word +
   "#"`` (characters are Unicode code points), prefixed ``"3:"`` — "cat" gives ``3:#ca``,
   ``3:cat``, ``3:at#``; a one-letter word "a" gives ``3:#a#``;
3. ``word_unigrams``: each word prefixed ``"w:"``;
4. ``word_bigrams``: each pair of adjacent words joined by a space, prefixed ``"b:"``.

The prefixes keep the kinds apart (the trigram "cat" and the word "cat" are different
tokens). Each token's bucket is ``fnv1a64(utf8 bytes) % hash_bucket_size``
(:func:`recframe.features.hash_bucket`). :func:`text_ngrams` and :func:`text_buckets` give the
tokens and buckets of one string, for serving outside recframe or for checks; the feature's
:meth:`TextFeature.parse` computes the same buckets vectorized over a whole column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recframe.batch import SPARSE, SparseIds
from recframe.config.report import join_path, one_of
from recframe.features.base import EmbeddingSpec, Feature, is_string_type, pooling_name
from recframe.features.columns import _combine, offsets_from_rows
from recframe.features.hashing import hash_bucket
from recframe.protos import feature_pb2
from recframe.registry import FEATURES

#: Word separator: any run of characters that are not letters or digits (RE2 syntax).
WORD_SEPARATOR = r"[^\p{L}\p{N}]+"
TRIGRAM_PREFIX, WORD_PREFIX, BIGRAM_PREFIX = "3:", "w:", "b:"


def _words(column: pa.Array, lowercase: bool) -> tuple[pa.Array, np.ndarray]:
    """(B,) strings -> (W,) words in order and the (W,) row of each word."""
    column = _combine(column)
    if pa.types.is_null(column.type):
        column = column.cast(pa.string())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(f"expected a string column, got {column.type}")
    if lowercase:
        column = pc.utf8_lower(column)
    split = pc.split_pattern_regex(column, pattern=WORD_SEPARATOR)
    row_of = pc.list_parent_indices(split).to_numpy(zero_copy_only=False).astype(np.int64)
    words = pc.list_flatten(split)
    keep = pc.greater(pc.utf8_length(words), 0)
    if len(words) and not pc.all(keep).as_py():
        row_of = row_of[keep.to_numpy(zero_copy_only=False).astype(bool)]
        words = words.filter(keep)
    return words, row_of


def _tokens(words: pa.Array, row_of: np.ndarray, letter_trigrams: bool, word_unigrams: bool,
            word_bigrams: bool, num_buckets: int | None) -> tuple[list, np.ndarray]:
    """Tokens (or their buckets when ``num_buckets``) of every row, kinds in the documented order.

    Returns (parts, rows): parts is a list of Arrow string arrays (tokens) or int64 arrays
    (buckets) and rows the row of each element of their concatenation; the caller
    stable-sorts by row, which puts every row's tokens in text order.
    """
    parts: list = []
    rows: list[np.ndarray] = []

    def emit(tokens: pa.Array, token_rows: np.ndarray) -> None:
        parts.append(hash_bucket(tokens, num_buckets) if num_buckets else tokens)
        rows.append(token_rows)

    if letter_trigrams and len(words):
        padded = pc.binary_join_element_wise("#", words, "#", "")
        count = pc.subtract(pc.utf8_length(padded), 2).to_numpy(zero_copy_only=False).astype(np.int64)
        first = np.zeros(len(count), dtype=np.int64)  # index of each word's first trigram
        np.cumsum(count[:-1], out=first[1:])
        total = int(count.sum())
        out = np.empty(total, dtype=np.int64) if num_buckets else np.empty(total, dtype=object)
        # One pass per character position over the words still that long: the loop runs
        # max(word length) times, never once per row or word.
        for position in range(int(count.max())):
            has = count > position
            sub = padded.filter(pa.array(has)) if not has.all() else padded
            grams = pc.binary_join_element_wise(
                TRIGRAM_PREFIX, pc.utf8_slice_codeunits(sub, position, position + 3), "")
            where = first[has] + position
            out[where] = hash_bucket(grams, num_buckets) if num_buckets else grams.to_numpy(zero_copy_only=False)
        parts.append(out if num_buckets else pa.array(out, pa.string()))
        rows.append(np.repeat(row_of, count))
    if word_unigrams and len(words):
        emit(pc.binary_join_element_wise(WORD_PREFIX, words, ""), row_of)
    if word_bigrams and len(words) > 1:
        pair = np.flatnonzero(row_of[:-1] == row_of[1:])
        if len(pair):
            first_words = words.take(pa.array(pair))
            second_words = words.take(pa.array(pair + 1))
            joined = pc.binary_join_element_wise(first_words, second_words, " ")
            emit(pc.binary_join_element_wise(BIGRAM_PREFIX, joined, ""), row_of[pair])
    return parts, (np.concatenate(rows) if rows else np.zeros(0, np.int64))


def text_ngrams(text: str | None, letter_trigrams: bool = True, word_unigrams: bool = False,
                word_bigrams: bool = False, lowercase: bool = True) -> list[str]:
    """The tokens of one text, in order (see the module docstring), e.g.
    ``text_ngrams("Cat") == ["3:#ca", "3:cat", "3:at#"]``. None or "" gives []."""
    words, row_of = _words(pa.array([text], pa.string()), lowercase)
    parts, rows = _tokens(words, row_of, letter_trigrams, word_unigrams, word_bigrams, None)
    return [t for part in parts for t in part.to_pylist()]


def text_buckets(text: str | None, hash_bucket_size: int, letter_trigrams: bool = True,
                 word_unigrams: bool = False, word_bigrams: bool = False, lowercase: bool = True) -> list[int]:
    """The buckets of :func:`text_ngrams`: ``fnv1a64(token) % hash_bucket_size`` each, in order."""
    tokens = text_ngrams(text, letter_trigrams, word_unigrams, word_bigrams, lowercase)
    return hash_bucket(pa.array(tokens, pa.string()), hash_bucket_size).tolist() if tokens else []


@FEATURES.register()
class TextFeature(Feature):
    """Free text as a bag of hashed n-grams (DSSM word hashing), pooled like an IdFeature.

    Input: (B,) string column; null or empty rows own no tokens.
    Output of :meth:`parse`: :class:`SparseIds` of each row's token buckets (N,) in token
    order (see the module docstring) with offsets (B + 1,).
    """

    kind = SPARSE
    NGRAM_KINDS = ("letter_trigrams", "word_unigrams", "word_bigrams")

    @classmethod
    def check_config(cls, message, path, ctx) -> None:
        """embedding_dim, hash_bucket_size, at least one kind of n-gram."""
        for name in ("embedding_dim", "hash_bucket_size"):
            if getattr(message, name) == 0:
                what = "got 0" if message.HasField(name) else "not set"
                ctx.add(join_path(path, name), f"{what}, expected > 0")
        if not any(getattr(message, k) for k in cls.NGRAM_KINDS):
            ctx.add(path, "no n-grams enabled (every row would be empty), expected at least one of "
                          f"{one_of(cls.NGRAM_KINDS)} true")

    def __init__(self, config: feature_pb2.TextFeature, config_dir: str = "") -> None:
        super().__init__(config)
        self.hash_bucket_size = int(config.hash_bucket_size)
        if self.hash_bucket_size <= 0:
            raise ValueError(f"feature '{config.feature_name}': hash_bucket_size must be > 0")
        self.pooling = pooling_name(config.pooling)
        self.embedding = EmbeddingSpec.from_config(config, self.hash_bucket_size)
        self.ngram_options = dict(letter_trigrams=config.letter_trigrams, word_unigrams=config.word_unigrams,
                                  word_bigrams=config.word_bigrams, lowercase=config.lowercase)

    def table_mapping(self) -> tuple:
        return ("text", *self.ngram_options.values())

    def describe(self) -> dict:
        return {"type": type(self).__name__, "mapping": "hash", "hash": "fnv1a64",
                "hash_bucket_size": self.hash_bucket_size, "pooling": self.pooling, "ngrams": dict(self.ngram_options)}

    def column_type_problem(self, t: pa.DataType) -> str | None:
        return None if is_string_type(t) or pa.types.is_null(t) else "a string (text)"

    def buckets(self, text: str | None) -> list[int]:
        """The buckets of one text (:func:`text_buckets` with this feature's settings)."""
        return text_buckets(text, self.hash_bucket_size, **self.ngram_options)

    def parse(self, column: pa.Array | pa.ChunkedArray, source: str = "") -> SparseIds:
        num_rows = len(column)
        options = self.ngram_options
        try:
            words, row_of = _words(column, options["lowercase"])
        except TypeError as e:
            raise self.error(source, str(e)) from None
        parts, rows = _tokens(words, row_of, options["letter_trigrams"], options["word_unigrams"],
                              options["word_bigrams"], self.hash_bucket_size)
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        order = np.argsort(rows, kind="stable")
        offsets = offsets_from_rows(rows[order], num_rows)
        return SparseIds(torch.from_numpy(ids[order].astype(np.int64)), torch.from_numpy(offsets))
