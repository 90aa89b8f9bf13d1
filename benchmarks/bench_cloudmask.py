"""Benchmark: the multi-temporal cloud masks of one date on a full tile's coarse grid.

Two real WorldCereal Sentinel-2 L2A dates (tests/data/l2a_masks/worldcereal_20m.npz,
2018-08-07 and 2018-08-14, 32 x 32 px) are tiled 15 x 15 into a 480 x 480 grid at 240 m
(a full Sentinel-2 tile at 240 m is 458 x 458). The first date builds the tile state; the
second is timed through ``detect`` (nominal mode: every test against the composite) and
``update_state``, the work of one date in the L2A processor.

Baselines measured in the same run, on the same grid:

* **init**: the same date without a state (mono-temporal tests, shadows against the
  scene's median, dilation): the cost of the single-date part;
* **smooth**: one 7 x 7 ``scipy.ndimage.uniform_filter`` of each of the 6 bands, the kind
  of local-moment pass the correlation test makes a few times: a floor for any
  texture-based test on this grid.

It prints the seconds (best of ``--repeat``), the ratios nominal / init and nominal /
smooth, and whether the date stays under the 5 s target the processor was designed for.

Run with::

    .venv/bin/python benchmarks/bench_cloudmask.py [--tiles 15] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from agriseries.l2a.cloudmask import CloudParams, CoarseScene, detect, update_state

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "l2a_masks" / "worldcereal_20m.npz"
BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
DATES = ("2018-08-07", "2018-08-14")
TARGET_S = 5.0


def scene(data: dict, date: str, tiles: int) -> CoarseScene:
    """One date of the WorldCereal arrays as a coarse scene, tiled ``tiles x tiles``."""
    i = list(data["dates"]).index(date)
    bands = {}
    for name in BANDS:
        dn = data[name][i].astype(np.float32)
        refl = np.where(dn == 0, np.nan, dn / 10000).astype(np.float32)
        bands[name] = np.tile(refl, (tiles, tiles))
    return CoarseScene(date=dt.date.fromisoformat(date), bands=bands,
                       sun_zenith=float(data["sun_zenith"][i]), sun_azimuth=float(data["sun_azimuth"][i]),
                       view_zenith=float(data["view_zenith"][i]),
                       view_azimuth=float(data["view_azimuth"][i]), pixel_size=240.0)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=15, help="repetitions of the 32 px patch per side (15: 480 px)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each measure; the best is kept")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    with np.load(DATA) as d:
        data = {k: d[k] for k in d.files}
    params = CloudParams()
    first, second = (scene(data, date, args.tiles) for date in DATES)
    state = update_state(None, first, detect(first, None, params), params)
    res = detect(second, state, params)  # warm-up (and the check that the nominal mode runs)
    assert res.mode == "nominal", res.mode

    def nominal():
        r = detect(second, state, params)
        update_state(state, second, r, params)

    def init():
        detect(second, None, params)

    def smooth():
        for b in second.bands.values():
            ndimage.uniform_filter(np.nan_to_num(b), size=7)

    t_nom, t_init, t_smooth = (best(f, args.repeat) for f in (nominal, init, smooth))
    shape = second.bands["blue"].shape
    out = {"grid": f"{shape[0]} x {shape[1]} at 240 m", "nominal_s": round(t_nom, 3),
           "init_s": round(t_init, 3), "smooth_s": round(t_smooth, 4),
           "ratio_nominal_init": round(t_nom / t_init, 2), "ratio_nominal_smooth": round(t_nom / t_smooth, 1),
           "target_s": TARGET_S, "under_target": t_nom < TARGET_S}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"grid {out['grid']}, best of {args.repeat}")
        print(f"  baseline smooth (6 bands, 7 x 7 uniform filter): {t_smooth:8.4f} s")
        print(f"  baseline init (mono-temporal date):              {t_init:8.3f} s")
        print(f"  nominal date (detect + update_state):            {t_nom:8.3f} s")
        print(f"  ratios nominal / init {out['ratio_nominal_init']}, nominal / smooth "
              f"{out['ratio_nominal_smooth']}; target {TARGET_S} s: "
              f"{'met' if out['under_target'] else 'NOT met'}")
    return out


if __name__ == "__main__":
    main()
