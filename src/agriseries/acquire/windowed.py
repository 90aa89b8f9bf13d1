"""Only the pixels the site needs: windowed reads of cloud-optimised GeoTIFFs.

:func:`read_window` opens a COG through GDAL's ``/vsicurl/`` (HTTP range requests; GDAL's
own timeouts and retries set by :func:`gdal_env`), reads the window covering the site's
area (snapped outwards to a ``snap_m`` lattice of the file's grid, so that the 10, 20 and
60 m bands of one product cover exactly the same ground), and writes it as a small tiled
GeoTIFF with the file's georeferencing, data type, no-data value and scale/offset tags.
A field-size site moves kilobytes per band instead of the ~100 MB of a full-tile band.

The window is written to a temporary name and renamed, so a band file in the staging
folder is either complete or absent (a rerun after a crash reads only the missing bands).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import rasterio
from odc.geo.geom import Geometry
from rasterio.windows import Window

from ..core.errors import DownloadError, EmptyIntersectionError
from .http import HttpSettings, redact

__all__ = ["gdal_env", "read_window", "window_for"]


def gdal_env(settings: HttpSettings, headers: dict[str, str] | None = None) -> rasterio.Env:
    """A rasterio environment for remote COG reads with timeouts and retries."""
    opts = dict(
        GDAL_HTTP_TIMEOUT=str(int(math.ceil(settings.read_timeout_s))),
        GDAL_HTTP_CONNECTTIMEOUT=str(int(math.ceil(settings.connect_timeout_s))),
        GDAL_HTTP_MAX_RETRY=str(settings.attempts - 1),
        GDAL_HTTP_RETRY_DELAY=str(settings.backoff_s),
        GDAL_HTTP_RETRY_CODES="429,500,502,503,504",
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.TIF,.tiff,.jp2",
        VSI_CACHE="FALSE",
        GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES",
    )
    if headers:
        opts["GDAL_HTTP_HEADERS"] = "\r\n".join(f"{k}: {v}" for k, v in headers.items())
    return rasterio.Env(**opts)


def window_for(src, area: Geometry | None, snap_m: float) -> Window:
    """The window of ``src`` covering ``area`` (any CRS), snapped outwards to multiples of
    ``snap_m`` metres from the file's origin and clipped to the file; the whole file when
    ``area`` is ``None``."""
    full = Window(0, 0, src.width, src.height)
    if area is None:
        return full
    a = area.to_crs(src.crs)
    left, bottom, right, top = a.boundingbox
    t = src.transform
    x0, y0 = t.c, t.f
    left = x0 + math.floor((left - x0) / snap_m) * snap_m
    right = x0 + math.ceil((right - x0) / snap_m) * snap_m
    top = y0 - math.floor((y0 - top) / snap_m) * snap_m
    bottom = y0 - math.ceil((y0 - bottom) / snap_m) * snap_m
    c0 = round((left - x0) / t.a)
    c1 = round((right - x0) / t.a)
    r0 = round((top - y0) / t.e)
    r1 = round((bottom - y0) / t.e)
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, src.width), min(r1, src.height)
    if c1 <= c0 or r1 <= r0:
        raise EmptyIntersectionError(redact(src.name.removeprefix("/vsicurl/")),
                                     "the site's area does not overlap this raster")
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_window(href: str, dest: str | Path, area: Geometry | None, *, settings: HttpSettings,
                headers: dict[str, str] | None = None, snap_m: float = 60.0) -> int:
    """Read the site's window of the COG at ``href`` into ``dest`` (GeoTIFF); return the
    bytes written. ``href`` is an ``http(s)`` URL (read through ``/vsicurl/``) or a path."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    path = f"/vsicurl/{href}" if href.startswith(("http://", "https://")) else href
    try:
        with gdal_env(settings, headers), rasterio.open(path) as src:
            win = window_for(src, area, snap_m)
            data = src.read(window=win)
            profile = {
                "driver": "GTiff", "width": int(win.width), "height": int(win.height),
                "count": src.count, "dtype": src.dtypes[0], "crs": src.crs,
                "transform": src.window_transform(win), "nodata": src.nodata,
                "compress": "deflate", "predictor": 2 if src.dtypes[0].startswith(("uint", "int"))
                else 1,
            }
            if win.width >= 256 and win.height >= 256:
                profile.update(tiled=True, blockxsize=256, blockysize=256)
            tags = src.tags()
            scales, offsets = src.scales, src.offsets
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(data)
                dst.update_tags(**tags)
                dst.scales, dst.offsets = scales, offsets
    except EmptyIntersectionError:
        tmp.unlink(missing_ok=True)
        raise
    except rasterio.errors.RasterioError as e:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{redact(href)}: windowed read failed: {e}") from None
    os.replace(tmp, dest)
    return dest.stat().st_size
