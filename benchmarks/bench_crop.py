"""Benchmark: crop mask training and prediction on a full Sentinel-2 tile (10980 x 10980 px, 10 m).

Input: a full tile of 71 Sentinel-2 L2A dates (B03, B04, B08, B11 and the mask) made of the
real pixels of the WorldCereal Flanders 2018 patch (tests/data/worldcereal, 64 x 64 px,
2018-03-05..10-31): the tile is paved with copies of the patch, each turned by one of the
eight rotations / mirrorings chosen at random per cell, built block by block as a dask
array (no 80 GB of input on disk). Labels: the patch's LPIS land cover, paved the same way
(cropland = 11). The processing is the processor's own (:mod:`agriseries.crop`): the 5.1
features on the 10-day grid (25 dates, 175 features), the random forest 100 / 25 / 25 on
40000 samples, hard votes, class + confidence.

Measured in one run, with dask's threaded scheduler on ``--workers`` threads (2 = the
machine's cores):

* ``baseline``: the features of the whole tile, computed block by block and dropped (what
  any product needs before classifying);
* ``train``: the features of 40000 training pixels (spread over the tile, so every block
  is computed) and the fit;
* ``predict``: the features and the forest's votes of every pixel, into a class map
  (uint8) and a confidence map (float32) in memory, then written as two COGs;
* ``io``: on a ``--io-size`` square sub-tile, the same features read through the product
  store (71 L2A products written as COGs, B03 / B04 / B08 at 10 m, B11 and the mask at
  20 m, loaded with :func:`agriseries.crop.processor.load_season`) against the in-memory
  input: the extra time of reading COGs, scaled to the tile, gives the estimate of the
  processor's prediction time from a real store;
* peak memory: the process's resident set size sampled every 0.1 s (``/proc/self/statm``),
  per phase, and ``getrusage`` for the whole run.

``--votes-only`` measures the forest's votes alone: the same forest as the full run (the
same 40000 training pixels of the ``--size`` tile; the features of a paved pixel are
those of its patch pixel, so no tile is computed), the rows of one 512 x 512 block,
:func:`agriseries.crop.classifier.forest_votes` against the previous kernel (each pixel
through the 100 trees one after the other, a branch per node, kept here as the reference),
``--workers`` threads each classifying its share of the block, the two kernels alternated
``--repeats`` times (best time of each), and their results compared.

Run with::

    .venv/bin/python benchmarks/bench_crop.py [--size 10980] [--io-size 1024] [--json]
    .venv/bin/python benchmarks/bench_crop.py --votes-only [--repeats 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import numba
import numpy as np
import xarray as xr

HERE = Path(__file__).resolve().parent
WC = HERE.parent / "tests" / "data" / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
BANDS = ("B03", "B04", "B08", "B11")
CELL = 64


class PeakRSS:
    """Peak resident set size (bytes) of this process while the block runs, its wall time
    (``seconds``) and the CPU time of all its threads (``cpu_seconds``)."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.every)

    def __enter__(self):
        self.peak = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def _log(text: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f}] {text}", file=sys.stderr,
          flush=True)


def real_patch():
    """The 71-date patch: values (4, 71, 64, 64) float32, mask (71, 64, 64), times, LC."""
    from agriseries.crop.features import merge_resolutions
    from agriseries.io.timeseries import read_timeseries

    ds = merge_resolutions(read_timeseries(WC / f"S2_L2A_10m_{TAIL}"),
                           read_timeseries(WC / f"S2_L2A_20m_{TAIL}")).compute()
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        lc = lab["LC"].values.astype(np.uint8)
    values = np.stack([ds[b].values for b in BANDS]).astype(np.float32)
    return values, ds["mask"].values.astype(np.uint8), ds["time"].values, lc


def _cell_turns(ny: int, nx: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 8, size=(-(-ny // CELL), -(-nx // CELL)))


def _turn(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations / mirrorings of the last two axes."""
    a = np.rot90(a, k % 4, axes=(-2, -1))
    return a[..., ::-1] if k >= 4 else a


def _paved(patch: np.ndarray, turns: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = np.empty(patch.shape[:-2] + (y1 - y0, x1 - x0), patch.dtype)
    for cy in range(y0 // CELL, (y1 - 1) // CELL + 1):
        for cx in range(x0 // CELL, (x1 - 1) // CELL + 1):
            piece = _turn(patch, int(turns[cy, cx]))
            ya, yb = max(y0, cy * CELL), min(y1, (cy + 1) * CELL)
            xa, xb = max(x0, cx * CELL), min(x1, (cx + 1) * CELL)
            out[..., ya - y0:yb - y0, xa - x0:xb - x0] = \
                piece[..., ya - cy * CELL:yb - cy * CELL, xa - cx * CELL:xb - cx * CELL]
    return out


def synthetic_tile(values, mask, times, size: int, chunk: int, seed: int = 0,
                   y0: int = 0, x0: int = 0) -> xr.Dataset:
    """A ``size`` x ``size`` tile (or the window at ``y0, x0`` of it) paved with the patch, lazily."""
    from odc.geo.xr import xr_coords

    from agriseries.core.grid import tile_geobox

    full = 10980
    turns = _cell_turns(full, full, seed)
    ychunks = tuple(min(chunk, size - i) for i in range(0, size, chunk))

    def make(arr, name, dtype):
        def block(block_info=None):
            loc = block_info[None]["array-location"]
            (ya, yb), (xa, xb) = loc[-2], loc[-1]
            return _paved(arr, turns, y0 + ya, y0 + yb, x0 + xa, x0 + xb)

        lead = tuple((n,) for n in arr.shape[:-2])
        return da.map_blocks(block, dtype=dtype, chunks=lead + (ychunks, ychunks),
                             name=f"paved-{name}-{size}-{y0}-{x0}-{seed}")

    data = {b: (("time", "y", "x"), make(values[i], b, np.float32)) for i, b in enumerate(BANDS)}
    data["mask"] = (("time", "y", "x"), make(mask, "mask", np.uint8))
    gb = tile_geobox("T31UDS", 10)[y0:y0 + size, x0:x0 + size]
    return xr.Dataset(data, coords={**xr_coords(gb), "time": times,
                                    "sensor": ("time", ["S2A"] * len(times))})


def bench(size: int, chunk: int, trees: int, samples: int, io_size: int, workers: int) -> dict:
    from agriseries.crop.classifier import (
        ClassifierParams,
        extract_samples,
        predict_map,
        train_classifier,
    )
    from agriseries.crop.features import (
        SeriesFeatures,
        SeriesParams,
        feature_map,
        season_dates,
    )
    from agriseries.crop.samples import sample_pixels
    from agriseries.io.cog import write_cog

    values, mask, times, lc = real_patch()
    dates = season_dates("2018-03-01", "2018-10-31")
    ex = SeriesFeatures(dates, SeriesParams(chunk=chunk))
    ds = synthetic_tile(values, mask, times, size, chunk)
    gb = ds.odc.geobox
    res: dict = {"size": size, "chunk": chunk, "dates_in": len(times),
                 "grid_dates": int(dates.size), "features": len(ex.names), "trees": trees,
                 "workers": workers, "machine": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count()}
    npx = size * size

    # baseline: the features of every pixel, dropped block by block
    with PeakRSS() as m:
        fm = feature_map(ds, ex).data
        total = da.map_blocks(lambda b: np.nansum(b, axis=0, keepdims=True)[:, :1, :1],
                              fm, dtype=np.float64, chunks=((1,),) + tuple((1,) * len(c) for c in
                                                                        fm.chunks[1:])).sum()
        total.compute()
    res["baseline_s"], res["baseline_peak_gb"] = m.seconds, m.peak / 1e9
    res["baseline_cpu_s"] = m.cpu_seconds
    _log(f"baseline {m.seconds:.0f} s")

    # training: 40000 pixels, in proportion to the classes, over the whole tile
    with PeakRSS() as m:
        rng = np.random.default_rng(1)
        pool = rng.choice(npx, min(npx, 20 * samples), replace=False)
        labels = _paved(lc, _cell_turns(10980, 10980, 0), 0, size, 0, size)
        ry, rx = pool // size, pool % size
        y = (labels[ry, rx] == 11).astype(np.int64)
        del labels
        pick = sample_pixels(y, samples, seed=0)
        t0 = time.perf_counter()
        X = extract_samples(ds, ex, ry[pick], rx[pick])
        t1 = time.perf_counter()
        model = train_classifier(X, y[pick], ClassifierParams(n_trees=trees), ex.names)
        t2 = time.perf_counter()
    res.update(train_s=m.seconds, train_cpu_s=m.cpu_seconds, train_extract_s=t1 - t0,
               train_fit_s=t2 - t1,
               train_peak_gb=m.peak / 1e9, train_samples=int(pick.size),
               mean_tree_nodes=float(np.mean([e.tree_.node_count for e in model.estimator.estimators_])))
    _log(f"train {m.seconds:.0f} s")

    # prediction: class + confidence of every pixel, in memory, then two COGs
    tmp = Path(tempfile.mkdtemp(prefix="bench_crop_"))
    try:
        with PeakRSS() as m:
            cls, conf, _ = predict_map(ds, ex, model)
            out_c = np.empty(cls.shape, cls.dtype)
            out_f = np.empty(conf.shape, np.float32)
            da.store([cls, conf], [out_c, out_f], lock=False)
            t1 = time.perf_counter()
            write_cog(tmp / "crop_mask.tif", out_c, gb, nodata=255, overview_resampling="nearest")
            write_cog(tmp / "confidence.tif", out_f, gb, nodata=float("nan"))
            t2 = time.perf_counter()
        res.update(predict_s=m.seconds, predict_cpu_s=m.cpu_seconds,
                   predict_compute_s=t1 - m.t0, predict_write_s=t2 - t1,
                   predict_peak_gb=m.peak / 1e9,
                   cropland_share=float((out_c == 1).mean()))
        _log(f"predict {m.seconds:.0f} s")
        del out_c, out_f
        if io_size:
            res.update(io_bench(values, mask, times, lc, io_size, chunk, ex, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_average_end"] = os.getloadavg()[0]
    res["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    res["predict_mpx_per_s"] = npx / 1e6 / res["predict_s"]
    res["predict_over_baseline"] = res["predict_s"] / res["baseline_s"]
    if io_size:
        scale = npx / io_size ** 2
        res["io_extra_tile_s"] = max(0.0, res["io_store_s"] - res["io_memory_s"]) * scale
        res["predict_from_store_estimate_s"] = res["predict_s"] + res["io_extra_tile_s"]
    return res


def io_bench(values, mask, times, lc, size: int, chunk: int, ex, tmp: Path) -> dict:
    """Features of a sub-tile from a product store of COGs vs from memory."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from agriseries.core.bands import bands_of
    from agriseries.core.ids import Level, ProductId
    from agriseries.crop.features import feature_map
    from agriseries.crop.processor import load_season
    from agriseries.io.opened import held_open
    from agriseries.io.store import Layer, ProductStore

    ds = synthetic_tile(values, mask, times, size, chunk, y0=2048, x0=2048).compute()
    gb10 = ds.odc.geobox
    a = gb10.affine
    gb20 = GeoBox((size // 2, size // 2), Affine(20, 0, a.c, 0, -20, a.f), gb10.crs)
    store = ProductStore(tmp / "store")
    table = bands_of("S2A")
    t0 = time.perf_counter()
    for i, t in enumerate(times):
        when = dt.datetime.fromisoformat(str(np.datetime_as_string(t, "s"))).replace(
            tzinfo=dt.UTC)
        pid = ProductId(Level.L2A, "S2A", "T31UDS", when, "SEN2COR")
        layers = [Layer(b, ds[b].values[i], gb10, "reflectance", band=table[b])
                  for b in ("B03", "B04", "B08")]
        layers.append(Layer("B11", ds["B11"].values[i, ::2, ::2], gb20, "reflectance",
                            band=table["B11"]))
        layers.append(Layer("mask", ds["mask"].values[i, ::2, ::2], gb20, "mask"))
        store.write_product(pid, layers, footprint=gb10.extent, sensors=["S2A"],
                            inputs=[f"bench-{i}"], parameters={}, lineage="benchmark input",
                            datetime=when)
    write_s = time.perf_counter() - t0
    with PeakRSS() as m_mem:
        feature_map(ds.chunk({"y": chunk, "x": chunk}), ex).data.sum().compute()
    with PeakRSS() as m_store, held_open():  # as the processor reads (files kept open)
        series, items = load_season(store, "T31UDS", "2018-03-01", "2018-10-31", BANDS,
                                    chunk=chunk)
        feature_map(series, ex).data.sum().compute()
    return {"io_size": size, "io_products": len(items), "io_write_store_s": write_s,
            "io_memory_s": m_mem.seconds, "io_store_s": m_store.seconds,
            "io_memory_cpu_s": m_mem.cpu_seconds, "io_store_cpu_s": m_store.cpu_seconds,
            "io_store_peak_gb": m_store.peak / 1e9}


@numba.njit(nogil=True, cache=True)
def _pixel_major_votes(X, nodes, thr, roots, ncls, out_cls, out_conf):
    """The previous vote kernel of agriseries (the reference): each pixel through the trees
    one after the other, a branch per node; ``nodes`` rows ``[feature, left, right, leaf
    class]`` (int32, left = -1 at a leaf), float64 thresholds."""
    n, nf = X.shape
    ntree = roots.shape[0]
    votes = np.zeros(ncls, np.int64)
    for i in range(n):
        ok = True
        for f in range(nf):
            if not np.isfinite(X[i, f]):
                ok = False
                break
        if not ok:
            out_cls[i] = -1
            out_conf[i] = np.nan
            continue
        for c in range(ncls):
            votes[c] = 0
        for k in range(ntree):
            node = roots[k]
            while nodes[node, 1] >= 0:
                if X[i, nodes[node, 0]] <= thr[node]:
                    node = nodes[node, 1]
                else:
                    node = nodes[node, 2]
            votes[nodes[node, 3]] += 1
        best = 0
        for c in range(1, ncls):
            if votes[c] > votes[best]:
                best = c
        out_cls[i] = best
        out_conf[i] = votes[best] / ntree


def _pixel_major_tables(forest):
    """The node table of :func:`_pixel_major_votes`: the trees end to end."""
    rows, thr, roots, offset = [], [], [], 0
    for est in forest.estimators_:
        t = est.tree_
        leaf = t.children_left < 0
        rows.append(np.stack([np.where(leaf, 0, t.feature), np.where(leaf, -1, t.children_left + offset),
                              np.where(leaf, -1, t.children_right + offset),
                              np.argmax(t.value[:, 0, :], axis=1)], axis=1))
        thr.append(t.threshold)
        roots.append(offset)
        offset += t.node_count
    return (np.ascontiguousarray(np.concatenate(rows), dtype=np.int32),
            np.concatenate(thr).astype(np.float64), np.asarray(roots, np.int64))


def votes_bench(size: int, trees: int, samples: int, workers: int, repeats: int) -> dict:
    """The forest's votes on one 512 x 512 block: new kernel vs the previous one."""
    from concurrent.futures import ThreadPoolExecutor

    from agriseries.crop.classifier import (
        ClassifierParams,
        flatten_forest,
        forest_votes,
        train_classifier,
    )
    from agriseries.crop.features import (
        SeriesFeatures,
        SeriesParams,
        feature_map,
        season_dates,
    )
    from agriseries.crop.samples import sample_pixels

    values, mask, times, lc = real_patch()
    ex = SeriesFeatures(season_dates("2018-03-01", "2018-10-31"), SeriesParams(chunk=CELL))
    patch = synthetic_tile(values, mask, times, CELL, CELL)  # cell (0, 0): the patch turned
    k0 = int(_cell_turns(10980, 10980, 0)[0, 0])
    where = _turn(np.arange(CELL * CELL).reshape(CELL, CELL), k0)  # patch pixel at each place
    feats = feature_map(patch, ex).values.reshape(len(ex.names), -1).T
    rows_of = np.empty_like(feats)
    rows_of[where.ravel()] = feats  # features of each patch pixel, in patch order
    # the training pixels of bench(): the same draw, their features looked up in the patch
    turns = _cell_turns(10980, 10980, 0)
    index = _paved(np.arange(CELL * CELL, dtype=np.int16).reshape(CELL, CELL), turns, 0, size, 0, size)
    labels = _paved(lc, turns, 0, size, 0, size)
    rng = np.random.default_rng(1)
    pool = rng.choice(size * size, min(size * size, 20 * samples), replace=False)
    ry, rx = pool // size, pool % size
    y = (labels[ry, rx] == 11).astype(np.int64)
    pick = sample_pixels(y, samples, seed=0)
    t0 = time.perf_counter()
    model = train_classifier(rows_of[index[ry[pick], rx[pick]].astype(np.int64)], y[pick],
                             ClassifierParams(n_trees=trees), ex.names)
    fit_s = time.perf_counter() - t0
    forest = model.estimator
    y0, x0 = min(1536, size - 512), min(3584, size - 512)
    X = np.ascontiguousarray(rows_of[index[y0:y0 + 512, x0:x0 + 512].ravel().astype(np.int64)])
    del index, labels
    t0 = time.perf_counter()
    flat = flatten_forest(forest.estimators_)
    flatten_s = time.perf_counter() - t0
    tables = _pixel_major_tables(forest)
    ncls = len(forest.classes_)
    parts = np.array_split(np.arange(X.shape[0]), workers)

    def new(part):
        return forest_votes(forest, X[part], flat)

    def old(part):
        oc, of = np.empty(part.size, np.int64), np.empty(part.size, np.float32)
        _pixel_major_votes(X[part], *tables, ncls, oc, of)
        return oc, of

    times_s: dict[str, list[float]] = {"old": [], "new": []}
    results = {}
    with ThreadPoolExecutor(workers) as ex_pool:
        for f in (old, new):  # compile / warm up
            list(ex_pool.map(f, [p[:64] for p in parts]))
        for _ in range(repeats):
            for name, f in (("old", old), ("new", new)):
                t0 = time.perf_counter()
                out = list(ex_pool.map(f, parts))
                times_s[name].append(time.perf_counter() - t0)
                results[name] = tuple(np.concatenate(o) for o in zip(*out))
    same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(results["old"], results["new"]))
    if not same:
        raise AssertionError("the new vote kernel disagrees with the previous one")
    per = X.shape[0] * trees / workers  # pixel-tree visits per thread
    best_old, best_new = min(times_s["old"]), min(times_s["new"])
    return {"votes_rows": int(X.shape[0]), "trees": trees, "workers": workers, "repeats": repeats,
            "fit_s": fit_s, "flatten_s": flatten_s,
            "mean_tree_nodes": float(np.mean([e.tree_.node_count for e in forest.estimators_])),
            "old_s": best_old, "new_s": best_new, "old_all_s": times_s["old"],
            "new_all_s": times_s["new"], "old_ns_per_pixel_tree": best_old / per * 1e9,
            "new_ns_per_pixel_tree": best_new / per * 1e9, "speedup": best_old / best_new,
            "identical": same, "load_average_end": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="tile side, pixels")
    ap.add_argument("--chunk", type=int, default=512, help="dask block side, pixels")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--samples", type=int, default=40000)
    ap.add_argument("--io-size", type=int, default=1024, help="side of the store sub-tile (0: skip)")
    ap.add_argument("--workers", type=int, default=2, help="dask threads")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--votes-only", action="store_true",
                    help="only the forest's votes on one block: new vs previous kernel")
    ap.add_argument("--repeats", type=int, default=5, help="--votes-only: alternated runs")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.votes_only:
        res = votes_bench(args.size, args.trees, args.samples, args.workers, args.repeats)
        if args.json:
            print(json.dumps(res, indent=1))
            return
        print(f"forest votes, {res['votes_rows']} px (one 512 x 512 block), {res['trees']} trees of "
              f"{res['mean_tree_nodes']:.0f} nodes, {res['workers']} threads, best of {res['repeats']}:")
        print(f"  previous kernel (pixel by pixel)  {res['old_s'] * 1e3:7.0f} ms   "
              f"{res['old_ns_per_pixel_tree']:5.1f} ns per pixel and tree")
        print(f"  forest_votes (batches, no branch) {res['new_s'] * 1e3:7.0f} ms   "
              f"{res['new_ns_per_pixel_tree']:5.1f} ns per pixel and tree")
        print(f"  speed-up x{res['speedup']:.2f}, identical votes and shares: {res['identical']} "
              f"(load average {res['load_average_end']:.1f})")
        return
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        res = bench(args.size, args.chunk, args.trees, args.samples, args.io_size, args.workers)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    mpx = args.size ** 2 / 1e6
    print(f"crop mask on a {args.size} x {args.size} px tile ({mpx:.1f} Mpx), {res['dates_in']} "
          f"dates -> {res['grid_dates']} grid dates, {res['features']} features, "
          f"{res['trees']} trees, {args.workers} threads")
    print(f"  baseline (features only)  {res['baseline_s']:8.1f} s   peak {res['baseline_peak_gb']:.2f} GB")
    print(f"  train (extract + fit)     {res['train_s']:8.1f} s   ({res['train_extract_s']:.1f} + "
          f"{res['train_fit_s']:.1f} s, {res['train_samples']} samples, "
          f"{res['mean_tree_nodes']:.0f} nodes per tree)   peak {res['train_peak_gb']:.2f} GB")
    print(f"  predict (+ 2 COGs)        {res['predict_s']:8.1f} s   ({res['predict_compute_s']:.1f} + "
          f"{res['predict_write_s']:.1f} s, {res['predict_mpx_per_s']:.3f} Mpx/s)   "
          f"peak {res['predict_peak_gb']:.2f} GB")
    print(f"  predict / baseline        {res['predict_over_baseline']:8.2f}")
    if args.io_size:
        print(f"  store sub-tile {res['io_size']}^2: features from COGs {res['io_store_s']:.1f} s vs "
              f"memory {res['io_memory_s']:.1f} s (store written in {res['io_write_store_s']:.0f} s)"
              f" -> +{res['io_extra_tile_s']:.0f} s on the tile")
        print(f"  predict from a store (estimate) {res['predict_from_store_estimate_s']:.0f} s "
              f"= {res['predict_from_store_estimate_s'] / 60:.1f} min (target < 15 min)")
    print(f"  max RSS of the run        {res['max_rss_gb']:.2f} GB (target < 8 GB)")


if __name__ == "__main__":
    main()
