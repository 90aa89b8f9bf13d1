"""Atomic COG writing, STAC items and their validation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio

from agriseries.core.bands import bands_of
from agriseries.core.errors import StoreError
from agriseries.core.grid import tile_geobox
from agriseries.core.ids import Level, ProductId
from agriseries.core.stac import AssetSpec, build_item, parameter_hash, validate_item
from agriseries.io.cog import validate_cog, write_cog


@pytest.fixture
def small_box():
    return tile_geobox("T31UDS", 20)[100:1400, 200:1100]


def test_numpy_and_dask_cogs_are_valid_and_equal(tmp_path, small_box):
    rng = np.random.default_rng(0)
    arr = rng.integers(-100, 5000, small_box.shape).astype(np.int16)
    a = write_cog(tmp_path / "a.tif", arr, small_box, nodata=-10000)
    b = write_cog(tmp_path / "b.tif", da.from_array(arr, chunks=300), small_box, nodata=-10000)
    for p in (a, b):
        ok, errors, _ = validate_cog(p)
        assert ok, errors
        with rasterio.open(p) as src:
            assert np.array_equal(src.read(1), arr)
            assert src.crs.to_epsg() == 32631 and src.transform == small_box.affine
            assert src.overviews(1), "a COG of 1300 px must have overviews"
            assert src.profile["blockxsize"] == 512
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_failed_write_leaves_nothing(tmp_path, small_box):
    def boom(block):
        raise RuntimeError("disk on fire")

    arr = da.zeros(tuple(small_box.shape), dtype=np.int16, chunks=400).map_blocks(boom, dtype=np.int16)
    with pytest.raises(StoreError, match="writing the COG failed"):
        write_cog(tmp_path / "c.tif", arr, small_box)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="does not match its grid"):
        write_cog(tmp_path / "d.tif", np.zeros((3, 3), np.uint8), small_box)


def test_item_has_extensions_and_provenance():
    gb = tile_geobox("T31UDS", 10)[:100, :100]
    pid = ProductId(Level.L2A, "S2B", "T31UDS", dt.datetime(2018, 7, 3, 10, 50, 31,
                                                             tzinfo=dt.timezone.utc), "SEN2COR")
    b04 = bands_of("S2B")["B04"]
    item = build_item(
        pid, geometry=gb.extent, sensors=["S2B"], inputs=["S2B_MSIL2A_X"],
        parameters={"a": 1}, lineage="test", datetime=pid.start, cloud_cover=12.5,
        sun_angles=(40.0, 160.0), view_angles=(5.0, 100.0),
        assets=[AssetSpec("B04", "x_B04.tif", gb, "int16", ("data", "reflectance"), "red",
                          nodata=-10000, scale=1e-4, offset=0.0, band=b04),
                AssetSpec("aot", "x_aot.tif", gb, "float32", ("data",), "aot",
                          nodata=float("nan"))])
    validate_item(item)
    d = json.loads(json.dumps(item.to_dict(), allow_nan=False))
    p = d["properties"]
    assert p["proj:code"] == "EPSG:32631" and p["platform"] == "sentinel-2b"
    assert p["view:sun_elevation"] == 50.0 and p["eo:cloud_cover"] == 12.5
    assert p["agriseries:parameter_hash"] == parameter_hash({"a": 1})
    assert d["assets"]["B04"]["raster:bands"][0]["scale"] == 1e-4
    assert d["assets"]["B04"]["eo:bands"][0]["common_name"] == "red"
    assert d["assets"]["aot"]["raster:bands"][0]["nodata"] == "nan"
    assert d["assets"]["B04"]["proj:shape"] == [100, 100]
    # a broken item is refused
    d["assets"]["B04"].pop("proj:shape")
    with pytest.raises(ValueError, match="proj:shape"):
        validate_item(d)
    d2 = item.to_dict()
    d2["geometry"] = {"type": "Polygon", "coordinates": "nope"}
    with pytest.raises(ValueError, match="not a valid STAC item"):
        validate_item(d2)


def test_parameter_hash_is_order_independent():
    assert parameter_hash({"a": 1, "b": [1, 2]}) == parameter_hash({"b": [1, 2], "a": 1})
    assert parameter_hash({"a": 1}) != parameter_hash({"a": 2})


def test_cog_carries_scale_units_colours_and_is_world_readable(tmp_path, small_box):
    """GDAL sees what the item says (scale, offset, unit, colour table, class names), and
    the file gets the usual 0666 & ~umask permissions, not mkstemp's 0600."""
    import os
    import xml.etree.ElementTree as ET

    from agriseries.io.cog import CogJob, write_cogs

    old = os.umask(0o022)
    try:
        cls = (np.arange(small_box.shape[0] * small_box.shape[1]).reshape(small_box.shape) % 3)
        refl = np.full(small_box.shape, 962, np.int16)
        write_cogs([CogJob(tmp_path / "r.tif", refl, small_box, -10000, scale=1e-4, offset=0.0,
                           units="1"),
                    CogJob(tmp_path / "c.tif", cls.astype(np.uint8), small_box, 0, "nearest",
                           colormap={0: (0, 0, 0, 0), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255)},
                           categories={0: "no data", 1: "wheat", 2: "maize"})])
    finally:
        os.umask(old)
    for name in ("r.tif", "c.tif", "c.tif.aux.xml"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "c.tif.aux.xml", "r.tif"]
    with rasterio.open(tmp_path / "r.tif") as src:
        assert src.scales == (1e-4,) and src.offsets == (0.0,) and src.units == ("1",)
        assert src.nodata == -10000 and src.overviews(1)
    with rasterio.open(tmp_path / "c.tif") as src:
        assert src.colormap(1)[1] == (255, 0, 0, 255) and src.colormap(1)[2] == (0, 255, 0, 255)
    pam = ET.parse(tmp_path / "c.tif.aux.xml").getroot()
    assert [c.text for c in pam.iter("Category")] == ["no data", "wheat", "maize"]
    rows = [[f.text for f in r.iter("F")] for r in pam.iter("Row")]
    assert rows[1][:2] == ["1", "wheat"] and rows[2][2:5] == ["0", "255", "0"]
    for name in ("r.tif", "c.tif"):
        ok, errors, _ = validate_cog(tmp_path / name)
        assert ok, errors


def _three_jobs(folder, box, data):
    """A reflectance band (dask), a class layer counting its blocks (dask) and a 3-band
    series (numpy): the three shapes of layer the store writes."""
    from agriseries.io.cog import CogJob

    refl, cls, series = data
    seen = []
    jobs = [CogJob(folder / "r.tif", da.from_array(refl, chunks=(300, 700)), box, -10000,
                   scale=1e-4, offset=0.0, description="B04"),
            CogJob(folder / "c.tif", da.from_array(cls, chunks=400), box, None, "nearest",
                   on_block=lambda b: seen.append(int(b.astype(np.int64).sum())),
                   colormap={0: (0, 0, 0, 0), 1: (255, 0, 0, 255)},
                   categories={0: "none", 1: "wheat", 2: "maize"}),
            CogJob(folder / "s.tif", series, box, float("nan"), description=["a", "b", "c"],
                   units="degree")]
    return jobs, seen


@pytest.mark.parametrize("where", ["memory", "raw files",
                                   pytest.param("distributed", marks=pytest.mark.allow_hosts(
                                       ["127.0.0.1"]))])
def test_one_compression_writer_same_files_every_way(tmp_path, small_box, where):
    """The uncompressed pixels gathered in memory, in raw files past the memory budget, or
    from blocks a distributed scheduler computed: the same bytes, valid COGs holding the
    values written, with their overviews, and no temporary file left."""
    import hashlib

    import dask

    from agriseries.io.cog import write_cogs

    rng = np.random.default_rng(3)
    refl = rng.integers(-100, 9000, small_box.shape).astype(np.int16)
    refl[:40] = -10000
    cls = (rng.random(small_box.shape) * 3).astype(np.uint8)
    series = rng.random((3,) + tuple(small_box.shape), dtype=np.float32)
    series[1, 5:50, 7:90] = np.nan
    ref_dir, out = tmp_path / "ref", tmp_path / "out"
    ref_dir.mkdir()
    out.mkdir()
    jobs, _ = _three_jobs(ref_dir, small_box, (refl, cls, series))
    with dask.config.set(scheduler="threads"):
        write_cogs(jobs)
    jobs, seen = _three_jobs(out, small_box, (refl, cls, series))
    if where == "memory":
        write_cogs(jobs)
    elif where == "raw files":
        write_cogs(jobs, memory_budget=0)
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                          dashboard_address=":0", host="127.0.0.1") as cluster, \
                Client(cluster) as client, dask.config.set(scheduler=client):
            write_cogs(jobs)
    assert sum(seen) == int(cls.astype(np.int64).sum())
    names = ["c.tif", "c.tif.aux.xml", "r.tif", "s.tif"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (hashlib.sha256((out / name).read_bytes()).hexdigest()
                == hashlib.sha256((ref_dir / name).read_bytes()).hexdigest()), name
    for name, values in (("r.tif", refl[None]), ("c.tif", cls[None]), ("s.tif", series)):
        ok, errors, _ = validate_cog(out / name)
        assert ok, (name, errors)
        with rasterio.open(out / name) as src:
            assert np.array_equal(src.read(), values, equal_nan=True)
            assert src.overviews(1) == [2, 4] and src.transform == small_box.affine
    with rasterio.open(out / "r.tif") as src:
        assert src.descriptions == ("B04",) and src.scales == (1e-4,) and src.nodata == -10000
        with rasterio.open(out / "r.tif", overview_level=0) as ov:  # average of 2 x 2 pixels
            block = refl[40:48, :8].astype(np.float64).reshape(4, 2, 4, 2).mean(axis=(1, 3))
            assert np.abs(ov.read(1)[20:24, :4] - block).max() <= 1
    with rasterio.open(out / "s.tif") as src:
        assert src.descriptions == ("a", "b", "c") and src.units == ("degree",) * 3


@pytest.mark.parametrize("budget", [None, 0])
def test_one_compression_writer_failure_leaves_nothing(tmp_path, small_box, budget):
    """A block failing while others are being written leaves neither a final file nor a
    temporary (the raw files of the over-budget path included)."""
    from agriseries.io.cog import CogJob, write_cogs

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (2, 1):
            raise RuntimeError("disk on fire")
        return block

    import functools

    from agriseries.io.blockcodec import encode_block
    from agriseries.io.cog import BlockEncoding

    good = da.ones(tuple(small_box.shape), dtype=np.int16, chunks=400)
    bad = good.map_blocks(boom, dtype=np.int16)
    floats = da.ones(tuple(small_box.shape), dtype=np.float32, chunks=400)
    encode = functools.partial(encode_block, scale=1e-4, offset=0.0, clip=True, nodata=-10000)
    encoded = CogJob(tmp_path / "c.tif", floats.map_blocks(encode, dtype=np.int16), small_box,
                     encoding=BlockEncoding(floats, encode))  # blocks encoded in place
    with pytest.raises(StoreError, match="disk on fire"):
        write_cogs([CogJob(tmp_path / "a.tif", good, small_box),
                    CogJob(tmp_path / "b.tif", bad, small_box), encoded], memory_budget=budget)
    assert list(tmp_path.iterdir()) == []


def _float_values(shape, seed=5) -> np.ndarray:
    """Reflectance-like float32 with NaN, infinities and values beyond the int16 range."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 2.0, shape).astype(np.float32)
    x[::9, ::4] = np.nan
    x[3, :50] = np.inf
    x[4, :50] = -np.inf
    x[5, :50] = 3.27675  # a rounding tie at the top of the range
    return x


@pytest.mark.parametrize("budget", [None, 0])
def test_blocks_encoded_into_the_pixels_give_the_files_of_the_encoded_data(tmp_path, small_box,
                                                                          budget):
    """A job whose int16 data is the block-by-block encoding of a float dask array: in
    memory, the writer encodes the float blocks straight into the file's pixels (the int16
    blocks are never made); in raw files past the budget, or with an ``on_block``
    callback, it writes the int16 blocks. Every way the same bytes as the data written
    without the encoding."""
    import functools
    import hashlib

    from agriseries.io.blockcodec import encode_block
    from agriseries.io.cog import BlockEncoding, CogJob, write_cogs
    from agriseries.io.store import encode_scaled_numpy

    x = _float_values(small_box.shape)
    floats = da.from_array(x, chunks=(300, 400))
    encode = functools.partial(encode_block, scale=1e-4, offset=0.0, clip=True, nodata=-10000)
    made = []

    def encode_counted(block):
        made.append(block.shape)
        return encode(block)

    def data(name):  # one int16 array per job: its blocks are not shared
        return floats.map_blocks(encode_counted, dtype=np.int16, name=f"{name}-{budget}",
                                 meta=np.empty((0, 0), np.int16))

    seen = []
    jobs = [CogJob(tmp_path / "enc.tif", data("enc"), small_box, -10000,
                   encoding=BlockEncoding(floats, encode)),
            CogJob(tmp_path / "cb.tif", data("cb"), small_box, -10000, on_block=seen.append,
                   encoding=BlockEncoding(floats, encode)),
            CogJob(tmp_path / "ref.tif", encode(x), small_box, -10000)]
    write_cogs(jobs, memory_budget=budget)
    # the callback's file always computes data's blocks; the other one only past the budget
    assert len(made) == floats.npartitions * (1 if budget is None else 2)
    assert len(seen) == floats.npartitions and sum(b.size for b in seen) == x.size
    assert all(b.dtype == np.int16 for b in seen)
    with np.errstate(all="ignore"):
        want = encode_scaled_numpy(x, 1e-4)
    digest = {p: hashlib.sha256((tmp_path / p).read_bytes()).hexdigest()
              for p in ("enc.tif", "cb.tif", "ref.tif")}
    assert digest["enc.tif"] == digest["ref.tif"] == digest["cb.tif"]
    with rasterio.open(tmp_path / "enc.tif") as src:
        assert np.array_equal(src.read(1), want)


def test_float_layers_stored_from_dask_blocks_are_the_numpy_encoded_files(tmp_path, small_box,
                                                                         monkeypatch):
    """Reflectance and scaled layers (clipped or not, with an offset) of float dask blocks
    -- NaN, infinities, values beyond int16 -- written with the memory budget above and
    below the data: the files of the same layers given as numpy arrays, pixel for pixel
    the numpy encoding."""
    import datetime as dt

    from agriseries.io import cog
    from agriseries.io.store import Layer, ProductStore, encode_scaled_numpy

    refl = _float_values(small_box.shape, 1)
    refl64 = _float_values(small_box.shape, 2).astype(np.float64)
    weight = np.abs(_float_values(small_box.shape, 3)) * 20
    kelvin = _float_values(small_box.shape, 4) * 200 + 290  # beyond (K - 150) x 100 too

    def layers(wrap):
        bands = bands_of("S2A")
        return [Layer("B04", wrap(refl), small_box, "reflectance", band=bands["B04"]),
                Layer("B08", wrap(refl64), small_box, "reflectance", band=bands["B08"]),
                Layer("weight", wrap(weight), small_box, "scaled", scale=1e-3),
                Layer("lst", wrap(kelvin), small_box, "scaled", unit="K", scale=0.01,
                      offset=150.0)]

    with np.errstate(all="ignore"):
        want = {"B04": encode_scaled_numpy(refl, 1e-4), "B08": encode_scaled_numpy(refl64, 1e-4),
                "weight": encode_scaled_numpy(weight, 1e-3),
                "lst": encode_scaled_numpy(kelvin, 0.01, 150.0, clip=False)}
    pid = ProductId(Level.L3A, "S2", "T31UDS", dt.datetime(2018, 6, 29, tzinfo=dt.UTC), "AGS",
                    dt.datetime(2018, 6, 29, tzinfo=dt.UTC))
    kw = {"footprint": small_box.extent, "sensors": ["S2A"], "inputs": ["x"], "parameters": {},
          "lineage": "test"}
    files = {}
    for name, wrap, budget in (("numpy", np.asarray, None),
                               ("dask", lambda a: da.from_array(a, chunks=(256, 384)), None),
                               ("dask-raw", lambda a: da.from_array(a, chunks=(256, 384)), 0)):
        store = ProductStore(tmp_path / name)
        with monkeypatch.context() as m:
            if budget is not None:
                m.setattr(cog, "MEMORY_BUDGET", budget)
            store.write_product(pid, layers(wrap), **kw)
        files[name] = {p.name: p.read_bytes() for p in store.product_dir(pid).glob("*.tif")}
        for key, values in want.items():
            with rasterio.open(store.product_dir(pid) / f"{pid}_{key}.tif") as src:
                assert src.dtypes == ("int16",) and np.array_equal(src.read(1), values), (name, key)
    assert len(files["numpy"]) == 4
    assert files["dask"] == files["numpy"] and files["dask-raw"] == files["numpy"]


# A real Sentinel-2 L2A band (T29UNU, 60 m, 256 x 256 px; tests/data/safe/SOURCE.txt).
_REAL_B07 = (Path(__file__).parent / "data" / "safe"
             / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE" / "GRANULE"
             / "L2A_T29UNU_A038058_20221005T115407" / "IMG_DATA" / "R60m"
             / "T29UNU_20221005T115411_B07_60m.jp2")


def _real_int16(box) -> np.ndarray:
    with rasterio.open(_REAL_B07) as src:
        chip = src.read(1).astype(np.int16)
    reps = (-(-box.shape[0] // chip.shape[0]), -(-box.shape[1] // chip.shape[1]))
    return np.tile(chip, reps)[:box.shape[0], :box.shape[1]]


def _tile_bytes(path) -> list[int]:
    """The compressed size of every tile of the full resolution and of each overview."""
    out = []
    with rasterio.open(path) as src:
        levels = [None] + list(range(len(src.overviews(1))))
    for level in levels:
        with rasterio.open(path, overview_level=level) as src:
            h, w = src.block_shapes[0]
            out += [src.block_size(1, i, j) for i in range(-(-src.height // h))
                    for j in range(-(-src.width // w))]
    return out


def test_deflate_level_changes_the_bytes_never_the_pixels(tmp_path, small_box):
    arr = _real_int16(small_box)
    one = write_cog(tmp_path / "one.tif", da.from_array(arr, chunks=400), small_box,
                    nodata=-10000, level=1)
    six = write_cog(tmp_path / "six.tif", arr, small_box, nodata=-10000)  # the default, 6
    with rasterio.open(one) as a, rasterio.open(six) as b:
        assert np.array_equal(a.read(1), arr) and np.array_equal(b.read(1), arr)
        assert a.overviews(1) == b.overviews(1) and a.overviews(1)
        for k in range(len(a.overviews(1))):
            with rasterio.open(one, overview_level=k) as x, rasterio.open(six, overview_level=k) as y:
                assert np.array_equal(x.read(1), y.read(1))
    assert _tile_bytes(one) != _tile_bytes(six)  # the level reached the compression
    for p in (one, six):
        ok, errors, _ = validate_cog(p)
        assert ok, errors


@pytest.mark.parametrize("level", [0, 13, 2.5, "6", None])
def test_a_deflate_level_out_of_range_is_refused_naming_the_file(tmp_path, small_box, level):
    with pytest.raises(StoreError, match=r"bad\.tif: DEFLATE level .*: an integer from 1 to 12"):
        write_cog(tmp_path / "bad.tif", np.zeros(small_box.shape, np.int16), small_box,
                  level=level)
    assert list(tmp_path.iterdir()) == []


def test_store_writes_reflectance_at_its_level_and_other_layers_at_the_default(tmp_path, small_box):
    from agriseries.io.cog import DEFLATE_LEVEL
    from agriseries.io.store import (REFLECTANCE_DEFLATE_LEVEL, Layer, ProductStore,
                                     encode_reflectance)

    refl = _real_int16(small_box).astype(np.float32) / 10000
    mask = (_real_int16(small_box) % 7).astype(np.uint8)
    when = dt.datetime(2022, 10, 5, 11, 54, 11, tzinfo=dt.timezone.utc)
    pid = ProductId(Level.L2A, "S2A", "T31UDS", when, "SEN2COR")
    store = ProductStore(tmp_path / "store")
    item = store.write_product(pid, [Layer("B07", refl, small_box, "reflectance",
                                           band=bands_of("S2A")["B07"]),
                                     Layer("mask", mask, small_box, "mask")],
                               footprint=small_box.extent, sensors=["S2A"], inputs=["x"],
                               parameters={}, lineage="test", datetime=when)
    folder = store.product_dir(pid)
    written = folder / item.assets["B07"].href
    stored = encode_reflectance(refl)
    for level, same in ((REFLECTANCE_DEFLATE_LEVEL, True), (DEFLATE_LEVEL, False)):
        ref = write_cog(tmp_path / f"ref{level}.tif", stored, small_box, nodata=-10000,
                        level=level)
        assert (_tile_bytes(written) == _tile_bytes(ref)) is same, level
    with rasterio.open(written) as src:
        assert np.array_equal(src.read(1), stored)
    with rasterio.open(folder / item.assets["mask"].href) as src:
        mask_written = src.read(1)
    ref = write_cog(tmp_path / "mask6.tif", mask_written, small_box, overview_resampling="nearest")
    assert _tile_bytes(folder / item.assets["mask"].href) == _tile_bytes(ref)
    assert REFLECTANCE_DEFLATE_LEVEL != DEFLATE_LEVEL
