"""MovieLens preparation: the reference split on synthetic raw files (exact rows), the
manifest / idempotency, error messages, and (when the data is there) real ML-100K counts.

No MovieLens data is committed: synthetic files are written to tmp_path, and the real-data tests
read ``$RECFRAME_DATA_DIR/ml-100k`` and skip when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recframe.data.sources import download as dl
from recframe.data.sources import movielens as ml
from recframe.data.sources import movielens_files as mlf
from recframe.data.sources.movielens import prepare_movielens
from recframe.data.sources.movielens_files import MovieLensDataError, parse_title

# --------------------------------------------------------------------------------------------
# synthetic ML-100K-format files
#
# user 1: ties in timestamp, resolved by line order (test 15 and valid 14 share t=200)
# user 2: exactly 3 interactions -> train [20], valid 21, test 22
# user 3: 2 interactions -> both in train, no valid/test row
# user 4: 60 interactions written in reverse time order -> histories truncated to 50
# user 5: a repeated item (30 twice) -> seen_items lists it once
# user 9 and movie 99 appear in u.user / u.item only -> not in users / items tables

GENRES = ["unknown", "Action", "Comedy", "Drama"]


def _ratings_100k() -> list[tuple[int, int, int, int]]:
    rows = [
        (1, 10, 4, 100), (2, 20, 5, 5), (1, 11, 3, 50), (1, 12, 5, 100), (3, 40, 2, 9),
        (1, 14, 4, 200), (1, 13, 1, 100), (2, 21, 3, 6), (1, 15, 5, 200), (3, 41, 4, 9),
        (2, 22, 4, 7),
        (5, 30, 4, 1), (5, 31, 4, 2), (5, 30, 2, 3), (5, 32, 3, 4), (5, 33, 5, 5),
    ]
    rows += [(4, 100 + i, 1 + i % 5, 1000 + i) for i in reversed(range(60))]
    return rows


ITEMS_100K = {  # movie_id: (raw title, release date, genre flags, expected title, expected year)
    10: ("Toy Story (1995)", "01-Jan-1995", "0|0|1|0", "Toy Story", 1995),
    11: ("Shawshank Redemption, The (1994)", "01-Jan-1994", "0|0|0|1", "Shawshank Redemption, The", 1994),
    12: ("Land Before Time III: The Time (1995) (V)", "01-Jan-1995", "0|1|1|0",
         "Land Before Time III: The Time (V)", 1995),
    13: ("unknown", "", "1|0|0|0", "unknown", 0),
    14: ("No Year Here", "01-Jan-1996", "0|0|0|0", "No Year Here", 1996),
    15: ("Heidi Fleiss (1995) ", "09-Feb-1996", "0|0|0|1", "Heidi Fleiss", 1995),
    20: ("Misérables, Les (1995)", "01-Jan-1995", "0|0|0|1", "Misérables, Les", 1995),
    21: ("Seven (Se7en) (1995)", "01-Jan-1995", "0|1|0|1", "Seven (Se7en)", 1995),
    99: ("Never Rated (1990)", "01-Jan-1990", "0|0|0|1", "Never Rated", 1990),
}
for _m in [22, 30, 31, 32, 33, 40, 41] + list(range(100, 160)):
    ITEMS_100K[_m] = (f"Movie {_m} (1990)", "01-Jan-1990", "0|0|1|1", f"Movie {_m}", 1990)

USERS_100K = {  # user_id: (age, gender, occupation, zip)
    1: (24, "M", "technician", "85711"), 2: (53, "F", "other", "94043"),
    3: (23, "M", "writer", "32067"), 4: (33, "F", "educator", "T8H1N"),
    5: (42, "M", "none", "98101"), 9: (30, "F", "artist", "10001"),
}


def write_ml100k(d: Path, ratings=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ratings = _ratings_100k() if ratings is None else ratings
    (d / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in ratings))
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    lines = [f"{m}|{t}|{rd}||http://x|{flags}\n" for m, (t, rd, flags, _, _) in sorted(ITEMS_100K.items())]
    (d / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (d / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, (a, g, o, z) in USERS_100K.items()))
    return d


def _genres(flags: str) -> list[str]:
    return [g for g, f in zip(GENRES, flags.split("|")) if f == "1"]


def _by_user(table) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in table.to_pylist():
        out.setdefault(row["user_id"], []).append(row)
    return out


@pytest.fixture()
def no_env(monkeypatch, tmp_path):
    """No RECFRAME_DATA_DIR, an empty private cache, and no network."""
    monkeypatch.delenv("RECFRAME_DATA_DIR", raising=False)
    monkeypatch.setenv("RECFRAME_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise dl.DownloadError("offline (test)")

    monkeypatch.setattr(mlf, "download_file", offline)
    monkeypatch.setattr(mlf, "pip_download_wheel", offline)


@pytest.fixture()
def ml100k_tables(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    paths = prepare_movielens("ml-100k", str(tmp_path / "out"), str(raw))
    return {name: pq.read_table(paths[name]) for name in ml.TABLES}


# --------------------------------------------------------------------------------------------
# ML-100K format: exact rows


def test_schema(ml100k_tables):
    for name in ml.TABLES:
        assert ml100k_tables[name].schema.equals(ml.SCHEMAS[name]), name
    assert ml.EVAL_SCHEMA.names == ml.ROW_SCHEMA.names + ["seen_items"]


def test_counts_and_order(ml100k_tables):
    train, valid, test = ml100k_tables["train"], ml100k_tables["valid"], ml100k_tables["test"]
    # users 1,2,4,5 are evaluable (>= 3 interactions); user 3 only trains
    assert valid.column("user_id").to_pylist() == [1, 2, 4, 5]
    assert test.column("user_id").to_pylist() == [1, 2, 4, 5]
    assert train.num_rows == len(_ratings_100k()) - 2 * 4
    uids = train.column("user_id").to_pylist()
    assert uids == sorted(uids)


def test_stable_sort_by_timestamp_then_line(ml100k_tables):
    by = _by_user(ml100k_tables["train"])
    # raw lines of user 1: 10@100, 11@50, 12@100, 14@200, 13@100, 15@200
    assert [r["movie_id"] for r in by[1]] == [11, 10, 12, 13]
    assert [r["timestamp"] for r in by[1]] == [50, 100, 100, 100]
    assert [r["hist_movie_ids"] for r in by[1]] == [[], [11], [11, 10], [11, 10, 12]]
    assert [r["hist_timestamps"] for r in by[1]] == [[], [50], [50, 100], [50, 100, 100]]
    (v,) = _by_user(ml100k_tables["valid"])[1]
    (t,) = _by_user(ml100k_tables["test"])[1]
    assert (v["movie_id"], v["timestamp"], v["rating"]) == (14, 200, 4)
    assert (t["movie_id"], t["timestamp"], t["rating"]) == (15, 200, 5)
    assert v["hist_movie_ids"] == [11, 10, 12, 13]
    assert t["hist_movie_ids"] == [11, 10, 12, 13, 14]
    assert t["hist_timestamps"] == [50, 100, 100, 100, 200]
    assert v["seen_items"] == [10, 11, 12, 13]
    assert t["seen_items"] == [10, 11, 12, 13, 14]


def test_user_with_three_and_two_interactions(ml100k_tables):
    train = _by_user(ml100k_tables["train"])
    assert [(r["movie_id"], r["hist_movie_ids"]) for r in train[2]] == [(20, [])]
    (v,) = _by_user(ml100k_tables["valid"])[2]
    (t,) = _by_user(ml100k_tables["test"])[2]
    assert (v["movie_id"], v["hist_movie_ids"], v["seen_items"]) == (21, [20], [20])
    assert (t["movie_id"], t["hist_movie_ids"], t["seen_items"]) == (22, [20, 21], [20, 21])
    # fewer than 3 interactions: everything in train (same timestamp -> line order)
    assert [(r["movie_id"], r["hist_movie_ids"]) for r in train[3]] == [(40, []), (41, [40])]
    assert 3 not in _by_user(ml100k_tables["valid"]) and 3 not in _by_user(ml100k_tables["test"])


def test_history_truncated_to_50(ml100k_tables):
    rows = _by_user(ml100k_tables["train"])[4]
    items = [100 + i for i in range(60)]
    stamps = [1000 + i for i in range(60)]
    assert [r["movie_id"] for r in rows] == items[:58]
    for i, r in enumerate(rows):
        assert r["hist_movie_ids"] == items[max(0, i - 50):i]
        assert r["hist_timestamps"] == stamps[max(0, i - 50):i]
    assert max(len(r["hist_movie_ids"]) for r in rows) == 50
    (v,) = _by_user(ml100k_tables["valid"])[4]
    (t,) = _by_user(ml100k_tables["test"])[4]
    assert v["movie_id"] == 158 and v["hist_movie_ids"] == items[8:58]
    assert t["movie_id"] == 159 and t["hist_movie_ids"] == items[9:59]
    # seen_items are not truncated
    assert v["seen_items"] == items[:58]
    assert t["seen_items"] == items[:59]


def test_max_history_is_a_choice_and_rebuilds(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    out = tmp_path / "out"
    paths = prepare_movielens("ml-100k", str(out), str(raw))
    assert max(len(h) for h in pq.read_table(paths["train"]).column("hist_movie_ids").to_pylist()) == 50
    # another length rebuilds the set: user 4's test history is now its last 55 earlier items
    prepare_movielens("ml-100k", str(out), str(raw), max_history=55)
    assert json.loads(Path(paths["manifest"]).read_text())["max_history"] == 55
    (t,) = _by_user(pq.read_table(paths["test"]))[4]
    assert t["hist_movie_ids"] == [100 + i for i in range(4, 59)]
    assert t["hist_timestamps"] == [1000 + i for i in range(4, 59)]
    # the CLI and the config message carry it too
    from recframe.cli.main import main

    assert main(["prepare", "--movielens", "ml-100k", "--out", str(out), "--raw_dir", str(raw),
                 "--max_history", "3"]) == 0
    (t,) = _by_user(pq.read_table(paths["test"]))[4]
    assert t["hist_movie_ids"] == [156, 157, 158]
    with pytest.raises(MovieLensDataError, match="max_history: got 0, expected >= 1"):
        prepare_movielens("ml-100k", str(tmp_path / "o3"), str(raw), max_history=0)


def test_repeated_item_seen_once(ml100k_tables):
    train = _by_user(ml100k_tables["train"])[5]
    assert [r["movie_id"] for r in train] == [30, 31, 30]
    assert train[2]["hist_movie_ids"] == [30, 31]
    (v,) = _by_user(ml100k_tables["valid"])[5]
    (t,) = _by_user(ml100k_tables["test"])[5]
    assert v["hist_movie_ids"] == [30, 31, 30] and v["seen_items"] == [30, 31]
    assert t["hist_movie_ids"] == [30, 31, 30, 32] and t["seen_items"] == [30, 31, 32]


def test_features_joined(ml100k_tables):
    rows = ml100k_tables["train"].to_pylist() + ml100k_tables["valid"].to_pylist() + ml100k_tables["test"].to_pylist()
    raw = {(u, m, t): r for u, m, r, t in _ratings_100k()}
    for r in rows:
        age, gender, occ, z = USERS_100K[r["user_id"]]
        assert (r["age"], r["gender"], r["occupation"], r["zip_prefix"]) == (age, gender, occ, z[:3])
        _, _, flags, title, year = ITEMS_100K[r["movie_id"]]
        assert (r["title"], r["year"], r["genres"]) == (title, year, _genres(flags))
        assert r["rating"] == raw[(r["user_id"], r["movie_id"], r["timestamp"])]
        assert r["label"] == int(r["rating"] >= 4)
        # each history item's year and genres, aligned with the history
        assert r["hist_year"] == [ITEMS_100K[m][4] for m in r["hist_movie_ids"]]
        assert r["hist_genres"] == ["|".join(_genres(ITEMS_100K[m][2])) for m in r["hist_movie_ids"]]
    assert _by_user(ml100k_tables["train"])[4][0]["zip_prefix"] == "T8H"
    (t,) = _by_user(ml100k_tables["test"])[1]  # user 1: 11, 10, 12, 13, then valid 14, test 15
    assert t["hist_year"] == [1994, 1995, 1995, 0, 1996]
    assert t["hist_genres"] == ["Drama", "Comedy", "Action|Comedy", "unknown", ""]


def test_items_and_users_tables(ml100k_tables):
    items = ml100k_tables["items"].to_pylist()
    rated = sorted({m for _, m, _, _ in _ratings_100k()})
    assert [r["movie_id"] for r in items] == rated  # 99 is never rated
    by_id = {r["movie_id"]: r for r in items}
    assert by_id[12] == {"movie_id": 12, "genres": ["Action", "Comedy"],
                         "title": "Land Before Time III: The Time (V)", "year": 1995}
    assert by_id[13] == {"movie_id": 13, "genres": ["unknown"], "title": "unknown", "year": 0}
    assert by_id[14]["genres"] == [] and by_id[14]["year"] == 1996
    assert by_id[20]["title"] == "Misérables, Les"  # Latin-1 u.item
    users = ml100k_tables["users"].to_pylist()
    assert [u["user_id"] for u in users] == [1, 2, 3, 4, 5]  # 9 never rated
    assert users[3] == {"user_id": 4, "gender": "F", "age": 33, "occupation": "educator", "zip_prefix": "T8H"}


def test_matches_reference_implementation(ml100k_tables):
    """Every train/valid/test row against a plain-Python implementation of the protocol."""
    rows = _ratings_100k()
    seq: dict[int, list] = {}
    for line, (u, m, r, t) in enumerate(rows):
        seq.setdefault(u, []).append((t, line, m, r))
    expected = {"train": [], "valid": [], "test": []}
    for u in sorted(seq):
        s = sorted(seq[u])
        for i, (t, _, m, r) in enumerate(s):
            split = "train" if len(s) < 3 or i < len(s) - 2 else ("valid" if i == len(s) - 2 else "test")
            row = {"user_id": u, "movie_id": m, "timestamp": t, "rating": r,
                   "hist_movie_ids": [x[2] for x in s[max(0, i - 50):i]],
                   "hist_timestamps": [x[0] for x in s[max(0, i - 50):i]]}
            if split != "train":
                row["seen_items"] = sorted({x[2] for x in s[:i]})
            expected[split].append(row)
    for split, exp in expected.items():
        got = [{k: r[k] for k in exp[0]} for r in ml100k_tables[split].to_pylist()]
        assert got == exp, split


def test_parse_title():
    assert parse_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert parse_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "City of Lost Children, The (Cité des enfants perdus, La)", 1995)
    assert parse_title("X (1995) (V)") == ("X (V)", 1995)
    assert parse_title("Heidi (1995) ") == ("Heidi", 1995)
    assert parse_title("unknown", "") == ("unknown", 0)
    assert parse_title("No Year", "01-Jan-1996") == ("No Year", 1996)
    assert parse_title("(500) Days", "") == ("(500) Days", 0)


# --------------------------------------------------------------------------------------------
# ML-1M format


def write_ml1m(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ratings = [(1, 1193, 5, 978300760), (1, 661, 3, 978302109), (2, 1193, 4, 978298413),
               (1, 914, 3, 978301968), (1, 3408, 4, 978300275), (2, 661, 2, 978299000),
               (2, 914, 5, 978299000)]
    (d / "ratings.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in ratings))
    movies = ["661::James and the Giant Peach (1996)::Animation|Children's|Musical",
              "914::My Fair Lady (1964)::Musical|Romance",
              "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
              "3408::Misérables, Les (1998)::Drama",
              "5000::Unrated (2000)::Drama"]
    (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::98107-2117\n3::M::25::15::55117\n")
    return d


def test_ml1m_format(tmp_path, no_env):
    raw = write_ml1m(tmp_path / "raw" / "ml-1m")
    # raw_dir may be the files' folder or its parent holding <variant>/
    paths = prepare_movielens("ml-1m", str(tmp_path / "out"), str(tmp_path / "raw"))
    t = {name: pq.read_table(paths[name]) for name in ml.TABLES}
    for name in ml.TABLES:
        assert t[name].schema.equals(ml.SCHEMAS[name])
    train = t["train"].to_pylist()
    # user 1 by time: 3408@275, 1193@760, 914@1968, 661@2109
    assert [(r["user_id"], r["movie_id"], r["hist_movie_ids"]) for r in train] == [
        (1, 3408, []), (1, 1193, [3408]), (2, 1193, [])]
    first = train[0]
    assert (first["title"], first["year"], first["genres"]) == ("Misérables, Les", 1998, ["Drama"])
    assert (first["gender"], first["age"], first["occupation"], first["zip_prefix"]) == ("F", 1, "10", "480")
    assert first["label"] == 1
    v = t["valid"].to_pylist()
    te = t["test"].to_pylist()
    assert [(r["user_id"], r["movie_id"], r["seen_items"]) for r in v] == [(1, 914, [1193, 3408]), (2, 661, [1193])]
    # user 2: 661 and 914 share a timestamp -> line order: 661 then 914
    assert [(r["user_id"], r["movie_id"], r["hist_movie_ids"]) for r in te] == [
        (1, 661, [3408, 1193, 914]), (2, 914, [1193, 661])]
    assert te[1]["zip_prefix"] == "981" and te[1]["occupation"] == "16" and te[1]["age"] == 56
    assert te[0]["genres"] == ["Animation", "Children's", "Musical"]
    assert t["items"].column("movie_id").to_pylist() == [661, 914, 1193, 3408]
    assert t["users"].column("user_id").to_pylist() == [1, 2]
    manifest = json.loads(Path(paths["manifest"]).read_text())
    assert manifest["sources"].keys() == {"ratings.dat", "movies.dat", "users.dat"}
    assert raw.is_dir()


# --------------------------------------------------------------------------------------------
# manifest, idempotency, atomicity


def _mtimes(paths):
    return {k: os.stat(p).st_mtime_ns for k, p in paths.items()}


def test_idempotent_manifest(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    out = tmp_path / "out"
    paths = prepare_movielens("ml-100k", str(out), str(raw))
    assert set(paths) == set(ml.TABLES) | {"manifest"}
    manifest = json.loads(Path(paths["manifest"]).read_text())
    assert manifest["variant"] == "ml-100k" and manifest["protocol_version"] == ml.PROTOCOL_VERSION
    assert manifest["row_counts"] == {"train": 68, "valid": 4, "test": 4, "items": 75, "users": 5}
    assert manifest["sources"]["u.data"] == dl.file_digest(raw / "u.data", "md5")
    assert sorted(os.listdir(out)) == sorted(Path(p).name for p in paths.values())  # no temp files left

    before = _mtimes(paths)
    assert prepare_movielens("ml-100k", str(out), str(raw)) == paths
    assert _mtimes(paths) == before  # nothing rewritten

    # without any local raw files (nothing to compare checksums with) complete outputs are trusted
    assert prepare_movielens("ml-100k", str(out)) == paths
    assert _mtimes(paths) == before

    # force rebuilds
    prepare_movielens("ml-100k", str(out), str(raw), force=True)
    assert _mtimes(paths)["manifest"] != before["manifest"]


def test_rebuild_when_source_or_outputs_change(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    out = tmp_path / "out"
    paths = prepare_movielens("ml-100k", str(out), str(raw))
    # another rating for user 3 -> a new source md5 -> rebuilt (user 3 now has valid/test rows)
    write_ml100k(raw, _ratings_100k() + [(3, 10, 5, 20)])
    prepare_movielens("ml-100k", str(out), str(raw))
    assert 3 in pq.read_table(paths["test"]).column("user_id").to_pylist()
    # a missing table -> rebuilt
    os.unlink(paths["valid"])
    prepare_movielens("ml-100k", str(out), str(raw))
    assert pq.read_table(paths["valid"]).num_rows == 5
    # a manifest that disagrees with the files -> rebuilt
    m = json.loads(Path(paths["manifest"]).read_text())
    m["row_counts"]["train"] += 1
    Path(paths["manifest"]).write_text(json.dumps(m))
    prepare_movielens("ml-100k", str(out), str(raw))
    assert json.loads(Path(paths["manifest"]).read_text())["row_counts"]["train"] == 67


def test_cli(tmp_path, no_env, capsys):
    from recframe.cli.main import main

    raw = write_ml100k(tmp_path / "raw")
    assert main(["prepare", "--movielens", "ml-100k", "--out", str(tmp_path / "out"), "--raw_dir", str(raw)]) == 0
    assert "ml-100k: train 68, valid 4, test 4, items 75, users 5 rows" in capsys.readouterr().out
    assert main(["prepare", "--movielens", "ml-1m", "--out", str(tmp_path / "o2"), "--raw_dir", str(raw)]) == 2
    assert "ratings.dat" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# errors


def test_missing_ratings_in_raw_dir(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    os.unlink(raw / "u.data")
    with pytest.raises(MovieLensDataError, match=r"u\.data") as e:
        prepare_movielens("ml-100k", str(tmp_path / "out"), str(raw))
    assert str(raw / "u.data") in str(e.value)


def test_missing_ratings_everywhere(tmp_path, no_env, monkeypatch):
    data = tmp_path / "data"
    write_ml1m(data / "ml-1m")
    os.unlink(data / "ml-1m" / "ratings.dat")
    monkeypatch.setenv("RECFRAME_DATA_DIR", str(data))
    with pytest.raises(MovieLensDataError) as e:
        prepare_movielens("ml-1m", str(tmp_path / "out"))
    msg = str(e.value)
    assert str(data / "ml-1m" / "ratings.dat") in msg  # where it looked
    assert "--raw_dir" in msg and "RECFRAME_DATA_DIR" in msg and "offline (test)" in msg
    with pytest.raises(MovieLensDataError, match="downloading is disabled"):
        prepare_movielens("ml-1m", str(tmp_path / "out"), download=False)
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_missing_other_file_and_unknown_ids(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    os.unlink(raw / "u.user")
    with pytest.raises(MovieLensDataError, match="u.user"):
        prepare_movielens("ml-100k", str(tmp_path / "out"), str(raw))
    raw = write_ml100k(tmp_path / "raw2", _ratings_100k() + [(1, 12345, 3, 7)])
    with pytest.raises(MovieLensDataError, match="12345"):
        prepare_movielens("ml-100k", str(tmp_path / "out"), str(raw))
    with pytest.raises(ValueError, match="ml-20m"):
        prepare_movielens("ml-20m", str(tmp_path / "out"))


def test_malformed_ratings(tmp_path, no_env):
    raw = write_ml100k(tmp_path / "raw")
    (raw / "u.data").write_text("1\t2\tx\t4\n")
    with pytest.raises(MovieLensDataError, match="integer"):
        prepare_movielens("ml-100k", str(tmp_path / "out"), str(raw))


# --------------------------------------------------------------------------------------------
# real data (RECFRAME_DATA_DIR)


def _real_ml100k() -> Path:
    env = os.environ.get("RECFRAME_DATA_DIR")
    if not env:
        pytest.skip("RECFRAME_DATA_DIR is not set (point it at a folder holding ml-100k/u.data)")
    d = Path(env) / "ml-100k"
    if not (d / "u.data").is_file():
        pytest.skip(f"{d / 'u.data'} is absent (RECFRAME_DATA_DIR has no ml-100k)")
    return d


def test_real_ml100k_counts(tmp_path):
    d = _real_ml100k()
    paths = prepare_movielens("ml-100k", str(tmp_path / "out"), str(d))
    t = {name: pq.read_table(paths[name]) for name in ml.TABLES}
    assert t["test"].num_rows == 943 and t["valid"].num_rows == 943
    assert t["train"].num_rows == 100000 - 2 * 943
    assert t["items"].num_rows == 1682 and t["users"].num_rows == 943
    (test1,) = t["test"].filter(t["test"].column("user_id").to_numpy() == 1).to_pylist()
    (valid1,) = t["valid"].filter(t["valid"].column("user_id").to_numpy() == 1).to_pylist()
    # user 1's last two ratings share timestamp 889751736: u.data line order puts 74 before 102
    assert (test1["movie_id"], test1["timestamp"], test1["title"], test1["year"]) == (
        102, 889751736, "Aristocats, The", 1970)
    assert (valid1["movie_id"], valid1["timestamp"]) == (74, 889751736)
    assert test1["hist_movie_ids"][-1] == 74 and len(test1["hist_movie_ids"]) == 50
    assert len(test1["seen_items"]) == 271 and 102 not in test1["seen_items"]
    assert len(valid1["seen_items"]) == 270


# --------------------------------------------------------------------------------------------
# downloads (slow, need network)


@pytest.mark.slow
def test_recbole_wheel_gives_identical_split(tmp_path, monkeypatch):
    """ML-100K from the recbole wheel (PyPI) == ML-100K from the GroupLens files."""
    d = _real_ml100k()
    monkeypatch.delenv("RECFRAME_DATA_DIR", raising=False)
    monkeypatch.setenv("RECFRAME_CACHE_DIR", str(tmp_path / "cache"))

    def grouplens_unreachable(*args, **kwargs):
        raise dl.DownloadError("GroupLens unreachable (test)")

    monkeypatch.setattr(mlf, "download_file", grouplens_unreachable)
    try:
        dl.pip_download_wheel(mlf.RECBOLE_REQUIREMENT, mlf.RECBOLE_WHEEL, mlf.RECBOLE_WHEEL_SHA256,
                              mlf.cache_dir() / "wheels")
    except dl.DownloadError as e:
        pytest.skip(f"cannot fetch {mlf.RECBOLE_REQUIREMENT} from PyPI: {e}")
    from_wheel = prepare_movielens("ml-100k", str(tmp_path / "wheel"))
    assert "recbole" in json.loads(Path(from_wheel["manifest"]).read_text())["source"]
    from_files = prepare_movielens("ml-100k", str(tmp_path / "files"), str(d))
    for name in ml.TABLES:
        assert pq.read_table(from_wheel[name]).equals(pq.read_table(from_files[name])), name


@pytest.mark.slow
def test_grouplens_download(tmp_path, monkeypatch):
    monkeypatch.delenv("RECFRAME_DATA_DIR", raising=False)
    monkeypatch.setenv("RECFRAME_CACHE_DIR", str(tmp_path / "cache"))
    info = mlf.GROUPLENS["ml-100k"]
    try:
        dl.download_file(info["url"], tmp_path / "cache" / "ml-100k" / "ml-100k.zip", md5=info["md5"])
    except dl.DownloadError as e:
        pytest.skip(f"GroupLens is unreachable: {e}")
    paths = prepare_movielens("ml-100k", str(tmp_path / "out"))
    assert pq.read_metadata(paths["train"]).num_rows == 100000 - 2 * 943


# --------------------------------------------------------------------------------------------
# download plumbing, offline (file:// URLs and a synthetic zip)


def test_download_file_checks_md5(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello recframe")
    md5 = dl.file_digest(src, "md5")
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.download_file(src.as_uri(), tmp_path / "a" / "x.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "a" / "x.bin").exists() and os.listdir(tmp_path / "a") == []
    got = dl.download_file(src.as_uri(), tmp_path / "a" / "x.bin", md5=md5, progress=False)
    assert got.read_bytes() == b"hello recframe"
    with pytest.raises(dl.DownloadError, match="could not download"):
        dl.download_file((tmp_path / "missing").as_uri(), tmp_path / "b" / "y.bin", progress=False)


def test_download_and_extract_grouplens_zip(tmp_path, no_env, monkeypatch):
    import zipfile

    raw = write_ml100k(tmp_path / "raw")
    zip_src = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zip_src, "w") as zf:
        for f in raw.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    calls = []

    def fake_download(url, dest, md5=None, **kw):
        calls.append((url, md5))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(zip_src.read_bytes())
        return Path(dest)

    monkeypatch.setattr(mlf, "download_file", fake_download)
    paths = prepare_movielens("ml-100k", str(tmp_path / "out"))
    assert calls == [(mlf.GROUPLENS["ml-100k"]["url"], mlf.GROUPLENS["ml-100k"]["md5"])]
    assert pq.read_metadata(paths["train"]).num_rows == 68
    # the extracted cache is found next time: no second download, nothing rewritten
    before = _mtimes(paths)
    prepare_movielens("ml-100k", str(tmp_path / "out"))
    assert len(calls) == 1 and _mtimes(paths) == before
    assert (mlf.cache_dir() / "ml-100k" / "files" / "ml-100k" / "u.data").is_file()


def test_training_prepares_again_when_the_set_on_disk_is_out_of_date(tmp_path, no_env):
    # Existing files are not enough: a set of another history length (or an older table format)
    # under the config's output_dir is rebuilt before training reads it.
    from recframe.config import parse_pipeline_config
    from recframe.pipeline import Pipeline

    raw = write_ml100k(tmp_path / "raw")
    out = tmp_path / "out"
    paths = prepare_movielens("ml-100k", str(out), str(raw), max_history=3)
    text = (Path(__file__).resolve().parents[1] / "examples" / "dssm_movielens.config").read_text()
    text = text.replace('"data/ml-100k', f'"{out}').replace('output_dir: "data/ml-100k"', f'output_dir: "{out}"')
    text = text.replace('variant: "ml-100k"', f'variant: "ml-100k" raw_dir: "{raw}"')
    pipeline = Pipeline(parse_pipeline_config(text))
    assert pipeline.data_config.movielens.max_history == 50
    pipeline.prepare_data()
    assert json.loads(Path(paths["manifest"]).read_text())["max_history"] == 50
    (t,) = _by_user(pq.read_table(paths["test"]))[4]
    assert len(t["hist_movie_ids"]) == 50
    before = os.stat(paths["train"]).st_mtime_ns
    pipeline.prepare_data()  # up to date now: left alone
    assert os.stat(paths["train"]).st_mtime_ns == before
