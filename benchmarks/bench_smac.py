"""Benchmark: SMAC atmospheric correction of one band, one core, scaled to a 10 m tile.

The input is a ``size x size`` float32 TOA reflectance band (5490 x 5490 by default, a
quarter of a 10980 x 10980 10 m tile) made of the real Sentinel-2 B04 pixels of
tests/data/smac, tiled. The terms are computed on a 23 x 23 node grid (the 5 km
Sentinel-2 angle grid) with varying angles and AOT. Measured on one core (the process is
pinned to one CPU; numba, OpenMP and BLAS limited to one thread), wall-clock seconds:

* ``smac_terms`` on the 23 x 23 grid;
* ``apply_inverse_on_grid``: bilinear interpolation of the terms and the correction in one
  compiled pass;
* ``interpolate_terms`` to the full band (float32) + ``apply_inverse`` (numpy), the
  two-step alternative.

The per-band figures are scaled by ``(10980 / size) ** 2`` to a full 10 m tile, and by
13 bands to a whole tile (an upper bound: the 20 m and 60 m bands have 4 and 36 times fewer
pixels).

Run with::

    .venv/bin/python benchmarks/bench_smac.py [--size 5490] [--repeat 3] [--json]
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests/data/smac"


def make_band(size: int) -> np.ndarray:
    """A size x size float32 band of real B04 TOA reflectances (tests/data/smac), tiled."""
    parts = []
    for window in ("angles", "dark"):
        with rasterio.open(DATA / window / "ref_input_S2_B04.tif") as src:
            parts.append(src.read(1))
    block = np.hstack(parts).astype(np.float32) / np.float32(1e4)
    reps = (-(-size // block.shape[0]), -(-size // block.shape[1]))
    return np.ascontiguousarray(np.tile(block, reps)[:size, :size])


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5490, help="band side in pixels")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (the best is kept)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    from agriseries.l2a import smac

    band = make_band(args.size)
    k = np.arange(23.0)
    sz = 38.0 + 0.2 * k[:, None] + 0.05 * k[None, :]
    sa = 150.0 + 0.3 * k[None, :] + 0.1 * k[:, None]
    vz = 1.0 + 0.45 * k[None, :] + 0.02 * k[:, None]
    va = 105.0 + 0.05 * k[:, None] + 0.0 * k[None, :]
    aot = 0.1 + 0.004 * k[:, None] + 0.002 * k[None, :]
    coefs = smac.coefficients_for("S2A", "B04")
    pixel = 10.0 * 10980 / args.size  # the band spans a whole tile
    rows = smac.grid_coordinates(args.size, pixel, 5000.0)
    cols = smac.grid_coordinates(args.size, pixel, 5000.0)

    terms = smac.smac_terms(coefs, sz, sa, vz, va, pressure=1013.25, aot550=aot, uo3=0.3,
                            uh2o=1.5)
    smac.apply_inverse_on_grid(band[:4, :4], terms, rows[:4], cols[:4])  # compile / load cache
    smac.interpolate_terms(terms, rows[:4], cols[:4], dtype=np.float32)

    t_terms = _best(lambda: smac.smac_terms(coefs, sz, sa, vz, va, pressure=1013.25,
                                            aot550=aot, uo3=0.3, uh2o=1.5), args.repeat)
    t_grid = _best(lambda: smac.apply_inverse_on_grid(band, terms, rows, cols), args.repeat)
    full = {}

    def interp():
        full["terms"] = smac.interpolate_terms(terms, rows, cols, dtype=np.float32)

    t_interp = _best(interp, args.repeat)
    t_apply = _best(lambda: smac.apply_inverse(band, full["terms"]), args.repeat)
    diff = np.nanmax(np.abs(smac.apply_inverse_on_grid(band, terms, rows, cols)
                            - smac.apply_inverse(band, full["terms"])))

    scale = (10980 / args.size) ** 2
    figures = {
        "size": args.size,
        "machine": platform.processor() or platform.machine(),
        "smac_terms_23x23_s": t_terms,
        "apply_inverse_on_grid_s": t_grid,
        "interpolate_terms_s": t_interp,
        "apply_inverse_s": t_apply,
        "apply_inverse_on_grid_10980_band_s": t_grid * scale,
        "interpolate_plus_apply_10980_band_s": (t_interp + t_apply) * scale,
        "apply_inverse_on_grid_13_bands_upper_bound_s": t_grid * scale * 13,
        "max_abs_difference_of_the_two_paths": float(diff),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"band {args.size} x {args.size} float32, one core")
    print(f"  smac_terms on 23 x 23 nodes        {t_terms * 1e3:8.2f} ms")
    print(f"  apply_inverse_on_grid              {t_grid:8.3f} s  "
          f"-> {t_grid * scale:.2f} s per 10980 x 10980 band, "
          f"{t_grid * scale * 13:.1f} s for 13 bands at 10 m (upper bound)")
    print(f"  interpolate_terms + apply_inverse  {t_interp + t_apply:8.3f} s  "
          f"-> {(t_interp + t_apply) * scale:.2f} s per 10980 x 10980 band")
    print(f"  the two paths differ by at most {diff:.2e}")


if __name__ == "__main__":
    main()
