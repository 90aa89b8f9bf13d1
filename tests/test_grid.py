"""Sentinel-2 tile grids against the geopositions of real MTD_TL.xml files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agriseries.core.errors import ConfigurationError
from agriseries.core.grid import (
    parse_tile,
    snap_to_tile,
    tile_footprint,
    tile_geobox,
    tile_of_point,
    tiles_for_geometry,
    bbox_polygon,
)

# (tile, ULX, ULY, EPSG) read from the <Geoposition> of real MTD_TL.xml / metadata.xml files
# (stactools-packages/sentinel2 test data, the T29UNU L2A SAFE, the eodag T31TDH L1C). They
# cover zones 1-60, both hemispheres and the three MGRS column sets. The stactools fixture
# named T34LBQ is left out: it is a renamed copy of T34LBP (same geoposition), not a real tile.
REAL_GEOPOSITIONS = [
    ("T01CCV", 300000, 2000020, 32701), ("T01KAB", 99960, 8200000, 32701),
    ("T01LAC", 99960, 8300020, 32701), ("T01VCG", 300000, 6700020, 32601),
    ("T01WCP", 300000, 7400040, 32601), ("T01WCS", 300000, 7700040, 32601),
    ("T07HFE", 600000, 6500020, 32707), ("T10SDG", 399960, 4200000, 32610),
    ("T11SLT", 300000, 3800040, 32611), ("T22HBD", 199980, 5900020, 32722),
    ("T29UNU", 499980, 5900040, 32629), ("T31TDH", 399960, 4800000, 32631),
    ("T33XWJ", 499980, 8900040, 32633), ("T34LBP", 199980, 8900020, 32734),
    ("T34VEL", 499980, 6600000, 32634), ("T46RER", 499980, 3100020, 32646),
    ("T60CWS", 499980, 1200040, 32760),
]


@pytest.mark.parametrize("tile,ulx,uly,epsg", REAL_GEOPOSITIONS)
def test_tile_geobox_matches_real_metadata(tile, ulx, uly, epsg):
    for res, n in ((10, 10980), (20, 5490), (60, 1830)):
        gb = tile_geobox(tile, res)
        assert gb.crs.epsg == epsg
        assert gb.shape == (n, n)
        assert (gb.affine.c, gb.affine.f) == (ulx, uly)
        assert gb.resolution.x == res and gb.resolution.y == -res


@pytest.mark.parametrize("tile,ulx,uly,epsg", REAL_GEOPOSITIONS)
def test_tile_centre_maps_back_to_its_square(tile, ulx, uly, epsg):
    gb = tile_geobox(tile, 60)
    # The centre of the MGRS 100 km square (50 km from the tile's upper-left corner).
    centre = gb.extent.centroid
    x, y = ulx + 50_000, uly - 50_000 - 60
    from odc.geo.geom import point

    lon, lat = point(x, y, gb.crs).to_crs("EPSG:4326").coords[0]
    assert tile_of_point(lon, lat, zone=parse_tile(tile).zone).name == tile
    assert centre is not None


def test_parse_tile_errors():
    assert parse_tile("31tdh").name == "T31TDH"
    for bad in ("T61TDH", "TXXX", "T31TIH", "T31TDW", ""):
        with pytest.raises(ConfigurationError, match="tile"):
            parse_tile(bad)
    with pytest.raises(ConfigurationError, match="column letter"):
        parse_tile("T31TJH")  # J is a column letter of zones 2, 5, ... not 31
    with pytest.raises(ConfigurationError, match="resolution"):
        tile_geobox("T31TDH", 7)


def test_tiles_for_geometry_finds_overlapping_tiles():
    # A 20 km box in the middle of T29UNU's square belongs to that tile only ...
    gb = tile_geobox("T29UNU", 60)
    x0, y0 = gb.affine.c + 40_000, gb.affine.f - 60_000
    small = bbox_polygon(x0, y0, x0 + 20_000, y0 + 20_000, gb.crs)
    assert [t.name for t in tiles_for_geometry(small)] == ["T29UNU"]
    # ... while one straddling the 9.8 km overlap on the east side is in two tiles.
    x1 = gb.affine.c + 105_000
    edge = bbox_polygon(x1, y0, x1 + 2_000, y0 + 2_000, gb.crs)
    names = [t.name for t in tiles_for_geometry(edge)]
    assert "T29UNU" in names and "T29UPU" in names


@settings(max_examples=60, deadline=None)
@given(st.floats(-179.9, 179.9), st.floats(-79.5, 83.5))
def test_point_lies_in_the_tile_of_its_square(lon, lat):
    t = tile_of_point(lon, lat)
    from odc.geo.geom import point

    p = point(lon, lat, "EPSG:4326").to_crs(t.crs)
    assert tile_footprint(t).contains(p)


def test_snap_to_tile_is_pixel_aligned_and_none_when_outside():
    gb = tile_geobox("T31TDH", 20)
    ax = gb.affine
    fp = bbox_polygon(ax.c + 1_005, ax.f - 3_017, ax.c + 2_003, ax.f - 1_011, gb.crs)
    sub = snap_to_tile(gb, fp)
    assert (sub.affine.c - ax.c) % 20 == 0 and (ax.f - sub.affine.f) % 20 == 0
    assert sub.extent.contains(fp)
    far = bbox_polygon(ax.c - 500_000, ax.f, ax.c - 400_000, ax.f + 100, gb.crs)
    assert snap_to_tile(gb, far) is None
