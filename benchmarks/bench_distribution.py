"""Search latency of the embedded catalogue (stac-fastapi-geoparquet) on 10,000 items, over
loopback HTTP, and the time to publish them.

    python benchmarks/bench_distribution.py STORE [--items 10000] [--requests 200]

STORE: a product store whose products are published (agriseries publish). The catalogue
of ``--items`` items is made in a temporary folder from the store's real items (copies
with new ids and dates, same footprints and assets); ``agriseries serve`` runs in its own
process; requests come from this process with 1 and 10 concurrent clients (bounded in
count). Prints p50/p95 latency and requests per second. (No baseline in the same run yet:
the pgstac backend and the ZIP throughput against reading the files are still to add.)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog
    from agriseries.distribution.settings import catalog_dir_of

    src = GeoparquetCatalog(catalog_dir_of(a.store))
    with src._db() as db:
        base = [json.loads(s) for (s,) in db.execute(
            "SELECT item FROM items WHERE collection = 'agriseries-l2a'")]
    tmp = Path(tempfile.mkdtemp(prefix="agriseries-bench-"))
    cat = GeoparquetCatalog(tmp / "catalog")
    items = []
    t0 = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    for i in range(a.items):
        it = copy.deepcopy(base[i % len(base)])
        it["id"] = f"{it['id']}-{i:06d}"
        it["properties"]["datetime"] = (t0 + dt.timedelta(hours=6 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items.append(it)
    t = time.perf_counter()
    cat.apply(items, [], a.store)
    print(f"publish {a.items} items into stac-geoparquet: {time.perf_counter() - t:.1f} s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "agriseries.cli", "serve", "--store", str(a.store),
                             "--port", str(port), "--catalog-dir", str(tmp / "catalog")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/_mgmt/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        bodies = [{"collections": ["agriseries-l2a"], "limit": 10,
                   "datetime": f"{2015 + k % 6}-0{1 + k % 9}-01T00:00:00Z/{2015 + k % 6}-0{1 + k % 9}-20T00:00:00Z",
                   "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}}
                  for k in range(a.requests)]
        with httpx.Client(timeout=60) as c:
            c.post(f"{url}/search", json=bodies[0])  # warm up

            def one(b):
                t = time.perf_counter()
                r = c.post(f"{url}/search", json=b)
                assert r.status_code == 200, r.text
                return time.perf_counter() - t

            for conc in (1, 10):
                t = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(conc) as ex:
                    lat = sorted(ex.map(one, bodies))
                wall = time.perf_counter() - t
                print(f"search, {a.items} items, {conc:2d} client(s): p50 {1000 * statistics.median(lat):.0f} ms, "
                      f"p95 {1000 * lat[int(0.95 * len(lat))]:.0f} ms, {len(lat) / wall:.1f} req/s")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
