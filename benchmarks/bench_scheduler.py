"""Benchmark: the production scheduler's overhead per job, and the speed-up of 2 Dask workers.

Issue 6 sets two measurements:

1. **Scheduling overhead per job** (target < 50 ms on SQLite with 10,000 products in the
   catalogue). A site of 10 tiles and one season; the SQLite catalogue holds 10,000 products
   (per tile: L2A acquisitions, the L3B of most of them, 12 monthly L3A with their STAC
   items listing their inputs). Some L2A have no L3B yet and one month per tile has a late
   input, so jobs are due. Measured with the runner's own code (no processor runs):

   * one planning pass (``Runner.plan``: inbox scan, catalogue load from the database, the
     scheduler's rules, submission of every new job),
   * then, per job, what the runner does around a task: ``claim``, registering its product
     in the catalogue (``add_products``) and ``complete``,
   * and a second planning pass when nothing new is due (the steady state of ``--watch``).

   The overhead per job is (planning pass + bookkeeping of all jobs) / jobs.

2. **Speed-up of a multi-tile run with 1 vs 2 Dask workers**: real processors on real data
   -- the Landsat 8 scene of tests/data/landsat (LC08 008059, 2019-12-01) in the inbox of a
   site of ``--tiles`` of the Sentinel-2 tiles it covers (those it covers most): ingest
   onto each tile (one job per tile), the December 2019 L3A and one L3B per tile. The same
   run is made with a LocalCluster of 1 worker and of 2 workers (1 thread each, fresh store
   each time); the times are the whole ``run`` (cluster start included) and the span from
   the first job started to the last job done.

Run with::

    .venv/bin/python benchmarks/bench_scheduler.py            # both parts
    .venv/bin/python benchmarks/bench_scheduler.py --part overhead
    .venv/bin/python benchmarks/bench_scheduler.py --part speedup --tiles 4

(A third part, ``--part chunks``, compared ``engine.chunks: worker`` with ``cluster``, one
job's chunks spread over the cluster; the mode was removed after it, docs/benchmarks.md.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from agriseries.composite.processor import l3a_id, parse_period
from agriseries.core.ids import Level, ProductId
from agriseries.production.jobstore import ProductRecord
from agriseries.production.runner import Runner, run
from agriseries.production.scheduler import l3a_window
from agriseries.production.site import site_from_dict

UTC = dt.UTC
REPO = Path(__file__).resolve().parent.parent
LANDSAT = REPO / "tests" / "data" / "landsat" / "LC08_L2SP_008059_20191201_20200825_02_T1"
TILES = [f"T31U{a}{b}" for a in "DE" for b in "PQRST"]  # 10 tile ids


def _item(pid: str, inputs: list[str] | None = None) -> dict:
    """A STAC item of a realistic size (about 3 kB: ten assets)."""
    assets = {f"B{i:02d}": {"href": f"{pid}_B{i:02d}.tif", "type": "image/tiff",
                            "roles": ["data"], "raster:bands": [{"scale": 1e-4}]}
              for i in range(1, 11)}
    props = {"datetime": None, "agriseries:inputs": inputs or []}
    if inputs is not None:
        props["agriseries:synthesis"] = {"skipped": []}
    return {"type": "Feature", "id": pid, "properties": props, "assets": assets}


def catalogue(n_products: int, site) -> tuple[list[ProductRecord], int]:
    """Products of the season on the site's tiles: L2A, L3B (90 % of the L2A), L3A (12 per
    tile, one of them made before its last input arrived). Returns records and the number
    of jobs due."""
    tiles = site.tiles
    months = site.months()
    per_tile = n_products // len(tiles)
    n_l2a = round((per_tile - len(months)) / 1.9)
    recs: list[ProductRecord] = []
    due = 0
    season0 = dt.datetime.combine(site.season.start, dt.time(10, 50), UTC)
    span = (site.season.end - site.season.start).days
    for tile in tiles:
        l2a = []
        for k in range(n_l2a):
            start = season0 + dt.timedelta(days=span * k / n_l2a, seconds=k)
            pid = ProductId(Level.L2A, "S2A" if k % 2 else "S2B", tile, start, "SEN2COR")
            l2a.append(pid)
            recs.append(ProductRecord(str(pid), "L2A", tile, start, start, f"/s/{pid}",
                                      _item(str(pid), [])))
        for k, pid in enumerate(l2a):
            if k % 10 == 9:
                due += 1  # no L3B yet
                continue
            b = ProductId(Level.L3B, pid.sensor, tile, pid.start, "AGS")
            recs.append(ProductRecord(str(b), "L3B", tile, pid.start, pid.start, f"/s/{b}",
                                      _item(str(b), [str(pid)])))
        for i, (m0, m1) in enumerate(months):
            _, w0, w1 = l3a_window(m0, m1, 23)
            inputs = [str(p) for p in l2a if w0 <= p.start.date() <= w1]
            if i == 5:
                inputs = inputs[:-1]  # a late input: the month is due again
                due += 1
            pid = ProductId(Level.L3A, "S2", tile, dt.datetime.combine(m0, dt.time(), UTC),
                            "AGS", dt.datetime.combine(m1, dt.time(), UTC))
            recs.append(ProductRecord(str(pid), "L3A", tile, pid.start, pid.end, f"/s/{pid}",
                                      _item(str(pid), inputs)))
    return recs, due


def overhead(n_products: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agriseries-bench-"))
    try:
        (tmp / "inbox").mkdir()
        site = site_from_dict({
            "name": "bench", "area": {"tiles": TILES},
            "season": {"start": "2018-01-01", "end": "2018-12-31"},
            "products": {"L3B": {"variables": ["LAI"]}},
            "inbox": {"path": str(tmp / "inbox"), "settle_s": 0}, "store": str(tmp / "store")})
        recs, due = catalogue(n_products, site)
        js = site.job_store()
        for i in range(0, len(recs), 2000):
            js.add_products(recs[i:i + 2000])
        print(f"database: {js.url}")
        print(f"catalogue: {len(recs)} products on {len(site.tiles)} tiles "
              f"({sum(r.level == 'L2A' for r in recs)} L2A, "
              f"{sum(r.level == 'L3B' for r in recs)} L3B, "
              f"{sum(r.level == 'L3A' for r in recs)} L3A); {due} jobs due")
        runner = Runner(site, js, engine=lambda: None, watch=False, poll_s=60,
                         today=dt.date(2019, 3, 1), on_event=None, stop=threading.Event(),
                         local_slots=2)
        t = time.perf_counter()
        n_new = runner.plan(sync_catalogue=False)
        t_plan = time.perf_counter() - t
        assert n_new == due, (n_new, due)
        t = time.perf_counter()
        n = 0
        while True:
            jobs = js.claim(runner.id, limit=1)
            if not jobs:
                break
            job = jobs[0]
            if job.processor == "L3B":  # the product the processor would make
                src = ProductId.parse(job.inputs[0])
                out = ProductId(Level.L3B, src.sensor, src.tile, src.start, "AGS")
            else:
                m0, m1 = parse_period(job.params["period"])
                out = l3a_id(job.tile, m0, m1, [ProductId.parse(i).sensor for i in job.inputs])
            js.add_products([ProductRecord.from_id(out, f"/s/{out}",
                                                   item=_item(str(out), list(job.inputs)))])
            js.complete(job, [str(out)])
            n += 1
        t_book = time.perf_counter() - t
        t = time.perf_counter()
        again = runner.plan(sync_catalogue=False)
        t_idle = time.perf_counter() - t
        per_job = 1000 * (t_plan + t_book) / n
        print(f"planning pass: {1000 * t_plan:.0f} ms for {n_new} new jobs "
              f"({1000 * t_plan / n_new:.2f} ms per job)")
        print(f"claim + register product + complete: {1000 * t_book / n:.2f} ms per job")
        print(f"scheduling overhead per job: {per_job:.2f} ms (target < 50 ms)")
        print(f"planning pass with nothing due (steady state): {1000 * t_idle:.0f} ms "
              f"({again} new jobs)")
        js.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _covered_tiles(n: int) -> list[str]:
    from agriseries.core.grid import tile_footprint, tiles_for_geometry
    from agriseries.io.landsat import read_landsat

    fp = read_landsat(str(LANDSAT)).footprint
    tiles = tiles_for_geometry(fp)

    def share(t):
        f = tile_footprint(t)
        return f.intersection(fp.to_crs(f.crs)).area / f.area

    return sorted(t.name for t in sorted(tiles, key=share, reverse=True)[:n])


def speedup(n_tiles: int, worker_counts: list[int] = (1, 2)) -> dict:
    tiles = _covered_tiles(n_tiles)
    print(f"site: {LANDSAT.name} on {len(tiles)} tiles {', '.join(tiles)}; L3A 2019-12 and L3B")
    times = {}
    for workers in worker_counts:
        tmp = Path(tempfile.mkdtemp(prefix="agriseries-bench-"))
        try:
            (tmp / "inbox").mkdir()
            (tmp / "inbox" / LANDSAT.name).symlink_to(LANDSAT, target_is_directory=True)
            site = site_from_dict({
                "name": "bench-speedup", "area": {"tiles": tiles},
                "season": {"start": "2019-12-01", "end": "2019-12-31"},
                "inbox": {"path": str(tmp / "inbox"), "settle_s": 0},
                "store": str(tmp / "store"),
                "engine": {"n_workers": workers, "threads_per_worker": 1,
                           "memory_limit": "6GiB"}})
            marks = []

            def on_event(ev, marks=marks):
                if ev.kind in ("started", "done", "failed"):
                    marks.append((ev.kind, time.perf_counter()))

            t = time.perf_counter()
            report = run(site, on_event=on_event)
            total = time.perf_counter() - t
            first = min(m for k, m in marks if k == "started")
            last = max(m for k, m in marks if k in ("done", "failed"))
            kinds = {}
            for d in report.done:
                kinds[d["processor"]] = kinds.get(d["processor"], 0) + 1
            print(f"{workers} worker(s): run {total:.1f} s, jobs {last - first:.1f} s; "
                  f"done {kinds}, failed {len(report.failed)}")
            print("   job seconds: " + ", ".join(f"{d['processor']} {d['tile']} {d['seconds']:.1f}"
                                                 for d in report.done))
            for f in report.failed:
                print(f"   failed {f['processor']} {f['tile']}: {f['error'][:200]}")
            for n in report.notes:
                print(f"   note: {n[:300]}")
            js = site.job_store()
            counts = js.counts()
            js.close()
            print(f"   jobs in the store: {counts}")
            times[workers] = (total, last - first)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    base = min(worker_counts)
    t1, j1 = times[base]
    for n in worker_counts:
        if n == base:
            continue
        tn, jn = times[n]
        print(f"speed-up {base} -> {n} workers: {t1 / tn:.2f}x (whole run), {j1 / jn:.2f}x (jobs "
              f"span); per worker {t1 / tn / (n / base):.2f} (whole run)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["overhead", "speedup", "all"], default="all")
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated worker counts of the speed-up part (1 thread each)")
    a = ap.parse_args()
    if a.part in ("overhead", "all"):
        overhead(a.products)
    if a.part in ("speedup", "all"):
        speedup(a.tiles, [int(x) for x in a.workers.split(",")])


if __name__ == "__main__":
    main()
