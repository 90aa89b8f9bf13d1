"""Time-series preparation of the crop products (agriseries.crop.features, docs/crop.md "Features").

Real data: the WorldCereal Flanders 2018 patch (tests/data/worldcereal, 71 Sentinel-2 L2A
dates with the Sen2Cor SCL mask).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from agriseries.core.errors import ConfigurationError, MissingBandError
from agriseries.core.masks import MaskBit
from agriseries.crop.features import (
    BANDS,
    EXCLUDED_BITS,
    RED_EDGE_BANDS,
    SeriesFeatures,
    SeriesParams,
    day_numbers,
    feature_map,
    gapfill_linear,
    index_features,
    merge_resolutions,
    season_dates,
    smooth_series,
)
from agriseries.io.timeseries import read_timeseries

WC = Path(__file__).parent / "data" / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"


@pytest.fixture(scope="module")
def series() -> xr.Dataset:
    s10 = read_timeseries(WC / f"S2_L2A_10m_{TAIL}")
    s20 = read_timeseries(WC / f"S2_L2A_20m_{TAIL}")
    return merge_resolutions(s10, s20).compute()


def test_defaults_are_sen2agri():
    p = SeriesParams()
    assert p.step_days == 10 and p.smoothing_lambda is None and not p.red_edge
    assert p.bands == ("B03", "B04", "B08", "B11")
    assert SeriesParams(red_edge=True).bands == BANDS + RED_EDGE_BANDS
    bits = MaskBit(EXCLUDED_BITS)
    for b in (MaskBit.CLOUD, MaskBit.CLOUD_SHADOW, MaskBit.CIRRUS, MaskBit.SNOW, MaskBit.WATER,
              MaskBit.SATURATED, MaskBit.NODATA):
        assert b in bits
    assert MaskBit.TOPO_SHADOW not in bits
    with pytest.raises(ConfigurationError):
        SeriesParams(step_days=0)
    with pytest.raises(ConfigurationError):
        SeriesParams(smoothing_lambda=-1)


def test_merge_resolutions_replicates_20m_pixels(series):
    s20 = read_timeseries(WC / f"S2_L2A_20m_{TAIL}").compute()
    assert series.odc.geobox.shape == (64, 64)
    np.testing.assert_array_equal(series["B11"].values,
                                  np.repeat(np.repeat(s20["B11"].values, 2, 1), 2, 2))
    np.testing.assert_array_equal(series["mask"].values,
                                  np.repeat(np.repeat(s20["mask"].values, 2, 1), 2, 2))
    with pytest.raises(ConfigurationError, match="same dates"):
        merge_resolutions(series, s20.isel(time=slice(0, 10)))


def test_gapfill_is_linear_interpolation_of_the_valid_dates(series):
    """Against numpy.interp per pixel (np.interp holds the end values: the nearest valid)."""
    bands = ["B04", "B08"]
    values = np.stack([series[b].values for b in bands])
    mask = series["mask"].values
    times = series["time"].values
    out_dates = season_dates("2018-03-01", "2018-10-31")
    assert out_dates[0] == np.datetime64("2018-03-01") and out_dates[-1] == np.datetime64("2018-10-27")
    assert out_dates.size == 25
    got = gapfill_linear(values, mask, times, out_dates)
    assert got.shape == (2, out_dates.size, 64, 64)
    t_obs, t_out = day_numbers(times), day_numbers(out_dates)
    rng = np.random.default_rng(1)
    for y, x in zip(rng.integers(0, 64, 40), rng.integers(0, 64, 40)):
        ok = (mask[:, y, x] & EXCLUDED_BITS) == 0
        ok &= np.isfinite(values[:, :, y, x]).all(axis=0)
        assert ok.sum() >= 2
        for i in range(2):
            ref = np.interp(t_out, t_obs[ok], values[i, ok, y, x])
            np.testing.assert_allclose(got[i, :, y, x], ref, rtol=1e-5, atol=1e-6)


def test_gapfill_ignores_masked_dates_and_falls_back(series):
    values = np.stack([series["B04"].values[:, :4, :4]])
    mask = series["mask"].values[:, :4, :4].copy()
    times = series["time"].values
    out = season_dates("2018-04-01", "2018-09-30")
    base = gapfill_linear(values, mask, times, out)
    # a cloudy observation changes nothing: put an absurd value under a cloud flag
    cloudy = values.copy()
    k = int(np.argmax((mask[:, 0, 0] & EXCLUDED_BITS) == 0))
    mask2 = mask.copy()
    mask2[k, 0, 0] |= MaskBit.CLOUD
    cloudy[0, k, 0, 0] = 5.0
    again = gapfill_linear(cloudy, mask2, times, out)
    assert np.isfinite(again).all() and again.max() < 1.0
    np.testing.assert_array_equal(again[:, :, 1:, :], base[:, :, 1:, :])
    # a pixel flagged water on every date uses its water dates (fallback) ...
    water = mask.copy()
    water[:, 1, 1] = MaskBit.WATER
    got = gapfill_linear(values, water, times, out)
    assert np.isfinite(got[0, :, 1, 1]).all()
    # ... but a pixel cloudy on every date has no data
    water[:, 1, 1] = MaskBit.CLOUD
    got = gapfill_linear(values, water, times, out)
    assert np.isnan(got[0, :, 1, 1]).all() and np.isfinite(got[0, :, 0, 0]).all()
    with pytest.raises(ConfigurationError, match="sorted"):
        gapfill_linear(values, mask, times[::-1], out)


def test_index_features_formulas():
    g = np.array([0.05, 0.1, 0.0], np.float32)
    r = np.array([0.04, 0.2, 0.0], np.float32)
    nir = np.array([0.40, 0.2, 0.0], np.float32)
    swir = np.array([0.20, 0.3, 0.0], np.float32)
    f = index_features({"B03": g, "B04": r, "B08": nir, "B11": swir})
    np.testing.assert_allclose(f["NDVI"], [(0.4 - 0.04) / 0.44, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f["NDWI"], [(0.2 - 0.4) / 0.6, 0.1 / 0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f["BRIGHTNESS"], np.sqrt(g**2 + r**2 + nir**2 + swir**2), rtol=1e-6)
    assert "NDWI" not in index_features({"B03": g, "B04": r, "B08": nir})


def test_feature_map_order_names_and_chunking(series):
    dates = season_dates("2018-03-01", "2018-10-31")
    ex = SeriesFeatures(dates, SeriesParams(chunk=16))  # 16 blocks of 16 x 16 px
    fm = feature_map(series, ex)
    assert fm.data.chunks[1] == (16,) * 4
    assert fm.shape == (7 * dates.size, 64, 64)
    assert list(fm["feature"].values[:8]) == ["B03_20180301", "B04_20180301", "B08_20180301",
                                              "B11_20180301", "NDVI_20180301", "NDWI_20180301",
                                              "BRIGHTNESS_20180301", "B03_20180311"]
    got = fm.values
    whole = SeriesFeatures(dates).block(np.stack([series[b].values for b in BANDS]),
                                        series["mask"].values, day_numbers(series["time"].values))
    np.testing.assert_array_equal(got, whole)
    assert np.isfinite(got).all()  # every pixel has clear dates in the season
    # NDVI features are the NDVI of the gap-filled red and NIR
    red = got[1::7]
    nir = got[2::7]
    np.testing.assert_allclose(got[4::7], (nir - red) / (nir + red), rtol=1e-5, atol=1e-6)
    # the maize fields (WorldCereal code 1200): bare in late May, green in late July
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        maize = lab["CT"].values == 1200
    ndvi = got[4::7][:, maize]
    med = np.median(ndvi, axis=1)
    assert med[list(dates).index(np.datetime64("2018-05-20"))] < 0.35
    assert med[list(dates).index(np.datetime64("2018-07-19"))] > 0.75
    with pytest.raises(MissingBandError, match="B11"):
        feature_map(series.drop_vars("B11"), ex)


def test_smoothing_matches_a_dense_whittaker_on_the_grid(series):
    """lam on the 10-day grid == the daily-support smoother with lam * 10**3 (Sen2Agri L4A smoothing step):
    compared with an independent dense solve of (I + lam D'D) z = y on the grid."""
    dates = season_dates("2018-03-01", "2018-10-31")
    values = np.stack([series["B08"].values[:, :8, :8]])
    filled = gapfill_linear(values, series["mask"].values[:, :8, :8], series["time"].values, dates)
    z = smooth_series(filled, dates, 2.0)
    n = dates.size
    D = np.diff(np.eye(n), n=2, axis=0)
    y = filled[0].reshape(n, -1).astype(np.float64)
    ref = np.linalg.solve(np.eye(n) + 2.0 * D.T @ D, y)
    # the daily support matches the grid smoother closely but not exactly (the penalty acts
    # on the days between the grid dates too)
    err = np.abs(z[0].reshape(n, -1) - ref)
    assert err.max() < 0.01 and np.median(err) < 0.0015  # lam 0.5 or 8 on the grid: > 0.02, > 0.004
    rough = lambda a: np.abs(np.diff(a, 2, axis=0)).mean()
    assert rough(z[0].reshape(n, -1)) < 0.5 * rough(y)


def test_20m_feature_set_and_relative_names(series):
    from agriseries.crop.features import BANDS_20M, index_features_20m

    sp = SeriesParams(feature_set="20m")
    assert sp.bands == BANDS_20M and sp.indices == ("NDRE", "NDMI", "BRIGHTNESS")
    with pytest.raises(ConfigurationError, match="feature_set"):
        SeriesParams(feature_set="s1")
    with pytest.raises(ConfigurationError, match="red_edge"):
        SeriesParams(feature_set="20m", red_edge=True)
    dates = season_dates("2018-03-01", "2018-10-31")
    ex = SeriesFeatures(dates, sp)
    feats = feature_map(series, ex).values
    assert feats.shape == (25 * 9, 64, 64) and ex.names[:9][-3:] == ["NDRE_20180301", "NDMI_20180301",
                                                                      "BRIGHTNESS_20180301"]
    # the indices are their formulas of the gap-filled bands
    s = gapfill_linear(np.stack([series[b].values for b in BANDS_20M]), series["mask"].values,
                       series["time"].values, dates)
    b = {k: s[i] for i, k in enumerate(BANDS_20M)}
    ndre = (b["B8A"] - b["B05"]) / (b["B8A"] + b["B05"])
    np.testing.assert_allclose(feats[6::9], ndre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(index_features_20m(b)["NDMI"],
                               (b["B8A"] - b["B11"]) / (b["B8A"] + b["B11"]), rtol=1e-5)
    # relative names: the same in another year, and the layout says what the features are
    rel = SeriesFeatures(dates, sp, relative=True)
    other = SeriesFeatures(season_dates("2019-03-01", "2019-10-31"), sp, relative=True)
    assert rel.names[0] == "B05_d000" and rel.names[-1] == "BRIGHTNESS_d240"
    assert rel.names == other.names and rel.layout() == other.layout()
    assert rel.layout() != SeriesFeatures(dates, SeriesParams(), relative=True).layout()
