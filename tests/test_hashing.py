"""FNV-1a 64 hashing: published test vectors, fixed buckets, stability across processes."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from recframe.features import hashing
from recframe.features.hashing import fnv1a64, hash_bucket, item_keys

# Published FNV-1a 64-bit test vectors (Fowler/Noll/Vo reference test suite).
FNV1A64_VECTORS = {
    "": 0xCBF29CE484222325,
    "a": 0xAF63DC4C8601EC8C,
    "b": 0xAF63DF4C8601F1A5,
    "c": 0xAF63DE4C8601EFF2,
    "foo": 0xDCB27518FED9D577,
    "foob": 0xDD120E790C2512AF,
    "fooba": 0xCAC165AFA2FEF40A,
    "foobar": 0x85944171F73967E8,
}


def reference_fnv1a64(text: str) -> int:
    """Byte-at-a-time FNV-1a 64 over the UTF-8 bytes, in plain Python integers."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def test_published_fnv1a64_vectors():
    keys = list(FNV1A64_VECTORS)
    got = fnv1a64(keys)
    assert got.dtype == np.uint64
    assert [int(h) for h in got] == [FNV1A64_VECTORS[k] for k in keys]


def test_fixed_buckets():
    # bucket = hash % size, pinned as literal numbers so a change of the hash is caught.
    assert 0xAF63DC4C8601EC8C % 1000 == 996 and 0x85944171F73967E8 % 1000 == 968
    assert hash_bucket(["a", "foobar", ""], 1000).tolist() == [996, 968, 0xCBF29CE484222325 % 1000]
    assert hash_bucket(["a", "foobar"], 7).tolist() == [0xAF63DC4C8601EC8C % 7, 0x85944171F73967E8 % 7]
    assert hash_bucket(["a"], 1000).dtype == np.int64


def test_integers_hash_like_their_decimal_string():
    as_text = hash_bucket(["5", "-17", "1234567890123"], 10007)
    for typ in (pa.int64(), pa.int32()):
        assert hash_bucket(pa.array([5, -17, 1234567890123 if typ == pa.int64() else 0], typ), 10007)[:2].tolist() == \
            as_text[:2].tolist()
    assert hash_bucket([5, -17, 1234567890123], 10007).tolist() == as_text.tolist()
    assert hash_bucket(pa.array([5], pa.uint8()), 10007)[0] == as_text[0]
    assert int(fnv1a64([5])[0]) == reference_fnv1a64("5")


def test_non_ascii_utf8_strings_hash_their_utf8_bytes():
    texts = ["héllo", "日本語", "😀", "Ωmega|x", "naïve café"]
    got = fnv1a64(texts)
    assert [int(h) for h in got] == [reference_fnv1a64(t) for t in texts]
    # "é" precomposed (2 bytes) and decomposed (e + combining accent, 3 bytes) differ: no normalization.
    assert fnv1a64(["\u00e9"])[0] != fnv1a64(["e\u0301"])[0]


def test_vectorized_matches_reference_on_mixed_lengths():
    rng = np.random.default_rng(0)
    alphabet = list("abcxyz019|-_ é日")
    texts = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(0, 30, size=200)]
    assert [int(h) for h in fnv1a64(texts)] == [reference_fnv1a64(t) for t in texts]


def test_array_layouts_hash_identically():
    texts = ["foo", "foobar", "", "a", "日本"]
    expected = [reference_fnv1a64(t) for t in texts]
    plain = pa.array(texts)
    layouts = [
        pa.array(texts, pa.large_string()),
        pa.chunked_array([texts[:2], texts[2:]]),
        pa.array(["x", "y", *texts]).slice(2),  # non-zero offset
        plain.dictionary_encode(),
        pa.array([t.encode() for t in texts], pa.binary()),
    ]
    for layout in layouts:
        assert [int(h) for h in fnv1a64(layout)] == expected, layout.type
    assert fnv1a64([]).shape == (0,)
    # an all-null column (Arrow type null, e.g. from a CSV block) hashes like empty strings
    assert fnv1a64(pa.array([None, None])).tolist() == [0xCBF29CE484222325] * 2


def test_unhashable_type_raises():
    with pytest.raises(TypeError, match="strings or integers"):
        fnv1a64(pa.array([1.5, 2.5]))


def test_bucket_is_stable_across_processes():
    # Load hashing.py on its own (not the recframe package, which imports torch) to stay fast.
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('h', {hashing.__file__!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); hash_bucket = m.hash_bucket;"
        "print(hash_bucket(['foobar', 'user_42', '日本語'], 1000003).tolist(),"
        " hash_bucket([5], 1000003).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    here = hash_bucket(["foobar", "user_42", "日本語"], 1000003).tolist()
    assert out.strip() == f"{here} {hash_bucket(['5'], 1000003).tolist()}"
    assert here[0] == 0x85944171F73967E8 % 1000003


def test_item_keys():
    # integers are their own keys, whatever the width
    assert item_keys(pa.array([3, 9, 3], pa.int32())).tolist() == [3, 9, 3]
    assert item_keys(np.array([7, 1], np.uint16)).tolist() == [7, 1]
    # strings: the FNV-1a hash reinterpreted as int64, identical in every call
    keys = item_keys(pa.array(["foobar", "a", "foobar"]))
    assert keys.dtype == np.int64
    assert keys.view(np.uint64).tolist() == [0x85944171F73967E8, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    assert item_keys(np.array(["foobar", "a"], dtype=object)).tolist() == keys[:2].tolist()
    with pytest.raises(ValueError, match="null"):
        item_keys(pa.array(["a", None]))


def test_small_inputs_hash_like_the_vectorized_path():
    """A request's few values go through a per-value path; it must give the same buckets."""
    import numpy as np
    import pyarrow as pa

    from recframe.features.hashing import SMALL_INPUT, fnv1a64

    texts = ["", "a", "zip 123", "ünïcödé", "x" * 40, "123"] * 20
    assert len(texts) > SMALL_INPUT
    vectorized = fnv1a64(pa.array(texts))
    assert np.array_equal(np.concatenate([fnv1a64(pa.array(texts[i:i + 6])) for i in range(0, len(texts), 6)]),
                          vectorized)
    numbers = list(range(-5, 100))
    assert np.array_equal(fnv1a64(pa.array(numbers[:10])), fnv1a64(pa.array(numbers))[:10])
    assert fnv1a64(pa.array(["123"]))[0] == fnv1a64(pa.array([123]))[0]
