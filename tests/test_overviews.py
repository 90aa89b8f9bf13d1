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


def _gdal_replacement(dtype: np.dtype, nodata: float):
    """GDAL's value for a mean equal to the no-data value: the next value up (down at the
    type's largest)."""
    if dtype.kind in "iu":
        return nodata - 1 if nodata == np.iinfo(dtype).max else nodata + 1
    up = np.float32(-np.inf) if np.float32(nodata) == np.finfo(np.float32).max else np.float32(np.inf)
    return np.nextafter(np.float32(nodata), up)


def _plain_2x2(a: np.ndarray, nodata) -> np.ndarray:
    """GDAL's 2 x 2 ``average`` of one 2-D level written out plainly with NumPy: each line
    sum starts at 0.0 and adds the cell's valid pixels of that line left to right (a no-data
    pixel is skipped, not added as 0), the cell's sum is 0.0 + line 0 + line 1, divided by
    the count of valid pixels in double precision; integer work (uint8/uint16) adds 0.5 and
    truncates, float32 work (int16/float32) rounds the mean to float32, then int16 rounds
    half away from zero and clips; a mean equal to the no-data value gets GDAL's
    replacement; a cell of no data only is no data."""
    dt = a.dtype
    px = [a[0::2, 0::2], a[0::2, 1::2], a[1::2, 0::2], a[1::2, 1::2]]
    if nodata is None:
        ok = [np.ones(p.shape, bool) for p in px]
    elif np.isnan(nodata):
        ok = [~np.isnan(p) for p in px]
    else:
        ok = [p != dt.type(nodata) for p in px]
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in GDAL's sum
        return _plain_2x2_sums(dt, px, ok, nodata)


def _plain_2x2_sums(dt, px, ok, nodata):
    lines = []
    for (p, q), (kp, kq) in (((px[0], px[1]), (ok[0], ok[1])), ((px[2], px[3]), (ok[2], ok[3]))):
        line = np.zeros(p.shape)
        line = np.where(kp, line + p.astype(np.float64), line)
        line = np.where(kq, line + q.astype(np.float64), line)
        lines.append(line)
    total = 0.0 + lines[0] + lines[1]
    count = ok[0].astype(int) + ok[1] + ok[2] + ok[3]
    mean = total / np.maximum(count, 1)
    numeric = nodata is not None and not np.isnan(nodata)
    if dt.kind == "u":
        out = (mean + 0.5).astype(np.int64)
        if numeric:
            out = np.where(out == nodata, _gdal_replacement(dt, nodata), out)
    else:
        out = mean.astype(np.float32)
        if numeric:
            out = np.where(out == np.float32(nodata), _gdal_replacement(dt, nodata), out)
        if dt == np.int16:
            half = np.float32(0.5)
            r = np.where(out >= 0, out + half, out - half)
            r = np.where(r > 32767, np.float32(32767), np.where(r < -32768, np.float32(-32768), r))
            out = r.astype(np.int64)
    if nodata is not None:
        out = np.where(count == 0, dt.type(nodata), out)
    return out.astype(dt)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


@pytest.mark.parametrize("dtype, nodata", [
    ("uint8", None), ("uint8", 0), ("uint8", 255), ("uint8", 2), ("uint16", None), ("uint16", 0),
    ("uint16", 65535), ("int16", None), ("int16", -10000), ("int16", -32768), ("int16", 32767),
    ("float32", float("nan")), ("float32", -9999.0), ("float32", 0.0),
    ("float32", float(np.finfo(np.float32).max))])
def test_2x2_levels_bit_for_bit_a_plain_reference(dtype, nodata):
    """The 2 x 2 levels (both sides even: a 1200 x 1040 band, two levels) bit for bit the
    plain reference above, on random data holding what could go wrong: the type's extreme
    values (int16 +-32767/-32768, means that round past the limits), no data in a quarter of
    the pixels and whole cells of it, neighbours of the no-data value whose means equal it,
    for float32 -0.0 and +0.0, valid NaN (with a numeric no-data value), +inf, the largest
    float32, subnormals and magnitudes from 1e-30 to 1e30 (sums that round)."""
    rng = np.random.default_rng(18)
    dt = np.dtype(dtype)
    shape = (1, 1200, 1040)

    def put(a, frac, value):
        a[rng.random(a.shape) < frac] = value

    if dt.kind in "iu":
        info = np.iinfo(dt)
        arr = rng.integers(info.min, info.max + 1, shape).astype(dt)
        for v in (info.max, info.max - 1, info.min, info.min + 1):
            put(arr, 0.08, v)
        if nodata is not None:
            put(arr, 0.1, nodata - 1 if nodata > info.min else nodata + 2)
            put(arr, 0.1, nodata + 1 if nodata < info.max else nodata - 2)
    else:
        arr = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 31, shape)).astype(dt)
        for v, frac in ((-0.0, 0.05), (0.0, 0.05), (1.0, 0.05), (np.float32(1e-45), 0.02),
                        (np.finfo(dt).max, 0.01), (-np.finfo(dt).max, 0.01), (np.inf, 0.005)):
            put(arr, frac, v)
        if not np.isnan(nodata):
            put(arr, 0.01, np.nan)
            put(arr, 0.1, np.float32(nodata) - 1)
            put(arr, 0.1, np.float32(nodata) + 1)
    if nodata is not None:
        put(arr, 0.25, nodata)
        arr[0, :64, :90] = nodata
    mine = build_overviews(arr, "average", nodata)
    assert [m.shape for m in mine] == [(1, 600, 520), (1, 300, 260)]
    ref = arr[0]
    for k, level in enumerate(mine):
        ref = _plain_2x2(ref, nodata)
        assert level.dtype == dt
        same = _bits(level[0]) == _bits(ref)
        assert same.all(), f"level {k}: {np.count_nonzero(~same)} pixels differ"
    if nodata is not None and not np.isnan(nodata) and nodata != np.finfo(np.float32).max:
        # the replacement value occurs (no mean equals the largest float32)
        assert (mine[0] == _gdal_replacement(dt, nodata)).sum() > 100
    if dt.kind == "f":  # -0.0 stays in the cells of no other valid pixel: only +0.0 means
        assert (np.signbit(mine[0]) & (mine[0] == 0)).sum() == 0
        assert (mine[0] == 0).sum() > 0


def test_2x2_levels_with_both_infinities():
    """float32 with a numeric no-data value and pixels of +inf and -inf: inf - inf is a NaN
    (negative on x86), and a cell of the next level with valid NaN of both signs gets either
    sign (IEEE 754 leaves open which NaN a sum of two propagates, the compiler's operand
    order decides it): every other pixel bit for bit the plain reference, NaN where it is."""
    rng = np.random.default_rng(3)
    arr = (rng.standard_normal((1, 1200, 1040)) * 1e3).astype(np.float32)
    for v in (np.inf, -np.inf, np.nan, -9999.0):
        arr[rng.random(arr.shape) < 0.15] = v
    mine = build_overviews(arr, "average", -9999.0)
    ref = arr[0]
    for level in mine:
        ref = _plain_2x2(ref, -9999.0)
        nan = np.isnan(ref)
        assert (np.isnan(level[0]) == nan).all()
        assert (_bits(level[0])[~nan] == _bits(ref)[~nan]).all()
    assert (np.isnan(mine[0]) & np.signbit(mine[0])).sum() > 100  # -NaN occurs
