"""The L3B processor on real data: WorldCereal Flanders 2018 series and a Landsat 8 C2 L2 scene."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from agriseries.biophysical import networks as nn
from agriseries.biophysical.processor import (
    MASKED_BY_L2A,
    BiophysicalParams,
    biophysical_series,
    run_biophysical,
)
from agriseries.core.errors import ConfigurationError
from agriseries.core.masks import MaskBit
from agriseries.core.stac import validate_item
from agriseries.io.ingest import ingest
from agriseries.io.store import ProductStore

DATA = Path(__file__).parent / "data"
WC = DATA / "worldcereal"
SEASON = (dt.datetime(2018, 3, 1), dt.datetime(2018, 10, 31))


@pytest.fixture(scope="module")
def l3b_store(tmp_path_factory):
    store = ProductStore(tmp_path_factory.mktemp("l3b"))
    assert all(r.status == "ingested" for r in ingest(sorted(WC.glob("S2_L2A_*m_*.nc")), store))
    results = run_biophysical(store, "T31UDS", *SEASON)
    assert results and all(r.status == "made" for r in results), [r.error for r in results][:3]
    return store


def test_one_l3b_per_l2a_with_flags_and_network_named(l3b_store):
    l2a = list(l3b_store.items(level="L2A", tile="T31UDS"))
    l3b = [it for it in l3b_store.items(level="L3B", tile="T31UDS")]
    assert len(l3b) == len(l2a) == 71
    item = l3b[0]
    validate_item(item)
    assert set(item.assets) == {v for n in nn.VARIABLES for v in (n, f"{n}_flags")}
    net = item.properties["agriseries:network"]
    assert net["model"] == "3_0/S2A" and net["version"] == "3_0"  # the files do not say S2A/S2B
    assert item.properties["agriseries:inputs"] == [l2a[0].id]
    rb = item.assets["LAI"].extra_fields["raster:bands"][0]
    assert rb["data_type"] == "float32" and rb["spatial_resolution"] == 20


def test_an_l3b_product_loads_on_its_own_grid_without_a_resolution(l3b_store):
    """``agriseries.load`` of an L3B (variables, no reflectance band): its 20 m grid by
    default, the stored values; a product with neither bands nor grids is an error naming it."""
    import dataclasses

    from agriseries import load
    from agriseries.core.errors import CorruptProductError

    item = next(iter(l3b_store.items(level="L3B", tile="T31UDS")))
    product = l3b_store.open(item)
    ds = load(product)
    assert ds.odc.geobox.resolution.x == 20 and ds.sizes["y"] == ds.sizes["x"] == 32
    with rasterio.open(item.assets["LAI"].get_absolute_href()) as src:
        stored = src.read(1)
    np.testing.assert_array_equal(ds["LAI"].values[0], stored)
    with pytest.raises(CorruptProductError, match="no band and no grid") as e:
        load(dataclasses.replace(product, native_grids={}))
    assert item.id in str(e.value)


def _raw_inputs(date_index):
    """The network inputs of one date straight from the provider NetCDF files (an independent path:
    raw DNs x 1e-4, 0 = no data, the 10 m bands averaged 2 x 2 onto the 20 m grid)."""
    d10 = xr.open_dataset(next(WC.glob("S2_L2A_10m_*.nc")), mask_and_scale=False)
    d20 = xr.open_dataset(next(WC.glob("S2_L2A_20m_*.nc")), mask_and_scale=False)
    t20 = d20.isel(timestamp=date_index)
    t10 = d10.sel(timestamp=t20["timestamp"].values)

    def refl(a):
        a = a.astype(np.float64)
        return np.where(a == 0, np.nan, a * 1e-4)

    def agg10(v):
        return refl(t10[v].values).reshape(32, 2, 32, 2).mean(axis=(1, 3))

    bands = [agg10("B03"), agg10("B04")] + [refl(t20[b].values)
                                            for b in ("B05", "B06", "B07", "B8A", "B11", "B12")]
    ang = [np.full((32, 32), float(t20[k].values)) for k in
           ("sunZenithAngles", "sunAzimuthAngles", "viewZenithMean", "viewAzimuthMean")]
    cos = nn.angle_cosines(*ang)
    when = np.datetime64(t20["timestamp"].values, "s")
    return np.concatenate([np.stack(bands), cos]).astype(np.float32), t20["SCL"].values, when


def test_values_equal_the_reference_network_on_the_raw_files(l3b_store):
    lai_net = nn.load_model("3_0/S2A", ["LAI"])["LAI"]
    scl_all = xr.open_dataset(next(WC.glob("S2_L2A_20m_*.nc")), mask_and_scale=False)["SCL"].values
    clearest = np.argsort(-np.isin(scl_all, [4, 5]).sum(axis=(1, 2)))[:3]
    checked = 0
    for idx in clearest:
        x, scl, when = _raw_inputs(idx)
        stamp = str(when).replace("-", "").replace(":", "")[:15]
        pid = f"L3B_S2A_T31UDS_{stamp}_AGS"
        if not l3b_store.exists(pid):
            continue
        folder = l3b_store.product_dir(pid)
        with rasterio.open(folder / f"{pid}_LAI.tif") as src:
            lai = src.read(1)
        with rasterio.open(folder / f"{pid}_LAI_flags.tif") as src:
            flags = src.read(1)
        ref, ref_flags = nn.evaluate_numpy(lai_net, x)
        clear = np.isin(scl, [4, 5])  # Sen2Cor vegetation / bare soil: not masked
        ok = clear & np.isfinite(ref)
        assert ok.sum() > 50
        assert np.nanmax(np.abs(lai[ok] - ref[ok])) < 2e-3
        assert np.array_equal(flags[ok] & 31, ref_flags[ok])
        cloud = np.isin(scl, [3, 8, 9, 10])
        assert np.all(np.isnan(lai[cloud])) and np.all(flags[cloud] & MASKED_BY_L2A)
        checked += 1
    assert checked >= 2


def test_maize_lai_rises_to_a_summer_peak_and_falls_at_harvest(l3b_store):
    pid = biophysical_series(l3b_store, "T31UDS", *SEASON, variables=("LAI", "FCOVER"))
    item = l3b_store.item(pid)
    validate_item(item)
    names = item.assets["LAI_smoothed"].extra_fields["agriseries:bands"]
    assert names[0] == "LAI_20180301" and len(names) == 25
    assert {"LAI_smoothed", "LAI_obs_distance", "FCOVER_smoothed"} <= set(item.assets)
    with rasterio.open(l3b_store.product_dir(pid) / item.assets["LAI_smoothed"].href) as src:
        lai = src.read()
        assert src.count == 25 and src.descriptions[0] == "LAI_20180301"
    labels = xr.open_dataset(next(WC.glob("OUTPUT_POLY-*.nc")))
    maize = (labels["CT"].values.squeeze() == 1200)[::2, ::2]  # 10 m labels on the 20 m grid
    assert maize.sum() > 200
    profile = np.nanmedian(lai[:, maize], axis=1)
    months = np.array([int(n[-4:-2]) for n in names])
    peak = months[int(np.argmax(profile))]
    assert peak in (7, 8), profile
    assert 2.0 < profile.max() < 6.0
    assert profile[months == 5].min() < 0.5 * profile.max()   # sowing
    assert profile[-1] < 0.3 * profile.max()                  # after harvest


def test_ten_metre_networks_keep_their_three_variables(tmp_path):
    store = ProductStore(tmp_path / "s")
    ingest(sorted(WC.glob("S2_L2A_*m_*.nc")), store)
    res = run_biophysical(store, "T31UDS", dt.datetime(2018, 7, 1), dt.datetime(2018, 7, 10),
                          BiophysicalParams(resolution=10))
    made = [r for r in res if r.status == "made"]
    assert made
    item = store.item(made[0].product)
    assert set(item.assets) == {"LAI", "LAI_flags", "FAPAR", "FAPAR_flags", "FCOVER", "FCOVER_flags"}
    assert item.properties["agriseries:network"]["model"] == "3_0/S2A_10m"
    assert item.assets["LAI"].extra_fields["raster:bands"][0]["spatial_resolution"] == 10
    with pytest.raises(ConfigurationError, match="unknown biophysical variable"):
        BiophysicalParams(variables=("NDVI",))


def test_landsat_uses_the_landsat_networks(tmp_path):
    scene = next((DATA / "landsat").glob("LC08_*_T1"))
    store = ProductStore(tmp_path / "s")
    assert ingest([scene], store, tile="T18NVG")[0].status == "ingested"
    res = run_biophysical(store, "T18NVG", params=BiophysicalParams(variables=("LAI", "FCOVER")))
    assert [r.status for r in res] == ["made"], res[0].error
    item = store.item(res[0].product)
    assert item.properties["agriseries:network"]["model"] == "3_0/LANDSAT8"
    with rasterio.open(store.product_dir(item.id) / item.assets["FCOVER"].href) as src:
        fc = src.read(1)
    with rasterio.open(store.product_dir(item.id) / item.assets["FCOVER_flags"].href) as src:
        fl = src.read(1)
    valid = np.isfinite(fc)
    assert valid.any() and fc[valid].min() >= 0 and fc[valid].max() <= 1
    assert np.all(fl[~valid] & (MASKED_BY_L2A | 1))
    assert int(MaskBit.CLOUD) & int(MASKED_BY_L2A) == 0
