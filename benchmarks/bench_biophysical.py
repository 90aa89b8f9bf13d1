"""Benchmark: the five SNAP biophysical networks with flags on a full 20 m tile, one core.

The input is a 5490 x 5490 x 11 float32 stack (a Sentinel-2 tile at 20 m: B03, B04, B05,
B06, B07, B8A, B11, B12 and the three angle cosines) made of the 41,472 real input rows of
SNAP's ``3_0/S2A/LAI_TestCases`` (tests/data/snap_biophysical), shuffled and repeated: the
reflectances and geometries are real, the size is a full tile. About two thirds of these
rows lie outside the networks' definition domain; the kernel evaluates every network on
every pixel anyway (SNAP's flags need the output), so the cost does not depend on it.

Measured, on one core (the process is pinned to one CPU; numba, OpenMP and BLAS limited to
one thread):

* ``evaluate_model`` (numba, one pass over the pixels for LAI, FAPAR, FCOVER, LAI_Cab,
  LAI_Cw, values and flags), on the whole tile;
* ``evaluate_numpy`` (the straightforward whole-array numpy reference, one call per
  variable) on a slice of the tile (``--numpy-rows``, 549 rows = a tenth by default: the
  whole tile would need about 20 GB of float64 temporaries), scaled to the tile. The two
  are compared on that slice (flags equal, values within 1e-6).

Run with::

    .venv/bin/python benchmarks/bench_biophysical.py [--size 5490] [--numpy-rows 549] [--json]
"""

from __future__ import annotations

import os

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES = HERE.parent / "tests/data/snap_biophysical/3_0/S2A/LAI/LAI_TestCases"


def make_tile(size: int, seed: int = 0) -> np.ndarray:
    """(11, size, size) float32 stack of real TestCases input rows, shuffled and repeated."""
    rows = np.loadtxt(CASES, delimiter=",")[:, :-1].astype(np.float32)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    tile = np.empty((rows.shape[1], size, size), np.float32)
    for i in range(rows.shape[1]):
        tile[i] = np.resize(rows[:, i], size * size).reshape(size, size)
    return tile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5490, help="tile side in pixels (5490 = 20 m)")
    ap.add_argument("--numpy-rows", type=int, default=549,
                    help="rows of the tile given to the numpy reference (scaled to the tile)")
    ap.add_argument("--model", default="3_0/S2A")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of the numba kernel")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import numba

    from agriseries.biophysical import networks as nn

    nets = nn.load_model(args.model)
    t0 = time.perf_counter()
    tile = make_tile(args.size)
    t_make = time.perf_counter() - t0
    npx = args.size * args.size

    t0 = time.perf_counter()
    nn.evaluate_model(nets, np.ascontiguousarray(tile[:, :1, :64]))  # compile (or load cache)
    t_compile = time.perf_counter() - t0

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        values, flags = nn.evaluate_model(nets, tile)
        times.append(time.perf_counter() - t0)
    t_numba = min(times)

    rows = min(args.numpy_rows, args.size)
    part = np.ascontiguousarray(tile[:, :rows])
    t0 = time.perf_counter()
    ref = [nn.evaluate_numpy(net, part) for net in nets.values()]
    t_numpy_part = time.perf_counter() - t0
    t_numpy = t_numpy_part * args.size / rows
    flags_equal = all(np.array_equal(f, flags[j, :rows]) for j, (_, f) in enumerate(ref))
    max_rel = max(float(np.nanmax(np.abs(v - values[j, :rows]) / np.maximum(1.0, np.abs(v))))
                  for j, (v, _) in enumerate(ref))

    figures = {
        "model": args.model, "variables": list(nets), "tile": [args.size, args.size],
        "megapixels": npx / 1e6, "numba_threads": numba.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "compile_or_cache_load_s": round(t_compile, 2),
        "numba_s": round(t_numba, 2), "numba_runs_s": [round(t, 2) for t in times],
        "numba_mpx_per_s_per_core": round(npx / t_numba / 1e6, 2),
        "numpy_rows": rows, "numpy_slice_s": round(t_numpy_part, 2),
        "numpy_tile_s_scaled": round(t_numpy, 1),
        "numpy_mpx_per_s_per_core": round(npx / t_numpy / 1e6, 3),
        "speedup_vs_numpy": round(t_numpy / t_numba, 1),
        "numba_equals_numpy": {"flags_equal": flags_equal, "max_rel_value_diff": max_rel},
        "flag_counts_LAI": {int(k): int(c) for k, c in enumerate(np.bincount(flags[0].ravel()))
                            if c},
        "input_synthesis_s": round(t_make, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"biophysical networks {args.model} ({', '.join(nets)}), values + flags, one core")
    print(f"  tile                {args.size} x {args.size} = {npx / 1e6:.1f} Mpx (20 m S2 tile)")
    print(f"  numba kernel        {t_numba:6.2f} s   {npx / t_numba / 1e6:6.2f} Mpx/s/core"
          f"   (runs {', '.join(f'{t:.2f}' for t in times)} s; compile/cache load "
          f"{t_compile:.2f} s)")
    print(f"  numpy reference     {t_numpy:6.1f} s   {npx / t_numpy / 1e6:6.3f} Mpx/s/core"
          f"   (measured on {rows} rows: {t_numpy_part:.2f} s, scaled x{args.size / rows:.1f})")
    print(f"  speed-up            {t_numpy / t_numba:6.1f} x")
    print(f"  numba == numpy      flags equal: {flags_equal}, max relative value difference "
          f"{max_rel:.1e}")
    print(f"  peak RSS            {figures['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
