"""Accuracy of the L2A cloud / shadow masks (mini-MAJA) against Sen2Cor's SCL on a real series.

Run ``python docs/l2a_masks_worldcereal.py [--data tests/data/l2a_masks]``; it prints Markdown
tables (the README's L2A mask section quotes them).

Data: the WorldCereal patch 00002806639B424A (Flanders, tile 31UDS, 640 m x 640 m), all 118
Sentinel-2 L2A dates 2017-08-04 .. 2018-11-27 on its 20 m grid (32 x 32 px;
``tests/data/l2a_masks/worldcereal_20m.npz``, made by ``make_small.py`` there). The 20 m
grid plays the role of the coarse grid; the inputs are Sen2Cor's surface reflectances (no
cirrus band). The parameters are the defaults of :class:`agriseries.l2a.cloudmask.CloudParams`
except the lengths in pixels, kept in pixels (correlation window 7 x 7 = 140 m, dilation
1 px = 20 m: the patch is only 32 px wide).

Reference: SCL classes 8, 9, 10 (cloud medium / high probability, thin cirrus) = cloud,
class 3 = cloud shadow, class 0 excluded. SCL is itself an automatic single-date mask (with
its own errors: e.g. 2018-09-11 is 97 % "cloud" in SCL over a visibly clear surface), so the
figures measure agreement with Sen2Cor, not absolute accuracy.

Variants compared (every date is scored, F1 pooled over all pixels of all dates):

* **mono**: :func:`detect` without state on every date (init mode, the single-date tests);
* **multi**: the series processed forward, :func:`update_state` after each date;
* **multi + backward**: MAJA's backward initialisation: dates 2..9 processed in reverse
  order first (the state then knows these dates), then the forward run over all dates.

"Edge-tolerant" scores ignore the pixels within 1 px of a reference cloud (or shadow)
boundary (docs/validation.md, "Cloud masks": scores with and without a 1-2 pixel buffer).

A second table uses eo-learn's Slovenian patch (``tests/data/l2a_masks/slovenia_toa.npz``):
5 Sentinel-2 L1C **TOA** dates of 2015 (101 x 100 px at 10 m, with the cirrus band B10),
against the s2cloudless cloud mask of the same dates.

``--figure PATH`` also writes a picture of the dates where the masks and SCL disagree most
(true colour, SCL clouds / shadows, multi-temporal clouds / shadows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from agriseries.l2a.cloudmask import CloudParams, CoarseScene, detect, update_state

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "l2a_masks"
BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")


def load_series(path: Path) -> tuple[list[CoarseScene], np.ndarray]:
    """The WorldCereal scenes (reflectance = DN / 10000, 0 = no data) and their SCL."""
    with np.load(path) as d:
        data = {k: d[k] for k in d.files}
    scenes = []
    for i, date in enumerate(data["dates"]):
        bands = {}
        for name in BANDS:
            dn = data[name][i].astype(np.float32)
            bands[name] = np.where(dn == 0, np.nan, dn / 10000).astype(np.float32)
        scenes.append(CoarseScene(date=dt.date.fromisoformat(str(date)), bands=bands,
                                  sun_zenith=float(data["sun_zenith"][i]),
                                  sun_azimuth=float(data["sun_azimuth"][i]),
                                  view_zenith=float(data["view_zenith"][i]),
                                  view_azimuth=float(data["view_azimuth"][i]),
                                  pixel_size=float(data["pixel_size"])))
    return scenes, data["scl"]


def run(scenes, mode: str, params: CloudParams, backward: int = 8) -> list:
    """The mask results of every date for one variant (``mono``, ``multi``, ``backward``)."""
    if mode == "mono":
        return [detect(s, None, params) for s in scenes]
    state = None
    if mode == "backward":
        for s in reversed(scenes[1:backward + 1]):
            state = update_state(state, s, detect(s, state, params), params)
    out = []
    for s in scenes:
        res = detect(s, state, params)
        state = update_state(state, s, res, params)
        out.append(res)
    return out


def scores(pred: np.ndarray, ref: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """Precision (UA), recall (PA) and F1 of a binary mask over the ``keep`` pixels."""
    tp = int((pred & ref & keep).sum())
    fp = int((pred & ~ref & keep).sum())
    fn = int((~pred & ref & keep).sum())
    ua = tp / (tp + fp) if tp + fp else float("nan")
    pa = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"UA": ua, "PA": pa, "F1": f1, "n_ref": tp + fn}


def evaluate(results, scl: np.ndarray, tolerant: bool = False) -> dict[str, dict[str, float]]:
    """Pooled cloud and shadow scores of a list of results against the SCL series."""
    pred_c = np.stack([r.cloud | r.cirrus for r in results])
    pred_s = np.stack([r.shadow for r in results])
    ref_c = np.isin(scl, (8, 9, 10))
    ref_s = scl == 3
    keep = (scl != 0) & np.stack([r.valid for r in results])
    keep_c = keep_s = keep
    if tolerant:
        st = np.zeros((1, 3, 3), bool)
        st[0] = True

        def edge(m):
            return ndimage.binary_dilation(m, st) & ~ndimage.binary_erosion(m, st, border_value=1)
        keep_c = keep & ~edge(ref_c)
        keep_s = keep & ~edge(ref_s)
    return {"cloud": scores(pred_c, ref_c, keep_c), "shadow": scores(pred_s, ref_s, keep_s)}


def slovenia(path: Path, params: CloudParams) -> None:
    """Print the Slovenian TOA table (mono vs multi against s2cloudless)."""
    with np.load(path) as d:
        data = {k: d[k] for k in d.files}
    scenes = []
    for i, date in enumerate(data["dates"]):
        bands = {k: (data[k][i] / 10000).astype(np.float32)
                 for k in ("coastal", "blue", "green", "red", "nir", "cirrus", "swir16", "swir22")}
        scenes.append(CoarseScene(date=dt.date.fromisoformat(str(date)), bands=bands,
                                  sun_zenith=float(data["sun_zenith"][i]),
                                  sun_azimuth=float(data["sun_azimuth"][i]),
                                  pixel_size=float(data["pixel_size"]), altitude=data["altitude"]))
    clm = data["clm"].astype(bool)
    mono, multi = run(scenes, "mono", params), run(scenes, "multi", params)
    print("eo-learn Slovenia patch, 5 S2 L1C TOA dates (2015), 101 x 100 px at 10 m, "
          "reference s2cloudless CLM\n")
    print("| date | s2cloudless cloud % | mono cloud % | multi cloud % | blue TOA median |")
    print("|---|---|---|---|---|")
    for i, s in enumerate(scenes):
        print(f"| {s.date} | {100 * clm[i].mean():.1f} | {100 * mono[i].cloud.mean():.1f} "
              f"| {100 * multi[i].cloud.mean():.1f} | {np.median(s.bands['blue']):.3f} |")
    keep = np.ones_like(clm)
    f_mono = scores(np.stack([r.cloud for r in mono]), clm, keep)["F1"]
    f_multi = scores(np.stack([r.cloud for r in multi]), clm, keep)["F1"]
    print(f"\nCloud F1 over the 5 dates: mono {f_mono:.3f}, multi {f_multi:.3f}\n")


def figure(path: Path, scenes, scl, results, n: int = 6) -> None:
    """True colour, SCL and multi-temporal masks of the ``n`` most disagreeing dates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.isin(scl, (8, 9, 10))
    disagree = [float((r.cloud != ref[i]).mean()) for i, r in enumerate(results)]
    pick = sorted(np.argsort(disagree)[::-1][:n])
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 6))

    def masks(cloud, shadow):
        img = np.full(cloud.shape + (3,), 0.85)
        img[shadow] = (0.2, 0.2, 0.8)
        img[cloud] = (1.0, 0.6, 0.0)
        return img

    for col, i in enumerate(pick):
        b = scenes[i].bands
        rgb = np.clip(np.stack([b["red"], b["green"], b["blue"]], -1) / 0.25, 0, 1)
        axes[0, col].imshow(np.nan_to_num(rgb))
        axes[0, col].set_title(str(scenes[i].date), fontsize=8)
        axes[1, col].imshow(masks(ref[i], scl[i] == 3))
        axes[2, col].imshow(masks(results[i].cloud, results[i].shadow))
        for row in range(3):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_ylabel("true colour", fontsize=8)
    axes[1, 0].set_ylabel("Sen2Cor SCL", fontsize=8)
    axes[2, 0].set_ylabel("multi-temporal", fontsize=8)
    fig.suptitle("cloud (orange) and shadow (blue): dates where SCL and the mask disagree most",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backward", type=int, default=8, help="dates of the backward warm-up")
    ap.add_argument("--figure", type=Path, default=None, help="write a PNG of the disagreements")
    args = ap.parse_args(argv)
    scenes, scl = load_series(args.data / "worldcereal_20m.npz")
    params = CloudParams()
    variants = {"mono": "mono-temporal only", "multi": "multi-temporal",
                "backward": f"multi-temporal + backward init ({args.backward} dates)"}
    results, timing = {}, {}
    for key in variants:
        t0 = time.perf_counter()
        results[key] = run(scenes, key, params, args.backward)
        timing[key] = (time.perf_counter() - t0) / len(scenes)
    print(f"WorldCereal 00002806639B424A, {len(scenes)} S2 L2A dates "
          f"{scenes[0].date}..{scenes[-1].date}, 32 x 32 px at 20 m, reference Sen2Cor SCL\n")
    for tolerant in (False, True):
        title = "edge-tolerant (1 px around reference edges ignored)" if tolerant else "all pixels"
        print(f"**{title}**\n")
        print("| variant | cloud UA | cloud PA | cloud F1 | shadow UA | shadow PA | shadow F1 |")
        print("|---|---|---|---|---|---|---|")
        for key, name in variants.items():
            sc = evaluate(results[key], scl, tolerant)
            c, s = sc["cloud"], sc["shadow"]
            print(f"| {name} | {c['UA']:.3f} | {c['PA']:.3f} | {c['F1']:.3f} | {s['UA']:.3f} "
                  f"| {s['PA']:.3f} | {s['F1']:.3f} |")
        print()
    ref = evaluate(results["mono"], scl)
    print(f"Reference pixels: {ref['cloud']['n_ref']} cloud, {ref['shadow']['n_ref']} shadow "
          f"(of {scl.size}). Time per date: " + ", ".join(f"{k} {v * 1000:.1f} ms"
                                                          for k, v in timing.items()) + "\n")
    slovenia(args.data / "slovenia_toa.npz", params)
    if args.figure:
        figure(args.figure, scenes, scl, results["multi"])
        print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
