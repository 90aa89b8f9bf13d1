"""COG overviews computed in memory (agriseries.io.overviews) are GDAL's, pixel for pixel.

The COG writer gives GDAL's COG driver overview levels it computed from the pixels it holds,
instead of letting the driver compute them through a temporary compressed file. Checked
here against the driver's own levels (the COG it makes from the same pixels in a ``MEM``
dataset, the writer before): real reflectance (a Sentinel-2 band, tiled to sizes whose
levels are odd, where GDAL weights the border pixels), with no data; classes and masks
(``nearest``); float layers with NaN; uint8/uint16 with a no-data value that means equal
to (GDAL then writes its replacement value); several bands. And the files the writer makes
are byte for byte the ones the driver makes by itself."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import rasterio.shutil

from agriseries.core.grid import tile_geobox
from agriseries.io.cog import CogJob, write_cog, write_cogs
from agriseries.io.overviews import build_overviews, overview_sizes, supported

DATA = Path(__file__).parent / "data"
CHIP = next((DATA / "safe").glob("*.SAFE/GRANULE/*/IMG_DATA/R60m/*_B04_60m.jp2"))


def _real(shape: tuple[int, int]) -> np.ndarray:
    """The real B04 chip (DN) tiled to ``shape``, shifted by one pixel per repeat so the
    copies do not line up with the 2 x 2 cells."""
    with rasterio.open(CHIP) as src:
        chip = src.read(1).astype(np.int32)
    reps = (shape[0] // chip.shape[0] + 2, shape[1] // chip.shape[1] + 2)
    big = np.tile(chip, reps)
    return big[1:shape[0] + 1, 3:shape[1] + 3]


def _gdal_levels(tmp_path: Path, arr: np.ndarray, nodata, resampling: str):
    """The overview levels GDAL's COG driver computes itself for ``arr`` (bands, y, x)."""
    b, h, w = arr.shape
    gb = tile_geobox("T29UNU", 10)[:h, :w]
    out = tmp_path / f"gdal_{resampling}_{arr.dtype.name}.tif"
    with rasterio.open("ref.mem", "w", driver="MEM", width=w, height=h, count=b,
                       dtype=arr.dtype.name, crs=gb.crs.to_wkt(), transform=gb.affine,
                       nodata=nodata) as ds:
        ds.write(arr)
        rasterio.shutil.copy(ds, out, driver="COG", compress="DEFLATE", blocksize=512,
                             overview_resampling=resampling)
    with rasterio.open(out) as src:
        n = len(src.overviews(1))
    levels = []
    for k in range(n):
        with rasterio.open(out, overview_level=k) as ov:
            levels.append(ov.read())
    return levels


def _assert_same(mine, gdal):
    assert [m.shape for m in mine] == [g.shape for g in gdal]
    for k, (m, g) in enumerate(zip(mine, gdal)):
        same = (m == g) | (np.isnan(m) & np.isnan(g)) if m.dtype.kind == "f" else m == g
        assert same.all(), f"level {k}: {np.count_nonzero(~same)} pixels differ"


def test_level_sizes_are_the_cog_drivers():
    assert overview_sizes(10980, 10980) == [(5490, 5490), (2745, 2745), (1372, 1372),
                                             (686, 686), (343, 343)]
    assert overview_sizes(1100, 1031) == [(550, 515), (275, 257)]
    assert overview_sizes(513, 40) == [(256, 20)]
    assert overview_sizes(512, 512) == []


@pytest.mark.parametrize("shape", [(1031, 1100), (2745, 1371), (1024, 1600)])
def test_reflectance_average_with_no_data_odd_sizes(tmp_path, shape):
    """Stored reflectance (int16, -10000 no data) of a real band: levels of odd sizes
    (2745 -> 1372: fractional weights) and no-data areas, partial and whole cells."""
    arr = (_real(shape) - 1000).astype(np.int16)[None]
    arr[0, :75, :133] = -10000
    arr[0, 300:301, :] = -10000
    arr[0, ::7, 5::11] = -10000
    mine = build_overviews(arr, "average", -10000)
    assert [m.shape[1:][::-1] for m in mine] == overview_sizes(shape[1], shape[0])
    _assert_same(mine, _gdal_levels(tmp_path, arr, -10000, "average"))


@pytest.mark.parametrize("dtype, nodata, resampling", [
    ("uint8", None, "nearest"), ("uint8", 0, "nearest"), ("int16", -10000, "nearest"),
    ("float32", float("nan"), "nearest"), ("uint16", None, "average"), ("uint16", 0, "average"),
    ("uint8", None, "average"), ("uint8", 255, "average"), ("int16", None, "average"),
    ("float32", float("nan"), "average"), ("float32", -9999.0, "average")])
def test_other_types_and_nearest(tmp_path, dtype, nodata, resampling):
    """Masks and classes (nearest), float layers with NaN, uint8/uint16 averages; two bands
    (a series), an odd size."""
    rng = np.random.default_rng(7)
    real = _real((1299, 1037))
    if dtype == "float32":
        arr = (real / 7919.0).astype(np.float32)
    elif dtype == "uint8":
        arr = (real % 256).astype(np.uint8)
    else:
        arr = real.astype(dtype)
    arr = np.stack([arr, arr[::-1]])
    if nodata is not None:
        arr[rng.random(arr.shape) < 0.25] = nodata
        arr[:, :64, :90] = nodata
    assert supported(arr.dtype, resampling, nodata)
    _assert_same(build_overviews(arr, resampling, nodata),
                 _gdal_levels(tmp_path, arr, nodata, resampling))


@pytest.mark.parametrize("dtype, nodata, values", [("uint8", 2, (1, 3)),
                                                   ("int16", -10000, (-10001, -9999))])
def test_mean_equal_to_no_data_gets_gdals_replacement(tmp_path, dtype, nodata, values):
    """Cells whose valid values average to the no-data value (1 and 3 around 2) are not
    written as no data: GDAL writes its replacement value (the next value up), and so do
    we; a cell of no data only stays no data."""
    rng = np.random.default_rng(1)
    arr = np.where(rng.random((1, 1100, 1100)) < 0.5, *values).astype(dtype)
    arr[rng.random(arr.shape) < 0.3] = nodata
    arr[0, :2, :2] = nodata
    mine = build_overviews(arr, "average", nodata)
    _assert_same(mine, _gdal_levels(tmp_path, arr, nodata, "average"))
    cells = arr[0].reshape(550, 2, 550, 2).astype(float)
    valid = cells != nodata
    with np.errstate(invalid="ignore"):
        mean = np.where(valid, cells, 0).sum(axis=(1, 3)) / valid.sum(axis=(1, 3))
    hit = mean == nodata
    assert hit.sum() > 1000  # the case occurs
    assert (mine[0][0][hit] == nodata + 1).all()
    assert mine[0][0, 0, 0] == nodata  # all no data: no data


def test_cases_left_to_gdal():
    assert build_overviews(np.zeros((1, 600, 600), np.float32), "average", None) is None
    assert build_overviews(np.zeros((1, 600, 600), np.int16), "cubic", None) is None
    assert build_overviews(np.zeros((1, 600, 600), np.uint8), "average", 0,
                           colormap={1: (1, 2, 3, 255)}) is None
    assert build_overviews(np.zeros((1, 600, 600), np.int32), "average", None) is None
    assert build_overviews(np.zeros((1, 600, 600), np.int16), "average", -0.5) is None


@pytest.mark.parametrize("budget", [None, 0], ids=["in memory", "raw file"])
@pytest.mark.parametrize("dtype, nodata", [("int16", -10000), ("float32", None)])
def test_writer_makes_the_cog_drivers_file_byte_for_byte(tmp_path, dtype, nodata, budget):
    """write_cogs with its own overviews (int16) and with GDAL's (float32 without no data,
    left to GDAL), the pixels held in memory or in a raw file (``memory_budget=0``), gives
    the file GDAL's COG driver makes from the pixels alone."""
    h, w = 1371, 1037
    gb = tile_geobox("T29UNU", 10)[:h, :w]
    arr = (_real((h, w)) - 1000).astype(dtype)
    if nodata is not None:
        arr[:200, :77] = nodata
    else:
        arr /= 10000
    [mine] = write_cogs([CogJob(tmp_path / "mine.tif", da.from_array(arr, chunks=(500, 400)),
                                gb, nodata)], memory_budget=budget)
    ref = tmp_path / "ref.tif"
    with rasterio.open("ref.mem", "w", driver="MEM", width=w, height=h, count=1, dtype=dtype,
                       crs=gb.crs.to_wkt(), transform=gb.affine, nodata=nodata) as ds:
        ds.write(arr, 1)
        rasterio.shutil.copy(ds, ref, driver="COG", compress="DEFLATE",
                             predictor=3 if dtype == "float32" else 2, blocksize=512,
                             overview_resampling="average", BIGTIFF="IF_SAFER")
    assert (hashlib.sha256(mine.read_bytes()).hexdigest()
            == hashlib.sha256(ref.read_bytes()).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.tif", "ref.tif"]


def _open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process has open or mapped (``/proc/self``)."""
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    with open("/proc/self/maps") as f:
        maps = [line.split(None, 5)[-1].strip() for line in f if len(line.split()) == 6]
    return [p for p in fds + maps if p.startswith(str(folder))]


@pytest.mark.parametrize("budget", [None, 0], ids=["in memory", "raw file"])
def test_cog_driver_copies_the_writers_levels(tmp_path, budget, caplog):
    """GDAL's COG driver copies the levels the writer computed instead of generating its
    own (it says in a debug message when it generates them), for pixels held in memory and
    in a raw file; a case left to GDAL (float32 without no data) has it generate them. The
    raw file, read in place for its levels, is neither open nor mapped after the write."""
    gb = tile_geobox("T29UNU", 10)[:1300, :1100]
    arr = (_real((1300, 1100)) - 1000).astype(np.int16)
    for dtype, nodata, generated in (("int16", -10000, False), ("float32", None, True)):
        caplog.clear()
        data = da.from_array(arr.astype(dtype), chunks=(500, 400))
        with caplog.at_level(logging.DEBUG, logger="rasterio._env"), rasterio.Env(CPL_DEBUG=True):
            write_cogs([CogJob(tmp_path / f"x_{dtype}.tif", data, gb, nodata)],
                       memory_budget=budget)
        said = [r.getMessage() for r in caplog.records if "COG:" in r.getMessage()]
        assert any("Generating final product" in m for m in said), said  # messages seen
        assert any("Generating overviews" in m for m in said) == generated, said
        with rasterio.open(tmp_path / f"x_{dtype}.tif") as src:
            assert src.overviews(1) == [2, 4]
    assert _open_files_under(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_float32.tif", "x_int16.tif"]
