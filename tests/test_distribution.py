"""The distribution service, for real: a production run makes products, the publisher
drains its outbox into the catalogue, ``agriseries serve`` runs as its own process on a
loopback port, and every request goes over HTTP.

The products are those of the demo site's inbox (real Sentinel-2 and Landsat 8 series of a
WorldCereal patch, tests/data/production): 19 products in 3 collections.

Sockets: pytest runs with ``--disable-socket``; this module connects to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from agriseries.production.runner import run
from agriseries.production.site import load_site

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import ServeProcess, free_port  # noqa: E402

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

INBOX = Path(__file__).parent / "data" / "production" / "inbox"


class Service(ServeProcess):
    """``agriseries serve --store STORE ARGS`` in its own process on a loopback port."""

    def __init__(self, store: Path, *args: str) -> None:
        self.store = store
        super().__init__(["--store", str(store)], *args, log_dir=store.parent)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "agriseries.cli", *args], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if check and res.returncode != 0:
        raise AssertionError(f"agriseries {' '.join(args)}: {res.returncode}\n{res.stdout}\n"
                             f"{res.stderr}")
    return res


# ------------------------------------------------------------------ the production


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site produced once for the module: 13 L2A, 2 L3A, 12 L3B (LAI) products."""
    tmp = tmp_path_factory.mktemp("distribution")
    inbox = tmp / "inbox"
    inbox.mkdir()
    for f in INBOX.glob("*.nc"):
        shutil.copy2(f, inbox / f.name)
    d = {"name": "flanders-distribution", "area": {"tiles": ["T31UDS"]},
         "season": {"start": "2018-06-01", "end": "2018-07-31"},
         "products": {"L3A": {"schedule": "monthly"},
                      "L3B": {"sensors": ["S2"], "variables": ["LAI"]}},
         "inbox": {"path": str(inbox), "settle_s": 0}, "store": str(tmp / "store"),
         "database": {"statement_timeout_s": 10}, "engine": {"n_workers": 2, "memory_limit": "2GiB"}}
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(d))
    s = load_site(path)
    report = run(s)
    assert not report.failed, report.failed
    return s


def product_ids(site) -> set[str]:
    js = site.job_store()
    try:
        return {r.product_id for r in js.products()}
    finally:
        js.close()


@pytest.fixture(scope="module", params=["geoparquet", "pgstac"])
def backend(request) -> tuple[str, tuple[str, ...]]:
    """The catalogue backend and the command-line arguments that select it: the embedded
    stac-geoparquet files, or pgstac in a fresh database of the session's PostgreSQL server
    (with PostGIS; pypgstac migrates it when the publisher opens it)."""
    if request.param == "geoparquet":
        return "geoparquet", ()
    server = request.getfixturevalue("postgres_server")
    from sqlalchemy.engine import make_url

    name = make_url(server.create_database()).database
    return "pgstac", ("--catalog-dsn", f"postgresql://{server.user}@127.0.0.1:{server.port}/{name}")


def open_catalog(backend):
    if backend[0] == "pgstac":
        from agriseries.distribution.catalog.pgstac import PgstacCatalog

        return PgstacCatalog(backend[1][1], migrate=False)
    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog
    from agriseries.distribution.settings import catalog_dir_of

    return GeoparquetCatalog(catalog_dir_of(backend[2]))


@pytest.fixture(scope="module")
def published(site, backend):
    """The site's products published into the backend's catalogue (``agriseries publish``;
    ``--all`` queues them again for the second backend)."""
    res = cli("publish", str(site.source), "--json", "--all", *backend[1])
    rep = json.loads(res.stdout)
    assert rep["published"] == len(product_ids(site)) and rep["backlog"] == 0, rep
    return site


@pytest.fixture(scope="module")
def service(published, backend):
    svc = Service(Path(published.store), *backend[1]).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def token(site) -> str:
    return cli("users", "add", "alice", "--store", str(site.store)).stdout.strip()


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# ------------------------------------------------------------------ outbox and publisher


def test_outbox_one_row_per_product_written_with_it(tmp_path):
    """Recording products writes their outbox rows in the same transaction; re-recording
    an unchanged item writes none; removing writes a removal."""
    from agriseries.production.jobstore import JobStore
    from agriseries.production.outbox import Outbox

    url = str(tmp_path / "jobs.sqlite")
    js = JobStore(url)
    item = {"type": "Feature", "id": "L2A_S2A_T31UDS_20180620T105211_SEN2COR"}
    js.add_product(item["id"], tmp_path / "x.json", item=item)
    js.add_product(item["id"], tmp_path / "x.json", item=item)  # unchanged: no new row
    ob = Outbox(url)
    assert [(e.product_id, e.op) for e in ob.due()] == [(item["id"], "publish")]
    js.add_product(item["id"], tmp_path / "x.json", item={**item, "properties": {}})
    assert js.remove_product(item["id"])
    assert [e.op for e in ob.due()] == ["publish", "publish", "remove"]
    assert ob.backlog()["pending"] == 3
    js.close()
    ob.close()


def test_publish_drains_outbox_once(published, backend):
    """Every product published, once; publishing again has nothing to do; publishing
    everything again still leaves one copy of each."""
    cat = open_catalog((*backend, published.store))
    try:
        assert cat.ids() == product_ids(published)
        rep = json.loads(cli("publish", str(published.source), "--json", *backend[1]).stdout)
        assert rep["published"] == 0 and rep["backlog"] == 0
        rep = json.loads(cli("publish", str(published.source), "--json", "--all",
                             *backend[1]).stdout)
        assert rep["published"] == len(product_ids(published))
        assert cat.count() == len(product_ids(published))
    finally:
        cat.close()


# ------------------------------------------------------------------ the STAC API


def assert_valid(doc: dict, kind: str) -> None:
    """A served document valid against the STAC core schema and every extension it
    declares (offline schemas: tests/stac_offline.py, tests/data/stac_schemas)."""
    from stac_offline import assert_valid_stac

    assert doc.get("type") == {"item": "Feature", "collection": "Collection"}[kind], doc
    assert_valid_stac(doc)


@pytest.fixture()
def c(service):
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


def test_landing_collections_items(service, published, c):
    land = c.get("/").json()
    assert land["type"] == "Catalog"
    conf = c.get("/conformance").json()["conformsTo"]
    for cls in ("https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/ogcapi-features",
                "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
                "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
                "https://api.stacspec.org/v1.0.0/item-search#sort",
                "https://api.stacspec.org/v1.0.0/item-search#fields"):
        assert cls in conf, cls
    cols = c.get("/collections").json()["collections"]
    assert sorted(x["id"] for x in cols) == ["agriseries-l2a", "agriseries-l3a", "agriseries-l3b"]
    for col in cols:
        assert_valid(col, "collection")
        assert "assets" not in col or all(not a["href"].startswith("/") for a in
                                           col["assets"].values()), "a server path leaked"
    items = c.get("/collections/agriseries-l2a/items", params={"limit": 100}).json()
    n_l2a = sum(i.startswith("L2A_") for i in product_ids(published))
    assert items["type"] == "FeatureCollection" and len(items["features"]) == n_l2a > 5
    for f in items["features"]:
        assert_valid(f, "item")
        assert f["collection"] == "agriseries-l2a"
        assert {ln["rel"] for ln in f["links"]} >= {"self", "root", "parent", "collection"}
        for a in f["assets"].values():
            assert a["href"].startswith(f"{service.url}/assets/agriseries-l2a/{f['id']}/")
    one = c.get(f"/collections/agriseries-l2a/items/{items['features'][0]['id']}").json()
    assert one["id"] == items["features"][0]["id"]
    assert_valid(one, "item")
    every = c.get("/search", params={"limit": 100}).json()["features"]  # every level
    assert len(every) == len(product_ids(published))
    for f in every:
        assert_valid(f, "item")
    assert c.get("/collections/agriseries-l2a/items/nothing").status_code == 404


def test_search(service, published, c):
    ids = product_ids(published)
    # paging through everything
    seen, page = [], {"limit": 5}
    r = c.post("/search", json=page).json()
    while True:
        seen += [f["id"] for f in r["features"]]
        nxt = [ln for ln in r["links"] if ln["rel"] == "next"]
        if not nxt:
            break
        r = c.post(nxt[0]["href"], json=nxt[0]["body"]).json()
    assert sorted(seen) == sorted(ids)
    # datetime, collection, CQL2 filter on cloud cover, sort
    june = c.post("/search", json={"collections": ["agriseries-l2a"],
                                   "datetime": "2018-06-01T00:00:00Z/2018-06-30T23:59:59Z",
                                   "limit": 100}).json()["features"]
    assert {f["id"] for f in june} == {i for i in ids if i.startswith("L2A_") and "_201806" in i}
    clear = c.post("/search", json={"collections": ["agriseries-l2a"], "limit": 100,
                                    "filter-lang": "cql2-json",
                                    "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]},
                                    "sortby": [{"field": "properties.datetime",
                                                "direction": "desc"}]}).json()["features"]
    assert clear and all(f["properties"]["eo:cloud_cover"] < 10 for f in clear)
    dts = [f["properties"]["datetime"] for f in clear]
    assert dts == sorted(dts, reverse=True)
    text = c.get("/search", params={"collections": "agriseries-l2a", "limit": 100,
                                    "filter": "eo:cloud_cover < 10", "filter-lang": "cql2-text"})
    assert {f["id"] for f in text.json()["features"]} == {f["id"] for f in clear}
    # ids, bbox, intersects, fields
    some = sorted(ids)[:3]
    assert {f["id"] for f in c.post("/search", json={"ids": some}).json()["features"]} == set(some)
    assert c.post("/search", json={"bbox": [-10, -10, -9, -9]}).json()["features"] == []
    got = c.post("/search", json={"bbox": [3.0, 50.8, 3.1, 50.9], "limit": 100}).json()
    assert len(got["features"]) == len(ids) or any(ln["rel"] == "next" for ln in got["links"])
    poly = {"type": "Polygon", "coordinates": [[[3.0, 50.8], [3.1, 50.8], [3.1, 50.9],
                                                [3.0, 50.9], [3.0, 50.8]]]}
    assert c.post("/search", json={"intersects": poly, "limit": 1}).json()["features"]
    slim = c.post("/search", json={"ids": some[:1], "fields": {"include": ["id"],
                                                               "exclude": ["assets"]}}).json()
    assert "assets" not in slim["features"][0]


def _pages(c, first: httpx.Response) -> list[dict]:
    """Every feature of a search, following its next links (GET or POST)."""
    assert first.status_code == 200, first.text[:300]
    r, out = first.json(), []
    for _ in range(100):
        out += r["features"]
        nxt = [ln for ln in r["links"] if ln["rel"] == "next"]
        if not nxt:
            return out
        ln = nxt[0]
        resp = (c.post(ln["href"], json=ln["body"]) if ln.get("method") == "POST"
                else c.get(ln["href"]))
        assert resp.status_code == 200, (ln, resp.text[:300])
        r = resp.json()
    raise AssertionError("more than 100 pages")


def _sort_key(backend):
    """What a backend sorts ``datetime`` by: the item's datetime; on pgstac the start of a
    period item's period (pgstac's own datetime column: L3A composites, whose datetime is
    the middle of their month, sort at its first day)."""
    if backend[0] == "pgstac":
        return lambda f: (f["properties"].get("start_datetime") or f["properties"]["datetime"]
                          ).replace("+00:00", "Z")
    return lambda f: f["properties"]["datetime"]


def test_sort_by_datetime_get_and_post(service, published, backend, c):
    """sortby datetime, ascending and descending, GET and POST, one collection and all of
    them (one order over every collection, also across pages), with and without the
    properties. prefix; POST collections as one string (the GET form) is read as a list."""
    ids = product_ids(published)
    key = _sort_key(backend)
    every = c.get("/search", params={"limit": 100}).json()["features"]
    all_keys = sorted(key(f) for f in every)
    l2a_keys = sorted(key(f) for f in every if f["collection"] == "agriseries-l2a")
    assert len(set(f["collection"] for f in every)) == 3 and len(set(all_keys)) > 10
    for coll, want in ((None, all_keys), ("agriseries-l2a", l2a_keys)):
        where = {"collections": coll} if coll else {}
        for spec, desc in (("properties.datetime", False), ("+properties.datetime", False),
                           ("datetime", False), ("-properties.datetime", True),
                           ("-datetime", True)):
            r = c.get("/search", params={**where, "sortby": spec, "limit": 100})
            assert r.status_code == 200, (spec, r.text[:300])
            got = [key(f) for f in r.json()["features"]]
            assert got == (want[::-1] if desc else want), (coll, spec, got)
        for direction in ("asc", "desc"):
            body = {"sortby": [{"field": "properties.datetime", "direction": direction}],
                    "limit": 100, **({"collections": [coll]} if coll else {})}
            r = c.post("/search", json=body)
            assert r.status_code == 200, r.text[:300]
            got = [key(f) for f in r.json()["features"]]
            assert got == (want[::-1] if direction == "desc" else want), (coll, direction)
    # the validator's form: collections as a string
    r = c.post("/search", json={"collections": "agriseries-l2a", "limit": 100,
                                "sortby": [{"field": "properties.datetime", "direction": "asc"}]})
    assert r.status_code == 200, r.text[:300]
    assert [key(f) for f in r.json()["features"]] == l2a_keys
    # paged: one order over all pages, every item once
    for first in (c.post("/search", json={"limit": 4, "sortby": [
                      {"field": "properties.datetime", "direction": "desc"}]}),
                  c.get("/search", params={"limit": 4, "sortby": "-properties.datetime"})):
        feats = _pages(c, first)
        assert sorted(f["id"] for f in feats) == sorted(ids)
        assert [key(f) for f in feats] == all_keys[::-1]


def test_fields_include_exclude(service, published, c):
    """The fields extension, same answers on both backends: the default set, include,
    exclude, their precedence (a field in both is included, the most specific path wins),
    typed application/geo+json, kept in the paging links; a malformed fields is a 400."""
    full = {f["id"]: f for f in c.get("/search", params={"collections": "agriseries-l2a",
                                                           "limit": 100}).json()["features"]}
    assert len(full) > 5

    def one(r: httpx.Response) -> dict:
        assert r.status_code == 200, r.text[:300]
        assert r.headers["content-type"].startswith("application/geo+json"), r.headers
        f = r.json()["features"][0]
        return f

    q = {"collections": "agriseries-l2a", "limit": 1}
    body = {"collections": ["agriseries-l2a"], "limit": 1}
    default_keys = {"type", "stac_version", "stac_extensions", "id", "collection", "geometry",
                    "bbox", "links", "assets", "properties"}
    for f in (one(c.get("/search", params={**q, "fields": ""})),
              one(c.post("/search", json={**body, "fields": {}})),
              one(c.post("/search", json={**body, "fields": {"include": None, "exclude": None}})),
              one(c.post("/search", json={**body, "fields": {"include": [], "exclude": []}}))):
        assert set(f) == default_keys and set(f["properties"]) == {"datetime"}, f.keys()
        assert f["geometry"] == full[f["id"]]["geometry"]
        assert f["assets"] == full[f["id"]]["assets"]  # served hrefs (download URLs)
    # include: those fields (and id, type, collection, links)
    for f in (one(c.get("/search", params={**q, "fields": "properties.eo:cloud_cover"})),
              one(c.get("/search", params={**q, "fields": "+eo:cloud_cover"})),
              one(c.post("/search", json={**body, "fields": {
                  "include": ["properties.eo:cloud_cover"]}}))):
        assert set(f) == {"id", "type", "collection", "links", "properties"}, f.keys()
        assert f["properties"] == {"eo:cloud_cover": full[f["id"]]["properties"]["eo:cloud_cover"]}
    # exclude only: every field but those
    for f in (one(c.get("/search", params={**q, "fields": "-geometry"})),
              one(c.post("/search", json={**body, "fields": {"exclude": ["geometry"]}}))):
        want = {k: v for k, v in full[f["id"]].items() if k != "geometry"}
        assert f == want
    # exclude with include null or []: the default set but those
    for inc in (None, []):
        f = one(c.post("/search", json={**body, "fields": {"include": inc,
                                                           "exclude": ["geometry"]}}))
        assert set(f) == default_keys - {"geometry"} and set(f["properties"]) == {"datetime"}
    # precedence: in both -> included; the more specific path wins either way
    for f in (one(c.get("/search", params={**q, "fields": "+geometry,-geometry"})),
              one(c.post("/search", json={**body, "fields": {"include": ["geometry"],
                                                             "exclude": ["geometry"]}}))):
        assert f["geometry"] == full[f["id"]]["geometry"] and "assets" not in f
    for f in (one(c.get("/search", params={**q, "fields": "-properties,+properties.platform"})),
              one(c.post("/search", json={**body, "fields": {"exclude": ["properties"],
                                                             "include": ["properties.platform"]}}))):
        assert f["properties"] == {"platform": full[f["id"]]["properties"]["platform"]}
        assert "geometry" not in f
    for f in (one(c.get("/search", params={**q, "fields": "properties,-properties.eo:cloud_cover"})),
              one(c.post("/search", json={**body, "fields": {"include": ["properties"],
                                                             "exclude": ["eo:cloud_cover"]}}))):
        want = {k: v for k, v in full[f["id"]]["properties"].items() if k != "eo:cloud_cover"}
        assert f["properties"] == want and "eo:cloud_cover" in full[f["id"]]["properties"]
    # fields do not get in the way of a spatial search (the embedded backend's own did)
    box = [3.0, 50.8, 3.1, 50.9]
    ref = c.post("/search", json={"bbox": box, "collections": ["agriseries-l2a"],
                                  "limit": 100}).json()["features"]
    slim = c.post("/search", json={"bbox": box, "collections": ["agriseries-l2a"], "limit": 100,
                                   "fields": {"include": ["id"]}}).json()["features"]
    assert ref and [f["id"] for f in slim] == [f["id"] for f in ref]
    assert all("geometry" not in f and "assets" not in f for f in slim)
    # kept across pages, GET and POST, and on a collection's items
    for first in (c.post("/search", json={"collections": ["agriseries-l2a"], "limit": 3,
                                          "fields": {"include": ["id"]}}),
                  c.get("/search", params={"collections": "agriseries-l2a", "limit": 3,
                                           "fields": "id"}),
                  c.get("/collections/agriseries-l2a/items", params={"limit": 3,
                                                                     "fields": "id"})):
        feats = _pages(c, first)
        assert sorted(f["id"] for f in feats) == sorted(full)
        assert all(set(f) == {"id", "type", "collection", "links"} for f in feats), feats[-1]
    # malformed
    for bad in (None, [], "id", {"includes": ["id"]}, {"include": "id"}, {"exclude": [1]}):
        r = c.post("/search", json={**body, "fields": bad})
        assert r.status_code == 400 and "fields" in r.json()["description"], (bad, r.text)


def test_bad_search_is_400_not_500(service, c):
    for r in (c.get("/search", params={"bbox": "1,2,3"}),
              c.get("/search", params={"bbox": "a,b,c,d"}),
              c.get("/search", params={"datetime": "not-a-date"}),
              c.get("/search", params={"intersects": "not json"}),  # found by schemathesis
              c.post("/search", json={"filter": {"op": "<<", "args": []}}),
              c.get("/search", params={"filter": "eo:cloud_cover <<< 3", "filter-lang": "cql2-text"}),
              c.post("/search", json={"intersects": {"type": "Polygon", "coordinates": [[1, 2]]}})):
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text[:300])


# ------------------------------------------------------------------ downloads


def _first_asset(service, collection="agriseries-l2a", key=None):
    f = httpx.post(f"{service.url}/search", json={"collections": [collection], "limit": 1},
                   timeout=30).json()["features"][0]
    k = key or sorted(f["assets"])[0]
    return f, k, f["assets"][k]["href"]


def _store_file(published, item_id: str, href_key: str) -> Path:
    item = json.loads(next(Path(published.store).glob(f"*/*/*/{item_id}/{item_id}.json")).read_text())
    return next(Path(published.store).glob(f"*/*/*/{item_id}")) / item["assets"][href_key]["href"]


def test_download_needs_a_valid_token(service, published, token, backend):
    f, key, url = _first_asset(service)
    path = _store_file(published, f["id"], key)
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers=auth("ags_forged"), timeout=30).status_code == 401
    assert httpx.get(url, headers=auth("not-a-token"), timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Basic eDp5"}, timeout=30).status_code == 401
    r = httpx.get(url, headers=auth(token), timeout=30)
    assert r.status_code == 200 and r.content == path.read_bytes()
    bob = cli("users", "add", f"bob-{backend[0]}", "--store", str(published.store)).stdout.strip()
    assert httpx.get(url, headers=auth(bob), timeout=30).status_code == 200
    cli("users", "revoke", f"bob-{backend[0]}", "--store", str(published.store))
    r = httpx.get(url, headers=auth(bob), timeout=30)
    assert r.status_code == 401 and "revoked" in r.text
    listed = json.loads(cli("users", "list", "--store", str(published.store), "--json").stdout)
    listed = {u["name"]: bool(u["revoked"]) for u in listed}
    assert listed["alice"] is False and listed[f"bob-{backend[0]}"] is True
    import sqlite3

    with sqlite3.connect(Path(published.store) / ".distribution" / "service.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert token not in dump and hashlib.sha256(token.encode()).hexdigest() in dump


def test_range_requests(service, published, token):
    f, key, url = _first_asset(service)
    data = _store_file(published, f["id"], key).read_bytes()
    h = auth(token)
    r = httpx.get(url, headers={**h, "Range": "bytes=100-199"}, timeout=30)
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = httpx.get(url, headers={**h, "Range": "bytes=-50"}, timeout=30)
    assert r.status_code == 206 and r.content == data[-50:]
    r = httpx.get(url, headers={**h, "Range": f"bytes={len(data) - 10}-"}, timeout=30)
    assert r.content == data[-10:]
    r = httpx.get(url, headers={**h, "Range": f"bytes={len(data)}-"}, timeout=30)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = httpx.head(url, headers=h, timeout=30)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(data)
    assert r.headers["accept-ranges"] == "bytes"


def test_no_path_traversal_nor_listing(service, published, token, tmp_path):
    """Only files of published items: traversal attempts, unknown items and keys, and a
    product file replaced by a link to a file outside the store are all 404, and the
    outside file's bytes are never sent."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-" * 100)
    h = auth(token)
    f, key, url = _first_asset(service)
    base = service.url
    for path in ("/assets/agriseries-l2a/../../../../etc/passwd",
                 "/assets/agriseries-l2a/%2e%2e/%2e%2e/etc/passwd",
                 f"/assets/agriseries-l2a/{f['id']}/..%2f..%2f..%2fcatalog.json",
                 f"/assets/agriseries-l2a/{f['id']}/%2Fetc%2Fpasswd",
                 f"/assets/agriseries-l2a/{f['id']}/{secret}",
                 f"/assets/agriseries-l2a/{f['id']}/",
                 "/assets/agriseries-l2a/", "/assets/", "/assets",
                 f"/assets/agriseries-l2a/{f['id']}/no-such-key",
                 f"/assets/agriseries-l3a/{f['id']}/{key}",
                 "/assets/agriseries-l2a/L2A_S2A_T31UDS_20990101T000000_SEN2COR/B04"):
        r = httpx.get(base + path, headers=h, timeout=30)
        assert r.status_code == 404, (path, r.status_code)
        assert b"TOP-SECRET" not in r.content and b"root:" not in r.content
    # a product file swapped for a link pointing outside the store
    target = _store_file(published, f["id"], key)
    saved = target.read_bytes()
    target.unlink()
    target.symlink_to(secret)
    try:
        r = httpx.get(url, headers=h, timeout=30)
        assert r.status_code == 404 and b"TOP-SECRET" not in r.content
    finally:
        target.unlink()
        target.write_bytes(saved)
    # a product folder swapped for a link
    folder = target.parent
    moved = folder.with_name(folder.name + ".moved")
    folder.rename(moved)
    folder.symlink_to(moved)
    try:
        assert httpx.get(url, headers=h, timeout=30).status_code == 404
    finally:
        folder.unlink()
        moved.rename(folder)
    assert httpx.get(url, headers=h, timeout=30).status_code == 200


def test_withdrawn_product_not_served_at_once(service, published, token, backend, c):
    """A product withdrawn from the catalogue (what the publisher does with a removal) is a
    404 at the very next request: its downloads, a signed URL of it, its portal quicklook
    (whose look-up the service remembers while the catalogue does not change), its item;
    the other products are still served. Republished afterwards."""
    f, key, href = _first_asset(service)
    pid = f["id"]
    other, okey, ohref = _first_asset(service, "agriseries-l3a")
    assert httpx.get(href, headers=auth(token), timeout=30).status_code == 200
    assert c.get("/portal/api/quicklook", params={"item": pid}).status_code == 200
    c.post("/basket/items", headers=auth(token),
           json={"items": [{"collection": "agriseries-l2a", "id": pid}]})
    signed = [u for u in c.get("/basket/files.txt", headers=auth(token)).text.split()
              if f"/{pid}/" in u]
    assert signed and httpx.get(signed[0], timeout=30).status_code == 200
    cat = open_catalog((*backend, published.store))
    try:
        # the portal remembers a product it looked up (the old rule: 2 s, whatever happened
        # meanwhile): a quick route twice, the withdrawal, the same route at once
        for _ in range(2):
            assert c.get("/portal/api/layers", params={"item": pid}).status_code == 200
        cat.apply([], [pid], published.store)
        assert c.get("/portal/api/layers", params={"item": pid}).status_code == 404
        assert c.get("/portal/api/quicklook", params={"item": pid}).status_code == 404
        r = httpx.get(href, headers=auth(token), timeout=30)
        assert r.status_code == 404, (r.status_code, r.text[:200])
        assert httpx.get(href, headers={**auth(token), "Range": "bytes=0-9"},
                         timeout=30).status_code == 404
        assert httpx.get(signed[0], timeout=30).status_code == 404
        assert c.get(f"/collections/agriseries-l2a/items/{pid}").status_code == 404
        assert c.post("/search", json={"ids": [pid]}).json()["features"] == []
        assert pid not in c.get("/basket/files.txt", headers=auth(token)).text
        assert httpx.get(ohref, headers=auth(token), timeout=30).status_code == 200
        assert c.get("/portal/api/quicklook", params={"item": other["id"]}).status_code == 200
    finally:
        cat.close()
        cli("publish", str(published.source), "--json", "--all", *backend[1])
        c.delete("/basket", headers=auth(token))
    assert httpx.get(href, headers=auth(token), timeout=30).status_code == 200
    assert c.get("/portal/api/quicklook", params={"item": pid}).status_code == 200


def test_product_lookups_remembered_while_catalogue_unchanged(published, backend):
    """The portal's look-ups by product id (tiles, pixel series, quicklooks, layers): on the
    embedded catalogue a found product is looked up once while its collection's file is the
    same, again as soon as that file is replaced (here by a copy of itself with the same
    size and modification time: only the inode tells them apart), and not again when
    another collection's file changes; on pgstac every request asks the catalogue. The
    same application as ``agriseries serve``, in this process, its catalogue calls counted."""
    import asyncio

    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings, catalog_dir_of

    app = create_app(ServiceSettings(store=published.store, backend=backend[0],
                                     catalog_dsn=backend[1][1] if backend[1] else None))
    access = app.state.access
    calls: list[dict] = []
    real_post = access.internal_post

    async def counting_post(path, body):
        calls.append(body)
        return await real_post(path, body)

    folder = catalog_dir_of(published.store)

    def replaced_by_a_copy(collection: str) -> None:
        f = folder / f"{collection}.parquet"
        tmp = folder / f".{collection}.parquet.copy"
        shutil.copy2(f, tmp)
        before, after = f.stat(), tmp.stat()
        assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
        os.replace(tmp, f)

    async def scenario():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc", timeout=60) as tc:
                pid = (await tc.get("/collections/agriseries-l2a/items",
                                    params={"limit": 1})).json()["features"][0]["id"]
                counts = []

                async def layers(n):
                    calls.clear()
                    for _ in range(n):
                        r = await tc.get("/portal/api/layers", params={"item": pid})
                        assert r.status_code == 200, r.text
                    counts.append(len(calls))

                await layers(3)
                if backend[0] == "geoparquet":
                    replaced_by_a_copy("agriseries-l2a")
                    await layers(2)
                    replaced_by_a_copy("agriseries-l3a")
                    await layers(2)
                assert (await tc.get("/portal/api/layers",
                                     params={"item": "no-such-product"})).status_code == 404
                return counts

    access.internal_post = counting_post
    try:
        counts = asyncio.run(scenario())
    finally:
        app.state.accounts.close()
    assert counts == ([1, 1, 0] if backend[0] == "geoparquet" else [3]), counts


def test_pgstac_items_the_same_hydrated_by_the_service_or_by_pgstac(published, backend):
    """pgstac: the service hydrates the items itself by default (stac-fastapi-pgstac's API
    hydration: pgstac answers the stored rows, without what their collection's
    ``item_assets`` hold); what it serves is byte for byte what pgstac's own SQL hydration
    gives: every item of a search over all collections, of each collection's pages, each
    item at its own URL, sorted and filtered searches, ``fields`` answers. Two applications
    as ``agriseries serve`` makes them, one per setting, over the same catalogue."""
    if backend[0] != "pgstac":
        pytest.skip("pgstac's hydration")
    import asyncio

    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings

    apps = {h: create_app(ServiceSettings(store=published.store, backend="pgstac",
                                          catalog_dsn=backend[1][1], pgstac_hydrate=h))
            for h in ("api", "database")}
    assert apps["api"].state.settings.use_api_hydrate is True
    assert apps["database"].state.settings.use_api_hydrate is False
    every = product_ids(published)

    async def answers(app) -> list[tuple[str, int, bytes]]:
        out = []
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc", timeout=60) as tc:
                async def ask(method, path, **kw):
                    r = await (tc.post(path, **kw) if method == "POST" else tc.get(path, **kw))
                    out.append((f"{method} {path} {kw}", r.status_code, r.content))
                    return r

                r = await ask("GET", "/search", params={"limit": 1000})
                feats = r.json()["features"]
                assert {f["id"] for f in feats} == every, r.text[:300]
                await ask("POST", "/search", json={"limit": 1000})
                for cid in sorted({f["collection"] for f in feats}):
                    await ask("GET", f"/collections/{cid}/items", params={"limit": 3})
                    await ask("GET", f"/collections/{cid}/items", params={"limit": 1000})
                    await ask("POST", "/search", json={
                        "collections": [cid], "limit": 1000,
                        "sortby": [{"field": "properties.datetime", "direction": "desc"}]})
                for f in feats:
                    await ask("GET", f"/collections/{f['collection']}/items/{f['id']}")
                await ask("POST", "/search", json={"ids": sorted(every)[:3], "limit": 10})
                await ask("POST", "/search", json={
                    "limit": 1000, "filter-lang": "cql2-json",
                    "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}})
                await ask("POST", "/search", json={"limit": 1000,
                                                   "query": {"eo:cloud_cover": {"lt": 50}}})
                for fields in ("", "properties.eo:cloud_cover", "-geometry,-assets",
                               "assets,-properties"):
                    await ask("GET", "/search", params={"limit": 1000, "fields": fields})
                await ask("POST", "/search", json={"limit": 1000, "fields": {
                    "include": ["assets"], "exclude": ["assets.B02"]}})
        return out

    try:
        got = {h: asyncio.run(answers(app)) for h, app in apps.items()}
    finally:
        for app in apps.values():
            app.state.accounts.close()
    assert [a[:2] for a in got["api"]] == [a[:2] for a in got["database"]]
    assert all(status == 200 for _, status, _ in got["api"]), \
        [a[:2] for a in got["api"] if a[1] != 200]
    differ = [what for (what, _, a), (_, _, b) in zip(got["api"], got["database"]) if a != b]
    assert not differ, differ[:5]
    # what pgstac stores of an item lacks what its collection gives every item: the
    # hydration did something (the stored rows are dehydrated)
    import psycopg

    served = json.loads(got["api"][0][2])["features"]
    with psycopg.connect(backend[1][1]) as conn:
        rows = dict(conn.execute("SELECT id, content FROM pgstac.items").fetchall())
    stripped = [f["id"] for f in served if any(
        set(a) - set((rows[f["id"]].get("assets") or {}).get(k) or {})
        for k, a in f["assets"].items())]
    assert stripped, "every stored item is whole: the hydration was not tried"


def test_quota_limit(service, published, backend):
    """Past the daily quota: 429 with Retry-After until UTC midnight. Past the number of
    concurrent downloads: 429 with Retry-After while the first is still being sent."""
    store = str(published.store)
    f, key, url = _first_asset(service)
    size = _store_file(published, f["id"], key).stat().st_size
    tok = cli("users", "add", f"carol-{backend[0]}", "--store", store,
              "--quota-gb", str((size * 2.5) / 2**30), "--max-downloads", "1").stdout.strip()
    h = auth(tok)
    assert httpx.get(url, headers=h, timeout=30).status_code == 200
    assert httpx.get(url, headers=h, timeout=30).status_code == 200
    r = httpx.get(url, headers=h, timeout=30)
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 86401
    assert "quota" in r.json()["description"]
    acc = httpx.get(f"{service.url}/account", headers=h, timeout=30).json()
    assert acc["bytes_today"] == 2 * size


def test_concurrent_download_limit(published, token, backend):
    """Past the number of concurrent downloads: 429 with Retry-After while the first is
    still being sent; the slot is free again when it ends. The first download (the basket
    as a ZIP archive, sent in 64 KiB pieces) is held mid-stream by an ASGI client that does
    not take the rest of the body (the service runs in this process, on the real store and
    catalogue)."""
    import asyncio

    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings

    store = Path(published.store)
    dave = cli("users", "add", f"dave-{backend[0]}", "--store", str(store), "--max-downloads",
               "1").stdout.strip()
    app = create_app(ServiceSettings(store=store, backend=backend[0],
                                     catalog_dsn=backend[1][1] if backend[1] else None))

    async def scenario():
        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                       base_url="http://svc")
            f = (await client.post("/search", json={"collections": ["agriseries-l2a"],
                                                    "limit": 1})).json()["features"][0]
            path = httpx.URL(f["assets"][sorted(f["assets"])[0]]["href"]).path
            r = await client.post("/basket/search", json={}, headers=auth(dave))
            assert r.status_code == 200 and r.json()["added"] > 10, r.text
            zpath = "/basket/archive.zip"
            started, release = asyncio.Event(), asyncio.Event()
            status = []

            async def receive():
                await release.wait()
                return {"type": "http.disconnect"}

            async def send(msg):
                if msg["type"] == "http.response.start":
                    status.append(msg["status"])
                elif msg["type"] == "http.response.body":
                    started.set()
                    await release.wait()  # a client that stops reading

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "GET", "scheme": "http", "path": zpath, "raw_path": zpath.encode(),
                     "query_string": b"", "root_path": "", "server": ("svc", 80),
                     "client": ("127.0.0.1", 1), "headers": [
                         (b"host", b"svc"), (b"authorization", f"Bearer {dave}".encode())]}
            first = asyncio.create_task(app(scope, receive, send))
            await asyncio.wait_for(started.wait(), 30)
            assert app.state.download_slots.active(f"dave-{backend[0]}") == 1
            second = await client.get(path, headers=auth(dave))
            other_user = await client.get(path, headers=auth(token))
            release.set()
            await asyncio.wait_for(first, 30)
            third = await client.get(path, headers=auth(dave))
            await client.aclose()
            return status, second, other_user, third

    status, second, other_user, third = asyncio.run(scenario())
    assert status == [200]
    assert second.status_code == 429 and second.headers["retry-after"] == "5", second.text
    assert "already runs 1 download" in second.json()["description"]
    assert other_user.status_code == 200  # the limit is per user
    assert third.status_code == 200  # the slot was freed when the first download ended
    app.state.accounts.close()


# ------------------------------------------------------------------ basket


def test_basket_whole_series_zip_and_list(service, published, token, tmp_path, c):
    c.headers.update(auth(token))
    assert httpx.get(f"{service.url}/basket", timeout=30).status_code == 401
    c.delete("/basket")
    # a whole season of L2A over the patch, cloud cover under 50 %, in one call
    r = c.post("/basket/search", json={
        "collections": ["agriseries-l2a"], "bbox": [2.9, 50.7, 3.2, 50.9],
        "datetime": "2018-06-01T00:00:00Z/2018-07-31T23:59:59Z",
        "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}})
    assert r.status_code == 200, r.text
    expected = {f["id"] for f in httpx.post(f"{service.url}/search", json={
        "collections": ["agriseries-l2a"], "limit": 100,
        "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}}).json()["features"]}
    assert r.json() == {"matched": len(expected), "added": len(expected)} and expected
    assert c.post("/basket/search", json={"collections": ["agriseries-l2a"], "filter": {
        "op": "<", "args": [{"property": "eo:cloud_cover"}, 50]}}).json()["added"] == 0
    l3a = sorted(i for i in product_ids(published) if i.startswith("L3A_"))
    r = c.post("/basket/items", json={"items": [{"collection": "agriseries-l3a", "id": l3a[0]},
                                                {"collection": "agriseries-l3a", "id": "nope"}]})
    assert r.json() == {"added": 1, "missing": [{"collection": "agriseries-l3a", "id": "nope"}]}
    listed = c.get("/basket").json()
    assert {x["id"] for x in listed["items"]} == expected | {l3a[0]}
    drop = sorted(expected)[0]
    assert c.delete(f"/basket/items/agriseries-l2a/{drop}").status_code == 200
    assert c.delete(f"/basket/items/agriseries-l2a/{drop}").status_code == 404
    want = (expected - {drop}) | {l3a[0]}
    # the ZIP, streamed: every entry equal to the store's file
    with c.stream("GET", "/basket/archive.zip") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
        assert "content-length" not in resp.headers  # streamed as it is written
        body = b"".join(resp.iter_bytes())
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None
    names = zf.namelist()
    assert {n.split("/")[1] for n in names} == want
    n_files = 0
    for pid in want:
        folder = next(Path(published.store).glob(f"*/*/*/{pid}"))
        item = json.loads((folder / f"{pid}.json").read_text())
        coll = "agriseries-l3a" if pid.startswith("L3A") else "agriseries-l2a"
        for a in item["assets"].values():
            data = zf.read(f"{coll}/{pid}/{a['href']}")
            assert hashlib.sha256(data).digest() == hashlib.sha256(
                (folder / a["href"]).read_bytes()).digest()
            n_files += 1
        served = json.loads(zf.read(f"{coll}/{pid}/{pid}.json"))
        assert served["id"] == pid and all(x["href"].startswith(service.url)
                                           for x in served["assets"].values())
    assert len(names) == n_files + len(want)
    # only some assets
    sub = zipfile.ZipFile(io.BytesIO(c.get("/basket/archive.zip", params={"assets": "mask"}).content))
    assert {n.rsplit("_", 1)[-1] for n in sub.namelist() if n.endswith(".tif")} == {"mask.tif"}
    # the download list: wget fetches it, and resumes a file cut short
    lst = c.get("/basket/files.txt", params={"assets": "mask"}).text.split()
    files = c.get("/basket/files", params={"assets": "mask"}).json()["files"]
    assert len(lst) == len(files) == len(want)
    out = tmp_path / "wget"
    out.mkdir()
    (tmp_path / "list.txt").write_text("\n".join(lst) + "\n")
    res = subprocess.run(["wget", "-q", "--content-disposition", "-i", str(tmp_path / "list.txt")],
                         cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for fi in files:
        pid = fi["id"]
        folder = next(Path(published.store).glob(f"*/*/*/{pid}"))
        assert (out / f"{pid}_mask.tif").read_bytes() == (folder / f"{pid}_mask.tif").read_bytes()
    cut = out / f"{files[0]['id']}_mask.tif"
    full = cut.read_bytes()
    cut.write_bytes(full[: len(full) // 3])  # an interrupted download
    res = subprocess.run(["wget", "-q", "-c", "-O", str(cut), files[0]["url"]],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and cut.read_bytes() == full
    res = subprocess.run(["curl", "-sf", "-C", "-", "-o", str(cut), files[0]["url"]],
                         capture_output=True, text=True, timeout=60)
    assert cut.read_bytes() == full
    # a signed URL cannot be reused for another file, nor after its expiry
    forged = files[0]["url"].replace(f"/{files[0]['id']}/", f"/{files[1]['id']}/")
    assert httpx.get(forged, timeout=30).status_code == 401
    from agriseries.distribution.accounts import Accounts

    acc = Accounts(Path(published.store) / ".distribution" / "service.sqlite")
    path = httpx.URL(files[0]["url"]).path
    exp = int(time.time()) - 10
    r = httpx.get(f"{service.url}{path}", params={"user": "alice", "expires": exp,
                                                  "signature": acc.sign("alice", path, exp)})
    assert r.status_code == 401 and "expired" in r.text
    acc.close()


def test_basket_metalink_and_interrupted_list_resumed(service, published, token, tmp_path, c):
    """The basket's Metalink 4 list names every file with its size and a signed URL, and
    aria2c downloads it (checking the sizes); a ``wget -c -i`` of the URL list killed in the
    middle of its first file and started again resumes it (HTTP Range) and ends with every
    file equal to the store's."""
    import signal
    from xml.etree import ElementTree as ET

    c.headers.update(auth(token))
    c.delete("/basket")
    r = c.post("/basket/search", json={"collections": ["agriseries-l2a"],
                                       "datetime": "2018-06-01T00:00:00Z/2018-06-30T23:59:59Z"})
    assert r.status_code == 200 and r.json()["added"] >= 2, r.text
    files = c.get("/basket/files", params={"assets": "B04,mask"}).json()["files"]
    store = Path(published.store)

    def store_file(fi) -> Path:
        return next(store.glob(f"*/*/*/{fi['id']}")) / Path(fi["name"]).name

    # metalink: RFC 5854 document, then aria2c fetches every file
    meta = c.get("/basket/files.meta4", params={"assets": "B04,mask"})
    assert meta.status_code == 200 and meta.headers["content-type"].startswith(
        "application/metalink4+xml")
    ns = {"m": "urn:ietf:params:xml:ns:metalink"}
    doc = ET.fromstring(meta.content)
    entries = doc.findall("m:file", ns)
    assert sorted(e.get("name") for e in entries) == sorted(f["name"] for f in files)
    for e in entries:
        fi = next(f for f in files if f["name"] == e.get("name"))
        assert int(e.find("m:size", ns).text) == fi["size"] == store_file(fi).stat().st_size
        assert httpx.URL(e.find("m:url", ns).text).path == httpx.URL(fi["url"]).path
    if shutil.which("aria2c") is None:
        pytest.fail("aria2c not found: install Debian's aria2 (.ci/run does)", pytrace=False)
    (tmp_path / "basket.meta4").write_bytes(meta.content)
    got = tmp_path / "aria2"
    # -j 2: aria2c's default of 5 files at once is past the user's limit of 4 concurrent
    # downloads, and aria2c takes the 429 as a failure (exit 22; seen in a CI run)
    res = subprocess.run(["aria2c", "-q", "-j", "2", "--allow-overwrite=true", "-d", str(got),
                          "-M", str(tmp_path / "basket.meta4")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    for fi in files:
        assert (got / fi["name"]).read_bytes() == store_file(fi).read_bytes()
    # wget -i of the URL list, killed in the middle of the largest file, then resumed
    lst = c.get("/basket/files.txt", params={"assets": "B04,mask"}).text
    (tmp_path / "list.txt").write_text(lst)
    out = tmp_path / "wget"
    out.mkdir()
    big = files[0]  # the first of the list: wget is in its middle when killed
    part = out / Path(big["name"]).name
    cmd = ["wget", "-q", "-c", "--content-disposition", "-i", str(tmp_path / "list.txt")]
    slow = subprocess.Popen([*cmd, "--limit-rate", str(max(1024, big["size"] // 20))], cwd=out,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and slow.poll() is None:
            if part.exists() and 0 < part.stat().st_size < big["size"] // 2:
                break
            time.sleep(0.02)
        assert slow.poll() is None, "wget ended before it could be interrupted"
        os.killpg(slow.pid, signal.SIGKILL)
        slow.wait(10)
    finally:
        if slow.poll() is None:
            os.killpg(slow.pid, signal.SIGKILL)
    cut = part.stat().st_size
    assert 0 < cut < big["size"]
    res = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for fi in files:
        assert (out / Path(fi["name"]).name).read_bytes() == store_file(fi).read_bytes()


def test_basket_file_list_opens_no_file(published, token, backend):
    """The basket's file lists (JSON, URL list, Metalink) of a basket holding every product:
    the items are looked up a batch at a time (not one catalogue call per item), each file
    is opened at most once (its size remembered), and a list asked again opens none; the
    sizes are the store's. The same application as ``agriseries serve``, in this process,
    so that the real ``open_in_store`` and catalogue calls can be counted."""
    import asyncio

    import agriseries.distribution.access as access_mod
    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings

    app = create_app(ServiceSettings(store=published.store, backend=backend[0],
                                     catalog_dsn=backend[1][1] if backend[1] else None))
    opened: list[str] = []
    real_open = access_mod.open_in_store

    def counting_open(root, rel):
        opened.append(str(rel))
        return real_open(root, rel)

    access = app.state.access
    calls: list[dict] = []
    real_post = access.internal_post

    async def counting_post(path, body):
        calls.append(body)
        return await real_post(path, body)

    async def scenario():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc", timeout=60) as tc:
                h = auth(token)
                await tc.delete("/basket", headers=h)
                r = await tc.post("/basket/search", headers=h, json={})
                assert r.json()["matched"] == len(product_ids(published)), r.text
                calls.clear()
                first = (await tc.get("/basket/files", headers=h)).json()
                n_calls, n_opened = len(calls), list(opened)
                opened.clear()
                again = (await tc.get("/basket/files", headers=h)).json()
                txt = (await tc.get("/basket/files.txt", headers=h)).text.split()
                meta = (await tc.get("/basket/files.meta4", headers=h)).text
                reopened = list(opened)
                opened.clear()
                url = httpx.URL(first["files"][0]["url"])
                dl = await tc.get(url.raw_path.decode())
                await tc.delete("/basket", headers=h)
                return first, n_calls, n_opened, again, txt, meta, reopened, dl, list(opened)

    access.internal_post = counting_post
    access_mod.open_in_store = counting_open
    try:
        first, n_calls, n_opened, again, txt, meta, reopened, dl, dl_opened = \
            asyncio.run(scenario())
    finally:
        access_mod.open_in_store = real_open
        app.state.accounts.close()
    n = first["count"]
    assert n >= len(product_ids(published)), n
    assert n_calls <= 3, n_calls  # one search per collection (fewer than 500 items each)
    assert len(n_opened) <= n and len(set(n_opened)) == len(n_opened)
    for f in first["files"]:
        item_dir = next(Path(published.store).glob(f"*/*/*/{f['id']}"))
        assert f["size"] == (item_dir / f["name"].rsplit("/", 1)[-1]).stat().st_size
    assert reopened == [], reopened[:5]  # asked again: no file opened
    assert again["files"] == [{**f, "url": g["url"]} for f, g in
                              zip(first["files"], again["files"])]
    assert len(txt) == n and meta.count("<file ") == n
    # a download still opens its file, with every check
    assert dl.status_code == 200 and len(dl.content) == first["files"][0]["size"]
    assert len(dl_opened) == 1 and dl_opened[0].endswith(first["files"][0]["name"].rsplit("/", 1)[-1])


def test_basket_survives_restart(service, token):
    before = httpx.get(f"{service.url}/basket", headers=auth(token), timeout=30).json()
    service.restart()
    after = httpx.get(f"{service.url}/basket", headers=auth(token), timeout=30).json()
    assert after == before


def test_private_search_needs_token(published, token, backend):
    svc = Service(Path(published.store), "--private-search", *backend[1]).start()
    try:
        assert httpx.get(f"{svc.url}/search", timeout=30).status_code == 401
        assert httpx.get(f"{svc.url}/collections", timeout=30).status_code == 401
        r = httpx.get(f"{svc.url}/search", headers=auth(token), timeout=30)
        assert r.status_code == 200 and r.json()["features"]
    finally:
        svc.stop()


# ------------------------------------------------------------------ decoupling


def _freeze(server, sig) -> None:
    """Stop (SIGSTOP) or resume (SIGCONT) every process of a PostgreSQL server: the way a
    hung database looks to its clients (connections accepted, nothing answered)."""
    import signal as _signal

    for p in server.pids():
        os.kill(p, getattr(_signal, sig))


def _l2a_site(tmp_path, name: str, **over):
    """A site of the demo inbox making only L2A products (9 of them, a few seconds)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    for f in INBOX.glob("*.nc"):
        shutil.copy2(f, inbox / f.name)
    d = {"name": name, "area": {"tiles": ["T31UDS"]},
         "season": {"start": "2018-06-01", "end": "2018-07-31"},
         "products": {"L3A": {"enabled": False}, "L3B": {"enabled": False}},
         "inbox": {"path": str(inbox), "settle_s": 0}, "store": str(tmp_path / "store"),
         "engine": {"n_workers": 2, "memory_limit": "2GiB"}, **over}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(d))
    return load_site(tmp_path / "site.yaml")


def _production_through_catalogue_outage(tmp_path, name, outage, recover, durable=False):
    """A site produced while its pgstac catalogue (on its own PostgreSQL server) is out
    (``outage(server)``), a publisher following the outbox all along; the catalogue is
    brought back (``recover(server)``) once production is done. Checks that production
    finished, the publisher noticed, the outbox held every product, and that after the
    recovery the catalogue holds each product exactly once. Returns (production s, n)."""
    import threading

    from conftest import PostgresServer
    from sqlalchemy.engine import make_url

    from agriseries.distribution.catalog.pgstac import PgstacCatalog
    from agriseries.distribution.publisher import Publisher

    server = PostgresServer(durable=durable)
    server.start()
    try:
        dbname = make_url(server.create_database()).database
        dsn = f"postgresql://{server.user}@127.0.0.1:{server.port}/{dbname}"
        PgstacCatalog(dsn).close()  # schema created while the server answers
        s = _l2a_site(tmp_path, name)
        pub = Publisher(s.database_url, PgstacCatalog(dsn, timeout_s=3, migrate=False),
                        s.store, timeout_s=3, backoff_s=0.5, backoff_max_s=1)
        pub.backend.count()  # the publisher holds a live connection when the outage starts
        outage(server)
        out = True
        stop = threading.Event()
        reports = []
        t = threading.Thread(target=pub.follow, kwargs={"poll_s": 0.5, "stop": stop,
                                                        "on_report": reports.append})
        t.start()
        try:
            t0 = time.monotonic()
            report = run(s)
            took = time.monotonic() - t0
            assert not report.failed and report.made
            made = product_ids(s)
            assert len(made) >= 5
            deadline = time.monotonic() + 10
            while not any(r.failures for r in reports) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert any(r.failures for r in reports), "the publisher did not notice the outage"
            assert not any(r.published for r in reports)
            assert pub.outbox.backlog()["pending"] >= len(made)
            recover(server)
            out = False
            deadline = time.monotonic() + 60
            while pub.outbox.backlog()["pending"] and time.monotonic() < deadline:
                time.sleep(0.5)
            left = pub.outbox.backlog()
            assert left["pending"] == 0, (left, [r.failures for r in reports[-3:]])
        finally:
            stop.set()
            if out:
                recover(server)
            t.join(30)
        cat = PgstacCatalog(dsn, migrate=False)
        try:
            assert cat.ids() == made and cat.count() == len(made)  # each product once
        finally:
            cat.close()
            pub.close()
        return took, len(made)
    finally:
        server.stop()


def test_frozen_catalogue_stalls_neither_production_nor_publisher(tmp_path):
    """The pgstac catalogue's server frozen (SIGSTOP) while a site runs: production finishes
    every product, the publisher's calls time out and are retried; after SIGCONT every
    product is published exactly once."""
    took, n = _production_through_catalogue_outage(
        tmp_path, "frozen-catalogue", lambda srv: _freeze(srv, "SIGSTOP"),
        lambda srv: _freeze(srv, "SIGCONT"))
    print(f"production with the catalogue frozen: {took:.1f} s, {n} products")


def test_killed_catalogue_restarted_every_product_published_once(tmp_path):
    """The pgstac catalogue's server killed (kill -9 of every process: connections cut, no
    shutdown) while a site runs: production finishes, the publisher's attempts fail and
    are retried; once the server is restarted (crash recovery) every product is published
    exactly once."""
    took, n = _production_through_catalogue_outage(
        tmp_path, "killed-catalogue", lambda srv: srv.kill(), lambda srv: srv.restart(),
        durable=True)  # commits survive the kill (the fast test settings lose the last ones)
    print(f"production with the catalogue killed: {took:.1f} s, {n} products")


def test_production_killed_while_service_serves(tmp_path):
    """``agriseries serve`` keeps answering searches and downloads, with the same results,
    while a production run of the same site (same store, same production database) is
    killed with SIGKILL in the middle of its jobs (its Dask workers with it)."""
    import signal
    import threading

    from agriseries.production.records import JobState

    s = _l2a_site(tmp_path, "production-killed")
    assert not run(s).failed
    cli("publish", str(s.source))
    tok = cli("users", "add", "bob", "--store", str(s.store)).stdout.strip()
    # more work for the second run: the monthly composites and the LAI of every date
    d = yaml.safe_load(s.source.read_text())
    d["products"] = {"L3A": {"schedule": "monthly"},
                     "L3B": {"sensors": ["S2"], "variables": ["LAI"]}}
    s.source.write_text(yaml.safe_dump(d))
    with Service(Path(s.store)) as svc:
        items = httpx.get(f"{svc.url}/search", params={"limit": 100}, timeout=30).json()
        ids = sorted(f["id"] for f in items["features"])
        assert ids
        href = next(a["href"] for a in items["features"][0]["assets"].values()
                    if a["href"].startswith(f"{svc.url}/assets/"))
        body = httpx.get(href, headers=auth(tok), timeout=30).content
        assert body
        errors, answers = [], [0]
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as h:
                while not stop.is_set():
                    try:
                        r = h.get(f"{svc.url}/search", params={"limit": 100})
                        got = sorted(f["id"] for f in r.json()["features"])
                        if r.status_code != 200 or not set(ids) <= set(got):
                            errors.append(f"search: {r.status_code} {got}")
                        r = h.get(href, headers=auth(tok))
                        if r.status_code != 200 or r.content != body:
                            errors.append(f"download: {r.status_code}")
                        answers[0] += 1
                    except httpx.HTTPError as e:
                        errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.05)

        t = threading.Thread(target=client)
        t.start()
        log = open(tmp_path / "run.log", "w+")
        prod = subprocess.Popen([sys.executable, "-m", "agriseries.cli", "run", str(s.source)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # killed once a job of the second run is running (leased in the job store)
            deadline = time.monotonic() + 120
            js = s.job_store()
            try:
                while time.monotonic() < deadline and prod.poll() is None:
                    if js.jobs(JobState.RUNNING):
                        break
                    time.sleep(0.2)
            finally:
                js.close()
            assert prod.poll() is None, "the production ended before it could be killed"
            during = answers[0]
            os.killpg(prod.pid, signal.SIGKILL)
            prod.wait(30)
            time.sleep(3)  # the service answers on after the kill
            stop.set()
            t.join(60)
        finally:
            stop.set()
            if prod.poll() is None:
                os.killpg(prod.pid, signal.SIGKILL)
            log.close()
        assert not errors, errors[:5]
        assert answers[0] > during > 0
        r = httpx.get(href, headers=auth(tok), timeout=30)
        assert r.status_code == 200 and r.content == body


# ------------------------------------------------------------------ single sign-on


def test_oidc_bearer_jwt_checked_against_jwks(published):
    """Bearer JWTs of an OIDC provider (its JWKS served on loopback): a good token names
    the user (created on first use); expired, wrong audience, wrong issuer or signed by
    another key: 401."""
    import asyncio
    import http.server
    import threading

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    iss, aud = "https://sso.example.org/realms/agri", "agriseries"
    app = create_app(ServiceSettings(
        store=published.store, oidc_issuer=iss, oidc_audience=aud,
        oidc_jwks_url=f"http://127.0.0.1:{srv.server_address[1]}/jwks"))
    now = int(time.time())

    def tok(k=key, **over):
        claims = {"iss": iss, "aud": aud, "sub": "eve.sso", "exp": now + 600, "iat": now, **over}
        return jwt.encode(claims, k, algorithm="RS256", headers={"kid": "k1"})

    async def calls():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc") as c:
                return [await c.get("/account", headers=auth(t)) for t in (
                    tok(), tok(exp=now - 3600), tok(aud="other"), tok(iss="https://evil"),
                    tok(k=other), tok() + "x")]

    try:
        good, expired, wrong_aud, wrong_iss, forged, mangled = asyncio.run(calls())
    finally:
        srv.shutdown()
        srv.server_close()
        app.state.accounts.close()
    assert good.status_code == 200, good.text
    assert good.json()["user"] == "eve.sso" and good.json()["origin"] == "oidc"
    assert expired.status_code == 401 and "expired" in expired.text
    for r in (wrong_aud, wrong_iss, forged, mangled):
        assert r.status_code == 401, r.text


# ------------------------------------------------------------------ publish as a stage of the run


def test_run_publishes_what_it_makes(tmp_path):
    """With ``publish.enabled`` the run publishes its products itself (the embedded
    catalogue): every product once, nothing left in the outbox, ``agriseries status``
    says so; the served search finds them."""
    s = _l2a_site(tmp_path, "publish-stage", publish={"enabled": True, "poll_s": 0.5})
    report = run(s)
    assert not report.failed
    made = product_ids(s)
    pub = report.publication
    assert pub["published"] == len(made) and pub["backlog"] == 0, pub
    st = json.loads(cli("status", str(s.source), "--json").stdout)
    assert st["publication"]["pending"] == 0
    cat = open_catalog(("geoparquet", (), s.store))
    try:
        assert cat.ids() == made and cat.count() == len(made)
    finally:
        cat.close()
    with Service(Path(s.store)) as svc:
        got = httpx.get(f"{svc.url}/search", params={"limit": 100}, timeout=30).json()
        assert {f["id"] for f in got["features"]} == made


def test_run_with_catalogue_down_is_not_slowed(tmp_path):
    """The publish stage's catalogue down (nothing listens on its port): the run makes every
    product, ends with them all in the outbox (reported, shown by ``agriseries status``)
    after waiting no more than the stage's time limits, and ``agriseries publish`` to a
    catalogue that answers drains them later."""
    dead = f"postgresql://agriseries@127.0.0.1:{free_port()}/nothing"
    s = _l2a_site(tmp_path, "publish-down",
                  publish={"enabled": True, "catalog_dsn": dead, "timeout_s": 2, "poll_s": 0.5},
                  database={"statement_timeout_s": 5})
    report = run(s)
    assert not report.failed
    made = product_ids(s)
    pub = report.publication
    assert pub["published"] == 0 and pub["backlog"] >= len(made) and pub["failures"], pub
    assert pub["final_wait_s"] < 2 + 5 + 5
    st = cli("status", str(s.source)).stdout
    assert f"{pub['backlog']} product change(s) waiting to be published" in st
    # the rows wait their backoff; an operator's publish tries them now (another catalogue)
    rep = json.loads(cli("publish", str(s.source), "--json", "--catalog-dir",
                         str(s.store / ".distribution" / "catalog")).stdout)
    assert rep["published"] == len(made) and rep["backlog"] == 0
