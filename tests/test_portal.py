"""The portal's endpoints (agriseries.portal) on a real store served over loopback HTTP:
map tiles by titiler-core / rio-tiler (true colour, class colours, colour ramps, mask bits),
map layers of each level, and a pixel's time series (JSON and CSV) checked against the store.

The store is the production's output on real data (tests/portal_helpers.py), published into
the embedded catalogue; the service is the distribution's application (the portal mounted
on it), run by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

pytest.importorskip("titiler.core")

import httpx  # noqa: E402
import morecantile  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from PIL import Image  # noqa: E402

from agriseries.distribution.app import create_app  # noqa: E402
from agriseries.distribution.settings import ServiceSettings  # noqa: E402
from agriseries.io.store import ProductStore  # noqa: E402
from agriseries.portal import PortalSettings  # noqa: E402
from agriseries.portal.products import read_classes  # noqa: E402

from portal_helpers import (L3A_JUNE, L4B, SEASON, product_store, publish,  # noqa: E402
                            serve)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

WMQ = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    store = product_store(tmp_path_factory)
    publish()
    return store


@pytest.fixture(scope="module")
def service(store_dir):
    app = create_app(ServiceSettings(store=store_dir))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client
    app.state.accounts.close()


def _centre(item) -> tuple[float, float]:
    b = item.bbox
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _pixel_centre(path: str, row: int, col: int) -> tuple[float, float]:
    """Longitude and latitude of the centre of a pixel of a raster."""
    import rasterio
    from rasterio.warp import transform

    with rasterio.open(path) as src:
        x, y = src.xy(row, col)
        lons, lats = transform(src.crs, "EPSG:4326", [x], [y])
    return lons[0], lats[0]


def _point(item, asset: str = "B04", row: int = 21, col: int = 22) -> tuple[float, float]:
    """A point at the centre of a 10 m pixel (and inside a 20 m one) of an item."""
    return _pixel_centre(item.assets[asset].get_absolute_href(), row, col)


def _tile_url(layer: dict, lon: float, lat: float, z: int) -> str:
    t = WMQ.tile(lon, lat, z)
    return layer["tiles"].replace("{z}", str(t.z)).replace("{x}", str(t.x)) \
        .replace("{y}", str(t.y))


def _png(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGBA"))


def _layers(service, item_id: str) -> dict[str, dict]:
    r = service.get("/portal/api/layers", params={"item": item_id})
    assert r.status_code == 200, r.text
    return {lay["id"]: lay for lay in r.json()["layers"]}


def test_layers_of_each_level(service, store_dir):
    store = ProductStore(store_dir)
    l3a = _layers(service, L3A_JUNE)
    assert l3a["truecolour"]["kind"] == "rgb"
    assert l3a["truecolour"]["assets"] == ["B04", "B03", "B02"]
    assert all(lo < hi for lo, hi in l3a["truecolour"]["rescale"])  # a 2-98 % stretch
    assert {b["name"] for b in l3a["mask"]["bits"]} >= {"cloud", "cloud_shadow", "snow", "water"}
    l2a_ids = [it.id for it in store.items(level="L2A")]
    landsat = next(i for i in l2a_ids if "_L8_" in i)
    assert _layers(service, landsat)["truecolour"]["assets"] == ["B4", "B3", "B2"]
    l3b = _layers(service, next(it.id for it in store.items(level="L3B")))
    assert l3b["LAI"]["kind"] == "ramp" and l3b["LAI"]["range"] == [0.0, 7.0]
    assert len(l3b["LAI"]["colours"]) == 11 and l3b["FCOVER"]["range"] == [0.0, 1.0]
    l4b = _layers(service, L4B)
    classes = l4b["crop_type"]["classes"]
    table = read_classes(store.item(L4B).assets["crop_type"].get_absolute_href())
    # the COG's raster attribute table: names and colours as the crop processor wrote them
    assert [(c["value"], c["name"]) for c in classes] == \
        [(c.value, c.name) for c in table if c.value != 65535]
    assert classes[0]["name"] == "not cropland (crop mask)"
    assert all(c["colour"].startswith("#") and len(c["colour"]) == 7 for c in classes)


def test_l3a_true_colour_tiles_load(service, store_dir):
    item = ProductStore(store_dir).item(L3A_JUNE)
    lon, lat = _centre(item)
    layer = _layers(service, L3A_JUNE)["truecolour"]
    for z in (13, 15, 17):
        img = _png(service.get(_tile_url(layer, lon, lat, z)))
        opaque = img[..., 3] > 0
        assert opaque.sum() > 100, z  # the product is drawn
        rgb = img[..., :3][opaque]
        assert rgb.std(axis=0).min() > 5, z  # an image, not a flat colour
    # a tile far from the product: 404, said in words
    r = service.get(_tile_url(layer, 10.0, 45.0, 15))
    assert r.status_code == 404 and "outside" in r.json()["detail"].lower()


def test_l4b_tiles_carry_the_class_colours(service, store_dir):
    store = ProductStore(store_dir)
    item = store.item(L4B)
    lon, lat = _centre(item)
    layer = _layers(service, L4B)["crop_type"]
    colours = {tuple(int(c["colour"][i:i + 2], 16) for i in (1, 3, 5)): c["value"]
               for c in layer["classes"]}
    img = _png(service.get(_tile_url(layer, lon, lat, 16)))
    drawn = {tuple(p) for p in img[..., :3][img[..., 3] == 255]}
    assert drawn <= set(colours), drawn - set(colours)  # class colours, nothing blended
    assert len(drawn) >= 2
    # a pixel inside a field (its 3 x 3 neighbours of the same class) has the colour of its
    # class in the COG
    import rasterio

    path = item.assets["crop_type"].get_absolute_href()
    with rasterio.open(path) as src:
        a = src.read(1)
    same = [(r, c) for r in range(1, a.shape[0] - 1) for c in range(1, a.shape[1] - 1)
            if a[r, c] != 0 and (a[r - 1:r + 2, c - 1:c + 2] == a[r, c]).all()]
    r0, c0 = same[len(same) // 2]
    value = a[r0, c0]
    lon, lat = _pixel_centre(path, r0, c0)
    img = _png(service.get(_tile_url(layer, lon, lat, 16)))
    t = WMQ.tile(lon, lat, 16)
    bb = WMQ.xy_bounds(t)
    mx, my = WMQ.xy(lon, lat)
    col = int((mx - bb.left) / (bb.right - bb.left) * 256)
    row = int((bb.top - my) / (bb.top - bb.bottom) * 256)
    assert colours[tuple(img[row, col, :3])] == value


def test_ramp_and_mask_bit_tiles(service, store_dir):
    import rasterio
    from rio_tiler.colormap import cmap

    store = ProductStore(store_dir)

    def valid(it):
        with rasterio.open(it.assets["LAI"].get_absolute_href()) as src:
            return int(np.isfinite(src.read(1)).sum())

    l3b = max((it for it in store.items(level="L3B") if "LAI" in it.assets), key=valid)
    lai = _layers(service, l3b.id)["LAI"]
    path = l3b.assets["LAI"].get_absolute_href()
    with rasterio.open(path) as src:
        a = src.read(1)
    r0, c0 = np.argwhere(np.isfinite(a) & (a > 0.5))[0]
    lon, lat = _pixel_centre(path, r0, c0)
    img = _png(service.get(_tile_url(lai, lon, lat, 17)))
    t = WMQ.tile(lon, lat, 17)
    bb = WMQ.xy_bounds(t)
    mx, my = WMQ.xy(lon, lat)
    px = img[int((bb.top - my) / (bb.top - bb.bottom) * 256),
             int((mx - bb.left) / (bb.right - bb.left) * 256)]
    # the colour of the ramp at the stored value (0-7 over the 256 colours of the map)
    pos = float(a[r0, c0]) / 7.0 * 255
    table = cmap.get(lai["ramp"])
    assert px[3] == 255
    assert tuple(px[:3]) in {tuple(table[i][:3]) for i in (int(pos) - 1, int(pos), int(pos) + 1)}
    # a cloudy L2A date: the cloud bit shown in its colour, and nothing with no bit selected
    cloudy = max(store.items(level="L2A"), key=lambda it: it.properties.get("eo:cloud_cover", 0))
    mask = _layers(service, cloudy.id)["mask"]
    cloud = next(b for b in mask["bits"] if b["name"] == "cloud")
    url = _tile_url(mask, *_centre(cloudy), 15)
    on = _png(service.get(url + "&algorithm_params=" + json.dumps({"bits": cloud["value"]})))
    white = tuple(int(cloud["colour"][i:i + 2], 16) for i in (1, 3, 5))
    shown = on[..., 3] == 255
    assert shown.any() and {tuple(p) for p in on[..., :3][shown]} == {white}
    off = _png(service.get(url + "&algorithm_params=" + json.dumps({"bits": 0})))
    assert not (off[..., 3] > 0).any()
    r = service.get(url + "&algorithm_params=" + json.dumps({"bits": "many"}))
    assert r.status_code == 400


def test_tile_requests_that_name_no_file_of_the_store(service):
    base = "/portal/tiles/cog/tiles/WebMercatorQuad/15/16659/10927.png"
    for params, word in [({"item": "../../etc/passwd", "asset": "B04"}, "not the id"),
                         ({"item": "L3A_S2L8_T31UDS_20190601-20190630_AGS", "asset": "B04"},
                          "not published"),
                         ({"item": L3A_JUNE, "asset": "../../jobs.sqlite"}, "no asset")]:
        r = service.get(base, params=params)
        assert r.status_code == 404 and word in r.json()["detail"], (params, r.text)
    r = service.get("/portal/api/layers", params={"item": "L4B_S2_T31UDS_20180601-20990731_AGS"})
    assert r.status_code == 404 and "not published" in r.json()["detail"]


def _pixel_of(store, item, band: str, lon: float, lat: float, **load) -> float:
    """The stored value at a point, read the way a processor reads a product."""
    import agriseries
    from pyproj import Transformer

    ds = agriseries.load(store.open(item), **load)
    x, y = Transformer.from_crs(4326, ds.odc.geobox.crs.epsg, always_xy=True).transform(lon, lat)
    return float(ds[band].sel(x=x, y=y, method="nearest").values.squeeze())


def test_l2a_pixel_series_matches_the_store(service, store_dir):
    store = ProductStore(store_dir)
    items = sorted(store.items(level="L2A"), key=lambda it: it.datetime)
    lon, lat = _point(store.item(L3A_JUNE))
    r = service.get("/portal/api/series", params={"lon": lon, "lat": lat, "level": "L2A"})
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [row["item"] for row in rows] == [it.id for it in items]
    cloudy = 0
    for row, item in zip(rows, items):
        s2 = "_S2" in item.id
        for cn, (b_s2, b_l8) in {"red": ("B04", "B4"), "nir": ("B08", "B5"),
                                 "blue": ("B02", "B2")}.items():
            want = _pixel_of(store, item, b_s2 if s2 else b_l8, lon, lat)
            if math.isnan(want):
                assert row[cn] is None
            else:
                assert row[cn] == pytest.approx(want, abs=1e-6), (item.id, cn)
        mask = int(_pixel_of(store, item, "mask", lon, lat))
        assert row["mask"] == mask and row["cloudy"] == bool(mask & 0b1110011)
        cloudy += row["cloudy"]
        if row["red"] is not None and row["nir"] is not None:
            assert row["ndvi"] == pytest.approx((row["nir"] - row["red"]) /
                                                (row["nir"] + row["red"]), abs=1e-5)
    assert 0 < cloudy < len(rows)  # the series has cloudy and clear dates here
    # the CSV holds the same rows
    c = service.get("/portal/api/series", params={"lon": lon, "lat": lat, "level": "L2A",
                                                 "format": "csv"})
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    assert "attachment" in c.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(c.text)))
    assert [t["item"] for t in table] == [row["item"] for row in rows]
    assert [float(t["red"]) if t["red"] else None for t in table] == [row["red"] for row in rows]
    assert [t["cloudy"] for t in table] == [str(row["cloudy"]) for row in rows]


def test_l3b_series_with_its_smoothed_profile_and_l3a_months(service, store_dir):
    import rasterio
    from rasterio.warp import transform

    store = ProductStore(store_dir)
    season = store.item(SEASON)
    path = season.assets["LAI_smoothed"].get_absolute_href()
    with rasterio.open(path) as src:  # a pixel with a profile (enough clear dates)
        r0, c0 = np.argwhere(np.isfinite(src.read()).all(axis=0))[0]
    lon, lat = _pixel_centre(path, r0, c0)
    r = service.get("/portal/api/series", params={"lon": lon, "lat": lat, "level": "L3B"})
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    obs = [row for row in rows if row["kind"] == "observation"]
    smooth = [row for row in rows if row["kind"] == "smoothed"]
    assert len(obs) == 8 and {"LAI", "FAPAR", "FCOVER", "LAI_flags"} <= set(obs[0])
    dates = season.properties["agriseries:dates"]
    assert [row["date"][:10] for row in smooth] == dates
    with rasterio.open(path) as src:
        xs, ys = transform("EPSG:4326", src.crs, [lon], [lat])
        want = next(src.sample([(xs[0], ys[0])], masked=True))
    want = [None if v is np.ma.masked or not np.isfinite(v) else float(v) for v in want]
    assert all(v is not None for v in want)
    got = [row["LAI"] for row in smooth]
    assert [v is None for v in got] == [v is None for v in want]
    assert [v for v in got if v is not None] == \
        pytest.approx([v for v in want if v is not None], abs=1e-5)
    for row in obs:
        item = store.item(row["item"])
        v = _pixel_of(store, item, "LAI", lon, lat, resolution=20, bands=[], angles=None,
                      with_mask=False)
        assert (row["LAI"] is None) == math.isnan(v)
        if row["LAI"] is not None:
            assert row["LAI"] == pytest.approx(v, abs=1e-5)
    r = service.get("/portal/api/series", params={"lon": lon, "lat": lat, "level": "L3A",
                                                 "start": "2018-07-01"})
    months = r.json()["rows"]
    assert [m["item"] for m in months] == ["L3A_S2L8_T31UDS_20180701-20180731_AGS"]
    assert months[0]["flag"] in {"land", "cloud", "snow", "water", "no data"}


def test_series_bad_requests_say_what_was_expected(service):
    for params, word in [({"lon": 300, "lat": 50}, "longitude"),
                         ({"lon": 3, "lat": 50, "level": "L4B"}, "L2A, L3A or L3B"),
                         ({"lon": 3, "lat": 50, "start": "June"}, "YYYY-MM-DD")]:
        r = service.get("/portal/api/series", params=params)
        assert r.status_code == 400 and word in r.json()["detail"], r.text
    r = service.get("/portal/api/series", params={"lon": 10, "lat": 45})
    assert r.status_code == 200 and r.json()["rows"] == []  # nothing there: no rows


def test_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="XYZ template"):
        PortalSettings(basemap_url="https://tiles.example.org/tile.png")
    with pytest.raises(ValidationError, match="leading slash"):
        PortalSettings(prefix="portal/")
    with pytest.raises(ValidationError, match="oidc_client_id"):
        ServiceSettings(store="/nonexistent", oidc_client_id="portal")  # SSO not configured


def test_tiles_carry_an_etag_and_are_revalidated(service, store_dir):
    """A tile has an ETag and ``Cache-Control: private, no-cache``: asked again with it, the
    answer is a 304 without a body; another layer's tile or a rewritten file gets another."""
    import os
    from pathlib import Path

    item = ProductStore(store_dir).item(L3A_JUNE)
    lon, lat = _centre(item)
    layer = _layers(service, L3A_JUNE)["truecolour"]
    url = _tile_url(layer, lon, lat, 15)
    first = service.get(url)
    assert first.status_code == 200 and first.headers["cache-control"] == "private, no-cache"
    tag = first.headers["etag"]
    again = service.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert service.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    mask = _layers(service, L3A_JUNE)["mask"]
    other = service.get(_tile_url(mask, lon, lat, 15) + '&algorithm_params={"bits":3}')
    assert other.status_code == 200 and other.headers["etag"] != tag
    path = Path(item.assets["B04"].get_absolute_href())
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        r = service.get(url, headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["etag"] != tag  # the file changed
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
