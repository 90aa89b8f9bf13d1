"""Serving the files of published items: no listing, no paths from the client, HTTP Range.

A download URL names a collection, an item and an asset key
(``/assets/<collection>/<item>/<key>``), never a path: the service looks the item up in
its catalogue, takes the store-relative path the publisher wrote for that asset, and opens
it component by component below the store root with ``O_NOFOLLOW`` (a symbolic link
anywhere on the way, a ``..``, an absolute path or anything but a regular file is "not
found"). So only files that belong to a published item can be read, and nothing outside
the store. Single byte ranges (``bytes=a-b``, ``a-``, ``-n``) are answered with 206;
other Range forms get the whole file (as RFC 9110 allows); an unsatisfiable one gets 416.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath

import anyio

__all__ = ["NotServable", "open_in_store", "parse_range", "stream_fd"]

CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class NotServable(Exception):
    """The path is not a regular file below the store root (answered as 404)."""


def open_in_store(root: str | Path, rel: PurePosixPath | str) -> tuple[int, int]:
    """Open ``rel`` below ``root`` without following any link; ``(fd, size)``.

    Raises
    ------
    NotServable
        Absolute path, ``..``, an empty part, a link or a non-regular file on the way.
    """
    rel = PurePosixPath(rel)
    parts = rel.parts
    if not parts or rel.is_absolute() or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise NotServable(str(rel))
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise NotServable(str(rel)) from e
    try:
        for p in parts[:-1]:
            nfd = os.open(p, flags_dir, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                      dir_fd=fd)
    except OSError as e:  # ELOOP (a link), ENOTDIR, ENOENT...
        raise NotServable(str(rel)) from e
    finally:
        os.close(fd)
    st = os.fstat(ffd)
    if not stat.S_ISREG(st.st_mode):
        os.close(ffd)
        raise NotServable(str(rel))
    return ffd, st.st_size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end]`` (inclusive) a Range header asks for, or ``None`` for
    the whole file.

    Raises
    ------
    ValueError
        An unsatisfiable range (answered with 416).
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m:
        return None  # several ranges or another unit: the whole file
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(a)
    end = size - 1 if b == "" else min(int(b), size - 1)
    if start >= size or (b != "" and int(b) < start):
        raise ValueError(f"range {header!r} outside a file of {size} bytes")
    return start, end


async def stream_fd(fd: int, start: int, end: int,
                    on_done: Callable[[int], None]) -> AsyncIterator[bytes]:
    """Bytes ``start..end`` of ``fd`` in chunks; closes it and calls ``on_done(sent)``
    whatever happens (client gone, server stopping)."""
    sent = 0
    try:
        pos = start
        while pos <= end:
            n = min(CHUNK, end - pos + 1)
            data = await anyio.to_thread.run_sync(os.pread, fd, n, pos)
            if not data:
                break
            pos += len(data)
            sent += len(data)
            yield data
    finally:
        os.close(fd)
        on_done(sent)
