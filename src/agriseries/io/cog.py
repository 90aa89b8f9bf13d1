"""Atomic Cloud-Optimized GeoTIFF writing, one compression per file.

:func:`write_cog` writes one band (a numpy or dask array on an odc-geo GeoBox) as a
COG: internal 512 x 512 tiles, DEFLATE with the predictor that suits the data type,
overviews down to < 512 px, written first to a temporary file next to the target
and renamed into place only when complete, so that a crash never leaves a half file
under the final name.

Every file is compressed once. The pixels are gathered uncompressed -- in memory (a
numpy array), or, past :data:`MEMORY_BUDGET` bytes per call, in a raw file next to the
target -- read by GDAL through a VRT, and GDAL's COG driver makes the file from that
source in one pass, each tile compressed once. The overviews of a file held in memory
are computed here from its pixels (:mod:`agriseries.io.overviews`, GDAL's values pixel
for pixel) and given to the COG driver as the source's own, which it copies (for a raw
file, from the file read in place, the levels held in memory while the COG is written);
in the cases that module leaves to GDAL the COG driver computes them, through a temporary
compressed file of its own. (The earlier writer compressed every tile twice:
a temporary tiled, DEFLATE GeoTIFF, then GDAL's COG copy of it; the values written are
the same.)

A layer stored as int16 from float blocks (reflectance, a composite's weight: the
store's :func:`~agriseries.io.store.encode_scaled`) comes with its :class:`BlockEncoding`:
for a file gathered in memory on the local scheduler, each float block is encoded straight
into its place in the file's pixels, by the pass that would have made the int16 block
(no block allocated, no copy; the same values). Raw files, a distributed scheduler and an
``on_block`` callback get the int16 blocks.

:func:`write_cogs` writes several such files in one pass over their dask graphs, so
that layers made by one kernel (a composite's bands, weight, date and flags) share its
tasks instead of recomputing them once per file. On the local (threaded) dask scheduler
the write is one graph per strip of block rows (row ``i`` of every file's blocks): block
computations and block stores into the uncompressed sources; a strip at a time keeps dask
from computing one file's blocks over the whole tile ahead of the others that share its
inputs (memory). The next strip starts on the same threads as soon as one strip has no
task left to start, so that its tasks fill the threads while that strip's last blocks
finish; then the files are compressed on those threads (GDAL releases the GIL), the
largest first. On a
distributed scheduler (a caller's ``distributed.Client``) the blocks are computed by the cluster
one row of blocks at a time (each computation sent only its row's tasks) and stored here,
then each file is compressed.

:func:`validate_cog` checks a file with rio-cogeo's validator.
"""

from __future__ import annotations

import gc
import os
import threading
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
from .overviews import build_overviews
from .tiff_errors import libtiff_messages, route_libtiff_messages

# libtiff's write/seek failures (a full disk) reach GDAL's error handling, not the terminal
route_libtiff_messages()

BLOCKSIZE = 512
#: GDAL's DEFLATE level (libdeflate's, 1-12), the default of :class:`CogJob`.
DEFLATE_LEVEL = 6
#: Uncompressed bytes one :func:`write_cogs` call keeps in memory (GDAL ``MEM`` datasets)
#: before it gathers the further files' pixels in raw files next to them instead (a full
#: 10980 x 10980 tile of int16 is 241 MB; the 19 layers of a full-tile L3A, 2.4 GB).
MEMORY_BUDGET = 3 * 2**30


def _predictor(dtype: np.dtype) -> int:
    return 3 if np.issubdtype(dtype, np.floating) else 2


@dataclass(frozen=True)
class BlockEncoding:
    """How the blocks of a :class:`CogJob`'s ``data`` are made from another dask array's:
    ``data``'s block is ``encode(block)`` of the ``source`` block in the same place
    (``source`` has ``data``'s shape and chunks), and ``encode(block, out=view)`` writes
    those same values into ``view`` (an array of ``data``'s type and the block's shape,
    with the strides of the file's pixels). With it, the writer encodes each ``source``
    block straight into its place in a file gathered in memory, without making ``data``'s
    block and copying it (e.g. float reflectance as int16: :func:`agriseries.io.blockcodec.
    encode_block`); elsewhere (raw files, a distributed scheduler, an ``on_block``
    callback) ``data`` is computed and written as without it."""

    source: object
    encode: Callable


@dataclass
class CogJob:
    """One COG to write with :func:`write_cogs` (the arguments of :func:`write_cog`).

    ``on_block`` is called with every block of the data (numpy) as it is written, e.g.
    to count classes without reading the file again (calls for one file never overlap).

    ``scale``/``offset``/``units`` (one value for every band, or one per band) are
    written as GDAL band metadata, so that GDAL, QGIS and ``rioxarray``'s
    ``mask_and_scale`` see the physical value ``stored * scale + offset`` that the STAC
    item's ``raster:bands`` says. ``colormap`` (value -> RGBA) is the colour table of a
    class map; ``categories`` (value -> name) its class names, written as GDAL category
    names and a thematic raster attribute table in the ``.aux.xml`` sidecar GDAL reads
    with the file (GeoTIFF has no tag for them).

    ``encoding`` (optional): how ``data``'s blocks are made from another array's
    (:class:`BlockEncoding`), for the writer to encode them into the file's pixels in place.

    ``level`` is the DEFLATE level (1-12, libdeflate's): it changes the time the
    compression takes and the size of the file, never the pixels.
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
    encoding: BlockEncoding | None = None

    level: int = DEFLATE_LEVEL


def write_cog(path: str | Path, data, geobox: GeoBox, *, nodata=None,
              overview_resampling: str = "average", tags: dict | None = None,
              description: str | list[str] | None = None,
              scale: float | list[float] | None = None, offset: float | list[float] | None = None,
              units: str | list[str] | None = None, level: int = DEFLATE_LEVEL) -> Path:
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
    level
        The DEFLATE level, 1-12 (see :class:`CogJob`).

    Returns
    -------
    Path
        The final path.
    """
    return write_cogs([CogJob(Path(path), data, geobox, nodata, overview_resampling, tags,
                              description, scale=scale, offset=offset, units=units,
                              level=level)])[0]


def write_cogs(jobs: list[CogJob], *, memory_budget: int | None = None) -> list[Path]:
    """Write several COGs in one pass over their dask graphs, each compressed once.

    Layers computed by one kernel (the weight, date, flag and bands of a composite) share
    its tasks, which run once. Each file's pixels are gathered uncompressed (in memory up
    to ``memory_budget`` bytes for the whole call, default :data:`MEMORY_BUDGET`; in a raw
    file next to the target beyond it), then GDAL's COG driver writes the COG with its
    overviews to a temporary name, renamed into place. On error no file of the call is
    left, final or temporary.
    """
    budget = MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    sources: list[_Source] = []
    try:
        used = 0
        for job in jobs:
            shape = _check(job)
            nbytes = int(np.prod(shape)) * np.dtype(job.data.dtype).itemsize
            in_memory = used + nbytes <= budget
            used += nbytes if in_memory else 0
            sources.append(_MemSource(job, shape) if in_memory else _RawSource(job, shape))
        lazy = [s for s in sources if hasattr(s.job.data, "dask")]
        for s in sources:
            if not hasattr(s.job.data, "dask"):
                arr = np.asarray(s.job.data)
                s[(slice(None),) * arr.ndim] = arr
        done = set()
        if lazy:
            if _local_scheduler(lazy):
                _write_graph(lazy)
                done = {id(s) for s in lazy}
            else:
                _write_rows(lazy)
        return [s.path if id(s) in done else s.translate() for s in sources]
    except Exception as exc:
        for s in sources:  # all or nothing: the files already made by this call go too
            s.close()
            if s.made:
                for f in (s.path, s.path.with_name(s.path.name + ".aux.xml")):
                    if f.exists():
                        f.unlink()
        if isinstance(exc, AgriseriesError):  # e.g. a corrupt input found while computing
            raise
        where = (str(jobs[0].path) if len(jobs) == 1 else
                 f"{Path(jobs[0].path).parent} ({', '.join(Path(j.path).name for j in jobs)})")
        raise StoreError(f"{where}: writing the COG failed: {exc}") from exc
    finally:
        for s in sources:
            s.close()


def _check(job: CogJob) -> tuple[int, int, int]:
    """``(bands, rows, cols)`` of a job, checked against its grid."""
    data, path = job.data, Path(job.path)
    if not isinstance(job.level, (int, np.integer)) or not 1 <= int(job.level) <= 12:
        raise StoreError(f"{path}: DEFLATE level {job.level!r}: an integer from 1 to 12 expected")
    if data.ndim not in (2, 3) or tuple(data.shape[-2:]) != tuple(job.geobox.shape):
        raise StoreError(f"{path}: data shape {data.shape} does not match its grid "
                         f"{tuple(job.geobox.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return (1 if data.ndim == 2 else int(data.shape[0]),) + tuple(data.shape[-2:])


class _Source:
    """The uncompressed pixels of one job, filled block by block (``src[key] = block``
    with the array's own index, from any thread), then compressed once by
    :meth:`translate` into the COG."""

    def __init__(self, job: CogJob, shape: tuple[int, int, int]):
        self.job, self.shape, self.path = job, shape, Path(job.path)
        self.two_d = job.data.ndim == 2
        self.dtype = np.dtype(job.data.dtype)
        # one lock per file: blocks are put, the COG made and the pixels freed one at a time
        # (after a failure, dask threads still running may put blocks while we close);
        # blocks encoded in place (:meth:`put_encoded`) are written outside it, counted in
        # ``writers``: the COG is made and the pixels freed once none is left
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.writers = 0
        self.closed = False
        self.made = False  # the final file is written
        self.token = uuid.uuid4().hex

    def __dask_tokenize__(self):  # da.store must not try to hash the dataset
        return self.token

    def __setitem__(self, key, block) -> None:
        block = np.asarray(block)
        key = (slice(0, 1),) + tuple(key) if self.two_d else tuple(key)
        bands, rows, cols = (k.indices(n)[:2] for k, n in zip(key, self.shape))
        with self.lock:
            if self.closed:
                raise StoreError(f"{self.path}: writing was abandoned")
            self._put(bands, rows, cols, block if block.ndim == 3 else block[None])
            if self.job.on_block is not None:
                self.job.on_block(block)

    def _put(self, bands, rows, cols, block: np.ndarray) -> None:
        raise NotImplementedError

    def encodes_in_place(self) -> bool:
        """Whether :meth:`put_encoded` writes the job's blocks without making them first."""
        return False

    def put_encoded(self, key, block, encode: Callable) -> None:
        """``self[key] = encode(block)`` (the job's :class:`BlockEncoding`)."""
        self[key] = encode(block)

    def dataset(self):
        """The open GDAL dataset the COG driver copies from."""
        raise NotImplementedError

    def translate(self) -> Path:
        """Write the COG (one compression) under a temporary name, rename it into place,
        and free the uncompressed pixels."""
        job, path = self.job, self.path
        tmp_cog = _tmp_name(path, ".cog.tmp")
        try:
            with self.lock:
                self.idle.wait_for(lambda: self.writers == 0)
                if self.closed:
                    raise StoreError(f"{self.path}: writing was abandoned")
                with libtiff_messages() as said, rasterio.Env(**_MEM_VRT):
                    try:
                        rasterio.shutil.copy(self.dataset(), tmp_cog, driver="COG",
                                             compress="DEFLATE", level=job.level,
                                             predictor=_predictor(self.dtype),
                                             blocksize=BLOCKSIZE,
                                             overview_resampling=job.overview_resampling,
                                             BIGTIFF="IF_SAFER")
                    except Exception as exc:
                        if not said:
                            raise
                        # GDAL's error names the failing TIFF step; libtiff's, the cause
                        raise StoreError(f"{path}: writing the COG failed: {exc} (libtiff: "
                                         f"{'; '.join(dict.fromkeys(said))})") from exc
                os.replace(tmp_cog, path)  # under the lock: never after close() returned
                self.made = True
                if job.categories:
                    _write_categories(path, job.categories, job.colormap)
        finally:
            if os.path.exists(tmp_cog):
                os.unlink(tmp_cog)
            self.close()
        return path

    def close(self) -> None:
        """Free the pixels (waits for a block being put or the COG being made)."""
        with self.lock:
            self.idle.wait_for(lambda: self.writers == 0)
            if not self.closed:
                self.closed = True
                self._free()

    def _free(self) -> None:
        raise NotImplementedError


def _set_metadata(dst, job: CogJob, count: int) -> None:
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


class _MemSource(_Source):
    """Pixels in a numpy array, given to GDAL as ``MEM`` datasets in a VRT, with the
    overview levels computed from them (when :mod:`agriseries.io.overviews` covers the
    case; else GDAL's COG driver computes them)."""

    def __init__(self, job: CogJob, shape):
        super().__init__(job, shape)
        if self.dtype.name not in _GDAL_TYPES:
            raise StoreError(f"{self.path}: cannot write {self.dtype} data as a COG")
        _per_band_check(job, shape[0])
        self.pixels = np.zeros(shape, self.dtype)  # zero pages: touched when filled
        self.levels: list[np.ndarray] = []
        self.vrt = _tmp_name(self.path, ".vrt")
        self.ds = None

    def _put(self, bands, rows, cols, block):
        self.pixels[bands[0]:bands[1], rows[0]:rows[1], cols[0]:cols[1]] = block

    def encodes_in_place(self) -> bool:
        return self.job.on_block is None  # a callback sees the block made as without

    def put_encoded(self, key, block, encode: Callable) -> None:
        """``encode(block, out=...)`` straight into the block's place in the pixels. The
        pixels are written outside the lock (blocks of one file encoded on several threads
        at once), counted as a writer that :meth:`translate` and :meth:`close` wait for."""
        if not self.encodes_in_place():
            return super().put_encoded(key, block, encode)
        key = (slice(0, 1),) + tuple(key) if self.two_d else tuple(key)
        (b0, b1), (r0, r1), (c0, c1) = (k.indices(n)[:2] for k, n in zip(key, self.shape))
        with self.lock:
            if self.closed:
                raise StoreError(f"{self.path}: writing was abandoned")
            view = self.pixels[b0:b1, r0:r1, c0:c1]
            self.writers += 1
        try:
            encode(block, out=view[0] if self.two_d else view)
        finally:
            with self.lock:
                self.writers -= 1
                self.idle.notify_all()

    def dataset(self):
        job = self.job
        self.levels = build_overviews(self.pixels, job.overview_resampling, job.nodata,
                                      job.colormap, BLOCKSIZE) or []
        bands = []
        for b in range(self.shape[0]):
            overviews = "".join(f"<Overview>{_mem_source(level, b)}</Overview>"
                                for level in self.levels)
            bands.append(f"<SimpleSource>{_mem_source(self.pixels, b)}</SimpleSource>{overviews}")
        self.ds = _open_vrt(self, self.vrt, bands)
        return self.ds

    def _free(self):
        if self.ds is not None and not self.ds.closed:
            self.ds.close()
        self.pixels = None
        self.levels = []
        for f in (self.vrt, self.vrt + ".aux.xml"):
            if os.path.exists(f):
                os.unlink(f)


#: GDAL options to open the in-memory pixels by address from a VRT (set for the COG copy
#: only): ``MEM:::`` names and VRT sources pointing at them are refused by default
_MEM_VRT = {"GDAL_MEM_ENABLE_OPEN": "YES", "VRT_ALLOW_MEM_DRIVER": "YES"}


def _mem_source(arr: np.ndarray, band: int) -> str:
    """VRT source elements reading band ``band`` of a C-contiguous ``(bands, rows, cols)``
    array in place (GDAL's ``MEM:::DATAPOINTER`` name)."""
    nb, ny, nx = arr.shape
    name = (f"MEM:::DATAPOINTER={arr.__array_interface__['data'][0]},PIXELS={nx},LINES={ny},"
            f"BANDS={nb},DATATYPE={_GDAL_TYPES[arr.dtype.name]},PIXELOFFSET={arr.strides[2]},"
            f"LINEOFFSET={arr.strides[1]},BANDOFFSET={arr.strides[0]}")
    return (f'<SourceFilename relativeToVRT="0">{name}</SourceFilename>'
            f"<SourceBand>{band + 1}</SourceBand>")


def _open_vrt(source: "_Source", vrt: str, bands: list[str], subclass: str = ""):
    """The VRT of a source (its grid, no-data value and metadata; ``bands``: the inner XML
    of each band), written to ``vrt`` and opened."""
    from xml.sax.saxutils import escape

    nb, ny, nx = source.shape
    gb = source.job.geobox
    a = gb.affine
    gtype = _GDAL_TYPES[source.dtype.name]
    nodata = "" if source.job.nodata is None else f"<NoDataValue>{source.job.nodata}</NoDataValue>"
    sub = f' subClass="{subclass}"' if subclass else ""
    xml = "".join(f'<VRTRasterBand dataType="{gtype}" band="{b + 1}"{sub}>{nodata}{inner}'
                  "</VRTRasterBand>" for b, inner in enumerate(bands))
    with open(vrt, "w", encoding="utf-8") as f:
        f.write(f'<VRTDataset rasterXSize="{nx}" rasterYSize="{ny}">'
                f"<SRS>{escape(gb.crs.to_wkt())}</SRS>"
                f"<GeoTransform>{a.c!r}, {a.a!r}, {a.b!r}, {a.f!r}, {a.d!r}, {a.e!r}"
                f"</GeoTransform>{xml}</VRTDataset>")
    with rasterio.open(vrt, "r+") as dst:  # metadata through GDAL
        _set_metadata(dst, source.job, nb)
    return rasterio.open(vrt)


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "int64": "Int64", "uint64": "UInt64",
               "float32": "Float32", "float64": "Float64"}


class _RawSource(_Source):
    """Pixels in a raw band-sequential file next to the target (written with ``pwrite``,
    so a full disk is an ``OSError``, never a crash), read by GDAL through a VRT, with the
    overview levels computed from it."""

    def __init__(self, job: CogJob, shape):
        super().__init__(job, shape)
        if self.dtype.name not in _GDAL_TYPES:
            raise StoreError(f"{self.path}: cannot write {self.dtype} data as a COG")
        _per_band_check(job, shape[0])
        self.raw = _tmp_name(self.path, ".raw")
        self.vrt = _tmp_name(self.path, ".vrt")
        self.ds = None
        self.levels: list[np.ndarray] = []
        self.fd = os.open(self.raw, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        try:
            os.posix_fallocate(self.fd, 0, nbytes)  # ENOSPC now, not halfway through
        except AttributeError:  # pragma: no cover - not on Linux
            os.ftruncate(self.fd, nbytes)

    def _put(self, bands, rows, cols, block):
        nb, ny, nx = self.shape
        item = self.dtype.itemsize
        block = np.ascontiguousarray(block, dtype=self.dtype.newbyteorder("<"))
        full_rows = cols == (0, nx)
        for bi, b in enumerate(range(*bands)):
            base = b * ny * nx
            if full_rows:  # one contiguous run for the whole block
                os.pwrite(self.fd, block[bi].data, (base + rows[0] * nx) * item)
                continue
            for r in range(rows[0], rows[1]):
                os.pwrite(self.fd, block[bi, r - rows[0]].data, (base + r * nx + cols[0]) * item)

    def dataset(self):
        from xml.sax.saxutils import escape

        nb, ny, nx = self.shape
        item = self.dtype.itemsize
        job = self.job
        # the levels from the raw file read in place (uncompressed), held in memory while
        # the COG is written: a third of the file at most
        pixels = np.memmap(self.raw, dtype=self.dtype.newbyteorder("<"), mode="r",
                           shape=self.shape)
        try:
            self.levels = build_overviews(np.asarray(pixels), job.overview_resampling,
                                          job.nodata, job.colormap, BLOCKSIZE) or []
        finally:
            del pixels
        bands = [f'<SourceFilename relativeToVRT="0">{escape(self.raw)}</SourceFilename>'
                 f"<ImageOffset>{b * ny * nx * item}</ImageOffset><PixelOffset>{item}</PixelOffset>"
                 f"<LineOffset>{nx * item}</LineOffset><ByteOrder>LSB</ByteOrder>"
                 + "".join(f"<Overview>{_mem_source(level, b)}</Overview>" for level in self.levels)
                 for b in range(nb)]
        self.ds = _open_vrt(self, self.vrt, bands, "VRTRawRasterBand")
        return self.ds

    def _free(self):
        if self.ds is not None and not self.ds.closed:
            self.ds.close()
        self.levels = []
        os.close(self.fd)
        for f in (self.raw, self.vrt, self.vrt + ".aux.xml"):
            if os.path.exists(f):
                os.unlink(f)


def _per_band_check(job: CogJob, count: int) -> None:
    for value in (job.scale, job.offset, job.units):
        if value is not None:
            _per_band(value, count)


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


def _local_scheduler(sources: list[_Source]) -> bool:
    """Whether the data is computed by threads of this process (the default, or
    ``scheduler="threads"`` / ``"sync"``), so that dask tasks may store into the sources."""
    from ..core.graphs import local_scheduler

    return local_scheduler([s.job.data for s in sources])


def _write_graph(sources: list[_Source]) -> None:
    """The blocks of every file computed and put into its source one strip of block rows
    at a time (row ``i`` of every file's blocks, by position, in one graph: a task the files
    share -- the kernel of a composite, a read two resolutions use -- runs once), then each
    file's COG written. Finished blocks are not kept. One graph for the whole tile let
    dask's ordering run ahead: it computed one resolution's kernel over the whole tile
    first, holding the reads the other shares (the 10 m blue of every date for the 20 m
    grid, 4.7 GB on a full tile of 8 dates).

    On the threaded scheduler the next strip starts while the last blocks of one strip
    finish (:func:`_strip_window`), so that no thread idles at the end of each strip. The
    COGs are then compressed on the same threads, the largest files first (so that the last
    one to finish is a small one)."""
    import dask
    import dask.local
    from dask.base import get_scheduler
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
    from dask.optimization import cull

    # not optimised: array optimisation fuses a shared task into each consumer's chain,
    # which would run a composite's kernel once per layer
    # a layer encoded in place (e.g. float reflectance as int16) takes its source's blocks
    arrays = [s.job.data if a is None else a for s, a in
              ((s, _encoded_source(s)) for s in sources)]
    nstrips = max(a.numblocks[-2] for a in arrays)
    strips: list[list] = [[] for _ in range(nstrips)]
    layer: dict = {}
    for s, arr in zip(sources, arrays):
        starts = [np.cumsum((0,) + c) for c in arr.chunks]
        height = int(starts[-2][-1])
        put = (_put,) if arr is s.job.data else (_put_encoded, s.job.encoding.encode)
        for idx in np.ndindex(*arr.numblocks):
            region = tuple(slice(int(st[i]), int(st[i + 1])) for st, i in zip(starts, idx))
            key = (f"cog-put-{s.token}",) + idx
            layer[key] = put + (s, region, (arr.name,) + idx)
            strip = min(nstrips - 1, int(starts[-2][idx[-2]]) * nstrips // max(height, 1))
            strips[strip].append(key)
    graph = dict(HighLevelGraph.merge(HighLevelGraph.from_collections(
        f"cog-puts-{uuid.uuid4().hex}", layer, dependencies=arrays), *[a.dask for a in arrays]))
    fused = _fuse_puts(graph, strips)
    if fused is not None:
        graph, strips, strip_graph = fused
    else:  # a dask without the task spec: dask's cull of the tuple graph
        def strip_graph(keys):
            name = f"cog-strip-{uuid.uuid4().hex}"
            graph[name] = (len, keys)
            sub, _ = cull(graph, [name])
            del graph[name]
            return Delayed(name, sub)

    todo = [keys for keys in strips if keys]
    largest_first = sorted(sources, key=lambda s: -int(np.prod(s.shape)) * s.dtype.itemsize)
    if get_scheduler(collections=arrays) is dask.local.get_sync or len(todo) < 2:
        for keys in todo:
            dask.compute(strip_graph(keys), optimize_graph=False)
        for s in largest_first:
            s.translate()
        return
    _strip_window(strip_graph, todo, largest_first)


class _Chains:
    """The puts of one :func:`_put_chains` task (an opaque argument for dask: the task
    nodes inside are run by it, not by the scheduler)."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def __dask_tokenize__(self):
        return id(self)


def _put_chains(value, root, chains: _Chains) -> None:
    """Run each ``(chain, put)`` of ``chains`` on the value of the task ``root``: the chain's
    tasks one after the other (each on the previous one's value), then the put."""
    for chain, put in chains.items:
        key, v = root, value
        for node in chain:
            key, v = node.key, node({key: v})
        put({key: v})


def _count(*results) -> int:
    return len(results)


def _fuse_puts(graph: dict, strips: list[list]):
    """The strips' puts fused with what only they consume: ``(graph, strips, strip_graph)``
    (``strip_graph(keys)``: the graph of one strip, culled), or ``None`` on a dask without
    the task spec (``dask._task_spec``).

    A put stores its block; the block is often made by a chain of cheap tasks that only it
    uses (``weight = composite[0]``, ``flag = composite[2].astype(uint8)``, a mask made of
    the flag), from a task several files share (the kernel's block). Each such chain is run
    by one task per shared block and strip, with the puts of every file the block feeds:
    for a composite, two tasks per block position instead of about forty (a task costs the
    threaded scheduler 0.2-0.4 ms of CPU: ~1.5 s on a full tile). A chain stops at a task
    with another consumer or with other than one dependency, so no computation is repeated
    or moved away from the tasks it waits for; what runs is what dask would have run.
    The strips' graphs are culled here from the nodes' own dependencies (dask's ``cull``
    walks the tuples of the whole graph for every strip)."""
    try:
        from dask._task_spec import Task, TaskRef, convert_legacy_graph
    except ImportError:  # pragma: no cover - dask < 2024.12
        return None
    # tens of thousands of small objects and no cycle: without the collector's passes over
    # the whole heap that their allocation triggers (half of the conversion's time)
    paused = gc.isenabled()
    gc.disable()
    try:
        nodes = convert_legacy_graph(graph)
    finally:
        if paused:
            gc.enable()
    dependents: dict = {}
    for node in nodes.values():
        for d in node.dependencies:
            dependents[d] = dependents.get(d, 0) + 1
    name = f"cog-put-chains-{uuid.uuid4().hex}"
    fused_strips: list[list] = []
    for keys in strips:
        groups: dict = {}
        for key in keys:
            put = nodes[key]
            if not isinstance(put, Task) or len(put.dependencies) != 1:
                groups[("alone", key)] = None
                continue
            chain = []
            k = next(iter(put.dependencies))
            while dependents.get(k, 0) == 1:
                node = nodes[k]
                if not isinstance(node, Task) or len(node.dependencies) != 1:
                    break
                chain.append(node)
                k = next(iter(node.dependencies))
            groups.setdefault(k, []).append((tuple(reversed(chain)), put))
        out = []
        for root, items in groups.items():
            if items is None:
                out.append(root[1])
                continue
            if len(items) == 1 and not items[0][0]:
                out.append(items[0][1].key)
                continue
            gkey = (name, len(nodes))
            nodes[gkey] = Task(gkey, _put_chains, TaskRef(root), root, _Chains(items))
            for chain, put in items:
                del nodes[put.key]
                for node in chain:
                    del nodes[node.key]
            out.append(gkey)
        fused_strips.append(out)

    def strip_graph(keys):
        from dask.delayed import Delayed

        top = f"cog-strip-{uuid.uuid4().hex}"
        sub = {top: Task(top, _count, *(TaskRef(k) for k in keys))}
        todo = list(keys)
        while todo:
            k = todo.pop()
            if k not in sub:
                node = sub[k] = nodes[k]
                todo.extend(node.dependencies)
        return Delayed(top, sub)

    return nodes, fused_strips, strip_graph


def _strip_window(make: Callable, strips: list[list], sources: list[_Source]) -> None:
    """Compute the strips (``make(strips[i])`` gives strip ``i``'s graph) one after the other,
    each by its own dask scheduler over one shared pool of threads (dask's number of workers),
    starting strip ``i + 1`` as soon as strip ``i`` has no task ready to start (all its reads
    begun: what is left are its last blocks, which would leave threads idle), and strip
    ``i + 2`` only once strip ``i`` has finished: two strips in flight at most, and only in
    the tail of the first, so memory stays near one strip's. Then the ``sources`` are
    compressed on the same threads, in that order. On an error the strips already started
    are waited for, then the first error is raised."""
    import dask
    import dask.threaded
    from concurrent.futures import ThreadPoolExecutor
    from dask.callbacks import Callback
    from dask.system import CPU_COUNT

    workers = dask.config.get("num_workers", None)
    pool = own = None
    if workers is None and dask.config.get("pool", None) is None:
        pool = dask.threaded.default_pool  # dask's own threads (their open input files)
    if pool is None or getattr(pool, "_shutdown", False):
        pool = own = ThreadPoolExecutor(int(workers or CPU_COUNT), thread_name_prefix="cog-write")
    nthreads = int(workers or CPU_COUNT)  # dask's default pool has CPU_COUNT threads
    drivers = ThreadPoolExecutor(2, thread_name_prefix="cog-strip")

    def run(graph, tail: threading.Event):
        def posttask(key, result, dsk, state, worker_id):
            if len(state["ready"]) < nthreads:
                tail.set()

        watch = (None, None, None, posttask, None)  # dask's callback tuple: posttask only
        try:
            return dask.compute(graph, optimize_graph=False, scheduler="threads", pool=pool,
                                callbacks=[*Callback.active, watch])
        finally:
            tail.set()

    running = []  # (future, tail event) of the strips in flight, oldest first
    try:
        for keys in strips:
            if running:
                running[-1][1].wait()  # the previous strip's tail
            if len(running) == 2:
                running.pop(0)[0].result()
            tail = threading.Event()
            running.append((drivers.submit(run, make(keys), tail), tail))
        while running:
            running.pop(0)[0].result()
        for f in [pool.submit(s.translate) for s in sources]:
            f.result()
    finally:
        for f, _ in running:  # after an error: let the started strips end before cleaning up
            f.exception()
        drivers.shutdown(wait=True)
        if own is not None:
            own.shutdown(wait=True)


def _put(source: _Source, region: tuple, block) -> None:
    source[region] = block


def _put_encoded(encode: Callable, source: _Source, region: tuple, block) -> None:
    source.put_encoded(region, block, encode)


def _encoded_source(source: _Source):
    """The dask array whose blocks the writer encodes into ``source`` in place (its job's
    :class:`BlockEncoding`), or ``None``: no encoding, a source that does not take it, or
    an encoding source that does not match the data block for block."""
    enc, data = source.job.encoding, source.job.data
    if enc is None or not source.encodes_in_place():
        return None
    src = enc.source
    if (not hasattr(src, "dask") or getattr(src, "chunks", None) != data.chunks
            or src.ndim != data.ndim):
        return None
    return src


def _write_rows(sources: list[_Source]) -> None:
    """Blocks computed by a scheduler elsewhere (a distributed cluster), one row of blocks
    of every file per ``dask.compute`` call (tasks shared between files run once, memory
    stays at a strip), each stored here into its source.

    Each call sends the scheduler only the tasks its row needs: the graph is culled here,
    once per row. (Given the files' whole graphs, dask sends them whole with every call
    and culls them on the scheduler: 11 tile rows sent the 11 rows' tasks 11 times.)"""
    from dask.base import get_scheduler
    from dask.highlevelgraph import HighLevelGraph
    from dask.optimization import cull

    get = get_scheduler(collections=[s.job.data for s in sources])
    graph = dict(HighLevelGraph.merge(*[s.job.data.dask for s in sources]))
    plans = []
    for s in sources:
        data = s.job.data
        starts = [np.cumsum((0,) + c) for c in ((1,) if data.ndim == 2 else data.chunks[0],
                                                  data.chunks[-2], data.chunks[-1])]
        plans.append((s, starts))
    nrows = max(len(p[1][1]) - 1 for p in plans)
    for i in range(nrows):
        todo = [(s, b, j, st) for s, st in plans if i < len(st[1]) - 1
                for b in range(len(st[0]) - 1) for j in range(len(st[2]) - 1)]
        keys = [(s.job.data.name, i, j) if s.job.data.ndim == 2 else (s.job.data.name, b, i, j)
                for s, b, j, _ in todo]
        row, _ = cull(graph, keys)
        results = get(row, keys)
        for (s, b, j, st), block in zip(todo, results):
            key = (slice(st[1][i], st[1][i + 1]), slice(st[2][j], st[2][j + 1]))
            if s.job.data.ndim == 3:
                key = (slice(st[0][b], st[0][b + 1]),) + key
            s[key] = block


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


__all__ = ["BlockEncoding", "CogJob", "MEMORY_BUDGET", "write_cog", "write_cogs", "validate_cog", "overview_resampling_for", "Resampling",
           "class_colormap", "bit_categories", "hex_rgba", "PALETTE"]
