"""The portal page in a real browser: Debian's Chromium, headless, driven by Playwright
(no browser download: ``executable_path`` is the Debian binary), against ``agriseries serve``
running in its own process on loopback with a store the production made from real data,
published into the embedded catalogue.

What a user does, each checked against the store: search and see the footprints, open an
L3A and an L4B on the map (tiles load, the class colours are in the rendered canvas), click
a pixel and read the chart, add a whole series to the basket and download it, sign in and
out, use the result list from the keyboard, an empty search, a server error shown as a
message; and no request leaves the service's own host. Screenshots go to
``build/test-artifacts/portal/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("titiler.core")
pytest.importorskip("agriseries.distribution.app")
playwright_api = pytest.importorskip("playwright.sync_api")

from agriseries.io.store import ProductStore  # noqa: E402

from portal_helpers import (L3A_JUNE, L4B, Service, cli, product_store,  # noqa: E402
                            publish, site_of_store)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

CHROMIUM = os.environ.get("AGRISERIES_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS = Path(__file__).parent.parent / "build" / "test-artifacts" / "portal"

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The store published into the service's catalogue; a user and her token."""
    store = product_store(tmp_path_factory)
    site = site_of_store()
    publish()
    token = cli("users", "add", "alice", "--store", str(store)).strip().splitlines()[-1]
    return site, store, token


SERVED: set[str] = set()  # the hosts of the services this module started


@pytest.fixture(scope="module")
def service(published):
    site, _, _ = published
    with Service(site.source) as svc:
        SERVED.add(urllib.parse.urlsplit(svc.url).netloc)
        yield svc


@pytest.fixture(scope="module")
def browser(service):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="agriseries-chromium-")
    with playwright_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS, accept_downloads=True,
            viewport={"width": 1280, "height": 800})
        ctx.requests = []
        ctx.on("request", lambda r: ctx.requests.append(r.url))
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def page(browser, service):
    pg = browser.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(service.url + "/")
    pg.wait_for_selector("body[data-ready=true]")
    yield pg
    pg.close()


def search(page, level: str, start: str = "", end: str = "", **fields) -> int:
    page.select_option("#level", level)
    page.fill("#from", start)
    page.fill("#to", end)
    for k, v in fields.items():
        page.fill(f"#{k}", str(v))
    page.evaluate("document.getElementById('count').textContent = ''")  # this search's count
    with page.expect_response(lambda r: r.url.endswith("/search")):
        page.click("#go")
    page.wait_for_function("document.getElementById('count').textContent !== ''")
    return page.locator("#results li").count()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"))


def show(page, item_id: str) -> list:
    """Click a result, collect the tile responses of its first layer."""
    tiles = []
    page.on("response", lambda r: tiles.append(r) if "/portal/tiles/" in r.url else None)
    page.click(f"#results li[data-id='{item_id}'] .id")
    page.wait_for_function(f"document.getElementById('shown').textContent === '{item_id}'")
    page.wait_for_function("(() => { const t = window.agriseries.state.tiles;"
                           " return t && t.loaded + t.failed > 0 && t.loading === 0; })()")
    page.wait_for_timeout(100)  # the last tile's response event
    return tiles


def test_search_draws_the_footprints(page, published):
    _, store, _ = published
    want = sorted(it.id for it in ProductStore(store).items(level="L2A", start=None)
                  if "2018-06-01" <= it.datetime.strftime("%Y-%m-%d") <= "2018-06-30")
    n = search(page, "L2A", "2018-06-01", "2018-06-30")
    ids = page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")
    assert sorted(ids) == want and n == len(want)
    drawn = page.evaluate("window.agriseries.map.getLayers().getArray()[1].getSource()"
                          ".getFeatures().map(f => f.getId())")
    assert sorted(drawn) == want
    page.wait_for_timeout(300)
    assert (36, 69, 47) in canvas_colours_all(page)  # the footprints' outline is rendered
    assert page.locator("#results img").first.evaluate("i => i.complete && i.naturalWidth > 0")
    shot(page, "search")


def canvas_colours_all(page, selector: str = "#map canvas") -> set[tuple[int, int, int]]:
    """The opaque colours of the map's canvases as rendered (``selector``: which)."""
    data = page.evaluate(f"""() => [...document.querySelectorAll('{selector}')].map(c =>
        Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))""")
    out = set()
    for d in data:
        px = np.asarray(d, np.uint8).reshape(-1, 4)
        out |= {tuple(p[:3]) for p in px[px[:, 3] > 200]}
    return out


def test_l3a_and_l4b_tiles_load_with_the_class_colours(page):
    search(page, "L3A", "2018-06-01", "2018-06-30")
    tiles = show(page, L3A_JUNE)
    assert tiles and all(t.status == 200 for t in tiles), [(t.url, t.status) for t in tiles]
    assert all(t.headers["content-type"] == "image/png" and len(t.body()) > 100 for t in tiles)
    shot(page, "l3a")
    search(page, "L4B")
    tiles = show(page, L4B)
    assert tiles and all(t.status == 200 and t.headers["content-type"] == "image/png"
                         and len(t.body()) > 100 for t in tiles)
    page.wait_for_timeout(300)
    classes = page.eval_on_selector_all(
        "#legend .class", "els => els.map(e => [e.dataset.value, e.querySelector('.swatch')"
        ".style.background])")
    colours = {tuple(int(v) for v in bg[4:-1].split(",")) for _, bg in classes}
    rendered = canvas_colours_all(page, ".product-layer canvas")
    assert len(colours & rendered) >= 2, (colours, sorted(rendered)[:20])
    assert rendered <= colours, rendered - colours  # class colours only, none blended
    assert page.locator("#legend .class").first.inner_text().startswith("0 not cropland")
    shot(page, "l4b")


def _click_lonlat(page, lon: float, lat: float) -> None:
    x, y = page.evaluate(f"window.agriseries.map.getPixelFromCoordinate("
                         f"ol.proj.fromLonLat([{lon}, {lat}]))")
    box = page.locator("#map").bounding_box()
    with page.expect_response(lambda r: "/portal/api/series" in r.url):
        page.mouse.click(box["x"] + x, box["y"] + y)


def test_pixel_chart_values_match_the_store(page, published):
    import agriseries
    import rasterio
    from pyproj import Transformer
    from rasterio.warp import transform

    _, store_dir, _ = published
    store = ProductStore(store_dir)
    items = sorted(store.items(level="L2A"), key=lambda it: it.datetime)
    search(page, "L2A", "2018-06-01", "2018-07-31")
    show(page, items[1].id)
    path = store.item(L3A_JUNE).assets["B04"].get_absolute_href()
    with rasterio.open(path) as src:
        x, y = src.xy(21, 22)
        lon, lat = (v[0] for v in transform(src.crs, "EPSG:4326", [x], [y]))
    page.evaluate(f"window.agriseries.map.getView().setCenter(ol.proj.fromLonLat([{lon}, {lat}]))")
    page.evaluate("window.agriseries.map.getView().setZoom(16)")
    page.wait_for_timeout(200)
    _click_lonlat(page, lon, lat)
    page.wait_for_selector("#chart circle")
    points = page.eval_on_selector_all(
        "#chart circle", "els => els.map(e => [e.dataset.item, Number(e.dataset.value), "
        "e.dataset.cloudy])")
    assert len(points) >= len(items) - 2  # every date with a value at the clicked pixel
    clicked = json.loads(page.evaluate("JSON.stringify([window.agriseries.state.series.lon,"
                                       "window.agriseries.state.series.lat])"))
    for item_id, value, cloudy in points:
        ds = agriseries.load(store.open(item_id))
        xt, yt = Transformer.from_crs(4326, ds.odc.geobox.crs.epsg, always_xy=True) \
            .transform(*clicked)
        px = ds.sel(x=xt, y=yt, method="nearest")
        red, nir = float(px["B04" if "_S2" in item_id else "B4"].values.squeeze()), \
            float(px["B08" if "_S2" in item_id else "B5"].values.squeeze())
        assert value == pytest.approx((nir - red) / (nir + red), abs=1e-4), item_id
        mask = int(px["mask"].values.squeeze())
        assert cloudy == str(bool(mask & 0b1110011)).lower(), item_id
    assert any(c == "true" for _, _, c in points) and any(c == "false" for _, _, c in points)
    with page.expect_download() as dl:
        page.click("#csv")
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("date,item,kind") and \
        len(text.splitlines()) == len(items) + 1
    shot(page, "chart")


def _ids(page) -> set[str]:
    return set(page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)"))


def test_search_filters_cloud_sensor_tile_and_drawn_area(page, published):
    _, store_dir, _ = published
    items = list(ProductStore(store_dir).items(level="L2A"))
    every = {it.id for it in items}
    cover = sorted(it.properties["eo:cloud_cover"] for it in items)
    limit = cover[len(cover) // 2]
    search(page, "L2A", cloud=limit)
    assert _ids(page) == {it.id for it in items if it.properties["eo:cloud_cover"] <= limit}
    assert 0 < len(_ids(page)) < len(every)
    page.select_option("#sensor", "landsat")
    search(page, "L2A", cloud="")
    assert _ids(page) == {i for i in every if "_L8_" in i or "_L9_" in i} != set()
    page.select_option("#sensor", "sentinel-2")
    search(page, "L2A")
    assert _ids(page) == {i for i in every if "_S2" in i}
    page.select_option("#sensor", "")
    search(page, "L2A", tile="31UDS")  # with or without the T
    assert _ids(page) == every
    assert search(page, "L2A", tile="T31UES") == 0
    search(page, "L2A", tile="")  # the map fits the footprints

    def draw(x0, y0, x1, y1) -> None:
        box = page.locator("#map").bounding_box()
        before = page.evaluate("JSON.stringify(window.agriseries.state.area)")
        page.click("#draw")
        page.mouse.click(box["x"] + x0, box["y"] + y0)
        page.mouse.move(box["x"] + x1, box["y"] + y1)
        page.mouse.click(box["x"] + x1, box["y"] + y1)
        page.wait_for_function(f"JSON.stringify(window.agriseries.state.area) !== '{before}'")

    b = items[0].bbox
    cx, cy = page.evaluate(f"window.agriseries.map.getPixelFromCoordinate(ol.proj.fromLonLat("
                           f"[{(b[0] + b[2]) / 2}, {(b[1] + b[3]) / 2}]))")
    draw(cx - 10, cy - 10, cx + 10, cy + 10)
    area = page.evaluate("window.agriseries.state.area")
    assert area[0] < (b[0] + b[2]) / 2 < area[2] and area[1] < (b[1] + b[3]) / 2 < area[3]
    search(page, "L2A")
    assert _ids(page) == every
    w, h = (lambda b: (b["width"], b["height"]))(page.locator("#map").bounding_box())
    draw(w - 30, h - 30, w - 10, h - 10)  # a corner of the map, away from the footprints
    assert search(page, "L2A") == 0
    page.click("#clear-area")
    assert search(page, "L2A") == len(every)


def test_l3b_chart_shows_the_smoothed_season_profile(page, published):
    import rasterio
    from rasterio.warp import transform

    from portal_helpers import SEASON

    _, store_dir, _ = published
    store = ProductStore(store_dir)
    path = store.item(SEASON).assets["LAI_smoothed"].get_absolute_href()
    with rasterio.open(path) as src:  # a pixel with a profile
        r0, c0 = np.argwhere(np.isfinite(src.read()).all(axis=0))[0]
        x, y = src.xy(r0, c0)
        lon, lat = (v[0] for v in transform(src.crs, "EPSG:4326", [x], [y]))
    search(page, "L3B", "2018-06-01", "2018-07-31")
    first = page.eval_on_selector("#results li", "e => e.dataset.id")
    show(page, first)
    page.evaluate(f"window.agriseries.map.getView().setCenter(ol.proj.fromLonLat([{lon}, {lat}]))")
    page.evaluate("window.agriseries.map.getView().setZoom(17)")
    page.wait_for_timeout(200)
    _click_lonlat(page, lon, lat)
    page.wait_for_selector("#chart polyline[data-series=smoothed]")
    assert page.input_value("#variable") == "LAI"
    drawn = page.eval_on_selector_all("#chart circle[data-series=smoothed]",
                                      "els => els.map(e => [e.dataset.date, Number(e.dataset.value)])")
    clicked = page.evaluate("[window.agriseries.state.series.lon, window.agriseries.state.series.lat]")
    with rasterio.open(path) as src:
        xs, ys = transform("EPSG:4326", src.crs, [clicked[0]], [clicked[1]])
        want = [float(v) for v in next(src.sample([(xs[0], ys[0])]))]
    dates = store.item(SEASON).properties["agriseries:dates"]
    assert [d[:10] for d, _ in drawn] == [d for d, v in zip(dates, want) if np.isfinite(v)]
    assert [v for _, v in drawn] == pytest.approx([v for v in want if np.isfinite(v)], abs=1e-5)
    assert page.locator("#chart circle.obs, #chart circle.cloudy").count() >= 1  # the dates
    shot(page, "chart-l3b")


def test_mask_bits_toggled_on_the_page(page, published):
    _, store_dir, _ = published
    cloudy = max(ProductStore(store_dir).items(level="L2A"),
                 key=lambda it: it.properties.get("eo:cloud_cover", 0))
    day = cloudy.datetime.strftime("%Y-%m-%d")
    search(page, "L2A", day, day)
    show(page, cloudy.id)
    asked = []
    page.on("response", lambda r: asked.append(r) if "/portal/tiles/" in r.url else None)
    page.check("#layerchoice input[value=mask]")
    page.wait_for_function("(() => { const t = window.agriseries.state.tiles;"
                           " return t.loaded + t.failed > 0 && t.loading === 0; })()")
    page.wait_for_timeout(300)
    assert asked and all(r.status == 200 for r in asked)
    bits = {json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(r.url).query)
                       ["algorithm_params"][0])["bits"] for r in asked}
    assert bits == {page.evaluate("window.agriseries.state.bits")}
    def shown():  # the product layer's visible pixels (drawn at 75 % opacity)
        data = page.evaluate("""() => [...document.querySelectorAll('.product-layer canvas')]
            .map(c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))""")
        px = np.concatenate([np.asarray(d, np.uint8).reshape(-1, 4) for d in data])
        return px[px[:, 3] > 0]

    seen = shown()
    assert len(seen) and (seen[:, :3] >= 250).all(axis=1).any()  # the clouds, in white
    boxes = page.locator("#legend input[type=checkbox]")
    asked.clear()
    for i in range(boxes.count()):
        boxes.nth(i).uncheck()
    assert page.evaluate("window.agriseries.state.bits") == 0
    page.wait_for_function(
        "[...document.querySelectorAll('#legend input')].every(b => !b.checked)")
    page.wait_for_function("(() => { const t = window.agriseries.state.tiles;"
                           " return t.loaded + t.failed > 0 && t.loading === 0; })()")
    page.wait_for_timeout(300)
    last = [r for r in asked if '"bits":0' in urllib.parse.unquote(r.url).replace(" ", "")]
    assert last and all(r.status == 200 for r in asked), [urllib.parse.unquote(r.url)[-60:] for r in asked]
    assert len(shown()) == 0  # no bit chosen: nothing drawn


def test_sign_in_add_a_series_to_the_basket_download_it_sign_out(page, published):
    _, store_dir, token = published
    page.fill("#token", "ags_not-a-token")
    page.click("#signin button")
    page.wait_for_selector("#message:not([hidden])")
    assert "sign-in failed: HTTP 401" in page.inner_text("#message")
    page.fill("#token", token)
    page.click("#signin button")
    page.wait_for_selector("#signedin:not([hidden])")
    assert "alice" in page.inner_text("#user")
    page.click("#empty") if page.locator("#basket-actions:not([hidden])").count() else None
    n = search(page, "L3B", "2018-06-01", "2018-06-30")
    assert n > 1
    with page.expect_response(lambda r: r.url.endswith("/basket/search")):
        page.click("#add-series")
    page.wait_for_function(f"document.getElementById('basket-state').dataset.count == '{n}'")
    assert "quota left today" in page.inner_text("#basket-state")
    asked = []
    page.on("request", lambda r: asked.append(r) if "/basket/" in r.url else None)
    with page.expect_download() as dl:
        page.click("#zip")
    # a download of a short-lived signed URL, by the browser itself: not fetch() + Blob
    # (the page itself asked only for the link; the archive went to the download manager)
    assert [r.url.rsplit("/", 1)[-1] for r in asked] == ["links"], \
        [(r.url, r.resource_type) for r in asked]
    url = urllib.parse.urlsplit(dl.value.url)
    assert url.path == "/basket/archive.zip" and "signature=" in url.query
    assert dl.value.suggested_filename == "basket-alice.zip"
    store = ProductStore(store_dir)
    june = {it.id for it in store.items(level="L3B")
            if "-" not in it.id.split("_")[3] and it.id.split("_")[3] < "20180701"}
    with zipfile.ZipFile(dl.value.path()) as z:
        names = z.namelist()
        assert {name.split("/")[1] for name in names} == june
        want = set()
        for item_id in june:  # every file of every product, and its item
            item = store.item(item_id)
            folder = store.item_path(item_id).parent
            for a in item.assets.values():
                want.add(f"agriseries-l3b/{item_id}/{Path(a.get_absolute_href()).name}")
            want.add(f"agriseries-l3b/{item_id}/{item_id}.json")
        assert set(names) == want, set(names) ^ want
        for name in names:
            item_id, fname = name.split("/")[1], name.split("/")[2]
            if fname == f"{item_id}.json":
                doc = json.loads(z.read(name))
                assert doc["id"] == item_id and set(doc["assets"]) == \
                    set(store.item(item_id).assets)
            else:
                path = store.item_path(item_id).parent / fname
                assert z.read(name) == path.read_bytes(), name
    with page.expect_download() as dl:
        page.click("#list")
    lines = Path(dl.value.path()).read_text().split()
    assert len(lines) == len(want) - len(june) and all("signature=" in u for u in lines)
    shot(page, "basket")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('agriseries-token')") is None
    assert page.locator("#add-series").is_disabled()


def test_keyboard_navigation_of_the_result_list(page):
    n = search(page, "L2A", "2018-06-01", "2018-07-31")
    assert n >= 3
    page.focus("#results li:first-child")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("document.activeElement.dataset.id")
    third = page.eval_on_selector("#results li:nth-child(3)", "e => e.dataset.id")
    assert focused == third
    page.keyboard.press("ArrowUp")
    second = page.eval_on_selector("#results li:nth-child(2)", "e => e.dataset.id")
    assert page.evaluate("document.activeElement.dataset.id") == second
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('shown').textContent === '{second}'")
    assert page.get_attribute("#results li:nth-child(2)", "aria-selected") == "true"
    # Tab moves from the list item to its basket button
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "add"


def test_empty_search_and_errors_are_messages(page, published):
    assert search(page, "L2A", "2030-01-01", "2030-02-01") == 0
    assert "No product matches" in page.inner_text("#count")
    assert "widen" in page.inner_text("#message")
    page.fill("#tile", "nonsense")
    page.click("#go")
    page.wait_for_function("document.getElementById('message').textContent.includes('tile')")
    page.fill("#tile", "")
    # a product whose file is damaged on the server: a 500 told in words, the page stays
    _, store_dir, _ = published
    item = ProductStore(store_dir).item(L3A_JUNE)
    path = Path(item.assets["B04"].get_absolute_href())
    keep = path.read_bytes()
    try:
        path.write_bytes(keep[:2000])
        os.utime(path, ns=(0, 1))  # another modification time: no cached stretch
        search(page, "L3A", "2018-06-01", "2018-06-30")
        page.click(f"#results li[data-id='{L3A_JUNE}'] .id")
        page.wait_for_function("document.getElementById('message').textContent.includes('500')")
        text = page.inner_text("#message")
        assert "cannot be read" in text and L3A_JUNE in text
        assert page.locator("#results li").count() == 1  # the page is still there
        shot(page, "error")
    finally:
        path.write_bytes(keep)


def test_operator_page_shows_the_production_state(page, published):
    from agriseries.production.status import status

    site, _, _ = published
    st = status(site)
    page.click("#tab-status")
    page.wait_for_selector("#products td")
    rows = page.eval_on_selector_all("#products tbody tr",
                                     "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert {lv: int(n) for lv, n in rows} == st.products
    jobs = page.inner_text("#jobs")
    for lv in st.counts:
        assert lv in jobs
    assert "Due, not yet in the job store: 0" in page.inner_text("#backlog")
    shot(page, "operator")


def test_private_search_the_page_sends_the_token(browser, published):
    """With --private-search, the page's searches, quicklooks, tiles and chart carry the
    token (tiles are fetched with the header, an <img> cannot send one)."""
    site, store_dir, token = published
    with Service(site.source, "--private-search") as svc:
        SERVED.add(urllib.parse.urlsplit(svc.url).netloc)
        pg = browser.new_page()
        pg.set_default_timeout(30_000)
        statuses = []
        pg.on("response", lambda r: statuses.append((r.url, r.status)))
        try:
            pg.goto(svc.url + "/")
            pg.wait_for_selector("body[data-ready=true]")
            pg.select_option("#level", "L3A")
            pg.click("#go")
            pg.wait_for_function("document.getElementById('message').textContent"
                                 ".includes('401')")
            pg.fill("#token", token)
            pg.click("#signin button")
            pg.wait_for_selector("#signedin:not([hidden])")
            assert search(pg, "L3A", "2018-06-01", "2018-06-30") == 1
            pg.wait_for_function("(() => { const i = document.querySelector('#results img');"
                                 " return i && i.complete && i.naturalWidth > 0; })()")
            tiles = show(pg, L3A_JUNE)
            assert tiles and all(t.status == 200 for t in tiles)
            assert len(canvas_colours_all(pg, ".product-layer canvas")) > 50  # drawn
            portal = [(u, st) for u, st in statuses if "/portal/" in u and "/static/" not in u]
            assert portal and all(st == 200 for _, st in portal), portal
            shot(pg, "private")
        finally:
            pg.close()


def test_single_sign_on_authorization_code_with_pkce(browser, published):
    """The service configured for OIDC: the page signs in at the issuer (a provider on
    loopback issuing RS256 JWTs, tests/oidc_provider.py) with the authorization code flow
    and PKCE, and the access token it gets is checked by the service through the issuer's
    JWKS; the basket then works as that user; sign-out forgets the token."""
    import httpx
    import jwt

    from oidc_provider import Provider

    site, _, _ = published
    with Provider("agriseries", users={"eve": "s3cret"}) as idp, Service(
            site.source, "--oidc-issuer", idp.issuer, "--oidc-audience", "agriseries",
            "--oidc-jwks-url", idp.issuer + "/jwks", "--oidc-client-id", "portal") as svc:
        idp.register("portal", svc.url + "/portal/")
        SERVED.update(urllib.parse.urlsplit(u).netloc for u in (svc.url, idp.issuer))
        pg = browser.new_page()
        pg.set_default_timeout(30_000)
        try:
            pg.goto(svc.url + "/portal/")
            pg.wait_for_selector("body[data-ready=true]")
            assert pg.is_visible("#sso")
            pg.click("#sso")
            pg.wait_for_selector("#login")
            assert pg.url.startswith(idp.issuer + "/authorize?")
            asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(pg.url).query))
            assert asked["code_challenge_method"] == "S256" and \
                asked["redirect_uri"] == svc.url + "/portal/"
            pg.fill("#username", "eve")
            pg.fill("#password", "wrong")
            pg.click("#login")
            pg.wait_for_selector("#error:has-text('wrong user')")
            pg.fill("#username", "eve")
            pg.fill("#password", "s3cret")
            pg.click("#login")
            pg.wait_for_selector("#signedin:not([hidden])")
            assert "eve" in pg.inner_text("#user")
            assert "code=" not in pg.url  # the code is not left in the address
            token = pg.evaluate("sessionStorage.getItem('agriseries-token')")
            claims = jwt.decode(token, idp.key.public_key(), algorithms=["RS256"],
                                audience="agriseries", issuer=idp.issuer)
            assert claims["sub"] == "eve" and claims["jti"] == idp.issued[-1]["jti"]
            acct = httpx.get(svc.url + "/account", timeout=30,
                             headers={"Authorization": f"Bearer {token}"}).json()
            assert acct["user"] == "eve" and acct["origin"] == "oidc"
            assert search(pg, "L4B") == 1
            with pg.expect_response(lambda r: r.url.endswith("/basket/items")) as added:
                pg.click(f"#results li[data-id='{L4B}'] .add")
            assert added.value.status == 200
            pg.wait_for_function("document.getElementById('basket-state').dataset.count == '1'")
            shot(pg, "sso")
            pg.click("#signout")
            pg.wait_for_selector("#signin:not([hidden])")
            assert pg.evaluate("sessionStorage.getItem('agriseries-token')") is None
        finally:
            pg.close()
        # the provider holds to PKCE: a code is traded only with its verifier, once
        verifier = "v" * 50
        import base64
        import hashlib

        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
            .rstrip(b"=").decode()
        form = {"response_type": "code", "client_id": "portal", "state": "s",
                "redirect_uri": svc.url + "/portal/", "code_challenge": challenge,
                "code_challenge_method": "S256", "username": "eve", "password": "s3cret"}

        def code() -> str:
            r = httpx.post(idp.issuer + "/authorize", data=form, timeout=30)
            assert r.status_code == 302, r.text
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
                r.headers["location"]).query))["code"]

        trade = {"grant_type": "authorization_code", "client_id": "portal",
                 "redirect_uri": svc.url + "/portal/"}
        assert httpx.post(idp.issuer + "/token", timeout=30, data={
            **trade, "code": code(), "code_verifier": "w" * 50}).status_code == 400
        c = code()
        assert httpx.post(idp.issuer + "/token", timeout=30, data={
            **trade, "code": c, "code_verifier": verifier}).status_code == 200
        assert httpx.post(idp.issuer + "/token", timeout=30, data={
            **trade, "code": c, "code_verifier": verifier}).status_code == 400


def test_no_request_to_another_host(browser, service):
    hosts = {urllib.parse.urlsplit(u).netloc for u in browser.requests
             if not u.startswith(("data:", "blob:"))}
    assert hosts and hosts <= SERVED, hosts - SERVED
    assert all(h.startswith("127.0.0.1:") for h in SERVED)
