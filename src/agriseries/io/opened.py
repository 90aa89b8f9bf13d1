"""Input rasters kept open across the blocks of one job, one GDAL handle per thread.

Opening a COG costs 1-2.5 ms (its header and tile index parsed each time); a composite
of 8 dates at 4096 px reads about 1500 blocks, each of which opened its file afresh.
Inside ``with held_open():`` (a job: the composite, the crop mask and crop type maps and
the training of a site model, the read floors of their benchmarks; ``@held_open()`` as a
decorator holds for each call), :func:`open_raster` keeps each thread's handle of each
file open for the following blocks of that thread (GDAL datasets are not shared between
threads), and the handles are closed when the outermost ``held_open`` ends. Outside it,
:func:`open_raster` is a plain ``rasterio.open``.

A handle is reused only while the file is the same one: the key holds the file's device,
inode, modification time (ns) and size, looked up by ``os.stat`` at every block, so a
file replaced in between (the store's atomic rename) is opened again. Paths GDAL opens
that are not plain files (``/vsizip/...``, ``NETCDF:...``) are never kept. At most
:func:`per_thread` handles per thread stay open (the least recently used is closed):
:data:`PER_THREAD`, fewer when the process may open few files (an eighth of its
``RLIMIT_NOFILE`` soft limit per thread). A crop map reads every block of 71 dates x 5
files: with fewer handles than that per thread, the least recently used one is always
the next one needed and every block would open its files again.

GDAL frees a file's cached tiles when the file is closed; kept open, the tiles it has
decoded stay in GDAL's block cache until the cache is full (5 % of the memory by default:
+1 GB of peak memory on the 4096 px composite benchmark). The blocks of a job are read
once each (whole tiles), so while a job holds files the cache is capped at
:data:`HELD_CACHE` bytes (GDAL's ``GDAL_CACHEMAX``, set back after the job).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import rasterio
from rasterio.env import get_gdal_config, set_gdal_config

#: Open handles kept per thread at most (least recently used closed first; see
#: :func:`per_thread`).
PER_THREAD = 512
#: GDAL's block cache (bytes) while rasters are held open (lower settings are kept).
HELD_CACHE = 128 * 2**20

_lock = threading.Lock()
_depth = 0
_held: dict[int, OrderedDict] = {}  # thread id -> (path, identity) -> dataset
_busy: set = set()  # (thread id, path, identity) being read now
_saved_cache = None  # GDAL_CACHEMAX before the outermost held_open
_cap = PER_THREAD  # handles per thread, set by the outermost held_open


@contextmanager
def held_open() -> Iterator[None]:
    """Keep the rasters :func:`open_raster` opens open until the outermost block ends
    (then every kept handle not being read is closed; one being read, when its read ends)."""
    global _depth, _saved_cache, _cap
    with _lock:
        if _depth == 0:
            _cap = per_thread()
            before = get_gdal_config("GDAL_CACHEMAX")
            if isinstance(before, int) and before > HELD_CACHE:
                _saved_cache = before
                set_gdal_config("GDAL_CACHEMAX", HELD_CACHE)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            doomed = []
            if _depth == 0:
                for tid, files in list(_held.items()):
                    for key in list(files):
                        if (tid,) + key not in _busy:
                            doomed.append(files.pop(key))
                    if not files:
                        del _held[tid]
                if _saved_cache is not None:
                    set_gdal_config("GDAL_CACHEMAX", _saved_cache)
                    _saved_cache = None
        for ds in doomed:
            ds.close()


def per_thread() -> int:
    """The handles each thread keeps: :data:`PER_THREAD`, or an eighth of the process's
    open-file soft limit when that is fewer (16 at least)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Unix
        return PER_THREAD
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return PER_THREAD
    return min(PER_THREAD, max(16, soft // 8))


def _identity(path: str):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@contextmanager
def open_raster(path: str) -> Iterator[rasterio.io.DatasetReader]:
    """``rasterio.open(path)`` for reading, the thread's kept handle inside :func:`held_open`."""
    ident = _identity(path) if _depth else None
    if ident is None:
        with rasterio.open(path) as src:
            yield src
        return
    tid = threading.get_ident()
    key = (str(path), ident)
    with _lock:
        files = _held.setdefault(tid, OrderedDict())
        ds = files.get(key)
        if ds is not None:
            files.move_to_end(key)
        _busy.add((tid,) + key)
    try:
        if ds is None:
            ds = rasterio.open(path)
            evicted = []
            with _lock:
                files = _held.setdefault(tid, OrderedDict())
                files[key] = ds
                while len(files) > _cap:
                    evicted.append(files.popitem(last=False)[1])
            for old in evicted:
                old.close()
        yield ds
    finally:
        close = False
        with _lock:
            _busy.discard((tid,) + key)
            if _depth == 0:  # the job ended while this block was read
                files = _held.get(tid)
                if files is not None and files.get(key) is ds:
                    del files[key]
                    close = True
        if close:
            ds.close()


__all__ = ["held_open", "open_raster", "per_thread", "PER_THREAD", "HELD_CACHE"]
