"""Writes that survive a crash or a power cut: a file replaced whole or not at all.

:func:`fsync_path`
    Flush a file, or a folder's entries, to disk.
:func:`fsync_tree`
    Flush a file, or a folder with everything in it, before it is renamed into place.
:func:`atomic_write`
    Replace a file by some bytes: written under a temporary name in the same folder,
    flushed, renamed over the file, the folder's entry flushed; the temporary file is
    removed if anything fails, and the old file is left as it was.

A ``kill -9`` needs only the rename (it is atomic); the flushes make the same hold across
a power cut, where the rename could otherwise reach the disk before the file's bytes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["atomic_write", "fsync_path", "fsync_tree"]


def fsync_path(path: str | os.PathLike) -> None:
    """Flush the file or folder ``path`` to disk (for a folder: its entries, a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """Flush ``path`` to disk: a file, or a folder's files, sub-folders and the folder
    itself, so that a rename of it that reaches the disk finds its bytes there too."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            fsync_path(p)
    fsync_path(path)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """``path`` replaced by ``data`` whole or not at all (the file gets the usual umask
    permissions, as a plain ``open`` gives)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
