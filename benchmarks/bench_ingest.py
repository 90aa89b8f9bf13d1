"""Benchmark: one full-tile 10 m band through the agriseries read -> encode -> COG path.

A 10980 x 10980 uint16 GeoTIFF (tiled, DEFLATE) is synthesised on the T29UNU tile grid by
repeating a real 60 m Sentinel-2 L2A chip (tests/data/safe, band B04) -- the values and their
texture are real, the size is a full tile. Then, each in its own process (so that peak memory
is measured separately):

* baseline: GDAL's COG driver translates the file (``rasterio.shutil.copy``), the floor any
  COG writer has; every side compresses at the DEFLATE level the store writes reflectance
  at (``agriseries.io.store.REFLECTANCE_DEFLATE_LEVEL``);
* agriseries: ``SourceProduct`` -> ``load`` (dask, 2048 px chunks, scale/offset to float32
  reflectance) -> int16 x 10000 encoding -> ``write_cog`` (one compression: the pixels are
  gathered uncompressed, their overview levels computed from them in memory, then GDAL's
  COG driver writes the file, copying those levels). The decoding and the
  encoding are one compiled (numba) pass per block each; numba's start-up, paid once per
  process before the first of them, is measured and printed apart (like the imports, which
  no side's time includes) and in a ratio of its own;
* two_pass: the same read and encoding written the way ``write_cog`` did before (a temporary
  tiled DEFLATE GeoTIFF, then GDAL's COG copy of it: every tile compressed twice, GDAL's
  overviews), kept here to show what the single compression saves, and to check that
  agriseries' file holds the same pixels and overview levels.

It prints wall time and peak RSS of each, and their ratios to the baseline, all measured in
the same run (so a loaded machine slows every side). Run with:

    .venv/bin/python benchmarks/bench_ingest.py [--size 10980] [--repeat 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHIP = next((HERE.parent / "tests/data/safe").glob("*.SAFE/GRANULE/*/IMG_DATA/R60m/*_B04_60m.jp2"))


def make_input(path: Path, size: int) -> None:
    import rasterio
    from agriseries.core.grid import tile_geobox

    with rasterio.open(CHIP) as src:
        chip = src.read(1)
    gb = tile_geobox("T29UNU", 10)
    gb = gb[:size, :size]
    reps = (int(np.ceil(size / chip.shape[0])), int(np.ceil(size / chip.shape[1])))
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                   crs=gb.crs.to_wkt(), transform=gb.affine, nodata=0, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        step = 2048
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            rows = np.tile(chip, (int(np.ceil(h / chip.shape[0])) + 1, reps[1]))
            off = r0 % chip.shape[0]
            dst.write(rows[off:off + h, :size], 1, window=((r0, r0 + h), (0, size)))


@functools.cache
def _level() -> int:
    """The DEFLATE level the store writes reflectance at: every side compresses at it
    (looked up by :func:`child` before the clock starts)."""
    from agriseries.io.store import REFLECTANCE_DEFLATE_LEVEL

    return REFLECTANCE_DEFLATE_LEVEL


def run_baseline(src_path: str, out: str) -> None:
    import rasterio
    import rasterio.shutil

    with rasterio.open(src_path) as src:
        rasterio.shutil.copy(src, out, driver="COG", compress="DEFLATE", level=_level(),
                             predictor=2,
                             blocksize=512, overview_resampling="average", BIGTIFF="IF_SAFER")


def encoded_band(src_path: str):
    """The agriseries read of the file (``SourceProduct`` -> ``load``, 2048 px dask chunks,
    float32 reflectance) encoded as stored (int16 x 10000), lazy; and its grid. The read
    and encoding both writers below measure."""
    import dask

    from agriseries.io.product import Asset, SourceProduct, file_geobox, load
    from agriseries.io.store import encode_reflectance

    dask.config.set(scheduler="threads")
    gb = file_geobox(src_path)
    product = SourceProduct(
        path=src_path, product_id="bench", level="L2A", sensor="S2A", producer="SEN2COR",
        datetime=dt.datetime(2022, 10, 5, tzinfo=dt.timezone.utc), crs=str(gb.crs),
        footprint=gb.extent, bands={"B04": Asset(src_path, 1, 1e-4, -0.1, 0, 10)},
        native_grids={10: gb})
    return encode_reflectance(load(product, resolution=10, angles=None)["B04"].data[0]), gb


def run_agriseries(src_path: str, out: str) -> None:
    from agriseries.io.cog import write_cog

    data, gb = encoded_band(src_path)
    write_cog(out, data, gb, nodata=-10000, level=_level())


def run_two_pass(src_path: str, out: str) -> None:
    import rasterio
    import rasterio.shutil

    data, gb = encoded_band(src_path)
    tmp = out + ".full.tif"
    with rasterio.open(tmp, "w", driver="GTiff", width=gb.shape.x, height=gb.shape.y, count=1,
                       dtype="int16", crs=gb.crs.to_wkt(), transform=gb.affine, nodata=-10000,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                       zlevel=_level(), predictor=2, BIGTIFF="IF_SAFER") as dst:
        rows = np.cumsum((0,) + data.chunks[0])
        for i in range(len(rows) - 1):
            dst.write(data[rows[i]:rows[i + 1]].compute(), 1,
                      window=((int(rows[i]), int(rows[i + 1])), (0, gb.shape.x)))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(src, out, driver="COG", compress="DEFLATE", level=_level(),
                             predictor=2,
                             blocksize=512, overview_resampling="average", BIGTIFF="IF_SAFER")
    Path(tmp).unlink()


def jit_start_up() -> float:
    """Seconds numba takes, once per process, before the first compiled block pass runs
    (LLVM set up, the cached machine code of agriseries.io.blockcodec loaded): called with
    the argument types of the measured read and encoding, on a few pixels."""
    from agriseries.io.blockcodec import decode_block, encode_block

    t0 = time.perf_counter()
    refl = decode_block(np.zeros((4, 4), np.uint16), 0, 1e-4, -0.1, inside=(0, 4, 0, 4))
    encode_block(refl, 1e-4, 0.0, True, -10000)
    return time.perf_counter() - t0


def child(which: str, src_path: str, out: str) -> None:
    import rasterio.shutil  # noqa: F401 -- imports are not what is measured

    _level()
    jit_s = 0.0
    if which != "baseline":
        import agriseries.io.cog  # noqa: F401
        import agriseries.io.product  # noqa: F401
        import agriseries.io.store  # noqa: F401

        # a start-up cost like the imports (a worker process pays it once, for all the bands
        # and products it writes): measured and reported apart, not in the band's time
        jit_s = jit_start_up()
    t0, c0 = time.perf_counter(), time.process_time()
    {"baseline": run_baseline, "agriseries": run_agriseries,
     "two_pass": run_two_pass}[which](src_path, out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_kb / 1024, "jit_s": jit_s}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="edge of the square band in pixels")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each side, alternated (the best of each is compared)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input.tif"
        t0 = time.perf_counter()
        make_input(src, args.size)
        print(f"input: {args.size} x {args.size} uint16 GeoTIFF, {src.stat().st_size / 2**20:.0f} MiB "
              f"(made in {time.perf_counter() - t0:.1f} s)")
        res: dict[str, dict] = {}
        walls: dict[str, list[float]] = {}
        order = ("baseline", "agriseries", "two_pass")
        for rep in range(args.repeat):
            for which in order:
                out = Path(tmp) / f"{which}.tif"
                p = subprocess.run([sys.executable, __file__, "--child", which, str(src), str(out)],
                                   capture_output=True, text=True, check=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                print(f"run {rep + 1} {which:11s} wall {r['wall_s']:7.1f} s   CPU {r['cpu_s']:7.1f} s"
                      f"   peak RSS {r['peak_mb']:7.0f} MB"
                      + (f"   (numba start-up before it {r['jit_s']:.2f} s)" if r["jit_s"] else "")
                      + f"   load {os.getloadavg()[0]:.1f}", flush=True)
                walls.setdefault(which, []).append(r["wall_s"])
                best = res.setdefault(which, dict(r))
                for key in ("wall_s", "cpu_s", "jit_s"):
                    best[key] = min(best[key], r[key])
                best["peak_mb"] = max(best["peak_mb"], r["peak_mb"])
        from agriseries.io.cog import validate_cog

        assert validate_cog(Path(tmp) / "agriseries.tif")[0]
        import rasterio

        with rasterio.open(Path(tmp) / "agriseries.tif") as a, \
                rasterio.open(Path(tmp) / "two_pass.tif") as b:
            assert np.array_equal(a.read(1), b.read(1)), "the two writers disagree"
            assert a.overviews(1) == b.overviews(1)
            levels = len(a.overviews(1))
        for k in range(levels):  # agriseries' own overviews against GDAL's (two_pass)
            with rasterio.open(Path(tmp) / "agriseries.tif", overview_level=k) as a, \
                    rasterio.open(Path(tmp) / "two_pass.tif", overview_level=k) as b:
                assert np.array_equal(a.read(1), b.read(1)), f"overview level {k} differs"
        print(f"overviews: the {levels} levels equal GDAL's (two_pass) pixel for pixel")
        base = res["baseline"]
        for which in order[1:]:
            print(f"ratio {which} / baseline (best of {args.repeat}): time "
                  f"{res[which]['wall_s'] / base['wall_s']:.2f}, CPU "
                  f"{res[which]['cpu_s'] / base['cpu_s']:.2f}, "
                  f"peak memory {res[which]['peak_mb'] / base['peak_mb']:.2f}")
        for which in order[1:]:  # less sensitive to one lucky run on a shared machine
            print(f"ratio {which} / baseline (median of {args.repeat}): time "
                  f"{np.median(walls[which]) / np.median(walls['baseline']):.2f}")
        a = res["agriseries"]
        print(f"ratio agriseries / baseline counting numba's start-up ({a['jit_s']:.2f} s, once "
              f"per process): time {(a['wall_s'] + a['jit_s']) / base['wall_s']:.2f}")
        print(f"ratio agriseries / two_pass: time "
              f"{res['agriseries']['wall_s'] / res['two_pass']['wall_s']:.2f}")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"full band in memory would be {args.size ** 2 * 4 / 2**20:.0f} MB as float32")


if __name__ == "__main__":
    main()
