"""Atomic outputs: every file and directory recframe writes appears complete or not at all.

:func:`atomic_write` writes a file through a temporary name in the same directory (flushed and
fsync'ed, then renamed over the final name with ``os.replace``, atomic on POSIX and Windows);
:func:`atomic_directory` does the same for a whole directory. A crash or an exception leaves
either the old content or the new one under the final name, never a half-written one, and
the temporary is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recframe.errors import RecframeError

#: Prefix of every temporary file or directory (hidden; never matches a final name).
TMP_PREFIX = ".tmp-"


def umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a rename in ``path`` (best effort: not possible on every OS / filesystem)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputPathError(RecframeError, OSError):
    """An output path that cannot be written: checked before the work that would fill it."""


def check_output_path(path: str | os.PathLike, flag: str, directory: bool = False) -> None:
    """Raise OutputPathError naming ``flag`` when ``path`` cannot be written: it is a directory
    (a file is wanted) or a file (``directory``), or the nearest existing parent is a file or
    is not writable. Nothing is created."""
    target = Path(path)
    if not str(path):
        raise OutputPathError(f"{flag}: empty path, expected a {'directory' if directory else 'file'} path")
    if target.exists() and target.is_dir() != directory:
        raise OutputPathError(f"{flag} {str(path)!r} is a {'file' if directory else 'directory'}, expected a "
                              f"{'directory' if directory else 'file'} path")
    existing = target.parent if not directory or not target.exists() else target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, expected a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {str(path)!r}: the directory {str(existing)!r} is not writable")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file_object)`` into a temporary file, then rename.

    The temporary lives in the same directory (so the rename is atomic) and is removed if
    ``write`` raises; ``path`` is then left as it was. The file gets the permissions a plain
    ``open()`` would give it. The parent directory must exist.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates the file 0600
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e.filename, str) and e.strerror:
            # e.g. a full disk while writing: name the file being written, not a descriptor
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a copy of the file ``src`` atomically: a hard link when the filesystem
    allows it (no data copied), else a byte copy, under a temporary name renamed over ``dst``."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f"{TMP_PREFIX}{dst.name}.")
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(dst.parent)


def replace_directory(tmp: Path, target: Path) -> None:
    """Rename the complete directory ``tmp`` to ``target``; an existing ``target`` is moved
    aside first (one rename each, so ``target`` is always the old or the new one), then removed."""
    old = None
    if target.exists():
        if any(target.iterdir()):
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TMP_PREFIX}{target.name}.old-"))
            os.rmdir(old)
            os.replace(target, old)
        else:
            os.rmdir(target)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary place; on success it replaces ``target`` at once.

    Yields the temporary directory (next to ``target``, so the final rename is atomic). If
    the block raises, the temporary is removed and ``target`` is left as it was. The new
    directory gets the permissions a plain ``mkdir`` would give it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TMP_PREFIX}{target.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates the directory 0700
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["TMP_PREFIX", "atomic_copy", "atomic_directory", "atomic_write", "atomic_write_text", "fsync_dir",
           "replace_directory", "umask"]
