"""Products as the STAC and raster ecosystem reads them (docs/formats.md "Opening the products").

A real store of every level the module can make quickly: L2A ingested from the WorldCereal
Sentinel-2 and Landsat 8 series (June-August 2018) and the ESA SAFE sample, the July L3A,
the per-date L3B of the window and its season product. Every STAC document of it validates
against the core schema and every extension it declares (tests/stac_offline.py, offline);
pystac walks it, pystac-client opens it; odc-stac and stackstac read the items onto the
same grid and the same values as agriseries.load, at native and non-native resolution;
rioxarray and GDAL see reflectance 0-1; the Landsat thermal bands keep their kelvin.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.enums import Resampling
import xarray as xr
from stac_offline import assert_valid_stac, stac_errors, store_stac_files

import agriseries
from agriseries.biophysical.processor import biophysical_series, run_biophysical
from agriseries.composite import composite
from agriseries.core.ids import ProductId
from agriseries.core.stac import stac_schema_errors, stackstac_items
from agriseries.io.ingest import ingest, ingest_series
from agriseries.io.store import ProductStore
from agriseries.io.timeseries import read_timeseries

DATA = Path(__file__).parent / "data"
WC = DATA / "worldcereal"
SAFE = next((DATA / "safe").glob("S2A_MSIL2A_*.SAFE"))
MUSCATE_L8 = next((DATA / "muscate" / "L8_N2A").glob("LANDSAT8_*"))
LANDSAT_C2 = DATA / "landsat" / "LC08_L2SP_008059_20191201_20200825_02_T1"
WINDOW = ("2018-06-20", "2018-08-10")  # the July synthesis reads +- 23 days around Jul 16
L3A_ID = "L3A_S2L8_T31UDS_20180701-20180731_AGS"
DOCS = Path(__file__).parent.parent / "docs" / "formats.md"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ProductStore:
    st = ProductStore(tmp_path_factory.mktemp("interop") / "store")
    s2 = [(str(p), read_timeseries(p).sel(time=slice(*WINDOW)))
          for p in sorted(WC.glob("S2_L2A_*m_*.nc"))]
    ingest_series(s2, st)
    (l8,) = WC.glob("L8_SR_*.nc")
    ingest_series([(str(l8), read_timeseries(l8).sel(time=slice(*WINDOW)))], st)
    assert all(r.status == "ingested" for r in ingest([SAFE], st, allow_missing_bands=True))
    assert all(r.status == "ingested" for r in ingest([MUSCATE_L8], st))
    assert all(r.status == "ingested" for r in ingest([LANDSAT_C2], st, tile="T18NWH"))
    assert composite(st, "T31UDS", "2018-07").made
    start, end = (dt.datetime.fromisoformat(d) for d in WINDOW)
    results = [r for r in run_biophysical(st, "T31UDS", start, end) if "_S2" in r.input]
    assert results and all(r.status == "made" for r in results), [r.error for r in results]
    biophysical_series(st, "T31UDS", start, end, variables=("LAI",))
    st.update_catalog()
    return st


def s2_items(store, start="2018-07-01", end="2018-07-31"):
    return [it for it in store.items("L2A", "T31UDS", dt.datetime.fromisoformat(start),
                                     dt.datetime.fromisoformat(end))
            if it.properties["platform"].startswith("sentinel-2")]


# ------------------------------------------------------------------------- validity


def test_every_document_of_the_store_is_valid_against_its_extensions(store):
    files = store_stac_files(store.root)
    levels = {p.relative_to(store.root).parts[0] for p in files if p.name != "catalog.json"
              or len(p.relative_to(store.root).parts) > 1}
    assert {"L2A", "L3A", "L3B"} <= levels
    n = assert_valid_stac(*files)
    assert n > 40
    # and every extension an item declares is one the schema folder has (none skipped)
    for p in files:
        d = json.loads(p.read_text())
        for uri in d.get("stac_extensions", []):
            assert re.match(r"https://stac-extensions\.github\.io/[a-z]+/v[\d.]+/schema\.json$",
                            uri), uri
    # the product's own check agrees with the independent one
    for p in files[:20]:
        assert stac_schema_errors(json.loads(p.read_text())) == []


def test_the_validators_catch_what_the_issue_found(store):
    item = json.loads(store.item_path(s2_items(store)[0].id).read_text())
    assert stac_errors(item) == []
    bad = json.loads(json.dumps(item))
    bad["assets"]["B05"]["eo:bands"][0]["common_name"] = "rededge071"  # an eo v2.0 name
    (err,) = stac_errors(bad)
    assert "eo" in err and "rededge071" in err
    assert any("rededge071" in e for e in stac_schema_errors(bad))
    bad = json.loads(json.dumps(item))
    bad["properties"]["proj:epsg"] = 32631  # removed by projection v2.0
    assert any("proj:epsg" in e or "projection" in e for e in stac_errors(bad))
    bad = json.loads(json.dumps(item))
    bad["stac_extensions"].append("https://stac-extensions.github.io/sat/v9.9.9/schema.json")
    assert any("no local schema" in e for e in stac_errors(bad))
    assert any("no local schema" in e for e in stac_schema_errors(bad))


def test_sentinel2_common_names_are_eo_v1_1_names_odc_stac_aliases(store):
    item = s2_items(store)[0]
    names = {k: a.extra_fields["eo:bands"][0]["common_name"] for k, a in item.assets.items()
             if "eo:bands" in a.extra_fields}
    assert names["B04"] == "red" and names["B08"] == "nir" and names["B8A"] == "nir08"
    assert {names["B05"], names["B06"], names["B07"]} == {"rededge"}
    assert "https://stac-extensions.github.io/eo/v1.1.0/schema.json" in item.stac_extensions


# ------------------------------------------------------------------------- catalogue


def test_catalogue_links_and_collections(store):
    cat = pystac.Catalog.from_file(str(store.root / "catalog.json"))
    items = list(cat.get_items(recursive=True))
    on_disk = {p.stem for p in store.root.glob("L*/*/*/*/*.json")}
    assert {i.id for i in items} == on_disk
    for it in items[:: max(1, len(items) // 10)]:
        level = it.id[:3]
        assert it.collection_id == f"agriseries-{level.lower()}"
        assert it.get_root().id == "agriseries"
        assert it.get_collection().id == it.collection_id
        pid = ProductId.parse(it.id)
        assert it.get_parent().id == (f"agriseries-{level.lower()}-{pid.tile.lower()}-"
                                      f"{pid.year}-{pid.start.month:02d}")
    col = pystac.Collection.from_file(str(store.root / "L2A" / "collection.json"))
    assert col.summaries.get_list("platform") == ["landsat-8", "sentinel-2a"]
    assert {p.name.split(" ")[0] for p in col.providers} >= {"European", "U.S.", "agriseries"}
    assert [lk.rel for lk in col.links].count("license") == 2
    assert "B04" in col.item_assets and col.item_assets["B04"].roles == ["data", "reflectance"]
    assert all(lk.title for lk in col.links if lk.rel in ("child", "license"))
    # no catalogue lists more than one tile-month of items; every link has a title
    for p in store.root.glob("L*/**/catalog*.json"):
        d = json.loads(p.read_text())
        months = {lk["href"].split("_")[3][:6] for lk in d["links"] if lk["rel"] == "item"}
        assert len(months) <= 1, p
        assert all(lk.get("title") for lk in d["links"]), p
    # the items are the files: relative links, no machine path anywhere
    text = store.item_path(L3A_ID).read_text()
    assert str(store.root) not in text and "/work/" not in text
    d = json.loads(store.item_path(items[0].id).read_text())
    assert {lk["rel"] for lk in d["links"]} == {"root", "parent", "collection"}
    assert all(not lk["href"].startswith("/") for lk in d["links"])


def test_pystac_client_opens_the_store(store):
    import warnings

    from pystac_client import Client
    from pystac_client.warnings import FallbackToPystac, NoConformsTo

    with warnings.catch_warnings():  # a static catalogue is not an API: it says so, rightly
        warnings.simplefilter("ignore", NoConformsTo)
        warnings.simplefilter("ignore", FallbackToPystac)
        client = Client.open(str(store.root / "catalog.json"))
        ids = sorted(c.id for c in client.get_collections())
        l3a = list(client.get_collection("agriseries-l3a").get_items(recursive=True))
    assert ids == ["agriseries-l2a", "agriseries-l3a", "agriseries-l3b"]
    assert [i.id for i in l3a] == [L3A_ID]


def test_composites_have_a_datetime_in_their_period(store):
    for it in [store.item(L3A_ID)] + list(store.items("L3B")):
        p = it.properties
        if "start_datetime" not in p:
            continue
        start, end = (pystac.utils.str_to_datetime(p[k]) for k in ("start_datetime", "end_datetime"))
        assert it.datetime is not None and start < it.datetime < end
    assert store.item(L3A_ID).datetime == dt.datetime(2018, 7, 16, 11, 59, 59, tzinfo=dt.UTC)


# ------------------------------------------------------------------------- readers


def _same_grid(a: xr.DataArray, b: xr.DataArray):
    assert a.sizes["y"] == b.sizes["y"] and a.sizes["x"] == b.sizes["x"], (a.shape, b.shape)
    assert np.allclose(a.x.values, b.x.values) and np.allclose(a.y.values, b.y.values)


@pytest.mark.parametrize("resolution", [10, 20, 60])
def test_odc_stac_and_stackstac_match_agriseries_load(store, resolution):
    import odc.stac
    import stackstac

    items = s2_items(store)[:3]
    bands = ["B04", "B8A"]
    ours = xr.concat([agriseries.load(store.open(it), resolution, bands=bands, angles=None,
                                      with_mask=False, with_aux=False) for it in items], "time")
    # agriseries reads a finer file onto a coarser grid by averaging, else bilinear
    how = "average" if resolution > 10 else "bilinear"
    odc = odc.stac.load(items, bands=bands, resolution=resolution, dtype="float32",
                        resampling=how)
    stk = stackstac.stack(stackstac_items(items), assets=bands, resolution=resolution,
                          resampling=Resampling[how], xy_coords="center")
    for b in bands:
        # odc-stac gives the stored integers (it does not apply raster:bands scale)
        o = odc[b].where(odc[b] != -10000) * 1e-4
        s = stk.sel(band=b)
        _same_grid(ours[b], o)
        _same_grid(ours[b], s)
        mine = ours[b].values
        d_odc = np.nanmax(np.abs(mine - o.values))
        d_stk = np.nanmax(np.abs(mine - s.values))
        print(f"{b} at {resolution} m: max |agriseries - odc-stac| = {d_odc:.2e}, "
              f"|agriseries - stackstac| = {d_stk:.2e}")
        assert np.array_equal(np.isnan(mine), np.isnan(s.values))
        native = {"B04": 10, "B8A": 20}[b] == resolution
        tol = 1e-6 if native else 1e-3  # resampled: the same GDAL kernel, float rounding
        assert d_odc < tol and d_stk < tol
        assert not np.isnan(s.values[:, 0, :]).all() and not np.isnan(s.values[:, :, -1]).all()
    assert list(stk.time.values) == list(ours.time.values)
    assert list(odc.time.values) == list(ours.time.values)


@pytest.mark.parametrize("level, keys", [("L3A", ["B04", "B11", "weight_10m"]),
                                         ("L3B", ["LAI", "FCOVER"])])
def test_odc_stac_and_stackstac_read_composites_and_biophysical_products(store, level, keys):
    """L3A (reflectance and a scaled weight layer) and per-date L3B, at 20 m: the three
    readers agree once odc-stac's integers are scaled as raster:bands says."""
    import odc.stac
    import stackstac

    items = [it for it in store.items(level, "T31UDS") if "start_datetime" not in it.properties
             or level == "L3A"][:2]
    assert items
    keys = [k for k in keys if k in items[0].assets]
    assert len(keys) >= 2
    ours = xr.concat([agriseries.load(store.open(it), 20, angles=None, with_mask=False)
                      for it in items], "time")
    odc = odc.stac.load(items, bands=keys, resolution=20, dtype="float32", resampling="average")
    stk = stackstac.stack(stackstac_items(items), assets=keys, resolution=20,
                          resampling=Resampling.average, xy_coords="center")
    for k in keys:
        rb = items[0].assets[k].extra_fields["raster:bands"][0]
        o = odc[k]
        if rb.get("nodata") not in (None, "nan"):
            o = o.where(o != rb["nodata"])
        o = o * rb.get("scale", 1.0) + rb.get("offset", 0.0)
        _same_grid(ours[k], o)
        _same_grid(ours[k], stk.sel(band=k))
        mine = ours[k].values
        d_odc = np.nanmax(np.abs(mine - o.values))
        d_stk = np.nanmax(np.abs(mine - stk.sel(band=k).values))
        print(f"{level} {k} at 20 m: max |agriseries - odc-stac| = {d_odc:.2e}, "
              f"|agriseries - stackstac| = {d_stk:.2e}")
        step = rb.get("scale", 1e-3)
        assert d_odc <= step and d_stk <= step
        assert np.array_equal(np.isnan(mine), np.isnan(stk.sel(band=k).values))


@pytest.mark.parametrize("reader, tile, bands, other", [
    ("SAFE", "T29UNU", ["B04", "B8A"], 20),  # the sample SAFE keeps its 60 m bands only
    ("MUSCATE", "T31TCJ", ["B4", "B5"], 60), ("Landsat C2", "T18NWH", ["B4", "B5"], 60)])
def test_the_other_readers_products_read_the_same_everywhere(store, reader, tile, bands, other):
    """The L2A of the SAFE, MUSCATE and Landsat C2 readers, at native and another pixel size:
    odc-stac and stackstac give agriseries' grid and values. (odc-stac puts pixel edges on
    multiples of the resolution, agriseries on the tile's lattice: the same at 10, 20, 30 and
    60 m on these tiles, whose origins are multiples of 60 m.)"""
    import odc.stac
    import stackstac

    (item,) = list(store.items("L2A", tile))
    native = int(item.assets[bands[0]].extra_fields["raster:bands"][0]["spatial_resolution"])
    for res in (native, other):
        how = "average" if res > native else "bilinear"
        ours = agriseries.load(store.open(item), res, bands=bands, angles=None, with_mask=False,
                               with_aux=False)
        # odc-stac reads a coarser grid from the COG overviews, whose pixel is not exactly
        # twice the native one when the width is odd (Landsat on T18NWH): read the full grid
        lo = odc.stac.load([item], bands=bands, resolution=res, dtype="float32", resampling=how,
                           use_overviews=False)
        stk = stackstac.stack(stackstac_items([item]), assets=bands, resolution=res,
                              resampling=Resampling[how], xy_coords="center")
        for b in bands:
            rb = item.assets[b].extra_fields["raster:bands"][0]
            o = lo[b].where(lo[b] != rb["nodata"]) * rb["scale"] + rb["offset"]
            _same_grid(ours[b], o)
            _same_grid(ours[b], stk.sel(band=b))
            mine = ours[b].values
            d_odc = float(np.nanmax(np.abs(mine - o.values)))
            d_stk = float(np.nanmax(np.abs(mine - stk.sel(band=b).values)))
            print(f"{reader} {b} at {res} m: max |agriseries - odc-stac| = {d_odc:.2e}, "
                  f"|agriseries - stackstac| = {d_stk:.2e}")
            assert d_odc <= rb["scale"] and d_stk <= rb["scale"]
            assert np.array_equal(np.isnan(mine), np.isnan(stk.sel(band=b).values))


def test_a_load_at_another_resolution_is_the_product_not_the_tile(store):
    item = store.item(L3A_ID)
    ds = agriseries.load(store.open(item), 60, angles=None)
    assert ds.sizes["y"] < 20 and ds.sizes["x"] < 20  # the 640 m patch, not 1830 x 1830
    native = agriseries.load(store.open(item), 10, angles=None)
    assert abs(ds.x.values[0] - 30 - (native.x.values[0] - 5)) < 60


def test_the_loader_honours_raster_bands_scale(store):
    item = store.item(L3A_ID)
    keys = [k for k in item.assets if k.startswith("weight")]
    assert keys
    for k in keys:
        rb = item.assets[k].extra_fields["raster:bands"][0]
        ds = agriseries.load(store.open(item), int(rb["spatial_resolution"]), angles=None)
        with rasterio.open(store.item_path(L3A_ID).parent / item.assets[k].href) as src:
            dn = src.read(1, masked=True)
        v = ds[k].values[0]
        assert v.shape == dn.shape
        assert np.allclose(v[~dn.mask], dn.compressed() * rb["scale"] + rb["offset"], atol=1e-6)
        assert np.isnan(v[dn.mask]).all()
        assert 0 < np.nanmax(v) < 100, k  # weights, not DN
        assert ds[k].attrs.get("units") == rb.get("unit") or "unit" not in rb


def test_rioxarray_and_gdal_read_reflectance(store):
    import rioxarray

    item = s2_items(store)[0]
    path = store.item_path(item.id).parent / item.assets["B04"].href
    arr = rioxarray.open_rasterio(path, mask_and_scale=True)
    med = float(arr.median())
    assert 0.0 < med < 0.5, med
    with rasterio.open(path) as src:
        assert src.scales == (1e-4,) and src.offsets == (0.0,) and src.nodata == -10000


def test_landsat_thermal_bands_keep_their_kelvin(store):
    (l8,) = WC.glob("L8_SR_*.nc")
    raw = xr.open_dataset(l8, mask_and_scale=True)
    items = [it for it in store.items("L2A", "T31UDS") if it.properties["platform"] == "landsat-8"]
    assert items
    checked = 0
    for it in items:
        ds = agriseries.load(store.open(it), 10, angles=None)
        when = np.datetime64(it.datetime.replace(tzinfo=None), "ns")
        for band in ("B10", "B11"):
            a = it.assets[band]
            assert "temperature" in a.roles and "reflectance" not in a.roles
            rb = a.extra_fields["raster:bands"][0]
            assert rb["unit"] == "K" and a.extra_fields["eo:bands"][0]["common_name"].startswith("lwir")
            src = raw[band].sel(timestamp=when, method="nearest").values
            got = ds[band].values[0]
            # -999 stored as uint16 (64537 x 0.1 = 6453.7 K) marks pixels without a value
            ok = np.isfinite(src) & (src < 1000)
            assert ok.any()
            assert np.array_equal(ok, np.isfinite(got))
            assert np.nanmax(np.abs(got[ok] - src[ok])) <= 0.005 + 1e-4  # 0.01 K steps
            assert 250 < np.nanmedian(got) < 330
            checked += 1
    assert checked >= 2


def test_the_formats_page_examples_run(store, monkeypatch, tmp_path):
    """The odc-stac and stackstac examples of docs/formats.md, as written, on this store."""
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(# example: [a-z-]+\n.*?)```", text, re.S)
    names = [b.splitlines()[0] for b in blocks]
    assert "# example: odc-stac" in names and "# example: stackstac" in names
    monkeypatch.chdir(tmp_path)  # the hrefs work from any working directory
    for block in blocks:
        code = block.replace('"store/catalog.json"', repr(str(store.root / "catalog.json")))
        ns: dict = {}
        exec(compile(code, f"formats.md {block.splitlines()[0]}", "exec"), ns)
        data = ns["data"]
        assert data.sizes["time"] >= 2 and float(data.isel(time=0).max()) < 1.5


def test_every_cog_says_what_its_item_says(store):
    """GDAL band scale, offset, no data and count equal the item's raster:bands; every COG is
    valid per rio-cogeo, has overviews when larger than one block, and is world-readable."""
    import os
    import stat

    from agriseries.io.cog import validate_cog

    umask = os.umask(0)
    os.umask(umask)
    checked = 0
    for item in store.items():
        folder = store.item_path(item.id).parent
        for key, a in item.assets.items():
            if not (a.media_type or "").startswith("image/tiff"):
                continue
            path = folder / a.href
            bands = a.extra_fields["raster:bands"]
            with rasterio.open(path) as src:
                assert src.count == len(bands), (item.id, key)
                for i, rb in enumerate(bands):
                    assert src.scales[i] == pytest.approx(rb.get("scale", 1.0)), (item.id, key)
                    assert src.offsets[i] == pytest.approx(rb.get("offset", 0.0)), (item.id, key)
                    nd = rb.get("nodata")
                    if nd == "nan":
                        assert np.isnan(src.nodata), (item.id, key)
                    else:
                        assert src.nodata == nd, (item.id, key, src.nodata, nd)
                    assert src.dtypes[i] == rb["data_type"]
                    if rb.get("unit"):
                        assert src.units[i] == rb["unit"], (item.id, key)
                if max(src.width, src.height) > 512:
                    assert src.overviews(1), (item.id, key)
            ok, errors, _ = validate_cog(path)
            assert ok, (item.id, key, errors)
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
            checked += 1
    assert checked > 300
