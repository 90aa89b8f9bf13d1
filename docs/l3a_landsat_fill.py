"""Figure and figures for the README: what Landsat 8 adds to a Sentinel-2 synthesis.

Ingests the whole WorldCereal Flanders series ($AGRISERIES_RAW_DATA/worldcereal, Aug 2017 - Nov
2018: 118 Sentinel-2 dates with SCL, 26 Landsat 8 dates) into a temporary store, scans
17-day syntheses (H = 8 days, centre every 5 days) and monthly ones (H = 23), and for each
window compares Sentinel-2 alone with Sentinel-2 + Landsat 8: pixels left without a clear
observation by Sentinel-2 that Landsat fills, and the change of the pixels Sentinel-2 saw
clear. Writes docs/img/l3a_landsat_fill.png (quicklooks and flags side by side for the
window where Landsat fills most) and prints a Markdown table.

    .venv/bin/python docs/l3a_landsat_fill.py
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from agriseries.composite import WaspParams, composite
from agriseries.io.ingest import ingest
from agriseries.io.store import ProductStore

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
SRC = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "worldcereal/patches/00002806639B424A"
OUT = Path(__file__).parent / "img" / "l3a_landsat_fill.png"


def _read(store, pid, key):
    d = store.product_dir(pid)
    with rasterio.open(d / f"{d.name}_{key}.tif") as src:
        return src.read(1).astype(np.float64)


def _pair(store, centre, half):
    period = f"{centre}/{centre}"
    params = WaspParams(half_period=half)
    try:
        s2 = composite(store, "T31UDS", period, centre=centre, sensors=("S2",), params=params,
                       overwrite=True)
    except Exception:
        return None
    both = composite(store, "T31UDS", period, centre=centre, params=params, overwrite=True)
    f1, f2 = _read(store, s2.product, "flag_10m"), _read(store, both.product, "flag_10m")
    r1 = {b: _read(store, s2.product, b) / 1e4 for b in ("B04", "B03", "B02", "B08")}
    r2 = {b: _read(store, both.product, b) / 1e4 for b in ("B04", "B03", "B02", "B08")}
    clear = (f1 == 4) & (f2 == 4)
    change = {b: float(np.median(np.abs(r2[b] - r1[b])[clear])) if clear.any() else np.nan
              for b in ("B04", "B08")}
    n_l8 = sum(i["sensor"] == "L8" for i in both.inputs)
    return dict(centre=centre, half=half, left=int((f1 != 4).sum()),
                filled=int(((f1 != 4) & (f2 == 4)).sum()), n_s2=len(s2.inputs), n_l8=n_l8,
                change=change, f1=f1, f2=f2, r1=r1, r2=r2)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="l3a-fig-"))
    store = ProductStore(tmp)
    ingest(sorted(SRC.glob("S2_L2A_*m_*.nc")) + sorted(SRC.glob("L8_SR_*.nc")), store)
    rows = []
    for half, step in ((8, 5), (23, 30)):
        c = dt.date(2017, 8, 16)
        while c < dt.date(2018, 11, 20):
            r = _pair(store, c, half)
            if r is not None:
                rows.append(r)
            c += dt.timedelta(days=step)
    print("| H (days) | windows | windows S2 leaves unclear | pixels left by S2 | filled by L8 |"
          " median change B04 / B08 where S2 was clear |")
    print("|---|---|---|---|---|---|")
    for half in (8, 23):
        sel = [r for r in rows if r["half"] == half]
        cloudy = [r for r in sel if r["left"]]
        med4 = np.nanmedian([r["change"]["B04"] for r in sel if r["n_l8"]])
        med8 = np.nanmedian([r["change"]["B08"] for r in sel if r["n_l8"]])
        print(f"| {half} | {len(sel)} | {len(cloudy)} | {sum(r['left'] for r in sel)} | "
              f"{sum(r['filled'] for r in sel)} | {med4:.4f} / {med8:.4f} |")
    best = max(rows, key=lambda r: r["filled"])
    print(f"\nfigure: centre {best['centre']} H={best['half']}: S2 left {best['left']} px, "
          f"L8 filled {best['filled']} ({best['n_s2']} S2 dates, {best['n_l8']} L8)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agriseries.composite.processor import quicklook_rgb

    fig, ax = plt.subplots(1, 4, figsize=(13, 3.6))
    for k, (r, f, title) in enumerate(((best["r1"], best["f1"], "Sentinel-2 only"),
                                       (best["r2"], best["f2"], "Sentinel-2 + Landsat 8"))):
        rgb = quicklook_rgb(r["B04"], r["B03"], r["B02"], vmax=0.25)
        ax[2 * k].imshow(np.moveaxis(rgb, 0, -1))
        ax[2 * k].set_title(f"{title}: true colour")
        im = ax[2 * k + 1].imshow(f, vmin=0, vmax=4, cmap="viridis")
        ax[2 * k + 1].set_title(f"{title}: flag")
    fig.colorbar(im, ax=ax[3], ticks=[0, 1, 2, 3, 4], fraction=0.046,
                 label="0 nodata 1 cloud 2 snow 3 water 4 land")
    for a in ax:
        a.set_axis_off()
    fig.suptitle(f"WASP synthesis centred on {best['centre']} (H = {best['half']} d), "
                 "WorldCereal patch, Flanders (640 m)")
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
