"""Bad input products: each kind gets one error naming the file, what was recognised and what
was expected, from the reader and from the command line (exit 1, no traceback).

Every case is made from real data in tests/data, really damaged (truncated, cut, emptied) in a
temporary copy, or is a real product agriseries does not read (Landsat 5/7, Sentinel-1).
"""

from __future__ import annotations

import inspect
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from agriseries.cli import main
from agriseries.core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from agriseries.io.detect import find_reader, readers
from agriseries.io.landsat import read_landsat
from agriseries.io.muscate import read_muscate
from agriseries.io.safe import read_safe
from agriseries.io.store import ProductStore
from agriseries.io.timeseries import read_timeseries

DATA = Path(__file__).parent / "data"
SAFE = next((DATA / "safe").glob("S2A_MSIL2A_*.SAFE"))
STEM = "T29UNU_20221005T115411"
LANDSAT = next((DATA / "landsat").glob("LC08_*_T1"))
MTL_DIR = DATA / "landsat" / "mtl"
S1 = next((DATA / "other").glob("S1A_*.SAFE"))
KPD = DATA / "muscate/S2_MAJA/T38KPD/SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0"
NETCDF = next((DATA / "worldcereal").glob("S2_L2A_20m_*.nc"))

# odc-geo 0.5.3 with affine 3 / shapely 2.1 warns inside GeoBox slicing and Geometry.to_crs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning"),
]


def _cli_error(path: Path, *expected: str, args: tuple[str, ...] = ()) -> None:
    """``agriseries info PATH``: exit 1, one ``error:`` message holding every ``expected``
    phrase, no traceback."""
    res = CliRunner().invoke(main, ["info", str(path), *args])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    text = "".join(res.output.split())  # the console may wrap a long line anywhere
    assert text.startswith("error:") and text.count("error:") == 1
    for phrase in expected:
        assert "".join(phrase.split()) in text, (phrase, res.output)


def _copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------
# the reader signature


def test_every_reader_has_the_common_signature():
    for r in readers():
        params = inspect.signature(r.read).parameters
        for name in ("allow_missing_bands", "stack_bands"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (r.name, name)
        assert params["allow_missing_bands"].default is False
        assert params["stack_bands"].default is None
        rest = [p for p in list(params.values())[1:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert not rest, (r.name, rest)  # every option after the path is keyword-only


def test_stack_bands_refused_by_one_file_per_band_formats():
    with pytest.raises(ConfigurationError, match="one file per band"):
        read_safe(SAFE, stack_bands=["B04"])
    with pytest.raises(ConfigurationError, match="one file per band"):
        read_landsat(LANDSAT, stack_bands=["B4"])
    with pytest.raises(ConfigurationError, match="names its band variables"):
        read_timeseries(NETCDF, stack_bands=["B04"])


# --------------------------------------------------------------------------------------
# archives


def test_truncated_zip(tmp_path):
    archive = tmp_path / f"{SAFE.stem}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in SAFE.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(SAFE.parent).as_posix())
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(CorruptProductError) as err:
        find_reader(archive)
    msg = _one_line(err)
    assert msg.startswith(f"{archive}: truncated zip archive") and "download it again" in msg
    with pytest.raises(CorruptProductError, match="truncated zip archive"):
        read_safe(archive)
    _cli_error(archive, f"{archive}: truncated zip archive")


# --------------------------------------------------------------------------------------
# Sentinel-2 SAFE


def test_safe_without_granule(tmp_path):
    copy = _copy(SAFE, tmp_path)
    shutil.rmtree(copy / "GRANULE")
    with pytest.raises(UnknownProductError) as err:
        find_reader(copy)
    msg = _one_line(err)
    assert msg.startswith(f"{copy}: Sentinel-2 SAFE without GRANULE/: MTD_MSIL2A.xml is there")
    assert "expected one granule folder" in msg
    with pytest.raises(UnknownProductError, match="without GRANULE/"):
        read_safe(copy)
    _cli_error(copy, "SAFE without GRANULE/")


def test_safe_without_product_metadata(tmp_path):
    copy = _copy(SAFE, tmp_path)
    (copy / "MTD_MSIL2A.xml").unlink()
    with pytest.raises(UnknownProductError) as err:
        find_reader(copy)
    msg = _one_line(err)
    assert "the product metadata file is missing" in msg and "GRANULE/ is there" in msg
    _cli_error(copy, "MTD_MSIL2A.xml", "the product metadata file is missing")


def test_safe_without_tile_metadata(tmp_path):
    copy = _copy(SAFE, tmp_path)
    next(copy.rglob("MTD_TL.xml")).unlink()
    with pytest.raises(UnknownProductError) as err:
        read_safe(copy, bands=["B04"])
    assert "MTD_TL.xml" in _one_line(err) and "the tile metadata is missing" in str(err.value)
    _cli_error(copy, "the tile metadata is missing")


def test_safe_with_truncated_metadata_xml(tmp_path):
    copy = _copy(SAFE, tmp_path)
    mtd = copy / "MTD_MSIL2A.xml"
    mtd.write_bytes(mtd.read_bytes()[:3000])
    with pytest.raises(CorruptProductError) as err:
        read_safe(copy, bands=["B04"])
    msg = _one_line(err)
    assert msg.startswith(f"{mtd}: the product metadata is not well-formed XML (truncated?)")
    mtd.write_bytes(b"")
    _cli_error(copy, f"{mtd}: the product metadata file is empty")


def test_safe_truncated_jp2_header(tmp_path):
    copy = _copy(SAFE, tmp_path)
    jp2 = next(copy.rglob(f"{STEM}_B04_60m.jp2"))
    jp2.write_bytes(jp2.read_bytes()[:100])
    with pytest.raises(CorruptProductError) as err:
        read_safe(copy, bands=["B04"])
    msg = _one_line(err)
    assert msg.startswith(f"{jp2}: cannot open raster (truncated or not a JPEG 2000 image?, "
                          "100 bytes)")
    _cli_error(copy, f"{jp2}: cannot open raster", args=("--allow-missing-bands",))


def test_safe_missing_band_file(tmp_path):
    copy = _copy(SAFE, tmp_path)
    for f in copy.rglob(f"{STEM}_B03_*.jp2"):
        f.unlink()
    with pytest.raises(MissingBandError) as err:
        read_safe(copy, bands=["B03", "B04"])
    msg = _one_line(err)
    assert msg.startswith(str(copy)) and "band B03 is listed" in msg and "missing on disk" in msg
    _cli_error(copy, f"{STEM}_B03_10m.jp2", "missing on disk")


# --------------------------------------------------------------------------------------
# Landsat


@pytest.mark.parametrize("mtl,what", [
    ("LE07_L2SP_021030_20100109_20200911_02_T1_MTL.xml", "LANDSAT_7: Landsat 4-7 is not supported"),
    ("LT05_L2SP_010067_19860424_20200918_02_T2_MTL.xml", "LANDSAT_5: Landsat 4-7 is not supported"),
    ("LM05_L1GS_001001_19850524_20210918_02_T2_MTL.xml", "LANDSAT_5: Landsat 1-5 MSS is not supported"),
])
def test_landsat_other_than_8_9(tmp_path, mtl, what):
    folder = tmp_path / mtl.replace("_MTL.xml", "")
    folder.mkdir()
    shutil.copy(MTL_DIR / mtl, folder / mtl)
    for path in (folder, folder / mtl):
        with pytest.raises(UnknownProductError) as err:
            find_reader(path)
        msg = _one_line(err)
        assert msg.startswith(f"{folder / mtl}: SPACECRAFT_ID = {what}")
        assert msg.endswith("agriseries reads Landsat 8/9 Collection 2 (OLI) products")
    _cli_error(folder, what, "agriseries reads Landsat 8/9 Collection 2")


def test_landsat_folder_without_mtl(tmp_path):
    folder = _copy(LANDSAT, tmp_path)
    for f in folder.glob("*_MTL.*"):
        f.unlink()
    with pytest.raises(UnknownProductError) as err:
        find_reader(folder)
    msg = _one_line(err)
    assert msg.startswith(f"{folder}: Landsat product folder without its metadata: no *_MTL.txt")
    assert "LC08_L2SP_008059_20191201_20200825_02_T1_QA_PIXEL.TIF" in msg
    _cli_error(folder, "Landsat product folder without its metadata")


def test_landsat_truncated_mtl(tmp_path):
    folder = _copy(LANDSAT, tmp_path)
    for f in folder.glob("*_MTL.*"):
        if not f.name.endswith(".txt"):
            f.unlink()
    mtl = next(folder.glob("*_MTL.txt"))
    text = mtl.read_text()
    mtl.write_text(text[: text.index("\n", len(text) // 2) + 1])
    _cli_error(folder, f"{mtl}:", "is never closed (file truncated?)")
    mtl.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # not an MTL at all
    with pytest.raises(CorruptProductError) as err:
        find_reader(folder)
    assert _one_line(err).startswith(f"{mtl}: ")


def test_landsat_truncated_tif_and_missing_band(tmp_path):
    folder = _copy(LANDSAT, tmp_path)
    tif = folder / f"{folder.name}_SR_B1.TIF"
    tif.write_bytes(tif.read_bytes()[:500])
    with pytest.raises(CorruptProductError) as err:
        read_landsat(folder)
    assert _one_line(err).startswith(f"{tif}: cannot open raster (truncated or not a GeoTIFF?, "
                                     "500 bytes)")
    _cli_error(folder, f"{tif}: cannot open raster")
    tif.unlink()
    with pytest.raises(MissingBandError) as err:
        read_landsat(folder)
    assert _one_line(err).startswith(f"{tif}: band B1 is named in the metadata")
    _cli_error(folder, f"{tif}: band B1 is named in the metadata")
    p = read_landsat(folder, allow_missing_bands=True)
    assert "B1" not in p.bands and p.metadata["missing_bands"] == ["B1"]


# --------------------------------------------------------------------------------------
# NetCDF series


@pytest.mark.parametrize("content,expected", [
    (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
     "not a NetCDF file: it starts with '<!DOCTYPE html><'"),
    (b"", "the file is empty (0 bytes): expected a NetCDF file"),
    (None, "cannot open as a NetCDF file (NetCDF-4 (HDF5), "),
])
def test_corrupt_netcdf(tmp_path, content, expected):
    p = tmp_path / NETCDF.name
    data = NETCDF.read_bytes()
    p.write_bytes(content if content is not None else data[: len(data) * 9 // 10])
    with pytest.raises(CorruptProductError) as err:
        read_timeseries(p)
    msg = _one_line(err)
    assert msg.startswith(f"{p}: {expected}")
    assert "IO backends" not in msg and "engine" not in msg
    _cli_error(p, f"{p}: {expected}")


# --------------------------------------------------------------------------------------
# MUSCATE and other missions


def test_muscate_folder_without_mtd(tmp_path):
    copy = _copy(KPD, tmp_path)
    next(copy.glob("*_MTD_ALL.xml")).unlink()
    with pytest.raises(UnknownProductError) as err:
        find_reader(copy)
    msg = _one_line(err)
    assert msg.startswith(f"{copy}: THEIA MUSCATE product without its metadata: no *_MTD_ALL.xml")
    _cli_error(copy, "THEIA MUSCATE product without its metadata")


def test_product_of_another_mission():
    with pytest.raises(UnknownProductError) as err:
        find_reader(S1)
    msg = _one_line(err)
    assert msg.startswith(f"{S1}: a Sentinel-1 SAR product (manifest.safe: SENTINEL-1), not a "
                          "product agriseries reads (it reads: ESA SAFE Sentinel-2")
    _cli_error(S1, f"{S1}: a Sentinel-1 SAR product")


def test_unknown_folder_lists_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(UnknownProductError, match="not a product layout agriseries knows"):
        find_reader(tmp_path)


# --------------------------------------------------------------------------------------
# the MUSCATE Sentinel-2 sample from the command line


def test_muscate_stack_sample_from_the_cli(tmp_path):
    runner = CliRunner()
    _cli_error(KPD, "stack holds 1 band(s)", "--stack-bands B04")
    res = runner.invoke(main, ["info", str(KPD), "--stack-bands", "B04", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["reader"] == "muscate" and list(doc["bands"]) == ["B04"]
    assert doc["tile"] == "T38KPD" and doc["bands"]["B04"]["scale"] == 1e-4
    store = tmp_path / "store"
    res = runner.invoke(main, ["ingest", str(KPD), "--stack-bands", "B04", "--store", str(store),
                               "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["results"][0]["status"] == "ingested"
    items = list(ProductStore(store).items())
    assert len(items) == 1 and "B04" in items[0].assets
    res = runner.invoke(main, ["info", str(KPD), "--stack-bands", " , "])
    assert res.exit_code == 2  # a wrong option value is a usage error


def test_muscate_stack_bands_from_band_descriptions(tmp_path):
    """A stack whose bands carry their names (GDAL band descriptions) needs no option."""
    copy = _copy(KPD, tmp_path)
    stack = next(copy.glob("*_FRE_STACK.tif"))
    with rasterio.open(stack, "r+") as dst:
        dst.set_band_description(1, "FRE_B4")
    p = read_muscate(copy)
    assert list(p.bands) == ["B04"] and p.metadata["layout"] == "stack"
    res = CliRunner().invoke(main, ["info", str(copy), "--json"])
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["bands"]) == ["B04"]


def test_errors_are_input_product_errors():
    for exc in (CorruptProductError, MissingBandError, UnknownProductError):
        assert issubclass(exc, InputProductError) and issubclass(exc, ValueError)
