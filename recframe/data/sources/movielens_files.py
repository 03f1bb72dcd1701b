"""The raw MovieLens files: where they are found or fetched, and how they are read.

:func:`load_movielens` returns a :class:`RawMovieLens` (ratings in raw line order, users and
items sorted by id) from, in order: ``raw_dir`` (explicit: nothing else is tried);
``$RECFRAME_DATA_DIR/<variant>``; the download cache (``$RECFRAME_CACHE_DIR`` or
``~/.cache/recframe``); a download of the official GroupLens zip (md5-checked); for ML-100K,
when GroupLens is unreachable, the copy of ML-100K inside the PyPI wheel ``recbole==1.2.1``
(sha256-checked; its ``ml-100k.inter`` body is byte-identical to GroupLens ``u.data``).
:mod:`recframe.data.sources.movielens` splits it.

MovieLens is research-only data and may not be redistributed: nothing here copies it anywhere but
the user's own cache and output folders.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recframe.data.sources.download import (
    DownloadError,
    cache_dir,
    download_file,
    extract_zip,
    file_digest,
    pip_download_wheel,
)
from recframe.errors import RecframeError

VARIANTS = ("ml-100k", "ml-1m")
DATA_DIR_ENV = "RECFRAME_DATA_DIR"

GROUPLENS = {
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "ratings": "u.data",
        "files": ("u.data", "u.item", "u.user"),
    },
    "ml-1m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "ratings": "ratings.dat",
        "files": ("ratings.dat", "movies.dat", "users.dat"),
    },
}

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
# measured from `pip download recbole==1.2.1 --no-deps` (PyPI), 2,130,151 bytes
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k/ml-100k"

# u.genre of ML-100K (index order of the 19 genre flags in u.item); used when u.genre is absent
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)

_LIST_INT = pa.list_(pa.int64())
_LIST_STR = pa.list_(pa.string())

USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("gender", pa.string()),
        ("age", pa.int64()),
        ("occupation", pa.string()),
        ("zip_prefix", pa.string()),
    ]
)
ITEM_SCHEMA = pa.schema(
    [("movie_id", pa.int64()), ("genres", _LIST_STR), ("title", pa.string()), ("year", pa.int64())]
)


class MovieLensDataError(RecframeError, RuntimeError):
    """Raw MovieLens files are missing or malformed (the message says where and what)."""


@dataclass
class RawMovieLens:
    """Raw MovieLens data, parsed but not split.

    ``ratings`` holds int64 arrays ``user_id``, ``movie_id``, ``rating``, ``timestamp`` in the
    line order of the raw ratings file. ``users`` (:data:`USER_SCHEMA`) and ``items``
    (:data:`ITEM_SCHEMA`) are sorted by id. ``checksums`` maps each source file read to its md5.
    """

    variant: str
    ratings: dict[str, np.ndarray]
    users: pa.Table
    items: pa.Table
    source: str = ""
    checksums: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# parsing helpers


_TITLE_YEAR = re.compile(r"^(.*)\((\d{4})\)(.*)$", re.S)


def parse_title(raw_title: str, release_date: str = "") -> tuple[str, int]:
    """Split a MovieLens title into (title, year).

    The year is the last parenthesised 4-digit group of the title, which is removed from it
    (``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; ``"Land Before Time III: ... (1995) (V)"``
    -> ``("Land Before Time III: ... (V)", 1995)``). Without one, the year is taken from the last
    4 characters of ``release_date`` (ML-100K ``01-Jan-1995``), else 0.
    """
    s = raw_title.strip()
    m = _TITLE_YEAR.match(s)
    if m:
        title = (m.group(1).rstrip() + " " + m.group(3).strip()).strip()
        return title, int(m.group(2))
    d = release_date.strip()
    return s, int(d[-4:]) if len(d) >= 4 and d[-4:].isdigit() else 0


def _zip_prefix(z: str) -> str:
    return z.strip()[:3]


def _read_bytes(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MovieLensDataError(f"missing file {path}") from None
    return data, hashlib.md5(data).hexdigest()


def _parse_ratings(data: bytes, delimiter: str, origin: str, skip_rows: int = 0) -> dict[str, np.ndarray]:
    """Parse an all-integer ratings file (user, movie, rating, timestamp) with pyarrow."""
    names = ["user_id", "movie_id", "rating", "timestamp"]
    try:
        tbl = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip_rows),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.int64() for n in names}),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise MovieLensDataError(
            f"{origin}: expected 4 integer columns (user id, movie id, rating, timestamp) "
            f"separated by {delimiter!r}: {e}"
        ) from None
    if tbl.num_rows == 0:
        raise MovieLensDataError(f"{origin}: no ratings")
    out = {}
    for n in names:
        col = tbl.column(n)
        if col.null_count:
            raise MovieLensDataError(f"{origin}: empty values in column {n}")
        out[n] = col.to_numpy().astype(np.int64, copy=False)
    return out


def _lines(data: bytes, encoding: str) -> list[str]:
    return [ln for ln in data.decode(encoding).splitlines() if ln.strip()]


def _users_table(ids, genders, ages, occupations, zips, origin: str) -> pa.Table:
    tbl = pa.table(
        {
            "user_id": pa.array(ids, pa.int64()),
            "gender": pa.array(genders, pa.string()),
            "age": pa.array(ages, pa.int64()),
            "occupation": pa.array(occupations, pa.string()),
            "zip_prefix": pa.array([_zip_prefix(z) for z in zips], pa.string()),
        },
        schema=USER_SCHEMA,
    )
    return _sorted_unique(tbl, "user_id", origin)


def _items_table(ids, genres, raw_titles, release_dates, origin: str) -> pa.Table:
    parsed = [parse_title(t, d) for t, d in zip(raw_titles, release_dates)]
    tbl = pa.table(
        {
            "movie_id": pa.array(ids, pa.int64()),
            "genres": pa.array(genres, _LIST_STR),
            "title": pa.array([p[0] for p in parsed], pa.string()),
            "year": pa.array([p[1] for p in parsed], pa.int64()),
        },
        schema=ITEM_SCHEMA,
    )
    return _sorted_unique(tbl, "movie_id", origin)


def _sorted_unique(tbl: pa.Table, key: str, origin: str) -> pa.Table:
    ids = tbl.column(key).to_numpy()
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = s[1:][s[1:] == s[:-1]]
    if dup.size:
        raise MovieLensDataError(f"{origin}: duplicate {key} {sorted(set(dup.tolist()))[:5]}")
    return tbl.take(pa.array(order))


def _split_fields(line: str, sep: str, n: int, origin: str, lineno: int) -> list[str]:
    parts = line.split(sep)
    if len(parts) < n:
        raise MovieLensDataError(f"{origin} line {lineno}: expected {n} fields separated by {sep!r}: {line!r}")
    return parts


# --------------------------------------------------------------------------------------------
# readers, one per raw format


def read_ml100k(raw_dir: str | os.PathLike) -> RawMovieLens:
    """Read GroupLens ML-100K files ``u.data``, ``u.item``, ``u.user`` (+ ``u.genre`` if present)."""
    d = Path(raw_dir)
    checksums = {}
    data, checksums["u.data"] = _read_bytes(d / "u.data")
    ratings = _parse_ratings(data, "\t", str(d / "u.data"))

    genres_names = list(ML100K_GENRES)
    if (d / "u.genre").exists():
        gdata, checksums["u.genre"] = _read_bytes(d / "u.genre")
        pairs = [ln.rsplit("|", 1) for ln in _lines(gdata, "latin-1")]
        try:
            genres_names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
        except (ValueError, IndexError):
            raise MovieLensDataError(f"{d / 'u.genre'}: expected lines 'name|index'") from None

    idata, checksums["u.item"] = _read_bytes(d / "u.item")
    ids, genres, titles, dates = [], [], [], []
    ng = len(genres_names)
    origin = str(d / "u.item")
    for i, ln in enumerate(_lines(idata, "latin-1"), 1):
        p = _split_fields(ln, "|", 5 + ng, origin, i)
        flags = p[-ng:]
        ids.append(int(p[0]))
        titles.append(p[1])
        dates.append(p[2])
        genres.append([g for g, f in zip(genres_names, flags) if f.strip() == "1"])
    items = _items_table(ids, genres, titles, dates, origin)

    udata, checksums["u.user"] = _read_bytes(d / "u.user")
    origin = str(d / "u.user")
    rows = [_split_fields(ln, "|", 5, origin, i) for i, ln in enumerate(_lines(udata, "latin-1"), 1)]
    users = _users_table(
        [int(r[0]) for r in rows], [r[2] for r in rows], [int(r[1]) for r in rows],
        [r[3] for r in rows], [r[4] for r in rows], origin,
    )
    return RawMovieLens("ml-100k", ratings, users, items, f"GroupLens files in {d}", checksums)


def read_ml1m(raw_dir: str | os.PathLike) -> RawMovieLens:
    """Read GroupLens ML-1M files ``ratings.dat``, ``movies.dat`` (Latin-1), ``users.dat``."""
    d = Path(raw_dir)
    checksums = {}
    data, checksums["ratings.dat"] = _read_bytes(d / "ratings.dat")
    ratings = _parse_ratings(data.replace(b"::", b"\t"), "\t", str(d / "ratings.dat"))

    mdata, checksums["movies.dat"] = _read_bytes(d / "movies.dat")
    origin = str(d / "movies.dat")
    rows = [_split_fields(ln, "::", 3, origin, i) for i, ln in enumerate(_lines(mdata, "latin-1"), 1)]
    items = _items_table(
        [int(r[0]) for r in rows],
        [[g for g in r[2].strip().split("|") if g] for r in rows],
        [r[1] for r in rows],
        [""] * len(rows),
        origin,
    )

    udata, checksums["users.dat"] = _read_bytes(d / "users.dat")
    origin = str(d / "users.dat")
    rows = [_split_fields(ln, "::", 5, origin, i) for i, ln in enumerate(_lines(udata, "latin-1"), 1)]
    users = _users_table(
        [int(r[0]) for r in rows], [r[1] for r in rows], [int(r[2]) for r in rows],
        [r[3].strip() for r in rows], [r[4] for r in rows], origin,
    )
    return RawMovieLens("ml-1m", ratings, users, items, f"GroupLens files in {d}", checksums)


def _recbole_members(wheel_path: str | os.PathLike) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            return {ext: zf.read(f"{RECBOLE_ML100K}.{ext}") for ext in ("inter", "item", "user")}
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise MovieLensDataError(f"{wheel_path}: not a recbole wheel with ML-100K inside: {e}") from None


def read_recbole_ml100k(wheel_path: str | os.PathLike) -> RawMovieLens:
    """Read the ML-100K copy inside the ``recbole`` wheel (RecBole atomic files) into the same
    frames as :func:`read_ml100k` on the GroupLens files.

    ``ml-100k.inter`` is u.data with a typed header; ``ml-100k.user`` is u.user; ``ml-100k.item``
    has the title without its year, the title's year, and space-separated genres. RecBole split
    ``"X (1995) (V)"`` at the last parenthesis and wrote the one untitled movie as
    ``unkonwn``/``unkonwn``; both are undone so titles and years equal the GroupLens parse.
    """
    origin = f"{wheel_path}!{RECBOLE_ML100K}"
    members = _recbole_members(wheel_path)
    checksums = {f"{Path(RECBOLE_ML100K).name}.{ext}": hashlib.md5(b).hexdigest() for ext, b in members.items()}

    def table(ext: str) -> tuple[list[str], list[list[str]]]:
        lines = _lines(members[ext], "utf-8")
        header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
        return header, [ln.split("\t") for ln in lines[1:]]

    header = [h.split(":", 1)[0] for h in members["inter"].split(b"\n", 1)[0].decode().split("\t")]
    if header != ["user_id", "item_id", "rating", "timestamp"]:
        raise MovieLensDataError(f"{origin}.inter: unexpected header {header}")
    ratings = _parse_ratings(members["inter"], "\t", f"{origin}.inter", skip_rows=1)

    header, rows = table("item")
    col = {h: i for i, h in enumerate(header)}
    ids, genres, titles = [], [], []
    for r in rows:
        r = r + [""] * (len(header) - len(r))
        title, year = r[col["movie_title"]], r[col["release_year"]]
        if title == "unkonwn" and year == "unkonwn":  # GroupLens: title "unknown", no date
            raw_title = "unknown"
        else:
            raw_title = f"{title} ({year})"  # GroupLens title (RecBole split it at the last " (")
        ids.append(int(r[col["item_id"]]))
        titles.append(raw_title)
        genres.append([g for g in r[col["class"]].split(" ") if g])
    items = _items_table(ids, genres, titles, [""] * len(ids), f"{origin}.item")

    header, rows = table("user")
    col = {h: i for i, h in enumerate(header)}
    users = _users_table(
        [int(r[col["user_id"]]) for r in rows], [r[col["gender"]] for r in rows],
        [int(r[col["age"]]) for r in rows], [r[col["occupation"]] for r in rows],
        [r[col["zip_code"]] for r in rows], f"{origin}.user",
    )
    return RawMovieLens("ml-100k", ratings, users, items, f"{RECBOLE_REQUIREMENT} wheel {wheel_path}", checksums)


# --------------------------------------------------------------------------------------------
# finding the raw files


def _variant_info(variant: str) -> dict:
    if variant not in GROUPLENS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; expected one of {list(VARIANTS)}")
    return GROUPLENS[variant]


def _reader(variant: str):
    return read_ml100k if variant == "ml-100k" else read_ml1m


def _grouplens_cache(variant: str) -> Path:
    # <cache>/<variant>/<variant>.zip is extracted into <cache>/<variant>/files/, and the zip
    # holds one top folder named like the variant
    return cache_dir() / variant / "files" / variant


def _recbole_cache() -> Path:
    return cache_dir() / "wheels" / RECBOLE_WHEEL


def _find_local(variant: str, raw_dir: str | os.PathLike | None) -> tuple[str, Path] | tuple[None, list[Path]]:
    """Find raw files without any download: ("grouplens", dir) or ("recbole", wheel), else
    (None, [the ratings paths looked at])."""
    ratings = _variant_info(variant)["ratings"]
    if raw_dir is not None:
        d = Path(raw_dir).expanduser()
        for c in (d, d / variant):
            if (c / ratings).is_file():
                return "grouplens", c
        raise MovieLensDataError(
            f"MovieLens {variant}: the ratings file {ratings!r} is not in --raw_dir {d} "
            f"(looked at {d / ratings} and {d / variant / ratings}). Put the files of the GroupLens "
            f"{variant}.zip ({', '.join(_variant_info(variant)['files'])}) there."
        )
    looked = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        c = Path(env).expanduser() / variant
        if (c / ratings).is_file():
            return "grouplens", c
        looked.append(c / ratings)
    c = _grouplens_cache(variant)
    if (c / ratings).is_file():
        return "grouplens", c
    looked.append(c / ratings)
    if variant == "ml-100k":
        w = _recbole_cache()
        if w.is_file() and file_digest(w, "sha256") == RECBOLE_WHEEL_SHA256:
            return "recbole", w
    return None, looked


def _fetch(variant: str, looked: list[Path]) -> tuple[str, Path]:
    """Download the raw files into the cache (GroupLens zip; for ML-100K the recbole wheel as
    a fallback). Raises :class:`MovieLensDataError` saying where to put the files on failure."""
    info = _variant_info(variant)
    errors = []
    zip_path = cache_dir() / variant / f"{variant}.zip"
    try:
        print(f"[recframe] downloading {info['url']} -> {zip_path}", file=sys.stderr)
        download_file(info["url"], zip_path, md5=info["md5"])
        dest = _grouplens_cache(variant)
        extract_zip(zip_path, dest.parent)
        if (dest / info["ratings"]).is_file():
            return "grouplens", dest
        errors.append(f"{zip_path} has no {variant}/{info['ratings']}")
    except (DownloadError, OSError, zipfile.BadZipFile) as e:
        errors.append(str(e))
    if variant == "ml-100k":
        try:
            print(f"[recframe] GroupLens unreachable; fetching {RECBOLE_REQUIREMENT} from PyPI "
                  f"(it contains ML-100K)", file=sys.stderr)
            return "recbole", pip_download_wheel(
                RECBOLE_REQUIREMENT, RECBOLE_WHEEL, RECBOLE_WHEEL_SHA256, _recbole_cache().parent
            )
        except DownloadError as e:
            errors.append(str(e))
    raise MovieLensDataError(
        f"MovieLens {variant}: no raw files found and the download failed.\n"
        f"  looked for: {', '.join(str(p) for p in looked)}\n"
        f"  download: {'; '.join(errors)}\n"
        f"Get {info['url']} (md5 {info['md5']}) on a machine with network access, unzip it, and "
        f"either pass --raw_dir <folder with {', '.join(info['files'])}> (raw_dir= in "
        f"prepare_movielens) or set {DATA_DIR_ENV} so that ${DATA_DIR_ENV}/{variant}/"
        f"{info['ratings']} exists."
    )


def load_movielens(variant: str, raw_dir: str | os.PathLike | None = None, *, download: bool = True) -> RawMovieLens:
    """Find (or download, if ``download``) and parse the raw files of ``variant``."""
    kind, where = _find_local(variant, raw_dir)
    if kind is None:
        if not download:
            info = _variant_info(variant)
            raise MovieLensDataError(
                f"MovieLens {variant}: the ratings file {info['ratings']!r} was not found (looked for "
                f"{', '.join(str(p) for p in where)}) and downloading is disabled. Pass --raw_dir "
                f"<folder with {', '.join(info['files'])}> or set {DATA_DIR_ENV}."
            )
        kind, where = _fetch(variant, where)
    return read_recbole_ml100k(where) if kind == "recbole" else _reader(variant)(where)
