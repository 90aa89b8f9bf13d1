"""Crop mask accuracy on held-out parcels: the WorldCereal patches, feature sets, sampling, site models.

``python benchmarks/crop_accuracy.py [--repeats 2] [--only 2018,2019,type,candidates,ci,site]`` prints the
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
The data, parcels, features and split are those of ``benchmarks/crop_common.py`` (shared
with docs/crop_evaluation.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crop_common import (  # noqa: E402
    K,
    RF,
    fmt,
    parcel_cv,
    patch_2018,
    patch_2019,
    phenology,
    with_landsat,
)
from crop_common import features as patch_features  # noqa: E402

from agriseries.crop.classifier import ClassifierParams, train_classifier  # noqa: E402
from agriseries.crop.features import SeriesFeatures, SeriesParams, season_dates  # noqa: E402
from agriseries.crop.samples import interior_pixels  # noqa: E402
from agriseries.validation import accuracy_report, group_bootstrap  # noqa: E402


def features(patch, series: SeriesParams) -> np.ndarray:
    return patch_features(patch.ds, patch.season, series)


def cv_row(X, y, groups, repeats, **kw):
    return parcel_cv(X, y, groups, repeats, labels=[0, 1], **kw)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="fold draws (mean ± sd)")
    ap.add_argument("--only", default="2018,2019,type,candidates,ci,site", help="parts to run")
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
    if parts & {"2018", "site", "type", "ci", "candidates"}:
        data["2018"] = patch_2018()
    if parts & {"2019", "site", "type", "ci"}:
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
        patch = data[name]
        g = patch.groups
        yy, gg = patch.cropland, g.ravel()
        inner = interior_pixels(g, 1).ravel()
        label = f"Flanders {name}"
        for i, (flabel, sp) in enumerate(sets):
            X = features(patch, sp)
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
            patch = data[name]
            ct, g = patch.ct, patch.groups
            sel = np.isfinite(ct).ravel()
            yct = np.nan_to_num(ct).astype(np.int64).ravel()[sel]
            X = features(patch, sp)[sel]
            gg = g.ravel()[sel]
            inner = interior_pixels(g, 1).ravel()[sel]
            codes = np.unique(yct).tolist()
            for slabel, kw in (("all pixels (today)", {}), ("parcels eroded by 1 px",
                                                            {"interior": inner})):
                cv = parcel_cv(X, yct, gg, args.repeats, labels=codes, **kw)
                print(f"| Flanders {name} | {sp.feature_set} | {slabel} | {cv.n_groups} | "
                      f"{fmt(cv.oa)} | {fmt(cv.kappa)} | {fmt(cv.macro_f1)} |")
    if "candidates" in parts:
        # what a user of the field would try next, on top of the eroded default (2018 patch);
        # every candidate on the same fold draws
        patch = data["2018"]
        g = patch.groups
        yy, gg = patch.cropland, g.ravel()
        inner = interior_pixels(g, 1).ravel()
        X0 = features(patch, sen2agri)
        nm = SeriesFeatures(season_dates(*patch.season, 10), sen2agri, relative=True).names
        ph = phenology(X0, nm)
        Xre = features(patch, replace(sen2agri, red_edge=True))
        cands = [
            ("sen2agri", "parcels eroded by 1 px (default)", X0, {"interior": inner}),
            ("sen2agri", "parcels eroded by 2 px", X0,
             {"interior": interior_pixels(g, 2).ravel()}),
            ("sen2agri", "eroded 1 px + class weights balanced", X0,
             {"interior": inner, "params": replace(RF, class_weight="balanced")}),
            ("sen2agri", "eroded 1 px, RF min 5 samples to split", X0,
             {"interior": inner, "params": replace(RF, min_samples=5)}),
            ("sen2agri", "eroded 1 px, LightGBM", X0,
             {"interior": inner, "params": ClassifierParams(method="lightgbm", n_jobs=1)}),
            ("sen2agri + NDVI phenology (15 metrics)", "eroded 1 px", np.hstack([X0, ph]),
             {"interior": inner}),
            ("NDVI phenology alone", "eroded 1 px", ph, {"interior": inner}),
            ("sen2agri + red edge + NDVI phenology", "eroded 1 px", np.hstack([Xre, ph]),
             {"interior": inner}),
            ("sen2agri, Whittaker lambda 0.5", "eroded 1 px",
             features(patch, replace(sen2agri, smoothing_lambda=0.5)), {"interior": inner}),
            ("sen2agri, 5-day grid", "eroded 1 px",
             features(patch, replace(sen2agri, step_days=5)), {"interior": inner}),
            ("sen2agri", "eroded 1 px + 400 px per parcel", X0,
             {"interior": inner, "parcel_cap": 400}),
            ("sen2agri, Sentinel-2 + Landsat 8 dates (71 + 15)", "eroded 1 px",
             patch_features(with_landsat(patch), patch.season, sen2agri), {"interior": inner}),
        ]
        print(f"\nCandidates on the 2018 crop mask (parcel {K}-fold, the same {args.repeats} "
              "draws for every row; OA of each draw in brackets):\n")
        print("| features | training samples | OA | kappa | OA per draw |")
        print("|---|---|---|---|---|")
        for flabel, slabel, X, kw in cands:
            cv = cv_row(X, yy, gg, args.repeats, **kw)
            per = ", ".join(f"{r.oa:.3f}" for r in cv.reports)
            print(f"| {flabel} | {slabel} | {fmt(cv.oa)} | {fmt(cv.kappa)} | {per} |")
    if "ci" in parts:
        print("\nWhat the patches can tell: OA and kappa of the default crop mask (parcels eroded "
              "by 1 px) with 95 % intervals when the **parcels** are the samples (percentile "
              "bootstrap over the held-out parcels of each draw, 2000 resamples, "
              "agriseries.validation.group_bootstrap; the interval is the mean of the draws' "
              "bounds):\n")
        print("| patch | features | parcels (cropland) | OA | OA 95 % interval | kappa | "
              "kappa 95 % interval |")
        print("|---|---|---|---|---|---|---|")
        for name, sp in (("2018", sen2agri), ("2019", twenty)):
            patch = data[name]
            yy, gg = patch.cropland, patch.groups.ravel()
            X = features(patch, sp)
            cv = cv_row(X, yy, gg, args.repeats,
                        interior=interior_pixels(patch.groups, 1).ravel())
            bs = [group_bootstrap(p_, yy, gg, [0, 1]) for p_ in cv.predictions]
            oa_lo, oa_hi = np.mean([b["oa"][1] for b in bs]), np.mean([b["oa"][2] for b in bs])
            k_lo, k_hi = (np.mean([b["kappa"][1] for b in bs]),
                          np.mean([b["kappa"][2] for b in bs]))
            ncrop = len({int(v) for v in np.unique(gg[yy == 1])})
            print(f"| Flanders {name} | {sp.feature_set} | {cv.n_groups} ({ncrop}) | "
                  f"{fmt(cv.oa)} | {oa_lo:.2f} - {oa_hi:.2f} | {fmt(cv.kappa)} | "
                  f"{k_lo:.2f} - {k_hi:.2f} |")
    if "site" in parts:
        X = {n: features(data[n], twenty) for n in ("2018", "2019")}
        y = {n: data[n].cropland for n in X}
        inner = {n: interior_pixels(data[n].groups, 1).ravel() for n in X}
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
        gall = np.concatenate([data["2018"].groups.ravel(), data["2019"].groups.ravel() + 10000])
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
