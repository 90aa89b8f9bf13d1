"""The L2A processor: surface reflectance and masks from the L1C products of a tile.

:func:`l2a` processes every L1C product of a tile (Sentinel-2 ESA L1C, Landsat 8/9
Collection 2 L1) in date order, the way MACCS / MAJA did for Sen2Agri (method:
docs/l2a.md):

1. **Coarse scene.** The bands the cloud tests use (coastal, blue, green, red, NIR,
   SWIR 1.6 and 2.2 um, cirrus) are averaged onto the tile's coarse grid (240 m by
   default, ``resolution``), with the sun and viewing angles. They are corrected for
   Rayleigh scattering and gaseous absorption with SMAC at AOT 0 (MAJA's "TOCR"; the
   cirrus band stays at the top of the atmosphere, where its threshold is defined).
2. **Masks** (:mod:`agriseries.l2a.cloudmask`): the mono-temporal tests, and, where the
   tile's state has history, the multi-temporal test against the composite of the
   latest clear reflectance, the correlation test, snow, water, cirrus, shadows,
   dilation. The coarse mask is repeated onto the output mask grid (20 m for
   Sentinel-2, 30 m for Landsat), where pixels without a measurement are NODATA.
3. **Surface reflectance** (:mod:`agriseries.l2a.smac`): SMAC's inverse model per band
   with that band's coefficients, the band's own viewing angles and the sun angles,
   the pressure from the altitude (a DEM or one altitude) and the sea-level pressure,
   and the ozone, water vapour and AOT at 550 nm of the product's auxiliary data (the
   ECMWF / CAMS files of a SAFE granule) or the defaults of :class:`L2AParams`. The
   atmospheric terms are computed on the coarse grid and interpolated bilinearly to
   each band's pixels inside one compiled pass (:func:`agriseries.l2a.smac.apply_inverse_on_grid`).
4. **Product** ``L2A_<sensor>_<tile>_<datetime>_AGS``: every reflective band (not the
   cirrus band, not the Landsat panchromatic band) as int16 x 10000 at its native
   resolution, the common ``mask``, the ``aot`` used (coarse grid), the angle grids
   of the L1C, a copy of the tile state after this date, and an Item saying which
   mode the masks were made in and where each atmospheric input came from.
5. **State** (``STORE/state/l2a/<tile>/state.npz``): updated with the date's clear
   pixels and saved atomically *after* the product is in the store. A product that
   fails (missing band, no angle grid, unreadable file) is reported and skipped; the
   state is left as it was, and the next date processes.

**Initialisation.** While the state has no history, the masks use the mono-temporal
tests only (mode ``init``). Once the state holds ``backward_dates`` dates, every
product made in ``init`` mode is made again against the state built from the other
dates (mode ``backward``: MAJA's backward initialisation, which processes the first
dates again once a composite exists; the composite pixels and stack images of the
date itself are left out so that a date is never compared with itself).

A product dated before the last date of the state (a late arrival) is processed
against the state but does not update it (the composite only moves forward in time).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pystac
from affine import Affine
from odc.geo.geobox import GeoBox

from ..version import VERSION
from ..core.bands import bands_of, is_sentinel2
from ..core.errors import (
    AgriseriesError,
    ConfigurationError,
    FailureRecord,
    InputProductError,
    ProductExistsError,
    MissingBandError,
)
from ..core.grid import snap_to_tile, tile_footprint, tile_geobox
from ..core.ids import Level, ProductId, l2a_id
from ..core.masks import MaskBit
from ..io.product import AngleGrid, SourceProduct, load, mean_view_grid
from ..io.store import Layer, ProductFile, ProductStore
from . import smac
from .cloudmask import (
    CoarseScene,
    MaskResult,
    TileState,
    day_number,
    detect,
    update_state,
)
from .params import L2AParams  # noqa: F401 -- re-exported

log = logging.getLogger(__name__)

#: Common name in the cloud tests -> band, per sensor family.
SCENE_BANDS = {
    "S2": {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B08",
           "swir16": "B11", "swir22": "B12", "cirrus": "B10"},
    "L": {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5",
          "swir16": "B6", "swir22": "B7", "cirrus": "B9"},
}
#: Bands the cloud tests cannot do without.
REQUIRED_SCENE_BANDS = ("blue", "green", "red", "nir", "swir16")
#: Output (surface reflectance) bands per sensor family.
OUTPUT_BANDS = {
    "S2": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "L": ("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
}

#: From this coarse resolution on, the tile state covers the whole tile (915 x 915 px at 120 m).
WHOLE_TILE_MIN_RESOLUTION = 120.0
DEFAULT_AOT550 = 0.1
DEFAULT_OZONE = 0.3
DEFAULT_WATER_VAPOUR = 1.42
DEFAULT_PRESSURE_MSL = 1013.25


def _family(sensor: str) -> str:
    return "S2" if is_sentinel2(sensor) else "L"


@dataclass
class L2AResult:
    """What :func:`l2a` did.

    Attributes
    ----------
    written
        Product ids written (in processing order; a product made again in backward
        mode appears twice).
    skipped
        Product ids already in the store.
    failures
        The L1C products that could not be made (or whose state was not updated), one
        :class:`~agriseries.core.errors.FailureRecord` each.
    state_path
        The tile state file.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    state_path: Path | None = None

    @property
    def failed(self) -> dict[str, str]:
        """L1C product id -> the error message, for every failure."""
        return {f.input: f.message for f in self.failures}

    def fail(self, l1c: str, exc: BaseException, what: str = "") -> None:
        """Record that an L1C product could not be made (``what`` prefixes the message)."""
        rec = FailureRecord.from_exception(l1c, exc)
        self.failures.append(dataclasses.replace(rec, message=f"{what}{rec.message}"))


# ------------------------------------------------------------------------------------
# grids


def coarse_grid(tile: str, footprint, resolution: float) -> GeoBox:
    """The tile's coarse grid (origin at the tile's corner, the last row and column
    reaching past its edge when ``resolution`` does not divide 109800 m) cropped to
    ``footprint`` on whole pixels."""
    t = tile_geobox(tile, 60)
    n = math.ceil(t.shape.x * 60 / resolution)
    whole = GeoBox((n, n), Affine(resolution, 0, t.affine.c, 0, -resolution, t.affine.f), t.crs)
    sub = snap_to_tile(whole, footprint)
    if sub is None:
        raise ConfigurationError(f"the products do not overlap tile {tile}")
    return sub


def grid_id(gb: GeoBox) -> str:
    """The identity of a grid, kept in the state file."""
    a = gb.affine
    return f"{gb.crs}|{a.c:.3f},{a.f:.3f},{a.a:.3f}|{gb.shape.y}x{gb.shape.x}"


def _fine_grid(coarse: GeoBox, res: int) -> GeoBox:
    """The grid at ``res`` covering the coarse grid (same corner)."""
    a = coarse.affine
    k = a.a / res
    return GeoBox((round(coarse.shape.y * k), round(coarse.shape.x * k)),
                  Affine(res, 0, a.c, 0, -res, a.f), coarse.crs)


# ------------------------------------------------------------------------------------
# per-pixel work


def _smac_block(toa: np.ndarray, atm: np.ndarray, trans: np.ndarray, s: np.ndarray,
                res_fine: float, res_coarse: float, block_info=None) -> np.ndarray:
    """SMAC of one chunk, the terms interpolated bilinearly from the coarse grid, whose
    values stand at the coarse pixel centres (hence the half-pixel shift)."""
    (r0, _), (c0, _) = block_info[0]["array-location"]
    rows = smac.grid_coordinates(toa.shape[0], res_fine, res_coarse, first_pixel=r0) - 0.5
    cols = smac.grid_coordinates(toa.shape[1], res_fine, res_coarse, first_pixel=c0) - 0.5
    return smac.apply_inverse_on_grid(toa, smac.SmacTerms(atm, trans, s), rows, cols)


def _repeat_block(coarse_bits: np.ndarray, toa_nan: np.ndarray, ratio: int, block_info=None):
    (r0, r1), (c0, c1) = block_info[1]["array-location"]
    rows = np.minimum(np.arange(r0, r1) // ratio, coarse_bits.shape[0] - 1)
    cols = np.minimum(np.arange(c0, c1) // ratio, coarse_bits.shape[1] - 1)
    out = coarse_bits[rows][:, cols].copy()
    nodata = np.uint8(MaskBit.NODATA)
    out[toa_nan] = nodata
    # a measured pixel in a coarse pixel that had none keeps no other bit
    out[~toa_nan & (out == nodata)] = 0
    return out


# ------------------------------------------------------------------------------------
# one product


@dataclass
class Atmosphere:
    """The atmosphere SMAC corrects a product with, and where each value came from
    (``sources``: ``product`` -- its auxiliary data --, ``parameter`` or ``default``)."""

    aot550: float
    ozone: float
    water_vapour: float
    pressure_msl: float
    sources: dict[str, str]


def atmosphere(product: SourceProduct, params: L2AParams) -> Atmosphere:
    """The atmosphere of a product: a value of ``params`` when given, else the product's
    auxiliary value (CAMS / ECMWF of a SAFE granule), else the default."""
    aux = product.metadata.get("atmosphere") or {}
    values, sources = {}, {}
    for key, default in (("aot550", DEFAULT_AOT550), ("ozone", DEFAULT_OZONE),
                         ("water_vapour", DEFAULT_WATER_VAPOUR),
                         ("pressure_msl", DEFAULT_PRESSURE_MSL)):
        given = getattr(params, key)
        if given is not None:
            values[key], sources[key] = float(given), "parameter"
        elif key in aux:
            values[key], sources[key] = float(aux[key]), f"product ({aux.get('source', 'aux')})"
        else:
            values[key], sources[key] = default, "default"
    return Atmosphere(**values, sources=sources)


def coarse_altitude(params: L2AParams, grid: GeoBox) -> np.ndarray:
    """Ground altitude (m) on the coarse grid: the DEM of ``params`` averaged onto it, or
    ``params.altitude`` everywhere."""
    if params.dem is None:
        return np.full(grid.shape, float(params.altitude), np.float64)
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.vrt import WarpedVRT

    try:
        with rasterio.open(params.dem) as src, WarpedVRT(
                src, crs=str(grid.crs), transform=grid.affine, width=grid.shape.x,
                height=grid.shape.y, resampling=Resampling.average, src_nodata=src.nodata,
                nodata=np.nan, dtype="float32") as vrt:
            z = vrt.read(1).astype(np.float64)
    except (RasterioIOError, OSError) as exc:
        raise ConfigurationError(f"{params.dem}: cannot read the DEM: {exc}") from exc
    if not np.isfinite(z).any():
        raise ConfigurationError(f"{params.dem}: the DEM does not cover the tile's products")
    return np.where(np.isfinite(z), z, np.nanmean(z))


def _view_grid(product: SourceProduct, band: str) -> AngleGrid:
    if band in product.view_angles:
        return product.view_angles[band]
    return mean_view_grid(product.view_angles)


def check_inputs(product: SourceProduct, pid: str) -> dict[str, str]:
    """The scene bands of a product; InputProductError if it cannot make an L2A."""
    fam = _family(product.sensor)
    scene = {k: b for k, b in SCENE_BANDS[fam].items() if b in product.bands}
    missing = [SCENE_BANDS[fam][k] for k in REQUIRED_SCENE_BANDS if k not in scene]
    if missing:
        raise MissingBandError(product.path, f"{pid}: band(s) {', '.join(missing)} missing; the "
                               f"cloud tests need {', '.join(SCENE_BANDS[fam][k] for k in REQUIRED_SCENE_BANDS)}"
                               f" (the product has {', '.join(product.bands) or 'no band'})")
    if product.sun_angles is None or not product.view_angles:
        what = "sun" if product.sun_angles is None else "viewing"
        raise InputProductError(product.path, f"{pid}: no {what} angle grid; the atmospheric "
                                "correction and the shadow projection need the sun and viewing angles")
    return scene


def read_scene(product: SourceProduct, scene_bands: dict[str, str], grid: GeoBox,
               altitude: np.ndarray, atm: Atmosphere) -> tuple[CoarseScene, dict]:
    """The coarse scene of a product: TOA averaged on ``grid``, Rayleigh / gas corrected."""
    ds = load(product, geobox=grid, bands=list(scene_bands.values()), angles="mean",
              with_mask=False, with_aux=False)
    names = list(scene_bands.values()) + ["sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth"]
    (arrays,) = dask.compute({n: ds[n].data[0] for n in names})
    pressure = smac.pressure_from_altitude(altitude) * (atm.pressure_msl / DEFAULT_PRESSURE_MSL)
    bands: dict[str, np.ndarray] = {}
    for common, b in scene_bands.items():
        toa = arrays[b]
        if common == "cirrus":
            bands[common] = toa.astype(np.float32)
            continue
        vz, va = _view_grid(product, b).on(grid)
        coefs = smac.coefficients_for(product.sensor, b)
        tocr = smac.smac_inverse(toa, coefs, arrays["sun_zenith"], arrays["sun_azimuth"], vz, va,
                                 pressure=pressure, aot550=0.0, uo3=atm.ozone, uh2o=atm.water_vapour)
        bands[common] = np.where(np.isfinite(toa), tocr, np.nan).astype(np.float32)
    when = product.datetime
    scene = CoarseScene(
        date=when.date(), bands=bands,
        sun_zenith=arrays["sun_zenith"], sun_azimuth=arrays["sun_azimuth"],
        view_zenith=arrays["view_zenith"], view_azimuth=arrays["view_azimuth"],
        pixel_size=float(grid.affine.a), altitude=altitude)
    return scene, {"pressure": pressure, **arrays}


def _state_without(state: TileState, day: dt.date) -> TileState:
    """The state with what came from ``day`` itself left out (backward mode and a date made
    again): its composite pixels become "never seen clear" and its stack image goes, so that
    a date is never compared with itself."""
    out = state.copy()
    own = out.comp_date == day_number(day)
    for arr in out.composite.values():
        arr[own] = np.nan
    out.comp_date[own] = -1
    out.stack = [s for s in out.stack if s.date != day]
    out.dates = [d for d in out.dates if d != day]
    return out


def _mask_layer(bits: np.ndarray, toa: da.Array, coarse: GeoBox, fine: GeoBox) -> Layer:
    """The coarse mask bits repeated onto ``fine``, NODATA where ``toa`` (a band on that
    grid) has no measurement."""
    ratio = round(coarse.affine.a / fine.affine.a)
    mask = da.map_blocks(_repeat_block, bits, da.isnan(toa), ratio, dtype=np.uint8,
                         chunks=toa.chunks)
    return Layer("mask", mask, fine, "mask")


def _product_cells(product: SourceProduct, grid: GeoBox) -> tuple[GeoBox, tuple[slice, slice]]:
    """The part of the state grid a product covers (whole coarse cells) and its slices."""
    sub = snap_to_tile(grid, product.footprint) if product.footprint is not None else None
    if sub is None:
        return grid, (slice(None), slice(None))
    res = grid.affine.a
    r0 = round((grid.affine.f - sub.affine.f) / res)
    c0 = round((sub.affine.c - grid.affine.c) / res)
    return sub, (slice(r0, r0 + sub.shape.y), slice(c0, c0 + sub.shape.x))


def _mask_resolution(params: L2AParams, sensor: str) -> int:
    if params.mask_resolution is not None:
        return params.mask_resolution
    return 20 if is_sentinel2(sensor) else 30


def make_product(store: ProductStore, item: pystac.Item, state: TileState | None,
                 grid: GeoBox, params: L2AParams, altitude: np.ndarray, *,
                 mode: str, write: bool = True, overwrite: bool = False
                 ) -> tuple[MaskResult, TileState | None, pystac.Item | None]:
    """Masks and surface reflectance of one L1C product (see the module docstring)."""
    product = store.open(item)
    pid_in = item.id
    scene_bands = check_inputs(product, pid_in)
    if product.footprint is not None:
        fp = product.footprint.to_crs(grid.crs)
        outside = fp.difference(grid.extent).area / max(fp.area, 1e-9)
        if outside > 0.01:
            raise InputProductError(
                product.path, f"{pid_in}: {100 * outside:.0f} % of the product lies outside the "
                f"tile state's {grid.affine.a:g} m grid, made for the products of a smaller area; "
                f"use a resolution of {WHOLE_TILE_MIN_RESOLUTION:g} m or more (the whole tile), "
                "or delete the state to rebuild it")
    atm = atmosphere(product, params)
    scene, arrays = read_scene(product, scene_bands, grid, altitude, atm)
    if not any(np.isfinite(v).any() for v in scene.bands.values()):
        raise InputProductError(product.path, f"{pid_in}: no measured pixel on the tile's grid")
    result = detect(scene, state, params.cloud)
    # the state after this date (a late date or a date made again does not move it)
    new_state = (update_state(state, scene, result, params.cloud, grid=grid_id(grid))
                 if mode in ("init", "nominal", "catch-up") else None)
    if not write:
        return result, new_state, None

    fam = _family(product.sensor)
    pid = ProductId(Level.L2A, product.sensor, ProductId.parse(pid_in).tile, product.datetime, "AGS")
    # the product covers the coarse cells of its footprint, on the state grid's pixels
    sub, sl = _product_cells(product, grid)
    bits = result.to_bits()[sl]
    aot = np.where(np.isfinite(scene.bands["blue"]), atm.aot550, np.nan).astype(np.float32)[sl]
    pressure = arrays["pressure"]
    layers: list[Layer] = []
    band_table = bands_of(product.sensor)

    def toa_on(b: str, res: int) -> tuple[da.Array, GeoBox]:
        fine = _fine_grid(sub, res)
        return load(product, geobox=fine, bands=[b], angles=None, with_mask=False,
                    with_aux=False)[b].data[0], fine

    read: dict[int, tuple[da.Array, GeoBox]] = {}  # a band read at each resolution
    for b in OUTPUT_BANDS[fam]:
        if b not in product.bands:
            continue
        res = int(band_table[b].resolution)
        toa, fine = toa_on(b, res)
        read.setdefault(res, (toa, fine))
        vz, va = _view_grid(product, b).on(grid)
        terms = smac.smac_terms(smac.coefficients_for(product.sensor, b), arrays["sun_zenith"],
                                arrays["sun_azimuth"], vz, va, pressure=pressure,
                                aot550=atm.aot550, uo3=atm.ozone, uh2o=atm.water_vapour)
        atm_, trans_, s_ = (np.broadcast_to(np.asarray(t, np.float64), grid.shape)[sl].copy()
                            for t in (terms.atm, terms.trans, terms.s))
        surf = da.map_blocks(_smac_block, toa, atm_, trans_, s_, float(res),
                             float(grid.affine.a), dtype=np.float32)
        layers.append(Layer(b, surf, fine, "reflectance", band=band_table[b]))
    mres = _mask_resolution(params, product.sensor)
    toa, fine = read[mres] if mres in read else toa_on(scene_bands["red"], mres)
    layers.append(_mask_layer(bits, toa, sub, fine))
    layers.append(Layer("aot", aot, sub, "aux", unit="1"))

    files = []
    with tempfile.TemporaryDirectory(dir=store.root) as tmpdir:
        copy = new_state if new_state is not None else state
        if params.state_copy and copy is not None:
            path = Path(tmpdir) / "state.npz"
            copy.save(path)
            files.append(ProductFile("state", path, "application/octet-stream",
                                     ("metadata", "state"),
                                     "Tile state after this date (composite, dates, stack)"))
        grids = {"sun": product.sun_angles, **product.view_angles}
        counts = {k: int(getattr(result, k).sum()) for k in
                  ("valid", "cloud", "cloud_mono", "cloud_multi", "cirrus", "shadow", "snow", "water")}
        parameters = {
            "mode": mode,
            "coarse_resolution": grid.affine.a,
            "mask_resolution": mres,
            "coarse_grid": grid_id(grid),
            "atmosphere": {"aot550": atm.aot550, "ozone": atm.ozone,
                           "water_vapour": atm.water_vapour, "pressure_msl": atm.pressure_msl,
                           "sources": atm.sources,
                           "altitude": "dem" if params.dem else params.altitude},
            "cloud": dataclasses.asdict(params.cloud),
            "state_dates": [d.isoformat() for d in (state.dates if state is not None else [])],
            "coarse_counts": counts,
        }
        written = store.write_product(
            pid, layers, footprint=product.footprint if product.footprint is not None
            else tile_footprint(pid.tile),
            sensors=[product.sensor], inputs=[pid_in], parameters=parameters,
            lineage=f"L2A by agriseries {VERSION}: SMAC surface reflectance and MAJA-like "
                    f"masks ({mode} mode) from {pid_in}",
            datetime=product.datetime, angle_grids=grids, files=files, overwrite=overwrite,
            properties={"agriseries:l2a_mode": mode})
    return result, new_state, written


# ------------------------------------------------------------------------------------
# the tile


def state_path(store: ProductStore, tile: str) -> Path:
    """Where the state of a tile is kept."""
    return store.root / "state" / "l2a" / tile / "state.npz"


def _footprint_union(items: list[pystac.Item]):
    from odc.geo.geom import Geometry

    geoms = [Geometry(it.geometry, "EPSG:4326") for it in items if it.geometry]
    if not geoms:
        return None
    u = geoms[0]
    for g in geoms[1:]:
        u = u.union(g)
    return u


def l2a(store: ProductStore | str | Path, tile: str, start: dt.datetime | None = None,
        end: dt.datetime | None = None, *, params: L2AParams = L2AParams(),
        overwrite: bool = False, items: list[pystac.Item] | None = None) -> L2AResult:
    """Make the L2A products of every L1C product of a tile, in date order.

    Parameters
    ----------
    store
        The product store (holds the L1C products; receives the L2A).
    tile
        Sentinel-2 tile name (``T31UDS``).
    start, end
        Only the L1C products acquired in this range (inclusive; default all).
    params
        :class:`L2AParams`.
    overwrite
        Make again the L2A products that already exist (the state is not rewound:
        start from an empty state by deleting the state file for a clean rerun).
    items
        The L1C items to make (the production job's inputs), instead of looking them up in
        the store between ``start`` and ``end``.

    Returns
    -------
    L2AResult
    """
    store = store if isinstance(store, ProductStore) else ProductStore(store)
    if items is None:
        items = store.items(Level.L1C, tile, start, end)
    items = sorted(items, key=lambda it: it.datetime)
    result = L2AResult(state_path=state_path(store, tile))
    if not items:
        return result
    spath = result.state_path
    state: TileState | None = None
    if spath.exists():
        state = TileState.load(spath)  # CorruptProductError naming the file if damaged
        grid = _grid_from_id(state.grid)
    else:
        # the whole tile at MAJA's resolutions (458 x 458 px at 240 m: any later orbit fits);
        # a finer grid (a small area, tests) covers the footprints of the products there now
        union = _footprint_union(items)
        whole = params.resolution >= WHOLE_TILE_MIN_RESOLUTION or union is None
        grid = coarse_grid(tile, tile_footprint(tile) if whole else union, params.resolution)
    if abs(grid.affine.a - params.resolution) > 1e-6:
        raise ConfigurationError(f"{spath}: the tile state is on a {grid.affine.a:g} m grid, not "
                                 f"{params.resolution:g} m; delete it to change the resolution")
    altitude = coarse_altitude(params, grid)
    if not overwrite:
        _refuse_made_otherwise(store, tile, items, params)

    for item in items:
        pid_in = item.id
        pid = l2a_id(pid_in, tile)
        day = item.datetime.date()
        in_state = state is not None and day in state.dates
        if store.exists(pid) and not overwrite:
            result.skipped.append(str(pid))
            if state is not None and not in_state and day > max(state.dates, default=day):
                # written but the state was not saved (a crash in between): catch up
                state = _catch_up(store, item, state, grid, params, altitude, spath, result)
            elif state is None:
                state = _catch_up(store, item, state, grid, params, altitude, spath, result)
            continue
        late = state is not None and state.dates and day <= max(state.dates) and not in_state
        if in_state:
            mode = "nominal"
            use_state = _state_without(state, day)
        elif late:
            mode = "late"
            use_state = state
        else:
            mode = "init" if _no_history(state) else "nominal"
            use_state = state
        try:
            _, new_state, written = make_product(store, item, use_state, grid, params, altitude,
                                                 mode=mode, overwrite=overwrite)
        except AgriseriesError as exc:
            log.error("L2A of %s failed: %s", pid_in, exc)
            result.fail(pid_in, exc)
            continue
        result.written.append(written.id)
        if new_state is not None and not in_state:
            spath.parent.mkdir(parents=True, exist_ok=True)
            new_state.save(spath)  # atomic; after the product is in the store
            state = new_state

    if params.backward_dates and state is not None and len(state.dates) >= params.backward_dates:
        _backward(store, tile, state, grid, params, altitude, result)
    return result


def requested_parameters(params: L2AParams) -> dict:
    """What an L2A request says about its products, in the shape of their recorded
    ``agriseries:parameters`` (:meth:`ProductStore.already_made` compares the two): the
    coarse grid, the mask resolution and the atmosphere when given (``None``, the product's
    own value, is not compared), every cloud threshold."""
    atmosphere = {k: getattr(params, k) for k in ("aot550", "ozone", "water_vapour",
                                                  "pressure_msl")}
    atmosphere["altitude"] = "dem" if params.dem else params.altitude
    return {"coarse_resolution": float(params.resolution),
            "mask_resolution": params.mask_resolution,
            "atmosphere": atmosphere, "cloud": dataclasses.asdict(params.cloud)}


def _refuse_made_otherwise(store: ProductStore, tile: str, items: list[pystac.Item],
                           params: L2AParams) -> None:
    """Before any work: the L2A products of ``items`` already in the store must have been made
    with ``params``; else a :class:`ProductExistsError` naming the first and how many (a
    series of L2A shares a cloud-detection state: it is not made half one way, half the
    other)."""
    request = requested_parameters(params)
    refused: list[ProductExistsError] = []
    for item in items:
        try:
            store.already_made(l2a_id(item.id, tile), request)
        except ProductExistsError as exc:
            refused.append(exc)
    if refused:
        more = (f" ({len(refused) - 1} other L2A product(s) of {tile} asked for are in the "
                "store made otherwise too; nothing was made)" if len(refused) > 1 else
                " (nothing was made)")
        raise ProductExistsError(str(refused[0]) + more)


def _no_history(state: TileState | None) -> bool:
    return state is None or not state.dates


def _catch_up(store, item, state, grid, params, altitude, spath, result):
    try:
        _, new, _ = make_product(store, item, state, grid, params, altitude,
                                 mode="catch-up", write=False)
    except AgriseriesError as exc:
        result.fail(item.id, exc, "state not updated: ")
        return state
    spath.parent.mkdir(parents=True, exist_ok=True)
    new.save(spath)
    return new


def _backward(store: ProductStore, tile: str, state: TileState, grid: GeoBox,
              params: L2AParams, altitude: np.ndarray, result: L2AResult) -> None:
    """Make again the products made in ``init`` mode, against the state of the other dates."""
    for it in sorted(store.items(Level.L2A, tile), key=lambda i: i.datetime):
        if it.properties.get("agriseries:l2a_mode") != "init":
            continue
        inputs = it.properties.get("agriseries:inputs") or []
        if not inputs:
            continue
        src = ProductId.parse(inputs[0])
        try:
            l1c = store.item(src)
        except (OSError, AgriseriesError) as exc:
            result.fail(inputs[0], exc, "backward initialisation: ")
            continue
        day = l1c.datetime.date()
        others = _state_without(state, day)
        if _no_history(others):
            continue
        try:
            _, _, written = make_product(store, l1c, others, grid, params, altitude,
                                         mode="backward", overwrite=True)
        except AgriseriesError as exc:
            log.error("backward L2A of %s failed: %s", l1c.id, exc)
            result.fail(l1c.id, exc, "backward initialisation: ")
            continue
        result.written.append(written.id)


def _grid_from_id(ident: str) -> GeoBox:
    try:
        crs, origin, shape = ident.split("|")
        x0, y0, res = (float(v) for v in origin.split(","))
        ny, nx = (int(v) for v in shape.split("x"))
    except ValueError as exc:
        raise ConfigurationError(f"unreadable grid identity {ident!r} in a tile state") from exc
    return GeoBox((ny, nx), Affine(res, 0, x0, 0, -res, y0), crs)
