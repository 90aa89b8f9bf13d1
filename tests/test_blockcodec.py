"""The compiled block passes (agriseries.io.blockcodec) give numpy's values bit for bit.

The read (DN -> float32 reflectance, NaN for no data) and the store's encoding (float ->
int16 x 10000, -10000 for no data) used to be numpy expressions of several passes; they are
one compiled pass each now, and every product must stay byte-identical. Checked here on
every uint16 DN, on float32 values of every kind (random bit patterns: NaN, infinities,
subnormals, halves of a step) and on real products read both ways (aligned windows, a
window past the file's edge, a warped read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import agriseries.io.product as product_mod
from agriseries.io.blockcodec import decode_block, encode_block
from agriseries.io.product import aligned_with, load, target_grid
from agriseries.io.store import REFLECTANCE_NODATA, encode_scaled, encode_scaled_numpy

DATA = Path(__file__).parent / "data"
SAFE = DATA / "safe" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
LANDSAT = DATA / "landsat" / "LC08_L2SP_008059_20191201_20200825_02_T1"


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint16)


def _numpy_decode(data, nodata, scale, offset, valid):
    """The numpy expression of agriseries.io.product._read_block before the compiled pass."""
    if nodata is not None:
        valid = valid & (~np.isnan(data) if np.isnan(nodata) else data != nodata)
    out = data.astype(np.float32) * np.float32(scale) + np.float32(offset)
    out[~valid] = np.nan
    return out.astype(np.float32)


@pytest.mark.parametrize("scale, offset", [(1e-4, 0.0), (1e-4, -0.1), (2.75e-05, -0.2),
                                           (0.00341802, 149.0)])
def test_decode_every_uint16_dn_as_numpy(scale, offset):
    dn = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    inside = (3, 250, 0, 200)
    valid = np.zeros(dn.shape, bool)
    valid[3:250, 0:200] = True
    for nodata in (0, 65535, None):
        got = decode_block(dn, nodata, scale, offset, inside=inside)
        want = _numpy_decode(dn, nodata, scale, offset, valid)
        assert np.array_equal(_bits(got), _bits(want)), (scale, offset, nodata)
    assert np.isnan(got[:3]).all() and np.isnan(got[:, 200:]).all()


@pytest.mark.parametrize("dtype, nodata", [("int16", -10000), ("uint8", 0), ("float32", np.nan),
                                           ("float32", -9999.0), ("int32", 0)])
def test_decode_other_types_and_a_validity_array_as_numpy(dtype, nodata):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        data = rng.integers(max(info.min, -2**20), min(info.max, 2**20), (300, 257)).astype(dtype)
    else:
        data = rng.normal(0, 1e4, (300, 257)).astype(dtype)
        data[::7, ::5] = np.nan
    data[::11, ::3] = nodata
    valid = rng.random(data.shape) > 0.1
    got = decode_block(data, nodata, 1e-4, -0.1, valid=valid)
    assert np.array_equal(_bits(got), _bits(_numpy_decode(data, nodata, 1e-4, -0.1, valid)))


def test_decode_leaves_what_it_cannot_match_to_numpy():
    data = np.array([[0, -9999, -10000, 32767]], np.int16)
    ones = np.ones(data.shape, bool)
    for nodata in (-9999.5, -10000.0, 32767):  # compared in float64 / int16, as numpy does
        want = _numpy_decode(data, nodata, 1e-4, 0.0, ones)
        assert np.array_equal(_bits(decode_block(data, nodata, 1e-4, 0.0)), _bits(want))
    assert decode_block(data, 70000, 1e-4, 0.0) is None  # out of int16's range
    assert decode_block(data.astype(np.complex64), 0, 1e-4, 0.0) is None


def _float32_values() -> np.ndarray:
    rng = np.random.default_rng(7)
    random_bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    halves = (np.arange(-40000, 40000, dtype=np.float64) + 0.5) / 10000  # ties of the rounding
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.2767, 3.27675, 3.2768, -0.9999,
                      -0.99995, -1.0, -1.00005, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float64)
    dn = (np.arange(65536, dtype=np.uint16).astype(np.float32) * np.float32(1e-4)
          + np.float32(-0.1))
    return np.concatenate([random_bits.view(np.float32), halves.astype(np.float32),
                           edges.astype(np.float32), dn])


@pytest.mark.parametrize("scale, offset, clip", [(1e-4, 0.0, True), (0.01, 150.0, False),
                                                 (1e-3, 0.0, True), (1e-4, 0.0, False)])
def test_encode_float32_values_of_every_kind_as_numpy(scale, offset, clip):
    x = _float32_values()
    with np.errstate(all="ignore"):
        want = encode_scaled_numpy(x, scale, offset, clip=clip)
    got = encode_block(x, scale, offset, clip, REFLECTANCE_NODATA)
    assert got.dtype == np.int16 and np.array_equal(got, want)


def test_encode_float64_and_numpy_scalars_as_numpy():
    x32 = _float32_values()
    with np.errstate(all="ignore"):
        for x, scale in ((x32.astype(np.float64), 1e-4), (x32, np.float64(1e-4)),
                         (x32, np.float32(1e-4))):
            want = encode_scaled_numpy(x, scale, 0.0)
            assert np.array_equal(encode_scaled(x, scale, 0.0), want), (x.dtype, type(scale))


def test_encode_of_a_dask_array_is_one_task_per_block_with_numpy_values():
    import dask.array as da

    x = da.from_array(_float32_values()[:1_000_000].reshape(1000, 1000), chunks=256)
    enc = encode_scaled(x, 1e-4)
    with np.errstate(all="ignore"):
        want = encode_scaled_numpy(x, 1e-4).compute()
    assert enc.dtype == np.int16 and enc.chunks == x.chunks
    assert len(enc.dask.layers[enc.name]) == x.npartitions
    assert np.array_equal(enc.compute(), want)


def _numpy_path(monkeypatch):
    monkeypatch.setattr(product_mod, "decode_block", lambda *a, **k: None)


def _load_both(monkeypatch, product, **kw):
    fast = load(product, angles=None, with_mask=False, chunks=700, **kw).compute()
    with monkeypatch.context() as m:
        _numpy_path(m)
        slow = load(product, angles=None, with_mask=False, chunks=700, **kw).compute()
    return fast, slow


def _same(fast, slow):
    assert list(fast.data_vars) == list(slow.data_vars)
    for name in fast.data_vars:
        a, b = fast[name].values, slow[name].values
        assert a.dtype == b.dtype == np.float32, name
        assert np.array_equal(_bits(a), _bits(b)), name


def test_real_sentinel2_bands_read_as_numpy(monkeypatch):
    from agriseries.io.files import file_geobox
    from agriseries.io.safe import read_safe

    product = read_safe(SAFE, bands=["B02", "B04", "B8A", "B11"])
    chip = file_geobox(product.bands["B8A"].path)  # the test files are chips of the tile
    fast, slow = _load_both(monkeypatch, product, geobox=chip)
    _same(fast, slow)
    assert np.isfinite(fast["B04"].values).mean() > 0.9
    # a grid reaching past the files' edges: boundless windows, NaN outside
    fast, slow = _load_both(monkeypatch, product, geobox=chip.pad(150))
    _same(fast, slow)
    assert np.isnan(fast["B04"].values[0, :150]).all()


def test_real_landsat_bands_warped_onto_a_tile_read_as_numpy(monkeypatch):
    from agriseries.core.grid import tiles_for_geometry
    from agriseries.io.landsat import read_landsat

    product = read_landsat(LANDSAT)
    tile = sorted(t.name for t in tiles_for_geometry(product.footprint))[0]
    gb = target_grid(product, 30, tile=tile)
    assert not aligned_with(product.bands["B4"], gb)  # GDAL warps: the validity array path
    fast, slow = _load_both(monkeypatch, product, geobox=gb, bands=["B4", "B5"])
    _same(fast, slow)
    assert np.isfinite(fast["B4"].values).any()


def test_encode_into_a_strided_view_writes_numpy_values_in_place_and_nothing_else():
    """``out=``: the block's place in a whole file's pixels (rows strided, 2-D or 3-D),
    written with the values of the numpy encoding; the pixels around it untouched."""
    x = _float32_values()[:600_000].reshape(2, 500, 600)
    with np.errstate(all="ignore"):
        want = encode_scaled_numpy(x, 1e-4)
    with np.errstate(all="ignore"):  # signalling NaN bits among the values
        blocks = (x[0], x[1].astype(np.float64), x, x[:, ::2, 1::3])
    for block in blocks:
        pixels = np.full((3, 700, 900), 7, np.int16)
        view = pixels[1:1 + block.shape[0], 50:50 + block.shape[-2], 100:100 + block.shape[-1]]
        view = view[0] if block.ndim == 2 else view
        got = encode_block(block, 1e-4, 0.0, True, REFLECTANCE_NODATA, out=view)
        assert got is view and np.array_equal(view, encode_block(block, 1e-4, 0.0, True,
                                                                  REFLECTANCE_NODATA))
        with np.errstate(all="ignore"):
            assert np.array_equal(view, encode_scaled_numpy(block, 1e-4))
        view[...] = 7
        assert (pixels == 7).all()  # nothing written outside the block's place
    assert np.array_equal(encode_block(x, 1e-4, 0.0, True, REFLECTANCE_NODATA), want)
    with pytest.raises(ValueError, match="int16 array of shape"):
        encode_block(x[0], 1e-4, 0.0, True, REFLECTANCE_NODATA, out=np.empty((500, 60), np.int16))
