"""Reader for time-series NetCDF and Zarr files (the layout openEO and odc-stac write).

Such a file holds many acquisitions of one area: one variable per band over a time
dimension (``t``, ``time`` or ``timestamp``) and ``y``/``x`` coordinates, with a CRS
variable (``spatial_ref`` or ``crs``, or whichever variable the bands' ``grid_mapping``
attribute names) carrying ``crs_wkt`` / ``spatial_ref`` / ``epsg_code`` / ``epsg``.
:func:`read_timeseries` returns the agriseries Dataset directly (not a
:class:`~agriseries.io.product.SourceProduct`: one file, many dates), lazily (dask):

* dims ``(time, y, x)`` on an odc-geo GeoBox (``ds.odc.geobox``), north up;
* one float32 variable per band with agriseries names: Sentinel-2 ``B02`` ... ``B8A``;
  Landsat OLI ``B2`` ... ``B7`` (``B02`` / ``SR_B2`` in the file become ``B2``), thermal
  ``B10`` / ``B11`` kept in kelvin (``units = "K"``);
* reflectance = DN * ``scale_factor`` + ``add_offset`` from the variable's attributes,
  or DN * 1e-4 for an integer variable without them (the S2 L2A / openEO convention);
  NaN where the DN is the ``_FillValue`` / ``missing_value`` / ``nodata`` attribute, or 0
  for an integer variable that declares none;
* ``mask`` (uint8 common bits, :mod:`agriseries.core.masks`) from ``SCL``
  (:func:`~agriseries.core.masks.from_scl`), Landsat Collection 1 ``pixel_qa``
  (:func:`~agriseries.core.masks.from_pixel_qa_c1`) or Collection 2 ``QA_PIXEL``
  (:func:`~agriseries.core.masks.from_qa_pixel`), plus NODATA where the first band has
  no data; no ``mask`` when the file has none of these layers (the provider's layer
  itself is not kept);
* ``sun_zenith``, ``sun_azimuth``, ``view_zenith``, ``view_azimuth`` (degrees) from
  the usual angle variables (per date values are broadcast over y/x);
* coordinates on ``time``: ``sensor``, ``source_id`` (``<file stem>_<YYYYMMDDTHHMMSS>``),
  ``level``, ``producer``, ``tile``.

Sensor: the ``sensor`` argument, else a platform attribute or per-date variable, else
the file name (``S2A_``, ``L8_``, ``LC08`` ...). A file that only says "Sentinel-2"
(WorldCereal's ``S2_L2A_*`` files, GEE extractions) gets ``S2A`` and
``attrs["sensor_assumed"] = True``: the spectral difference between S2A and S2B is
small, but pass ``sensor=`` when it matters.

Landsat naming: the WorldCereal ``L8_SR_*`` files name the OLI bands ``B02`` ...
``B07`` with zero padding. They are OLI band numbers, not Sentinel-2 equivalents: the
data show it (median reflectance of the 00002806639B424A patch: ``B05`` 0.33 like
S2 B08 NIR, ``B06`` 0.21 like S2 B11, ``B07`` 0.15 like S2 B12, where S2's own B05-B07
red-edge bands are 0.17/0.32/0.37), and the file also has the TIRS bands ``B10``,
``B11``. They are mapped to ``B2`` ... ``B7``; use
:func:`agriseries.core.bands.landsat_as_s2` for Sentinel-2 names.

Producer: a ``producer`` / ``processor`` attribute, else ``SEN2COR`` for Sentinel-2 and
``LASRC`` for Landsat. Tile: a ``tile`` attribute, else :func:`tile_of_grid` (the
Sentinel-2 tile whose pixel lattice the file's grid lies on), else ``""``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import dask.array as da
import numpy as np
import xarray as xr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from ..core.bands import bands_of, is_sentinel2, sensor_name
from ..core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    UnknownProductError,
)
from ..core.grid import parse_tile, tile_geobox, tiles_for_geometry
from ..core.masks import CF_ATTRS, MaskBit, from_pixel_qa_c1, from_qa_pixel, from_scl

__all__ = ["is_timeseries", "read_timeseries", "tile_of_grid", "TIME_DIMS"]

#: Names of the time dimension, in order of preference.
TIME_DIMS = ("t", "time", "timestamp")
#: Names of the CRS variable when no ``grid_mapping`` attribute names one.
CRS_VARS = ("spatial_ref", "crs")
#: Angle variable names -> agriseries names.
ANGLE_NAMES = {
    "sunzenithangles": "sun_zenith", "sunazimuthangles": "sun_azimuth",
    "viewzenithmean": "view_zenith", "viewazimuthmean": "view_azimuth",
    "sun_zenith": "sun_zenith", "sun_azimuth": "sun_azimuth",
    "view_zenith": "view_zenith", "view_azimuth": "view_azimuth",
    "sza": "sun_zenith", "saa": "sun_azimuth", "vza": "view_zenith", "vaa": "view_azimuth",
}
#: Quality layers this reader decodes, by lower-cased variable name.
QUALITY_NAMES = ("scl", "pixel_qa", "qa_pixel")
#: Scale of integer reflectance without a ``scale_factor`` attribute.
DEFAULT_SCALE = 1e-4
#: Target size of one dask chunk of one variable, bytes.
CHUNK_BYTES = 32 * 2**20
_SUFFIXES = (".nc", ".nc4", ".zarr")
_S2_BAND_RE = re.compile(r"^(?:B)?0*(\d{1,2})(A?)$", re.I)
_LANDSAT_BAND_RE = re.compile(r"^(?:SR_|ST_)?B0*(\d{1,2})$", re.I)


def is_timeseries(path: str | Path) -> bool:
    """True for a ``.nc`` / ``.nc4`` file or a ``.zarr`` store (looks at the name only)."""
    p = Path(path)
    return p.suffix.lower() in _SUFFIXES and (p.is_file() or p.is_dir())


# --------------------------------------------------------------------------------------
# opening


#: First bytes of NetCDF files: NetCDF-4 is HDF5; NetCDF-3 classic, 64-bit offset, 64-bit data.
NETCDF_MAGIC = {b"\x89HDF\r\n\x1a\n": "NetCDF-4 (HDF5)", b"CDF\x01": "NetCDF-3 classic",
                b"CDF\x02": "NetCDF-3 64-bit offset", b"CDF\x05": "NetCDF-3 64-bit data"}


def _netcdf_kind(path: Path) -> str:
    """Which NetCDF flavour a file is, from its first bytes; a clear error when it is none."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise CorruptProductError(path, f"cannot read the file: {exc}") from exc
    for magic, kind in NETCDF_MAGIC.items():
        if head.startswith(magic):
            return kind
    if not head:
        raise CorruptProductError(path, "the file is empty (0 bytes): expected a NetCDF file")
    shown = head.decode("ascii", "replace") if head.isascii() else head.hex(" ")
    raise CorruptProductError(path, f"not a NetCDF file: it starts with {shown!r} where NetCDF-4 "
                                    "starts with \\x89HDF and NetCDF-3 with CDF (a partial "
                                    "download, or an error page saved under a .nc name?)")


def _open(path: Path) -> xr.Dataset:
    is_zarr = path.suffix.lower() == ".zarr"
    kw = dict(mask_and_scale=False, decode_times=True, decode_coords=False, cache=False)
    if is_zarr:
        kind, flavour = "Zarr store", ""
        consolidated = (path / ".zmetadata").exists() or (
            (path / "zarr.json").exists() and '"consolidated_metadata"' in
            (path / "zarr.json").read_text(errors="replace"))
        kw.update(engine="zarr", consolidated=consolidated)
    else:
        kind = "NetCDF file"
        flavour = f" ({_netcdf_kind(path)}, {path.stat().st_size:,} bytes)"
        kw.update(engine="netcdf4")
    try:
        return xr.open_dataset(path, **kw)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__
        raise CorruptProductError(path, f"cannot open as a {kind}{flavour}: truncated or corrupt "
                                        f"({cause}); expected a complete "
                                        f"{'store' if is_zarr else 'file'}: copy or download it "
                                        "again") from exc


def _time_dim(ds: xr.Dataset, path: Path) -> str:
    for name in TIME_DIMS:
        if name in ds.dims:
            return name
    dims = ", ".join(map(str, ds.dims)) or "none"
    raise InputProductError(path, f"no time dimension: expected one of {', '.join(TIME_DIMS)} "
                                  f"(the file has dimensions {dims})")


def _crs(ds: xr.Dataset, path: Path) -> CRS:
    names = [v.attrs.get("grid_mapping") for v in ds.data_vars.values()]
    names = [n for n in names if isinstance(n, str) and n in ds.variables]
    names += [n for n in CRS_VARS if n in ds.variables]
    for name in names:
        a = ds[name].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if isinstance(a.get(key), str) and a[key].strip():
                return _parse_crs(a[key], path, f"{name}:{key}")
        for key in ("epsg_code", "epsg"):
            if a.get(key) not in (None, ""):
                return _parse_crs(f"EPSG:{str(a[key]).upper().replace('EPSG:', '')}", path,
                                  f"{name}:{key}")
    for key in ("crs_wkt", "epsg", "epsg_code"):
        val = ds.attrs.get(key)
        if val not in (None, ""):
            text = val if key == "crs_wkt" else f"EPSG:{str(val).upper().replace('EPSG:', '')}"
            return _parse_crs(text, path, f"global attribute {key}")
    raise InputProductError(path, "no CRS: expected a CRS variable (spatial_ref or crs, or the "
                                  "one named by the bands' grid_mapping attribute) with a crs_wkt, "
                                  "spatial_ref or epsg attribute")


def _parse_crs(text: str, path: Path, where: str) -> CRS:
    try:
        return CRS(text)
    except Exception as exc:  # pyproj raises its own CRSError
        raise InputProductError(path, f"{where} is not a CRS: {exc}") from exc


def _axis(ds: xr.Dataset, name: str, path: Path) -> np.ndarray:
    if name not in ds.dims:
        dims = ", ".join(map(str, ds.dims))
        raise InputProductError(path, f"no {name!r} dimension: expected projected x/y "
                                      f"coordinates (dimensions are {dims})")
    if name not in ds.coords and name not in ds.variables:
        raise InputProductError(path, f"no {name!r} coordinate values")
    vals = np.asarray(ds[name].values, dtype=np.float64)
    if not np.isfinite(vals).all():
        raise InputProductError(path, f"the {name!r} coordinate has missing values")
    return vals


def _step(vals: np.ndarray, name: str, path: Path, default: float | None) -> float:
    if vals.size < 2:
        if default is None:
            raise InputProductError(path, f"one {name} value and no 'resolution' attribute: "
                                          "cannot tell the pixel size")
        return default
    d = np.diff(vals)
    step = float(d[0])
    if step == 0 or not np.allclose(d, step, rtol=1e-6, atol=1e-6 * abs(step)):
        raise InputProductError(path, f"the {name} coordinate is not regularly spaced")
    return step


def _geobox(ds: xr.Dataset, crs: CRS, path: Path) -> tuple[GeoBox, bool]:
    """The file's GeoBox and whether y must be flipped to be north up."""
    xs, ys = _axis(ds, "x", path), _axis(ds, "y", path)
    res_attr = ds.attrs.get("resolution")
    try:
        res_attr = float(res_attr) if res_attr is not None else None
    except (TypeError, ValueError):
        res_attr = None
    rx = _step(xs, "x", path, res_attr)
    ry = _step(ys, "y", path, -res_attr if res_attr else None)
    if rx < 0:
        raise InputProductError(path, "x decreases: expected x increasing to the east")
    flip = ry > 0
    top = float(ys.max()) + abs(ry) / 2
    left = float(xs[0]) - rx / 2
    aff = Affine(rx, 0.0, left, 0.0, -abs(ry), top)
    return GeoBox((ys.size, xs.size), aff, crs), flip


# --------------------------------------------------------------------------------------
# variables


def _fill_value(var: xr.DataArray):
    for key in ("_FillValue", "missing_value", "nodata", "NoData"):
        if key in var.attrs and var.attrs[key] is not None:
            v = np.asarray(var.attrs[key]).ravel()
            return v[0] if v.size else None
    return var.encoding.get("_FillValue")


def _decode_band(var: xr.DataArray, *, default_scale: float | None) -> da.Array:
    """DN -> float32 physical value, NaN where no data."""
    data = var.data if isinstance(var.data, da.Array) else da.asarray(var.data)
    fill = _fill_value(var)
    integer = np.dtype(var.dtype).kind in "iu"
    if fill is None and integer:
        fill = 0
    scale = var.attrs.get("scale_factor")
    offset = var.attrs.get("add_offset", 0.0)
    if scale is None:
        scale = default_scale if integer and default_scale is not None else 1.0
    out = data.astype(np.float32) * np.float32(scale) + np.float32(offset)
    if fill is not None:
        if isinstance(fill, float) and math.isnan(fill):
            invalid = da.isnan(data)
        else:
            invalid = data == np.asarray(fill).astype(var.dtype)
        out = da.where(invalid, np.float32(np.nan), out)
    if np.dtype(var.dtype).kind == "f":
        out = da.where(da.isfinite(out), out, np.float32(np.nan))
    return out.astype(np.float32)


def _raw_int(var: xr.DataArray, dtype) -> tuple[da.Array, da.Array | None]:
    """Integer quality layer and where it is the fill value (or None)."""
    data = var.data if isinstance(var.data, da.Array) else da.asarray(var.data)
    fill = _fill_value(var)
    if np.dtype(var.dtype).kind == "f":
        bad = ~da.isfinite(data)
        data = da.where(bad, 0, data)
        isfill = bad if fill is None else bad | (data == fill)
    else:
        isfill = None if fill is None else data == np.asarray(fill).astype(var.dtype)
    return data.astype(dtype), isfill


def _band_name(name: str, landsat: bool) -> str | None:
    if landsat:
        m = _LANDSAT_BAND_RE.match(name)
        return f"B{int(m.group(1))}" if m else None
    m = _S2_BAND_RE.match(name)
    if not m or not name.upper().startswith("B"):
        return None
    num, a = int(m.group(1)), m.group(2).upper()
    return f"B{num}A" if a else f"B{num:02d}"


# --------------------------------------------------------------------------------------
# sensor, producer, tile


def _sensor(ds: xr.Dataset, path: Path, tdim: str, sensor: str | None,
            names: list[str]) -> tuple[list[str], bool]:
    """(sensor per date, assumed?)."""
    nt = ds.sizes[tdim]
    if sensor is not None:
        try:
            s = sensor_name(sensor)
        except ConfigurationError as exc:
            raise ConfigurationError(f"sensor {sensor!r}: {exc}") from None
        return [s] * nt, False
    for key in ("platform", "sensor", "spacecraft", "spacecraft_id", "mission"):
        if key in ds.variables and ds[key].dims == (tdim,):
            try:
                return [sensor_name(str(v)) for v in ds[key].values], False
            except ConfigurationError:
                pass
        val = ds.attrs.get(key)
        if isinstance(val, str):
            try:
                return [sensor_name(val)] * nt, False
            except ConfigurationError:
                pass
    stem = path.stem.upper()
    m = re.match(r"^(S2[ABC]|L[89]|LC0[89]|LANDSAT[-_]?[89]|SENTINEL[-_]?2[ABC])(?=[_\W]|$)", stem)
    if m:
        return [sensor_name(m.group(1))] * nt, False
    lower = {n.lower() for n in names}
    if re.match(r"^(S2|SENTINEL[-_]?2)(?=[_\W]|$)", stem) or "scl" in lower or "b8a" in lower:
        return ["S2A"] * nt, True
    if "pixel_qa" in lower or "qa_pixel" in lower:
        return ["L8"] * nt, True
    raise InputProductError(path, "cannot tell the sensor from the file (no platform attribute, "
                                  "no S2A_/L8_ name prefix): pass sensor='S2A' (or S2B, S2C, "
                                  "L8, L9)")


def _tile(ds: xr.Dataset, gb: GeoBox) -> str:
    val = ds.attrs.get("tile")
    if isinstance(val, str) and val.strip():
        try:
            return parse_tile(val).name
        except ConfigurationError:
            pass
    return tile_of_grid(gb)


def tile_of_grid(gb: GeoBox) -> str:
    """The Sentinel-2 tile a grid belongs to, or ``""``.

    Candidates are the tiles (``core.grid.tiles_for_geometry``) that contain the grid
    and whose pixel lattice it lies on. Overlapping tiles of one UTM zone usually share
    the lattice (their corners are on the 60 m lattice), so several may fit: then the
    one where the grid lies farthest from the tile's border wins (for the WorldCereal
    patch 00002806639B424A: T31UDS, 7.8 km inside, rather than T31UES, 1.4 km inside,
    which is the tile the file's own ``tile`` attribute names).
    """
    res = abs(gb.resolution.x)
    if res not in (10, 20, 60) or abs(gb.resolution.y) != res:
        return ""
    found: list[tuple[float, str]] = []
    for t in tiles_for_geometry(gb.extent):
        tb = tile_geobox(t, int(res))
        if tb.crs != gb.crs:
            continue
        col = (gb.affine.c - tb.affine.c) / res
        row = (tb.affine.f - gb.affine.f) / res
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            continue
        if tb.extent.contains(gb.extent):
            l, b, r, t_ = gb.extent.boundingbox
            tl, tb_, tr, tt = tb.extent.boundingbox
            found.append((min(l - tl, tr - r, b - tb_, tt - t_), t.name))
    if not found:
        return ""
    found.sort(reverse=True)
    if len(found) > 1 and found[0][0] == found[1][0]:
        return ""
    return found[0][1]


# --------------------------------------------------------------------------------------
# entry point


def _chunks(nt: int, ny: int, nx: int, chunks: Mapping[str, int] | None) -> dict[str, int]:
    cy, cx = min(ny, 2048), min(nx, 2048)
    ct = max(1, min(nt, CHUNK_BYTES // max(1, cy * cx * 4)))
    out = {"time": ct, "y": cy, "x": cx}
    if chunks:
        out.update({k: int(v) for k, v in chunks.items() if k in out})
    return out


def read_timeseries(path: str | Path, *, allow_missing_bands: bool = False,
                    stack_bands: Sequence[str] | None = None, sensor: str | None = None,
                    chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Read a time-series NetCDF file or Zarr store as the agriseries Dataset (lazy).

    Parameters
    ----------
    path
        A ``.nc`` / ``.nc4`` file or a ``.zarr`` store.
    allow_missing_bands
        Part of every reader's signature (:mod:`agriseries.io.detect`); a series holds
        the band variables it holds, none is expected, so nothing is left out.
    stack_bands
        Part of every reader's signature; a series names its band variables, so giving
        it is a :class:`ConfigurationError`.
    sensor
        ``S2A``, ``S2B``, ``S2C``, ``L8`` or ``L9`` for every date; default: from the
        file (see the module docstring).
    chunks
        Dask chunk sizes by dimension (``time``, ``y``, ``x``); default about 32 MiB per
        chunk and variable.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``, float32 bands, uint8 ``mask``, angles, coordinates
        ``sensor``, ``source_id``, ``level``, ``producer``, ``tile``; ``ds.odc.geobox``.

    Raises
    ------
    UnknownProductError
        Not a ``.nc`` / ``.nc4`` / ``.zarr`` path, or no such path.
    CorruptProductError
        The file cannot be opened: empty, not NetCDF / Zarr (the message says what its
        first bytes are), truncated or corrupt.
    InputProductError
        No time dimension, no CRS, no x/y grid, no band, or the sensor cannot be told.
    """
    del allow_missing_bands  # nothing is expected of a series, so nothing can be missing
    if stack_bands is not None:
        raise ConfigurationError(f"{path}: stack_bands names the bands of a multi-band stack; a "
                                 "time-series file names its band variables")
    p = Path(path)
    if not p.exists():
        raise UnknownProductError(p, "no such file or store")
    if p.suffix.lower() not in _SUFFIXES:
        raise UnknownProductError(p, "expected a .nc / .nc4 NetCDF file or a .zarr store")
    raw = _open(p)
    try:
        return _to_agriseries(raw, p, sensor, chunks)
    except BaseException:
        raw.close()
        raise


def _to_agriseries(raw: xr.Dataset, p: Path, sensor: str | None,
                   chunks: Mapping[str, int] | None) -> xr.Dataset:
    tdim = _time_dim(raw, p)
    times = raw[tdim].values
    if not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        raise InputProductError(p, f"the {tdim!r} coordinate is not a date-time (expected CF "
                                   "'units = seconds/days since ...' or datetime values)")
    crs = _crs(raw, p)
    gb, flip = _geobox(raw, crs, p)
    nt, (ny, nx) = raw.sizes[tdim], gb.shape
    ch = _chunks(nt, ny, nx, chunks)
    ds = raw.rename({tdim: "time"}) if tdim != "time" else raw
    if flip:
        ds = ds.isel(y=slice(None, None, -1))

    grid_vars = {n: v for n, v in ds.data_vars.items()
                 if set(v.dims) == {"time", "y", "x"}}
    sensors, assumed = _sensor(ds, p, "time", sensor, list(grid_vars))
    landsat = not is_sentinel2(sensors[0])
    if len({is_sentinel2(s) for s in sensors}) > 1:
        raise InputProductError(p, "the file mixes Sentinel-2 and Landsat dates: expected one "
                                   "sensor family per file")
    catalogue = bands_of(sensors[0])

    def chunked(var: xr.DataArray) -> xr.DataArray:
        return var.transpose("time", "y", "x").chunk(
            {"time": ch["time"], "y": ch["y"], "x": ch["x"]})

    out: dict[str, xr.DataArray] = {}
    quality: dict[str, xr.DataArray] = {}
    renamed: dict[str, str] = {}
    for name, var in grid_vars.items():
        low = name.lower()
        if low in QUALITY_NAMES:
            quality[low] = chunked(var)
            continue
        if low in ANGLE_NAMES:
            continue
        band = _band_name(name, landsat)
        if band is None or band not in catalogue:
            continue
        info = catalogue[band]
        var = chunked(var)
        thermal = not info.is_reflective
        arr = _decode_band(var, default_scale=None if thermal else DEFAULT_SCALE)
        attrs = ({"units": "K", "long_name": f"brightness temperature {band}"} if thermal else
                 {"units": "1", "long_name": f"reflectance {band}"})
        attrs["source_variable"] = name
        out[band] = xr.DataArray(arr, dims=("time", "y", "x"), attrs=attrs)
        renamed[name] = band
    if not out:
        raise InputProductError(p, f"no band variable over (time, y, x): expected names like "
                                   f"{'B2, B02 or SR_B2' if landsat else 'B02 or B8A'} "
                                   f"(variables: {', '.join(map(str, ds.data_vars))})")
    order = [b for b in catalogue if b in out]
    out = {b: out[b] for b in order}

    mask = None
    if "scl" in quality:
        scl, _ = _raw_int(quality["scl"], np.uint8)
        mask = from_scl(scl)
    elif "pixel_qa" in quality:
        qa, isfill = _raw_int(quality["pixel_qa"], np.uint16)
        mask = from_pixel_qa_c1(qa)
        if isfill is not None:
            mask = mask | (isfill.astype(np.uint8) * np.uint8(MaskBit.NODATA))
    elif "qa_pixel" in quality:
        qa, isfill = _raw_int(quality["qa_pixel"], np.uint16)
        mask = from_qa_pixel(qa)
        if isfill is not None:
            mask = mask | (isfill.astype(np.uint8) * np.uint8(MaskBit.NODATA))
    reflective = [b for b in order if catalogue[b].is_reflective]
    if mask is not None:
        if reflective:
            first = out[reflective[0]].data
            mask = mask | (da.isnan(first).astype(np.uint8) * np.uint8(MaskBit.NODATA))
        out["mask"] = xr.DataArray(mask.astype(np.uint8), dims=("time", "y", "x"),
                                   attrs=dict(CF_ATTRS))

    for name, var in ds.data_vars.items():
        target = ANGLE_NAMES.get(name.lower())
        if target is None or target in out:
            continue
        if set(var.dims) == {"time", "y", "x"}:
            arr = _decode_band(chunked(var), default_scale=None)
        elif var.dims == ("time",):
            one = _decode_band(var.chunk({"time": ch["time"]}), default_scale=None)
            arr = da.broadcast_to(one[:, None, None], (nt, ny, nx),
                                  chunks=(one.chunks[0], (ch["y"],) * (ny // ch["y"]) +
                                          ((ny % ch["y"],) if ny % ch["y"] else ()),
                                          (ch["x"],) * (nx // ch["x"]) +
                                          ((nx % ch["x"],) if nx % ch["x"] else ())))
        else:
            continue
        out[target] = xr.DataArray(arr.astype(np.float32), dims=("time", "y", "x"),
                                   attrs={"units": "degree", "source_variable": name,
                                          "long_name": target.replace("_", " ") + " angle"})

    tvals = np.asarray(ds["time"].values).astype("datetime64[ns]")
    stem = p.stem
    stamps = [_dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="s")))
              .strftime("%Y%m%dT%H%M%S") for t in tvals]
    level = str(ds.attrs.get("processing_level") or ds.attrs.get("level") or "L2A").upper()
    producer = ds.attrs.get("producer") or ds.attrs.get("processor")
    if not isinstance(producer, str) or not producer.strip():
        producer = "LASRC" if landsat else "SEN2COR"
    tile = _tile(ds, gb)
    coords = xr_coords(gb)
    result = xr.Dataset(
        out,
        coords={
            **coords,
            "time": ("time", tvals),
            "sensor": ("time", sensors),
            "source_id": ("time", [f"{stem}_{s}" for s in stamps]),
            "level": ("time", [level] * nt),
            "producer": ("time", [producer.strip().upper()] * nt),
            "tile": ("time", [tile] * nt),
        },
        attrs={"source_path": str(p), "sensor_assumed": bool(assumed),
               "band_variables": ", ".join(f"{k}->{v}" for k, v in renamed.items())},
    )
    return result
