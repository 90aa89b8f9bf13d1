"""Atomic Cloud-Optimized GeoTIFF writing.

:func:`write_cog` writes one band (a numpy or dask array on an odc-geo GeoBox) as a
COG: internal 512 x 512 tiles, DEFLATE with the predictor that suits the data type,
overviews down to < 512 px, written first to a temporary file next to the target
and renamed into place only when complete, so that a crash never leaves a half file
under the final name. Dask arrays are written block by block (the whole band is
never in memory): the full-resolution image goes to a temporary tiled GeoTIFF, and
GDAL's COG driver copies it with its overviews.

:func:`validate_cog` checks a file with rio-cogeo's validator.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..core.errors import AgriseriesError, StoreError

BLOCKSIZE = 512


def _predictor(dtype: np.dtype) -> int:
    return 3 if np.issubdtype(dtype, np.floating) else 2


def write_cog(path: str | Path, data, geobox: GeoBox, *, nodata=None,
              overview_resampling: str = "average", tags: dict | None = None,
              description: str | list[str] | None = None) -> Path:
    """Write a 2-D array as a COG, atomically.

    Parameters
    ----------
    path
        Final file name (``.tif``).
    data
        2-D numpy or dask array with the shape of ``geobox``, or a 3-D ``(band, y, x)``
        array for a multi-band file (angle grids, one band per date of a series).
    geobox
        The grid of the data.
    nodata
        The no-data value written in the file (``None``: none).
    overview_resampling
        GDAL resampling for overviews: ``average`` for reflectance, ``nearest`` for
        masks and classes.
    tags
        GDAL metadata items (e.g. scale/offset documentation).
    description
        Band description (a list: one per band).

    Returns
    -------
    Path
        The final path.
    """
    path = Path(path)
    count = 1 if data.ndim == 2 else int(data.shape[0])
    if tuple(data.shape[-2:]) != tuple(geobox.shape):
        raise StoreError(f"{path}: data shape {data.shape} does not match its grid {geobox.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(data.dtype)
    fd, tmp_full = tempfile.mkstemp(suffix=".full.tif", dir=path.parent)
    os.close(fd)
    fd, tmp_cog = tempfile.mkstemp(suffix=".cog.tmp", dir=path.parent)
    os.close(fd)
    try:
        profile = dict(driver="GTiff", width=geobox.shape.x, height=geobox.shape.y, count=count,
                       dtype=dtype.name, crs=geobox.crs.to_wkt(), transform=geobox.affine,
                       nodata=nodata, tiled=True, blockxsize=BLOCKSIZE, blockysize=BLOCKSIZE,
                       compress="deflate", predictor=_predictor(dtype), BIGTIFF="IF_SAFER")
        with rasterio.open(tmp_full, "w", **profile) as dst:
            if hasattr(data, "dask"):
                _write_dask(dst, data)
            elif count == 1:
                dst.write(np.asarray(data), 1)
            else:
                dst.write(np.asarray(data))
            if isinstance(description, str):
                dst.set_band_description(1, description)
            elif description:
                for i, d in enumerate(description, start=1):
                    dst.set_band_description(i, d)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
        with rasterio.open(tmp_full) as src:
            cog_profile = dict(driver="COG", compress="DEFLATE", predictor=_predictor(dtype),
                               blocksize=BLOCKSIZE, overview_resampling=overview_resampling,
                               BIGTIFF="IF_SAFER")
            rasterio.shutil.copy(src, tmp_cog, **cog_profile)
        os.replace(tmp_cog, path)
    except Exception as exc:
        for f in (tmp_cog,):
            if os.path.exists(f):
                os.unlink(f)
        if isinstance(exc, AgriseriesError):  # e.g. a corrupt input found while computing
            raise
        raise StoreError(f"{path}: writing the COG failed: {exc}") from exc
    finally:
        if os.path.exists(tmp_full):
            os.unlink(tmp_full)
    return path


def _write_dask(dst, data) -> None:
    """Compute a dask array block by block into an open dataset (never the whole array).

    2-D arrays go to band 1; 3-D ``(band, y, x)`` arrays must have one chunk along bands.
    """
    import dask

    if data.ndim == 3:
        data = data.rechunk({0: -1})
    ychunks, xchunks = data.chunks[-2], data.chunks[-1]
    rows = np.cumsum((0,) + ychunks)
    cols = np.cumsum((0,) + xchunks)
    blocks = data.to_delayed()
    if data.ndim == 3:
        blocks = blocks[0]
    for i in range(len(ychunks)):
        # one row of blocks at a time keeps memory to a strip while letting dask parallelise it
        row = dask.compute(*[blocks[i, j] for j in range(len(xchunks))])
        for j, block in enumerate(row):
            win = Window(int(cols[j]), int(rows[i]), block.shape[-1], block.shape[-2])
            if block.ndim == 2:
                dst.write(block, 1, window=win)
            else:
                dst.write(block, window=win)


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """Validate a COG with rio-cogeo: ``(is_valid, errors, warnings)``."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


def overview_resampling_for(kind: str) -> str:
    """``average`` for continuous data, ``nearest`` for masks and classes."""
    return "nearest" if kind in ("mask", "quality", "class") else "average"


__all__ = ["write_cog", "validate_cog", "overview_resampling_for", "Resampling"]
