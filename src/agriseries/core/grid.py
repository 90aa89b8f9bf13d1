"""Sentinel-2 MGRS tile grids and reprojection onto them.

A Sentinel-2 tile (``T31TDH``) is a 109.8 km square in the UTM zone of its MGRS
id. Its upper-left corner is the north-west corner of the MGRS 100 km square,
moved onto the 60 m lattice of the zone (easting floored, northing -- counted from
the equator -- raised). This rule reproduces the ``ULX``/``ULY`` of every real
``MTD_TL.xml`` bundled in the tests, across zones 1-60, both hemispheres and all
three MGRS column sets.

:func:`tile_geobox` gives the odc-geo ``GeoBox`` of a tile at 10, 20 or 60 m;
:func:`tiles_for_geometry` finds the tiles that a footprint (a Landsat scene, a
site polygon) overlaps; :func:`reproject` puts a dataset onto a tile grid with
per-variable resampling (nearest for masks, bilinear for reflectance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon
from pyproj import Transformer

from .errors import ConfigurationError
from .tilenames import BANDS as _BANDS
from .tilenames import COLS as _COLS
from .tilenames import ROWS as _ROWS
from .tilenames import split_tile_id

TILE_SIZE_M = 109_800
RESOLUTIONS = (10, 20, 60)


@dataclass(frozen=True)
class Tile:
    """A Sentinel-2 MGRS tile.

    Attributes
    ----------
    zone
        UTM zone 1-60.
    band
        MGRS latitude band letter.
    square
        The two letters of the MGRS 100 km square.
    """

    zone: int
    band: str
    square: str

    @property
    def name(self) -> str:
        """The tile id as ESA writes it, ``T31TDH``."""
        return f"T{self.zone:02d}{self.band}{self.square}"

    @property
    def north(self) -> bool:
        """True for the northern hemisphere (bands N to X)."""
        return self.band >= "N"

    @property
    def crs(self) -> CRS:
        """The UTM CRS of the tile (EPSG 326zz north, 327zz south)."""
        return CRS(f"EPSG:{(32600 if self.north else 32700) + self.zone}")

    @property
    def upper_left(self) -> tuple[float, float]:
        """``(ULX, ULY)`` of the tile in its UTM CRS, metres."""
        return _upper_left(self.zone, self.band, self.square)

    def geobox(self, resolution: int = 10) -> GeoBox:
        """The tile grid at ``resolution`` metres (10, 20 or 60)."""
        return tile_geobox(self, resolution)

    def __str__(self) -> str:
        return self.name


def parse_tile(tile: str | Tile) -> Tile:
    """Parse ``T31TDH`` / ``31TDH`` into a :class:`Tile`.

    Raises
    ------
    ConfigurationError
        If the string is not an MGRS tile id.
    """
    if isinstance(tile, Tile):
        return tile
    return Tile(*split_tile_id(tile))


@lru_cache(maxsize=4096)
def _band_min_northing(zone: int, band: str) -> float:
    """Northing (false northing included) of the southern edge of a latitude band, at the central meridian."""
    lat = -80.0 + 8.0 * _BANDS.index(band)
    lon0 = -183.0 + 6.0 * zone
    north = band >= "N"
    tr = _transformer(zone, north)
    _, y = tr.transform(lon0, lat)
    return y


@lru_cache(maxsize=128)
def _transformer(zone: int, north: bool) -> Transformer:
    epsg = (32600 if north else 32700) + zone
    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def _upper_left(zone: int, band: str, square: str) -> tuple[float, float]:
    col, row = square
    easting = (_COLS[(zone - 1) % 3].index(col) + 1) * 100_000
    offset = 5 if zone % 2 == 0 else 0
    cycle = ((_ROWS.index(row) - offset) % 20) * 100_000
    north = band >= "N"
    false_northing = 0.0 if north else 10_000_000.0
    band_min = _band_min_northing(zone, band)
    # Smallest northing of this row letter whose 100 km square reaches into the band.
    k = math.floor((band_min - cycle - 100_000) / 2_000_000) + 1
    south_edge = cycle + 2_000_000 * k
    ulx = math.floor(easting / 60.0) * 60.0
    top = south_edge + 100_000 - false_northing
    uly = math.ceil(top / 60.0) * 60.0 + false_northing
    return ulx, uly


def tile_geobox(tile: str | Tile, resolution: int = 10) -> GeoBox:
    """The odc-geo ``GeoBox`` of a Sentinel-2 tile at 10, 20 or 60 m (10980, 5490, 1830 px)."""
    t = parse_tile(tile)
    if resolution <= 0 or TILE_SIZE_M % resolution:
        raise ConfigurationError(
            f"resolution {resolution!r} m does not divide the 109800 m tile: use 10, 20 or 60"
        )
    ulx, uly = t.upper_left
    n = TILE_SIZE_M // resolution
    return GeoBox((n, n), Affine(resolution, 0.0, ulx, 0.0, -resolution, uly), t.crs)


def tile_of_point(lon: float, lat: float, zone: int | None = None) -> Tile:
    """The MGRS 100 km square containing a point, as a :class:`Tile` (in ``zone`` if given)."""
    if not -80.0 <= lat < 84.0:
        raise ConfigurationError(f"latitude {lat} is outside the MGRS UTM area (-80 to 84)")
    if zone is None:
        zone = int((lon + 180.0) // 6.0) % 60 + 1
        if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
            zone = 32
        elif lat >= 72.0 and 0.0 <= lon < 42.0:
            zone = 31 if lon < 9 else 33 if lon < 21 else 35 if lon < 33 else 37
    band = _BANDS[min(int((lat + 80.0) // 8.0), len(_BANDS) - 1)]
    north = lat >= 0
    x, y = _transformer(zone, north).transform(lon, lat)
    col_i = int(x // 100_000) - 1
    cols = _COLS[(zone - 1) % 3]
    if not 0 <= col_i < len(cols):
        raise ConfigurationError(f"point ({lon}, {lat}) is outside UTM zone {zone}")
    offset = 5 if zone % 2 == 0 else 0
    row = _ROWS[(int(y // 100_000) + offset) % 20]
    return Tile(zone, band, cols[col_i] + row)


def tile_footprint(tile: str | Tile) -> Geometry:
    """The tile's square as an odc-geo ``Geometry`` in its UTM CRS."""
    return tile_geobox(tile, 60).extent


def _square_origin(t: Tile) -> tuple[float, float]:
    """South-west corner (easting, northing incl. false northing) of a tile's 100 km square."""
    ulx, uly = t.upper_left
    return math.ceil(ulx / 100_000) * 100_000, math.floor(uly / 100_000) * 100_000 - 100_000


def _neighbours(t: Tile) -> list[Tile]:
    """The tiles of the squares west, north and north-west of ``t`` (and ``t``): those whose
    9.8 km overlap can reach into ``t``'s square. Named from each square's centre."""
    e0, n0 = _square_origin(t)
    inv = _transformer(t.zone, t.north)
    out = [t]
    for de, dn in ((-100_000, 0), (0, 100_000), (-100_000, 100_000)):
        lon, lat = inv.transform(e0 + de + 50_000, n0 + dn + 50_000, direction="INVERSE")
        try:
            out.append(tile_of_point(lon, lat, zone=t.zone))
        except ConfigurationError:
            continue
    return out


def _in_zone(t: Tile) -> bool:
    """True if the tile's 100 km square overlaps its UTM zone's 6-degree strip (real S2 tiles do)."""
    from shapely.geometry import box

    e0, n0 = _square_origin(t)
    sq = bbox_polygon(e0, n0, e0 + 100_000, n0 + 100_000, t.crs).to_crs("EPSG:4326").geom
    lon0 = -183.0 + 6.0 * t.zone
    lo, hi = lon0 - 3.0, lon0 + 3.0
    if t.zone in (31, 32, 33, 35, 37) and t.band in "VX":  # Norway / Svalbard exceptions
        lo, hi = lo - 3.0, hi + 3.0
    return sq.intersects(box(lo, -80.0, hi, 84.0))


def tiles_for_geometry(geom: Geometry, step_m: float = 5_000.0) -> list[Tile]:
    """Every Sentinel-2 tile whose square overlaps a footprint.

    The footprint is sampled on a ``step_m`` lattice (and along its boundary); each
    sample's MGRS square, in its own and the neighbouring UTM zones, and the squares
    whose tiles overlap it give candidate tiles; candidates are kept if their 100 km
    square lies (partly) in their UTM zone, as real Sentinel-2 tiles do, and their
    tile really intersects the footprint.
    """
    g4326 = geom.to_crs("EPSG:4326")
    minx, miny, maxx, maxy = g4326.boundingbox
    dlat = step_m / 111_000.0
    dlon = step_m / (111_000.0 * max(math.cos(math.radians(max(abs(miny), abs(maxy)))), 0.05))
    lons = np.arange(minx, maxx + dlon, dlon)
    lats = np.arange(miny, maxy + dlat, dlat)
    pts = [(lo, la) for lo in lons for la in lats]
    if g4326.geom.geom_type == "Polygon":
        pts += list(g4326.geom.exterior.coords)
    candidates: set[Tile] = set()
    for lon, lat in pts:
        if not -80.0 <= lat < 84.0:
            continue
        base = tile_of_point(lon, lat)
        for z in (base.zone - 1, base.zone, base.zone + 1):
            z = (z - 1) % 60 + 1
            try:
                t = tile_of_point(lon, lat, zone=z)
            except ConfigurationError:
                continue
            candidates.update(_neighbours(t))
    found = []
    for t in candidates:
        if not _in_zone(t):
            continue
        fp = tile_footprint(t)
        g = geom.to_crs(fp.crs)
        if fp.intersects(g) and fp.intersection(g).area > 0:
            found.append(t)
    return sorted(found, key=lambda t: t.name)


def snap_to_tile(tile_box: GeoBox, footprint: Geometry) -> GeoBox | None:
    """The part of a tile grid covered by a footprint, aligned on the tile's pixels.

    Returns ``None`` when the footprint misses the tile.
    """
    fp = footprint.to_crs(tile_box.crs)
    inter = tile_box.extent.intersection(fp)
    if inter.is_empty or inter.area <= 0:
        return None
    minx, miny, maxx, maxy = inter.boundingbox
    a = tile_box.affine
    res = a.a
    c0 = max(int(math.floor((minx - a.c) / res + 1e-9)), 0)
    c1 = min(int(math.ceil((maxx - a.c) / res - 1e-9)), tile_box.shape.x)
    r0 = max(int(math.floor((a.f - maxy) / res + 1e-9)), 0)
    r1 = min(int(math.ceil((a.f - miny) / res - 1e-9)), tile_box.shape.y)
    if c1 <= c0 or r1 <= r0:
        return None
    return tile_box[r0:r1, c0:c1]


def bbox_polygon(left: float, bottom: float, right: float, top: float, crs) -> Geometry:
    """A rectangle as an odc-geo polygon."""
    return polygon([(left, bottom), (left, top), (right, top), (right, bottom), (left, bottom)], crs)
