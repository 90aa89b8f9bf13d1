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
import uuid
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

    ``scale``/``offset``/``units`` (one value for every band, or one per band) are
    written as GDAL band metadata, so that GDAL, QGIS and ``rioxarray``'s
    ``mask_and_scale`` see the physical value ``stored * scale + offset`` that the STAC
    item's ``raster:bands`` says. ``colormap`` (value -> RGBA) is the colour table of a
    class map; ``categories`` (value -> name) its class names, written as GDAL category
    names and a thematic raster attribute table in the ``.aux.xml`` sidecar GDAL reads
    with the file (GeoTIFF has no tag for them).
    """

    path: Path
    data: object
    geobox: GeoBox
    nodata: float | int | None = None
    overview_resampling: str = "average"
    tags: dict | None = None
    description: str | list[str] | None = None
    on_block: Callable[[np.ndarray], None] | None = None
    scale: float | list[float] | None = None
    offset: float | list[float] | None = None
    units: str | list[str] | None = None
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    categories: dict[int, str] | None = None


def write_cog(path: str | Path, data, geobox: GeoBox, *, nodata=None,
              overview_resampling: str = "average", tags: dict | None = None,
              description: str | list[str] | None = None,
              scale: float | list[float] | None = None, offset: float | list[float] | None = None,
              units: str | list[str] | None = None) -> Path:
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
    scale, offset, units
        GDAL band scale, offset and unit (see :class:`CogJob`).

    Returns
    -------
    Path
        The final path.
    """
    return write_cogs([CogJob(Path(path), data, geobox, nodata, overview_resampling, tags,
                              description, scale=scale, offset=offset, units=units)])[0]


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
    tmp_full = _tmp_name(path, ".full.tif")
    profile = dict(driver="GTiff", width=geobox.shape.x, height=geobox.shape.y, count=count,
                   dtype=dtype.name, crs=geobox.crs.to_wkt(), transform=geobox.affine,
                   nodata=job.nodata, tiled=True, blockxsize=BLOCKSIZE, blockysize=BLOCKSIZE,
                   compress="deflate", predictor=_predictor(dtype), BIGTIFF="IF_SAFER")
    try:
        dst = rasterio.open(tmp_full, "w", **profile)
    except Exception:
        if os.path.exists(tmp_full):
            os.unlink(tmp_full)
        raise
    if isinstance(job.description, str):
        dst.set_band_description(1, job.description)
    elif job.description:
        for i, d in enumerate(job.description, start=1):
            dst.set_band_description(i, d)
    if job.tags:
        dst.update_tags(**{k: str(v) for k, v in job.tags.items()})
    if job.scale is not None or job.offset is not None:
        dst.scales = _per_band(1.0 if job.scale is None else job.scale, count)
        dst.offsets = _per_band(0.0 if job.offset is None else job.offset, count)
    if job.units:
        dst.units = _per_band(job.units, count)
    if job.colormap:
        dst.write_colormap(1, job.colormap)
    return dst, tmp_full


def _per_band(value, count: int) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * count
    if len(values) != count:
        raise StoreError(f"{len(values)} band values given for a file of {count} bands")
    return values


def _tmp_name(path: Path, suffix: str) -> str:
    """A fresh temporary name next to ``path``; the file is created by GDAL with the usual
    ``0666 & ~umask`` permissions (``mkstemp`` would make it 0600, unreadable by a web
    server or another user once renamed into place)."""
    return str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


def _write_categories(path: Path, categories: dict[int, str],
                      colormap: dict[int, tuple[int, int, int, int]] | None) -> None:
    """Class names of band 1 in the GDAL PAM sidecar ``<path>.aux.xml``: category names
    (value -> name, for codes up to 1023) and a thematic raster attribute table (value,
    name, colour) that GDAL, QGIS (>= 3.30) and ArcGIS read for any code."""
    from xml.sax.saxutils import escape

    codes = sorted(int(c) for c in categories)
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">']
    if codes and codes[-1] <= 1023:
        lines.append("    <CategoryNames>")
        lines += [f"      <Category>{escape(str(categories.get(v, '')))}</Category>"
                  for v in range(codes[-1] + 1)]
        lines.append("    </CategoryNames>")
    cols = [("Value", 0, 5), ("Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8),
            ("Alpha", 0, 9)]
    lines.append('    <GDALRasterAttributeTable tableType="thematic">')
    for i, (name, typ, usage) in enumerate(cols):
        lines.append(f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{typ}</Type>'
                     f"<Usage>{usage}</Usage></FieldDefn>")
    for row, v in enumerate(codes):
        r, g, b, a = (colormap or {}).get(v, (0, 0, 0, 255))
        fields = [str(v), escape(str(categories[v])), str(r), str(g), str(b), str(a)]
        lines.append(f'      <Row index="{row}">' + "".join(f"<F>{f}</F>" for f in fields)
                     + "</Row>")
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    target = path.with_name(path.name + ".aux.xml")
    tmp = _tmp_name(target, ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(tmp, target)


def _to_cog(job: CogJob, tmp_full: str) -> Path:
    path = Path(job.path)
    dtype = np.dtype(job.data.dtype)
    tmp_cog = _tmp_name(path, ".cog.tmp")
    try:
        with rasterio.open(tmp_full) as src:
            rasterio.shutil.copy(src, tmp_cog, driver="COG", compress="DEFLATE",
                                 predictor=_predictor(dtype), blocksize=BLOCKSIZE,
                                 overview_resampling=job.overview_resampling, BIGTIFF="IF_SAFER")
        os.replace(tmp_cog, path)
        if job.categories:
            _write_categories(path, job.categories, job.colormap)
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


#: A qualitative palette (RGB) for class maps without colours of their own (cycled).
PALETTE = ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f",
           "bcbd22", "17becf", "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94",
           "f7b6d2", "c7c7c7", "dbdb8d", "9edae5")


def hex_rgba(color: str, alpha: int = 255) -> tuple[int, int, int, int]:
    """``"RRGGBB"`` -> ``(r, g, b, alpha)``."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), alpha


def class_colormap(classes: list[dict], nodata: int | None = None) -> dict[int, tuple]:
    """The colour table of a class map from its ``classification:classes`` entries (each
    ``{"value", "name"[, "color_hint"]}``): the entry's ``color_hint``, else the palette;
    ``nodata`` transparent."""
    cmap = {int(c["value"]): hex_rgba(c.get("color_hint") or PALETTE[i % len(PALETTE)])
            for i, c in enumerate(classes)}
    if nodata is not None:
        cmap[int(nodata)] = (0, 0, 0, 0)
    return cmap


def bit_categories(bits: list[tuple[int, str, str]]) -> tuple[dict[int, str], dict[int, tuple]]:
    """Category names and colours of every uint8 value of a bit-flag layer.

    ``bits`` lists ``(value, name, "RRGGBB")`` from the most to the least important bit:
    a value is named by its set bits joined with ``+`` (``clear`` for 0) and coloured
    as its most important bit."""
    names, cmap = {}, {}
    for v in range(256):
        on = [(n, c) for b, n, c in bits if v & b]
        names[v] = "+".join(n for n, _ in on) if on else "clear"
        if v and not on:
            names[v] = f"unused {v}"
        cmap[v] = hex_rgba(on[0][1]) if on else (0, 0, 0, 0)
    return names, cmap


def overview_resampling_for(kind: str) -> str:
    """``average`` for continuous data, ``nearest`` for masks and classes."""
    return "nearest" if kind in ("mask", "quality", "class") else "average"


__all__ = ["CogJob", "write_cog", "write_cogs", "validate_cog", "overview_resampling_for", "Resampling",
           "class_colormap", "bit_categories", "hex_rgba", "PALETTE"]
