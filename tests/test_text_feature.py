"""TextFeature: DSSM word hashing, fixed tokens and buckets, serving parity."""

import pyarrow as pa
import pytest

from conftest import feature
from recframe.features import FeatureInputError, SPARSE, TextFeature, hash_bucket, text_buckets, text_ngrams

ALL_KINDS = dict(letter_trigrams=True, word_unigrams=True, word_bigrams=True)


def test_ngrams_of_a_fixed_string_are_fixed_literals():
    assert text_ngrams("Cat") == ["3:#ca", "3:cat", "3:at#"]
    assert text_ngrams("Toy Story (1995)", **ALL_KINDS) == [
        "3:#to", "3:toy", "3:oy#", "3:#st", "3:sto", "3:tor", "3:ory", "3:ry#", "3:#19", "3:199", "3:995", "3:95#",
        "w:toy", "w:story", "w:1995", "b:toy story", "b:story 1995",
    ]
    assert text_ngrams("A  b", letter_trigrams=False, word_unigrams=True) == ["w:a", "w:b"]
    assert text_ngrams("Ab", lowercase=False, letter_trigrams=False, word_unigrams=True) == ["w:Ab"]
    assert text_ngrams("Él") == ["3:#él", "3:él#"]  # code points, not bytes
    assert text_ngrams(None) == [] and text_ngrams("") == [] and text_ngrams("(!)") == []


def test_buckets_of_a_fixed_string_are_fixed_literals():
    assert text_buckets("Toy Story (1995)", 1000, **ALL_KINDS) == [
        520, 952, 653, 182, 320, 897, 900, 66, 147, 341, 969, 635, 4, 209, 228, 90, 694]
    tokens = text_ngrams("Toy Story (1995)", **ALL_KINDS)
    assert text_buckets("Toy Story (1995)", 1000, **ALL_KINDS) == hash_bucket(tokens, 1000).tolist()


def test_parse_equals_the_serving_side_buckets_row_by_row():
    f = feature('text_feature { feature_name: "title" hash_bucket_size: 1000 embedding_dim: 4 '
                'word_unigrams: true word_bigrams: true }')
    assert isinstance(f, TextFeature) and f.kind == SPARSE and f.pooling == "mean"
    assert f.embedding.num_embeddings == 1000 and f.output_dim == 4
    texts = ["Toy Story (1995)", None, "", "Cat", "!!", "a b", "GoldenEye (1995)", "Él  és"]
    ids = f.parse(pa.chunked_array([pa.array(texts[:3]), pa.array(texts[3:])]))
    offsets = ids.offsets.tolist()
    assert offsets[0] == 0 and offsets[-1] == len(ids.values)
    rows = [ids.values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))]
    assert rows == [text_buckets(t, 1000, **ALL_KINDS) for t in texts] == [f.buckets(t) for t in texts]
    assert rows[1] == rows[2] == rows[4] == []


def test_text_feature_kinds_do_not_collide_and_non_strings_are_errors():
    # the trigram "cat" and the word "cat" are different tokens
    assert text_ngrams("cat", word_unigrams=True) == ["3:#ca", "3:cat", "3:at#", "w:cat"]
    f = feature('text_feature { feature_name: "t" hash_bucket_size: 10 embedding_dim: 2 }')
    with pytest.raises(FeatureInputError, match="feature 't'.*string"):
        f.parse(pa.array([1.5, 2.5]), "part-0")
