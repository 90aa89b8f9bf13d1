"""Accuracy of the crop mask (L4A) and crop type (L4B) methods on real labelled data.

Run ``python docs/crop_evaluation.py [--repeats 5] [--raw-data DIR]``; it prints
Markdown tables (the README's crop section quotes them). It uses the same code as the
processors (:mod:`agriseries.crop`), on arrays rather than on a product store, so that the
splits can be repeated:

1. **WorldCereal Flanders 2018** (``tests/data/worldcereal``, patch 00002806639B424A, tile
   31UDS, 64 x 64 px, 71 Sentinel-2 L2A dates 2018-03-05..10-31 with the Sen2Cor SCL mask;
   labels from the Flanders LPIS): crop mask (land cover 11 annual cropland vs the rest)
   and crop type (the five WorldCereal crop codes of the patch), features of docs/crop.md
   "Features" on the 10-day grid 2018-03-01..10-27, random forest 100 / 25 / 25 (and LightGBM).
   **Validation by parcel**: the parcels are the connected regions of equal label
   (23 in the patch); 4-fold cross-validation where every parcel is in exactly one fold,
   drawn class by class, so each pixel is predicted by a model that never saw its parcel;
   the pooled confusion matrix gives OA, kappa and F1 (:mod:`agriseries.validation`);
   repeated with ``--repeats`` random fold draws (mean +- sd). The pixel-random split
   (neighbouring pixels of one field in training and validation) is shown as the
   optimistic figure it is. In-season: the crop mask with data up to 30 June and 31 August.
2. **WorldCereal Flanders 2019** (``$AGRISERIES_RAW_DATA/worldcereal/patches/000028085BF08E7E``,
   tile 31UES; its 10 m Sentinel-2 file is missing upstream, so the Landsat 8 surface
   reflectance series is used: B3, B4, B5, B6 as green, red, NIR, SWIR, 11 dates
   2019-03-30..10-24 with the CFMask ``pixel_qa`` mask): the same two experiments.
3. **Formosat-2** (``tests/data/crop/formosat2``, TempCNN example, SW France 2006): 13
   classes, 20 training and 20 test pixels per class from disjoint polygons, 149 gap-filled
   dates of NIR, red, green; features = the three bands, NDVI and brightness per date.
4. **Crop mask without in-situ data** (Matton et al. 2015, docs/crop.md) on the 2018
   patch: the reference is a coarse cropland map made from the labels (majority of 8 x 8 px
   cells, i.e. 80 m), partly wrong (a share of the cells flipped at random); the map made
   from it is compared with the true labels on every pixel. Variants: the random forest on
   the reference as it is, after erosion (radius 1), after erosion and Mahalanobis trimming
   (alpha 0.01, the Sen2Agri chain), all on the key-date features (Whittaker lambda 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agriseries.core.bands import landsat_as_s2
from agriseries.crop.classifier import ClassifierParams, train_classifier
from agriseries.crop.features import (
    SeriesFeatures,
    feature_map,
    index_features,
    merge_resolutions,
    season_dates,
)
from agriseries.crop.nolabels import KeyDateFeatures, erode_reference, mahalanobis_trim
from agriseries.crop.samples import parcel_groups, sample_pixels
from agriseries.io.timeseries import read_timeseries
from agriseries.validation import accuracy_report

WC = ROOT / "tests" / "data" / "worldcereal"
#: Folds of the parcel cross-validation of the 64 x 64 px patches (few parcels: 8 folds
#: keep 7/8 of them for training).
PARCEL_FOLDS = 8
TAIL18 = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
F2 = ROOT / "tests" / "data" / "crop" / "formosat2"
#: WorldCereal v1 crop codes (legend/wc2eurocrops_map_v1codes.csv of the WorldCereal test resources)
CT_NAMES = {1110: "winter wheat", 1200: "maize", 1510: "winter barley", 1910: "winter cereal",
            2130: "cabbages", 5100: "potatoes", 7900: "other leguminous", 8100: "sugar beet",
            9120: "grassland", 9900: "other crops", 0: "other", 1: "cropland"}


# --------------------------------------------------------------------------------------
# data


def worldcereal_2018():
    ds = merge_resolutions(read_timeseries(WC / f"S2_L2A_10m_{TAIL18}"),
                           read_timeseries(WC / f"S2_L2A_20m_{TAIL18}")).compute()
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL18}") as lab:
        lc, ct = lab["LC"].values, lab["CT"].values
    return ds, lc, ct, ("2018-03-01", "2018-10-31")


def worldcereal_2019(raw: Path):
    folder = raw / "worldcereal" / "patches" / "000028085BF08E7E"
    l8 = next(folder.glob("L8_SR_10m_*.nc"), None)
    lab = next(folder.glob("OUTPUT_POLY-110_10m_*.nc"), None)
    if l8 is None or lab is None:
        return None
    ds = landsat_as_s2(read_timeseries(l8)).compute()
    season = ("2019-03-01", "2019-10-31")
    ds = ds.sel(time=slice(*season))
    with xr.open_dataset(lab) as lb:
        lc, ct = lb["LC"].values, lb["CT"].values
    return ds, lc, ct, season


def features(ds, season, until=None):
    dates = season_dates(season[0], until or season[1])
    ex = SeriesFeatures(dates)
    return feature_map(ds, ex).values, ex


# --------------------------------------------------------------------------------------
# grouped cross-validation


def group_folds(groups: np.ndarray, classes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1) of each group, drawn class by class (by the group's class)."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    gclass = np.array([np.bincount(classes[groups == g]).argmax() for g in ug])
    fold = np.empty(ug.size, int)
    offset = int(rng.integers(k))
    for c in np.unique(gclass):
        members = rng.permutation(np.flatnonzero(gclass == c))
        fold[members] = (np.arange(members.size) + offset) % k
        offset = (offset + members.size) % k
    return fold[np.searchsorted(ug, groups)]


def grouped_cv(X, y, groups, params, names, repeats: int, k: int = 4, cap: int | None = None):
    """Pooled reports of ``repeats`` k-fold cross-validations by group."""
    codes, yi = np.unique(y, return_inverse=True)
    reports = []
    for r in range(repeats):
        fold = group_folds(groups, yi, k, seed=r)
        pred = np.full(y.size, -1, np.int64)
        for f in range(k):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            if te.size == 0:
                continue
            if cap is not None:
                tr = tr[sample_pixels(y[tr], cap, seed=r)]
            if np.unique(y[tr]).size < 2:
                continue
            model = train_classifier(X[tr], y[tr], params, names)
            idx, _ = model.predict(X[te])
            pred[te] = model.classes[idx]
        ok = pred >= 0
        reports.append(accuracy_report(pred[ok], y[ok], labels=list(codes),
                                       class_names=[CT_NAMES.get(int(c), str(c)) for c in codes]))
    return reports


def pixel_split(X, y, params, names, repeats: int):
    codes = np.unique(y)
    reports = []
    for r in range(repeats):
        perm = np.random.default_rng(100 + r).permutation(y.size)
        tr, te = perm[: int(0.75 * y.size)], perm[int(0.75 * y.size):]
        model = train_classifier(X[tr], y[tr], params, names)
        idx, _ = model.predict(X[te])
        reports.append(accuracy_report(model.classes[idx], y[te], labels=list(codes)))
    return reports


def summary(reports) -> dict:
    oa = np.array([r.oa for r in reports])
    kappa = np.array([r.kappa for r in reports])
    f1 = np.array([r.f1 for r in reports])
    return {"oa": (oa.mean(), oa.std()), "kappa": (kappa.mean(), kappa.std()),
            "f1": np.nanmean(f1, axis=0), "names": reports[0].class_names,
            "n": reports[0].n}


def fmt(ms) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def f1_text(s) -> str:
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(s["names"], s["f1"]))


# --------------------------------------------------------------------------------------
# experiments


def site_rows(name, ds, lc, ct, season, repeats, sensor):
    rows = []
    feats, ex = features(ds, season)
    X = feats.reshape(feats.shape[0], -1).T
    comb = np.where(np.isfinite(ct), ct, lc)
    groups = parcel_groups(comb).ravel()
    ngroups = int(groups.max())
    crop = (lc == 11).astype(np.int64).ravel()
    rf = ClassifierParams()
    lgb = ClassifierParams(method="lightgbm", n_jobs=2)
    k = PARCEL_FOLDS

    def cv(Xs, ys, gs, params, cap):
        return summary(grouped_cv(Xs, ys, gs, params, None, repeats, k=k, cap=cap))

    # crop mask
    rows.append((name, sensor, "crop mask", f"RF, parcel {k}-fold", cv(X, crop, groups, rf, 40000),
                 ngroups))
    rows.append((name, sensor, "crop mask", f"LightGBM, parcel {k}-fold",
                 cv(X, crop, groups, lgb, 40000), ngroups))
    for until in ("06-30", "08-31"):
        y0 = season[0][:4]
        f2, _ = features(ds, season, f"{y0}-{until}")
        X2 = f2.reshape(f2.shape[0], -1).T
        rows.append((name, sensor, f"crop mask up to {y0}-{until}", f"RF, parcel {k}-fold",
                     cv(X2, crop, groups, rf, 40000), ngroups))
    s = summary(pixel_split(X, crop, rf, ex.names, repeats))
    rows.append((name, sensor, "crop mask", "RF, pixel-random 75/25 (leaky)", s, ngroups))
    # crop type
    sel = np.isfinite(ct).ravel()
    yct = np.nan_to_num(ct).astype(np.int64).ravel()[sel]
    gct = groups[sel]
    nct = np.unique(gct).size
    rows.append((name, sensor, "crop type", f"RF, parcel {k}-fold",
                 cv(X[sel], yct, gct, rf, 10000), nct))
    rows.append((name, sensor, "crop type", f"LightGBM, parcel {k}-fold",
                 cv(X[sel], yct, gct, lgb, 10000), nct))
    s = summary(pixel_split(X[sel], yct, rf, ex.names, repeats))
    rows.append((name, sensor, "crop type", "RF, pixel-random 75/25 (leaky)", s, nct))
    return rows


def worldcereal_table_rows(raw: Path, repeats: int):
    """WorldCereal's own training table: 1000 labelled pixels of 74 Flanders 2018 locations
    with 152 WorldCereal features (optical / SAR / meteo / DEM statistics); the classifier
    alone, 4-fold cross-validation by location."""
    path = raw / "worldcereal" / "patches" / "training_df_LC.parquet"
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    if not path.exists():
        return None
    t = pq.read_table(path)
    d = t.to_pydict()
    meta = {"WORLDCOVER-LABEL-10m", "lat", "lon", "pixelids", "CT", "OUTPUT", "IRR", "location_id",
            "ref_id", "split", "aez_groupid", "aez_zoneid", "POTAPOV-LABEL-10m"}
    names = [n for n in t.schema.names if n not in meta and not n.startswith("biome")]
    X = np.array([d[n] for n in names], dtype=np.float32).T
    lc = np.asarray(d["OUTPUT"])
    ct = np.asarray(d["CT"]).astype(np.int64)
    loc = np.unique(np.asarray(d["location_id"]), return_inverse=True)[1] + 1
    rows = []
    crop = (lc == 11).astype(np.int64)
    for label, params in (("RF 100/25/25", ClassifierParams()),
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=2))):
        s = summary(grouped_cv(X, crop, loc, params, names, repeats))
        rows.append(("crop mask", label, s, int(loc.max()), crop.size))
    counts = {c: int((ct == c).sum()) for c in np.unique(ct)}
    keep = (lc == 11) | (ct == 9120)
    keep &= np.array([counts[c] >= 20 for c in ct]) & (ct > 0)
    for label, params in (("RF 100/25/25", ClassifierParams()),
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=2))):
        s = summary(grouped_cv(X[keep], ct[keep], loc[keep], params, names, repeats))
        rows.append(("crop type", label, s, np.unique(loc[keep]).size, int(keep.sum())))
    return rows


def formosat_rows():
    def load(name):
        a = np.loadtxt(F2 / name, delimiter=",")
        s = a[:, 2:].reshape(a.shape[0], 149, 3)
        nir, r, g = s[..., 0], s[..., 1], s[..., 2]
        idx = index_features({"B03": g, "B04": r, "B08": nir})
        X = np.stack([g, r, nir, idx["NDVI"], idx["BRIGHTNESS"]], axis=2).reshape(a.shape[0], -1)
        return X.astype(np.float32), a[:, 0].astype(int) + 1

    names = [line.split(",")[1] for line in (F2 / "class_map.txt").read_text().splitlines()[1:]]
    Xtr, ytr = load("train_dataset.csv.gz")
    Xte, yte = load("test_dataset.csv.gz")
    rows = []
    for label, params in (("RF 100/25/25", ClassifierParams()),
                          ("RF 100 trees, min 2 samples", ClassifierParams(min_samples=2)),
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=2))):
        model = train_classifier(Xtr, ytr, params)
        idx, _ = model.predict(Xte)
        rep = accuracy_report(model.classes[idx], yte, labels=list(range(1, 14)), class_names=names)
        rows.append((label, rep))
    return rows


def degrade(truth: np.ndarray, cell: int, flip: float, seed: int) -> np.ndarray:
    n = truth.shape[0] // cell
    coarse = truth.reshape(n, cell, n, cell).mean(axis=(1, 3)) >= 0.5
    wrong = np.random.default_rng(seed).random(coarse.shape) < flip
    return np.repeat(np.repeat(coarse ^ wrong, cell, 0), cell, 1).astype(np.uint8)


def nolabels_rows(ds, lc, season, repeats):
    truth = (lc == 11)
    kd = KeyDateFeatures(season_dates(*season))
    K = feature_map(ds, kd).values
    X = K.reshape(K.shape[0], -1).T
    out = []
    for flip in (0.0, 0.1, 0.2, 0.3):
        res = {"reference": [], "as is": [], "eroded": [], "eroded + trimmed": [],
               "purity as is": [], "purity trimmed": [], "kept": []}
        for seed in range(repeats):
            ref = degrade(truth, 8, flip, seed)
            res["reference"].append((ref == truth).mean())
            for variant, radius, alpha in (("as is", 0, 0.0), ("eroded", 1, 0.0),
                                           ("eroded + trimmed", 1, 0.01)):
                lab = erode_reference(ref, radius).ravel()
                idx = np.flatnonzero(lab != 255)
                y = lab[idx].astype(np.int64)
                keep = np.zeros(idx.size, bool)
                for c in (0, 1):
                    sel = np.flatnonzero(y == c)
                    k, _ = mahalanobis_trim(X[idx][sel], alpha)
                    keep[sel[k]] = True
                pick = np.flatnonzero(keep)
                pick = pick[sample_pixels(y[pick], 40000, seed=seed)]
                model = train_classifier(X[idx][pick], y[pick], ClassifierParams(), kd.names)
                i, _ = model.predict(X)
                res[variant].append((model.classes[i].reshape(truth.shape) == truth).mean())
                purity = (y[pick] == truth.ravel()[idx][pick]).mean()
                if variant == "as is":
                    res["purity as is"].append(purity)
                if variant == "eroded + trimmed":
                    res["purity trimmed"].append(purity)
                    res["kept"].append(pick.size / idx.size)
        out.append((flip, {k: (np.mean(v), np.std(v)) for k, v in res.items()}))
    return out


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progressive output when redirected
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="random fold draws / reference seeds")
    ap.add_argument("--raw-data", type=Path,
                    default=Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")),
                    help="folder of the upstream copies (for the 2019 WorldCereal patch and the table;"
                         " see tests/data/README.md)")
    ap.add_argument("--skip-patches", action="store_true",
                    help="leave out the (slow) cross-validations of the two patches")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    t0 = time.time()
    ds18, lc18, ct18, season18 = worldcereal_2018()

    print("### Crop mask without in-situ data: degraded reference, Flanders 2018\n")
    print("Reference = 80 m majority cells of the labels with a share of the cells flipped; "
          "OA of the map against the true labels on all 4096 px; purity = share of the "
          f"training samples whose reference label is right (mean ± sd, {args.repeats} seeds).\n")
    print("| cells flipped | reference OA | RF on reference as is | eroded | eroded + trimmed "
          "(Sen2Agri) | purity as is | purity trimmed | samples kept |")
    print("|---|---|---|---|---|---|---|---|")
    for flip, r in nolabels_rows(ds18, lc18, season18, args.repeats):
        print(f"| {flip:.0%} | {fmt(r['reference'])} | {fmt(r['as is'])} | {fmt(r['eroded'])} | "
              f"{fmt(r['eroded + trimmed'])} | {fmt(r['purity as is'])} | "
              f"{fmt(r['purity trimmed'])} | {r['kept'][0]:.0%} |")

    print("\n### Formosat-2, 13 classes (TempCNN example; disjoint train / test polygons)\n")
    print("| classifier | OA | kappa | macro F1 | F1 per class |")
    print("|---|---|---|---|---|")
    for label, rep in formosat_rows():
        per = ", ".join(f"{n} {v:.2f}" for n, v in zip(rep.class_names, rep.f1))
        print(f"| {label} | {rep.oa:.3f} | {rep.kappa:.3f} | {rep.macro_f1:.3f} | {per} |")

    table = worldcereal_table_rows(args.raw_data, args.repeats)
    if table is not None:
        print("\n### WorldCereal training table (1000 pixels, 74 locations, Flanders 2018)\n")
        print("WorldCereal's own 152 features; 4-fold cross-validation by location "
              f"(mean ± sd over {args.repeats} draws); crop type: the classes with >= 20 "
              "samples.\n")
        print("| product | classifier | locations | samples | OA | kappa | F1 per class |")
        print("|---|---|---|---|---|---|---|")
        for prod, label, s, nloc, n in table:
            print(f"| {prod} | {label} | {nloc} | {n} | {fmt(s['oa'])} | {fmt(s['kappa'])} | "
                  f"{f1_text(s)} |")

    if not args.skip_patches:
        print("\n### WorldCereal patches (64 x 64 px, Flanders LPIS labels)\n")
        print(f"Parcel {PARCEL_FOLDS}-fold: every parcel in one fold, folds drawn class by class; "
              "pooled confusion matrix of each cross-validation; mean ± sd over "
              f"{args.repeats} draws (pixel-random split: same).\n")
        print("| site | data | product | validation | parcels | OA | kappa | F1 per class |")
        print("|---|---|---|---|---|---|---|---|")
        sites = [("Flanders 2018 (31UDS)", (ds18, lc18, ct18, season18), "S2, 71 dates")]
        site19 = worldcereal_2019(args.raw_data)
        if site19 is not None:
            sites.append(("Flanders 2019 (31UES)", site19,
                          f"L8, {site19[0].sizes['time']} dates"))
        for name, (ds, lc, ct, season), sensor in sites:
            for site, sens, prod, how, s, ng in site_rows(name, ds, lc, ct, season, args.repeats,
                                                          sensor):
                print(f"| {site} | {sens} | {prod} | {how} | {ng} | {fmt(s['oa'])} | "
                      f"{fmt(s['kappa'])} | {f1_text(s)} |")
    print(f"\n(run time {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
