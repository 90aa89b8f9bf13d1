"""Accuracy of the crop mask (L4A) and crop type (L4B) methods on real labelled data.

Run ``python docs/crop_evaluation.py [--repeats 5] [--raw-data DIR]``; it prints
Markdown tables (the README's crop section quotes them). It uses the same code as the
processors (:mod:`agriseries.crop`), on arrays rather than on a product store, so that the
splits can be repeated:

1. **WorldCereal Flanders 2018** (``tests/data/worldcereal``, patch 00002806639B424A, tile
   31UDS, 64 x 64 px, 71 Sentinel-2 L2A dates 2018-03-05..10-31 with the Sen2Cor SCL mask;
   labels from the Flanders LPIS): crop mask (land cover 11 annual cropland vs the rest)
   and crop type (the five WorldCereal crop codes of the patch), features of docs/crop.md
   "Features" on the 10-day grid 2018-03-01..10-27, random forest 100 / 25 / 25 (and LightGBM),
   Sen2Agri's sampling (every pixel of the training parcels: no erosion, i.e. the
   *before* of benchmarks/crop_accuracy.py). **Validation by parcel**: the parcels are the
   connected regions of equal label (23 in the patch); 8-fold cross-validation where every
   parcel is in exactly one fold, drawn class by class, so each pixel is predicted by a model
   that never saw its parcel (:func:`agriseries.validation.cross_validate`); the pooled
   confusion matrix gives OA, kappa and F1; repeated with ``--repeats`` random fold draws
   (mean +- sd). The pixel-random split
   (neighbouring pixels of one field in training and validation) is shown as the
   optimistic figure it is. In-season: the crop mask with data up to 30 June and 31 August.
2. **WorldCereal Flanders 2019** (``$AGRISERIES_RAW_DATA/worldcereal/patches/000028085BF08E7E``,
   tile 31UES; its 10 m Sentinel-2 file is missing upstream, so the Landsat 8 surface
   reflectance series is used: B3, B4, B5, B6 as green, red, NIR, SWIR, 11 dates
   2019-03-30..10-24 with the CFMask ``pixel_qa`` mask): the same two experiments.
3. **Formosat-2** (``tests/data/crop/formosat2``, TempCNN example, SW France 2006): 13
   classes, 20 training and 20 test pixels per class from disjoint polygons, 149 gap-filled
   dates of NIR, red, green; features = the three bands, NDVI and brightness per date.
   Validated twice: on the upstream split (train polygons / test polygons), and by
   **polygon 5-fold** over the 520 pixels of both files (291 polygons; every polygon in one
   fold; ``--repeats`` draws).
4. **Crop mask without in-situ data** (Matton et al. 2015, docs/crop.md) on the 2018
   patch: the reference is a coarse cropland map made from the labels (majority of 8 x 8 px
   cells, i.e. 80 m), partly wrong (a share of the cells flipped at random); the map made
   from it is compared with the true labels on every pixel. Variants: the random forest on
   the reference as it is, after erosion (radius 1), after erosion and Mahalanobis trimming
   (alpha 0.01, the Sen2Agri chain), all on the key-date features (Whittaker lambda 2).
   **Validation by spatial block** (the reference has no polygons): the patch cut in 16 blocks
   of 16 x 16 px (160 m, two reference cells), 4-fold by block; the model of a fold is trained
   on the degraded reference of the other folds' blocks only and scored against the true
   labels of the held-out blocks (pooled).

The data, parcels and parcel cross-validation are those of ``benchmarks/crop_common.py``,
shared with benchmarks/crop_accuracy.py.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from crop_common import CT_NAMES, K, fmt, parcel_cv, patch_2018  # noqa: E402
from crop_common import features as patch_features  # noqa: E402

from agriseries.core.bands import landsat_as_s2  # noqa: E402
from agriseries.crop.classifier import ClassifierParams, train_classifier  # noqa: E402
from agriseries.crop.features import feature_map, index_features, season_dates  # noqa: E402
from agriseries.crop.nolabels import KeyDateFeatures, erode_reference, mahalanobis_trim  # noqa: E402
from agriseries.crop.samples import sample_pixels  # noqa: E402
from agriseries.io.timeseries import read_timeseries  # noqa: E402
from agriseries.validation import accuracy_report, block_groups, cross_validate  # noqa: E402

F2 = ROOT / "tests" / "data" / "crop" / "formosat2"
#: Folds of the parcel cross-validation of the 64 x 64 px patches.
PARCEL_FOLDS = K


# --------------------------------------------------------------------------------------
# data


def worldcereal_2018():
    p = patch_2018()
    return p.ds, p.lc, p.ct, p.season


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
    return patch_features(ds, season, until=until)


# --------------------------------------------------------------------------------------
# validation


def grouped_cv(X, y, groups, params, names, repeats: int, k: int = 4, cap: int | None = None,
               kind: str = "location"):
    """``repeats`` k-fold cross-validations by group of a feature table (the classifier alone;
    at most ``cap`` training pixels in proportion to the classes)."""
    def fit_predict(Xtr, ytr, Xte):
        if cap is not None:
            pick = sample_pixels(ytr, cap, seed=0)
            Xtr, ytr = Xtr[pick], ytr[pick]
        m = train_classifier(Xtr, ytr, params, names)
        i, _ = m.predict(Xte)
        return m.classes[i]

    codes = np.unique(y).tolist()
    return cross_validate(X, y, groups, fit_predict, k=k, repeats=repeats, labels=codes,
                          class_names=[CT_NAMES.get(int(c), str(c)) for c in codes],
                          group_kind=kind).reports


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


def f1_text(s) -> str:
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(s["names"], s["f1"]))


# --------------------------------------------------------------------------------------
# experiments


def site_rows(name, ds, lc, ct, season, repeats, sensor):
    """Crop mask and crop type of one patch: parcel 8-fold (every pixel of the training
    parcels trains: Sen2Agri's sampling) and the leaky pixel-random split."""
    from agriseries.crop.samples import parcel_groups

    rows = []
    X = features(ds, season)
    groups = parcel_groups(np.where(np.isfinite(ct), ct, lc)).ravel()
    ngroups = int(groups.max())
    crop = (lc == 11).astype(np.int64).ravel()
    rf = ClassifierParams(n_jobs=1)
    lgb = ClassifierParams(method="lightgbm", n_jobs=1)
    k = PARCEL_FOLDS

    def cv(Xs, ys, gs, params):
        return summary(parcel_cv(Xs, ys, gs, repeats, params=params).reports)

    rows.append((name, sensor, "crop mask", f"RF, parcel {k}-fold", cv(X, crop, groups, rf),
                 ngroups))
    rows.append((name, sensor, "crop mask", f"LightGBM, parcel {k}-fold",
                 cv(X, crop, groups, lgb), ngroups))
    for until in ("06-30", "08-31"):
        y0 = season[0][:4]
        X2 = features(ds, season, f"{y0}-{until}")
        rows.append((name, sensor, f"crop mask up to {y0}-{until}", f"RF, parcel {k}-fold",
                     cv(X2, crop, groups, rf), ngroups))
    s = summary(pixel_split(X, crop, rf, None, repeats))
    rows.append((name, sensor, "crop mask", "RF, pixel-random 75/25 (leaky)", s, ngroups))
    sel = np.isfinite(ct).ravel()
    yct = np.nan_to_num(ct).astype(np.int64).ravel()[sel]
    gct = groups[sel]
    nct = np.unique(gct).size
    rows.append((name, sensor, "crop type", f"RF, parcel {k}-fold", cv(X[sel], yct, gct, rf),
                 nct))
    rows.append((name, sensor, "crop type", f"LightGBM, parcel {k}-fold",
                 cv(X[sel], yct, gct, lgb), nct))
    s = summary(pixel_split(X[sel], yct, rf, None, repeats))
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
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=1))):
        s = summary(grouped_cv(X, crop, loc, params, names, repeats))
        rows.append(("crop mask", label, s, int(loc.max()), crop.size))
    counts = {c: int((ct == c).sum()) for c in np.unique(ct)}
    keep = (lc == 11) | (ct == 9120)
    keep &= np.array([counts[c] >= 20 for c in ct]) & (ct > 0)
    for label, params in (("RF 100/25/25", ClassifierParams()),
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=1))):
        s = summary(grouped_cv(X[keep], ct[keep], loc[keep], params, names, repeats))
        rows.append(("crop type", label, s, np.unique(loc[keep]).size, int(keep.sum())))
    return rows


def formosat_rows(repeats: int):
    """The upstream split (train / test polygons), then polygon 5-fold over both files."""
    def load(name):
        a = np.loadtxt(F2 / name, delimiter=",")
        s = a[:, 2:].reshape(a.shape[0], 149, 3)
        nir, r, g = s[..., 0], s[..., 1], s[..., 2]
        idx = index_features({"B03": g, "B04": r, "B08": nir})
        X = np.stack([g, r, nir, idx["NDVI"], idx["BRIGHTNESS"]], axis=2).reshape(a.shape[0], -1)
        return X.astype(np.float32), a[:, 0].astype(int) + 1, a[:, 1].astype(np.int64)

    names = [line.split(",")[1] for line in (F2 / "class_map.txt").read_text().splitlines()[1:]]
    Xtr, ytr, ptr = load("train_dataset.csv.gz")
    Xte, yte, pte = load("test_dataset.csv.gz")
    X, y = np.vstack([Xtr, Xte]), np.concatenate([ytr, yte])
    polys = np.unique(np.concatenate([ptr, pte]), return_inverse=True)[1] + 1
    rows = []
    for label, params in (("RF 100/25/25", ClassifierParams()),
                          ("RF 100 trees, min 2 samples", ClassifierParams(min_samples=2)),
                          ("LightGBM", ClassifierParams(method="lightgbm", n_jobs=1))):
        model = train_classifier(Xtr, ytr, params)
        idx, _ = model.predict(Xte)
        rep = accuracy_report(model.classes[idx], yte, labels=list(range(1, 14)), class_names=names)
        rows.append((label, "upstream split: 260 train / 260 test pixels, disjoint polygons",
                     summary([rep])))

        def fit_predict(a, b, c, params=params):
            m = train_classifier(a, b, params)
            i, _ = m.predict(c)
            return m.classes[i]

        cv = cross_validate(X, y, polys, fit_predict, k=5, repeats=repeats,
                            labels=list(range(1, 14)), class_names=names, group_kind="polygon")
        rows.append((label, f"polygon 5-fold over both files ({cv.n_groups} polygons, 520 px)",
                     summary(cv.reports)))
    return rows


def degrade(truth: np.ndarray, cell: int, flip: float, seed: int) -> np.ndarray:
    n = truth.shape[0] // cell
    coarse = truth.reshape(n, cell, n, cell).mean(axis=(1, 3)) >= 0.5
    wrong = np.random.default_rng(seed).random(coarse.shape) < flip
    return np.repeat(np.repeat(coarse ^ wrong, cell, 0), cell, 1).astype(np.uint8)


def nolabels_rows(ds, lc, season, repeats):
    """The map made from a degraded reference, scored on held-out 160 m blocks (4-fold by
    block: trained on the reference of the other blocks only)."""
    truth = (lc == 11)
    kd = KeyDateFeatures(season_dates(*season))
    K_ = feature_map(ds, kd).values
    X = K_.reshape(K_.shape[0], -1).T
    blocks = block_groups(truth.shape, 16).ravel()
    y_true = truth.ravel().astype(np.int64)
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
                stats = {"right": 0, "n": 0, "kept": 0, "cand": 0}

                def fit_predict(tr, _truth_tr, te, lab=lab, alpha=alpha, stats=stats, seed=seed):
                    idx = tr[lab[tr] != 255]  # the reference's labels, never the truth
                    yref = lab[idx].astype(np.int64)
                    keep = np.zeros(idx.size, bool)
                    for c in (0, 1):
                        sel = np.flatnonzero(yref == c)
                        k, _ = mahalanobis_trim(X[idx][sel], alpha)
                        keep[sel[k]] = True
                    pick = np.flatnonzero(keep)
                    pick = pick[sample_pixels(yref[pick], 40000, seed=seed)]
                    stats["right"] += int((yref[pick] == y_true[idx][pick]).sum())
                    stats["n"] += pick.size
                    stats["kept"] += pick.size
                    stats["cand"] += idx.size
                    model = train_classifier(X[idx][pick], yref[pick], ClassifierParams(n_jobs=1),
                                             kd.names)
                    i, _ = model.predict(X[te])
                    return model.classes[i]

                cv = cross_validate(np.arange(y_true.size), y_true, blocks, fit_predict, k=4,
                                    repeats=1, seed=seed, labels=[0, 1],
                                    group_kind="block of 16 px")
                res[variant].append(cv.reports[0].oa)
                purity = stats["right"] / max(stats["n"], 1)
                if variant == "as is":
                    res["purity as is"].append(purity)
                if variant == "eroded + trimmed":
                    res["purity trimmed"].append(purity)
                    res["kept"].append(stats["kept"] / max(stats["cand"], 1))
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
          "OA of the map against the true labels of held-out blocks (4-fold by 160 m block: "
          "each block mapped by a model trained on the reference of the other blocks only; "
          "pooled); purity = share of the training samples whose reference label is right "
          f"(mean ± sd, {args.repeats} seeds).\n")
    print("| cells flipped | reference OA | RF on reference as is | eroded | eroded + trimmed "
          "(Sen2Agri) | purity as is | purity trimmed | samples kept |")
    print("|---|---|---|---|---|---|---|---|")
    for flip, r in nolabels_rows(ds18, lc18, season18, args.repeats):
        print(f"| {flip:.0%} | {fmt(r['reference'])} | {fmt(r['as is'])} | {fmt(r['eroded'])} | "
              f"{fmt(r['eroded + trimmed'])} | {fmt(r['purity as is'])} | "
              f"{fmt(r['purity trimmed'])} | {r['kept'][0]:.0%} |")

    print("\n### Formosat-2, 13 classes (TempCNN example; validation by polygon)\n")
    print("| classifier | validation | OA | kappa | macro F1 | F1 per class |")
    print("|---|---|---|---|---|---|")
    for label, how, r in formosat_rows(args.repeats):
        macro = float(np.nanmean(r["f1"]))
        print(f"| {label} | {how} | {fmt(r['oa'])} | {fmt(r['kappa'])} | {macro:.3f} | "
              f"{f1_text(r)} |")

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
