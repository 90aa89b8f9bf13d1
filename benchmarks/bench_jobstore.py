"""Benchmark: scheduling overhead of the job store, with 10,000 products in the catalogue.

Issue 6 sets the target: less than 50 ms of scheduling overhead per job on SQLite with
10,000 products in the catalogue. This measures, on one database (an SQLite file in a
temporary folder by default, or ``--url``, e.g. an empty PostgreSQL database):

* the catalogue fill: ``add_products`` of 10,000 product records (20 tiles, 450 L2A
  acquisitions and 50 L3A monthly composites per tile), products per second;
* per job: ``submit`` + ``claim`` + ``complete`` (three transactions, each reading the
  database clock and the job back), in ms per job, over ``--jobs`` jobs, after
  ``--prefill-jobs`` done jobs are already in the table;
* the scheduler's question "what L2A exists for tile T between two dates" (a 30-day window,
  random tile and date), and ``has_product``, in ms per query;
* a baseline in the same run on the same engine (same connection settings): one bare
  transaction doing ``INSERT`` of one row and ``SELECT`` of it back, in ms; the ratios say
  what the job store costs over the floor of a database round trip.

Run with::

    .venv/bin/python benchmarks/bench_jobstore.py [--jobs 1000] [--prefill-jobs 10000]
    .venv/bin/python benchmarks/bench_jobstore.py --url postgresql+psycopg://user@/db?host=/sock
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from agriseries.core.ids import Level, ProductId
from agriseries.production.jobstore import JobStore, ProductRecord

UTC = dt.UTC
TILES = [f"T31U{a}{b}" for a in "CDEF" for b in "QRSTU"]  # 20 tile ids


def catalogue(n_products: int) -> list[ProductRecord]:
    """``n_products`` product records over 20 tiles: L2A acquisitions and L3A composites."""
    per_tile = n_products // len(TILES)
    n_l3a = per_tile // 10
    recs = []
    t0 = dt.datetime(2016, 1, 1, 10, 40, 21, tzinfo=UTC)
    for tile in TILES:
        for k in range(per_tile - n_l3a):
            start = t0 + dt.timedelta(days=2.5 * k)
            pid = ProductId(Level.L2A, "S2A" if k % 2 else "S2B", tile, start, "SEN2COR")
            recs.append(ProductRecord(str(pid), "L2A", tile, start, start,
                                      f"/store/L2A/{tile}/{start:%Y}/{pid}/{pid}.json",
                                      {"id": str(pid), "properties": {"eo:cloud_cover": k % 100}}))
        for m in range(n_l3a):
            y, mo = 2016 + m // 12, m % 12 + 1
            start = dt.datetime(y, mo, 1, tzinfo=UTC)
            end = (dt.datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=UTC) - dt.timedelta(days=1))
            pid = ProductId(Level.L3A, "S2L8", tile, start, "AGS", end)
            recs.append(ProductRecord(str(pid), "L3A", tile, start, end,
                                      f"/store/L3A/{tile}/{y}/{pid}/{pid}.json", None))
    return recs


def ms_per(n: int, seconds: float) -> float:
    return 1000.0 * seconds / n


def run(url: str, n_products: int, n_jobs: int, n_prefill: int, n_queries: int) -> None:
    store = JobStore(url)
    print(f"database: {store.url}")
    recs = catalogue(n_products)
    t = time.perf_counter()
    for i in range(0, len(recs), 2000):
        store.add_products(recs[i:i + 2000])
    fill = time.perf_counter() - t
    print(f"catalogue: {len(recs)} products added in {fill:.2f} s "
          f"({len(recs) / fill:,.0f} products/s)")

    # baseline: a bare INSERT + SELECT transaction on the same engine
    base = sa.Table("bench_baseline", sa.MetaData(), sa.Column("k", sa.String(64), primary_key=True),
                    sa.Column("v", sa.Text))
    engine = store.engine
    base.drop(engine, checkfirst=True)
    base.create(engine)
    n_base = max(200, n_jobs)
    t = time.perf_counter()
    for i in range(n_base):
        with engine.begin() as conn:
            conn.execute(base.insert().values(k=f"k{i}", v="x" * 200))
            conn.execute(sa.select(base).where(base.c.k == f"k{i}")).one()
    baseline = ms_per(n_base, time.perf_counter() - t)
    base.drop(engine)

    def cycle(i: int, timings: dict[str, float] | None) -> None:
        inputs = [recs[(7 * i + j) % len(recs)].product_id for j in range(3)]
        t0 = time.perf_counter()
        store.submit("composite", inputs, {"window_days": 30, "i": i}, tile=TILES[i % len(TILES)])
        t1 = time.perf_counter()
        (job,) = store.claim("bench-runner")
        t2 = time.perf_counter()
        store.complete(job, [f"L3A_S2_{TILES[i % len(TILES)]}_20180701-20180731_AGS"])
        t3 = time.perf_counter()
        if timings is not None:
            timings["submit"] += t1 - t0
            timings["claim"] += t2 - t1
            timings["complete"] += t3 - t2

    t = time.perf_counter()
    for i in range(n_prefill):
        cycle(10_000_000 + i, None)
    if n_prefill:
        print(f"prefill: {n_prefill} done jobs in {time.perf_counter() - t:.1f} s")
    timings = {"submit": 0.0, "claim": 0.0, "complete": 0.0}
    t = time.perf_counter()
    for i in range(n_jobs):
        cycle(i, timings)
    per_job = ms_per(n_jobs, time.perf_counter() - t)

    rng = random.Random(0)
    windows = []
    for _ in range(n_queries):
        start = dt.datetime(2016, 1, 1, tzinfo=UTC) + dt.timedelta(days=rng.randrange(0, 1100))
        windows.append((rng.choice(TILES), start, start + dt.timedelta(days=30)))
    found = []
    t = time.perf_counter()
    for tile, start, end in windows:
        found.append(len(store.products("L2A", tile, start, end)))
    per_query = ms_per(n_queries, time.perf_counter() - t)
    ids = [rng.choice(recs).product_id for _ in range(n_queries)]
    t = time.perf_counter()
    assert all(store.has_product(p) for p in ids)
    per_has = ms_per(n_queries, time.perf_counter() - t)
    counts = store.counts()
    store.close()

    print(f"baseline (INSERT + SELECT, one transaction): {baseline:.2f} ms")
    print(f"job cycle submit + claim + complete: {per_job:.2f} ms per job "
          f"({per_job / baseline:.1f} x baseline; target < 50 ms) over {n_jobs} jobs, "
          f"{counts['done']} done jobs in the table at the end")
    print("  " + ", ".join(f"{k} {ms_per(n_jobs, v):.2f} ms" for k, v in timings.items()))
    print(f"'what L2A exists for tile T in 30 days': {per_query:.2f} ms per query "
          f"({per_query / baseline:.1f} x baseline; {statistics.mean(found):.1f} products found "
          f"on average) among {len(recs)} products")
    print(f"has_product: {per_has:.2f} ms ({per_has / baseline:.1f} x baseline)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="database URL (default: an SQLite file in a temporary folder)")
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--prefill-jobs", type=int, default=0,
                    help="done jobs to put in the table before measuring")
    ap.add_argument("--queries", type=int, default=500)
    a = ap.parse_args()
    if a.url:
        run(a.url, a.products, a.jobs, a.prefill_jobs, a.queries)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{Path(tmp) / 'jobs.db'}", a.products, a.jobs, a.prefill_jobs,
                a.queries)


if __name__ == "__main__":
    main()
