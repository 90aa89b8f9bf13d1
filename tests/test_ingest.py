"""Ingest real products into the store: COGs, STAC items, catalogue, bad input in a batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from agriseries.core.errors import EmptyIntersectionError, StoreError
from agriseries.core.grid import tile_geobox
from agriseries.core.masks import MaskBit
from agriseries.core.stac import validate_item
from agriseries.io.cog import validate_cog
from agriseries.io.ingest import ingest
from agriseries.io.product import load
from agriseries.io.safe import read_safe
from agriseries.io.store import ProductStore

DATA = Path(__file__).parent / "data"
SAFE = next((DATA / "safe").glob("S2A_MSIL2A_*.SAFE"))
SAFE_ID = "L2A_S2A_T29UNU_20221005T115411_SEN2COR"


@pytest.fixture(scope="module")
def safe_store(tmp_path_factory):
    store = ProductStore(tmp_path_factory.mktemp("store"))
    results = ingest([SAFE], store, allow_missing_bands=True)
    assert [r.status for r in results] == ["ingested"], results[0].traceback
    return store


def test_safe_product_is_complete_and_valid(safe_store):
    assert safe_store.exists(SAFE_ID)
    folder = safe_store.product_dir(SAFE_ID)
    assert folder == safe_store.root / "L2A" / "T29UNU" / "2022" / SAFE_ID
    item = safe_store.item(SAFE_ID)
    validate_item(item)
    for key, asset in item.assets.items():
        path = folder / asset.href
        ok, errors, _ = validate_cog(path)
        assert ok, (key, errors)
    p = item.properties
    assert p["agriseries:inputs"] == [SAFE.name[:-5]]
    assert p["processing:level"] == "L2A" and p["platform"] == "sentinel-2a"
    assert 0 <= p["eo:cloud_cover"] <= 100
    # the sample is a trimmed real product: it has no B08 on disk, and the item says so
    assert p["agriseries:missing_bands"] == ["B08"]
    assert "B08" not in item.assets and {"B04", "B8A", "mask", "aot"} <= set(item.assets)
    assert "view:sun_elevation" in p and "angles" in item.assets
    # the reader metadata (offsets of this baseline) is kept as the parameters of the ingest
    assert item.datetime.isoformat().startswith("2022-10-05T11:54")
    assert not list((safe_store.root / ".tmp").iterdir())


def test_stored_values_equal_the_provider_values(safe_store):
    product = read_safe(str(SAFE), allow_missing_bands=True)
    item = safe_store.item(SAFE_ID)
    res = int(round(product.bands["B04"].resolution))
    with rasterio.open(safe_store.product_dir(SAFE_ID) / item.assets["B04"].href) as src:
        stored = src.read(1)
        gb_store = src.transform, src.crs
    tb = tile_geobox("T29UNU", res)
    assert gb_store[1].to_epsg() == 32629
    assert (gb_store[0].c - tb.affine.c) % res == 0 and (tb.affine.f - gb_store[0].f) % res == 0
    # reading the stored product through the same loader gives the provider's reflectance
    ds_store = load(safe_store.open(item), resolution=res, bands=["B04"], angles=None)
    ds_src = load(product, geobox=ds_store.odc.geobox, bands=["B04"], angles=None)
    a, b = ds_store["B04"].values, ds_src["B04"].values
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) <= 0.5e-4 + 1e-7  # int16 x 10000 rounding
    assert (stored == -10000).sum() == np.isnan(a).sum()
    # the mask is stored at the 20 m of Sen2Cor's SCL, and went through unchanged
    assert item.assets["mask"].extra_fields["raster:bands"][0]["spatial_resolution"] == 20
    stored_mask = load(safe_store.open(item), resolution=20, bands=[], angles=None)
    m_store = stored_mask["mask"].values
    ref = min(product.bands, key=lambda b: product.bands[b].resolution)  # NODATA comes from it
    m_src = load(product, geobox=stored_mask.odc.geobox, bands=[ref], angles=None)["mask"].values
    assert np.array_equal(m_store, m_src)
    assert (m_store & MaskBit.CLOUD).any() and (m_store == 0).any()


def test_catalogue_links_every_item(safe_store):
    cat = pystac.Catalog.from_file(str(safe_store.root / "catalog.json"))
    items = list(cat.get_items(recursive=True))
    assert [i.id for i in items] == [SAFE_ID]
    col = json.loads((safe_store.root / "L2A" / "collection.json").read_text())
    assert col["extent"]["temporal"]["interval"][0][0].startswith("2022-10-05")


def test_reingest_is_skipped_and_refused_without_overwrite(safe_store):
    results = ingest([SAFE], safe_store, allow_missing_bands=True)
    assert results[0].status == "skipped" and results[0].products == [SAFE_ID]
    with pytest.raises(StoreError, match="already in the store"):
        item = safe_store.item(SAFE_ID)
        safe_store.write_product(
            __import__("agriseries.core.ids", fromlist=["ProductId"]).ProductId.parse(SAFE_ID),
            [], footprint=tile_geobox("T29UNU", 60).extent, sensors=["S2A"], inputs=[],
            parameters={}, lineage="x", datetime=item.datetime)


def test_bad_inputs_fail_alone_and_the_rest_is_ingested(tmp_path):
    # a truncated JP2 in a copy of the real SAFE
    broken = tmp_path / "broken" / SAFE.name
    shutil.copytree(SAFE, broken)
    jp2 = next(broken.glob("GRANULE/*/IMG_DATA/R60m/*_B04_60m.jp2"))
    jp2.write_bytes(jp2.read_bytes()[: jp2.stat().st_size // 3])
    # a folder of unknown layout
    unknown = tmp_path / "not_a_product"
    unknown.mkdir()
    (unknown / "readme.txt").write_text("hello")
    store = ProductStore(tmp_path / "store")
    results = ingest([broken, unknown, SAFE], store, allow_missing_bands=True)
    by_path = {Path(r.path).name: r for r in results}
    assert [r.status for r in results] == ["failed", "failed", "ingested"]
    assert by_path["not_a_product"].error_type == "UnknownProductError"
    assert "not_a_product" in by_path["not_a_product"].error
    err = results[0]
    assert err.error_type == "CorruptProductError" and jp2.name in err.error
    # the failed product left nothing behind, the good one is complete
    assert store.exists(SAFE_ID)
    assert sorted(p.name for p in (store.root / "L2A" / "T29UNU" / "2022").iterdir()) == [
        SAFE_ID, "catalog-10.json", "catalog.json"]  # the product, its catalogues, nothing else
    assert not list((store.root / ".tmp").iterdir())


def test_missing_band_is_refused_by_default(tmp_path):
    store = ProductStore(tmp_path / "store")
    results = ingest([SAFE], store)
    assert results[0].status == "failed" and results[0].error_type == "MissingBandError"
    assert "B08" in results[0].error
    assert not store.exists(SAFE_ID)


def test_tile_without_overlap_is_refused(tmp_path):
    store = ProductStore(tmp_path / "store")
    results = ingest([SAFE], store, tile="T31TDH", allow_missing_bands=True)
    assert results[0].status == "failed"
    assert results[0].error_type == "EmptyIntersectionError"
    assert "T31TDH" in results[0].error and SAFE.name in results[0].error
    assert not store.exists(SAFE_ID)
    assert issubclass(EmptyIntersectionError, ValueError)


def test_second_piece_of_one_acquisition_is_not_silently_skipped(tmp_path):
    # two real THEIA N2A extracts of the same Landsat 8 pass land on the same tile and date
    pieces = sorted((DATA / "muscate" / "L8_N2A").glob("LANDSAT8_*"))
    store = ProductStore(tmp_path / "store")
    results = ingest(pieces, store)
    assert [r.status for r in results] == ["ingested", "failed"]
    assert results[0].products == ["L2A_L8_T31TCJ_20160330T000000_MACCS"]
    assert "mosaicking" in results[1].error and pieces[0].name in results[1].error
    again = ingest(pieces[:1], store)
    assert again[0].status == "skipped"
