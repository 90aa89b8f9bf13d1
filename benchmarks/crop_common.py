"""What the crop accuracy scripts share: the WorldCereal patches of tests/data, their parcels,
the feature matrices and the parcel cross-validation.

Imported by ``benchmarks/crop_accuracy.py`` and ``docs/crop_evaluation.py`` (each puts this
folder and ``src/`` on the path), so that both tables of docs/accuracy.md are made from the
same data, the same parcels and the same split (:func:`agriseries.validation.cross_validate`).

* :func:`patch_2018`: WorldCereal Flanders 2018 (tile 31UDS, S2 10 m + 20 m, 71 dates of
  2018-03-05..10-31); :func:`patch_2019`: Flanders 2019 (tile 31UES, its 20 m file only, 70
  dates, the 20 m pixels replicated onto the 10 m label grid). Both return a :class:`Patch`.
* **parcels**: the connected regions of equal label (CT where present, else LC;
  :func:`agriseries.crop.samples.parcel_groups`).
* :func:`parcel_cv`: k-fold by parcel (every parcel in one fold, drawn class by class; pooled
  confusion matrix; ``repeats`` draws), with the training-side options (erosion, cap per
  parcel) applied to the training folds only: every pixel of a held-out parcel is predicted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from agriseries.crop.classifier import ClassifierParams, train_classifier  # noqa: E402
from agriseries.crop.features import (  # noqa: E402
    SeriesFeatures,
    SeriesParams,
    feature_map,
    merge_resolutions,
    on_grid,
    season_dates,
)
from agriseries.crop.samples import cap_per_group, parcel_groups  # noqa: E402
from agriseries.io.timeseries import read_timeseries  # noqa: E402
from agriseries.validation import cross_validate  # noqa: E402

__all__ = ["CT_NAMES", "K", "RF", "ROOT", "T18", "T19", "WC", "Patch", "features", "fmt",
           "parcel_cv", "patch_2018", "patch_2019", "phenology", "pixel_fit_predict",
           "with_landsat"]

WC = ROOT / "tests" / "data" / "worldcereal"
T18 = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
T19 = "000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"
#: Folds of the parcel cross-validation (few parcels: 8 folds keep 7/8 of them to train).
K = 8
#: Sen2Agri's random forest (100 trees, depth 25, 25 samples to split), one thread.
RF = ClassifierParams(n_jobs=1)
#: WorldCereal v1 crop codes (legend/wc2eurocrops_map_v1codes.csv of the WorldCereal test
#: resources), and the crop mask's two classes.
CT_NAMES = {1110: "winter wheat", 1200: "maize", 1510: "winter barley", 1910: "winter cereal",
            2130: "cabbages", 5100: "potatoes", 7900: "other leguminous", 8100: "sugar beet",
            9120: "grassland", 9900: "other crops", 0: "other", 1: "cropland"}


@dataclass
class Patch:
    """One labelled WorldCereal patch: its L2A series, labels, parcels and season."""

    name: str
    ds: xr.Dataset
    lc: np.ndarray  # land cover per pixel (11: annual cropland)
    ct: np.ndarray  # crop type code per pixel (NaN: none)
    groups: np.ndarray  # parcel id per pixel (2-D)
    season: tuple[str, str]
    geobox: GeoBox

    @property
    def cropland(self) -> np.ndarray:
        """The crop mask labels, flat: 1 annual cropland (LC 11), 0 the rest."""
        return (self.lc == 11).astype(np.int64).ravel()


def _labels(path: Path):
    with xr.open_dataset(path) as lab:
        lc, ct = lab["LC"].values, lab["CT"].values
        x, y = lab["x"].values, lab["y"].values
    gb = GeoBox((lc.shape[0], lc.shape[1]), Affine(10, 0, x[0] - 5, 0, -10, y[0] + 5),
                "EPSG:32631")
    return lc, ct, parcel_groups(np.where(np.isfinite(ct), ct, lc)), gb


def patch_2018() -> Patch:
    """WorldCereal Flanders 2018 (tile 31UDS), 10 m and 20 m files merged."""
    ds = merge_resolutions(read_timeseries(WC / f"S2_L2A_10m_{T18}"),
                           read_timeseries(WC / f"S2_L2A_20m_{T18}")).compute()
    lc, ct, g, gb = _labels(WC / f"OUTPUT_POLY-110_10m_{T18}")
    return Patch("Flanders 2018", ds, lc, ct, g, ("2018-03-01", "2018-10-31"), gb)


def patch_2019() -> Patch:
    """WorldCereal Flanders 2019 (tile 31UES), its 20 m file on the 10 m label grid."""
    lc, ct, g, gb = _labels(WC / "2019" / f"OUTPUT_POLY-110_10m_{T19}")
    ds = on_grid(read_timeseries(WC / "2019" / f"S2_L2A_20m_{T19}"), gb).compute()
    return Patch("Flanders 2019", ds, lc, ct, g, ("2019-03-01", "2019-10-31"), gb)


def features(ds, season, series: SeriesParams = SeriesParams(), until=None) -> np.ndarray:
    """The per-date features of the season (up to ``until``) on the regular grid, one row per
    pixel (:class:`agriseries.crop.features.SeriesFeatures`, features named by their day in
    the season)."""
    ex = SeriesFeatures(season_dates(season[0], until or season[1], series.step_days), series,
                        relative=True)
    f = feature_map(ds, ex).values
    return f.reshape(f.shape[0], -1).T


def pixel_fit_predict(X, y, groups, interior=None, parcel_cap=None, params=RF):
    """A ``fit_predict`` for :func:`cross_validate` on pixel indices: the training folds lose
    the pixels outside ``interior`` (erosion; a parcel without interior pixel does not
    train) and keep at most ``parcel_cap`` pixels per parcel."""
    def fit_predict(tr, ytr, te):
        tr, te = tr.astype(np.int64), te.astype(np.int64)
        if interior is not None:
            tr = tr[interior[tr]]
        if parcel_cap:
            tr = cap_per_group(tr, groups, parcel_cap)
        m = train_classifier(X[tr], y[tr], params)
        i, _ = m.predict(X[te])
        return m.classes[i]
    return fit_predict


def parcel_cv(X, y, groups, repeats: int, *, k: int = K, labels=None, class_names=None,
              group_kind: str = "parcel", **kw):
    """k-fold cross-validation by parcel of the pixel features ``X`` (options of
    :func:`pixel_fit_predict` in ``kw``); returns the
    :class:`~agriseries.validation.CrossValidation`."""
    y = np.asarray(y).ravel()
    groups = np.asarray(groups).ravel()
    if labels is None:
        labels = np.unique(y[groups > 0]).tolist()
    if class_names is None:
        class_names = [CT_NAMES.get(int(c), str(c)) for c in labels]
    return cross_validate(np.arange(y.size), y, groups,
                          pixel_fit_predict(X, y, groups, **kw), k=k, repeats=repeats,
                          labels=labels, class_names=class_names, group_kind=group_kind)


def fmt(ms) -> str:
    """``mean ± sd``."""
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def phenology(X: np.ndarray, names: list[str], index: str = "NDVI", step_days: int = 10
              ) -> np.ndarray:
    """Phenological metrics of one per-date index of the feature rows (columns named
    ``<index>...``, in date order): maximum and its day, spring minimum (the lowest value
    before the maximum) and its day, green-up and senescence days (the index crossing half
    way between the minimum on that side and the maximum), season length, amplitude,
    integral, steepest rise and fall, mean, standard deviation, 10th and 90th percentiles.
    Days are counted from the season start."""
    cols = [i for i, n in enumerate(names) if n.startswith(index)]
    v = X[:, cols]
    n = v.shape[1]
    t = np.arange(n) * float(step_days)
    j = np.arange(n)[None]
    imax = v.argmax(1)
    vmax = v.max(1)
    pre = np.where(j <= imax[:, None], v, np.inf)
    imin, vmin = pre.argmin(1), pre.min(1)
    vend = np.where(j >= imax[:, None], v, np.inf).min(1)
    half_up = vmin + 0.5 * (vmax - vmin)
    half_dn = vend + 0.5 * (vmax - vend)
    gu = np.minimum(np.where((j <= imax[:, None]) & (v >= half_up[:, None]), j, n).min(1), n - 1)
    sen = np.minimum(np.where((j >= imax[:, None]) & (v < half_dn[:, None]), j, n).min(1), n - 1)
    d = np.diff(v, axis=1)
    return np.stack([vmax, t[imax], vmin, t[imin], t[gu], t[sen], (sen - gu) * float(step_days),
                     vmax - vmin, v.sum(1) * step_days, d.max(1), d.min(1), v.mean(1),
                     v.std(1), np.percentile(v, 10, axis=1), np.percentile(v, 90, axis=1)],
                    1).astype(np.float32)


def with_landsat(patch: Patch, bands=("B03", "B04", "B08", "B11")) -> xr.Dataset:
    """The 2018 patch's Sentinel-2 series with its Landsat 8 dates added (tests/data's
    L8_SR_10m file, 15 dates of the season; OLI bands under their Sentinel-2 names,
    :func:`agriseries.core.bands.landsat_as_s2`), sorted by date."""
    from agriseries.core.bands import landsat_as_s2

    l8 = landsat_as_s2(read_timeseries(WC / f"L8_SR_10m_{T18}")).compute()
    keep = [*bands, "mask"]

    def bare(d):
        return d[keep].drop_vars([c for c in d.coords if c not in ("x", "y", "time")])

    both = xr.concat([bare(patch.ds), bare(l8)], dim="time").sortby("time")
    both = both.sel(time=slice(*patch.season))
    both = both.assign_coords(sensor=("time", ["S2A"] * both.sizes["time"]))
    both.attrs = patch.ds.attrs
    return both
