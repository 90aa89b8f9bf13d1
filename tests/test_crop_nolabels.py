"""Crop mask without in-situ data (agriseries.crop.nolabels; docs/crop.md, Matton et al. 2015).

Real data: the WorldCereal Flanders 2018 patch and its LPIS labels (tests/data/worldcereal).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

from agriseries.core.errors import ConfigurationError, InputProductError
from agriseries.crop.features import feature_map, season_dates
from agriseries.crop.nolabels import (
    KEYS,
    KeyDateFeatures,
    NoInsituParams,
    block_split,
    erode_reference,
    mahalanobis_trim,
    reference_on_grid,
)


@pytest.fixture(scope="module")
def patch(wc_patch):
    ds, lc, ct = wc_patch
    kd = KeyDateFeatures(season_dates("2018-03-01", "2018-10-31"))
    feats = feature_map(ds, kd).values
    return ds, lc, ct, kd, feats


def test_defaults_are_sen2agri():
    p = NoInsituParams()
    assert (p.erosion_radius, p.smoothing_lambda, p.alpha, p.samples) == (1, 2.0, 0.01, 40000)
    kd = KeyDateFeatures(season_dates("2018-03-01", "2018-10-31"))
    assert kd.params.smoothing_lambda == 2.0 and kd.params.step_days == 10
    assert len(kd.names) == len(KEYS) * 6 and kd.names[:3] == ["max_ndvi_slope_day",
                                                              "max_ndvi_slope_B03",
                                                              "max_ndvi_slope_B04"]
    with pytest.raises(ConfigurationError):
        NoInsituParams(alpha=1.5)


def test_key_dates_of_the_maize_fields(patch):
    _, _, ct, kd, feats = patch
    maize = ct == 1200
    day = {k: feats[kd.names.index(f"{k}_day")][maize] for k in KEYS}
    start = np.datetime64("2018-03-01")

    def month(d):
        return (start + d.astype("timedelta64[D]")).astype("datetime64[M]")

    # the green peak of maize is in July-August (80 % of the pixels) or, for the fields with a
    # dense winter cover before ploughing, in March-April; the steepest rise is the June
    # growth, the steepest fall the ploughing of the cover (May) or the harvest (September)
    peak = month(day["max_ndvi"])
    summer = (peak >= np.datetime64("2018-07")) & (peak <= np.datetime64("2018-08"))
    spring = peak <= np.datetime64("2018-04")
    assert summer.mean() > 0.75 and (summer | spring).mean() > 0.95
    assert (month(day["max_ndvi_slope"]) == np.datetime64("2018-06")).mean() > 0.75
    fall = month(day["min_ndvi_slope"])
    assert np.isin(fall, np.array(["2018-05", "2018-09"], "datetime64[M]")).mean() > 0.8
    ndvi_max = feats[kd.names.index("max_ndvi_NDVI")][maize]
    ndvi_min = feats[kd.names.index("min_ndvi_NDVI")][maize]
    assert np.median(ndvi_max) > 0.75 and np.median(ndvi_min) < 0.3
    assert (ndvi_max >= ndvi_min).all()


def test_trimming_removes_mislabelled_pixels(patch):
    """Real cropland pixels plus 15 % real non-cropland pixels mislabelled cropland (what a coarse
    reference does): the trimmed set is purer."""
    _, lc, _, _, feats = patch
    X = feats.reshape(feats.shape[0], -1).T
    crop = np.flatnonzero(lc.ravel() == 11)
    other = np.flatnonzero(lc.ravel() != 11)
    rng = np.random.default_rng(0)
    wrong = rng.choice(other, int(0.15 * crop.size), replace=False)
    members = np.concatenate([crop, wrong])
    keep, it = mahalanobis_trim(X[members], alpha=0.01)
    assert it >= 2  # iterated
    purity_before = crop.size / members.size
    purity_after = np.isin(members[keep], crop).mean()
    assert purity_before < 0.88 and purity_after > 0.97
    assert keep.sum() > 0.3 * crop.size
    # alpha = 0: no trimming; NaN rows always go
    X2 = X[members].copy()
    X2[0, 3] = np.nan
    k0, it0 = mahalanobis_trim(X2, alpha=0.0)
    assert it0 == 0 and not k0[0] and k0[1:].all()


def test_erosion_radius_one():
    ref = np.full((7, 8), 0, np.uint8)
    ref[1:6, 1:7] = 1
    ref[0, 7] = 255
    out = erode_reference(ref, 1)
    expect = np.full((7, 8), 255, np.uint8)
    expect[2:5, 2:6] = 1  # the 5 x 6 crop block loses its border ring
    np.testing.assert_array_equal(out, expect)  # non-crop: a 1-px frame, all border or edge
    assert (erode_reference(ref, 0) == ref).all()


def test_reference_on_grid_from_a_coarse_raster(patch, tmp_path):
    """A 40 m cropland map made from the LPIS labels, read back on the 10 m grid."""
    ds, lc, _, _, _ = patch
    gb = ds.odc.geobox
    coarse = (lc.reshape(16, 4, 16, 4) == 11).mean(axis=(1, 3)) >= 0.5
    codes = np.where(coarse, 11, 13).astype(np.uint8)
    codes[0, 0] = 0  # a no-data cell
    a = gb.affine
    path = tmp_path / "reference.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                       crs=gb.crs.to_wkt(), transform=Affine(40, 0, a.c, 0, -40, a.f),
                       nodata=0) as dst:
        dst.write(codes, 1)
    ref = reference_on_grid(path, gb, crop_values=(11,))
    expect = np.repeat(np.repeat(np.where(coarse, 1, 0), 4, 0), 4, 1).astype(np.uint8)
    expect[:4, :4] = 255
    np.testing.assert_array_equal(ref, expect)
    # a grid larger than the map: outside = no data
    big = GeoBox((80, 80), Affine(10, 0, a.c - 80, 0, -10, a.f + 80), gb.crs)
    ref_big = reference_on_grid(path, big, crop_values=(11,))
    assert (ref_big[:8] == 255).all() and (ref_big[8:72, 8:72] == expect).all()
    ref_ign = reference_on_grid(path, gb, crop_values=(11,), ignore_values=(13,))
    assert set(np.unique(ref_ign).tolist()) == {1, 255}
    with pytest.raises(InputProductError, match="no such"):
        reference_on_grid(tmp_path / "none.tif", gb)
    far = GeoBox((10, 10), Affine(10, 0, 0, 0, -10, 0), gb.crs)
    with pytest.raises(InputProductError, match="no valid pixel"):
        reference_on_grid(path, far)


def test_block_split():
    held = block_split((250, 300), 100, 0.25, seed=0)
    assert held.shape == (250, 300)
    # 3 x 3 blocks -> 2 held out (round(2.25)); each block is all in or all out
    blocks = held[::100, ::100]
    assert blocks.sum() == 2
    np.testing.assert_array_equal(held, np.repeat(np.repeat(blocks, 100, 0), 100, 1)[:250, :300])
