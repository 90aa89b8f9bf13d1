"""Crop mask accuracy on held-out parcels: the WorldCereal patches, feature sets, sampling, site models.

``python benchmarks/crop_accuracy.py [--repeats 2] [--only 2018,2019,type,site]`` prints the
Markdown table of docs/accuracy.md ("Crop mask by parcel: what helps"). Everything comes
from tests/data and runs through the library (:mod:`agriseries.crop` features, samples and
classifier, :func:`agriseries.validation.cross_validate`):

* **patches**: WorldCereal Flanders 2018 (tile 31UDS, S2 10 m + 20 m, 71 dates) and 2019
  (tile 31UES, S2 20 m only, 70 dates; the 20 m pixels replicated onto the 10 m label
  grid); labels LC 11 (annual cropland) against the rest;
* **split**: parcel 8-fold (the parcels are the connected regions of equal label; each in
  one fold, drawn class by class; pooled confusion matrix), ``--repeats`` fold draws,
  mean ± sd; the erosion and the per-parcel cap act on the training folds only, every pixel
  of a held-out parcel is predicted;
* **site** rows: one tile's model applied to the other tile (other year: every parcel unseen),
  and the parcel 8-fold over the two tiles' parcels together (the site model), on the
  ``20m`` feature set both tiles have.

Classifier: Sen2Agri's random forest (100 trees, depth 25, 25 samples to split), one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

ROOT = Path(__file__).resolve().parents[1]
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
from agriseries.crop.samples import cap_per_group, interior_pixels, parcel_groups  # noqa: E402
from agriseries.io.timeseries import read_timeseries  # noqa: E402
from agriseries.validation import accuracy_report, cross_validate  # noqa: E402

WC = ROOT / "tests" / "data" / "worldcereal"
T18 = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
T19 = "000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"
K = 8
RF = ClassifierParams(n_jobs=1)


def _labels(path: Path):
    with xr.open_dataset(path) as lab:
        lc, ct = lab["LC"].values, lab["CT"].values
        x, y = lab["x"].values, lab["y"].values
    gb = GeoBox((lc.shape[0], lc.shape[1]), Affine(10, 0, x[0] - 5, 0, -10, y[0] + 5),
                "EPSG:32631")
    groups = parcel_groups(np.where(np.isfinite(ct), ct, lc))
    return (lc == 11).astype(np.int64), groups, gb


def patch_2018():
    ds = merge_resolutions(read_timeseries(WC / f"S2_L2A_10m_{T18}"),
                           read_timeseries(WC / f"S2_L2A_20m_{T18}")).compute()
    y, g, _ = _labels(WC / f"OUTPUT_POLY-110_10m_{T18}")
    return ds, y, g, ("2018-03-01", "2018-10-31")


def patch_2019():
    y, g, gb = _labels(WC / "2019" / f"OUTPUT_POLY-110_10m_{T19}")
    ds = on_grid(read_timeseries(WC / "2019" / f"S2_L2A_20m_{T19}"), gb).compute()
    return ds, y, g, ("2019-03-01", "2019-10-31")


def features(ds, season, series: SeriesParams) -> np.ndarray:
    ex = SeriesFeatures(season_dates(*season, series.step_days), series, relative=True)
    f = feature_map(ds, ex).values
    return f.reshape(f.shape[0], -1).T


def fit_predict_factory(y, groups, interior=None, parcel_cap=None, params=RF):
    """A ``fit_predict`` on pixel indices with the sampling options (training folds only)."""
    def fit_predict(tr, ytr, te):
        tr, te = tr.astype(np.int64), te.astype(np.int64)
        if interior is not None:  # a parcel without interior pixel does not train
            tr = tr[interior[tr]]
        if parcel_cap:
            tr = cap_per_group(tr, groups, parcel_cap)
        m = train_classifier(FEATS[0][tr], y[tr], params)
        i, _ = m.predict(FEATS[0][te])
        return m.classes[i]
    return fit_predict


FEATS: list = [None]  # the feature matrix the current fit_predict reads (rows = pixels)


def cv_row(X, y, groups, repeats, **kw):
    FEATS[0] = X
    idx = np.arange(y.size)
    cv = cross_validate(idx, y, groups, fit_predict_factory(y, groups, **kw), k=K,
                        repeats=repeats, labels=[0, 1], class_names=["other", "cropland"])
    return cv


def fmt(ms) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="fold draws (mean ± sd)")
    ap.add_argument("--only", default="2018,2019,type,site", help="parts to run")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    parts = set(args.only.split(","))
    t0 = time.time()
    print(f"Parcel {K}-fold cross-validation (every parcel in one fold, drawn class by class; "
          f"pooled confusion matrix; mean ± sd over {args.repeats} draws). Crop mask: LC 11 "
          "(annual cropland) against the rest. RF 100 / 25 / 25.\n")
    print("| patch | features | training samples | parcels | OA | kappa | F1 other / cropland |")
    print("|---|---|---|---|---|---|---|")
    sen2agri = SeriesParams()
    twenty = SeriesParams(feature_set="20m")
    data = {}
    if parts & {"2018", "site", "type"}:
        data["2018"] = patch_2018()
    if parts & {"2019", "site", "type"}:
        data["2019"] = patch_2019()

    def row(patch, feat_label, samp_label, cv):
        f1 = cv.f1
        print(f"| {patch} | {feat_label} | {samp_label} | {cv.n_groups} | {fmt(cv.oa)} | "
              f"{fmt(cv.kappa)} | {f1[0]:.2f} / {f1[1]:.2f} |")

    for name, sets in (("2018", [("sen2agri (B03 B04 B08 B11, NDVI NDWI brightness)", sen2agri),
                                 ("sen2agri + red edge", replace(sen2agri, red_edge=True)),
                                 ("sen2agri, Whittaker lambda 2", replace(sen2agri,
                                                                          smoothing_lambda=2.0)),
                                 ("20m (B05-B8A B11 B12, NDRE NDMI brightness)", twenty)]),
                       ("2019", [("20m (B05-B8A B11 B12, NDRE NDMI brightness)", twenty),
                                 ("20m, Whittaker lambda 2", replace(twenty,
                                                                     smoothing_lambda=2.0))])):
        if name not in parts:
            continue
        ds, y, g, season = data[name]
        yy, gg = y.ravel(), g.ravel()
        inner = interior_pixels(g, 1).ravel()
        label = f"Flanders {name}"
        for i, (flabel, sp) in enumerate(sets):
            X = features(ds, season, sp)
            row(label, flabel, "all pixels (today)", cv_row(X, yy, gg, args.repeats))
            if i == 0:
                row(label, flabel, "parcels eroded by 1 px",
                    cv_row(X, yy, gg, args.repeats, interior=inner))
                row(label, flabel, "at most 100 px per parcel",
                    cv_row(X, yy, gg, args.repeats, parcel_cap=100))
                row(label, flabel, "eroded 1 px + 100 px per parcel",
                    cv_row(X, yy, gg, args.repeats, interior=inner, parcel_cap=100))
                row(label, flabel, "class weights balanced",
                    cv_row(X, yy, gg, args.repeats,
                           params=replace(RF, class_weight="balanced")))
            elif "lambda" in flabel or "red edge" in flabel or name == "2018":
                row(label, flabel, "parcels eroded by 1 px",
                    cv_row(X, yy, gg, args.repeats, interior=inner))
    if "type" in parts:
        print("\nCrop type (the CT codes of the cropland and grassland parcels), parcel "
              f"{K}-fold, same features:\n")
        print("| patch | features | training samples | parcels | OA | kappa | macro F1 |")
        print("|---|---|---|---|---|---|---|")
        for name, sp in (("2018", sen2agri), ("2019", twenty)):
            ds, _, g, season = data[name]
            folder = WC if name == "2018" else WC / "2019"
            tail = T18 if name == "2018" else T19
            with xr.open_dataset(folder / f"OUTPUT_POLY-110_10m_{tail}") as lab:
                ct = lab["CT"].values
            sel = np.isfinite(ct).ravel()
            yct = np.nan_to_num(ct).astype(np.int64).ravel()[sel]
            X = features(ds, season, sp)[sel]
            gg = g.ravel()[sel]
            inner = interior_pixels(g, 1).ravel()[sel]
            codes = np.unique(yct).tolist()
            for slabel, kw in (("all pixels (today)", {}), ("parcels eroded by 1 px",
                                                            {"interior": inner})):
                FEATS[0] = X
                cv = cross_validate(np.arange(yct.size), yct, gg,
                                    fit_predict_factory(yct, gg, **kw), k=K,
                                    repeats=args.repeats, labels=codes)
                print(f"| Flanders {name} | {sp.feature_set} | {slabel} | {cv.n_groups} | "
                      f"{fmt(cv.oa)} | {fmt(cv.kappa)} | {fmt(cv.macro_f1)} |")
    if "site" in parts:
        X = {n: features(data[n][0], data[n][3], twenty) for n in ("2018", "2019")}
        y = {n: data[n][1].ravel() for n in X}
        inner = {n: interior_pixels(data[n][2], 1).ravel() for n in X}
        print("\nSite model (tiles 31UDS 2018 + 31UES 2019, `20m` features named by their day "
              "in the season):\n")
        print("| validated on | trained on | training samples | OA | kappa | F1 other / cropland |")
        print("|---|---|---|---|---|---|")
        for test, train in (("2018", "2019"), ("2019", "2018")):
            for slabel, use in (("all pixels", np.ones(y[train].size, bool)),
                                ("parcels eroded by 1 px", inner[train])):
                m = train_classifier(X[train][use], y[train][use], RF)
                i, _ = m.predict(X[test])
                r = accuracy_report(m.classes[i], y[test], labels=[0, 1])
                print(f"| all of Flanders {test} | all parcels of Flanders {train} (other tile, "
                      f"other year) | {slabel} | {r.oa:.3f} | {r.kappa:.3f} | "
                      f"{r.f1[0]:.2f} / {r.f1[1]:.2f} |")
        Xall = np.vstack([X["2018"], X["2019"]])
        yall = np.concatenate([y["2018"], y["2019"]])
        gall = np.concatenate([data["2018"][2].ravel(), data["2019"][2].ravel() + 10000])
        iall = np.concatenate([inner["2018"], inner["2019"]])
        for slabel, kw in (("all pixels", {}), ("parcels eroded by 1 px", {"interior": iall})):
            cv = cv_row(Xall, yall, gall, args.repeats, **kw)
            for name, sl in (("2018", slice(0, 4096)), ("2019", slice(4096, 8192))):
                rs = [accuracy_report(p[sl], yall[sl], labels=[0, 1]) for p in cv.predictions]
                oa = np.array([r.oa for r in rs])
                ka = np.array([r.kappa for r in rs])
                f1 = np.nanmean([r.f1 for r in rs], axis=0)
                print(f"| Flanders {name} (held-out parcels) | site parcel {K}-fold over both "
                      f"tiles ({cv.n_groups} parcels) | {slabel} | {oa.mean():.3f} ± {oa.std():.3f}"
                      f" | {ka.mean():.3f} ± {ka.std():.3f} | {f1[0]:.2f} / {f1[1]:.2f} |")
    print(f"\n(run time {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
