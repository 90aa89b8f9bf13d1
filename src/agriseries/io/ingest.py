"""Ingest: read provider products and write them into the product store.

:func:`ingest` takes paths (product folders, archives, MTL files, NetCDF/Zarr
series), finds the reader of each (:mod:`agriseries.io.detect`), and writes one
store product per acquisition and tile:

* Sentinel-2 products (SAFE, MUSCATE) stay on their own tile; each band is written
  at its native resolution (10, 20, 60 m), the mask at the resolution of the
  provider's quality layer (Sen2Cor SCL: 20 m);
* products that are not on a Sentinel-2 grid (Landsat, old THEIA Lambert-93 N2A)
  are warped onto every tile they overlap (or the ``tile`` asked for) at 30 m,
  cropped to their footprint, on the tile's pixel lattice;
* time series write one product per date, on the tile whose lattice they share.

Bad input never stops the batch: each path gets a result (``ingested``,
``skipped`` -- already in the store --, or ``failed`` with the error and traceback),
and the caller decides the exit code. A store that cannot be written (full, read-only)
stops it with a :class:`~agriseries.core.errors.StoreWriteError`; what was written stays.
"""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from ..version import VERSION
from ..core.errors import (
    AgriseriesError,
    AlreadyStoredError,
    EmptyIntersectionError,
    FailureRecord,
    InputProductError,
    StoreWriteError,
    WithFailure,
)
from ..core.grid import (
    parse_tile,
    snap_to_tile,
    tile_footprint,
    tile_geobox,
    tiles_for_geometry,
)
from ..core.ids import Level, ProductId
from .detect import find_reader
from .product import SourceProduct, load
from .store import Layer, ProductStore, dataset_layers

#: Resolution (m) at which products that are not on a Sentinel-2 grid are stored.
FOREIGN_GRID_RESOLUTION = 30


@dataclass
class IngestResult(WithFailure):
    """What happened to one input path.

    Attributes
    ----------
    path
        The input.
    status
        ``ingested``, ``skipped`` (already in the store) or ``failed``.
    reader
        The reader that recognised it.
    products
        The product ids written or found.
    failure
        Why it failed (:class:`~agriseries.core.errors.FailureRecord`), else ``None``;
        ``error``, ``error_type`` and ``traceback`` read it.
    incomplete
        Products written without some of their layers: id -> the missing layers.
    """

    path: str
    status: str  # "ingested" | "skipped" | "failed"
    reader: str | None = None
    products: list[str] = field(default_factory=list)
    failure: FailureRecord | None = None
    incomplete: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (with ``error``, ``error_type`` and ``traceback``)."""
        return {"path": self.path, "status": self.status, "reader": self.reader,
                "products": list(self.products), "error": self.error,
                "error_type": self.error_type, "traceback": self.traceback,
                "incomplete": {k: list(v) for k, v in self.incomplete.items()}}


def ingest(paths: list[str | Path], store: ProductStore, *, tile: str | None = None,
           overwrite: bool = False, allow_missing_bands: bool = False,
           stack_bands: Sequence[str] | None = None,
           on_result: Callable[[IngestResult], None] | None = None) -> list[IngestResult]:
    """Ingest every path into the store; return one result per path.

    Parameters
    ----------
    paths
        Products or series to ingest.
    store
        The product store.
    tile
        Only write products on this Sentinel-2 tile (others are refused with an
        :class:`EmptyIntersectionError` if the product does not overlap it).
    overwrite
        Rewrite products that are already in the store (default: skip them).
    allow_missing_bands
        Ingest the bands that are on disk when some are missing (partial downloads),
        instead of refusing the product; the item lists the bands left out in
        ``agriseries:missing_bands``. A series has nothing to leave out.
    stack_bands
        The band names, in file order, of a product stored as one multi-band stack
        whose metadata does not say which bands it holds (MUSCATE ``*_STACK.tif``
        extracts); refused by the readers of one-file-per-band formats.
    on_result
        Called after each path (progress reporting).
    """
    results: list[IngestResult] = []
    try:
        _ingest_all(paths, store, tile, overwrite, allow_missing_bands, stack_bands, on_result,
                    results)
    except BaseException:
        store.finish_catalog(interrupted=True)  # what was written is listed
        raise
    store.finish_catalog()
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order.get(r.path, len(order)))


def _ingest_all(paths, store, tile, overwrite, allow_missing_bands, stack_bands, on_result,
                results: list[IngestResult]) -> None:
    series: list[tuple[IngestResult, xr.Dataset]] = []
    for path in paths:
        res = IngestResult(str(path), "failed")
        try:
            reader = find_reader(path)
            res.reader = reader.name
            obj = reader.read(str(path), allow_missing_bands=allow_missing_bands,
                              stack_bands=stack_bands)
            if reader.kind == "product":
                written, skipped = ingest_product(obj, store, tile=tile, overwrite=overwrite,
                                                  incomplete=res.incomplete)
            else:  # series are written below, grouped with the other files of their dates
                series.append((res, obj))
                continue
            res.products = written + skipped
            res.status = "ingested" if written else "skipped"
        except StoreWriteError:
            raise  # the store is full or read-only: every further product would fail too
        except Exception as exc:  # one bad product never stops the batch
            _record_failure(res, exc)
        results.append(res)
        if on_result:
            on_result(res)
    for group in _group_series(series):
        try:
            incomplete: dict[str, list[str]] = {}
            written, skipped = ingest_series([(r.path, ds) for r, ds in group], store, tile=tile,
                                             overwrite=overwrite, incomplete=incomplete)
            for r, _ in group:
                r.incomplete = incomplete
                r.products = written + skipped
                r.status = "ingested" if written else "skipped"
        except StoreWriteError:
            raise
        except Exception as exc:
            for r, _ in group:
                _record_failure(r, exc)
        for r, _ in group:
            results.append(r)
            if on_result:
                on_result(r)


def _record_failure(res: IngestResult, exc: BaseException) -> None:
    res.status = "failed"
    message = str(exc) if isinstance(exc, AgriseriesError) else f"{res.path}: {exc!r}"
    res.failure = FailureRecord(res.path, type(exc).__name__, message,
                                "".join(traceback.format_exception(exc)))


def _group_series(series: list[tuple[IngestResult, xr.Dataset]]):
    """Series files with the same sensors and dates (e.g. 10 m and 20 m files of one extraction)."""
    groups: dict[tuple, list] = {}
    for res, ds in series:
        key = (tuple(ds["sensor"].values.tolist()), tuple(ds["time"].values.tolist()),
               str(ds.odc.geobox.crs))
        groups.setdefault(key, []).append((res, ds))
    return list(groups.values())


#: The layers an ingested L2A product needs to be whole: the reflectance bands every stage
#: reads (L3A, L3B, L4A, L4B) and the mask. A product without some of them is stored flagged
#: ``agriseries:incomplete`` with them in ``agriseries:missing_bands``.
L2A_REQUIRED = {
    "S2": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "mask"),
    "L": ("B2", "B3", "B4", "B5", "B6", "B7", "mask"),
}


def missing_layers(level: str, sensor: str, keys) -> list[str]:
    """The layers of :data:`L2A_REQUIRED` an ingested product of ``sensor`` lacks (only L2A
    products have requirements)."""
    if level != "L2A":
        return []
    need = next((v for k, v in L2A_REQUIRED.items() if sensor.startswith(k)), ())
    have = set(keys)
    return [k for k in need if k not in have]


def _completes(store: ProductStore, pid: ProductId, keys: set[str]) -> bool:
    """Whether a stored product is flagged incomplete and ``keys`` (the layers this ingest
    brings) hold every layer it has and some it lacks: then it is written again, whole."""
    item = store.item(pid)
    if not item.properties.get("agriseries:incomplete"):
        return False
    stored = {k for k, a in item.assets.items() if "data" in (a.roles or []) or k == "mask"}
    lacking = set(item.properties.get("agriseries:missing_bands") or [])
    return stored <= keys and bool(lacking & keys)


def _target_tiles(product: SourceProduct, tile: str | None) -> list[str]:
    if product.tile:
        if tile and parse_tile(tile).name != parse_tile(product.tile).name:
            fp = tile_footprint(tile)
            if product.footprint is None or not fp.intersects(product.footprint.to_crs(fp.crs)):
                raise EmptyIntersectionError(
                    product.path, f"the product (tile {product.tile}) does not overlap tile {tile}")
            raise InputProductError(
                product.path, f"the product is on tile {product.tile}, not {tile}; Sentinel-2 "
                "products are stored on their own tile")
        return [parse_tile(product.tile).name]
    if product.footprint is None:
        raise InputProductError(product.path, "the product has no footprint to find its tiles")
    if tile:
        fp = tile_footprint(tile)
        if not fp.intersects(product.footprint.to_crs(fp.crs)) or \
                fp.intersection(product.footprint.to_crs(fp.crs)).area <= 0:
            raise EmptyIntersectionError(
                product.path, f"the product's footprint does not overlap tile {parse_tile(tile).name}")
        return [parse_tile(tile).name]
    tiles = [t.name for t in tiles_for_geometry(product.footprint)]
    if not tiles:
        raise EmptyIntersectionError(product.path, "the footprint overlaps no Sentinel-2 tile")
    return tiles


def _resolution_groups(product: SourceProduct) -> dict[int, list[str]]:
    if not product.tile:
        return {FOREIGN_GRID_RESOLUTION: list(product.bands)}
    groups: dict[int, list[str]] = {}
    for name, asset in product.bands.items():
        res = int(round(asset.resolution or 10))
        groups.setdefault(res, []).append(name)
    return dict(sorted(groups.items()))


def ingest_product(product: SourceProduct, store: ProductStore, *, tile: str | None = None,
                   overwrite: bool = False, incomplete: dict[str, list[str]] | None = None
                   ) -> tuple[list[str], list[str]]:
    """Write one acquisition into the store, on each tile it covers.

    A product without every layer of :data:`L2A_REQUIRED` (bands missing from a partial
    download, ingested with ``allow_missing_bands``) is flagged incomplete: its item says
    ``agriseries:incomplete`` and lists them; ``incomplete`` (when given) gets its id and
    what it lacks. A stored incomplete product is written again, without ``overwrite``, by
    an ingest that brings what it lacked.

    Returns
    -------
    (written, skipped)
        Product ids written and product ids already present.
    """
    written, skipped = [], []
    groups = _resolution_groups(product)
    qres = [int(round(a.resolution)) for a in product.quality.values() if a.resolution]
    # the mask (and aot) keep the resolution of the provider's quality layer (Sen2Cor SCL: 20 m)
    mask_res = (min(qres) if qres and product.tile else min(groups))
    for t in _target_tiles(product, tile):
        pid = ProductId(Level(product.level), product.sensor, t, product.datetime, product.producer)
        keys = set(product.bands) | ({"mask"} if product.quality else set())
        replace = overwrite
        if store.exists(pid) and not overwrite and _completes(store, pid, keys):
            replace = True  # the stored one was incomplete, this one brings what it lacked
        if store.exists(pid) and not replace:
            inputs = store.item(pid).properties.get("agriseries:inputs", [])
            if product.product_id not in inputs:
                # another piece of the same acquisition (e.g. two THEIA extracts of one Landsat
                # pass): refuse loudly rather than skip it as if it were already in
                raise InputProductError(
                    product.path, f"the store already holds {pid} made from {', '.join(inputs)}; "
                    "mosaicking several pieces of one acquisition on a tile is not supported yet")
            skipped.append(str(pid))
            continue
        layers: list[Layer] = []
        for res, names in groups.items():
            # the mask (and aot) come with the band group of their resolution; the loader also
            # marks NODATA where that group's first band has no data
            with_mask = res == mask_res
            ds = load(product, resolution=res, tile=t, bands=names, angles=None,
                      with_mask=with_mask, with_aux=with_mask)
            layers += dataset_layers(ds, product.sensor)
        if mask_res not in groups:
            # no band at the mask's resolution (a partial product): read the finest band there
            # for the NODATA bit, and keep only the mask and auxiliary layers
            ref = min(product.bands, key=lambda b: product.bands[b].resolution or 0)
            ds = load(product, resolution=mask_res, tile=t, bands=[ref], angles=None)
            layers += dataset_layers(ds.drop_vars(ref), product.sensor)
        grids = {}
        if product.sun_angles is not None:
            grids["sun"] = product.sun_angles
        grids.update(product.view_angles)
        fp = product.footprint.to_crs(tile_footprint(t).crs) if product.footprint is not None \
            else tile_footprint(t)
        fp = fp.intersection(tile_footprint(t))
        missing = sorted(set(product.metadata.get("missing_bands", []))
                         | set(missing_layers(product.level, product.sensor,
                                              [layer.key for layer in layers])))
        if not write_unless_stored(store, pid, [product.product_id], dict(
                layers=layers, footprint=fp, sensors=[product.sensor], inputs=[product.product_id],
                parameters={"reader_metadata": _portable(_jsonable(product.metadata),
                                                         Path(product.path))},
            lineage=f"ingested from {product.producer} {product.level} product "
                    f"{product.product_id} by agriseries {VERSION}",
            datetime=product.datetime, angle_grids=grids or None, overwrite=replace,
            properties={"agriseries:source_files": [Path(product.path).name],
                        "agriseries:missing_bands": missing,
                        **({"agriseries:incomplete": True} if missing else {})})):
            skipped.append(str(pid))
            continue
        if missing and incomplete is not None:
            incomplete[str(pid)] = missing
        written.append(str(pid))
    return written, skipped


def write_unless_stored(store: ProductStore, pid: ProductId, inputs: list[str],
                        kwargs: dict) -> bool:
    """Write a product; ``False`` when another process (a second ingest of the same input
    running at the same time) stored it from the same inputs first: it is there, as asked."""
    try:
        store.write_product(pid, **kwargs)
        return True
    except AlreadyStoredError:
        if set(store.item(pid).properties.get("agriseries:inputs") or []) == set(inputs):
            return False
        raise


def _series_tile(ds: xr.Dataset, tile: str | None, source: str) -> str:
    if tile:
        return parse_tile(tile).name
    given = {str(v) for v in ds["tile"].values} - {""} if "tile" in ds.coords else set()
    if len(given) == 1:
        return parse_tile(given.pop()).name
    gb = ds.odc.geobox
    for t in tiles_for_geometry(gb.extent):
        tb = tile_geobox(t, int(abs(gb.resolution.x)))
        sub = snap_to_tile(tb, gb.extent)
        if tb.crs == gb.crs and sub is not None and sub.shape == gb.shape \
                and sub.affine.almost_equals(gb.affine):
            return t.name
    raise EmptyIntersectionError(source, f"the series grid {gb} lies on no Sentinel-2 tile lattice")


def ingest_series(parts: list[tuple[str, xr.Dataset]], store: ProductStore, *,
                  tile: str | None = None, overwrite: bool = False,
                  incomplete: dict[str, list[str]] | None = None
                  ) -> tuple[list[str], list[str]]:
    """Write every date of a time series into the store (one product per date).

    Parameters
    ----------
    parts
        ``(source path, Dataset)`` pairs of one area and the same dates, e.g. the 10 m and
        20 m files of an openEO extraction: each date becomes one product holding the
        variables of every part, each at its own resolution.
    store, tile, overwrite
        As for :func:`ingest`.
    incomplete
        Gets the id of every product written without all of :data:`L2A_REQUIRED` (a 10 m
        file whose 20 m partner is missing) and what it lacks; such products are flagged in
        their items, and completed by a later ingest of both files, without ``overwrite``.
    """
    first_source, first = parts[0]
    t = _series_tile(first, tile, first_source)
    placed = []
    for source, ds in parts:
        gb = ds.odc.geobox
        res = abs(gb.resolution.x)
        if 109800 % res:
            raise InputProductError(source, f"pixel size {res} m does not divide a Sentinel-2 tile")
        tb = tile_geobox(t, int(res))
        tgb = snap_to_tile(tb, gb.extent)
        if tgb is None:
            raise EmptyIntersectionError(source, f"the series does not overlap tile {t}")
        if not (tgb.shape == gb.shape and tgb.affine.almost_equals(gb.affine) and tb.crs == gb.crs):
            ds = ds.odc.reproject(tgb, resampling="nearest")
        placed.append((source, ds, tgb))
    times = sorted({v for _, ds, _ in placed for v in ds["time"].values})
    written, skipped = [], []
    for when64 in times:
        ones = [(src, ds.sel(time=[when64]), tgb) for src, ds, tgb in placed
                if when64 in ds["time"].values]
        src0, one0, _ = ones[0]
        sensor = str(one0["sensor"].values[0])
        when = _to_datetime(when64)
        level = str(one0["level"].values[0]) if "level" in one0.coords else "L2A"
        producer = str(one0["producer"].values[0]) if "producer" in one0.coords else "UNKNOWN"
        pid = ProductId(Level(level), sensor, t, when, producer)
        layers = [layer for _, one, _ in ones for layer in dataset_layers(one, sensor)]
        replace = overwrite
        if store.exists(pid) and not overwrite:
            if not _completes(store, pid, {layer.key for layer in layers}):
                skipped.append(str(pid))
                continue
            replace = True  # the stored one was incomplete, this one brings what it lacked
        masks = [one["mask"].values[0] for _, one, _ in ones if "mask" in one]
        if masks and all(bool(np.all(m & 64)) for m in masks):
            continue  # nothing was measured at this date over the series' area
        missing = missing_layers(level, sensor, [layer.key for layer in layers])
        inputs = sorted({str(one["source_id"].values[0]) if "source_id" in one.coords else src
                         for src, one, _ in ones})
        names = [Path(src).name for src, _, _ in ones]
        # an L1C series keeps its angles as grids too: the L2A processor needs them
        grids = _series_angle_grids(ones, [layer.key for layer in layers]) \
            if level == "L1C" else None
        if not write_unless_stored(store, pid, inputs, dict(
            layers=layers, footprint=ones[0][2].extent, sensors=[sensor], inputs=inputs,
            parameters={"sources": names},
            lineage=f"ingested from the time series {', '.join(names)} by agriseries {VERSION}",
            datetime=when, overwrite=replace, angle_grids=grids,
            properties={"agriseries:source_files": names,
                        # the file did not say which Sentinel-2 unit: the sensor is an assumption
                        "agriseries:sensor_assumed": any(bool(one.attrs.get("sensor_assumed"))
                                                         for _, one, _ in ones),
                        **({"agriseries:incomplete": True, "agriseries:missing_bands": missing}
                           if missing else {})})):
            skipped.append(str(pid))
            continue
        if missing and incomplete is not None:
            incomplete[str(pid)] = missing
        written.append(str(pid))
    return written, skipped


def _series_angle_grids(ones, bands: list[str]) -> dict | None:
    """The sun and view angles of one date of a series as constant grids (their means over
    the series' area, the azimuths through sine and cosine), the view grid for each band;
    ``None`` when the series has no sun or no view angles."""
    from .product import AngleGrid

    def mean(one, zen: str, azi: str):
        if zen not in one or azi not in one:
            return None
        z = np.asarray(one[zen].values, np.float64)
        a = np.radians(np.asarray(one[azi].values, np.float64))
        if not np.isfinite(z).any():
            return None
        az = np.degrees(np.arctan2(np.nanmean(np.sin(a)), np.nanmean(np.cos(a)))) % 360
        return float(np.nanmean(z)), float(az)

    for _, one, tgb in ones:
        sun = mean(one, "sun_zenith", "sun_azimuth")
        view = mean(one, "view_zenith", "view_azimuth")
        if sun is None or view is None:
            continue
        crs = str(tgb.crs)

        def grid(za):
            return AngleGrid(np.array([[za[0]]], np.float32), np.array([[za[1]]], np.float32),
                             0.0, 0.0, 1.0, crs)

        names = [b for b in bands if b.startswith("B")]
        return {"sun": grid(sun), **{b: grid(view) for b in names}}
    return None


def _to_datetime(value) -> dt.datetime:
    ts = np.datetime64(value, "us").astype(dt.datetime)
    return ts.replace(tzinfo=dt.timezone.utc)


def _portable(obj, product: Path):
    """Reader metadata without the paths of the machine that ingested: a path inside the
    input product becomes relative to it (``GRANULE/.../MTD_TL.xml``), the product itself
    its name, any other absolute path its file name."""
    if isinstance(obj, dict):
        return {k: _portable(v, product) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, product) for v in obj]
    if isinstance(obj, str) and obj.startswith(("/", "\\")) or (
            isinstance(obj, str) and len(obj) > 2 and obj[1] == ":" and obj[2] in "/\\"):
        p, base = Path(obj), product.resolve()
        for prefix in ("/vsizip/", "/vsitar/"):
            if obj.startswith(prefix):
                p = Path(obj[len(prefix):])
        try:
            rel = p.resolve().relative_to(base)
            return f"{base.name}/{rel.as_posix()}" if rel.parts else base.name
        except (ValueError, OSError):
            return p.name
    return obj


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    return str(obj)


__all__ = ["ingest", "ingest_product", "ingest_series", "IngestResult"]
