"""libtiff's process-wide error and warning messages go through GDAL's error handling.

GDAL (3.x built on libtiff >= 4.5) gives every TIFF file it opens its own error handler,
which turns libtiff's messages into GDAL errors (raised by rasterio, logged). Its file I/O
callbacks for libtiff (``_tiffWriteProc``, ``_tiffSeekProc``, GDAL's ``tif_vsi.c``) report a
failed write or seek with ``TIFFErrorExt``, which has no file to find a handler on: the
message goes to libtiff's *process-wide* handler, whose default writes
``_tiffSeekProc: No space left on device.`` straight to stderr, from whichever thread wrote
(a dask worker's, for the COG writer), past every Python and GDAL handler.

:func:`route_libtiff_messages` replaces libtiff's default process-wide handlers by ones that
hand the message to GDAL's ``CPLError`` (errors as ``CE_Failure``/``CPLE_FileIO``,
warnings as ``CE_Warning``): the message then reaches whatever handles GDAL errors in that
thread -- rasterio raises it as part of the failing call's exception, whose chain
:func:`agriseries.io.store.store_write_error` reads ("no space left on device"), or logs
it -- and nothing is lost, nothing is written on the terminal behind the program's back.
A handler someone else installed (not libtiff's default) is left alone.

Linux only (the mapped libraries are found in ``/proc/self/maps``); elsewhere nothing is
changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading

log = logging.getLogger("agriseries.gdal")

#: GDAL's error classes and the CPLE_FileIO error number (cpl_error.h).
_CE_WARNING, _CE_FAILURE, _CPLE_FILEIO, _CPLE_APPDEFINED = 2, 3, 3, 1

# void (*TIFFErrorHandler)(const char *module, const char *fmt, va_list ap): on x86-64 and
# aarch64 a va_list argument arrives as a pointer, and is handed on to vsnprintf as is.
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

_lock = threading.Lock()
_state: dict = {}
_local = threading.local()


@contextlib.contextmanager
def libtiff_messages():
    """The libtiff error messages of this thread while in the block, as a list (what a
    failed GDAL call's last error does not say: ``_tiffWriteProc: No space left on
    device``)."""
    outer = getattr(_local, "sink", None)
    _local.sink = said = []
    try:
        yield said
    finally:
        _local.sink = outer


def _mapped(name: str) -> list[tuple[str, int, int]]:
    """(path, start, end) of the mappings of shared libraries whose file name starts with
    NAME."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) < 6:
                    continue
                path = parts[5]
                if path.rsplit("/", 1)[-1].startswith(name):
                    start, end = (int(v, 16) for v in parts[0].split("-"))
                    found.append((path, start, end))
    except OSError:
        pass
    return found


def _format(libc, fmt: bytes | None, ap) -> str:
    buf = ctypes.create_string_buffer(2048)
    if fmt is None:
        return ""
    libc.vsnprintf(buf, len(buf), fmt, ap)  # va_list consumed once, into a fixed buffer
    return buf.value.decode("utf-8", "replace")


def route_libtiff_messages() -> bool:
    """Install the handlers (once per process; safe from any thread). True when libtiff's
    process-wide messages now go to GDAL's error handling."""
    with _lock:
        if "done" in _state:
            return _state["done"]
        _state["done"] = False
        if not sys.platform.startswith("linux"):
            return False
        import rasterio  # noqa: F401  (loads GDAL and its libtiff)

        tiffs, gdals = _mapped("libtiff"), _mapped("libgdal")
        if not tiffs or not gdals:
            log.debug("libtiff or libgdal not found among the mapped libraries")
            return False
        try:
            tiff = ctypes.CDLL(tiffs[0][0])
            gdal = ctypes.CDLL(gdals[0][0])
            libc = ctypes.CDLL(None)
            libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                       ctypes.c_void_p]
            cpl_error = gdal.CPLError  # variadic: CPLError(class, number, fmt, ...)
            setters = (tiff.TIFFSetErrorHandler, tiff.TIFFSetWarningHandler)
        except (OSError, AttributeError) as exc:
            log.debug("libtiff's handlers are left as they are: %s", exc)
            return False
        for setter in setters:
            setter.restype = ctypes.c_void_p
            setter.argtypes = [ctypes.c_void_p]

        def handler(cls: int, number: int):
            def forward(module, fmt, ap):
                try:
                    text = _format(libc, fmt, ap)
                    if module:
                        text = f"{module.decode('utf-8', 'replace')}: {text}"
                    sink = getattr(_local, "sink", None)
                    if sink is not None and cls == _CE_FAILURE and len(sink) < 8:
                        sink.append(text)
                    cpl_error(ctypes.c_int(cls), ctypes.c_int(number), b"%s",
                              text.encode("utf-8", "replace"))
                except Exception:  # a C callback must not raise
                    pass
            return _HANDLER(forward)

        wanted = (handler(_CE_FAILURE, _CPLE_FILEIO), handler(_CE_WARNING, _CPLE_APPDEFINED))
        installed = []
        for setter, new in zip(setters, wanted):
            previous = setter(ctypes.cast(new, ctypes.c_void_p))
            if not previous or not any(s <= previous < e for _, s, e in tiffs):
                # messages turned off, or someone else's handler (GDAL's, an application's)
                setter(ctypes.c_void_p(previous) if previous else None)
                continue
            installed.append(new)
        _state["handlers"] = installed  # kept alive as long as the process
        _state["done"] = bool(installed)
        return _state["done"]


__all__ = ["libtiff_messages", "route_libtiff_messages"]
