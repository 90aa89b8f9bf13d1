"""Make the documentation figures (``python docs/make_figures.py``; needs the ``[docs]`` extra).

``docs/img/ndvi_whittaker_maize.png``
    The L3B time-series smoothing (:mod:`agriseries.biophysical.timeseries`) on real
    data: NDVI of the maize fields of the WorldCereal Flanders 2018 patch
    (``tests/data/worldcereal``, Sentinel-2 L2A, Sen2Cor SCL mask), raw observations
    and the weighted Whittaker profile on the 10-day grid. NDVI stands in for LAI
    here; the method is the same for any L3B variable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agriseries.biophysical.timeseries import (
    DEFAULT_LAMBDA,
    regular_dates,
    weights_from_flags,
    whittaker,
)
from agriseries.io.timeseries import read_timeseries

WC = ROOT / "tests" / "data" / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
IMG = ROOT / "docs" / "img"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib is missing: pip install 'agriseries[docs]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def maize_ndvi():
    """Dates, NDVI (t, y, x), weights from the SCL mask, maize pixel mask."""
    s10 = read_timeseries(WC / f"S2_L2A_10m_{TAIL}").compute()
    s20 = read_timeseries(WC / f"S2_L2A_20m_{TAIL}").compute()
    mask = np.repeat(np.repeat(s20["mask"].values, 2, axis=1), 2, axis=2)
    red, nir = s10["B04"].values, s10["B08"].values
    ndvi = (nir - red) / (nir + red)
    w = weights_from_flags(mask=mask, values=ndvi)
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        maize = lab["CT"].values == 1200
    return s10.time.values, ndvi, w, maize


def ndvi_whittaker_maize(path: Path) -> dict:
    plt = _pyplot()
    times, ndvi, w, maize = maize_ndvi()
    grid = regular_dates("2018-03-01", "2018-10-31")
    daily = regular_dates("2018-03-01", "2018-10-31", 1)
    z10, _ = whittaker(ndvi, w, times, grid)
    zd, _ = whittaker(ndvi, w, times, daily)
    ze, _ = whittaker(ndvi, w, times, daily, envelope_iterations=3)
    med = np.median(z10[:, maize], axis=1)
    # the maize pixel whose profile is closest to the median one
    iy, ix = np.nonzero(maize)
    k = int(np.argmin(((z10[:, iy, ix] - med[:, None]) ** 2).sum(axis=0)))
    py, px = int(iy[k]), int(ix[k])

    t = times.astype("datetime64[D]").astype("datetime64[ms]").astype(object)
    g = grid.astype("datetime64[ms]").astype(object)
    d = daily.astype("datetime64[ms]").astype(object)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11.5, 7.5), sharex=True)
    y, ww = ndvi[:, py, px], w[:, py, px]
    a1.plot([ti for ti, v in zip(t, ww) if v > 0], y[ww > 0], "o", color="tab:green",
            ms=5, label="S2 L2A, clear (weight 1)")
    a1.plot([ti for ti, v in zip(t, ww) if v == 0], y[ww == 0], "x", color="0.55",
            ms=6, label="S2 L2A, masked by SCL (weight 0)")
    a1.plot(d, zd[:, py, px], "-", color="tab:blue", lw=1.8,
            label=f"Whittaker, $\\lambda$ = {DEFAULT_LAMBDA:g} (daily support)")
    a1.plot(g, z10[:, py, px], "s", color="tab:blue", ms=5, label="10-day product dates")
    a1.plot(d, ze[:, py, px], "--", color="tab:orange", lw=1.2,
            label="with upper envelope (3 iterations)")
    a1.set_ylabel("NDVI")
    a1.set_ylim(-0.1, 1.0)
    a1.set_title(f"one maize pixel (row {py}, col {px})", fontsize=10)
    a1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    raw = np.where(w > 0, ndvi, np.nan)[:, maize]
    keep = np.isfinite(raw).sum(axis=1) >= 0.5 * maize.sum()
    a2.plot([ti for ti, kk in zip(t, keep) if kk], np.nanmedian(raw[keep], axis=1), "o",
            color="tab:green", ms=4, label="clear observations, median")
    lo, hi = np.percentile(z10[:, maize], [10, 90], axis=1)
    a2.fill_between(g, lo, hi, color="tab:blue", alpha=0.2, label="smoothed, 10-90 %")
    a2.plot(g, med, "s-", color="tab:blue", ms=4, label="smoothed, median")
    a2.set_ylabel("NDVI")
    a2.set_ylim(-0.1, 1.0)
    a2.set_title(f"all {int(maize.sum())} maize pixels (WorldCereal crop type 1200)", fontsize=10)
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle("Flanders 2018 (WorldCereal patch 00002806639B424A, tile 31UDS): "
                 "weighted Whittaker smoothing onto a 10-day grid", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    i = int(np.argmax(med))
    return {"figure": str(path), "pixel": (py, px), "median_peak_date": str(grid[i]),
            "median_peak_ndvi": round(float(med[i]), 3),
            "median_profile": {str(a): round(float(b), 3) for a, b in zip(grid, med)}}


def l3b_maize_profile(path: Path) -> dict:
    """LAI, FAPAR and FCOVER of the maize parcels of the WorldCereal patch through the real
    chain: ingest -> L3B per date -> season profile (agriseries.biophysical.processor)."""
    import datetime as dt
    import tempfile

    import rasterio
    import xarray as xr

    from agriseries.biophysical.processor import biophysical_series, run_biophysical
    from agriseries.core.ids import ProductId
    from agriseries.io.ingest import ingest
    from agriseries.io.store import ProductStore

    plt = _pyplot()
    wc = ROOT / "tests" / "data" / "worldcereal"
    labels = xr.open_dataset(next(wc.glob("OUTPUT_POLY-*.nc")))
    maize = (labels["CT"].values.squeeze() == 1200)[::2, ::2]
    season = (dt.datetime(2018, 3, 1), dt.datetime(2018, 10, 31))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = ProductStore(tmp)
        ingest(sorted(wc.glob("S2_L2A_*m_*.nc")), store)
        run_biophysical(store, "T31UDS", *season)
        pid = biophysical_series(store, "T31UDS", *season, variables=("LAI", "FAPAR", "FCOVER"))
        item = store.item(pid)
        fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
        for ax, var in zip(axes, ("LAI", "FAPAR", "FCOVER")):
            dates, raw = [], []
            for it in store.items(level="L3B", tile="T31UDS", start=season[0], end=season[1]):
                if ProductId.parse(it.id).end is not None:
                    continue
                with rasterio.open(store.product_dir(it.id) / it.assets[var].href) as src:
                    v = src.read(1)[maize]
                if np.isfinite(v).mean() > 0.5:
                    dates.append(np.datetime64(it.datetime.replace(tzinfo=None), "D"))
                    raw.append(np.nanmedian(v))
            with rasterio.open(store.product_dir(pid) / item.assets[f"{var}_smoothed"].href) as src:
                sm = np.nanmedian(src.read()[:, maize], axis=1)
            grid = np.array([np.datetime64(d, "D") for d in item.properties["agriseries:dates"]])
            ax.plot(dates, raw, "o", color="tab:green", ms=4, label="L3B per date, median of clear maize pixels")
            ax.plot(grid, sm, "s-", color="tab:blue", ms=4, label="season profile (Whittaker, 10-day grid)")
            ax.set_ylabel(var)
            ax.grid(alpha=0.3)
            i = int(np.nanargmax(sm))
            out[var] = {"peak_date": str(grid[i]), "peak": round(float(sm[i]), 2)}
        axes[0].legend(loc="upper left", fontsize=8)
        axes[0].set_title(f"Maize parcels ({int(maize.sum())} px at 20 m), Flanders 2018, S2 Toolbox "
                          "networks 3_0 via agriseries L3B")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return out


def main() -> None:
    info = ndvi_whittaker_maize(IMG / "ndvi_whittaker_maize.png")
    for key, value in info.items():
        print(f"{key}: {value}")
    print("l3b:", l3b_maize_profile(IMG / "l3b_maize_profile.png"))


if __name__ == "__main__":
    main()
