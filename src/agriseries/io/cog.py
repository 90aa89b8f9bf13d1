"""Atomic Cloud-Optimized GeoTIFF writing.

:func:`write_cog` writes one band (a numpy or dask array on an odc-geo GeoBox) as a
COG: internal 512 x 512 tiles, DEFLATE with the predictor that suits the data type,
overviews down to < 512 px, written first to a temporary file next to the target
and renamed into place only when complete, so that a crash never leaves a half file
under the final name. Dask arrays are written block by block (the whole band is
never in memory): the full-resolution image goes to a temporary tiled GeoTIFF, and
GDAL's COG driver copies it with its overviews.

:func:`write_cogs` writes several such files in one pass over their dask graphs, so
that layers made by one kernel (a composite's bands, weight, date and flags) share its
tasks instead of recomputing them once per file.

:func:`validate_cog` checks a file with rio-cogeo's validator.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


@dataclass
class CogJob:
    """One COG to write with :func:`write_cogs` (the arguments of :func:`write_cog`).

    ``on_block`` is called with every block of the data (numpy) as it is written, e.g.
    to count classes without reading the file again.
    """

    path: Path
    data: object
    geobox: GeoBox
    nodata: float | int | None = None
    overview_resampling: str = "average"
    tags: dict | None = None
    description: str | list[str] | None = None
    on_block: Callable[[np.ndarray], None] | None = None


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
    return write_cogs([CogJob(Path(path), data, geobox, nodata, overview_resampling, tags,
                              description)])[0]


def write_cogs(jobs: list[CogJob]) -> list[Path]:
    """Write several COGs in one pass over their dask graphs.

    Layers computed by one kernel (the weight, date, flag and bands of a composite) share
    its tasks: the blocks of every dask job are computed together, one row of blocks at a
    time, so each kernel task runs once and memory stays at a strip of blocks. Each file
    is written to a temporary tiled GeoTIFF, then copied to a COG with its overviews and
    renamed into place; on error no final file of an unfinished job is left.
    """
    opened = []
    try:
        for job in jobs:
            opened.append(_open_full(job))
        dask_jobs = [(job, dst) for job, (dst, _) in zip(jobs, opened) if hasattr(job.data, "dask")]
        for job, (dst, _) in zip(jobs, opened):
            if not hasattr(job.data, "dask"):
                arr = np.asarray(job.data)
                dst.write(arr, 1) if arr.ndim == 2 else dst.write(arr)
                if job.on_block is not None:
                    job.on_block(arr)
        _write_dask(dask_jobs)
        for dst, _ in opened:
            dst.close()
        return [_to_cog(job, tmp) for job, (_, tmp) in zip(jobs, opened)]
    except Exception as exc:
        if isinstance(exc, AgriseriesError):  # e.g. a corrupt input found while computing
            raise
        where = (str(jobs[0].path) if len(jobs) == 1 else
                 f"{Path(jobs[0].path).parent} ({', '.join(Path(j.path).name for j in jobs)})")
        raise StoreError(f"{where}: writing the COG failed: {exc}") from exc
    finally:
        for dst, tmp in opened:
            if not dst.closed:
                dst.close()
            if os.path.exists(tmp):
                os.unlink(tmp)


def _open_full(job: CogJob):
    data, geobox, path = job.data, job.geobox, Path(job.path)
    count = 1 if data.ndim == 2 else int(data.shape[0])
    if tuple(data.shape[-2:]) != tuple(geobox.shape):
        raise StoreError(f"{path}: data shape {data.shape} does not match its grid {geobox.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(data.dtype)
    fd, tmp_full = tempfile.mkstemp(suffix=".full.tif", dir=path.parent)
    os.close(fd)
    profile = dict(driver="GTiff", width=geobox.shape.x, height=geobox.shape.y, count=count,
                   dtype=dtype.name, crs=geobox.crs.to_wkt(), transform=geobox.affine,
                   nodata=job.nodata, tiled=True, blockxsize=BLOCKSIZE, blockysize=BLOCKSIZE,
                   compress="deflate", predictor=_predictor(dtype), BIGTIFF="IF_SAFER")
    try:
        dst = rasterio.open(tmp_full, "w", **profile)
    except Exception:
        os.unlink(tmp_full)
        raise
    if isinstance(job.description, str):
        dst.set_band_description(1, job.description)
    elif job.description:
        for i, d in enumerate(job.description, start=1):
            dst.set_band_description(i, d)
    if job.tags:
        dst.update_tags(**{k: str(v) for k, v in job.tags.items()})
    return dst, tmp_full


def _to_cog(job: CogJob, tmp_full: str) -> Path:
    path = Path(job.path)
    dtype = np.dtype(job.data.dtype)
    fd, tmp_cog = tempfile.mkstemp(suffix=".cog.tmp", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(tmp_full) as src:
            rasterio.shutil.copy(src, tmp_cog, driver="COG", compress="DEFLATE",
                                 predictor=_predictor(dtype), blocksize=BLOCKSIZE,
                                 overview_resampling=job.overview_resampling, BIGTIFF="IF_SAFER")
        os.replace(tmp_cog, path)
    finally:
        if os.path.exists(tmp_cog):
            os.unlink(tmp_cog)
    return path


def _write_dask(jobs) -> None:
    """Compute dask arrays block by block into open datasets (never a whole array).

    2-D arrays go to band 1; 3-D ``(band, y, x)`` arrays are rechunked to one chunk along
    bands. Row ``i`` of blocks of every job is computed in one ``dask.compute`` call, so
    tasks shared between jobs run once.
    """
    import dask

    plans = []
    for job, dst in jobs:
        data = job.data.rechunk({0: -1}) if job.data.ndim == 3 else job.data
        blocks = data.to_delayed(optimize_graph=False)  # optimised once, together, at compute
        if data.ndim == 3:
            blocks = blocks[0]
        rows = np.cumsum((0,) + data.chunks[-2])
        cols = np.cumsum((0,) + data.chunks[-1])
        plans.append((job, dst, blocks, rows, cols))
    nrows = max((len(p[3]) - 1 for p in plans), default=0)
    for i in range(nrows):
        # one row of blocks at a time keeps memory to a strip while letting dask parallelise it
        todo = [(p, j) for p in plans if i < len(p[3]) - 1 for j in range(len(p[4]) - 1)]
        results = dask.compute(*[p[2][i, j] for p, j in todo])
        for (p, j), block in zip(todo, results):
            job, dst, _, rows, cols = p
            win = Window(int(cols[j]), int(rows[i]), block.shape[-1], block.shape[-2])
            if block.ndim == 2:
                dst.write(block, 1, window=win)
            else:
                dst.write(block, window=win)
            if job.on_block is not None:
                job.on_block(block)


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """Validate a COG with rio-cogeo: ``(is_valid, errors, warnings)``."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


def overview_resampling_for(kind: str) -> str:
    """``average`` for continuous data, ``nearest`` for masks and classes."""
    return "nearest" if kind in ("mask", "quality", "class") else "average"


__all__ = ["CogJob", "write_cog", "write_cogs", "validate_cog", "overview_resampling_for", "Resampling"]
