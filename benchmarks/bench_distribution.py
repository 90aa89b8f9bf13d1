"""Distribution benchmarks, each with a baseline measured in the same run (ratios printed).

    python benchmarks/bench_distribution.py STORE [--items 10000,100000]
        [--backends geoparquet,pgstac] [--clients 1,10,50] [--requests 300] [--zip-gb 10]
        [--only publish,search,assets,zip] [--baseline-pgstac 500] [--baseline-geoparquet 3000]
        [--search-s 60] [--gp-layout new,old] [--pgstac-hydrate api,database]

STORE: a product store whose products are published (the demo site's, or the tests'); its
real L2A items are copied with new ids and dates (same footprints, same files) to make the
catalogues. Nothing in STORE is modified: catalogues, accounts and the production database
of the backlog live in a temporary folder; pgstac runs on a PostgreSQL server started for
the run (the tests' ``PostgresServer``: Debian's postgresql + postgis).

* publish: the catalogue write before and after the bulk load / deferred rewrites, on the
  same items in batches of 500 (``--baseline-pgstac`` items, ``pgstac.upsert_items`` vs the
  bulk load; ``--baseline-geoparquet`` items, a file rewrite per batch vs one), then a
  backlog of N products in a production database's outbox (SQLite) drained by the publisher
  into each backend, as ``agriseries publish`` does (the time to drain, items/s);
* search: catalogues of N synthetic items made from one real published L2A item of STORE
  (:func:`synth_items`: a 10 x 10 grid of tiles over ten years, id / datetime / tile /
  footprint / cloud cover varied), generated and written a piece at a time (pgstac: the
  first piece through the publisher, the rest by pypgstac's ``Loader``, COPY; embedded: the
  publisher's file writer ``write_items``; ``--gp-layout new,old`` also builds the file as
  it was written before, id order in one row group); ``agriseries serve`` on each, loaded
  from a **second process** (this script with ``--client``, asyncio + httpx) by 1, 10 and
  50 concurrent clients, ``--requests`` STAC searches per level or ``--search-s`` seconds
  (20-day date range + CQL2 cloud filter, 10 items a page): p50/p95 and req/s, against
  ``/_mgmt/ping`` of the same service under the same load (the framework's floor);
  ``--pgstac-hydrate database,api`` runs a service of each hydration setting over the same
  pgstac catalogue, checks their first pages are the same bytes and measures them one after
  the other at each level; then the portal's look-up by product id (one client);
* assets: one published file downloaded repeatedly through ``/assets`` (token, Range-capable
  route) by 1 and 4 clients of the second process, against ``python -m http.server``
  serving the same file in the same run (MB/s, ratio);
* zip: a basket of about ``--zip-gb`` GB (many catalogue items sharing the store's real
  files: nothing is copied) streamed as ``archive.zip``; the service's resident memory is
  sampled during the stream and compared with a basket of a tenth of the size (flat: the
  same peak whatever the size).

Every phase is bounded (requests, bytes, a time limit): minutes in all on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


# ------------------------------------------------------------------ the load client (2nd process)

async def _load(url: str, method: str, bodies: list, conc: int, headers: dict, limit_s: float,
                count_bytes: bool) -> dict:
    lat: list[float] = []
    nbytes = 0
    errors = 0
    q: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        q.put_nowait(b)
    t_end = time.perf_counter() + limit_s
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as c:
        async def worker():
            nonlocal nbytes, errors
            while not q.empty() and time.perf_counter() < t_end:
                b = q.get_nowait()
                t = time.perf_counter()
                if method == "POST":
                    r = await c.post(url, json=b)
                    n = len(r.content)
                else:
                    n = 0
                    async with c.stream("GET", url) as r:
                        async for chunk in r.aiter_raw(1 << 20):
                            n += len(chunk)
                if r.status_code != 200:
                    errors += 1
                lat.append(time.perf_counter() - t)
                nbytes += n

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(conc)])
        wall = time.perf_counter() - t0
    lat.sort()
    return {"n": len(lat), "errors": errors, "wall": wall, "bytes": nbytes,
            "p50": statistics.median(lat) if lat else None,
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None}


def client_main(a) -> None:
    spec = json.loads(Path(a.client).read_text())
    res = asyncio.run(_load(spec["url"], spec["method"], spec["bodies"], spec["conc"],
                            spec.get("headers", {}), spec.get("limit_s", 60),
                            spec.get("bytes", False)))
    print(json.dumps(res))


def load(tmp: Path, **spec) -> dict:
    """Run the load client in its own process; its figures."""
    f = tmp / "load.json"
    f.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, __file__, "--client", str(f)], capture_output=True,
                         text=True, timeout=spec.get("limit_s", 60) + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ helpers

def base_items(store: Path) -> list[tuple[Path, dict]]:
    """The store's L2A items (item file, item)."""
    out = []
    for f in sorted(store.glob("L2A/*/*/*/*.json")):
        if f.stem == f.parent.name:
            out.append((f, json.loads(f.read_text())))
    if not out:
        sys.exit(f"{store}: no L2A product (STORE/L2A/<tile>/<year>/<id>/<id>.json)")
    return out


def synth(base: list[tuple[Path, dict]], n: int, start: int = 0) -> list[tuple[Path, dict]]:
    t0 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    out = []
    for i in range(start, start + n):
        path, item = base[i % len(base)]
        it = copy.deepcopy(item)
        it["id"] = f"{item['id']}-{i:07d}"
        it["collection"] = "agriseries-l2a"
        when = (t0 + dt.timedelta(hours=3 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        it["properties"]["datetime"] = when
        it["properties"].pop("start_datetime", None)
        it["properties"].pop("end_datetime", None)
        out.append((path, it))
    return out


# ------------------------------------------------------------------ search catalogues (streamed)

#: The synthetic catalogue of the search benchmark: a grid of tiles (10 x 10, about one
#: MGRS tile apart, over western Europe) observed at regular dates over ten years; a
#: catalogue of N items has N / 100 dates per tile (36 days apart at 10,000, 3.7 at 100,000).
GRID = 10
SPAN = (dt.datetime(2016, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
_SQ_COL, _SQ_ROW = "ABCDEFGHJKLMNPQRSTUVWXYZ", "ABCDEFGHJKLMNPQRSTUV"


def template_item(store: Path, base: list[tuple[Path, dict]]) -> dict:
    """The published form (:func:`published_item`) of one real L2A item of the store: a
    Sentinel-2 one with the most assets (the largest item), the first by id among those."""
    from agriseries.distribution.items import published_item

    s2 = [b for b in base if b[1]["properties"].get("constellation") == "sentinel-2"] or base
    path, item = min(s2, key=lambda b: (-len(b[1].get("assets", {})), b[1]["id"]))
    return published_item(item, path, store)


def _tile(k: int) -> tuple[str, str, list[list[float]]]:
    """Tile ``k`` of the grid: its name, EPSG code and footprint (lon/lat ring)."""
    col, row = k % GRID, k // GRID
    lon0, lat0 = -4.0 + 1.2 * col, 43.0 + 0.9 * row
    zone = int((lon0 + 0.7 + 180) // 6) + 1
    band = "CDEFGHJKLMNPQRSTUVWX"[int((lat0 + 0.5 + 80) // 8)]
    name = f"T{zone}{band}{_SQ_COL[col + 4]}{_SQ_ROW[row + 4]}"
    ring = [[lon0, lat0], [lon0 + 1.4, lat0], [lon0 + 1.4, lat0 + 1.0], [lon0, lat0 + 1.0],
            [lon0, lat0]]
    return name, f"EPSG:326{zone:02d}", ring


def synth_items(template: dict, n: int, piece: int = 1000, order: str = "datetime"):
    """``n`` published items made from ``template`` (id, datetime, tile, footprint and cloud
    cover varied; assets, lineage and extensions the template's), in pieces of ``piece``
    items: a catalogue of any size in bounded memory. Tile ``k``'s dates are offset by
    ``k / 100`` of the revisit, so that every date range holds items. ``order``:
    ``datetime`` (the published file's order) or ``tile`` (tile by tile, i.e. about the
    id order the embedded catalogue wrote its files in before)."""
    tiles = GRID * GRID
    dates = max(1, -(-n // tiles))
    step = (SPAN[1] - SPAN[0]) / dates
    tmpl = json.dumps(template)
    old_tile = template["properties"]["agriseries:tile"]
    old_stamp = template["id"].split("_")[3]
    seq = range(n) if order == "datetime" else sorted(range(n), key=lambda i: (i % tiles, i))
    out = []
    for i in seq:
        d, k = divmod(i, tiles)
        name, epsg, ring = _tile(k)
        when = (SPAN[0] + (d + k / tiles) * step).replace(microsecond=0)
        it = json.loads(tmpl)
        it["id"] = it["id"].replace(old_tile, name).replace(old_stamp,
                                                            when.strftime("%Y%m%dT%H%M%S"))
        p = it["properties"]
        p["datetime"] = p["start_datetime"] = p["end_datetime"] = when.strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        p["agriseries:tile"], p["grid:code"], p["proj:code"] = name, f"MGRS-{name[1:]}", epsg
        p["eo:cloud_cover"] = float((i * 37) % 101)
        it["geometry"] = {"type": "Polygon", "coordinates": [ring]}
        it["bbox"] = [ring[0][0], ring[0][1], ring[2][0], ring[2][1]]
        out.append(it)
        if len(out) == piece:
            yield out
            out = []
    if out:
        yield out


def synth_extent(n: int) -> dict:
    """The extent of :func:`synth_items` (``n``) without making the items."""
    from agriseries.distribution.items import extent_of

    rings = [_tile(k)[2] for k in range(GRID * GRID)]
    last = synth_items_last_datetime(n)
    return extent_of([{"bbox": [min(r[0][0] for r in rings), min(r[0][1] for r in rings),
                                max(r[2][0] for r in rings), max(r[2][1] for r in rings)],
                       "properties": {"start_datetime": SPAN[0].isoformat(),
                                      "end_datetime": last}}])


def synth_items_last_datetime(n: int) -> str:
    tiles = GRID * GRID
    dates = max(1, -(-n // tiles))
    d, k = divmod(n - 1, tiles)
    return (SPAN[0] + (d + k / tiles) * ((SPAN[1] - SPAN[0]) / dates)).replace(
        microsecond=0).isoformat()


def search_catalogue_gp(folder: Path, template: dict, n: int, store: Path,
                        layout: str = "new") -> None:
    """An embedded catalogue folder of ``n`` synthetic items: the collection's parquet file
    written in pieces (:func:`write_items`) and the collection list (the index is left
    empty: the service reads only these two). ``layout``: ``new``, the publisher's
    (datetime order, row groups of ROW_GROUP_ITEMS); ``old``, the one before (id order,
    one row group: rustac's default)."""
    from agriseries.distribution.catalog import geoparquet as gp
    from agriseries.io.durable import atomic_write
    from agriseries.distribution.items import level_collection

    gp.GeoparquetCatalog(folder)
    cid = template["collection"]
    kw = {} if layout == "new" else {"row_group_items": 1 << 20}
    gp.write_items(folder / f"{cid}.parquet", itertools.chain.from_iterable(
        synth_items(template, n, order="datetime" if layout == "new" else "tile")), **kw)
    col = level_collection(cid, [], store)
    col["extent"] = synth_extent(n)
    col["assets"] = {"data": {"href": f"./{cid}.parquet", "type": gp.GEOPARQUET_MEDIA_TYPE,
                              "roles": ["data"]}}
    atomic_write(folder / "collections.json", json.dumps([col]).encode())


def search_catalogue_pg(dsn: str, template: dict, n: int, store: Path) -> None:
    """A pgstac catalogue of ``n`` synthetic items: the first piece published as the
    publisher does (the collection with it), the rest loaded by pypgstac's ``Loader``
    (COPY into the partition, a piece at a time), then the collection's extent and
    ANALYZE."""
    import psycopg
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    from agriseries.distribution.catalog.pgstac import PgstacCatalog
    from agriseries.distribution.items import level_collection

    pieces = synth_items(template, n, piece=2000)
    cat = PgstacCatalog(dsn, timeout_s=600)
    cat.apply(next(pieces), [], store)
    cat.close()
    db = PgstacDB(dsn=dsn)
    try:
        Loader(db).load_items(itertools.chain.from_iterable(pieces), insert_mode=Methods.insert,
                              chunksize=2000)
    finally:
        db.close()
    col = level_collection(template["collection"], [], store)
    col["extent"] = synth_extent(n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgstac.upsert_collection(%s::jsonb)", (json.dumps(col),))
        conn.execute("ANALYZE")
        got = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]
    assert got == n, (got, n)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Serve:
    def __init__(self, store: Path, tmp: Path, *args: str) -> None:
        from serve_helpers import ServeProcess

        self.p = ServeProcess(["--store", str(store)], "--service-db",
                              str(tmp / "service.sqlite"), *args, log_dir=tmp, start_s=120)

    def __enter__(self):
        self.p.start()
        return self.p

    def __exit__(self, *exc):
        self.p.stop()


def cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "agriseries.cli", *args], check=True,
                          capture_output=True, text=True, timeout=600).stdout


# ------------------------------------------------------------------ phases

def _upsert_items_catalog(cat):
    """The pgstac catalogue ``cat`` (migrated) opened again with the write before the bulk
    load (the baseline): ``pgstac.upsert_items`` of the whole batch, in the same
    transaction as the collection update."""
    from agriseries.distribution.catalog.pgstac import PgstacCatalog

    class UpsertItems(PgstacCatalog):
        def _load_items(self, cur, items):
            cur.execute("SELECT pgstac.upsert_items(%s::jsonb)", (json.dumps(items),))

    cat.close()
    return UpsertItems(cat.dsn, timeout_s=cat.timeout_s, migrate=False)


def _record(tmp, name, n, items):
    """A production database (SQLite job store) holding ``items`` as products with their
    outbox rows (what production writes); its URL and the time it took."""
    from agriseries.production.catalogue import ProductCatalogue
    from agriseries.production.records import ProductRecord

    db = f"sqlite:///{tmp / f'jobs-{name}-{n}.sqlite'}"
    pc = ProductCatalogue(db)
    t = time.perf_counter()
    for i in range(0, len(items), 1000):
        recs = []
        for path, it in items[i:i + 1000]:
            when = dt.datetime.fromisoformat(it["properties"]["datetime"].replace("Z", "+00:00"))
            recs.append(ProductRecord(it["id"], "L2A", path.parts[-4], when, when, str(path), it))
        pc.add_products(recs)
    record = time.perf_counter() - t
    pc.close()
    return db, record


def bench_publish(store, base, n, backends, tmp, baseline_n) -> dict:
    """Publication, per backend: (1) the write before this change against the write now, on
    the same ``baseline_n`` items in batches of 500 (pgstac: ``pgstac.upsert_items`` against
    the bulk load; geoparquet: a rewrite of the collection's file per batch against batches
    deferred and one rewrite); (2) the drain of a backlog of ``n`` products through the
    outbox of a production database, as ``agriseries publish`` does (time, items/s)."""
    from agriseries.distribution.items import published_item
    from agriseries.distribution.publisher import Publisher

    out = {}
    for name, make in backends.items():
        m = min(n, baseline_n[name])
        pubs = [published_item(it, path, store) for path, it in synth(base, m)]
        cat = make(f"before-{m}")
        if name == "pgstac":
            cat = _upsert_items_catalog(cat)
        t = time.perf_counter()
        for i in range(0, m, 500):
            cat.apply(pubs[i:i + 500], [], store)
        before = time.perf_counter() - t
        cat.close()
        cat = make(f"after-{m}")
        t = time.perf_counter()
        for i in range(0, m, 500):
            cat.apply(pubs[i:i + 500], [], store, **({"defer": True} if name != "pgstac" else {}))
        if name != "pgstac":
            cat.flush(store)
        after = time.perf_counter() - t
        cat.close()
        del pubs
        print(f"publish {m} items in batches of 500, {name}: before {before:.1f} s "
              f"({m / before:.1f} items/s), now {after:.1f} s ({m / after:.0f} items/s): "
              f"x{before / after:.1f}; load average {os.getloadavg()[0]:.1f}", flush=True)
        items = synth(base, n)
        db, record = _record(tmp, name, n, items)
        del items
        pub = Publisher(db, make(f"drain-{n}"), store, timeout_s=300)
        t = time.perf_counter()
        rep = pub.drain()
        drain = time.perf_counter() - t
        count = pub.backend.count()
        pub.close()
        assert rep.published == n and rep.backlog == 0 and count == n, (rep, count)
        out[name] = (before, after, drain)
        print(f"publish: a backlog of {n} products drained into {name} in {drain:.1f} s "
              f"({n / drain:.0f} items/s; production recorded them with their outbox rows in "
              f"{record:.1f} s); load average {os.getloadavg()[0]:.1f}", flush=True)
    return out


def bench_search(store, n, backend, variants, clients, requests, tmp, limit_s=60.0) -> None:
    """POST /search (collection + 20-day datetime range + CQL2 cloud filter, 10 a page)
    by ``clients`` concurrent clients of a second process, ``requests`` per level or
    ``limit_s`` seconds, whichever ends first; the same service's ``/_mgmt/ping`` under the
    same concurrency as the floor. ``variants``: ``(label, serve arguments)`` of services
    over the same catalogue (pgstac: ``--pgstac-hydrate database`` and ``api``), all up at
    once and measured one after the other at each level, so that they share the minutes'
    load. Then, one client, the look-up by product id a portal request makes (``POST
    /search`` with ``ids``: the service asks it at every tile, pixel series, quicklook and
    layers request on pgstac, where nothing is remembered) and ``GET /portal/api/layers``."""
    bodies = [{"collections": ["agriseries-l2a"], "limit": 10,
               "datetime": f"{SPAN[0].year + k % 10}-{1 + k % 12:02d}-01T00:00:00Z/"
                           f"{SPAN[0].year + k % 10}-{1 + k % 12:02d}-20T00:00:00Z",
               "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}}
              for k in range(requests)]
    with contextlib.ExitStack() as stack:
        svcs = [(f"{backend}{f', {label}' if label else ''}",
                 stack.enter_context(Serve(store, tmp, *args))) for label, args in variants]
        first = None
        for name, svc in svcs:
            got = []
            for b in bodies[:12]:
                r = httpx.post(f"{svc.url}/search", json=b, timeout=120)
                assert r.status_code == 200, r.text
                got.append(r.json()["features"])
            assert min(map(len, got)) > 0, got  # every date range holds items
            text = json.dumps(got).replace(svc.url, "SERVICE")  # its links name its port
            if first is None:
                first, first_text = got, text
            else:  # the same answers, byte for byte, whichever variant
                assert text == first_text, name
            print(f"search {name}, {n} items: {sum(map(len, got)) / len(got):.1f} items a "
                  f"page (limit 10) on the first {len(got)} searches", flush=True)
        pid = first[0][0]["id"]
        for conc in clients:
            for name, svc in svcs:
                s = load(tmp, url=f"{svc.url}/search", method="POST", bodies=bodies,
                         conc=conc, limit_s=limit_s)
                la = os.getloadavg()[0]
                p = load(tmp, url=f"{svc.url}/_mgmt/ping", method="GET",
                         bodies=[0] * requests, conc=conc, limit_s=20)
                print(f"search {name}, {n} items, {conc:2d} client(s): p50 "
                      f"{1000 * s['p50']:.0f} ms, p95 {1000 * s['p95']:.0f} ms, "
                      f"{s['n'] / s['wall']:.1f} req/s ({s['n']} requests in {s['wall']:.0f} s, "
                      f"{s['errors']} errors); ping p50 {1000 * p['p50']:.1f} ms, "
                      f"{p['n'] / p['wall']:.0f} req/s: search/ping p50 "
                      f"x{s['p50'] / p['p50']:.0f}; load average {la:.1f}", flush=True)
        for name, svc in svcs:
            ids = load(tmp, url=f"{svc.url}/search", method="POST",
                       bodies=[{"ids": [pid], "limit": 2}] * min(requests, 100), conc=1,
                       limit_s=min(limit_s, 20))
            lay = load(tmp, url=f"{svc.url}/portal/api/layers?item={pid}", method="GET",
                       bodies=[0] * min(requests, 100), conc=1, limit_s=min(limit_s, 20))
            print(f"look-up {name}, {n} items, 1 client: search by id p50 "
                  f"{1000 * ids['p50']:.1f} ms ({ids['n']} requests, {ids['errors']} errors), "
                  f"/portal/api/layers p50 {1000 * lay['p50']:.1f} ms ({lay['n']} requests, "
                  f"{lay['errors']} errors); load average {os.getloadavg()[0]:.1f}", flush=True)


def bench_assets(store, base, tmp) -> None:
    """A 1 GiB file (sparse, :func:`make_zstore`) through ``/assets`` and through
    ``python -m http.server`` of the same folder, 1 and 4 clients of a second process."""
    from serve_helpers import ServeProcess

    zstore, zcat, items, big = make_zstore(store, base, tmp, 1)
    tok = cli("users", "add", "bench-dl", "--store", str(zstore), "--service-db",
              str(tmp / "dlservice.sqlite"), "--quota-gb", "100000",
              "--max-downloads", "8").strip()
    item = items[0][1]
    key = next(k for k, a in item["assets"].items() if a["href"] == big.name)
    svc = ServeProcess(["--store", str(zstore)], "--catalog-dir", str(zcat), "--service-db",
                       str(tmp / "dlservice.sqlite"), log_dir=tmp, start_s=120)
    with svc:
        href = f"{svc.url}/assets/agriseries-l2a/{item['id']}/{key}"
        h = httpx.head(href, headers={"Authorization": f"Bearer {tok}"}, timeout=60)
        assert h.status_code == 200 and int(h.headers["content-length"]) == 2**30, h.headers
        static = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind",
                                   "127.0.0.1", "--directory", str(zstore)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = static.stdout.readline()
            port = int(line.split("port ")[1].split()[0])
            surl = f"http://127.0.0.1:{port}/{big.relative_to(zstore).as_posix()}"
            for conc in (1, 4):
                reps = 2 * conc  # 2 GiB per client
                ours = load(tmp, url=href, method="GET", bodies=[0] * reps, conc=conc,
                            headers={"Authorization": f"Bearer {tok}"}, limit_s=120, bytes=True)
                base_ = load(tmp, url=surl, method="GET", bodies=[0] * reps, conc=conc,
                             limit_s=120, bytes=True)
                a_mb = ours["bytes"] / ours["wall"] / 1e6
                b_mb = base_["bytes"] / base_["wall"] / 1e6
                print(f"download of a 1 GiB file, {conc} client(s), {ours['n']} downloads: "
                      f"/assets {a_mb:.0f} MB/s ({ours['errors']} errors), python http.server "
                      f"{b_mb:.0f} MB/s ({base_['errors']} errors): ratio {a_mb / b_mb:.2f}",
                      flush=True)
        finally:
            static.terminate()
            static.wait(10)


def make_zstore(store, base, tmp, n_big):
    """A store of one product folder of hard links (copies across file systems) whose
    largest file is replaced by a sparse 1 GiB file (no block written), published under
    ``n_big`` ids in an embedded catalogue: (store, catalogue folder, items, big file)."""
    import shutil

    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog
    from agriseries.distribution.items import published_item

    path, item = base[0]
    zstore = tmp / "zstore"
    folder = zstore / path.parent.relative_to(store)
    if not folder.exists():
        folder.mkdir(parents=True)
        for f in path.parent.iterdir():
            if f.is_file():
                try:
                    os.link(f, folder / f.name)
                except OSError:
                    shutil.copy2(f, folder / f.name)
    big = max((a["href"] for a in item["assets"].values()),
              key=lambda h: (path.parent / h).stat().st_size)
    (folder / big).unlink()
    with open(folder / big, "wb") as fh:
        fh.truncate(2**30)
    items = [(folder / path.name, it) for _, it in synth([(path, item)], n_big)]
    zcat = tmp / f"zcat-{n_big}"
    cat = GeoparquetCatalog(zcat, timeout_s=300)
    cat.apply([published_item(it, p, zstore) for p, it in items], [], zstore)
    cat.close()
    return zstore, zcat, items, folder / big


def bench_zip(store, base, zip_gb, tmp) -> None:
    """A basket of ``zip_gb`` GB (:func:`make_zstore`), against one of a tenth of it."""
    n_big = max(2, int(round(zip_gb * 1e9 / 2**30)))
    zstore, zcat, items, _ = make_zstore(store, base, tmp, n_big)
    tok = cli("users", "add", "bench-zip", "--store", str(zstore), "--service-db",
              str(tmp / "zservice.sqlite"), "--quota-gb", "100000").strip()
    h = {"Authorization": f"Bearer {tok}"}
    from serve_helpers import ServeProcess

    svc = ServeProcess(["--store", str(zstore)], "--catalog-dir", str(zcat),
                       "--service-db", str(tmp / "zservice.sqlite"), log_dir=tmp, start_s=120)
    with svc:
        results = {}
        for k in (max(1, n_big // 10), n_big):
            ids = [it["id"] for _, it in items[:k]]
            httpx.delete(f"{svc.url}/basket", headers=h, timeout=60)
            r = httpx.post(f"{svc.url}/basket/items", headers=h, timeout=600, json={
                "items": [{"collection": "agriseries-l2a", "id": x} for x in ids]})
            assert r.status_code == 200 and r.json()["added"] == k, r.text
            pid = svc.proc.pid
            before = rss_kb(pid)
            samples, stop = [before], threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append(rss_kb(pid))
                    time.sleep(0.2)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t = time.perf_counter()
            got = 0
            with httpx.stream("GET", f"{svc.url}/basket/archive.zip", headers=h,
                              timeout=600) as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_raw(1 << 20):
                    got += len(chunk)
            wall = time.perf_counter() - t
            stop.set()
            th.join()
            results[k] = max(samples)
            print(f"basket zip {k} items, {got / 1e9:.2f} GB streamed in {wall:.0f} s "
                  f"({got / wall / 1e6:.0f} MB/s): service RSS before {before / 1024:.0f} MiB, "
                  f"peak {max(samples) / 1024:.0f} MiB", flush=True)
        lo, hi = min(results), max(results)
        print(f"basket zip memory: peak RSS at {hi} GiB-files / at {lo}: "
              f"{results[hi] / results[lo]:.2f} (flat: 1.00)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path, nargs="?")
    ap.add_argument("--items", default="10000,100000")
    ap.add_argument("--backends", default="geoparquet,pgstac")
    ap.add_argument("--clients", default="1,10,50")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--zip-gb", type=float, default=10.0)
    ap.add_argument("--only", default="publish,search,assets,zip")
    ap.add_argument("--baseline-pgstac", type=int, default=500,
                    help="publish: items of the before/now comparison on pgstac")
    ap.add_argument("--baseline-geoparquet", type=int, default=3000,
                    help="publish: items of the before/now comparison on geoparquet")
    ap.add_argument("--search-s", type=float, default=60.0,
                    help="search: time limit of each concurrency level (seconds)")
    ap.add_argument("--gp-layout", default="new",
                    help="search: embedded file layouts to compare (new, old)")
    ap.add_argument("--pgstac-hydrate", default="api",
                    help="search: where pgstac's items are hydrated, one or both of "
                         "database,api (both: the two services measured in the same run)")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client_main(a)
    store = a.store.resolve()
    only = set(a.only.split(","))
    sizes = [int(x) for x in a.items.split(",")]
    clients = [int(x) for x in a.clients.split(",")]
    names = a.backends.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="agriseries-bench-"))
    base = base_items(store)
    server = None
    backends = {}
    catalog_args = {}
    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog
    from agriseries.distribution.catalog.pgstac import PgstacCatalog

    if "pgstac" in names:
        from conftest import PostgresServer

        server = PostgresServer()
        server.start()
        dbn = [0]

        def make_pg(tag):
            import psycopg

            name = f"bench_{tag.replace('-', '_')}"
            with psycopg.connect(host=str(server.root), port=server.port, user=server.user,
                                 dbname="postgres", autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (name,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{name}"')
            dbn[0] += 1
            dsn = f"postgresql://{server.user}@127.0.0.1:{server.port}/{name}"
            catalog_args[tag] = ("--catalog-dsn", dsn)
            return PgstacCatalog(dsn, timeout_s=300)

        backends["pgstac"] = make_pg
    if "geoparquet" in names:
        def make_gp(tag):
            d = tmp / f"gp-{tag}"
            catalog_args[tag + "-gp"] = ("--catalog-dir", str(d))
            return GeoparquetCatalog(d, timeout_s=300)

        backends["geoparquet"] = make_gp
    try:
        for n in sizes:
            if "publish" in only:
                bench_publish(store, base, n, backends, tmp,
                              {"pgstac": a.baseline_pgstac, "geoparquet": a.baseline_geoparquet})
            if "search" in only:
                template = template_item(store, base)
                for name, make in backends.items():
                    for layout in (a.gp_layout.split(",") if name == "geoparquet" else [""]):
                        t = time.perf_counter()
                        if name == "pgstac":
                            cat = make(f"search-{n}")  # the database, migrated
                            cat.close()
                            search_catalogue_pg(cat.dsn, template, n, store)
                            args = catalog_args[f"search-{n}"]
                        else:
                            d = tmp / f"gp-search-{n}-{layout}"
                            search_catalogue_gp(d, template, n, store, layout)
                            args = ("--catalog-dir", str(d))
                        label = name + (f" ({layout} file layout)" if layout else "")
                        print(f"catalogue of {n} synthetic items, {label}: built in "
                              f"{time.perf_counter() - t:.0f} s (not measured: setup)",
                              flush=True)
                        variants = ([(f"{h} hydration", (*args, "--pgstac-hydrate", h))
                                     for h in a.pgstac_hydrate.split(",")]
                                    if name == "pgstac" else [("", args)])
                        bench_search(store, n, label, variants, clients, a.requests, tmp,
                                     a.search_s)
        if "assets" in only:
            bench_assets(store, base, tmp)
        if "zip" in only:
            bench_zip(store, base, a.zip_gb, tmp)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
