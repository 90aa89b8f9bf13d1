"""The L3A processor: the monthly WASP synthesis of a tile from the L2A products in the store.

:func:`composite` takes a tile and a period (a month ``2018-07`` or ``2018-07-01/2018-07-31``):

1. the synthesis centre ``t_c`` is the middle day of the period (or ``centre``); every
   L2A product of the tile acquired within ``t_c +- H`` days (``H`` = 23, WASP's
   default) is used, Sentinel-2 and Landsat 8/9 together or the sensors chosen;
2. the processing grids are the tile's 10 m and 20 m grids cropped to the inputs'
   footprints, and a 240 m coarse grid with the same origin for the cloud weights;
3. every product is read lazily onto those grids (Landsat bands renamed to their
   Sentinel-2 equivalents and resampled; the red edge stays Sentinel-2 only), its
   cloud share and sun/view angles on the coarse grid are computed first (small), then
   the numba update (:mod:`agriseries.composite.wasp`) runs block by block with dask;
4. the L3A product ``L3A_<sensors>_<tile>_<period>_AGS`` is written to the store:
   reflectance bands int16 x 10000 at 10 m (B02, B03, B04, B08) and 20 m (B05, B06,
   B07, B8A, B11, B12), per resolution the weight (int16 x 1000), the weighted date
   (float32 days since 1970-01-01) and the flag (0 no data, 1 cloud, 2 snow, 3 water,
   4 land), the common ``mask`` from the 20 m flags (so that the composite loads like
   any L2A product), a quicklook PNG, and a STAC Item listing every input with its
   date, sensor, date x sensor weight and whether it had an AOT layer.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pystac
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from ..version import VERSION
from ..core.bands import S2_TO_LANDSAT, bands_of, is_sentinel2
from ..core.errors import ConfigurationError, FailureRecord, InputProductError, NothingToDoError
from ..core.graphs import graph_data, local_scheduler
from ..core.grid import snap_to_tile, tile_geobox
from ..core.ids import Level, ProductId, l3a_id, sensor_code
from ..core.jit import compiled
from ..core.masks import MaskBit
from ..core.stac import AssetSpec
from ..io.product import (
    BlockHolder,
    SourceProduct,
    aligned_with,
    decoded_mask,
    layer_arrays,
    load,
    mask_with_band_nodata,
    nanmean_angles,
)
from ..io.store import Layer, ProductStore
from ..io.opened import held_open
from .wasp import (
    FLAG_MEANING,
    BlockSetup,
    WaspParams,
    coarse_fields,
    composite_dask,
    date_weight,
    days_since_epoch,
    mask_cloud_share,
)

#: Output bands per resolution (WASP's R1 and R2; docs/l3a.md).
R1_BANDS = ("B02", "B03", "B04", "B08")
R2_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")
#: The 20 m update also reads the blue band, for the minimum-blue rule.
R2_HELPERS = ("B02",)
ANGLE_NAMES = ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")
DATE_UNIT = "days since 1970-01-01"


def parse_period(text: str) -> tuple[dt.date, dt.date]:
    """``YYYY-MM`` (a month) or ``YYYY-MM-DD/YYYY-MM-DD`` (inclusive) -> first and last day."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    try:
        if m:
            year, month = int(m[1]), int(m[2])
            return dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])
        first, _, last = text.strip().partition("/")
        start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    except ValueError:
        start = end = None
    if start is None or end is None or end < start:
        raise ConfigurationError(f"period {text!r}: expected YYYY-MM or YYYY-MM-DD/YYYY-MM-DD "
                                 "(start not after end)")
    return start, end


@dataclass
class Acquisition:
    """One input date, read lazily onto the processing grids.

    Attributes
    ----------
    id
        The input product id.
    sensor
        ``S2A`` ... ``L9``.
    datetime
        Acquisition time (UTC).
    layers
        Per resolution (m): a Dataset of 2-D ``(y, x)`` variables -- the bands under
        their Sentinel-2 names (those the product has), ``mask`` and, when the product
        has it, ``aot``.
    angles
        Sun and view angles (degrees) on the coarse grid, or ``None``.
    mask_from
        ``{fine: (coarse, band)}``: the ``fine`` resolution's mask is the ``coarse`` one
        with each pixel repeated 2 x 2 and NODATA where ``band`` (at ``fine``) is NaN, the
        coarse mask's own NODATA coming from the 2 x 2 mean of that band (so that once the
        coarse mask is in memory, the fine one is made from it, not read again).
    held
        The holders its reads go through (:class:`~agriseries.io.product.BlockHolder`): the
        10 m blue of a Sentinel-2 input, which :func:`synthesize` keeps from its coarse pass
        (which reads it for the 20 m mask's no-data) for its main pass.
    """

    id: str
    sensor: str
    datetime: dt.datetime
    layers: dict[int, xr.Dataset]
    angles: dict[str, np.ndarray] | None = None
    mask_from: dict[int, tuple[int, str]] = field(default_factory=dict)
    held: tuple[BlockHolder, ...] = ()

    @property
    def has_aot(self) -> bool:
        return any("aot" in ds for ds in self.layers.values())


@dataclass
class CompositeGrids:
    """The grids of one synthesis: fine grids per resolution and the coarse grid."""

    fine: dict[int, GeoBox]
    coarse: GeoBox

    @classmethod
    def for_tile(cls, tile: str, footprints, resolutions=(10, 20),
                 coarse_resolution: float = 240.0) -> "CompositeGrids":
        """The tile's grids cropped to the union of ``footprints`` (aligned on the
        coarsest resolution so that every grid covers the same ground)."""
        from odc.geo.geom import unary_union

        top = max(resolutions)
        tb = tile_geobox(tile, top)
        area = unary_union([fp.to_crs(tb.crs) for fp in footprints])
        base = snap_to_tile(tb, area)
        if base is None:
            raise ConfigurationError(f"the input products do not overlap tile {tile}")
        return cls.from_grid(base, resolutions, coarse_resolution)

    @classmethod
    def from_grid(cls, base: GeoBox, resolutions, coarse_resolution: float = 240.0
                  ) -> "CompositeGrids":
        """Grids at ``resolutions`` covering exactly ``base`` (whose pixel is the largest)."""
        a = base.affine
        top = abs(a.a)
        fine = {}
        for r in resolutions:
            k = top / r
            if abs(k - round(k)) > 1e-9:
                raise ConfigurationError(f"resolution {r} m does not divide {top} m")
            k = int(round(k))
            fine[r] = GeoBox((base.shape.y * k, base.shape.x * k),
                             Affine(r, 0, a.c, 0, -r, a.f), base.crs)
        ny, nx = base.shape.y * top, base.shape.x * top  # extent in metres
        coarse = GeoBox((max(1, math.ceil(ny / coarse_resolution)),
                         max(1, math.ceil(nx / coarse_resolution))),
                        Affine(coarse_resolution, 0, a.c, 0, -coarse_resolution, a.f), base.crs)
        return cls(fine, coarse)


def _s2_bands(product: SourceProduct, wanted: tuple[str, ...]) -> dict[str, str]:
    """Sentinel-2 band name -> the product's band name, for the bands it has."""
    if is_sentinel2(product.sensor):
        return {b: b for b in wanted if b in product.bands}
    out = {}
    for b in wanted:
        lb = S2_TO_LANDSAT.get(b)
        if lb is not None and lb in product.bands:
            out[b] = lb
    return out


def acquisition_from_product(product: SourceProduct, grids: CompositeGrids,
                             bands: dict[int, tuple[str, ...]], chunks: dict[int, int]
                             ) -> Acquisition:
    """Read one L2A product lazily onto the composite grids, each band once.

    Where the product's files are on the grids' own lattices (a Sentinel-2 L2A product of
    the tile), the two bands needed at both resolutions are read once and resampled in
    memory, block by block (:func:`shared_reads`): the 10 m mask is the 20 m mask with each
    pixel repeated 2 x 2 (what GDAL's nearest-neighbour warp gives on these grids), and the
    20 m blue band (used by the minimum-blue rule only) is the mean of the valid 10 m digital
    numbers of each 2 x 2 block, rounded half up (GDAL's average, which a warp from disk
    computed with floating-point pixel weights, so that a mean of exactly .5 was sometimes
    rounded down: about 0.1 % of the 20 m blue values differ by one digital number).
    Other products (Landsat, other grids) are warped from disk at each resolution.

    Raises
    ------
    InputProductError
        The product has no mask (an L2A product must say where clouds are) or none of
        the bands.
    """
    if not product.quality or product.mask_decoder is None:
        raise InputProductError(product.path, "no cloud mask: an L2A product with a mask "
                                              "is needed for the composite")
    shared = shared_reads(product, grids, bands, chunks)
    mappings = {res: _s2_bands(product, names) for res, names in bands.items()}
    skip = {(shared["B02"][1], "B02")} if "B02" in shared else set()
    # the shared 10 m blue: the coarse pass reads it (the 20 m mask's no-data), the main pass
    # again (the 10 m band, the 20 m means, the 10 m mask): held from one to the other
    holder = BlockHolder() if "B02" in shared else None
    loaded = {}
    for res in sorted(bands):
        own = sorted({src for s2, src in mappings[res].items() if (res, s2) not in skip})
        held = {"B02": holder} if holder is not None and res == shared["B02"][0] else None
        loaded[res] = layer_arrays(product, grids.fine[res], own, with_aux=True,
                                   chunks=chunks[res], held=held)
    derived = {}  # (res, S2 band) -> lazy 2-D array made from the read at another resolution
    if "B02" in shared:
        fine, coarse = shared["B02"]
        asset = product.bands["B02"]
        derived[(coarse, "B02")] = _mean_2x2(loaded[fine]["B02"], asset.scale, asset.offset)
    decoded = {}
    if "mask" in shared:
        coarse, fine = shared["mask"]
        decoded[coarse] = decoded_mask(product, grids.fine[coarse], chunks[coarse])
        decoded[fine] = decoded[coarse].map_blocks(
            _repeat_2x2, chunks=tuple(tuple(2 * c for c in cs) for cs in decoded[coarse].chunks),
            dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    layers, first_band = {}, {}
    for res, mapping in mappings.items():
        arrays = loaded[res]
        coords = xr_coords(grids.fine[res])
        yx = {"y": coords["y"], "x": coords["x"]}
        vars_ = {s2: xr.DataArray(derived[(res, s2)] if (res, s2) in derived else arrays[src],
                                  dims=("y", "x"), coords=yx)
                 for s2, src in mapping.items()}
        mask = decoded[res] if res in decoded else decoded_mask(product, grids.fine[res],
                                                                chunks[res])
        if mapping:  # as load does: NODATA where the first band (by file name) has no data
            first = first_band[res] = min(mapping, key=lambda s2: mapping[s2])
            fine_blue = (loaded[shared["B02"][0]]["B02"]
                         if (res, first) == (shared.get("B02", (None, None))[1], "B02") else None)
            if fine_blue is not None and _halves(mask, fine_blue):
                # the band is the 2 x 2 mean of the fine read, NaN exactly where its four fine
                # pixels are: taken from them, so a pass that needs the mask only (the coarse
                # pass) does not compute the means; each block's read is made by its task
                # (nothing else of that pass uses it: one task per block, not two)
                mask = _pairwise_blocks(_coarse_nodata_block, mask, fine_blue, mask.chunks,
                                        inline=True)
            else:
                mask = mask_with_band_nodata(mask, vars_[first].data)
        vars_["mask"] = xr.DataArray(mask, dims=("y", "x"), coords=yx)
        if "aot" in arrays:
            vars_["aot"] = xr.DataArray(arrays["aot"], dims=("y", "x"), coords=yx)
        layers[res] = xr.Dataset(vars_)
    if not any(set(ds.data_vars) - {"mask", "aot"} for ds in layers.values()):
        raise InputProductError(product.path, f"none of the bands {sorted(set(sum(map(list, bands.values()), [])))} "
                                              "(or their Landsat equivalents) is in the product")
    angles = None
    ang = load(product, geobox=grids.coarse, bands=[], angles="mean", with_mask=False,
               with_aux=True, chunks=4096)
    if all(n in ang for n in ANGLE_NAMES):
        angles = {n: ang[n].data[0] for n in ANGLE_NAMES}
    mask_from = {}
    if "mask" in shared and "B02" in shared:
        coarse, fine = shared["mask"]
        if first_band.get(fine) == "B02" and first_band.get(coarse) == "B02":
            mask_from[fine] = (coarse, "B02")
    return Acquisition(product.product_id, product.sensor, product.datetime, layers, angles,
                       mask_from, (holder,) if holder is not None else ())


def shared_reads(product: SourceProduct, grids: CompositeGrids,
                 bands: dict[int, tuple[str, ...]], chunks: dict[int, int]
                 ) -> dict[str, tuple[int, int]]:
    """Which layers :func:`acquisition_from_product` reads once for two resolutions:
    ``{"mask": (20, 10)}`` (read at 20 m, repeated onto 10 m) and ``{"B02": (10, 20)}``
    (read at 10 m, averaged onto 20 m), when the 10 m grid is the 20 m grid halved, block
    for block, and the files are on those grids' lattices."""
    if not {10, 20} <= set(bands) or not {10, 20} <= set(grids.fine):
        return {}
    g10, g20 = grids.fine[10], grids.fine[20]
    if (chunks[10] != 2 * chunks[20] or g10.shape.y != 2 * g20.shape.y
            or g10.shape.x != 2 * g20.shape.x or g10.affine.c != g20.affine.c
            or g10.affine.f != g20.affine.f):
        return {}
    out = {}
    if all(aligned_with(a, g20) for a in product.quality.values()):
        out["mask"] = (20, 10)
    m10, m20 = _s2_bands(product, bands[10]), _s2_bands(product, bands[20])
    if (is_sentinel2(product.sensor) and m10.get("B02") == "B02" and m20.get("B02") == "B02"
            and aligned_with(product.bands["B02"], g10)):
        out["B02"] = (10, 20)
    return out


def _repeat_2x2(block: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(block, 2, axis=0), 2, axis=1)


@compiled(nogil=True)
def _mean_2x2_block(b, scale, offset, out):  # pragma: no cover - compiled
    """``out[i, j]``: the mean of the valid digital numbers of ``b[2i:2i+2, 2j:2j+2]``
    (``(value - offset) / scale`` rounded half to even), rounded half up, scaled back in
    float32; NaN where none is valid. One pass, no temporaries.

    The digital number is taken as ``(value - offset) * (1 / scale)``: ``value`` is a
    float32 decoded from an integer DN (16 bits), within 1e-3 DN of it, so the product and
    the quotient (which differ by an ulp or two, 1e-11 DN) round to the same integer, and
    a multiplication costs a third of a division. A mean of 4 or 2 is taken by the exact
    product by 1/4 or 1/2 (the quotient, bit for bit)."""
    s32, o32 = np.float32(scale), np.float32(offset)
    inv = 1.0 / scale
    for i in range(out.shape[0]):
        r0 = b[2 * i]
        r1 = b[2 * i + 1]
        for j in range(out.shape[1]):
            n = 0
            total = 0.0
            for v in (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]):
                if not np.isnan(v):
                    n += 1
                    total += np.rint((np.float64(v) - offset) * inv)
            if n == 0:
                out[i, j] = np.nan
            elif n == 4:
                out[i, j] = np.float32(np.floor(total * 0.25 + 0.5)) * s32 + o32
            elif n == 2:
                out[i, j] = np.float32(np.floor(total * 0.5 + 0.5)) * s32 + o32
            else:
                out[i, j] = np.float32(np.floor(total / n + 0.5)) * s32 + o32


def _mean_2x2(fine, scale: float, offset: float):
    """The 20 m reflectance of a 10 m band (lazy, block by block): the mean of the valid
    digital numbers of each 2 x 2 block rounded half up, scaled as the file says; NaN where
    none is valid (one compiled pass per block: the numpy version of the same arithmetic
    took four times as long as reading the band)."""
    def block(b: np.ndarray) -> np.ndarray:
        out = np.empty((b.shape[0] // 2, b.shape[1] // 2), np.float32)
        _mean_2x2_block(np.ascontiguousarray(b, dtype=np.float32), float(scale), float(offset),
                        out)
        return out

    return fine.map_blocks(block, chunks=tuple(tuple(c // 2 for c in cs) for cs in fine.chunks),
                           dtype=np.float32, meta=np.empty((0, 0), np.float32))


@compiled(nogil=True)
def _coarse_nodata_2x2(mask, fine, bit, out):  # pragma: no cover - compiled
    """``out``: ``mask`` with ``bit`` set where the four pixels of ``fine`` under a pixel
    are all NaN (where their 2 x 2 mean, :func:`_mean_2x2_block`, is NaN)."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            empty = True
            for di in range(2):
                for dj in range(2):
                    if not np.isnan(fine[2 * i + di, 2 * j + dj]):
                        empty = False
            out[i, j] = mask[i, j] | bit if empty else mask[i, j]


@compiled(nogil=True)
def _fine_nodata_2x2(mask, fine, bit, out):  # pragma: no cover - compiled
    """``out``: ``mask`` repeated 2 x 2 (:func:`_repeat_2x2`), with ``bit`` set where
    ``fine`` is NaN (:func:`mask_with_band_nodata` of the repeated mask). Row by row, two
    fine pixels per mask pixel, without branches (a tenth of the time of a loop over the
    fine pixels indexing the mask at ``(i // 2, j // 2)``)."""
    nx = out.shape[1]
    for i in range(out.shape[0]):
        m = mask[i // 2]
        f = fine[i]
        o = out[i]
        for jj in range(nx // 2):
            v = m[jj]
            a, b = f[2 * jj], f[2 * jj + 1]
            o[2 * jj] = v | (bit * np.uint8(np.isnan(a)))
            o[2 * jj + 1] = v | (bit * np.uint8(np.isnan(b)))
        if nx % 2:
            o[nx - 1] = m[(nx - 1) // 2] | (bit * np.uint8(np.isnan(f[nx - 1])))


def _coarse_nodata_block(mask: np.ndarray, fine: np.ndarray) -> np.ndarray:
    out = np.empty(mask.shape, np.uint8)
    _coarse_nodata_2x2(np.ascontiguousarray(mask, np.uint8), np.ascontiguousarray(fine, np.float32),
                       np.uint8(MaskBit.NODATA), out)
    return out


def _fine_nodata_block(mask: np.ndarray, fine: np.ndarray) -> np.ndarray:
    out = np.empty(fine.shape, np.uint8)
    _fine_nodata_2x2(np.ascontiguousarray(mask, np.uint8), np.ascontiguousarray(fine, np.float32),
                     np.uint8(MaskBit.NODATA), out)
    return out


def _halves(coarse, fine) -> bool:
    """Whether the dask array ``coarse``'s blocks are those of ``fine`` halved, block for block."""
    return (hasattr(coarse, "dask") and hasattr(fine, "dask") and coarse.ndim == fine.ndim == 2
            and all(len(c) == len(f) and all(2 * x == y for x, y in zip(c, f))
                    for c, f in zip(coarse.chunks, fine.chunks)))


def _pairwise_blocks(fn, a, b, chunks, inline: bool = False) -> da.Array:
    """``fn(a_block, b_block)`` for each block position of two dask arrays with the same
    number of blocks (one at 20 m, the other at 10 m), as a uint8 array of ``chunks``:
    one task per block. ``inline``: ``b``'s block tasks (a read) are run inside these
    tasks instead of by tasks of their own, for a ``b`` that nothing else of the same
    computation uses (its blocks would otherwise be made twice)."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    def of_b(i, j):
        key = (b.name, i, j)
        if inline:
            task = b.dask.get(key)
            if type(task) is tuple and task and callable(task[0]):
                return task
        return key

    name = f"{fn.__name__.strip('_')}-{tokenize(fn.__name__, a.name, b.name, inline)}"
    dsk = {(name, i, j): (fn, (a.name, i, j), of_b(i, j))
           for i in range(len(chunks[0])) for j in range(len(chunks[1]))}
    uses_b = any(task[2] == (b.name, i, j) for (_, i, j), task in dsk.items())
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[a, b] if uses_b else [a])
    return da.Array(graph, name, chunks=chunks, dtype=np.uint8)


def _mean_2x2_numpy(b: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """The same as :func:`_mean_2x2_block` with numpy (the reference of the tests)."""
    h, w = b.shape[0] // 2, b.shape[1] // 2
    valid = ~np.isnan(b)
    dn = np.where(valid, np.rint((b.astype(np.float64) - offset) / scale), 0.0)
    n = valid.reshape(h, 2, w, 2).sum(axis=(1, 3))
    total = dn.reshape(h, 2, w, 2).sum(axis=(1, 3))
    out = np.floor(total / np.maximum(n, 1) + 0.5).astype(np.float32)
    out = out * np.float32(scale) + np.float32(offset)
    out[n == 0] = np.nan
    return out


def acquisitions_from_dataset(ds: xr.Dataset) -> list[Acquisition]:
    """The dates of a multi-date agriseries Dataset (``time, y, x``), for :func:`synthesize`.

    The Dataset is on one grid (its resolution is the composite's); bands carry their
    Sentinel-2 names (see :func:`agriseries.core.bands.landsat_as_s2`); ``mask`` is
    required, ``aot`` and the four angle variables are used when present (the angles
    are averaged onto the coarse grid by :func:`synthesize`'s caller through
    :func:`coarsen_angles`). A band that is all NaN on a date counts as measured.
    """
    if "mask" not in ds:
        raise ConfigurationError("the dataset has no mask: the composite needs one per date")
    res = int(round(abs(ds.odc.geobox.resolution.x)))
    names = [v for v in ds.data_vars if v in bands_of("S2A")]
    out = []
    for k in range(ds.sizes["time"]):
        one = ds.isel(time=k)
        keep = {b: one[b] for b in names}
        keep["mask"] = one["mask"]
        if "aot" in one:
            keep["aot"] = one["aot"]
        when = dt.datetime.fromtimestamp(one["time"].values.astype("datetime64[s]").astype(int),
                                         dt.timezone.utc)
        sensor = str(one["sensor"].values) if "sensor" in one.coords else "S2A"
        source = str(one["source_id"].values) if "source_id" in one.coords else f"date{k}"
        angles = ({n: one[n] for n in ANGLE_NAMES} if all(n in one for n in ANGLE_NAMES)
                  else None)
        out.append(Acquisition(source, sensor, when, {res: xr.Dataset(keep)}, angles))
    return out


def coarsen_angles(acqs: list[Acquisition], grids: CompositeGrids) -> None:
    """Average per-pixel angle variables of :func:`acquisitions_from_dataset` onto the
    coarse grid, in place (azimuths through their sines and cosines)."""
    res = _share_resolution(grids)
    k = int(round(abs(grids.coarse.affine.a) / res))
    cy, cx = grids.coarse.shape
    for a in acqs:
        if a.angles is None:
            continue
        out = {}
        for name, var in a.angles.items():
            arr = np.asarray(var, np.float64)
            pad = ((0, cy * k - arr.shape[0]), (0, cx * k - arr.shape[1]))
            arr = np.pad(arr, pad, constant_values=np.nan).reshape(cy, k, cx, k)
            out[name] = nanmean_angles(arr, axis=(1, 3), circular=name.endswith("azimuth"))
        a.angles = out


#: Acquisitions of one sensor closer in time than this are pieces of one overpass.
SAME_PASS_SECONDS = 300


def merge_passes(acqs: list[Acquisition]) -> tuple[list[Acquisition], list[dict]]:
    """Merge the pieces of one overpass (adjacent Landsat rows, two provider extracts) into
    one date, so that an overpass is weighted once: at each pixel the first piece with
    data wins. Returns the merged list (time order) and what was merged into what."""
    acqs = sorted(acqs, key=lambda a: a.datetime)
    out: list[Acquisition] = []
    merged = []
    for a in acqs:
        prev = out[-1] if out else None
        if (prev is not None and prev.sensor == a.sensor
                and (a.datetime - prev.datetime).total_seconds() <= SAME_PASS_SECONDS):
            out[-1] = _merge_two(prev, a)
            merged.append({"id": a.id, "merged_into": prev.id})
        else:
            out.append(a)
    return out, merged


def _merge_two(a: Acquisition, b: Acquisition) -> Acquisition:
    nodata = np.uint8(MaskBit.NODATA)
    layers = {}
    for res, da_ in a.layers.items():
        db = b.layers.get(res)
        if db is None:
            layers[res] = da_
            continue
        first_empty = (da_["mask"] & nodata) != 0
        vars_ = {}
        for name in set(da_.data_vars) | set(db.data_vars):
            if name not in db:
                vars_[name] = da_[name]
            elif name not in da_:
                vars_[name] = db[name]
            elif name == "mask":
                vars_[name] = xr.where(first_empty, db["mask"], da_["mask"])
            else:
                vars_[name] = xr.where(first_empty | np.isnan(da_[name]), db[name], da_[name])
        layers[res] = xr.Dataset(vars_)
    return Acquisition(a.id, a.sensor, a.datetime, layers, a.angles, held=a.held + b.held)


def _share_resolution(grids: CompositeGrids) -> int:
    """The fine resolution the cloud share is counted at (the coarsest that divides 240 m)."""
    coarse = abs(grids.coarse.affine.a)
    fits = [r for r in grids.fine if abs(coarse / r - round(coarse / r)) < 1e-9]
    if not fits:
        raise ConfigurationError(f"no resolution of {sorted(grids.fine)} divides the coarse "
                                 f"resolution {coarse} m")
    return max(fits)


def compute_coarse_fields(acqs: list[Acquisition], grids: CompositeGrids,
                          params: WaspParams) -> list[np.ndarray]:
    """The coarse fields of every date, computed in one pass before the main one.

    This reads each date's mask at the resolution the cloud share is counted at (20 m;
    with what makes its NODATA, the 10 m blue of a Sentinel-2 input) and its angles on the
    coarse grid, once. :func:`synthesize` keeps those masks for the main pass
    (:func:`coarse_pass`).
    """
    return coarse_pass(acqs, grids, params)[0]


def coarse_pass(acqs: list[Acquisition], grids: CompositeGrids, params: WaspParams
                ) -> tuple[list[np.ndarray], int, list[np.ndarray]]:
    """``(fields, res, masks)``: the coarse fields of every date (:func:`compute_coarse_fields`),
    the resolution the cloud share is counted at and each date's mask at that resolution
    (uint8, in memory: 30 MB per date of a full tile at 20 m), from one read of the mask."""
    res = _share_resolution(grids)
    factor = int(round(abs(grids.coarse.affine.a) / res))
    cy, cx = grids.coarse.shape
    # one flat compute: the reads of the masks (and of what makes their NODATA) run once, and
    # each date's cloud share and coarse fields are tasks of it, computed as soon as its
    # mask is in (while the other dates are read)
    one_date = functools.partial(_date_fields, params=params, factor=factor, cy=cy, cx=cx)
    per_date = [dask.delayed(one_date, pure=False)(
        a.layers[res]["mask"].data,
        [a.angles[n] for n in ANGLE_NAMES] if a.angles is not None else None) for a in acqs]
    computed = dask.compute(*per_date)
    return [c[1] for c in computed], res, [c[0] for c in computed]


def _date_fields(mask, angles, params: WaspParams, factor: int, cy: int, cx: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One date of :func:`coarse_pass`: its mask (uint8) and its coarse fields."""
    mask = np.asarray(mask).astype(np.uint8, copy=False)
    share = mask_cloud_share(mask, params.cloud_bits, params.invalid_bits, factor)
    if angles is not None:
        angles = {n: np.asarray(v, np.float64)[:cy, :cx] for n, v in zip(ANGLE_NAMES, angles)}
    return mask, coarse_fields(share[:cy, :cx], angles, params)


def _in_memory(arr: np.ndarray, like) -> object:
    """``arr`` as a dask array of ``like``'s chunks, one block per key, or ``arr`` itself
    when ``like`` is not a dask array. On the local scheduler the blocks are views of
    ``arr``; on a distributed one they are scattered to the workers once and the graph
    refers to them by key (:func:`agriseries.core.graphs.graph_data`), so that the
    computations of the main pass do not each carry the mask."""
    if not hasattr(like, "dask"):
        return arr
    from dask.base import tokenize

    rows = np.cumsum((0,) + like.chunks[0])
    cols = np.cumsum((0,) + like.chunks[1])
    index = [(i, j) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]
    blocks = graph_data([arr[rows[i]:rows[i + 1], cols[j]:cols[j + 1]] for i, j in index],
                        [like])
    # scattered: the name says which copies (two jobs holding the same input's mask on the
    # same grid would otherwise give one key two different definitions on the scheduler)
    held = [b.key for b in blocks if not isinstance(b, np.ndarray)]
    name = f"held-mask-{tokenize(like.name, arr.shape, arr.dtype.str, *held)}"
    dsk = {(name, i, j): b for (i, j), b in zip(index, blocks)}
    return da.Array(dsk, name, chunks=like.chunks, dtype=arr.dtype)


def with_held_mask(a: Acquisition, res: int, mask: np.ndarray) -> Acquisition:
    """``a`` with its mask at ``res`` taken from ``mask`` (computed by :func:`coarse_pass`)
    instead of read again, and the masks :attr:`Acquisition.mask_from` derives from it
    made from it in memory (repeated 2 x 2, NODATA where their band is NaN): the same
    values as the reads they replace."""
    layers = dict(a.layers)
    ds = layers[res]
    held = _in_memory(mask, ds["mask"].data)
    layers[res] = ds.assign(mask=ds["mask"].copy(data=held))
    for fine, (coarse, band) in a.mask_from.items():
        if coarse != res or fine not in layers or not hasattr(held, "dask"):
            continue
        fds = layers[fine]
        band_data = fds[band].data
        if _halves(held, band_data):  # one task per block
            fine_mask = _pairwise_blocks(_fine_nodata_block, held, band_data, band_data.chunks)
        else:
            fine_mask = mask_with_band_nodata(held.map_blocks(
                _repeat_2x2, chunks=tuple(tuple(2 * c for c in cs) for cs in held.chunks),
                dtype=np.uint8, meta=np.empty((0, 0), np.uint8)), band_data)
        layers[fine] = fds.assign(mask=fds["mask"].copy(data=fine_mask))
    return Acquisition(a.id, a.sensor, a.datetime, layers, a.angles, dict(a.mask_from), a.held)


def synthesize(acqs: list[Acquisition], centre: dt.date, grids: CompositeGrids,
               bands: dict[int, tuple[str, ...]], helpers: dict[int, tuple[str, ...]],
               params: WaspParams = WaspParams()) -> tuple[dict[int, xr.Dataset], list[dict]]:
    """The composite of ``acqs`` (lazy), per resolution, and a summary of each input.

    The coarse pass (:func:`coarse_pass`) is computed here; the rest is lazy. On the local
    scheduler the coarse pass keeps the 10 m blue blocks it reads (the digital numbers, in
    each date's :class:`~agriseries.io.product.BlockHolder`) and the first computation of
    the result takes them back instead of reading the files again, each block once (a
    later computation reads the files).

    Returns
    -------
    (datasets, inputs)
        ``datasets[res]`` holds the output bands (those at least one input has) and
        ``weight``, ``date``, ``flag``; ``inputs`` one dict per date (id, sensor,
        datetime, ``date_weight``, ``sensor_weight``, ``aot``).
    """
    if not acqs:
        raise ConfigurationError("no input date to composite")
    acqs = sorted(acqs, key=lambda a: a.datetime)
    with contextlib.ExitStack() as hold:
        lazy = [v.data for a in acqs for ds in a.layers.values() for v in ds.data_vars.values()
                if hasattr(v.data, "dask")]
        if local_scheduler(lazy[:1]):
            # the reads of the coarse pass that the main pass makes again are kept (the 10 m
            # blue of the Sentinel-2 dates: 2 bytes a pixel) and taken back by it, block by
            # block; on a distributed scheduler the workers read the files again
            for h in {id(h): h for a in acqs for h in a.held}.values():
                hold.enter_context(h.recording())
        coarse, share_res, masks = coarse_pass(acqs, grids, params)
    acqs = [with_held_mask(a, share_res, m) for a, m in zip(acqs, masks)]
    del masks
    days = np.array([days_since_epoch(a.datetime) for a in acqs])
    deltas = np.array([abs((a.datetime.date() - centre).days) for a in acqs])
    wdate = date_weight(deltas, params.half_period, params.date_weight_min,
                        params.legacy_date_weight)
    wsens = np.array([params.sensor_weight(a.sensor) for a in acqs])
    inputs = [{"id": a.id, "sensor": a.sensor, "datetime": a.datetime.isoformat(),
               "date_weight": round(float(wd), 4), "sensor_weight": float(ws),
               "aot": "product AOT" if a.has_aot else "none (weight 1)"}
              for a, wd, ws in zip(acqs, np.atleast_1d(wdate), wsens)]
    out = {}
    for res in sorted(bands):
        present = [b for b in bands[res] if any(b in a.layers[res] for a in acqs)]
        if not present:
            continue
        stack = tuple(present) + tuple(h for h in helpers.get(res, ()) if h not in present)
        avail = np.array([[b in a.layers[res] for b in stack] for a in acqs], bool)
        setup = BlockSetup(stack, len(present), avail, days, np.atleast_1d(wdate) * wsens,
                           res / abs(grids.coarse.affine.a), params)
        def lazy(layer: xr.Dataset, name: str):
            if name not in layer:
                return None
            arr = layer[name].data
            return arr if hasattr(arr, "dask") else da.from_array(arr, chunks=params.chunks)

        layers = [a.layers[res] for a in acqs]
        arr = composite_dask([[lazy(lay, b) for b in stack] for lay in layers],
                             [lazy(lay, "mask") for lay in layers],
                             [lazy(lay, "aot") for lay in layers], coarse, setup)
        gb = grids.fine[res]
        coords = {"y": gb.coords["y"].values, "x": gb.coords["x"].values}
        vars_ = {"weight": (("y", "x"), arr[0]), "date": (("y", "x"), arr[1]),
                 "flag": (("y", "x"), arr[2].astype(np.uint8))}
        for k, b in enumerate(present):
            vars_[b] = (("y", "x"), arr[3 + k])
        ds = xr.Dataset(vars_, coords=coords)
        ds["date"].attrs["units"] = DATE_UNIT
        ds["flag"].attrs["flag_meanings"] = FLAG_MEANING
        out[res] = ds.odc.assign_crs(gb.crs)
    return out, inputs


def mask_from_flags(flag):
    """The common mask bits of a composite flag layer (0 -> NODATA, 1 -> CLOUD, 2 -> SNOW,
    3 -> WATER, 4 -> clear)."""
    lut = np.array([MaskBit.NODATA, MaskBit.CLOUD, MaskBit.SNOW, MaskBit.WATER, 0, 0, 0, 0],
                   np.uint8)
    if hasattr(flag, "dask"):
        return flag.map_blocks(lambda f: lut[np.minimum(f, 7)], dtype=np.uint8,
                               meta=np.empty((0, 0), np.uint8))
    return lut[np.minimum(np.asarray(flag), 7)]


def quicklook_rgb(red: np.ndarray, green: np.ndarray, blue: np.ndarray,
                  vmax: float = 0.2) -> np.ndarray:
    """An 8-bit ``(3, y, x)`` true-colour picture: reflectance 0..``vmax`` -> 0..255,
    gamma 1/1.6 (no data black)."""
    rgb = np.stack([red, green, blue]).astype(np.float32)
    scaled = np.clip(np.nan_to_num(rgb, nan=0.0) / vmax, 0, 1) ** (1 / 1.6)
    return (scaled * 255 + 0.5).astype(np.uint8)


def _quicklook_pixels(bands: list[np.ma.MaskedArray]) -> np.ndarray:
    """:func:`quicklook_rgb` of three bands of digital numbers (reflectance x 1e4, masked
    where no data). The picture is made pixel by pixel, so for 16-bit integers it is looked
    up in a table of :func:`quicklook_rgb` of every value (the same pixels, without its
    float passes over the picture: a third of a second of the end of a composite, when
    nothing else runs)."""
    if all(np.dtype(b.dtype) in (np.dtype(np.int16), np.dtype(np.uint16)) for b in bands):
        out = np.empty((3,) + bands[0].shape, np.uint8)
        blank = quicklook_rgb(*[np.full(1, np.nan)] * 3)[0, 0]
        tables: dict = {}  # one table per integer type (the bands share it)
        for k, b in enumerate(bands):
            info = np.iinfo(b.dtype)
            if info.min not in tables:
                dn = np.arange(info.min, info.max + 1) * 1e-4
                tables[info.min] = quicklook_rgb(dn, dn, dn)[0]
            out[k] = np.where(np.ma.getmaskarray(b), blank,
                              tables[info.min][np.ma.getdata(b).astype(np.int32) - info.min])
        return out
    return quicklook_rgb(*[np.where(np.ma.getmaskarray(b), np.nan, b.filled(0) * 1e-4)
                           for b in bands])


def _write_quicklook(folder: Path, stem: str, max_size: int = 1024) -> list[AssetSpec]:
    """Read the written 10 m RGB COGs at a decimated size (their overviews) and save a PNG."""
    import rasterio
    from rasterio.enums import Resampling

    files = [folder / f"{stem}_{b}.tif" for b in ("B04", "B03", "B02")]
    if not all(f.is_file() for f in files):
        return []
    bands = []
    for f in files:
        with rasterio.open(f) as src:
            k = max(1, math.ceil(max(src.width, src.height) / max_size))
            shape = (max(1, src.height // k), max(1, src.width // k))
            bands.append(src.read(1, out_shape=shape, resampling=Resampling.average,
                                  masked=True))
            transform = src.transform * Affine.scale(src.width / shape[1], src.height / shape[0])
            crs = src.crs
    rgb = _quicklook_pixels(bands)
    name = f"{stem}_quicklook.png"
    with rasterio.open(folder / name, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1],
                       count=3, dtype="uint8", crs=crs, transform=transform) as dst:
        dst.write(rgb)
    aux = folder / f"{name}.aux.xml"
    if aux.exists():
        aux.unlink()
    gb = GeoBox(rgb.shape[1:], transform, crs.to_wkt())
    return [AssetSpec("quicklook", name, gb, "uint8", ("overview",),
                      "True-colour quicklook (B04, B03, B02; reflectance 0-0.2)",
                      count=3, media_type="image/png")]


@dataclass
class CompositeResult:
    """What :func:`composite` did.

    Attributes
    ----------
    product
        The L3A product id.
    made
        ``False``: it was in the store already.
    inputs
        The inputs used, with their weights.
    skipped
        The inputs that could not be used, one
        :class:`~agriseries.core.errors.FailureRecord` each.
    """

    product: str
    made: bool
    inputs: list[dict] = field(default_factory=list)
    skipped: list[FailureRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``skipped`` as dicts)."""
        return {"product": self.product, "made": self.made, "inputs": list(self.inputs),
                "skipped": [f.to_dict() for f in self.skipped]}


def composite(store: ProductStore, tile: str, period: str, *, centre: dt.date | None = None,
              sensors: tuple[str, ...] | None = None, params: WaspParams = WaspParams(),
              overwrite: bool = False, items: list[pystac.Item] | None = None,
              update_catalog: bool = True) -> CompositeResult:
    """Make the L3A synthesis of a tile and period from the L2A products in the store.

    Parameters
    ----------
    store
        The product store (inputs are read from it, the product written to it).
    tile
        Sentinel-2 tile id (``T31UDS``).
    period
        ``YYYY-MM`` or ``YYYY-MM-DD/YYYY-MM-DD``: names the product and gives the default
        synthesis centre (its middle day).
    centre
        Synthesis centre date ``t_c`` (default: the middle of the period).
    sensors
        Sensor families to use (``("S2",)``, ``("L8", "L9")``; default all).
    params
        The method's parameters (:class:`~agriseries.composite.wasp.WaspParams`).
    overwrite
        Remake the product if it exists.
    items
        The L2A items to synthesise (the production job's inputs, chosen by its plan),
        instead of those of the store in the synthesis window (of ``sensors``).
    update_catalog
        Rewrite the store's STAC catalogue afterwards.

    Raises
    ------
    ConfigurationError
        No L2A product of the tile in the synthesis window.
    """
    from odc.geo.geom import Geometry

    start, end = parse_period(period)
    centre = centre or start + (end - start) // 2
    half = dt.timedelta(days=params.half_period)
    utc = dt.timezone.utc
    w0 = dt.datetime.combine(centre - half, dt.time(), utc)
    w1 = dt.datetime.combine(centre + half, dt.time(23, 59, 59), utc)
    if items is None:
        items = [it for it in store.items(level=Level.L2A, tile=tile, start=w0, end=w1)
                 if _wanted(it, sensors)]
    if not items:
        raise NothingToDoError(
            f"no L2A product of {tile} between {w0:%Y-%m-%d} and {w1:%Y-%m-%d}"
            + (f" from {', '.join(sensors)}" if sensors else "") + f" in {store.root}")
    item_sensors = sorted({s for it in items for s in it.properties["agriseries:sensors"]})
    pid = l3a_id(tile, start, end, item_sensors)
    request = {**params.to_dict(), "centre": centre.isoformat(),
               "sensors": list(sensors) if sensors else None}
    if not overwrite and store.already_made(pid, request, inputs=[it.id for it in items]):
        return CompositeResult(str(pid), False)
    products, skipped = [], []
    for it in items:
        try:
            products.append((it, store.open(it)))
        except Exception as exc:  # a broken input item: said in the product, not fatal
            skipped.append(FailureRecord.from_exception(it.id, exc))
    if not products:
        raise ConfigurationError(f"none of the {len(items)} L2A products of {tile} could be "
                                 f"opened: {'; '.join(map(str, skipped))}")
    grids = CompositeGrids.for_tile(tile, [Geometry(it.geometry, "EPSG:4326")
                                           for it, _ in products],
                                    coarse_resolution=params.coarse_resolution)
    chunks = {10: params.chunks, 20: max(64, params.chunks // 2)}
    bands = {10: R1_BANDS, 20: R2_BANDS}
    helpers = {20: R2_HELPERS}
    to_read = {res: names + helpers.get(res, ()) for res, names in bands.items()}
    acqs = []
    for it, sp in products:
        try:
            acqs.append(acquisition_from_product(sp, grids, to_read, chunks))
        except InputProductError as exc:
            skipped.append(FailureRecord.from_exception(it.id, exc))
    if not acqs:
        raise ConfigurationError(f"no usable L2A product of {tile} for {period}: "
                                 f"{'; '.join(map(str, skipped))}")
    # the inputs' files stay open across their blocks (one handle per thread) until written
    with held_open():
        acqs, merged = merge_passes(acqs)
        out, inputs = synthesize(acqs, centre, grids, bands, helpers, params)
        layers = []
        for res, ds in out.items():
            gb = grids.fine[res]
            table = bands_of("S2A")
            for b in bands[res]:
                if b in ds:
                    layers.append(Layer(b, ds[b].data, gb, "reflectance", band=table[b]))
            layers += [Layer(f"weight_{res}m", ds["weight"].data, gb, "scaled", unit="1", scale=1e-3),
                       Layer(f"date_{res}m", ds["date"].data, gb, "aux", unit=DATE_UNIT),
                       Layer(f"flag_{res}m", ds["flag"].data, gb, "flags", unit=FLAG_MEANING)]
        mres = 20 if 20 in out else min(out)
        layers.append(Layer("mask", mask_from_flags(out[mres]["flag"].data), grids.fine[mres], "mask"))
        used = sorted({a.sensor for a in acqs})
        weights_summary = {"dates": len(acqs), "sentinel2": sum(is_sentinel2(a.sensor) for a in acqs),
                           "landsat": sum(not is_sentinel2(a.sensor) for a in acqs)}
        store.write_product(
            pid, layers, footprint=grids.fine[mres].extent, sensors=used,
            inputs=[a.id for a in acqs] + [m["id"] for m in merged],
            parameters=request,
            lineage=f"WASP weighted-average synthesis of {len(acqs)} L2A products "
                    f"({', '.join(used)}) centred on {centre.isoformat()} +- {params.half_period} "
                    f"days, by agriseries {VERSION}",
            datetime=None,
            properties={"agriseries:synthesis": {
                "centre": centre.isoformat(), "half_period_days": params.half_period,
                "window": [w0.date().isoformat(), w1.date().isoformat()],
                "inputs": inputs, "merged": merged, "summary": weights_summary,
                "skipped": [{"id": f.input, "error": f"{f.error_type}: {f.message}"}
                            for f in skipped]}},
            extras=_write_quicklook, overwrite=overwrite)
    if update_catalog:
        store.update_catalog()
    return CompositeResult(str(pid), True, inputs, skipped)


def _wanted(item: pystac.Item, sensors: tuple[str, ...] | None) -> bool:
    if not sensors:
        return True
    have = item.properties.get("agriseries:sensors") or []
    return any(s == w or s.startswith(w) for s in have for w in sensors)


__all__ = ["composite", "synthesize", "parse_period", "CompositeGrids", "Acquisition",
           "acquisition_from_product", "compute_coarse_fields", "mask_from_flags",
           "quicklook_rgb", "l3a_id", "CompositeResult", "R1_BANDS", "R2_BANDS"]
