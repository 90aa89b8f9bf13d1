"""Input rasters kept open across a job's blocks (agriseries.io.opened)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from agriseries.core.grid import tile_geobox
from agriseries.io.cog import write_cog
from agriseries.io.opened import held_open, open_raster
from agriseries.io.timeseries import read_timeseries

DATA = Path(__file__).parent / "data" / "worldcereal"


def _open_fds(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture
def real_band(tmp_path):
    """A real WorldCereal 10 m red band (digital numbers), tiled to 1024 x 1024, as a COG."""
    ts = read_timeseries(next(DATA.glob("S2_L2A_10m_*.nc")))
    chip = ts["B04"].isel(time=3).values
    dn = np.rint(np.nan_to_num(chip, nan=-1e-4) * 1e4).astype(np.int16)
    arr = np.tile(dn, (1024 // dn.shape[0] + 1, 1024 // dn.shape[1] + 1))[:1024, :1024]
    full = tile_geobox("T31UDS", 10)
    gb = GeoBox((1024, 1024), full.affine, full.crs)
    path = tmp_path / "B04.tif"
    write_cog(path, arr, gb, nodata=-10000)
    return path, arr


def _read(path):
    with open_raster(str(path)) as src:
        return src, src.read(1)


def test_handle_kept_per_thread_inside_a_job_and_closed_after(real_band):
    path, arr = real_band
    outside, data = _read(path)
    assert outside.closed and np.array_equal(data, arr) and _open_fds(path) == 0
    with held_open():
        a, da_ = _read(path)
        b, db = _read(path)
        assert a is b and not a.closed  # the same handle for the thread's next block
        assert np.array_equal(da_, arr) and np.array_equal(db, arr)
        other = {}
        t = threading.Thread(target=lambda: other.update(ds=_read(path)[0]))
        t.start()
        t.join()
        assert other["ds"] is not a  # one handle per thread
        assert _open_fds(path) == 2
    assert a.closed and other["ds"].closed and _open_fds(path) == 0


def test_replaced_file_is_opened_again(real_band, tmp_path):
    path, arr = real_band
    with held_open():
        first, d1 = _read(path)
        # the store's way: a new file renamed over the old one
        tmp = tmp_path / "new.tif"
        full = tile_geobox("T31UDS", 10)
        write_cog(tmp, arr[::-1].copy(), GeoBox((1024, 1024), full.affine, full.crs),
                  nodata=-10000)
        os.replace(tmp, path)
        second, d2 = _read(path)
        assert second is not first
        assert np.array_equal(d1, arr) and np.array_equal(d2, arr[::-1])
    assert first.closed and second.closed


def test_missing_file_is_the_usual_error(tmp_path):
    import rasterio.errors

    with held_open(), pytest.raises(rasterio.errors.RasterioIOError):
        _read(tmp_path / "missing.tif")


def test_gdal_cache_capped_while_held_and_set_back():
    from rasterio.env import get_gdal_config, set_gdal_config

    from agriseries.io.opened import HELD_CACHE

    before = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", 4 * HELD_CACHE)
    try:
        with held_open():
            with held_open():
                assert get_gdal_config("GDAL_CACHEMAX") == HELD_CACHE
            assert get_gdal_config("GDAL_CACHEMAX") == HELD_CACHE
        assert get_gdal_config("GDAL_CACHEMAX") == 4 * HELD_CACHE
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_handles_per_thread_follow_the_open_file_limit():
    import resource

    from agriseries.io.opened import PER_THREAD, per_thread

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert per_thread() == 32  # an eighth of the limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        assert per_thread() == 16
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= 8 * PER_THREAD:
        assert per_thread() == PER_THREAD


def test_least_recently_used_handle_closed_past_the_cap(real_band, tmp_path, monkeypatch):
    import shutil

    from agriseries.io import opened

    path, arr = real_band
    copies = [path]
    for k in range(2):
        copies.append(tmp_path / f"copy{k}.tif")
        shutil.copy(path, copies[-1])
    monkeypatch.setattr(opened, "PER_THREAD", 2)
    with held_open():
        first = _read(copies[0])[0]
        second = _read(copies[1])[0]
        assert _read(copies[0])[0] is first  # used again: now the most recent
        third, data = _read(copies[2])
        assert second.closed and not first.closed and not third.closed
        assert np.array_equal(data, arr)
    assert first.closed and third.closed


def test_held_open_as_a_decorator_holds_for_the_call(real_band):
    path, arr = real_band

    @held_open()
    def job():
        a = _read(path)[0]
        assert _read(path)[0] is a and _open_fds(path) == 1
        return a

    handle = job()
    assert handle.closed and _open_fds(path) == 0
    assert job().closed  # the decorator holds again for each call
