"""Tests of the THEIA MUSCATE / N2A reader on real THEIA files (tests/data/muscate, see SOURCE.txt).

The real Sentinel-2 samples are iota2 extracts: the real ``MTD_ALL.xml`` beside a one-band
``FRE_STACK.tif``. The standard per-band layout is DERIVED in a temporary folder from that
real stack and real MTD (files named as the MTD lists them, masks with chosen bit patterns).
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from lxml import etree

from agriseries.core.errors import (
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from agriseries.core.grid import tile_geobox
from agriseries.core.masks import MaskBit
from agriseries.io.muscate import decode_n2a_masks, is_muscate, nua_as_clm, read_muscate
from agriseries.io.product import file_geobox, load

# odc-geo 0.5.3 with affine 3 / shapely 2.1 warns inside GeoBox slicing and Geometry.to_crs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning"),
]

DATA = Path(__file__).parent / "data" / "muscate"
KPD = DATA / "S2_MAJA/T38KPD/SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0"
KPE = DATA / "S2_MAJA/T38KPE/SENTINEL2A_20170213-071209-461_L2A_T38KPE_C_V1-0"
KPD_MTD = KPD / "SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0_MTD_ALL.xml"
KPD_STACK = KPD / "SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0_FRE_STACK.tif"
PID = "SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4"
N2A_H2 = DATA / "L8_N2A/LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0002"
N2A_H3 = DATA / "L8_N2A/LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0003"

R1_BANDS = ["B2", "B3", "B4", "B8"]
R2_BANDS = ["B5", "B6", "B7", "B8A", "B11", "B12"]
ALL_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


def _raw(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


# --------------------------------------------------------------------------------------
# real S2 samples: MTD + stack


def test_detects_real_products():
    assert is_muscate(KPD) and is_muscate(KPE) and is_muscate(KPD_MTD)
    assert is_muscate(N2A_H2) and is_muscate(N2A_H3)
    assert not is_muscate(DATA) and not is_muscate(KPD_STACK)
    assert not is_muscate(DATA / "nonexistent")


def test_mtd_values_t38kpd():
    p = read_muscate(KPD, stack_bands=["B04"])
    assert p.product_id == PID
    assert p.datetime == dt.datetime(2017, 2, 3, 7, 12, 45, 541000, tzinfo=dt.timezone.utc)
    assert p.sensor == "S2A" and p.level == "L2A" and p.tile == "T38KPD"
    assert p.crs == "EPSG:32738"
    # The processing history names "GippMaccs_Sentinel2A_Maccs5.1.2_MADAGCEN_20170403".
    assert p.producer == "MACCS" and p.metadata["l2_processor"] == "MACCS 5.1.2"
    md = p.metadata
    assert md["reflectance_quantification"] == 10000.0
    assert md["aot_quantification"] == 200.0
    assert md["water_vapor_quantification"] == 20.0
    assert md["nodata"] == -10000.0
    assert md["quality_CloudPercent"] == "24" and md["quality_SnowPercent"] == "0"
    assert md["mean_sun_angles"] == (26.9929467990548, 88.0848960670415)
    assert md["mean_view_angles"]["B02"] == (6.34279501659039, 285.807239893696)
    assert md["mean_view_angles"]["B8A"] == (6.57681906744465, 286.346481189483)
    assert md["layout"] == "stack"
    assert p.path == str(KPD)
    assert read_muscate(KPD_MTD, stack_bands=["B04"]).path == str(KPD)  # given the MTD itself


def test_mtd_sun_angle_grid_is_the_tile_grid():
    p = read_muscate(KPD, stack_bands=["B04"])
    sun = p.sun_angles
    assert sun.zenith.shape == (23, 23) and sun.azimuth.shape == (23, 23)
    assert (sun.x0, sun.y0, sun.step) == (600000.0, 7900000.0, 5000.0)
    assert sun.zenith[0, 0] == 27.5031 and sun.zenith[0, 22] == 26.527
    assert sun.zenith[22, 22] == 26.4887


def _detector_grids(mtd: Path, band_id: str, which: str) -> list[np.ndarray]:
    root = etree.parse(str(mtd)).getroot()
    out = []
    for band in root.iterfind(".//Band_Viewing_Incidence_Angles_Grids_List"):
        if band.get("band_id") != band_id:
            continue
        for det in band.iterfind("Viewing_Incidence_Angles_Grids"):
            rows = [r.text.split() for r in det.iterfind(f"{which}/Values_List/VALUES")]
            out.append(np.array(rows, dtype=float))
    return out


def test_view_angle_grid_merges_detectors():
    p = read_muscate(KPD, stack_bands=["B04"])
    dets = _detector_grids(KPD_MTD, "B4", "Zenith")
    assert len(dets) == 6  # detectors 07-12 (real MTD)
    stack = np.stack(dets)
    n = np.isfinite(stack).sum(0)
    expected = np.where(n > 0, np.nansum(stack, 0) / np.maximum(n, 1), np.nan)
    np.testing.assert_allclose(p.view_angles["B04"].zenith, expected, equal_nan=True)
    # Node (0, 0) is seen by detector 07 only: 1.3452 in the real file.
    assert p.view_angles["B04"].zenith[0, 0] == pytest.approx(1.3452)


def test_stack_needs_band_names_when_count_differs():
    with pytest.raises(MissingBandError,
                       match=r"stack holds 1 band\(s\) but the metadata lists 10"):
        read_muscate(KPD)


def test_stack_values_are_dn_over_10000():
    p = read_muscate(KPD, stack_bands=["B04"])
    assert list(p.bands) == ["B04"]
    assert p.grid(10) == file_geobox(str(KPD_STACK))
    ds = load(p).compute()
    raw = _raw(KPD_STACK)
    assert raw.shape == (256, 256) and raw.dtype == np.uint16
    assert int(raw.min()) == 41 and int(raw.max()) == 1942
    np.testing.assert_array_equal(ds["B04"].values[0], raw.astype(np.float32) * np.float32(1e-4))
    assert ds.odc.geobox == file_geobox(str(KPD_STACK))
    assert ds.odc.geobox.crs.epsg == 32738
    assert str(ds.time.values[0]) == "2017-02-03T07:12:45.541000000"
    assert ds.sensor.values.tolist() == ["S2A"] and ds.tile.values.tolist() == ["T38KPD"]
    assert "mask" not in ds  # the extract has no MASKS


def test_stack_sun_zenith_is_bilinear_in_the_mtd_grid():
    p = read_muscate(KPD, stack_bands=["B04"])
    ds = load(p).compute()
    z = p.sun_angles.zenith
    # pixel (0, 0) centre: x = 676805, y = 7895555
    c, r = (676805.0 - 600000.0) / 5000.0, (7900000.0 - 7895555.0) / 5000.0
    c0, r0 = int(c), int(r)
    fc, fr = c - c0, r - r0
    expected = ((1 - fr) * ((1 - fc) * z[r0, c0] + fc * z[r0, c0 + 1])
                + fr * ((1 - fc) * z[r0 + 1, c0] + fc * z[r0 + 1, c0 + 1]))
    assert float(ds.sun_zenith.values[0, 0, 0]) == pytest.approx(expected, abs=1e-4)
    assert 26.4 < float(ds.sun_zenith.min()) and float(ds.sun_zenith.max()) < 27.6
    assert float(ds.view_zenith.mean()) == pytest.approx(7.37, abs=0.05)


def test_t38kpe_product_and_tile_load():
    p = read_muscate(KPE, stack_bands=["B04"])
    assert p.tile == "T38KPE" and p.product_id == "SENTINEL2A_20170213-071209-461_L2A_T38KPE_D_V1-4"
    assert p.datetime == dt.datetime(2017, 2, 13, 7, 12, 9, 461000, tzinfo=dt.timezone.utc)
    assert p.metadata["quality_CloudPercent"] == "79"
    assert p.sun_angles.y0 == 8000020.0
    # The crop is on the T38KPE 10 m lattice: loading on the tile gives the same pixels.
    a = load(p, angles=None).compute()
    b = load(p, tile="T38KPE", angles=None).compute()
    assert b.odc.geobox == a.odc.geobox
    np.testing.assert_array_equal(a["B04"].values, b["B04"].values)
    tb = tile_geobox("T38KPE", 10)
    assert (tb.affine.c, tb.affine.f) == (600000.0, 8000020.0)


# --------------------------------------------------------------------------------------
# per-band layout, DERIVED from the real stack and MTD


def _write(path: Path, arr: np.ndarray, transform: Affine, crs, nodata=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 1 if arr.ndim == 2 else arr.shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[-1], height=arr.shape[-2],
                       count=count, dtype=arr.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(arr if arr.ndim == 3 else arr[None])


def _listed(mtd: Path) -> list[str]:
    root = etree.parse(str(mtd)).getroot()
    return [e.text for e in root.iter("IMAGE_FILE", "MASK_FILE")]


def build_per_band(dest: Path) -> dict[str, np.ndarray]:
    """Write a per-band MUSCATE product from the real stack + MTD; return the arrays written."""
    prod = dest / PID
    prod.mkdir(parents=True)
    shutil.copy(KPD_MTD, prod / f"{PID}_MTD_ALL.xml")
    with rasterio.open(KPD_STACK) as src:
        dn = src.read(1).astype(np.int16)
        t1, crs = src.transform, src.crs
    dn[:3, :5] = -10000  # no-data corner
    t2 = t1 * Affine.scale(2)
    rng = np.random.default_rng(20170203)
    arrays: dict[str, np.ndarray] = {}
    names = {Path(n).name: n for n in set(_listed(KPD_MTD))}
    for i, b in enumerate(ALL_BANDS):
        for kind in ("FRE", "SRE"):
            off = 10 * i + (0 if kind == "FRE" else 3)
            arr = np.where(dn == -10000, dn, dn + off).astype(np.int16)
            if b in R2_BANDS:
                arr = arr[::2, ::2].copy()
            arrays[f"{kind}_{b}"] = arr
            rel = names[f"{PID}_{kind}_{b}.tif"]
            _write(prod / rel, arr, t1 if b in R1_BANDS else t2, crs, -10000)
    for g, shape, t in (("R1", (256, 256), t1), ("R2", (128, 128), t2)):
        clm = rng.integers(0, 256, shape, dtype=np.uint8)
        clm[rng.random(shape) < 0.5] = 0
        mg2 = rng.integers(0, 256, shape, dtype=np.uint8)
        mg2[rng.random(shape) < 0.5] = 0
        edg = np.zeros(shape, np.uint8)
        edg[-2:, :] = 1
        sat = np.where(rng.random(shape) < 0.05, rng.integers(1, 16, shape), 0).astype(np.uint8)
        atb = np.stack([np.full(shape, 40, np.uint8),
                        (40 + np.arange(shape[1]) % 50).astype(np.uint8)[None].repeat(shape[0], 0)])
        atb[1, 0, :10] = 0  # AOT no data
        for kind, arr in (("CLM", clm), ("MG2", mg2), ("EDG", edg), ("SAT", sat)):
            arrays[f"{kind}_{g}"] = arr
            _write(prod / names[f"{PID}_{kind}_{g}.tif"], arr, t, crs)
        arrays[f"ATB_{g}"] = atb
        _write(prod / names[f"{PID}_ATB_{g}.tif"], atb, t, crs)
    return arrays


@pytest.fixture()
def per_band(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = build_per_band(tmp_path)
    return tmp_path / PID, arrays


def expected_bits(clm, mg2, edg, sat) -> np.ndarray:
    """The common mask bits by direct (v >> bit) & 1 arithmetic (docs/inputs.md, "MUSCATE masks")."""
    def b(v, n):
        return (v.astype(np.int64) >> n) & 1

    cloud = b(clm, 1) | b(clm, 2) | b(clm, 3) | b(clm, 4) | b(mg2, 1)
    shadow = b(clm, 5) | b(clm, 6) | b(mg2, 3)
    cirrus = b(clm, 7)
    water, snow = b(mg2, 0), b(mg2, 2)
    topo = b(mg2, 4) | b(mg2, 5)
    return (cloud * 1 | shadow * 2 | snow * 4 | water * 8 | cirrus * 16 | (sat != 0) * 32
            | (edg != 0) * 64 | topo * 128).astype(np.uint8)


def test_per_band_metadata(per_band):
    prod, _ = per_band
    assert is_muscate(prod)
    p = read_muscate(prod)
    assert p.metadata["layout"] == "per_band"
    assert list(p.bands) == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert p.bands["B02"].resolution == 10 and p.bands["B12"].resolution == 20
    assert p.bands["B02"].path.endswith(f"{PID}_FRE_B2.tif")
    assert p.bands["B02"].scale == pytest.approx(1e-4) and p.bands["B02"].nodata == -10000
    assert set(p.quality) == {"CLM", "MG2", "EDG", "SAT"}
    assert p.quality["CLM"].path.endswith(f"MASKS/{PID}_CLM_R2.tif")
    assert p.aux["aot"].band_index == 2 and p.aux["aot"].scale == pytest.approx(1 / 200)
    assert p.aux["aot"].nodata == 0
    assert p.grid(10) == tile_geobox("T38KPD", 10) and p.grid(20) == tile_geobox("T38KPD", 20)
    assert read_muscate(prod, resolution=10).quality["CLM"].path.endswith("_CLM_R1.tif")
    assert read_muscate(prod, reflectance="SRE").bands["B8A"].path.endswith(f"{PID}_SRE_B8A.tif")


def test_per_band_values_and_masks_r1(per_band):
    prod, arrs = per_band
    p = read_muscate(prod, resolution=10)
    gb10 = file_geobox(p.bands["B02"].path)
    ds = load(p, geobox=gb10, bands=["B02", "B03", "B08"]).compute()
    for b, i in (("B02", 0), ("B03", 1), ("B08", 6)):
        dn = arrs[f"FRE_{b[0]}{int(b[1:])}"]
        exp = np.where(dn == -10000, np.nan, dn.astype(np.float32) * np.float32(1e-4))
        np.testing.assert_array_equal(ds[b].values[0], exp)
    assert np.isnan(ds["B02"].values[0, :3, :5]).all()
    expected = expected_bits(arrs["CLM_R1"], arrs["MG2_R1"], arrs["EDG_R1"], arrs["SAT_R1"])
    expected[:3, :5] |= np.uint8(MaskBit.NODATA)  # reflectance no data
    np.testing.assert_array_equal(ds["mask"].values[0], expected)
    # Every common bit occurs in the chosen patterns.
    for bit in MaskBit:
        assert (ds["mask"].values & bit).any(), bit
    aot = arrs["ATB_R1"][1]
    np.testing.assert_allclose(ds["aot"].values[0], np.where(aot == 0, np.nan, aot / 200.0),
                               rtol=1e-6)


def test_per_band_values_and_masks_r2(per_band):
    prod, arrs = per_band
    p = read_muscate(prod)  # R2 masks by default
    gb20 = file_geobox(p.bands["B05"].path)
    ds = load(p, geobox=gb20, bands=["B05", "B12"]).compute()
    for b in ("B05", "B12"):
        dn = arrs[f"FRE_B{int(b[1:])}"]
        exp = np.where(dn == -10000, np.nan, dn.astype(np.float32) * np.float32(1e-4))
        np.testing.assert_array_equal(ds[b].values[0], exp)
    expected = expected_bits(arrs["CLM_R2"], arrs["MG2_R2"], arrs["EDG_R2"], arrs["SAT_R2"])
    expected[:2, :3] |= np.uint8(MaskBit.NODATA)
    np.testing.assert_array_equal(ds["mask"].values[0], expected)
    # R2 masks on a 10 m load: nearest neighbour, each 20 m mask pixel covers 2 x 2 pixels.
    ds10 = load(p, geobox=file_geobox(p.bands["B02"].path), bands=["B02"], angles=None).compute()
    r2 = expected_bits(arrs["CLM_R2"], arrs["MG2_R2"], arrs["EDG_R2"], arrs["SAT_R2"])
    up = np.repeat(np.repeat(r2, 2, 0), 2, 1)
    up[:3, :5] |= np.uint8(MaskBit.NODATA)
    np.testing.assert_array_equal(ds10["mask"].values[0], up)


def test_per_band_zip(per_band, tmp_path):
    prod, arrs = per_band
    zpath = tmp_path / f"{PID}.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(prod.rglob("*")):
            if f.is_file():
                zf.write(f, f"{PID}/{f.relative_to(prod)}")
    assert is_muscate(zpath)
    p = read_muscate(zpath, resolution=10)
    assert p.bands["B04"].path.startswith("/vsizip/")
    gb10 = file_geobox(p.bands["B02"].path)
    ds = load(p, geobox=gb10, bands=["B04"], angles=None).compute()
    dn = arrs["FRE_B4"]
    exp = np.where(dn == -10000, np.nan, dn.astype(np.float32) * np.float32(1e-4))
    np.testing.assert_array_equal(ds["B04"].values[0], exp)
    exp = expected_bits(arrs["CLM_R1"], arrs["MG2_R1"], arrs["EDG_R1"], arrs["SAT_R1"])
    exp[:3, :5] |= np.uint8(MaskBit.NODATA)
    np.testing.assert_array_equal(ds["mask"].values[0], exp)


# --------------------------------------------------------------------------------------
# bad input


def test_mtd_missing_a_band(per_band):
    prod, _ = per_band
    mtd = prod / f"{PID}_MTD_ALL.xml"
    text = mtd.read_text(encoding="utf-8")
    line = f'<IMAGE_FILE band_id="B4">{PID}_FRE_B4.tif</IMAGE_FILE>'
    assert line in text
    mtd.write_text(text.replace(line, ""), encoding="utf-8")
    with pytest.raises(MissingBandError, match=r"MTD_ALL\.xml: band\(s\) B4 of Band_Global_List"):
        read_muscate(prod)
    read_muscate(prod, reflectance="SRE")  # the SRE list is whole


def test_listed_band_file_absent(per_band):
    prod, _ = per_band
    (prod / f"{PID}_FRE_B8.tif").unlink()
    with pytest.raises(MissingBandError, match=f"{PID}_FRE_B8.tif"):
        read_muscate(prod)


def test_listed_mask_file_absent(per_band):
    prod, _ = per_band
    (prod / "MASKS" / f"{PID}_MG2_R2.tif").unlink()
    with pytest.raises(MissingBandError, match="MG2_R2"):
        read_muscate(prod)


def test_truncated_tif(per_band):
    prod, _ = per_band
    f = prod / f"{PID}_FRE_B3.tif"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptProductError, match="FRE_B3.tif"):
        p = read_muscate(prod)
        load(p, geobox=file_geobox(p.bands["B02"].path), bands=["B03"], angles=None).compute()


def test_truncated_header(per_band):
    prod, _ = per_band
    f = prod / f"{PID}_FRE_B3.tif"
    f.write_bytes(f.read_bytes()[:6])
    with pytest.raises(CorruptProductError, match="FRE_B3.tif: cannot open raster"):
        read_muscate(prod)


def test_corrupt_mtd(per_band):
    prod, _ = per_band
    mtd = prod / f"{PID}_MTD_ALL.xml"
    mtd.write_bytes(mtd.read_bytes()[:5000])
    with pytest.raises(CorruptProductError, match="not well-formed XML"):
        read_muscate(prod)


def test_unknown_layout(tmp_path):
    d = tmp_path / "SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4"
    d.mkdir()
    (d / "readme.txt").write_text("not a product")
    assert not is_muscate(d)
    with pytest.raises(UnknownProductError, match="expected a \\*_MTD_ALL.xml"):
        read_muscate(d)
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/readme.txt", "no")
    assert not is_muscate(z)
    with pytest.raises(UnknownProductError):
        read_muscate(z)
    with pytest.raises(InputProductError):
        read_muscate(tmp_path / "missing")


# --------------------------------------------------------------------------------------
# old THEIA Landsat 8 N2A


def test_n2a_metadata_and_values():
    p = read_muscate(N2A_H2)
    assert p.sensor == "L8" and p.producer == "MACCS" and p.level == "L2A"
    assert p.datetime == dt.datetime(2016, 3, 30, tzinfo=dt.timezone.utc)
    assert p.crs == "EPSG:2154" and p.tile is None
    assert p.metadata["theia_tile"] == "D0005H0002" and p.metadata["time_of_day_known"] is False
    assert list(p.bands) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    assert set(p.quality) == {"NUA", "DIV", "SAT"}
    ds = load(p).compute()
    tif = next(N2A_H2.glob("*_ORTHO_SURF_CORR_PENTE_*.TIF"))
    for i, b in enumerate(p.bands, start=1):
        raw = _raw(tif, i)
        np.testing.assert_array_equal(ds[b].values[0], raw.astype(np.float32) * np.float32(1e-3))
    assert ds.odc.geobox.shape == (50, 50) and ds.odc.geobox.crs.epsg == 2154
    assert float(ds["B5"].mean()) == pytest.approx(0.32283, abs=1e-5)  # NIR of farmland in March


@pytest.mark.parametrize("prod", [N2A_H2, N2A_H3])
def test_n2a_masks_decoded_like_direct_arithmetic(prod):
    p = read_muscate(prod)
    ds = load(p).compute()
    nua = _raw(next((prod / "MASK").glob("*_NUA.TIF"))).astype(np.int64)
    div = _raw(next((prod / "MASK").glob("*_DIV.TIF"))).astype(np.int64)
    sat = _raw(next((prod / "MASK").glob("*_SAT.TIF"))).astype(np.int64)

    def b(v, n):
        return (v >> n) & 1

    cloud = b(nua, 1) | b(nua, 2) | b(nua, 3) | b(nua, 4)
    exp = (cloud * 1 | (b(nua, 6) | b(nua, 7)) * 2 | b(div, 2) * 4 | b(div, 1) * 8
           | b(nua, 5) * 16 | (sat != 0) * 32 | b(div, 0) * 64).astype(np.uint8)
    np.testing.assert_array_equal(ds["mask"].values[0], exp)
    # The real extracts are cloud-free, valid and unsaturated everywhere.
    assert not ds["mask"].values.any()


def test_n2a_decoder_every_bit():
    v = np.arange(256, dtype=np.uint8)
    clm = nua_as_clm(v)
    for n in range(5):
        np.testing.assert_array_equal((clm >> n) & 1, (v >> n) & 1)
    np.testing.assert_array_equal((clm >> 7) & 1, (v >> 5) & 1)
    np.testing.assert_array_equal((clm >> 5) & 1, (v >> 6) & 1)
    np.testing.assert_array_equal((clm >> 6) & 1, (v >> 7) & 1)
    zero = np.zeros(256, np.uint8)
    m = decode_n2a_masks({"NUA": zero, "DIV": v, "SAT": zero})
    np.testing.assert_array_equal((m & MaskBit.NODATA) != 0, (v & 1) != 0)
    np.testing.assert_array_equal((m & MaskBit.WATER) != 0, (v & 2) != 0)
    np.testing.assert_array_equal((m & MaskBit.SNOW) != 0, (v & 4) != 0)
    m = decode_n2a_masks({"NUA": v})
    np.testing.assert_array_equal((m & MaskBit.CIRRUS) != 0, (v & 32) != 0)
    np.testing.assert_array_equal((m & MaskBit.CLOUD_SHADOW) != 0, (v & 192) != 0)
    np.testing.assert_array_equal((m & MaskBit.CLOUD) != 0, (v & 30) != 0)


def test_n2a_on_a_sentinel2_tile():
    p = read_muscate(N2A_H2)
    ds = load(p, tile="T31TCJ", resolution=10).compute()
    assert ds.odc.geobox.crs.epsg == 32631 and ds.odc.geobox.resolution.x == 10
    outside = np.isnan(ds["B5"].values[0])
    # The rotated Lambert-93 square does not fill its UTM bounding box: corners are no data.
    assert 0 < outside.sum() < 0.05 * outside.size
    np.testing.assert_array_equal((ds["mask"].values[0] & MaskBit.NODATA) != 0, outside)
    assert float(np.nanmean(ds["B5"].values)) == pytest.approx(0.32283, abs=0.005)


def test_n2a_sre_is_absent_for_landsat():
    with pytest.raises(MissingBandError, match="ORTHO_SURF_CORR_ENV"):
        read_muscate(N2A_H2, reflectance="SRE")
