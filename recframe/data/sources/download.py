"""Fetching public data sets into a local cache: checksummed downloads, zip extraction,
and wheels from PyPI through pip.

Everything lands in :func:`cache_dir` (``$RECFRAME_CACHE_DIR``, else ``~/.cache/recframe``).
A file is only ever visible under its final name once it is complete and its checksum has been
verified (written to a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recframe.errors import RecframeError
from recframe.files import atomic_directory, atomic_write

CACHE_ENV = "RECFRAME_CACHE_DIR"


class DownloadError(RecframeError, RuntimeError):
    """A download failed (network, HTTP error, or checksum mismatch)."""


def cache_dir() -> Path:
    """The download cache: ``$RECFRAME_CACHE_DIR`` or ``~/.cache/recframe``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recframe"


def file_digest(path: str | os.PathLike, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` with a tqdm progress bar and verify its checksum.

    Returns ``dest`` at once if it already exists with the right checksum. The bytes go to a
    temporary file next to ``dest`` that is renamed only after the checksum matched.
    Raises :class:`DownloadError` on any network error or checksum mismatch.
    """
    dest = Path(dest)
    if dest.exists() and _checksum_ok(dest, md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    algorithm, expected = ("md5", md5) if md5 else ("sha256", sha256)

    def fetch(out) -> None:
        digest = hashlib.new(algorithm)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                bar = _progress_bar(total, dest.name, progress)
                try:
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
                finally:
                    bar.close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DownloadError(f"could not download {url}: {e}") from e
        if expected and digest.hexdigest() != expected:
            raise DownloadError(f"checksum mismatch for {url}: expected {algorithm} {expected}, "
                                f"got {digest.hexdigest()}")

    atomic_write(dest, fetch)  # renamed into place only after the checksum matched
    return dest


def extract_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract ``zip_path`` into ``dest_dir`` atomically (temporary folder, then rename).

    Returns ``dest_dir``. If ``dest_dir`` already exists it is left as it is.
    """
    dest_dir = Path(dest_dir)
    if dest_dir.exists():
        return dest_dir
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.namelist():
            # refuse absolute paths and '..' (zip slip)
            if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                raise DownloadError(f"unsafe path {member!r} in {zip_path}")
        with atomic_directory(dest_dir) as tmp:
            zf.extractall(tmp)
    return dest_dir


def pip_download_wheel(
    requirement: str, filename: str, sha256: str, dest_dir: str | os.PathLike, timeout: float = 300.0
) -> Path:
    """Fetch a wheel from PyPI with ``python -m pip download <requirement> --no-deps``.

    ``filename`` is the expected wheel file name and ``sha256`` its checksum; an existing file
    with the right checksum is reused. Raises :class:`DownloadError` if pip fails or the checksum
    does not match.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    if target.exists() and file_digest(target, "sha256") == sha256:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-download.", dir=dest_dir) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", requirement,
            "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--retries", "1", "--timeout", "15", "-d", tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DownloadError(f"`{' '.join(cmd)}` failed: {e}") from e
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.exists():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise DownloadError(f"`pip download {requirement}` failed: {' | '.join(tail)}")
        digest = file_digest(got, "sha256")
        if digest != sha256:
            raise DownloadError(f"sha256 mismatch for {filename}: expected {sha256}, got {digest}")
        os.replace(got, target)
    return target


def _checksum_ok(path: Path, md5: str | None, sha256: str | None) -> bool:
    if md5 and file_digest(path, "md5") != md5:
        return False
    if sha256 and file_digest(path, "sha256") != sha256:
        return False
    return True


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():  # no bar frames in log files
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but never fail a download over a progress bar
        return _NoBar()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)
