"""Tests of the ESA SAFE reader (agriseries.io.safe) on real Sentinel-2 products.

Data: tests/data/safe (see its SOURCE.txt): a real L2A (baseline 04.00, tile 29UNU) and
a real L1C (02.06, 31TDH) cropped losslessly, plus the metadata of six more products
with the STAC Items stactools made from them. ``window.json`` holds facts read with
rasterio from the ORIGINAL full-tile files by make_small.py.

Independent references and tolerances:

* stactools ``expected_output.json``: datetime (exact), product URI, cloud cover (exact),
  CRS, footprint (IoU > 0.999 in the tile's UTM CRS), ``view:sun_elevation`` /
  ``view:sun_azimuth`` (0.01 deg), ``view:incidence_angle`` (0.05 deg) and
  ``view:azimuth`` (0.5 deg; 2 deg for T01LAC, 3 deg from nadir, where the azimuth
  turns round within the tile), band ``raster:bands`` scale / offset (1e-12).
* The MTD_TL.xml own mean angles (0.01 deg sun, 0.05 deg view).
* core.grid.tile_geobox for every native grid (exact).
* Raw DNs and SCL / MSK_CLDPRB counts read with rasterio (exact; float32 reflectance 1e-6).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from lxml import etree
from odc.geo.geom import Geometry

from agriseries.core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from agriseries.core.grid import tile_geobox
from agriseries.core.masks import MaskBit
from agriseries.io.product import load
from agriseries.io.safe import (
    L1C_BANDS,
    L2A_BANDS,
    is_safe,
    read_safe,
    read_safe_metadata,
)

SAFE_DIR = Path(__file__).parent / "data" / "safe"
L2A = SAFE_DIR / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
L1C = SAFE_DIR / "S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911"
GRANULE = L2A / "GRANULE" / "L2A_T29UNU_A038058_20221005T115407"
STEM = "T29UNU_20221005T115411"
METADATA = sorted((SAFE_DIR / "metadata").iterdir())
FACTS = json.loads((SAFE_DIR / "window.json").read_text())
#: The 60 m bands present in the test copy (no 10/20 m reflectance, no B08 upstream).
BANDS_60M = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"]

#: Sen2Cor SCL class -> common bits, written out here from Sen2Cor's class list (docs/inputs.md).
SCL_BITS = {0: MaskBit.NODATA, 1: MaskBit.SATURATED, 2: MaskBit.TOPO_SHADOW, 3: MaskBit.CLOUD_SHADOW,
            4: 0, 5: 0, 6: MaskBit.WATER, 7: 0, 8: MaskBit.CLOUD, 9: MaskBit.CLOUD,
            10: MaskBit.CIRRUS, 11: MaskBit.SNOW}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _expected(product_dir: Path) -> dict:
    return json.loads((product_dir / "expected_output.json").read_text())


def _copy_l2a(tmp_path: Path) -> Path:
    dst = tmp_path / L2A.name
    shutil.copytree(L2A, dst)
    return dst


def _in_copy(copy: Path, original: Path) -> Path:
    return copy / original.relative_to(L2A)


@pytest.fixture(scope="module")
def l2a():
    return read_safe(L2A, bands=BANDS_60M)


# ---------------------------------------------------------------------------------------------
# detection


def test_is_safe_on_folders_zip_and_others(tmp_path):
    assert is_safe(L2A)
    assert is_safe(L1C)  # eodag's copy has no .SAFE suffix
    assert is_safe(str(L2A))
    assert not is_safe(SAFE_DIR)
    assert not is_safe(SAFE_DIR / "window.json")
    assert not is_safe(tmp_path / "nothing.SAFE")
    (tmp_path / "mtd_only").mkdir()
    shutil.copy(L2A / "MTD_MSIL2A.xml", tmp_path / "mtd_only")
    assert not is_safe(tmp_path / "mtd_only")  # no GRANULE/
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"not a zip")
    assert not is_safe(not_zip)


# ---------------------------------------------------------------------------------------------
# L2A: identity, assets, metadata


def test_l2a_identity_and_metadata(l2a):
    assert l2a.product_id == "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454"
    assert (l2a.level, l2a.producer, l2a.sensor, l2a.tile) == ("L2A", "SEN2COR", "S2A", "T29UNU")
    assert l2a.datetime == dt.datetime(2022, 10, 5, 11, 54, 11, 24000, tzinfo=dt.timezone.utc)
    assert l2a.crs == "EPSG:32629"
    md = l2a.metadata
    assert md["processing_baseline"] == "04.00"
    assert md["quantification_value"] == 10000
    assert md["add_offsets"] == {b: -1000.0 for b in L1C_BANDS}
    assert md["cloud_cover"] == pytest.approx(59.769726)
    assert md["aot_quantification_value"] == 1000.0
    assert md["band_resolutions"] == {b: 60 for b in BANDS_60M}


def test_l2a_band_assets_use_the_resolution_on_disk(l2a):
    assert list(l2a.bands) == BANDS_60M
    for name, asset in l2a.bands.items():
        assert asset.path.endswith(f"R60m/{STEM}_{name}_60m.jp2")
        assert asset.resolution == 60  # native 10/20 m files are not in the copy
        assert asset.scale == pytest.approx(1e-4, rel=1e-15)
        assert asset.offset == pytest.approx(-0.1, rel=1e-15)
        assert asset.nodata == 0
        assert asset.kind == "reflectance"
    assert set(l2a.quality) == {"SCL", "CLDPRB"}
    assert l2a.quality["SCL"].path.endswith(f"R20m/{STEM}_SCL_20m.jp2")
    assert l2a.quality["CLDPRB"].path.endswith("QI_DATA/MSK_CLDPRB_20m.jp2")
    assert all(a.kind == "quality" for a in l2a.quality.values())
    aot = l2a.aux["aot"]
    assert aot.path.endswith(f"R60m/{STEM}_AOT_60m.jp2")
    assert (aot.scale, aot.kind, aot.resolution) == (pytest.approx(1e-3), "aux", 60)


def test_l2a_default_bands_need_b08_which_is_missing_on_disk():
    # The upstream snapshot has no B08 file at any resolution: a real missing band.
    with pytest.raises(MissingBandError) as err:
        read_safe(L2A)
    assert "B08" in str(err.value)
    assert err.value.path.endswith(f"R10m/{STEM}_B08_10m.jp2")


def test_native_grids_equal_tile_geobox(l2a):
    for res in (10, 20, 60):
        assert l2a.native_grids[res] == tile_geobox("T29UNU", res)
    md = read_safe_metadata(L1C)
    for res in (10, 20, 60):
        assert md.native_grids[res] == tile_geobox("T31TDH", res)
    for product in METADATA:
        md = read_safe_metadata(product)
        for res in (10, 20, 60):
            assert md.native_grids[res] == tile_geobox(md.tile, res), (product.name, res)


def test_l2a_footprint_is_clipped_to_the_band_files(l2a):
    full = read_safe_metadata(L2A).footprint
    window = tile_geobox("T29UNU", 60)[1216:1472, 704:960]
    fp = l2a.footprint.to_crs(window.crs)
    expected = full.to_crs(window.crs).intersection(window.extent)
    assert fp.intersection(expected).area / fp.union(expected).area > 0.999
    assert window.extent.buffer(1).contains(fp)
    assert fp.area < 0.99 * window.extent.area  # the swath edge cuts the window


def test_l2a_angles_against_mtd_tl_means(l2a):
    sun = l2a.sun_angles
    assert sun.zenith.shape == (23, 23)
    assert (sun.x0, sun.y0, sun.step, sun.crs) == (499980.0, 5900040.0, 5000.0, "EPSG:32629")
    assert np.nanmean(sun.zenith) == pytest.approx(57.820574357679, abs=0.01)
    assert np.nanmean(sun.azimuth) == pytest.approx(172.840206897213, abs=0.01)
    # Mean_Viewing_Incidence_Angle of each band, from MTD_TL.xml.
    mtd_means = {"B04": (9.21309289311719, 289.672012506847), "B8A": (9.29720722278376, 290.404528980152),
                 "B12": (9.31372831482695, 290.387034371828)}
    for band, (zen, az) in mtd_means.items():
        grid = l2a.view_angles[band]
        assert np.nanmean(grid.zenith) == pytest.approx(zen, abs=0.05)
        assert np.nanmean(grid.azimuth) == pytest.approx(az, abs=0.5)
    assert set(l2a.view_angles) == set(BANDS_60M)


def test_view_grids_merge_the_detectors():
    root = etree.parse(str(GRANULE / "MTD_TL.xml")).getroot()
    grids = [g for g in root.iter("Viewing_Incidence_Angles_Grids") if g.get("bandId") == "3"]  # B04
    assert len(grids) == 4  # detectors 9-12

    def values(g):
        return np.array([r.text.split() for r in g.find("Zenith/Values_List")], float)

    stack = np.stack([values(g) for g in grids])
    merged = read_safe_metadata(L2A).view_angles["B04"].zenith
    covered = np.isfinite(stack).any(axis=0)
    assert np.array_equal(np.isfinite(merged), covered)
    overlap = np.isfinite(stack).sum(axis=0) == 2
    assert overlap.any()
    i, j = np.argwhere(overlap)[0]
    assert merged[i, j] == pytest.approx(np.nanmean(stack[:, i, j]), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# load() on the L2A


def test_load_l2a_60m_grid_values_and_coords(l2a):
    ds = load(l2a, 60, tile="T29UNU")
    w = FACTS["l2a"]["window_60m"]
    r, c, n = w["row"], w["col"], w["size"]
    assert ds.odc.geobox == tile_geobox("T29UNU", 60)[r:r + n, c:c + n]
    assert dict(ds.sizes) == {"time": 1, "y": n, "x": n}
    for b in BANDS_60M + ["aot", "sun_zenith", "view_zenith"]:
        assert ds[b].dims == ("time", "y", "x")
        assert ds[b].dtype == np.float32
    assert ds["mask"].dtype == np.uint8
    assert ds["sensor"].values.tolist() == ["S2A"]
    assert ds["source_id"].values.tolist() == [l2a.product_id]
    assert ds["level"].values.tolist() == ["L2A"]
    assert ds["producer"].values.tolist() == ["SEN2COR"]
    assert ds["tile"].values.tolist() == ["T29UNU"]
    assert ds["time"].values[0] == np.datetime64("2022-10-05T11:54:11.024", "ns")
    b04 = ds["B04"].values[0]
    aot = ds["aot"].values[0]
    for px in FACTS["l2a"]["pixels_60m"]:  # raw DNs read from the original full tile
        i, j = px["row"], px["col"]
        assert b04[i, j] == pytest.approx((px["B04_dn"] - 1000) / 10000, abs=1e-6)
        assert aot[i, j] == pytest.approx(px["AOT_dn"] / 1000, abs=1e-6)
    assert int(np.isnan(b04).sum()) == FACTS["l2a"]["b04_zero_count_60m"]
    mask = ds["mask"].values[0]
    assert np.all(mask[np.isnan(b04)] & MaskBit.NODATA)
    sz = ds["sun_zenith"].values[0]
    assert 57.2 < sz.min() <= sz.max() < 58.4  # the range of the tile's sun grid


def test_load_l2a_20m_mask_class_by_class(l2a):
    ds = load(l2a, 20, tile="T29UNU", bands=["B04"])
    w = FACTS["l2a"]["window_60m"]
    r, c, n = 3 * w["row"], 3 * w["col"], 3 * w["size"]
    assert ds.odc.geobox == tile_geobox("T29UNU", 20)[r:r + n, c:c + n]
    mask = ds["mask"].values[0]
    nan = np.isnan(ds["B04"].values[0])
    scl = _read(GRANULE / "IMG_DATA" / "R20m" / f"{STEM}_SCL_20m.jp2")
    prb = _read(GRANULE / "QI_DATA" / "MSK_CLDPRB_20m.jp2")
    counts = np.bincount(scl.ravel(), minlength=12).tolist()
    assert counts == FACTS["l2a"]["scl_counts_20m"]  # the crop is the original, pixel for pixel
    for cls, bits in SCL_BITS.items():
        sel = scl == cls
        expected = (np.uint8(bits) | np.where((prb[sel] >= 65) & (cls != 0), np.uint8(MaskBit.CLOUD), 0)
                    | np.where(nan[sel], np.uint8(MaskBit.NODATA), 0))
        assert np.array_equal(mask[sel], expected.astype(np.uint8)), cls
    assert int((mask & MaskBit.CLOUD).astype(bool).sum()) == FACTS["l2a"]["cloud_bit_20m"]
    assert int((mask & MaskBit.CIRRUS).astype(bool).sum()) == counts[10]
    assert int((mask & MaskBit.CLOUD_SHADOW).astype(bool).sum()) == counts[3]
    assert int((mask & MaskBit.WATER).astype(bool).sum()) == counts[6]


def test_cloud_probability_threshold_is_passed_to_the_decoder():
    p = read_safe(L2A, cloud_probability_threshold=40, bands=["B04"])
    mask = load(p, 20, tile="T29UNU", angles=None)["mask"].values[0]
    scl = _read(GRANULE / "IMG_DATA" / "R20m" / f"{STEM}_SCL_20m.jp2")
    prb = _read(GRANULE / "QI_DATA" / "MSK_CLDPRB_20m.jp2")
    expected = np.isin(scl, (8, 9)) | ((prb >= 40) & (scl != 0))
    assert np.array_equal((mask & MaskBit.CLOUD).astype(bool), expected)
    with pytest.raises(ConfigurationError):
        read_safe(L2A, cloud_probability_threshold=101, bands=["B04"])


def test_scl_falls_back_to_60m(tmp_path):
    copy = _copy_l2a(tmp_path)
    _in_copy(copy, GRANULE / "IMG_DATA" / "R20m" / f"{STEM}_SCL_20m.jp2").unlink()
    p = read_safe(copy, bands=["B04"])
    assert p.quality["SCL"].resolution == 60
    assert p.quality["SCL"].path.endswith(f"{STEM}_SCL_60m.jp2")
    ds = load(p, 60, tile="T29UNU", angles=None)
    scl60 = _read(GRANULE / "IMG_DATA" / "R60m" / f"{STEM}_SCL_60m.jp2")
    assert np.bincount(scl60.ravel(), minlength=12).tolist() == FACTS["l2a"]["scl_counts_60m"]
    mask = ds["mask"].values[0]
    assert int((mask & MaskBit.CIRRUS).astype(bool).sum()) == FACTS["l2a"]["scl_counts_60m"][10]
    _in_copy(copy, GRANULE / "IMG_DATA" / "R60m" / f"{STEM}_SCL_60m.jp2").unlink()
    with pytest.raises(MissingBandError, match="SCL"):
        read_safe(copy, bands=["B04"])


def test_zipped_safe_reads_like_the_folder(tmp_path, l2a):
    archive = tmp_path / f"{L2A.stem}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in L2A.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(L2A.parent).as_posix())
    assert is_safe(archive)
    p = read_safe(archive, bands=["B04", "B8A"])
    assert p.product_id == l2a.product_id
    assert p.bands["B04"].path.startswith("/vsizip/")
    a = load(p, 60, tile="T29UNU", angles=None).compute()
    b = load(l2a, 60, tile="T29UNU", bands=["B04", "B8A"], angles=None).compute()
    np.testing.assert_array_equal(a["B04"].values, b["B04"].values)
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)


# ---------------------------------------------------------------------------------------------
# L1C


def test_l1c_skeleton_reads_the_band_it_has():
    with pytest.raises(MissingBandError) as err:
        read_safe(L1C)  # upstream kept only B01
    assert "B02" in str(err.value) and err.value.path.endswith("T31TDH_20180101T105441_B02.jp2")
    p = read_safe(L1C, bands=["B01"])
    assert p.product_id == L1C.name
    assert (p.level, p.producer, p.sensor, p.tile, p.crs) == ("L1C", "ESA", "S2A", "T31TDH", "EPSG:32631")
    assert p.datetime == dt.datetime(2018, 1, 1, 10, 54, 41, 26000, tzinfo=dt.timezone.utc)
    assert p.metadata["processing_baseline"] == "02.06"
    assert p.metadata["add_offsets"]["B01"] == 0.0
    assert p.metadata["cloud_cover"] == pytest.approx(11.9204)
    b01 = p.bands["B01"]
    assert (b01.scale, b01.offset, b01.nodata, b01.resolution) == (pytest.approx(1e-4), 0.0, 0, 60)
    assert set(p.quality) == {"NODATA"} and "NODATA" in p.metadata["quality_source"]
    assert not p.aux
    assert set(p.view_angles) == {"B01"}


def test_l1c_load_footprint_nodata_and_values():
    p = read_safe(L1C, bands=["B01"])
    ds = load(p, 60, tile="T31TDH").compute()
    gb = ds.odc.geobox
    w = FACTS["l1c"]["window_60m"]
    full = tile_geobox("T31TDH", 60)
    # the footprint (swath edge) cuts the window: the grid is its left part, on the tile lattice
    assert gb.crs == full.crs and gb.resolution == full.resolution
    col0 = round((gb.affine.c - full.affine.c) / 60)
    row0 = round((full.affine.f - gb.affine.f) / 60)
    assert (row0, col0) == (w["row"], w["col"])
    assert gb == full[row0:row0 + gb.shape.y, col0:col0 + gb.shape.x]
    assert gb.shape.y == w["size"] and 100 < gb.shape.x < w["size"]
    b01 = ds["B01"].values[0]
    assert b01[10, 10] == pytest.approx(FACTS["l1c"]["b01_dn_at_10_10"] / 10000, abs=1e-6)
    raw = _read(L1C / "GRANULE" / "L1C_T31TDH_A013204_20180101T105435" / "IMG_DATA"
                / "T31TDH_20180101T105441_B01.jp2")
    assert int((raw == 0).sum()) == FACTS["l1c"]["b01_zero_count"]
    part = raw[:, :gb.shape.x]
    assert np.array_equal(np.isnan(b01), part == 0)
    mask = ds["mask"].values[0]
    assert np.array_equal(mask, np.where(part == 0, np.uint8(MaskBit.NODATA), np.uint8(0)))


# ---------------------------------------------------------------------------------------------
# metadata of other baselines against stactools


@pytest.mark.parametrize("product", METADATA, ids=lambda p: p.name[:38])
def test_metadata_against_stactools(product):
    md = read_safe_metadata(product)
    item = _expected(product)
    props = item["properties"]
    assert md.product_id == props["s2:product_uri"].removesuffix(".SAFE")
    assert md.datetime == dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
    assert md.processing_baseline == props["s2:processing_baseline"]
    assert md.cloud_cover == pytest.approx(props["eo:cloud_cover"], abs=1e-9)
    epsg = props.get("proj:code") or f"EPSG:{props['proj:epsg']}"
    assert md.crs == epsg
    assert md.level == ("L1C" if "MSIL1C" in product.name else "L2A")
    assert md.sensor == product.name[:3]
    # footprint (two of these cross the antimeridian: compared in the tile's UTM CRS)
    ours = md.footprint.to_crs(md.crs)
    theirs = Geometry(item["geometry"], "EPSG:4326").to_crs(md.crs)
    assert ours.intersection(theirs).area / ours.union(theirs).area > 0.999
    # angles
    sun_z = float(np.nanmean(md.sun_angles.zenith))
    assert 90.0 - sun_z == pytest.approx(props["view:sun_elevation"], abs=0.01)
    assert float(np.nanmean(md.sun_angles.azimuth)) == pytest.approx(props["view:sun_azimuth"], abs=0.01)
    inc = np.mean([np.nanmean(g.zenith) for g in md.view_angles.values()])
    assert inc == pytest.approx(props["view:incidence_angle"], abs=0.05)
    az = np.mean([np.nanmean(g.azimuth) for g in md.view_angles.values()])
    tol = 2.0 if props["view:incidence_angle"] < 5 else 0.5
    assert az == pytest.approx(props["view:azimuth"], abs=tol)
    assert set(md.view_angles) == set(L1C_BANDS)
    # radiometry: offsets read from the files, by baseline, and stactools' raster:bands
    baseline_offset = -1000.0 if md.processing_baseline >= "04.00" else 0.0
    assert set(md.add_offsets.values()) == {baseline_offset}
    checked = 0
    for asset in item["assets"].values():
        rb = (asset.get("raster:bands") or [{}])[0]
        names = [b["name"] for b in asset.get("eo:bands", [])]
        if len(names) == 1 and rb.get("scale") is not None:
            band = names[0]
            assert md.add_offsets[band] / md.quantification_value == pytest.approx(rb["offset"], abs=1e-12)
            assert 1 / md.quantification_value == pytest.approx(rb["scale"], abs=1e-12)
            assert rb["nodata"] == md.nodata_dn
            checked += 1
    assert checked >= 12
    expected_bands = L1C_BANDS if md.level == "L1C" else L2A_BANDS
    assert set(expected_bands) <= set(md.image_files)


def test_offsets_per_baseline_from_the_files():
    mds = [read_safe_metadata(p) for p in METADATA + [L2A, L1C]]
    by_baseline = {md.processing_baseline: md.add_offsets for md in mds}
    assert sorted(by_baseline) == ["02.06", "02.09", "02.12", "03.01", "04.00", "05.09"]
    for baseline, offsets in by_baseline.items():
        assert set(offsets.values()) == ({0.0} if baseline < "04.00" else {-1000.0}), baseline


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_truncated_jp2_fails_at_load_naming_the_file(tmp_path):
    copy = _copy_l2a(tmp_path)
    jp2 = _in_copy(copy, GRANULE / "IMG_DATA" / "R60m" / f"{STEM}_B04_60m.jp2")
    data = jp2.read_bytes()
    jp2.write_bytes(data[: len(data) // 2])
    p = read_safe(copy, bands=["B03", "B04"])  # the header is intact: metadata still reads
    ds = load(p, 60, tile="T29UNU", angles=None)
    with pytest.raises(CorruptProductError) as err:
        ds["B04"].compute()
    assert f"{STEM}_B04_60m.jp2" in str(err.value)
    assert isinstance(err.value, InputProductError)


def test_atmosphere_from_the_ecmwf_and_cams_grib_files(l2a, tmp_path):
    atm = l2a.metadata["atmosphere"]
    # scene means of the 9 x 9 GRIB grids, converted: TCWV 14.10 kg/m2, MSL 100606 Pa,
    # ozone 0.006894 kg/m2 = 321.9 Dobson units, CAMS total AOD at 550 nm (table 210, #207)
    assert atm["water_vapour"] == pytest.approx(1.4105, abs=1e-3)
    assert atm["pressure_msl"] == pytest.approx(1006.06, abs=0.01)
    assert atm["ozone"] == pytest.approx(0.3219, abs=1e-3)
    assert atm["aot550"] == pytest.approx(0.1217, abs=1e-3)
    assert atm["source"] == "AUX_ECMWFT, AUX_CAMSFO"
    copy = _copy_l2a(tmp_path)
    cams = next(copy.rglob("AUX_CAMSFO"))
    cams.write_bytes(cams.read_bytes()[:100])  # truncated: reported, the product still reads
    atm2 = read_safe(copy, bands=["B04"]).metadata["atmosphere"]
    assert "aot550" not in atm2 and atm2["water_vapour"] == atm["water_vapour"]
    assert "AUX_CAMSFO" in atm2["errors"][0]


def test_band_missing_from_the_mtd(tmp_path):
    copy = _copy_l2a(tmp_path)
    mtd = copy / "MTD_MSIL2A.xml"
    lines = mtd.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not ("<IMAGE_FILE>" in ln and "_B04_" in ln)]
    assert len(lines) - len(kept) == 3
    mtd.write_text("".join(kept))
    with pytest.raises(MissingBandError) as err:
        read_safe(copy, bands=BANDS_60M)
    assert "B04" in str(err.value) and err.value.path.endswith("MTD_MSIL2A.xml")
    assert read_safe(copy, bands=["B03"]).bands["B03"].resolution == 60


def test_band_listed_but_missing_on_disk(tmp_path):
    copy = _copy_l2a(tmp_path)
    _in_copy(copy, GRANULE / "IMG_DATA" / "R60m" / f"{STEM}_B11_60m.jp2").unlink()
    with pytest.raises(MissingBandError) as err:
        read_safe(copy, bands=["B04", "B11"])
    assert "B11" in str(err.value)
    assert err.value.path.endswith(f"R20m/{STEM}_B11_20m.jp2")  # the native file is the one expected
    assert f"{STEM}_B11_60m.jp2" in str(err.value)  # and the coarser one is named too


@pytest.mark.parametrize("name", ["MTD_MSIL2A.xml", "MTD_TL.xml"])
def test_unparseable_xml_names_the_file(tmp_path, name):
    copy = _copy_l2a(tmp_path)
    xml = next(copy.rglob(name))
    xml.write_bytes(xml.read_bytes()[:5000])
    with pytest.raises(CorruptProductError) as err:
        read_safe(copy, bands=["B04"])
    assert err.value.path.endswith(name)


def test_missing_metadata_element_names_file_and_element(tmp_path):
    copy = _copy_l2a(tmp_path)
    mtd = copy / "MTD_MSIL2A.xml"
    text = mtd.read_text()
    mtd.write_text(text.replace("<SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>", ""))
    with pytest.raises(CorruptProductError, match="SPACECRAFT_NAME") as err:
        read_safe_metadata(copy)
    assert err.value.path.endswith("MTD_MSIL2A.xml")


def test_unknown_layouts(tmp_path):
    odd = tmp_path / "S2A_MSIL2A_odd.SAFE"
    (odd / "GRANULE").mkdir(parents=True)
    (odd / "metadata.xml").write_text("<a/>")
    with pytest.raises(UnknownProductError) as err:
        read_safe(odd)
    assert err.value.path == str(odd) and "MTD_MSIL2A.xml" in str(err.value)
    with pytest.raises(UnknownProductError, match="no such file"):
        read_safe(tmp_path / "absent.SAFE")
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UnknownProductError) as err:
        read_safe(archive)
    assert err.value.path == str(archive)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptProductError):
        read_safe(broken)
    two = _copy_l2a(tmp_path)
    shutil.copytree(two / "GRANULE" / GRANULE.name, two / "GRANULE" / "L2A_T29UNU_second")
    with pytest.raises(UnknownProductError, match="exactly one"):
        read_safe(two, bands=["B04"])


def test_band_names_checked():
    with pytest.raises(MissingBandError, match="B10"):
        read_safe(L2A, bands=["B10"])  # Sen2Cor drops the cirrus band
    with pytest.raises(ConfigurationError, match="B13"):
        read_safe(L2A, bands=["B13"])


def test_footprint_across_the_antimeridian_is_clipped_and_kept_whole(tmp_path):
    """Metadata of a real product across 180 degrees + two synthetic rasters on a tile window."""
    src = next(p for p in METADATA if "T01WCS" in p.name)
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    md = read_safe_metadata(copy)
    window = md.native_grids[60][800:830, 500:1400]  # x 330-384 km: lon 180 is near x 379-382 km
    for key in ("B04", "SCL"):
        path = copy / md.image_files[key][60]
        path.parent.mkdir(parents=True, exist_ok=True)
        ramp = (np.arange(window.shape.x, dtype=np.uint16)[None, :] % 11 + 1).repeat(window.shape.y, 0)
        with rasterio.open(path, "w", driver="JP2OpenJPEG", width=window.shape.x, height=window.shape.y,
                           count=1, dtype="uint16" if key == "B04" else "uint8", crs=md.crs,
                           transform=window.affine, QUALITY=100, REVERSIBLE="YES") as dst:
            dst.write(ramp.astype(dst.dtypes[0]), 1)
    p = read_safe(copy, bands=["B04"])
    assert p.bands["B04"].resolution == 60
    fp = p.footprint
    assert fp.crs == "EPSG:4326" and fp.geom.geom_type == "Polygon"
    lons = np.array(fp.geom.exterior.coords)[:, 0]
    assert lons.min() < 180.0 < lons.max() < 181.0  # one ring across 180, not split at -180
    expected = md.footprint.to_crs(md.crs).intersection(window.extent)
    ours = fp.to_crs(md.crs)
    assert ours.intersection(expected).area / ours.union(expected).area > 0.999
    assert expected.area < 0.95 * window.extent.area  # the footprint's west edge cuts the window
    ds = load(p, 60, tile="T01WCS", angles=None)
    assert ds.odc.geobox.crs == md.crs and ds.odc.geobox.extent.intersects(ours)
