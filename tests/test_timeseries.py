"""Tests of the time-series NetCDF / Zarr reader on real WorldCereal patches.

The files are the 2018-03-01 .. 2018-10-31 subset of patch 00002806639B424A (Flanders,
tile 31UDS) made by tests/data/worldcereal/make_small.py; see SOURCE.txt there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from agriseries.core.errors import CorruptProductError, InputProductError, UnknownProductError
from agriseries.core.masks import MaskBit, from_pixel_qa_c1
from agriseries.io.timeseries import is_timeseries, read_timeseries, tile_of_grid

# odc-geo 0.5.3 with affine 3 / shapely 2.1 warns inside GeoBox slicing and Geometry.to_crs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning"),
]

DATA = Path(__file__).parent / "data" / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
S2_10 = DATA / f"S2_L2A_10m_{TAIL}"
S2_20 = DATA / f"S2_L2A_20m_{TAIL}"
L8 = DATA / f"L8_SR_10m_{TAIL}"
LABELS = DATA / f"OUTPUT_POLY-110_10m_{TAIL}"


def raw(path: Path) -> xr.Dataset:
    """The file's integers, undecoded (the reference the reader is compared with)."""
    with xr.open_dataset(path, decode_cf=False) as ds:
        return ds.load()


def test_detection():
    assert is_timeseries(S2_10) and is_timeseries(L8)
    assert not is_timeseries(DATA / "SOURCE.txt") and not is_timeseries(DATA / "missing.nc")


def test_s2_10m_dates_grid_and_reflectance():
    ds = read_timeseries(S2_10)
    assert isinstance(ds["B02"].data, da.Array)  # lazy
    assert tuple(ds["B02"].dims) == ("time", "y", "x") and ds["B02"].dtype == np.float32
    assert list(ds.data_vars) == ["B02", "B03", "B04", "B08"]
    assert ds.sizes["time"] == 71
    assert str(ds.time.values[0]) == "2018-03-05T11:04:34.000000000"
    assert str(ds.time.values[-1]) == "2018-10-31T11:04:35.000000000"
    gb = ds.odc.geobox
    assert gb.crs.epsg == 32631 and gb.shape == (64, 64)
    assert tuple(gb.affine)[:6] == (10.0, 0.0, 501360.0, 0.0, -10.0, 5629680.0)
    r = raw(S2_10)
    np.testing.assert_array_equal(ds.x.values, r.x.values)
    np.testing.assert_array_equal(ds.y.values, r.y.values)
    # reflectance = DN * 1e-4 (the file's scale_factor), every pixel of every date
    b08 = ds["B08"].values
    np.testing.assert_array_equal(b08, r["B08"].values.astype(np.float32) * np.float32(1e-4))
    assert int(r["B08"].values[10, 5, 7]) == 2910
    assert float(b08[10, 5, 7]) == pytest.approx(0.2910)
    assert "mask" not in ds  # the 10 m file has no SCL
    assert ds.sensor.values.tolist() == ["S2A"] * 71 and ds.attrs["sensor_assumed"] is True
    assert ds.producer.values[0] == "SEN2COR" and ds.level.values[0] == "L2A"
    assert ds.tile.values[0] == "T31UDS"
    assert ds.source_id.values[0] == f"S2_L2A_10m_{TAIL[:-3]}_20180305T110434"


def test_s2_20m_scl_mask_and_angles():
    ds = read_timeseries(S2_20).compute()
    r = raw(S2_20)
    gb = ds.odc.geobox
    assert gb.shape == (32, 32) and gb.resolution.x == 20 and gb.crs.epsg == 32631
    assert list(ds.data_vars)[:6] == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    assert int(r["B05"].values[10, 5, 7]) == 1491
    assert float(ds["B05"].values[10, 5, 7]) == pytest.approx(0.1491)
    np.testing.assert_array_equal(ds["B12"].values,
                                  r["B12"].values.astype(np.float32) * np.float32(1e-4))
    # SCL class counts of the real file vs decoded mask bits.
    scl = r["SCL"].values
    counts = {int(k): int(v) for k, v in zip(*np.unique(scl, return_counts=True))}
    assert counts == {2: 188, 3: 232, 4: 21660, 5: 12822, 7: 3812, 8: 5683, 9: 21777,
                      10: 5518, 11: 1012}
    m = ds["mask"].values
    assert m.dtype == np.uint8 and m.shape == (71, 32, 32)

    def n(bit):
        return int(((m & bit) != 0).sum())

    assert n(MaskBit.CLOUD) == counts[8] + counts[9] == 27460
    assert n(MaskBit.CLOUD_SHADOW) == counts[3]
    assert n(MaskBit.CIRRUS) == counts[10]
    assert n(MaskBit.SNOW) == counts[11]
    assert n(MaskBit.TOPO_SHADOW) == counts[2]
    assert n(MaskBit.WATER) == 0 and n(MaskBit.NODATA) == 0 and n(MaskBit.SATURATED) == 0
    assert int((m == 0).sum()) == counts[4] + counts[5] + counts[7]
    np.testing.assert_array_equal(m == 0, np.isin(scl, [4, 5, 7]))
    # Per-date cloud fraction: within [0, 1]; some dates fully clear, some fully cloudy.
    frac = ((m & (MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS)) != 0).mean(axis=(1, 2))
    assert ((frac >= 0) & (frac <= 1)).all()
    assert int((frac == 0).sum()) == 6 and int((frac == 1).sum()) == 22
    # Angles: per-date values broadcast over the patch.
    assert float(ds["sun_zenith"].values[0, 0, 0]) == pytest.approx(
        float(r["sunZenithAngles"].values[0]))
    np.testing.assert_allclose(ds["view_azimuth"].values[:, 3, 4], r["viewAzimuthMean"].values)
    assert ds["sun_zenith"].attrs["units"] == "degree"


def test_landsat_file_gets_oli_band_names():
    ds = read_timeseries(L8)
    assert list(ds.data_vars) == ["B2", "B3", "B4", "B5", "B6", "B7", "B10", "B11", "mask"]
    assert ds.sensor.values.tolist() == ["L8"] * 15 and ds.attrs["sensor_assumed"] is False
    assert ds.producer.values[0] == "LASRC"
    assert str(ds.time.values[0]) == "2018-03-11T10:40:02.000000000"
    assert str(ds.time.values[-1]) == "2018-10-21T10:40:18.000000000"
    r = raw(L8)
    c = ds.compute()
    np.testing.assert_array_equal(c["B5"].values, r["B05"].values.astype(np.float32)
                                  * np.float32(1e-4))
    # B05 is OLI's NIR (median 0.33 like S2 B08), not S2's red edge B05.
    assert float(np.nanmedian(c["B5"].values)) > 2 * float(np.nanmedian(c["B4"].values))
    assert c["B10"].attrs["units"] == "K"
    assert int(r["B10"].values[3, 10, 10]) == 2989
    assert float(c["B10"].values[3, 10, 10]) == pytest.approx(298.9, abs=1e-4)


def test_pixel_qa_c1_decoding():
    ds = read_timeseries(L8).compute()
    qa = raw(L8)["pixel_qa"].values.astype(np.int64)
    counts = {int(k): int(v) for k, v in zip(*np.unique(qa, return_counts=True))}
    assert counts == {0: 675, 322: 36097, 328: 3878, 352: 1426, 386: 302, 392: 90, 416: 1062,
                      480: 13814, 834: 1364, 864: 471, 898: 1403, 928: 804, 992: 54}

    def b(n):
        return (qa >> n) & 1

    cloud = (b(5) == 1) | (((qa >> 6) & 3) == 3)
    expected = (cloud * 1 | b(3) * 2 | b(4) * 4 | b(2) * 8 | (((qa >> 8) & 3) == 3) * 16
                | ((b(0) == 1) | (qa == 0)) * 64 | b(10) * 128).astype(np.uint8)
    np.testing.assert_array_equal(ds["mask"].values, expected)
    # value by value: 322 clear; 328 shadow; 480 cloud (high confidence); 834 clear + high cirrus
    assert from_pixel_qa_c1(np.array([322, 328, 480, 834, 1, 1024], np.uint16)).tolist() == [
        0, MaskBit.CLOUD_SHADOW, MaskBit.CLOUD, MaskBit.CIRRUS, MaskBit.NODATA,
        MaskBit.TOPO_SHADOW]
    assert int(((ds["mask"].values & MaskBit.NODATA) != 0).sum()) == 675


def test_tile_from_grid_matches_the_file_attribute(tmp_path):
    r = raw(S2_20)
    del r.attrs["tile"]
    for v in r.variables.values():
        v.attrs.pop("tile", None)
    p = tmp_path / S2_20.name
    r.to_netcdf(p)
    ds = read_timeseries(p)
    assert ds.tile.values[0] == "T31UDS"  # T31UES also contains the patch, 1.4 km inside
    assert tile_of_grid(read_timeseries(S2_10).odc.geobox) == "T31UDS"


def test_sensor_argument():
    ds = read_timeseries(S2_10, sensor="S2B")
    assert ds.sensor.values.tolist() == ["S2B"] * 71 and ds.attrs["sensor_assumed"] is False


def test_zarr_round_trip(tmp_path):
    r = raw(S2_20)
    for v in r.variables.values():
        v.encoding = {}
    z3 = tmp_path / "v3" / S2_20.with_suffix(".zarr").name
    z2 = tmp_path / "v2" / S2_20.with_suffix(".zarr").name
    r.to_zarr(z3, mode="w", consolidated=False)
    r.to_zarr(z2, mode="w", zarr_format=2)
    a = read_timeseries(S2_20).compute()
    for z in (z3, z2):
        assert is_timeseries(z)
        b = read_timeseries(z)
        assert isinstance(b["B05"].data, da.Array)
        b = b.compute()
        assert b.odc.geobox == a.odc.geobox
        xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))


def test_flipped_y_is_made_north_up(tmp_path):
    r = raw(S2_20).isel(y=slice(None, None, -1))
    p = tmp_path / S2_20.name
    r.to_netcdf(p)
    a, b = read_timeseries(S2_20).compute(), read_timeseries(p).compute()
    assert b.odc.geobox == a.odc.geobox
    np.testing.assert_array_equal(a["B05"].values, b["B05"].values)


@pytest.mark.parametrize("tname", ["t", "time"])
def test_time_dimension_names_and_fill_value(tmp_path, tname):
    r = raw(S2_20).rename({"timestamp": tname})
    r["B05"].values[0, 0, 0] = 0  # the variable's _FillValue
    p = tmp_path / S2_20.name
    r.to_netcdf(p)
    ds = read_timeseries(p).compute()
    assert ds.sizes["time"] == 71 and "t" not in ds.dims
    assert np.isnan(ds["B05"].values[0, 0, 0]) and not np.isnan(ds["B06"].values[0, 0, 0])
    assert ds["mask"].values[0, 0, 0] & MaskBit.NODATA  # no data in the first band
    assert not ds["mask"].values[0, 0, 1] & MaskBit.NODATA


# --------------------------------------------------------------------------------------
# bad input


def test_labels_file_has_no_time_dimension():
    with pytest.raises(InputProductError,
                       match=r"OUTPUT_POLY.*: no time dimension: expected one of t, time, "
                             r"timestamp \(the file has dimensions y, x\)"):
        read_timeseries(LABELS)


def test_netcdf_without_crs(tmp_path):
    r = raw(S2_10).drop_vars("spatial_ref")
    for key in ("epsg", "crs", "grid_mapping"):
        r.attrs.pop(key, None)
    for v in r.variables.values():
        v.attrs.pop("grid_mapping", None)
        v.attrs.pop("coordinates", None)
    p = tmp_path / "nocrs.nc"
    r.to_netcdf(p)
    with pytest.raises(InputProductError, match=r"nocrs\.nc: no CRS: expected a CRS variable"):
        read_timeseries(p)


def test_truncated_netcdf(tmp_path):
    p = tmp_path / S2_20.name
    data = S2_20.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptProductError, match=r"cannot open as a NetCDF file"):
        read_timeseries(p)


def test_not_a_timeseries_path(tmp_path):
    with pytest.raises(UnknownProductError, match="no such file"):
        read_timeseries(tmp_path / "x.nc")
    q = tmp_path / "x.tif"
    q.write_bytes(b"II*\x00")
    with pytest.raises(UnknownProductError, match="expected a .nc"):
        read_timeseries(q)
    z = tmp_path / "empty.zarr"
    z.mkdir()
    with pytest.raises(CorruptProductError, match="Zarr store"):
        read_timeseries(z)


def test_sensor_unknown_without_name_prefix(tmp_path):
    # Renamed, the 10 m file says nothing of its sensor (B02, B03, B04, B08 could be a
    # zero-padded Landsat file too): the caller must say.
    p = tmp_path / "patch.nc"
    shutil.copyfile(S2_10, p)
    with pytest.raises(InputProductError, match="patch.nc: cannot tell the sensor"):
        read_timeseries(p)
    ds = read_timeseries(p, sensor="S2B")
    assert ds.source_id.values[-1] == "patch_20181031T110435"
    np.testing.assert_array_equal(ds["B04"].values, read_timeseries(S2_10)["B04"].values)
