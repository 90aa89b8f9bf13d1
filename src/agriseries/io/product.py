"""What a reader finds in a product, and the one loader that turns it into a Dataset.

A reader parses a product's metadata into a :class:`SourceProduct`: where each band
is, how its integers become reflectance (``value = DN * scale + offset``), its
no-data value, the provider's quality layers with the function that decodes them
into the common mask bits (:mod:`agriseries.core.masks`), auxiliary layers (AOT) and
the sun/view angle grids. It reads no pixel.

:func:`load` then reads any :class:`SourceProduct` onto a target grid (the product's
own grid at a resolution, or a Sentinel-2 tile grid for Landsat), lazily with dask,
chunk by chunk, each chunk warped by GDAL from only the source window it needs. It
returns the agriseries Dataset (README, "The in-memory object"):

* dims ``(time, y, x)`` with ``time`` of length 1, on an odc-geo GeoBox
  (``ds.odc.geobox``);
* one float32 variable per band, reflectance 0-1, NaN where no data;
* ``mask``: uint8 common mask bits;
* ``aot`` (when the product has it), float32, unitless;
* ``sun_zenith``, ``sun_azimuth``, ``view_zenith``, ``view_azimuth``: float32
  degrees, interpolated from the product's angle grids (band-mean view angles;
  ``angles="per_band"`` adds ``view_zenith_<band>`` / ``view_azimuth_<band>``);
* coordinates on ``time``: ``sensor``, ``source_id``, ``level``, ``producer``,
  ``tile``.

A :class:`BlockHolder` keeps the blocks of one lazy read (:func:`layer_arrays`) from one
computation of its graph to the next, so that the second decodes them without reading
the file (the composite's coarse and main passes).
"""

from __future__ import annotations

import datetime as _dt
import math
import mmap
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Mapping, NamedTuple

import dask.array as da
from dask.base import tokenize
import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.xr import xr_coords
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..core.errors import (
    ConfigurationError,
    CorruptProductError,
    EmptyIntersectionError,
)
from ..core.grid import snap_to_tile, tile_geobox
from ..core.masks import CF_ATTRS, MaskBit
from .blockcodec import decode_block
from .files import file_geobox
from .opened import open_raster

Kind = Literal["reflectance", "quality", "aux"]

#: Default chunk edge in pixels: 2048 x 2048 float32 = 16 MiB per chunk and band.
DEFAULT_CHUNK = 2048


@dataclass(frozen=True)
class Asset:
    """One raster layer inside a product.

    Attributes
    ----------
    path
        A path GDAL can open (plain file, ``/vsizip/...``, ``NETCDF:...``).
    band_index
        1-based band index within the file.
    scale, offset
        ``value = DN * scale + offset`` (reflectance 0-1 for reflectance bands).
    nodata
        The DN meaning "no measurement"; ``None`` when the file has none.
    resolution
        Native pixel size in metres (informative; the file's georeferencing rules).
    kind
        ``reflectance``, ``quality`` (decoded by the product's mask decoder) or ``aux``.
    unit
        Unit of the values of an ``aux`` layer (``K``, ``degree``), the ``units`` attribute
        of its variable in :func:`load`.
    """

    path: str
    band_index: int = 1
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    resolution: float | None = None
    kind: Kind = "reflectance"
    unit: str | None = None

    @property
    def resampling(self) -> Resampling:
        """Nearest for quality layers, bilinear for continuous values (average when the
        target grid is coarser than the file, e.g. 10 m bands read at 20 m)."""
        return Resampling.nearest if self.kind == "quality" else Resampling.bilinear


@dataclass(frozen=True)
class AngleGrid:
    """A coarse grid of angles (degrees), given at points spaced ``step`` metres.

    Value ``[i, j]`` is the angle at ``(x0 + j * step, y0 - i * step)`` in ``crs``
    (the layout of the Sentinel-2 ``MTD_TL.xml`` grids: 23 x 23 nodes, 5 km apart,
    from the tile's upper-left corner). A constant angle (Landsat scene centre) is a
    1 x 1 grid.
    """

    zenith: np.ndarray
    azimuth: np.ndarray
    x0: float
    y0: float
    step: float
    crs: str

    def on(self, geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear interpolation of (zenith, azimuth) at the pixel centres of ``geobox``.

        NaN nodes (outside a detector) are first filled with the nearest valid node;
        azimuths are interpolated through their sine and cosine so that 359 and 1
        degrees average to 0, not 180.
        """
        return _interp_angles(self, geobox)


def nanmean_angles(deg: np.ndarray, axis: int | None = 0, circular: bool = False) -> np.ndarray:
    """Mean of angle values in degrees ignoring NaN (nodes outside a detector).

    ``circular=True`` averages azimuths as unit vectors (359 and 1 give 0, not 180),
    result in [0, 360). Where every value is NaN the result is NaN, without a warning.
    """
    arr = np.asarray(deg, dtype=np.float64)
    ok = np.isfinite(arr)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        if circular:
            rad = np.deg2rad(np.where(ok, arr, 0.0))
            s = np.where(ok, np.sin(rad), 0.0).sum(axis=axis)
            c = np.where(ok, np.cos(rad), 0.0).sum(axis=axis)
            out = np.rad2deg(np.arctan2(s, c)) % 360.0
        else:
            out = np.where(ok, arr, 0.0).sum(axis=axis) / np.maximum(n, 1)
    return np.where(n > 0, out, np.nan)


def _fill_nearest(a: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return a
    _, (ii, jj) = distance_transform_edt(bad, return_indices=True)
    return a[ii, jj]


def _interp_angles(grid: AngleGrid, geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import map_coordinates

    ny, nx = geobox.shape
    if grid.zenith.size == 1:
        z = np.full((ny, nx), float(grid.zenith.ravel()[0]), np.float32)
        a = np.full((ny, nx), float(grid.azimuth.ravel()[0]), np.float32)
        return z, a
    gb = geobox if CRS(geobox.crs) == CRS(grid.crs) else None  # compare CRSs, not their texts
    if gb is None:
        raise ConfigurationError(
            f"angle grid in {grid.crs} cannot be interpolated onto a grid in {geobox.crs}"
        )
    xs = geobox.coords["x"].values if "x" in geobox.coords else None
    ys = geobox.coords["y"].values if "y" in geobox.coords else None
    cols = (xs - grid.x0) / grid.step
    rows = (grid.y0 - ys) / grid.step
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    coords = np.stack([rr.ravel(), cc.ravel()])

    def _ip(arr):
        return map_coordinates(_fill_nearest(arr.astype(np.float64)), coords, order=1,
                               mode="nearest").reshape(ny, nx)

    zen = _ip(grid.zenith)
    rad = np.deg2rad(_fill_nearest(grid.azimuth.astype(np.float64)))
    s, c = _ip(np.sin(rad)), _ip(np.cos(rad))
    az = np.rad2deg(np.arctan2(s, c)) % 360.0
    return zen.astype(np.float32), az.astype(np.float32)


MaskDecoder = Callable[[Mapping[str, object]], object]


@dataclass(frozen=True)
class SourceProduct:
    """Everything a reader learnt from a product's metadata, before any pixel is read.

    Attributes
    ----------
    path
        The product folder (or archive) as given.
    product_id
        The provider's product id (``S2A_MSIL2A_...``, ``LC08_L2SP_...``).
    level
        ``L1C`` (top of atmosphere) or ``L2A`` (surface reflectance).
    sensor
        ``S2A``, ``S2B``, ``S2C``, ``L8`` or ``L9``.
    producer
        Who made the level: ``ESA`` (L1C), ``SEN2COR``, ``MAJA``, ``MACCS``,
        ``USGS`` (Landsat L1), ``LASRC`` (Landsat L2).
    datetime
        Acquisition time (UTC, timezone-aware).
    crs
        The CRS of the product's rasters.
    footprint
        The area with data (or the product's extent), in any CRS.
    tile
        Sentinel-2 MGRS tile id when the product is on a tile grid, else ``None``.
    bands
        Reflectance bands by name (``B04``; Landsat ``B4``).
    quality
        Provider quality layers by name (``SCL``, ``CLDPRB``, ``CLM``, ``QA_PIXEL``...).
    mask_decoder
        Pure function from ``{name: array}`` of the quality layers to the common bits.
    aux
        Other layers by variable name (``aot``).
    sun_angles
        Sun zenith/azimuth grid.
    view_angles
        Viewing zenith/azimuth grid per band name.
    native_grids
        The product's own grid per resolution (metres), when known from metadata.
    metadata
        Other facts worth keeping (processing baseline, offsets, cloud cover...).
    """

    path: str
    product_id: str
    level: str
    sensor: str
    producer: str
    datetime: _dt.datetime
    crs: str
    footprint: Geometry | None
    bands: dict[str, Asset]
    quality: dict[str, Asset] = field(default_factory=dict)
    mask_decoder: MaskDecoder | None = None
    aux: dict[str, Asset] = field(default_factory=dict)
    sun_angles: AngleGrid | None = None
    view_angles: dict[str, AngleGrid] = field(default_factory=dict)
    tile: str | None = None
    native_grids: dict[int, GeoBox] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)

    def grid(self, resolution: int) -> GeoBox:
        """The product's own grid at ``resolution`` metres.

        From the metadata when it gives one, else the Sentinel-2 tile grid, else the
        grid of the first band file whose pixel size is ``resolution``.
        """
        if resolution in self.native_grids:
            return self.native_grids[resolution]
        if self.native_grids:
            # another resolution: the area of the finest native grid, on the tile's pixel
            # lattice when the product is on a tile, else from the native grid's corner
            base = self.native_grids[min(self.native_grids)]
            if self.tile is not None:
                snapped = snap_to_tile(tile_geobox(self.tile, resolution), base.extent)
                if snapped is not None:
                    return snapped
            a = base.affine
            ny = max(1, math.ceil(abs(base.shape.y * a.e) / resolution - 1e-9))
            nx = max(1, math.ceil(abs(base.shape.x * a.a) / resolution - 1e-9))
            return GeoBox((ny, nx), Affine(resolution, 0, a.c, 0, -resolution, a.f), base.crs)
        if self.tile is not None:
            return tile_geobox(self.tile, resolution)
        for asset in list(self.bands.values()) + list(self.quality.values()):
            gb = file_geobox(asset.path)
            if abs(gb.resolution.x - resolution) < 1e-6:
                return gb
        raise ConfigurationError(
            f"{self.path}: no grid at {resolution} m; resolutions available: "
            f"{sorted({a.resolution for a in self.bands.values()})}"
        )


class _Raw(NamedTuple):
    """One block as GDAL read it, before :func:`_decode`: the digital numbers, the no-data
    value, and which pixels the source covers (``inside``: the rows and columns of an
    aligned window inside the file; ``valid``: a warp's alpha band; neither: all)."""

    data: np.ndarray
    nodata: float | None
    inside: tuple[int, int, int, int] | None = None
    valid: np.ndarray | None = None


def _read_block(asset: Asset, geobox: GeoBox, dtype, fill) -> np.ndarray:
    """Read one asset onto ``geobox`` (one dask block).

    When the file's pixels line up with the target (same CRS, pixel size and lattice)
    the block is a plain windowed read; otherwise GDAL warps the source onto it.
    """
    return _decode(asset, _read_raw(asset, geobox), dtype, fill)


def _read_raw(asset: Asset, geobox: GeoBox) -> _Raw:
    """The digital numbers of one asset on ``geobox``, as :func:`_read_block` reads them."""
    ny, nx = geobox.shape
    try:
        with open_raster(asset.path) as src:
            nodata = asset.nodata if asset.nodata is not None else src.nodata
            win = _aligned_window(src, geobox)
            if win is not None:
                inside = _inside_rect(src, win)
                # a window inside the file is read directly (a boundless read builds a VRT
                # for every block); one reaching past it is filled with the no-data value
                whole = inside == (0, int(win.height), 0, int(win.width))
                data = src.read(asset.band_index, window=win, boundless=not whole,
                                fill_value=nodata if nodata is not None else 0)
                return _Raw(data, nodata, inside=inside)
            # Without a no-data value, an alpha band tells the target pixels the source
            # does not cover (else they would read as DN 0).
            resampling = asset.resampling
            if resampling == Resampling.bilinear and src.crs == geobox.crs \
                    and abs(geobox.resolution.x) > abs(src.res[0]) * 1.5:
                resampling = Resampling.average  # reading a coarser grid: aggregate pixels
            with WarpedVRT(src, crs=geobox.crs, transform=geobox.affine, width=nx, height=ny,
                           resampling=resampling, src_nodata=nodata,
                           nodata=nodata, add_alpha=nodata is None) as vrt:
                data = vrt.read(asset.band_index)
                valid = vrt.read(vrt.count) > 0 if nodata is None else None
            return _Raw(data, nodata, valid=valid)
    except RasterioIOError as exc:
        raise CorruptProductError(asset.path, f"cannot read raster data: {exc}") from exc


def _decode(asset: Asset, raw: _Raw, dtype, fill) -> np.ndarray:
    """The block :func:`_read_block` returns from the digital numbers :func:`_read_raw`
    read: reflectance (``DN * scale + offset``, NaN where no data) as ``dtype``, or a
    quality layer's values (``fill`` where no data)."""
    data, nodata = raw.data, raw.nodata
    if asset.kind != "quality" and np.dtype(dtype) == np.float32:
        # one compiled pass, the values of the numpy path below
        out = decode_block(data, nodata, asset.scale, asset.offset, inside=raw.inside,
                           valid=raw.valid)
        if out is not None:
            return out
    if raw.inside is not None:
        r0, r1, c0, c1 = raw.inside
        valid = np.zeros(data.shape, bool)
        valid[r0:r1, c0:c1] = True
    else:
        valid = np.ones(data.shape, bool) if raw.valid is None else raw.valid.copy()
    if nodata is not None:
        valid &= ~np.isnan(data) if np.isnan(nodata) else data != nodata
    if asset.kind == "quality":
        return np.where(valid, data, fill).astype(dtype)
    out = data.astype(np.float32) * np.float32(asset.scale) + np.float32(asset.offset)
    out[~valid] = np.nan
    return out.astype(dtype)


def _aligned_window(src, geobox: GeoBox) -> Window | None:
    """A window of ``src`` that is exactly ``geobox`` (same CRS, pixel size and lattice)."""
    if src.crs != geobox.crs:
        return None
    a, b = src.transform, geobox.affine
    if not (abs(a.a - b.a) < 1e-9 and abs(a.e - b.e) < 1e-9 and a.b == 0 and a.d == 0 and b.b == 0):
        return None
    col = (b.c - a.c) / a.a
    row = (b.f - a.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(int(round(col)), int(round(row)), geobox.shape.x, geobox.shape.y)


def _inside_rect(src, window: Window) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)``: the rows and columns of ``window`` (counted from its
    corner) that lie inside ``src``."""
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    return (min(max(-r0, 0), h), max(min(src.height - r0, h), 0),
            min(max(-c0, 0), w), max(min(src.width - c0, w), 0))


def _read_block_in_time(asset: Asset, geobox: GeoBox, dtype, fill) -> np.ndarray:
    """:func:`_read_block` with a leading (time) axis of length 1."""
    return _read_block(asset, geobox, dtype, fill)[None]


class BlockHolder:
    """The blocks of one lazy read kept between two computations of the same graph.

    A read made with a holder (``layer_arrays(..., held={band: holder})``) looks in the
    holder first. While the holder records (``with holder.recording():``), a block it does
    not have is read from the file and kept -- its digital numbers as GDAL returned them
    (2 bytes a pixel for int16/uint16 data, half the float32 block), with what decoding
    them needs -- and returned decoded; a block it has is returned and kept. Otherwise a
    block it has is taken out (released) and returned decoded, the same values, bit for
    bit, as a read of the file (the same decoding); one it does not have is read from the
    file. So the first computation after the recording one reads no file for these blocks
    and releases them one by one; any later one (a second ``.compute()``, a retry) reads
    the files as if there had been no holder.

    The composite (:func:`agriseries.composite.synthesize`) records the 10 m blue of each
    Sentinel-2 date during its coarse pass, which reads it for the 20 m mask's no-data, and
    its main pass takes each block back once. The holder is referenced by the read's graph
    only: blocks no computation takes go with the graph.

    Safe for threads (the threaded scheduler's tasks take blocks concurrently). A holder
    pickled (sent to a distributed worker or another process) arrives empty and not
    recording, so that other processes read the files. Each held block is in memory pages of
    its own, returned to the system when the block is taken.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[int, _Raw] = {}
        self._recording = 0
        self.token = uuid.uuid4().hex

    def __len__(self) -> int:
        """The number of blocks held."""
        with self._lock:
            return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """The bytes of the digital numbers held."""
        with self._lock:
            return sum(r.data.nbytes for r in self._blocks.values())

    @contextmanager
    def recording(self) -> Iterator["BlockHolder"]:
        """Keep the blocks read inside the ``with`` block (nestable)."""
        with self._lock:
            self._recording += 1
        try:
            yield self
        finally:
            with self._lock:
                self._recording -= 1

    def clear(self) -> None:
        """Release every block held."""
        with self._lock:
            self._blocks.clear()

    def __reduce__(self):
        return (BlockHolder, ())  # pickled: empty, not recording

    def __dask_tokenize__(self):
        return self.token

    def _get(self, key: int) -> _Raw | None:
        with self._lock:
            if self._recording:
                return self._blocks.get(key)
            return self._blocks.pop(key, None)

    def _keep(self, key: int, raw: _Raw) -> None:
        with self._lock:
            if not self._recording:
                return
        raw = raw._replace(data=_own_pages(raw.data))
        with self._lock:
            if self._recording:
                self._blocks[key] = raw


def _own_pages(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in pages of its own (an anonymous memory map), given back to the
    system as soon as the copy is freed. A held block allocated as numpy allocates (2 MB:
    from the allocator's arenas) left its memory in the arenas once taken, where the
    writer's growing buffers (large allocations, mapped apart) could not reuse it: on a
    full tile the process kept the 1.9 GB of held blocks to the end (peak 4.2 -> 6.0 GB)."""
    buf = mmap.mmap(-1, max(a.nbytes, 1))
    out = np.frombuffer(buf, a.dtype, count=a.size).reshape(a.shape)
    out[...] = a
    return out


def _read_held(holder: BlockHolder, key: int, asset: Asset, geobox: GeoBox, dtype, fill
               ) -> np.ndarray:
    """:func:`_read_block` through ``holder`` (block ``key`` of the read): the block it
    holds, else the file's (kept while it records)."""
    raw = holder._get(key)
    if raw is None:
        raw = _read_raw(asset, geobox)
        holder._keep(key, raw)
    return _decode(asset, raw, dtype, fill)


def _lazy(asset: Asset, geobox: GeoBox, chunks: int, dtype, fill, *,
          in_time: bool = False, holder: BlockHolder | None = None) -> da.Array:
    """A dask array of ``asset`` on ``geobox``, one task per chunk; ``in_time``: with a
    leading (time) axis of length 1, added by the read task itself (indexing the 2-D array
    with ``[None]`` would add one more task per chunk, which costs the threaded scheduler
    about 0.1 ms of CPU each: about 1 s for the 10 000 block reads of a full-tile month);
    ``holder``: each block read through it (:class:`BlockHolder`; 2-D reads only)."""
    if holder is not None and in_time:
        raise ValueError("a read through a BlockHolder has no time axis")
    ny, nx = geobox.shape
    ychunks = tuple(min(chunks, ny - i) for i in range(0, ny, chunks))
    xchunks = tuple(min(chunks, nx - j) for j in range(0, nx, chunks))
    token = tokenize(asset, str(geobox), chunks, np.dtype(dtype).str, fill, in_time)
    name = f"read-{token}" if holder is None else f"read-held-{tokenize(token, holder)}"
    read = _read_block_in_time if in_time else _read_block
    lead = (0,) if in_time else ()
    dsk = {}
    for bi, y0 in enumerate(range(0, ny, chunks)):
        for bj, x0 in enumerate(range(0, nx, chunks)):
            sub = geobox[y0:y0 + ychunks[bi], x0:x0 + xchunks[bj]]
            if holder is None:
                dsk[(name, *lead, bi, bj)] = (read, asset, sub, dtype, fill)
            else:
                dsk[(name, bi, bj)] = (_read_held, holder, bi * len(xchunks) + bj, asset, sub,
                                       dtype, fill)
    return da.Array(dsk, name, chunks=((1,),) * in_time + (ychunks, xchunks), dtype=dtype)


def layer_arrays(product: SourceProduct, geobox: GeoBox, bands: list[str], *,
                 with_aux: bool = False, chunks: int = DEFAULT_CHUNK,
                 held: Mapping[str, BlockHolder] | None = None) -> dict[str, da.Array]:
    """The reflectance ``bands`` of a product and, with ``with_aux``, its auxiliary layers
    (``aot``) on ``geobox``, as 2-D lazy arrays (float32, NaN no data), one read task per
    chunk: :func:`load`'s variables without the time axis, for a caller that handles the
    dates itself (the composite). The mask is :func:`decoded_mask`. ``held``: the bands
    read through a :class:`BlockHolder` (one holder per band).

    Raises
    ------
    MissingBandError
        A requested band is not in the product.
    EmptyIntersectionError
        The product does not overlap ``geobox``.
    """
    return _band_arrays(product, target_grid(product, geobox=geobox), bands, with_aux, chunks,
                        held=held)


def _band_arrays(product: SourceProduct, gb: GeoBox, names: list[str], with_aux: bool,
                 chunks: int, in_time: bool = False,
                 held: Mapping[str, BlockHolder] | None = None) -> dict[str, da.Array]:
    """The lazy reads of :func:`layer_arrays` and :func:`load` (``in_time``: with load's
    time axis), the bands checked first."""
    from ..core.errors import MissingBandError

    missing = [b for b in names if b not in product.bands]
    if missing:
        raise MissingBandError(
            product.path, f"band(s) {', '.join(missing)} not in the product "
            f"(it has {', '.join(product.bands)})"
        )
    assets = [(n, product.bands[n]) for n in names]
    assets += list(product.aux.items()) if with_aux else []
    return {n: _lazy(a, gb, chunks, np.float32, np.nan, in_time=in_time,
                  holder=(held or {}).get(n))
            for n, a in assets}


def decoded_mask(product: SourceProduct, geobox: GeoBox, chunks: int = DEFAULT_CHUNK) -> da.Array:
    """The product's common mask bits on ``geobox`` (uint8, lazy), decoded from its quality
    layers, before :func:`load` adds NODATA where the first band has no data."""
    layers = {k: _lazy(a, geobox, chunks, np.uint16, 0) for k, a in product.quality.items()}
    return da.asarray(product.mask_decoder(layers)).astype(np.uint8)


def mask_with_band_nodata(mask, band):
    """``mask`` with the NODATA bit where ``band`` (reflectance) is NaN."""
    return mask | (da.isnan(band).astype(np.uint8) * np.uint8(MaskBit.NODATA))


def aligned_with(asset: Asset, geobox: GeoBox) -> bool:
    """Whether the asset's pixels are exactly those of a grid of ``geobox``'s CRS, pixel size
    and lattice (then a read of ``geobox`` is a plain window, with no resampling)."""
    try:
        with rasterio.open(asset.path) as src:
            return _aligned_window(src, geobox) is not None
    except RasterioIOError as exc:
        raise CorruptProductError(asset.path, f"cannot read raster data: {exc}") from exc


def finest_resolution(product: SourceProduct, default: int = 10) -> int:
    """The finest resolution of a product's reflectance bands (a band of unknown resolution
    counts as ``default``); for a product without reflectance bands (L3B variables, L4
    maps), the finest of its native grids.

    Raises
    ------
    CorruptProductError
        If the product has neither bands nor a native grid to take a resolution from.
    """
    if product.bands:
        return int(min(b.resolution or default for b in product.bands.values()))
    if product.native_grids:
        return int(min(product.native_grids))
    raise CorruptProductError(product.path, "no band and no grid to take a resolution from "
                                            "(expected reflectance bands or a native grid; "
                                            "pass resolution= or geobox=)")


def target_grid(product: SourceProduct, resolution: int | None = None,
                geobox: GeoBox | None = None, tile: str | None = None) -> GeoBox:
    """The grid a product is loaded onto.

    ``geobox`` wins; else ``tile`` (the part of that tile the product covers, at
    ``resolution``); else the product's own grid at ``resolution``.

    Raises
    ------
    EmptyIntersectionError
        If the product's footprint misses the requested tile or grid.
    """
    if geobox is not None:
        gb = geobox
    elif tile is not None:
        res = resolution or 10
        tb = tile_geobox(tile, res)
        fp = product.footprint if product.footprint is not None else product.grid(
            finest_resolution(product, res)).extent
        gb = snap_to_tile(tb, fp)
        if gb is None:
            raise EmptyIntersectionError(
                product.path, f"the product's footprint does not overlap tile {tile}"
            )
        return gb
    else:
        gb = product.grid(resolution or finest_resolution(product))
    if product.footprint is not None:
        fp = product.footprint.to_crs(gb.crs)
        if not gb.extent.intersects(fp) or gb.extent.intersection(fp).area <= 0:
            raise EmptyIntersectionError(
                product.path, f"the product's footprint does not overlap the requested grid {gb}"
            )
    return gb


def load(product: SourceProduct, resolution: int | None = None, *, geobox: GeoBox | None = None,
         tile: str | None = None, bands: list[str] | None = None,
         angles: Literal["mean", "per_band", None] = "mean",
         with_mask: bool = True, with_aux: bool = True,
         chunks: int = DEFAULT_CHUNK) -> xr.Dataset:
    """Load a product as the agriseries Dataset (see the module docstring).

    Parameters
    ----------
    product
        What a reader returned.
    resolution
        Pixel size in metres on the product's own grid (or the tile's, with ``tile``).
        Default: the finest band resolution.
    geobox
        An explicit target grid (overrides ``resolution`` and ``tile``).
    tile
        Load onto this Sentinel-2 tile grid, cropped to the product's footprint
        (Landsat, MUSCATE Lambert-93 products).
    bands
        Band names to load (default: all reflectance bands).
    angles
        ``"mean"``: sun and band-mean view angles; ``"per_band"``: also one view
        zenith/azimuth per band; ``None``: no angle variables.
    with_mask, with_aux
        Load the ``mask`` (decoded quality layers) and the auxiliary layers (``aot``).
    chunks
        Chunk edge in pixels (dask).

    Raises
    ------
    MissingBandError
        A requested band is not in the product.
    EmptyIntersectionError
        The product does not overlap the requested grid.
    """
    gb = target_grid(product, resolution, geobox, tile)
    names = list(product.bands) if bands is None else list(bands)
    reads = _band_arrays(product, gb, names, with_aux, chunks, in_time=True)
    coords = xr_coords(gb)
    data_vars: dict[str, xr.DataArray] = {}
    for name in names:
        data_vars[name] = xr.DataArray(reads[name], dims=("time", "y", "x"),
                                       attrs={"units": "1", "long_name": f"reflectance {name}"})
    if with_mask and product.quality and product.mask_decoder is not None:
        mask = decoded_mask(product, gb, chunks)
        # Pixels outside every reflectance band's data are NODATA whatever the provider says.
        if names:
            mask = mask_with_band_nodata(mask, data_vars[names[0]].data[0])
        data_vars["mask"] = xr.DataArray(mask[None], dims=("time", "y", "x"), attrs=dict(CF_ATTRS))
    for name, asset in (product.aux.items() if with_aux else ()):
        data_vars[name] = xr.DataArray(reads[name], dims=("time", "y", "x"),
                                       attrs={"units": asset.unit} if asset.unit else {})
    if angles is not None:
        data_vars.update(_angle_vars(product, gb, angles, names, chunks))
    ts = np.datetime64(product.datetime.astimezone(_dt.timezone.utc).replace(tzinfo=None), "ns")
    ds = xr.Dataset(
        data_vars,
        coords={
            **coords,
            "time": ("time", [ts]),
            "sensor": ("time", [product.sensor]),
            "source_id": ("time", [product.product_id]),
            "level": ("time", [product.level]),
            "producer": ("time", [product.producer]),
            "tile": ("time", [product.tile or ""]),
        },
        attrs={"source_path": product.path},
    )
    return ds


def _angle_vars(product: SourceProduct, gb: GeoBox, mode: str, names: list[str],
                chunks: int) -> dict[str, xr.DataArray]:
    out: dict[str, xr.DataArray] = {}

    def _delayed_pair(grid: AngleGrid, stem: str):
        ny, nx = gb.shape
        ch = ((min(chunks, ny),) if ny <= chunks else tuple(
            min(chunks, ny - i) for i in range(0, ny, chunks)),
              tuple(min(chunks, nx - j) for j in range(0, nx, chunks)))
        # named by content: two products' grids must never share a task name
        token = tokenize(grid.zenith, grid.azimuth, grid.x0, grid.y0, grid.step, str(grid.crs),
                         str(gb), chunks)
        zen_name, az_name = f"angz-{stem}-{token}", f"anga-{stem}-{token}"
        dz, daz = {}, {}
        y0 = 0
        for bi, hy in enumerate(ch[0]):
            x0 = 0
            for bj, wx in enumerate(ch[1]):
                sub = gb[y0:y0 + hy, x0:x0 + wx]
                dz[(zen_name, bi, bj)] = (lambda g, s: g.on(s)[0], grid, sub)
                daz[(az_name, bi, bj)] = (lambda g, s: g.on(s)[1], grid, sub)
                x0 += wx
            y0 += hy
        z = da.Array(dz, zen_name, chunks=ch, dtype=np.float32)
        a = da.Array(daz, az_name, chunks=ch, dtype=np.float32)
        return z, a

    def _var(arr, long_name):
        return xr.DataArray(arr[None], dims=("time", "y", "x"),
                            attrs={"units": "degree", "long_name": long_name})

    if product.sun_angles is not None:
        z, a = _delayed_pair(product.sun_angles, "sun")
        out["sun_zenith"] = _var(z, "sun zenith angle")
        out["sun_azimuth"] = _var(a, "sun azimuth angle")
    if product.view_angles:
        mean = mean_view_grid(product.view_angles)
        z, a = _delayed_pair(mean, "view")
        out["view_zenith"] = _var(z, "viewing zenith angle, mean of the bands")
        out["view_azimuth"] = _var(a, "viewing azimuth angle, mean of the bands")
        if mode == "per_band":
            for b in names:
                if b in product.view_angles:
                    z, a = _delayed_pair(product.view_angles[b], f"view{b}")
                    out[f"view_zenith_{b}"] = _var(z, f"viewing zenith angle of {b}")
                    out[f"view_azimuth_{b}"] = _var(a, f"viewing azimuth angle of {b}")
    return out


def mean_view_grid(grids: Mapping[str, AngleGrid]) -> AngleGrid:
    """The band-mean of per-band viewing angle grids (azimuths averaged as unit vectors)."""
    first = next(iter(grids.values()))
    zen = nanmean_angles(np.stack([g.zenith for g in grids.values()]))
    azm = nanmean_angles(np.stack([g.azimuth for g in grids.values()]), circular=True)
    return AngleGrid(zen, azm, first.x0, first.y0, first.step, first.crs)
