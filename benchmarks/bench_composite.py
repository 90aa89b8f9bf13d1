"""L3A benchmark: a full-tile month through the WASP compositor, against the floor and a baseline.

A store is filled with ``--dates`` Sentinel-2 L2A products of the full tile T31UDS
(10980 x 10980 px at 10 m), synthesised from the real WorldCereal Flanders chips
(tests/data/worldcereal: the 64 x 64 px 10 m bands and 32 x 32 px 20 m bands + SCL mask of
real dates, tiled over the tile, one real date per synthetic date), written as COGs like
any ingested product. Three timings, each in its own process, timed once the libraries
are imported (peak RSS of that process):

* ``read``      -- read every input band and mask once, chunk by chunk (what any
                   compositor must at least do: the floor);
* ``composite`` -- :func:`agriseries.composite.composite`, the L3A product written to the
                   store (default parameters, directional correction on);
* ``plain``     -- :func:`plain_weighted_mean`: the same weights and weighted mean of
                   clear pixels written the obvious way with xarray (no flags, no
                   minimum-blue rule, no directional correction), computed to numpy.

It prints the wall time and peak memory of each and the ratios composite/read and
composite/plain. Usage::

    .venv/bin/python benchmarks/bench_composite.py [--dates 8] [--size 10980] [--keep DIR]
        [--no-plain] [--repeat N] [--compare NAME=TREE ...]

``--compare`` measures two (or more) versions of agriseries on the same inputs: ``TREE`` is
a checkout (or ``git archive``) of the repository, and each step of each version runs in a
fresh process importing ``TREE/src`` (the steps themselves are this file's), the versions
alternated step by step, ``--repeat`` rounds, so that a change is compared within one run.
A version's first run in a new tree compiles its numba kernels (their cache lives beside
the sources): warm each tree with one run first, or discard the first round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
TILE = "T31UDS"


def plain_weighted_mean(ds: xr.Dataset, centre: dt.date, params, factor: int) -> xr.Dataset:
    """The WASP land weighted mean written plainly with xarray (the benchmark's baseline).

    ``ds``: a multi-date agriseries Dataset on one grid (bands, ``mask``); ``factor``: the
    coarse-to-fine pixel ratio. Same weights as the kernel for clear land pixels: cloud
    distance from the coarse cloud share, date weight, sensor weight (all Sentinel-2 here).
    """
    from agriseries.composite.wasp import (
        cloud_fractions,
        cloud_weight,
        coarse_cloud_share,
        date_weight,
    )
    from agriseries.core.masks import MaskBit

    bands = [v for v in ds.data_vars if v != "mask" and ds[v].dims == ("time", "y", "x")]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    bad = params.cloud_bits | params.invalid_bits | int(MaskBit.SNOW) | int(MaskBit.WATER)
    weights = []
    for k in range(ds.sizes["time"]):
        m = ds["mask"].isel(time=k).values
        share = coarse_cloud_share((m & params.cloud_bits) != 0, (m & params.invalid_bits) == 0,
                                   factor)
        a, b = cloud_fractions(share, params)
        cy, cx = a.shape
        coarse = xr.DataArray(np.stack([a, b]), dims=("f", "cy", "cx"),
                              coords={"cy": np.arange(cy), "cx": np.arange(cx)})
        yy = np.clip((np.arange(ny) + 0.5) / factor - 0.5, 0, cy - 1)
        xx = np.clip((np.arange(nx) + 0.5) / factor - 0.5, 0, cx - 1)
        fine = coarse.interp(cy=yy, cx=xx) if (cy > 1 and cx > 1) else coarse.isel(
            cy=np.zeros(ny, int), cx=np.zeros(nx, int))
        w = cloud_weight(fine.values[0], fine.values[1])
        when = ds["time"].values[k].astype("datetime64[D]").astype(dt.date)
        w = np.maximum(w * date_weight(abs((when - centre).days), params.half_period), 1e-6)
        weights.append(np.where((m & bad) == 0, w, 0.0).astype(np.float32))
    wts = xr.DataArray(np.stack(weights), dims=("time", "y", "x"))
    out = {}
    for b in bands:
        valid = ds[b].notnull() & (wts > 0)
        w = wts.where(valid, 0.0)
        out[b] = (w * ds[b].fillna(0)).sum("time") / w.sum("time")
    return xr.Dataset(out)


# -- synthetic full-tile inputs from real chips ------------------------------------------

def _tiled(block, chip, block_info=None):
    """The block of an endless tiling of ``chip`` at the block's position."""
    (r0, r1), (c0, c1) = block_info[0]["array-location"]
    ny, nx = chip.shape
    rows = np.arange(r0, r1) % ny
    cols = np.arange(c0, c1) % nx
    return chip[np.ix_(rows, cols)]


def make_store(store_dir: Path, n_dates: int, size: int, angles: bool = False) -> list[str]:
    """Write ``n_dates`` full-tile L2A products tiled from real WorldCereal dates (with
    ``angles``: constant sun and view angle grids too, as the L3B networks need)."""
    import dask.array as da
    from odc.geo.geobox import GeoBox

    from agriseries.core.bands import bands_of
    from agriseries.core.grid import tile_geobox
    from agriseries.core.ids import Level, ProductId
    from agriseries.io.store import Layer, ProductStore
    from agriseries.io.timeseries import read_timeseries

    wc = ROOT / "tests" / "data" / "worldcereal"
    s10 = read_timeseries(next(wc.glob("S2_L2A_10m_*.nc")))
    s20 = read_timeseries(next(wc.glob("S2_L2A_20m_*.nc")))
    # real July-August dates, some cloudy, some clear
    pick = s10.time.sel(time=slice("2018-06-20", "2018-08-20")).values[:n_dates]
    store = ProductStore(store_dir)
    table = bands_of("S2A")
    ids = []
    for t in pick:
        when = dt.datetime.fromtimestamp(t.astype("datetime64[s]").astype(int), dt.timezone.utc)
        layers = []
        for res, src, names in ((10, s10, ["B02", "B03", "B04", "B08"]),
                                (20, s20, ["B05", "B06", "B07", "B8A", "B11", "B12", "mask"])):
            full = tile_geobox(TILE, res)
            n = size * 10 // res
            gb = GeoBox((n, n), full.affine, full.crs)
            one = src.sel(time=t)
            for name in names:
                chip = one[name].values
                arr = da.zeros((n, n), dtype=chip.dtype, chunks=1024).map_blocks(
                    _tiled, chip, dtype=chip.dtype)
                kind = "mask" if name == "mask" else "reflectance"
                layers.append(Layer(name, arr, gb, kind, band=table.get(name)))
        pid = ProductId(Level.L2A, "S2A", TILE, when, "SEN2COR")
        grids = None
        if angles:
            from agriseries.io.product import AngleGrid

            a = tile_geobox(TILE, 20).affine

            def const(z, az):
                return AngleGrid(np.full((1, 1), z, np.float32), np.full((1, 1), az, np.float32),
                                 a.c, a.f, 5000.0, "EPSG:32631")

            grids = {"sun": const(35.0, 155.0),
                     **{lay.key: const(5.0, 105.0) for lay in layers if lay.key != "mask"}}
        store.write_product(pid, layers, angle_grids=grids, footprint=tile_geobox(TILE, 20)[:size // 2, :size // 2]
                            .extent, sensors=["S2A"], inputs=[str(pid)], parameters={},
                            lineage="benchmark input tiled from a real WorldCereal date",
                            datetime=when)
        ids.append(str(pid))
    store.update_catalog()
    return ids


# -- the three measurements, each in its own process -----------------------------------

def _period(store_dir: Path) -> tuple[str, dt.date]:
    from agriseries.io.store import ProductStore

    dates = sorted(it.datetime.date() for it in ProductStore(store_dir).items(level="L2A"))
    centre = dates[0] + (dates[-1] - dates[0]) / 2
    return f"{centre}/{centre}", centre


def _read_only(store_dir: str) -> None:
    import dask

    from agriseries.io.opened import held_open
    from agriseries.io.product import load
    from agriseries.io.store import ProductStore

    store = ProductStore(store_dir)
    sums = []
    for it in store.items(level="L2A"):
        sp = store.open(it)
        for res, names in ((10, ["B02", "B03", "B04", "B08"]),
                           (20, ["B05", "B06", "B07", "B8A", "B11", "B12"])):
            ds = load(sp, resolution=res, bands=names, angles=None, with_aux=False,
                      with_mask=res == 20, chunks=1024 if res == 10 else 512)
            sums += [ds[v].data.sum() if v != "mask" else ds[v].data.astype("u4").sum()
                     for v in ds.data_vars]
    with held_open():  # as the composite reads: each file opened once per thread
        dask.compute(*sums)


def _composite(store_dir: str) -> None:
    from agriseries.composite import composite
    from agriseries.io.store import ProductStore

    period, centre = _period(Path(store_dir))
    composite(ProductStore(store_dir), TILE, period, centre=centre, overwrite=True)


def _plain(store_dir: str) -> None:
    from agriseries.composite import WaspParams
    from agriseries.io.product import load
    from agriseries.io.store import ProductStore

    store = ProductStore(store_dir)
    _, centre = _period(Path(store_dir))
    params = WaspParams()
    dss = [load(store.open(it), resolution=10, bands=["B02", "B03", "B04", "B08"], angles=None,
                with_aux=False, chunks=1024) for it in store.items(level="L2A")]
    ds = xr.concat(dss, "time", coords="minimal", compat="override")
    plain_weighted_mean(ds, centre, params, factor=24).compute()


def _import_steps() -> None:
    """Import what every step uses (rasterio, xarray, dask, agriseries and the modules of
    its numba kernels: 1.5-1.9 s in a fresh process), so that a step's time is its work:
    the same constant in both steps would bring their ratio towards 1."""
    import dask  # noqa: F401

    import agriseries.composite  # noqa: F401
    import agriseries.io.opened  # noqa: F401
    import agriseries.io.product  # noqa: F401
    import agriseries.io.store  # noqa: F401


def _timed(fn, store_dir) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of ``fn(store_dir)`` in this process, after the imports."""
    _import_steps()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(store_dir)
    return (time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            time.process_time() - c0)


def _child(fn, store_dir, queue) -> None:
    queue.put(_timed(fn, store_dir))


def measure(fn, store_dir: Path) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s of all threads) of ``fn(store_dir)`` in a fresh process."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, str(store_dir), q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{fn.__name__} failed (exit code {p.exitcode})")
    return q.get()


STEPS = {"read": _read_only, "composite": _composite}


def measure_tree(step: str, store_dir: Path, tree: Path) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of ``step`` on ``store_dir`` in a fresh process that imports
    agriseries from ``tree/src``."""
    env = dict(os.environ, PYTHONPATH=str(Path(tree) / "src"))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", step,
                          str(store_dir)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{step} with {tree} failed (exit code {out.returncode}):\n"
                         f"{out.stderr[-3000:]}")
    wall, peak, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, peak, cpu


def _compare(work: Path, trees: list[tuple[str, Path]], repeat: int) -> None:
    best: dict = {}
    for r in range(repeat):
        for step in STEPS:
            for label, tree in trees:
                m = measure_tree(step, work, tree)
                b = best.setdefault((step, label), m)
                best[(step, label)] = (min(b[0], m[0]), max(b[1], m[1]), min(b[2], m[2]))
                print(f"round {r} {step:9s} {label:10s} {m[0]:8.2f} s   CPU {m[2]:8.2f} s   "
                      f"peak {m[1]:6.0f} MB   load {os.getloadavg()[0]:.1f}", flush=True)
    for label, _ in trees:
        f, c = best[("read", label)], best[("composite", label)]
        print(f"best {label:10s} read {f[0]:7.2f} s (CPU {f[2]:7.2f})  composite {c[0]:7.2f} s "
              f"(CPU {c[2]:7.2f})  peak {c[1] / 1024:.2f} GB  composite / read-only {c[0] / f[0]:.2f} "
              f"(CPU {c[2] / f[2]:.2f})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dates", type=int, default=8)
    ap.add_argument("--size", type=int, default=10980, help="tile edge in 10 m pixels")
    ap.add_argument("--keep", type=Path, default=None, help="reuse / keep the input store here")
    ap.add_argument("--no-plain", action="store_true",
                    help="skip the plain xarray baseline (it needs > 20 GB on a full tile)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each step, alternated (best time of each compared)")
    ap.add_argument("--compare", nargs="+", metavar="NAME=TREE", default=None,
                    help="versions to compare on the same inputs: source trees of agriseries, "
                         "each step in a fresh process importing TREE/src (read and composite)")
    ap.add_argument("--child", nargs=2, metavar=("STEP", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one step in this process, for --compare: prints (wall, peak MB, CPU)
        step, store = args.child
        print(json.dumps(list(_timed(STEPS[step], store))))
        return
    trees = []
    for spec in args.compare or []:
        label, sep, tree = spec.partition("=")
        if not sep or not label or not tree:
            raise SystemExit(f"--compare: {spec!r} is not NAME=TREE")
        if not (Path(tree) / "src" / "agriseries" / "__init__.py").is_file():
            raise SystemExit(f"--compare: {tree} is not an agriseries source tree (no src/agriseries)")
        trees.append((label, Path(tree)))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-l3a-"))
    try:
        if not any(work.glob("L2A/*/*/*/*.json")):
            t0 = time.perf_counter()
            make_store(work, args.dates, args.size)
            print(f"inputs: {args.dates} dates of {args.size} x {args.size} px written in "
                  f"{time.perf_counter() - t0:.0f} s to {work}", flush=True)
        if trees:
            _compare(work, trees, args.repeat)
            return
        rows = {}
        steps = list(STEPS.items())
        if not args.no_plain:
            steps.append(("plain", _plain))
        for _ in range(args.repeat):
            for name, fn in steps:
                m = measure(fn, work)
                best = rows.setdefault(name, m)
                rows[name] = (min(best[0], m[0]), max(best[1], m[1]), min(best[2], m[2]))
                print(f"{name:10s} {m[0]:8.1f} s   CPU {m[2]:8.1f} s   peak {m[1]:8.0f} MB   "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        r, c = rows["read"], rows["composite"]
        print(f"composite / read-only time: {c[0] / r[0]:.2f}  (target <= 1.5); CPU: "
              f"{c[2] / r[2]:.2f}")
        print(f"composite peak memory: {c[1] / 1024:.2f} GB  (target < 6)")
        if "plain" in rows:
            p = rows["plain"]
            print(f"composite / plain xarray time: {c[0] / p[0]:.2f}   memory: {c[1] / p[1]:.2f}")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
