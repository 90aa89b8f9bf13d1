"""The time series of one pixel, read from the store's COGs (what the portal's chart shows).

:func:`pixel_series` gives, for a point (longitude, latitude) and a level:

* ``L2A``: every acquisition whose footprint holds the point: the reflectance of the blue,
  green, red, near-infrared and short-wave infrared bands (by common name, so Sentinel-2
  and Landsat rows line up), the NDVI, the mask value, its bit names and ``cloudy`` (any of
  :data:`agriseries.core.masks.INVALID`);
* ``L3A``: every monthly synthesis: the same bands and NDVI, and the synthesis flag
  (``land``, ``cloud``, ``snow``, ``water``, ``no data``); ``cloudy`` when no clear date was found;
* ``L3B``: every single-date product: LAI, FAPAR, FCOVER (those present) and their flags;
  ``masked`` when the L2A mask hid the pixel; and the smoothed season profiles
  (``<var>_smoothed`` of the season products) as rows of kind ``smoothed``.

Values are physical (the COG's scale and offset applied), ``None`` where there is no data.
:func:`to_csv` writes the same rows as CSV. Reading is done with rasterio, one pixel per
file: the value returned is the stored value of the pixel holding the point.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pystac

from ..core.errors import ConfigurationError
from ..core.ids import Level, ProductId
from ..core.masks import INVALID, MaskBit
from .products import RAMPS, Product

__all__ = ["PixelSeries", "pixel_series", "to_csv", "REFLECTANCE"]

#: The reflectance columns, by common name (``nir`` is B08 on Sentinel-2, B5 on Landsat).
REFLECTANCE = ("blue", "green", "red", "nir", "swir16", "swir22")

_L3A_FLAGS = {0: "no data", 1: "cloud", 2: "snow", 3: "water", 4: "land"}
_L3B_MASKED = 32


@dataclass
class PixelSeries:
    """The series of one pixel (see the module docstring)."""

    level: str
    lon: float
    lat: float
    columns: list[str]
    rows: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"level": self.level, "lon": self.lon, "lat": self.lat, "columns": self.columns,
                "rows": self.rows}


def _check_point(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180
            and -90 <= lat <= 90):
        raise ConfigurationError(f"point ({lon}, {lat}): expected a longitude in [-180, 180] "
                                 "and a latitude in [-90, 90] (degrees, WGS 84)")


def _holds(item: pystac.Item, lon: float, lat: float) -> bool:
    b = item.bbox
    if b and not (b[0] <= lon <= b[2] and b[1] <= lat <= b[3]):
        return False
    if not item.geometry:
        return bool(b)
    from shapely.geometry import Point, shape

    return shape(item.geometry).covers(Point(lon, lat))


def read_pixel(path: str, lon: float, lat: float) -> list[float | None] | None:
    """The values (every band, scale and offset applied; ``None`` for no data) of the pixel
    of a raster that holds a point, or ``None`` when the point is outside the raster."""
    import rasterio
    from rasterio.warp import transform
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        xs, ys = transform("EPSG:4326", src.crs, [lon], [lat])
        row, col = src.index(xs[0], ys[0])
        if not (0 <= row < src.height and 0 <= col < src.width):
            return None
        arr = src.read(window=Window(col, row, 1, 1), masked=True)
        out: list[float | None] = []
        for b in range(src.count):
            v = arr[b, 0, 0]
            if v is np.ma.masked or (np.issubdtype(arr.dtype, np.floating) and not np.isfinite(v)):
                out.append(None)
                continue
            scale = src.scales[b] if src.scales else 1.0
            offset = src.offsets[b] if src.offsets else 0.0
            val = float(v) * scale + offset
            out.append(round(val, 6) if isinstance(val, float) else val)
        return out


def _first(path: str, lon: float, lat: float):
    vals = read_pixel(path, lon, lat)
    return None if not vals else vals[0]


def _common_names(item: pystac.Item) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, a in item.assets.items():
        for b in a.extra_fields.get("eo:bands") or []:
            cn = b.get("common_name")
            if cn and cn not in out:
                out[cn] = key
    if "nir" not in out and "nir08" in out:  # Landsat: B5 is the near infrared
        out["nir"] = out["nir08"]
    return out


def _ndvi(red, nir):
    if red is None or nir is None or (red + nir) == 0:
        return None
    return round((nir - red) / (nir + red), 6)


def _iso(d: dt.datetime | None) -> str | None:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else None


def _reflectance_row(item: pystac.Item, lon: float, lat: float, href) -> dict:
    names = _common_names(item)
    row: dict = {}
    for cn in REFLECTANCE:
        row[cn] = _first(href(names[cn]), lon, lat) if cn in names else None
    row["ndvi"] = _ndvi(row["red"], row["nir"])
    return row


def _l2a_row(item: pystac.Item, lon: float, lat: float, href) -> dict:
    row = _reflectance_row(item, lon, lat, href)
    mask = _first(href("mask"), lon, lat) if "mask" in item.assets else None
    m = int(mask) if mask is not None else None
    row["mask"] = m
    row["mask_bits"] = " ".join(b.name.lower() for b in MaskBit if m and m & b) if m else ""
    row["cloudy"] = bool(m & INVALID) if m is not None else None
    return row


def _l3a_row(item: pystac.Item, lon: float, lat: float, href) -> dict:
    row = _reflectance_row(item, lon, lat, href)
    key = next((k for k in ("flag_10m", "flag_20m", "flag") if k in item.assets), None)
    flag = _first(href(key), lon, lat) if key else None
    row["flag"] = _L3A_FLAGS.get(int(flag), str(int(flag))) if flag is not None else None
    row["cloudy"] = row["flag"] in ("cloud", "no data") if flag is not None else None
    return row


def _l3b_row(item: pystac.Item, lon: float, lat: float, variables: list[str], href) -> dict:
    row: dict = {}
    masked = False
    for var in variables:
        row[var] = _first(href(var), lon, lat) if var in item.assets else None
        fl = f"{var}_flags"
        f = _first(href(fl), lon, lat) if fl in item.assets else None
        row[f"{var}_flags"] = int(f) if f is not None else None
        masked = masked or bool(f is not None and int(f) & _L3B_MASKED)
    row["masked"] = masked
    return row


def _smoothed_rows(item: pystac.Item, lon: float, lat: float, variables: list[str],
                   href) -> list[dict]:
    dates = item.properties.get("agriseries:dates") or []
    per_var: dict[str, list] = {}
    for var in variables:
        if f"{var}_smoothed" not in item.assets:
            continue
        vals = read_pixel(href(f"{var}_smoothed"), lon, lat)
        if vals is not None:
            per_var[var] = vals
    rows = []
    for i, d in enumerate(dates):
        row = {"date": f"{d}T00:00:00Z", "item": item.id, "kind": "smoothed"}
        for var in variables:
            vals = per_var.get(var)
            row[var] = vals[i] if vals is not None and i < len(vals) else None
        rows.append(row)
    return rows


def check_request(level: str, lon: float, lat: float) -> Level:
    """The level of a pixel series request, checked with its point.

    Raises
    ------
    ConfigurationError
        A point outside [-180, 180] x [-90, 90], or a level without a pixel series.
    """
    _check_point(lon, lat)
    try:
        lv = Level(level)
    except ValueError:
        raise ConfigurationError(f"level {level!r}: a pixel series is made for L2A, L3A or "
                                 "L3B") from None
    if lv not in (Level.L2A, Level.L3A, Level.L3B):
        raise ConfigurationError(f"level {level!r}: a pixel series is made for L2A, L3A or L3B")
    return lv


def search_body(level: Level, lon: float, lat: float, *, tile: str | None = None,
                start: dt.datetime | None = None, end: dt.datetime | None = None) -> dict:
    """The STAC search of the products of a level that hold a point (tile, dates)."""
    body: dict = {"collections": [f"agriseries-{level.value.lower()}"],
                  "intersects": {"type": "Point", "coordinates": [lon, lat]}}
    if start or end:
        body["datetime"] = f"{_iso(start) or '..'}/{_iso(end) or '..'}"
    if tile:
        body["filter"] = {"op": "=", "args": [{"property": "agriseries:tile"}, tile]}
        body["filter-lang"] = "cql2-json"
    return body


def pixel_series(products: list[Product], level: str, lon: float, lat: float,
                 path_of) -> PixelSeries:
    """The time series of the pixel holding ``(lon, lat)`` in ``products`` (the published
    products of the level: :func:`search_body`; see the module docstring).
    ``path_of(product, key)`` gives the checked file of an asset.

    Raises
    ------
    ConfigurationError
        A point outside [-180, 180] x [-90, 90], or a level without a pixel series.
    """
    lv = check_request(level, lon, lat)
    chosen = [p for p in products if _holds(p.item, lon, lat)
              and (p.item.properties.get("agriseries:level") or p.id[:3]) == lv.value]
    chosen.sort(key=lambda p: (p.item.datetime or p.item.common_metadata.start_datetime, p.id))
    items = [p.item for p in chosen]
    base = ["date", "item", "kind", "sensor"]
    if lv == Level.L3B:
        variables = [v for v in RAMPS if any(v in it.assets or f"{v}_smoothed" in it.assets
                                             for it in items)]
        columns = base + [c for v in variables for c in (v, f"{v}_flags")] + ["masked"]
    elif lv == Level.L3A:
        columns = base + ["start", "end", *REFLECTANCE, "ndvi", "flag", "cloudy"]
    else:
        columns = base + [*REFLECTANCE, "ndvi", "mask", "mask_bits", "cloudy"]
    out = PixelSeries(lv.value, lon, lat, columns)
    for p in chosen:
        it = p.item

        def href(key: str, p=p) -> str:
            return str(path_of(p, key))

        pid = ProductId.parse(it.id)
        head = {"item": it.id, "kind": "observation",
                "sensor": "+".join(it.properties.get("agriseries:sensors") or [pid.sensor])}
        if lv == Level.L2A:
            row = {"date": _iso(it.datetime), **head, **_l2a_row(it, lon, lat, href)}
        elif lv == Level.L3A:
            s, e = it.common_metadata.start_datetime, it.common_metadata.end_datetime
            mid = s + (e - s) / 2 if s and e else it.datetime
            row = {"date": _iso(mid), **head, "start": _iso(s), "end": _iso(e),
                   **_l3a_row(it, lon, lat, href)}
        elif pid.end is None:
            row = {"date": _iso(it.datetime), **head, **_l3b_row(it, lon, lat, variables, href)}
        else:
            out.rows.extend({**r, "sensor": head["sensor"]}
                            for r in _smoothed_rows(it, lon, lat, variables, href))
            continue
        out.rows.append(row)
    out.rows.sort(key=lambda r: (r["kind"] != "observation", r["date"] or ""))
    return out


def to_csv(series: PixelSeries) -> str:
    """The rows as CSV (one header line naming the columns; empty cells for no data)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=series.columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in series.rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()
