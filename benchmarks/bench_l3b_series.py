"""Benchmark: the L3B season profile (weighted Whittaker smoother) of a full 20 m tile.

The input is a 5490 x 5490 tile with ``--dates`` (70) irregular acquisition dates between
1 March and 31 October (a season of Sentinel-2A/B and Landsat 8/9 clear and cloudy
dates), smoothed onto the 10-day grid of L3B (25 output dates) with the production
settings (``lam`` = 2000 on the daily support, order 2, weights 0 / 0.5 / 1). The
profiles are maize-like double logistics with per-pixel phase and amplitude, Gaussian
noise and about 40 % of the observations clouded (weight 0); a pool of such profiles is
made once and each block takes a different slice of it, so making the input costs almost
nothing next to the smoothing.

Measured in the same run:

* the compiled kernel (``whittaker_dataarray``: dask blocks of ``--block`` pixels over
  ``y`` / ``x``, the whole time axis in each, on ``--threads`` threads) on the whole tile:
  the layers the L3B product holds (smoothed values, distance to the nearest valid
  observation) are computed and reduced block by block (the COG writing is measured by
  the ingest and composite benchmarks);
* the numpy implementation this kernel replaced (``whittaker(..., implementation="numpy")``, the day
  loops over vectorised pixel batches) on ``--numpy-blocks`` blocks of the same tile, one
  thread, scaled to the tile; the two are compared on those blocks (flags, distances and
  valid-day counts equal, values within float tolerance).

Both CPU seconds (``time.process_time``) and wall seconds are printed: on a shared
machine the wall time depends on the other processes, the CPU time much less.

Run with::

    .venv/bin/python benchmarks/bench_l3b_series.py [--size 5490] [--dates 70] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

SEASON_START, SEASON_END = np.datetime64("2018-03-01"), np.datetime64("2018-10-31")


def make_dates(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct acquisition days between SEASON_START and SEASON_END."""
    span = int((SEASON_END - SEASON_START).astype(int)) + 1
    days = np.sort(np.random.default_rng(seed).choice(span, size=n, replace=False))
    return SEASON_START + days


def make_pool(dates: np.ndarray, npix: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(values, weights), float32 ``(time, npix)``: noisy cloud-gapped maize-like LAI profiles."""
    rng = np.random.default_rng(seed)
    t = (dates - SEASON_START).astype(float)[:, None]
    up = rng.uniform(60, 120, npix)
    down = up + rng.uniform(70, 130, npix)
    amp = rng.uniform(1.5, 6.0, npix)
    lai = 0.3 + amp * (1 / (1 + np.exp(-(t - up) / 8)) - 1 / (1 + np.exp(-(t - down) / 10)))
    lai += rng.normal(0, 0.25, lai.shape)
    w = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), size=lai.shape, p=[0.4, 0.1, 0.5])
    return lai.astype(np.float32), w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5490, help="tile side in pixels (5490 = 20 m)")
    ap.add_argument("--dates", type=int, default=70, help="acquisition dates in the season")
    ap.add_argument("--block", type=int, default=512, help="dask block side in pixels")
    ap.add_argument("--threads", type=int, default=2, help="dask threads for the compiled kernel")
    ap.add_argument("--numpy-blocks", type=int, default=2,
                    help="blocks given to the numpy implementation (scaled to the tile)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    import dask
    import dask.array as da
    import xarray as xr

    from agriseries.biophysical import timeseries as ts

    dates = make_dates(args.dates)
    out = ts.regular_dates(SEASON_START, SEASON_END, 10)
    bs = args.block
    pool_v, pool_w = make_pool(dates, 4 * bs * bs)
    npool = pool_v.shape[1]

    def block_input(block_id, which):
        iy, ix = block_id[1], block_id[2]
        start = ((iy * 7919 + ix * 104729) * bs) % (npool - bs * bs + 1)
        src = pool_v if which == "v" else pool_w
        return src[:, start:start + bs * bs].reshape(len(dates), bs, bs)

    chunks = ((len(dates),), da.core.normalize_chunks(bs, (args.size,))[0],
              da.core.normalize_chunks(bs, (args.size,))[0])

    def gen(which):
        def f(block_info=None):
            loc = block_info[None]["chunk-location"]
            shape = block_info[None]["chunk-shape"]
            return np.ascontiguousarray(block_input(loc, which)[:, :shape[1], :shape[2]])
        return da.map_blocks(f, dtype=np.float32, chunks=chunks, name=f"input-{which}")

    coords = {"time": dates.astype("datetime64[ns]")}
    vda = xr.DataArray(gen("v"), dims=("time", "y", "x"), coords=coords)
    wda = xr.DataArray(gen("w"), dims=("time", "y", "x"), coords=coords)

    # compile (or load the on-disk cache) outside the timings
    t0 = time.perf_counter()
    ts.whittaker(pool_v[:, :64], pool_w[:, :64], dates, out)
    t_compile = time.perf_counter() - t0

    smooth = ts.whittaker_dataarray(vda, wda, out, lam=ts.DEFAULT_LAMBDA)
    total = da.stack([da.nansum(smooth.data), da.nansum(smooth["obs_distance"].data)])
    c0, t0 = time.process_time(), time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        sums = total.compute()
    t_tile, c_tile = time.perf_counter() - t0, time.process_time() - c0

    # the numpy implementation on a few blocks of the same tile, one thread
    nb = max(1, args.numpy_blocks)
    c_np = c_nb = t_np = 0.0
    same = {"flags": True, "distance": True, "n_valid": True}
    max_diff = 0.0
    for b in range(nb):
        v, w = block_input((0, b, b), "v"), block_input((0, b, b), "w")
        c0, t0 = time.process_time(), time.perf_counter()
        zr, qr = ts.whittaker(v, w, dates, out, implementation="numpy")
        t_np += time.perf_counter() - t0
        c_np += time.process_time() - c0
        c0 = time.process_time()
        z, q = ts.whittaker(v, w, dates, out)
        c_nb += time.process_time() - c0
        same["flags"] &= bool(np.array_equal(q.flags, qr.flags))
        same["distance"] &= bool(np.array_equal(q.distance, qr.distance, equal_nan=True))
        same["n_valid"] &= bool(np.array_equal(q.n_valid, qr.n_valid))
        max_diff = max(max_diff, float(np.nanmax(np.abs(z - zr))))
    scale = args.size * args.size / (nb * bs * bs)

    figures = {
        "tile": [args.size, args.size], "megapixels": args.size ** 2 / 1e6, "dates": args.dates,
        "out_dates": int(out.size), "support_days": int((SEASON_END - SEASON_START).astype(int)) + 1,
        "block": bs, "threads": args.threads, "load_average_1min": round(os.getloadavg()[0], 1),
        "compile_or_cache_load_s": round(t_compile, 2),
        "compiled_tile_wall_s": round(t_tile, 1), "compiled_tile_cpu_s": round(c_tile, 1),
        "compiled_block_cpu_s": round(c_nb / nb, 3),
        "numpy_blocks": nb, "numpy_block_cpu_s": round(c_np / nb, 3),
        "numpy_tile_cpu_s_scaled": round(c_np * scale, 1),
        "numpy_tile_wall_s_scaled_one_thread": round(t_np * scale, 1),
        "speedup_cpu_vs_numpy": round(c_np / max(c_nb, 1e-9), 2),
        "compiled_equals_numpy": {**same, "max_abs_value_diff": max_diff},
        "checksum": [float(s) for s in sums],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"L3B season profile (Whittaker, lam {ts.DEFAULT_LAMBDA:g}, daily support), "
          f"{args.dates} dates -> {out.size} output dates")
    print(f"  tile                {args.size} x {args.size} = {args.size ** 2 / 1e6:.1f} Mpx, "
          f"blocks {bs} px, {args.threads} threads, load average {figures['load_average_1min']}")
    print(f"  compiled, tile      {t_tile:6.1f} s wall  {c_tile:6.1f} s CPU  "
          f"(compile/cache load {t_compile:.1f} s)")
    print(f"  numpy, tile         {t_np * scale:6.1f} s wall  {c_np * scale:6.1f} s CPU  "
          f"(one thread, measured on {nb} blocks, scaled x{scale:.0f})")
    print(f"  speed-up (CPU)      {c_np / max(c_nb, 1e-9):6.2f} x  (same blocks, same run)")
    print(f"  compiled == numpy   flags {same['flags']}, distance {same['distance']}, "
          f"n_valid {same['n_valid']}, max |value difference| {max_diff:.1e}")
    print(f"  peak RSS            {figures['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
