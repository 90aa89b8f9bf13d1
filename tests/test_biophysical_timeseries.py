"""Tests of the Whittaker smoothing / gap filling kernel (agriseries.biophysical.timeseries).

Synthetic profiles check the method (against a dense solve of the same normal
equations, exact properties of the smoother, lambda limits); the real WorldCereal
patch (tests/data/worldcereal, Flanders 2018, see SOURCE.txt there) checks it on an
NDVI series with Sen2Cor's cloud mask, NDVI standing in for LAI.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as dsk
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from agriseries.biophysical import timeseries as ts
from agriseries.biophysical.timeseries import (
    DEFAULT_LAMBDA,
    BiophysicalFlag,
    SmoothingFlag,
    regular_dates,
    weights_from_flags,
    whittaker,
    whittaker_dataarray,
)
from agriseries.core.errors import ConfigurationError
from agriseries.core.masks import MaskBit

D0 = np.datetime64("2018-01-01", "D")


def double_logistic(t):
    """A maize-like LAI profile: green-up around day 160, senescence around day 260."""
    t = np.asarray(t, dtype=float)
    return 0.3 + 5.0 * (1 / (1 + np.exp(-(t - 160) / 8)) - 1 / (1 + np.exp(-(t - 260) / 10)))


def bump(t):
    t = np.asarray(t, dtype=float)
    return 0.3 + 4.0 * np.exp(-(((t - 200) / 45) ** 2))


def dense_whittaker(days, y, w, m, lam, order):
    """The reference: solve (W + lam D'D) z = W y densely on the daily support 0..m-1."""
    W = np.zeros(m)
    WY = np.zeros(m)
    np.add.at(W, days, w)
    np.add.at(WY, days, w * y)
    Dm = np.diff(np.eye(m), n=order, axis=0)
    return np.linalg.solve(np.diag(W) + lam * Dm.T @ Dm, WY)


# --------------------------------------------------------------------------------------
# dates


def test_regular_dates():
    d = regular_dates("2018-03-01", "2018-10-31")
    assert d.dtype == np.dtype("datetime64[D]")
    assert d[0] == np.datetime64("2018-03-01") and d[-1] == np.datetime64("2018-10-27")
    assert d.size == 25 and (np.diff(d) == np.timedelta64(10, "D")).all()
    assert regular_dates("2018-03-01", "2018-03-21").tolist()[-1].isoformat() == "2018-03-21"
    assert regular_dates(np.datetime64("2018-03-01T11:04:34"), "2018-03-01").size == 1
    with pytest.raises(ConfigurationError, match="step_days"):
        regular_dates("2018-03-01", "2018-10-31", 0)
    with pytest.raises(ConfigurationError, match="before start"):
        regular_dates("2018-03-01", "2018-02-01")
    with pytest.raises(ConfigurationError, match="ISO date"):
        regular_dates("March", "2018-02-01")


@given(st.integers(0, 2000), st.integers(0, 800), st.integers(1, 40))
def test_regular_dates_property(start, length, step):
    s = D0 + start
    d = regular_dates(s, s + length, step)
    assert d[0] == s and d[-1] <= s + length < d[-1] + step
    assert (np.diff(d).astype(int) == step).all()


# --------------------------------------------------------------------------------------
# the smoother on synthetic data


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_dense_solution(order):
    rng = np.random.default_rng(1)
    days = np.sort(rng.choice(240, 40, replace=False))
    days[5] = days[4]  # two observations on one day are combined
    y = rng.normal(size=(40, 6))
    w = rng.uniform(0, 1, size=(40, 6))
    w[rng.random((40, 6)) < 0.3] = 0
    out = np.arange(0, 240, 7)
    z, q = whittaker(y, w, D0 + days, D0 + out, lam=50.0, order=order)
    m = max(days.max(), out.max()) + 1
    for px in range(6):
        ref = dense_whittaker(days, y[:, px], w[:, px], m, 50.0, order)
        np.testing.assert_allclose(z[:, px], ref[out], atol=2e-6)
    assert z.dtype == np.float32 and z.shape == (out.size, 6)
    assert (q.lam == 50.0).all() and q.flags.shape == z.shape


def test_hat_diagonal_matches_dense_inverse():
    rng = np.random.default_rng(2)
    m = 60
    W = np.where(rng.random((m, 3)) < 0.3, rng.random((m, 3)), 0.0)
    lam = np.array([1.0, 30.0, 1000.0])
    pen = ts.penalty_bands(m, 2)
    L, D = ts.ldl(W, lam, pen)
    Dm = np.diff(np.eye(m), n=2, axis=0)
    for px in range(3):
        ref = np.diag(np.linalg.inv(np.diag(W[:, px]) + lam[px] * Dm.T @ Dm))
        np.testing.assert_allclose(ts.inverse_diagonal(L, D)[:, px], ref, rtol=1e-8)


def test_smooth_curve_irregular_sampling_reproduced():
    rng = np.random.default_rng(3)
    days = np.cumsum(rng.integers(2, 13, size=60)) + 40  # gaps of 2 to 12 days
    days = days[days < 340]
    out = np.arange(60, 330, 10)
    z, _ = whittaker(bump(days)[:, None], None, D0 + days, D0 + out)
    err = np.abs(z[:, 0] - bump(out))
    assert err.max() < 0.04 * 4.0  # within 4 % of the season amplitude (at the peak)
    assert np.median(err) < 0.01 * 4.0


@pytest.mark.parametrize("step", [5, 10])
def test_default_lambda_keeps_a_crop_peak(step):
    """Sen2Agri's 10-day response (module docstring) keeps a sharp maize-like peak."""
    obs = np.arange(62, 320, step)
    out = np.arange(60, 320)
    z, _ = whittaker(double_logistic(obs)[:, None], None, D0 + obs, D0 + out)
    truth = double_logistic(out)
    assert abs(z.max() / truth.max() - 1) < 0.04
    assert abs(out[np.argmax(z)] - out[np.argmax(truth)]) <= 10
    # on a 10-day grid the season is still there: green-up / senescence within 10 days
    half = truth.min() + 0.5 * (truth.max() - truth.min())
    above = out[z[:, 0] > half]
    assert abs(above[0] - 160) <= 10 and abs(above[-1] - 260) <= 10


def test_small_lambda_interpolates():
    rng = np.random.default_rng(4)
    days = np.sort(rng.choice(200, 25, replace=False))
    y = rng.uniform(0, 6, size=(25, 4))
    z, _ = whittaker(y, None, D0 + days, D0 + days, lam=1e-4)
    np.testing.assert_allclose(z, y, atol=2e-3)


def test_huge_lambda_gives_the_weighted_regression_line():
    rng = np.random.default_rng(5)
    days = np.sort(rng.choice(200, 30, replace=False))
    y = rng.normal(size=30)
    w = rng.uniform(0.1, 1, size=30)
    z, _ = whittaker(y[:, None], w[:, None], D0 + days, D0 + days, lam=1e12)
    coef = np.polyfit(days, y, 1, w=np.sqrt(w))
    np.testing.assert_allclose(z[:, 0], np.polyval(coef, days), atol=1e-3)


def test_zero_weight_outliers_are_ignored():
    rng = np.random.default_rng(6)
    days = np.sort(rng.choice(240, 40, replace=False))
    y = bump(days)
    w = np.ones(40)
    bad = np.array([3, 10, 17, 25])
    y_out = y.copy()
    y_out[bad] = [-5.0, 40.0, 0.0, np.inf]  # cloud-like outliers, even non-finite
    w[bad] = 0
    out = regular_dates(D0 + 10, D0 + 230)
    z_flagged, q1 = whittaker(y_out[:, None], w[:, None], D0 + days, out)
    keep = np.setdiff1d(np.arange(40), bad)
    z_removed, q2 = whittaker(y[keep, None], None, D0 + days[keep], out)
    np.testing.assert_array_equal(z_flagged, z_removed)
    np.testing.assert_array_equal(q1.distance, q2.distance)
    assert int(q1.n_valid[0]) == 36
    # NaN values are ignored even with a positive weight
    y_nan = y.copy()
    y_nan[bad] = np.nan
    z_nan, _ = whittaker(y_nan[:, None], np.ones((40, 1)), D0 + days, out)
    np.testing.assert_array_equal(z_nan, z_removed)


def test_order_of_dates_is_irrelevant():
    rng = np.random.default_rng(7)
    days = rng.choice(240, 50, replace=False)
    y = rng.normal(size=(50, 3, 2))
    w = rng.uniform(0, 1, size=(50, 3, 2))
    out = regular_dates(D0, D0 + 239)
    z1, q1 = whittaker(y, w, D0 + days, out)
    perm = rng.permutation(50)
    z2, q2 = whittaker(y[perm], w[perm], D0 + days[perm], out)
    np.testing.assert_allclose(z1, z2, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(q1.distance, q2.distance)
    assert z1.shape == (out.size, 3, 2)


def test_not_bounded_by_the_data():
    """Documented: like a smoothing spline, the smoother overshoots next to an abrupt
    change (so no min/max bound holds); ``clip`` bounds the output."""
    days = np.arange(0, 200, 5)
    y = np.where(days < 100, 0.0, 5.0)
    z, _ = whittaker(y[:, None], None, D0 + days, D0 + np.arange(200))
    assert z.max() > 5.0 + 0.05 and z.min() < -0.05
    zc, _ = whittaker(y[:, None], None, D0 + days, D0 + np.arange(200), clip=(0, 5))
    assert zc.min() == 0 and zc.max() == 5


# exact properties (used instead of a min/max bound, which does not hold)
_obs = st.lists(st.tuples(st.integers(0, 150), st.floats(-10, 10), st.floats(0, 1)),
                min_size=4, max_size=30)


@settings(max_examples=60, deadline=None)
@given(_obs, st.floats(0.5, 1e5), st.floats(-3, 3), st.floats(-5, 5))
def test_exact_properties(obs, lam, a, b):
    days = np.array([o[0] for o in obs])
    y = np.array([o[1] for o in obs])
    w = np.array([o[2] for o in obs])
    w[:3] = 1.0
    days[:3] = [0, 75, 150]  # always enough distinct valid days
    z, q = whittaker(y[:, None], w[:, None], D0 + days, D0 + days, lam=lam)
    z = z[:, 0].astype(np.float64)
    scale = 1 + np.abs(y).max()
    # the weighted mean and, for order 2, the weighted first moment are preserved
    assert abs((w * z).sum() - (w * y).sum()) < 1e-3 * scale * w.sum()
    assert abs((w * days * z).sum() - (w * days * y).sum()) < 1e-3 * scale * (w * days).sum() + 1e-3
    # a straight line is reproduced whatever lambda; the smoother is affine in the data
    line = a * days + b
    zl, _ = whittaker(line[:, None], w[:, None], D0 + days, D0 + days, lam=lam)
    np.testing.assert_allclose(zl[:, 0], line, atol=1e-3 * (1 + np.abs(line).max()))
    za, _ = whittaker((2 * y + line)[:, None], w[:, None], D0 + days, D0 + days, lam=lam)
    np.testing.assert_allclose(za[:, 0], 2 * z + line, atol=2e-3 * (scale + np.abs(line).max()))
    assert int(q.n_valid[0]) == len(np.unique(days[w > 0]))


def test_quality_layers():
    # pixel 0: observations on days 20, 30, 60, 90; pixel 1: two only; pixel 2: none
    days = np.array([20, 30, 60, 90])
    y = np.array([[1.0, 1.0, np.nan], [2.0, 2.0, np.nan], [3.0, np.nan, np.nan],
                  [2.0, np.nan, np.nan]])
    out = D0 + np.array([0, 25, 45, 100, 130])
    z, q = whittaker(y, None, D0 + days, out)
    np.testing.assert_array_equal(q.n_valid, [4, 2, 0])
    np.testing.assert_array_equal(q.distance[:, 0], [20, 5, 15, 10, 40])
    assert np.isnan(q.distance[:, 2]).all()
    np.testing.assert_array_equal(q.flags[:, 0], [2, 0, 0, 2, 2])  # EXTRAPOLATED out of 20..90
    assert (q.flags[:, 1] & SmoothingFlag.TOO_FEW_OBSERVATIONS).all()
    assert (q.flags[:, 2] & SmoothingFlag.TOO_FEW_OBSERVATIONS).all()
    assert np.isfinite(z[:, 0]).all() and np.isnan(z[:, 1:]).all()
    assert q.lam[0] == DEFAULT_LAMBDA and np.isnan(q.lam[1:]).all()
    z2, _ = whittaker(y, None, D0 + days, out, min_obs=2)
    assert np.isfinite(z2[:, 1]).all()
    z3, q3 = whittaker(y, None, D0 + days, out, max_distance=15)
    assert np.isnan(z3[[0, 4], 0]).all() and np.isfinite(z3[1:4, 0]).all()
    assert (q3.flags[[0, 4], 0] & SmoothingFlag.TOO_FAR).all()


def test_cross_validation_and_vcurve():
    rng = np.random.default_rng(8)
    days = np.sort(rng.choice(np.arange(40, 330), 60, replace=False))
    truth = bump(days)
    y = truth[:, None] + rng.normal(0, 0.4, size=(60, 20))
    out = np.arange(60, 320, 10)
    zcv, qcv = whittaker(y, None, D0 + days, D0 + out, lam="cv")
    zsmall, _ = whittaker(y, None, D0 + days, D0 + out, lam=1.0)
    grid = np.array(ts.DEFAULT_LAMBDA_GRID)
    assert np.isin(qcv.lam, grid.astype(np.float32)).all()
    # CV picks a lambda that beats interpolating the noise
    e_cv = np.sqrt(np.mean((zcv - bump(out)[:, None]) ** 2))
    e_small = np.sqrt(np.mean((zsmall - bump(out)[:, None]) ** 2))
    assert e_cv < 0.6 * e_small
    zv, qv = whittaker(y, None, D0 + days, D0 + out, lam="vcurve")
    assert (qv.lam > grid[0]).all() and (qv.lam < grid[-1]).all()
    assert np.isfinite(zv).all()


def test_upper_envelope_removes_unflagged_dips():
    days = np.arange(40, 330, 4)
    y = bump(days)
    dips = np.arange(3, days.size, 5)
    y_noisy = y.copy()
    y_noisy[dips] *= 0.3  # residual cloud pulls LAI / NDVI down, unflagged
    out = np.arange(60, 320, 10)
    z0, _ = whittaker(y_noisy[:, None], None, D0 + days, D0 + out)
    z3, _ = whittaker(y_noisy[:, None], None, D0 + days, D0 + out, envelope_iterations=3)
    e0 = np.abs(z0[:, 0] - bump(out)).max()
    e3 = np.abs(z3[:, 0] - bump(out)).max()
    assert e3 < 0.5 * e0


def test_bad_parameters():
    y = np.ones((4, 2))
    d = D0 + np.arange(4)
    for kw, msg in [({"lam": 0}, "lam"), ({"lam": "gcv"}, "lam"), ({"order": 0}, "order"),
                    ({"min_obs": 1}, "min_obs"), ({"max_distance": -1}, "max_distance"),
                    ({"clip": (1, 0)}, "clip"), ({"envelope_factor": 2}, "envelope_factor"),
                    ({"lam": "vcurve", "lam_grid": [1, 2]}, "lam_grid")]:
        with pytest.raises(ConfigurationError, match=msg):
            whittaker(y, None, d, d, **kw)
    with pytest.raises(ConfigurationError, match="weights shape"):
        whittaker(y, np.ones((4, 3)), d, d)
    with pytest.raises(ConfigurationError, match="weights"):
        whittaker(y, -np.ones((4, 2)), d, d)
    with pytest.raises(ConfigurationError, match="3 dates for 4"):
        whittaker(y, None, d[:3], d)


# --------------------------------------------------------------------------------------
# weights


def test_weights_from_flags():
    F = BiophysicalFlag
    flags = np.array([0, F.INPUT_OUT_OF_RANGE, F.OUTPUT_THRESHOLDED_TO_MIN,
                      F.OUTPUT_THRESHOLDED_TO_MAX, F.OUTPUT_TOO_LOW, F.OUTPUT_TOO_HIGH, 0, 0, 0,
                      0, 0, 0], dtype=np.uint8)
    mask = np.array([0, 0, 0, 0, 0, 0, MaskBit.CLOUD, MaskBit.CLOUD_SHADOW, MaskBit.SNOW,
                     MaskBit.WATER, MaskBit.NODATA, MaskBit.TOPO_SHADOW], dtype=np.uint8)
    w = weights_from_flags(flags, mask)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, [1, 0, 0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 1])
    values = np.array([1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, np.nan])
    assert weights_from_flags(flags, mask, values=values)[-1] == 0
    np.testing.assert_allclose(weights_from_flags(flags, thresholded_weight=0.2)[:4], [1, 0, 0.2, 0.2])
    np.testing.assert_array_equal(weights_from_flags(mask=np.uint8([0, MaskBit.TOPO_SHADOW]),
                                                     reject_mask=MaskBit.TOPO_SHADOW), [1, 0])
    # dask and xarray in, same kind out
    wd = weights_from_flags(dsk.from_array(flags, chunks=4), dsk.from_array(mask, chunks=4))
    assert isinstance(wd, dsk.Array)
    np.testing.assert_array_equal(wd.compute(), w)
    wx = weights_from_flags(xr.DataArray(flags, dims="t"), xr.DataArray(mask, dims="t"))
    assert isinstance(wx, xr.DataArray)
    np.testing.assert_array_equal(wx.values, w)
    with pytest.raises(ConfigurationError):
        weights_from_flags()


# --------------------------------------------------------------------------------------
# xarray / dask


def test_dataarray_numpy_and_dask_agree():
    rng = np.random.default_rng(9)
    days = np.sort(rng.choice(240, 30, replace=False))
    times = (D0 + days).astype("datetime64[ns]") + np.timedelta64(11, "h")
    vals = bump(days + 30)[:, None, None] + rng.normal(0, 0.2, (30, 10, 12))
    vals[rng.random(vals.shape) < 0.2] = np.nan
    da = xr.DataArray(vals.astype(np.float32), dims=("time", "y", "x"),
                      coords={"time": times, "y": np.arange(10) * -10.0, "x": np.arange(12) * 10.0,
                              "spatial_ref": 0}, name="LAI")
    out = regular_dates(D0, D0 + 239)
    eager = whittaker_dataarray(da, None, out)
    lazy = whittaker_dataarray(da.chunk({"time": 7, "y": 5, "x": 6}), None, out)
    assert isinstance(lazy.data, dsk.Array)
    assert lazy.chunks == ((out.size,), (5, 5), (6, 6))
    lazy = lazy.compute()
    xr.testing.assert_allclose(eager, lazy)
    assert eager.dims == ("time", "y", "x") and eager.name == "LAI"
    assert eager.time.values[1] == np.datetime64("2018-01-11T00:00:00", "ns")
    assert "spatial_ref" in eager.coords and (eager.x.values == da.x.values).all()
    ref, q = whittaker(vals.astype(np.float32), None, times, out)
    np.testing.assert_array_equal(eager.values, ref)
    np.testing.assert_array_equal(eager.obs_distance.values, q.distance)
    np.testing.assert_array_equal(lazy.smoothing_flags.values, q.flags)
    np.testing.assert_array_equal(lazy.n_valid.values, q.n_valid)
    assert lazy.smoothing_flags.dtype == np.uint8 and lazy.n_valid.dtype == np.int32
    layers = lazy.reset_coords()
    assert {"LAI", "obs_distance", "smoothing_flags", "n_valid", "smoothing_lambda"} <= set(layers)
    w = xr.ones_like(da).where(da.x < 50, 0.0).chunk({"y": 5, "x": 6})
    lw = whittaker_dataarray(da.chunk({"y": 5, "x": 6}), w, out).compute()
    assert np.isnan(lw.values[:, :, 5:]).all() and np.isfinite(lw.values[:, :, :5]).all()


# --------------------------------------------------------------------------------------
# real data: WorldCereal patch 00002806639B424A, Flanders 2018 (see tests/data/worldcereal)

WC = Path(__file__).parent / "data" / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
MAIZE = 1200  # WorldCereal crop type code


def ndvi_series():
    """NDVI (10 m), weights from the SCL mask (20 m repeated to 10 m), maize pixels."""
    from agriseries.io.timeseries import read_timeseries

    s10 = read_timeseries(WC / f"S2_L2A_10m_{TAIL}").compute()
    s20 = read_timeseries(WC / f"S2_L2A_20m_{TAIL}").compute()
    assert (s10.time.values == s20.time.values).all()
    mask = np.repeat(np.repeat(s20["mask"].values, 2, axis=1), 2, axis=2)
    red, nir = s10["B04"].values, s10["B08"].values
    ndvi = (nir - red) / (nir + red)
    w = weights_from_flags(mask=mask, values=ndvi)
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        ct = lab["CT"].values
    return s10.time.values, ndvi, w, ct == MAIZE


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
def test_real_maize_ndvi_profile():
    times, ndvi, w, maize = ndvi_series()
    assert ndvi.shape == (71, 64, 64) and int(maize.sum()) == 1249
    out = regular_dates("2018-03-01", "2018-10-31")
    z, q = whittaker(ndvi, w, times, out)
    assert (q.n_valid[maize] >= 34).all()  # 34 to 41 clear days per maize pixel
    assert np.isfinite(z[:, maize]).all()
    med = np.median(z[:, maize], axis=1)

    def at(day):
        return float(med[np.nonzero(out == np.datetime64(day))[0][0]])

    # the season peak: median profile highest on 2018-07-19 (0.79)
    assert out[np.argmax(med)] == np.datetime64("2018-07-19")
    assert 0.75 < med.max() < 0.83
    # each pixel's June-October maximum lies in July-August for 90 % of the maize pixels
    summer = out >= np.datetime64("2018-06-01")
    peak = out[summer][np.argmax(z[summer][:, maize], axis=0)].astype("datetime64[M]")
    in_jul_aug = (peak >= np.datetime64("2018-07")) & (peak <= np.datetime64("2018-08"))
    assert in_jul_aug.mean() > 0.85
    # low at sowing (bare soil, late May: 0.26) and after harvest (early October: 0.23);
    # April is green (0.62-0.65: a winter cover on the maize fields before ploughing)
    assert at("2018-05-20") < 0.32 and at("2018-10-07") < 0.3
    assert at("2018-04-20") > 0.55
    # the raw series has cloud dips in July-August (clouds missed by SCL included), the
    # smoothed one does not
    july_aug = (times >= np.datetime64("2018-07-01")) & (times < np.datetime64("2018-09-01"))
    raw = ndvi[july_aug][:, maize]
    raw_med = np.nanmedian(raw[np.isfinite(raw).any(axis=1)], axis=1)
    assert raw_med.min() < 0.1  # 2018-07-30: 0.06
    valid_raw = np.where(w > 0, ndvi, np.nan)[july_aug][:, maize]
    valid_raw = valid_raw[np.isfinite(valid_raw).any(axis=1)]
    assert np.nanmedian(valid_raw, axis=1).min() < 0.35  # 2018-07-03 kept by SCL: 0.18
    zja = med[(out >= np.datetime64("2018-07-01")) & (out < np.datetime64("2018-09-01"))]
    assert zja.min() > 0.6  # 0.77, 0.79, 0.78, 0.75, 0.71, 0.63 (senescence from late August)
    # confidence layer: a valid observation within 6 days of most output dates
    assert np.median(q.distance[:, maize]) <= 4


@pytest.mark.parametrize("options", [
    {},
    {"order": 3, "lam": 50.0},
    {"lam": "cv", "lam_grid": (10.0, 100.0, 1000.0, 10000.0)},
    {"lam": "vcurve", "lam_grid": (10.0, 100.0, 1000.0, 10000.0)},
    {"envelope_iterations": 2, "max_distance": 12.0, "min_obs": 5},
])
def test_compiled_kernel_matches_numpy_reference(options):
    """The compiled per-pixel pass gives the numpy reference's values, flags and layers."""
    rng = np.random.default_rng(7)
    days = np.sort(rng.choice(np.arange(60, 300), size=25, replace=False))
    dates = D0 + days
    days = np.concatenate([days, days[:3]])  # repeated days are combined
    dates = np.concatenate([dates, dates[:3]])
    y = (bump(days)[:, None, None] + rng.normal(0, 0.3, (days.size, 6, 7))).astype(np.float32)
    w = rng.choice([0.0, 0.5, 1.0], size=y.shape, p=[0.4, 0.2, 0.4]).astype(np.float32)
    y[rng.random(y.shape) < 0.1] = np.nan
    w[:, 0, 0] = 0.0  # no valid observation
    w[:, 0, 1] = 0.0
    w[5, 0, 1] = 1.0  # too few
    out = regular_dates("2018-02-01", "2018-11-30", 7)
    kw = dict(options)
    lam, order = kw.pop("lam", DEFAULT_LAMBDA), kw.pop("order", 2)
    z, q = whittaker(y, w, dates, out, lam, order, **kw)
    zr, qr = whittaker(y, w, dates, out, lam, order, implementation="numpy", **kw)
    np.testing.assert_allclose(z, zr, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(q.flags, qr.flags)
    np.testing.assert_array_equal(q.distance, qr.distance)
    np.testing.assert_array_equal(q.n_valid, qr.n_valid)
    np.testing.assert_allclose(q.lam, qr.lam, rtol=1e-6)
    assert np.isnan(z[:, 0, :2]).all() and np.isfinite(z[:, 1:]).any()
