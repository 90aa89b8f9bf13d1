"""The portal follows the service's access rules, over real HTTP (``agriseries serve`` in its
own process on loopback, on the store the production made and ``agriseries publish`` put
into the catalogue):

* every portal route that shows something of a product -- the map layers, the quicklook,
  the pixel series, the operator page and **every** titiler route that takes a product
  (tiles, tilejson, info, statistics, point...; listed from the application itself, so a
  route added later is checked too) -- answers a published product, and a product that is
  in the store but not published is a 404 **without any file of it being opened** (watched
  with inotify on its folder);
* with ``--private-search`` each of them is a 401 without a token and with a revoked one,
  and answers with a good token;
* path tricks in the product id or the asset key, and an asset file replaced by a symbolic
  link, are 404s.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("titiler.core")

import httpx  # noqa: E402
import morecantile  # noqa: E402

from agriseries.io.store import ProductStore  # noqa: E402

from portal_helpers import (L3A_JUNE, L4A, L4B, Service, cli, product_store,  # noqa: E402
                            publish, site_of_store)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

WMQ = morecantile.tms.get("WebMercatorQuad")
UNPUBLISHED = "L3A_S2L8_T31UDS_20180801-20180831_AGS"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    store = product_store(tmp_path_factory)
    publish()
    site = site_of_store()
    good = cli("users", "add", "paula", "--store", str(store)).strip().splitlines()[-1]
    gone = cli("users", "add", "rex", "--store", str(store)).strip().splitlines()[-1]
    cli("users", "revoke", "rex", "--store", str(store))
    return site, store, good, gone


@pytest.fixture(scope="module")
def unpublished(published):
    """A product in the store that was never published: a copy of the June L3A as August."""
    _, store, _, _ = published
    src = ProductStore(store).item_path(L3A_JUNE).parent
    dst = src.parent / UNPUBLISHED
    shutil.copytree(src, dst)
    doc = json.loads((dst / f"{L3A_JUNE}.json").read_text())
    doc["id"] = UNPUBLISHED
    (dst / f"{L3A_JUNE}.json").unlink()
    (dst / f"{UNPUBLISHED}.json").write_text(json.dumps(doc))
    yield dst
    shutil.rmtree(dst)


@pytest.fixture(scope="module")
def public(published, unpublished):
    site, _, _, _ = published
    with Service(site.source) as svc:
        yield svc


@pytest.fixture(scope="module")
def private(published, unpublished):
    site, _, _, _ = published
    with Service(site.source, "--private-search") as svc:
        yield svc


class Watch:
    """inotify on a folder: was anything in it opened or read?"""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, folder: Path) -> None:
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, ctypes.get_errno()
        wd = self.libc.inotify_add_watch(self.fd, str(folder).encode(),
                                         self.IN_OPEN | self.IN_ACCESS)
        assert wd >= 0, ctypes.get_errno()

    def events(self) -> int:
        n = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            n += len(data)

    def close(self) -> None:
        os.close(self.fd)


def product_routes(store: Path) -> list[tuple[str, str, str]]:
    """``(method, path template, kind)`` of every portal route that takes a product id
    (``item`` query parameter), read from the service's application."""
    from agriseries.distribution.app import create_app
    from agriseries.distribution.settings import ServiceSettings

    app = create_app(ServiceSettings(store=store))
    try:
        out = []
        for r in app.routes:
            path = getattr(r, "path", "")
            if not path.startswith("/portal") or not hasattr(r, "dependant"):
                continue
            names = set()
            stack = [r.dependant]
            while stack:
                d = stack.pop()
                names |= {p.name for p in d.query_params}
                stack += d.dependencies
            if "item" not in names:
                continue
            kind = "cog" if "/tiles/cog/" in path else "item" if "/tiles/item/" in path \
                else "api"
            for m in sorted(r.methods):
                out.append((m, path, kind))
        return out
    finally:
        app.state.accounts.close()


def requests_of(store: Path, item_id: str) -> list[tuple[str, str, dict, dict | None]]:
    """One request per product route (and the pixel series and operator page) about
    ``item_id``: ``(method, path, params, json body)``."""
    item = ProductStore(store).item(L3A_JUNE)  # same footprint as the unpublished copy
    b = item.bbox
    lon, lat = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    t = WMQ.tile(lon, lat, 14)
    out = []
    for method, path, kind in product_routes(store):
        url = (path.replace("{tileMatrixSetId}", "WebMercatorQuad").replace("{z}", str(t.z))
               .replace("{x}", str(t.x)).replace("{y}", str(t.y)).replace("{format}", "png")
               .replace("{lon}", f"{lon:.6f}").replace("{lat}", f"{lat:.6f}"))
        params = {"item": item_id}
        if kind == "cog":
            params["asset"] = "B04"
        elif kind == "item" and not url.endswith("/assets"):
            params["assets"] = "B04"
        body = None
        if method == "POST":
            body = {"type": "Feature", "properties": {}, "geometry": item.geometry}
        out.append((method, url, params, body))
    assert len(out) >= 18, out  # layers, quicklook and the two factories' routes
    return out


def call(base: str, req, headers=None) -> httpx.Response:
    method, url, params, body = req
    return httpx.request(method, base + url, params=params, json=body, headers=headers,
                         timeout=60)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_every_product_route_answers_published_products_only(public, published, unpublished):
    _, store, _, _ = published
    for req in requests_of(store, L3A_JUNE):
        r = call(public.url, req)
        assert r.status_code == 200, (req, r.status_code, r.text[:300])
    watch = Watch(unpublished)
    try:
        reqs = requests_of(store, UNPUBLISHED)
        assert watch.events() == 0  # building the requests read nothing there
        for req in reqs:
            r = call(public.url, req)
            assert r.status_code == 404, (req, r.status_code, r.text[:300])
            assert "not published" in r.text, (req, r.text[:300])
        # the pixel series never reads an unpublished product either
        item = ProductStore(store).item(L3A_JUNE)
        b = item.bbox
        r = httpx.get(public.url + "/portal/api/series", timeout=60, params={
            "lon": (b[0] + b[2]) / 2, "lat": (b[1] + b[3]) / 2, "level": "L3A",
            "start": "2018-08-01"})
        assert r.status_code == 200 and r.json()["rows"] == [], r.text
        assert watch.events() == 0, "a file of the unpublished product was opened"
    finally:
        watch.close()


def test_private_search_needs_a_valid_token_on_every_route(private, published):
    _, store, good, gone = published
    item = ProductStore(store).item(L3A_JUNE)
    b = item.bbox
    reqs = requests_of(store, L3A_JUNE) + [
        ("GET", "/portal/api/series", {"lon": (b[0] + b[2]) / 2, "lat": (b[1] + b[3]) / 2,
                                       "level": "L3A"}, None),
        ("GET", "/portal/api/status", {}, None),
        ("GET", "/search", {}, None)]
    for req in reqs:
        for headers, what in [(None, "no token"), (bearer(gone), "revoked token"),
                              (bearer("ags_forged"), "forged token")]:
            r = call(private.url, req, headers)
            assert r.status_code == 401, (req, what, r.status_code, r.text[:300])
        r = call(private.url, req, bearer(good))
        assert r.status_code == 200, (req, r.status_code, r.text[:300])
    # an unknown product with a good token: 404, and without a token still 401 (nothing
    # is said about which products exist)
    unknown = ("GET", "/portal/api/layers", {"item": "L4B_S2_T31UDS_20190601-20190731_AGS"}, None)
    assert call(private.url, unknown).status_code == 401
    assert call(private.url, unknown, bearer(good)).status_code == 404
    # the page tells the browser that search is private
    assert httpx.get(private.url + "/portal/api/config", timeout=30).json()["public_search"] \
        is False


def test_path_tricks_and_links_are_404(public, published):
    _, store, _, _ = published
    base = public.url + "/portal/tiles/cog/info"
    for params in [{"item": "../../etc/passwd", "asset": "B04"},
                   {"item": f"../{L3A_JUNE}", "asset": "B04"},
                   {"item": f"{L3A_JUNE}/../../../jobs.sqlite", "asset": "B04"},
                   {"item": "%2e%2e%2fjobs.sqlite", "asset": "B04"},
                   {"item": L3A_JUNE, "asset": "../../jobs.sqlite"},
                   {"item": L3A_JUNE, "asset": "/etc/passwd"},
                   {"item": L3A_JUNE, "asset": "B04/../../../jobs.sqlite"},
                   {"item": L3A_JUNE + "\x00", "asset": "B04"}]:
        r = httpx.get(base, params=params, timeout=30)
        assert r.status_code == 404, (params, r.status_code, r.text[:300])
    r = httpx.get(public.url + "/portal/tiles/item/info", timeout=30,
                  params={"item": L3A_JUNE, "assets": "../../jobs.sqlite"})
    assert r.status_code in (400, 404), r.text  # titiler: not an asset of the item
    # a published file replaced by a symbolic link (to another file of the store): 404
    ps = ProductStore(store)
    path = Path(ps.item(L4A).assets["crop_mask"].get_absolute_href())
    other = Path(ps.item(L4B).assets["crop_type"].get_absolute_href())
    keep = path.with_name(path.name + ".keep")
    path.rename(keep)
    try:
        path.symlink_to(other)
        for url in ("/portal/tiles/cog/info", "/portal/tiles/cog/tilejson.json"):
            r = httpx.get(public.url + url.replace("tilejson", "WebMercatorQuad/tilejson"),
                          params={"item": L4A, "asset": "crop_mask"}, timeout=30)
            assert r.status_code == 404 and "not in the store" in r.text, (url, r.text[:300])
        # the L4A's only picture is that layer: no quicklook rather than the linked file
        r = httpx.get(public.url + "/portal/api/quicklook", params={"item": L4A}, timeout=30)
        assert r.status_code == 404, r.text
        r = httpx.get(public.url + "/portal/api/layers", params={"item": L4A}, timeout=30)
        assert r.status_code == 200 and "crop_mask" not in {
            lay["id"] for lay in r.json()["layers"]}, r.text  # its classes were not read
    finally:
        path.unlink()
        keep.rename(path)


def test_basket_links_are_short_lived_signed_urls(public, published):
    """POST /basket/links: signed URLs of the archive and list that need no header, valid
    LINK_TTL_S; without a token no links; a tampered, expired or other user's signature,
    or the signature used on another path: 401."""
    import time
    import urllib.parse
    import zipfile
    from io import BytesIO

    from agriseries.distribution.accounts import Accounts
    from agriseries.distribution.basket import LINK_TTL_S

    _, store, good, _ = published
    assert httpx.post(public.url + "/basket/links", timeout=30).status_code == 401
    r = httpx.post(public.url + "/basket/items", headers=bearer(good), timeout=30,
                   json={"items": [{"collection": "agriseries-l4a", "id": L4A}]})
    assert r.status_code == 200 and not r.json()["missing"], r.text
    links = httpx.post(public.url + "/basket/links", headers=bearer(good), timeout=30).json()
    assert 0 < links["expires"] - time.time() <= LINK_TTL_S
    z = httpx.get(links["archive"], timeout=60)
    assert z.status_code == 200 and "attachment" in z.headers["content-disposition"]
    item = ProductStore(store).item(L4A)
    with zipfile.ZipFile(BytesIO(z.content)) as zf:
        for a in item.assets.values():
            p = Path(a.get_absolute_href())
            assert zf.read(f"agriseries-l4a/{L4A}/{p.name}") == p.read_bytes()
    listed = httpx.get(links["list"], timeout=30)
    assert listed.status_code == 200 and len(listed.text.split()) == len(item.assets)
    u = urllib.parse.urlsplit(links["archive"])
    q = dict(urllib.parse.parse_qsl(u.query))
    accounts = Accounts(str(Path(store) / ".distribution" / "service.sqlite"))
    try:
        past = int(time.time()) - 10
        expired = {**q, "expires": str(past), "signature": accounts.sign(q["user"], u.path, past)}
    finally:
        accounts.close()
    bad = [{**q, "signature": "0" * 64}, {**q, "user": "rex"}, {**q, "expires": str(
        int(q["expires"]) + 3600)}, expired]
    for params in bad:
        r = httpx.get(public.url + u.path, params=params, timeout=30)
        assert r.status_code == 401, (params, r.text)
    # the archive's signature is for the archive only
    r = httpx.get(public.url + f"/assets/agriseries-l4a/{L4A}/crop_mask", params=q, timeout=30)
    assert r.status_code == 401
