"""Cut the SMAC test windows from the openEO atmospheric-correction test rasters.

Run from anywhere: ``python tests/data/smac/make_small.py``. Reads
$AGRISERIES_RAW_DATA/smac_reference (see SOURCE.txt) and writes, for each window below, a
folder ``<window>/`` holding the same file names, cut to 128 rows x 64 columns, with their
georeferencing, data type and nodata value unchanged (GeoTIFF, deflate).
"""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
from rasterio.windows import Window

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "smac_reference"
HERE = Path(__file__).resolve().parent

#: window name -> (row_off, col_off); 128 rows x 64 columns each.
WINDOWS = {
    # crosses the steps of the sun azimuth (col 463), view zenith (row 127 and col 463)
    # and view azimuth (col 463) rasters
    "angles": (64, 432),
    # holds the four B02 pixels where the reference SMAC result is negative (stored
    # wrapped around in uint16) and a few more bright / dark surfaces
    "dark": (800, 448),
}
ROWS, COLS = 128, 64

FILES = [
    *(f"ref_input_S2_{b}.tif" for b in ("B02", "B03", "B04", "B08", "B11")),
    *(f"ref_input_S2_{a}.tif" for a in ("sunZenithAngles", "sunAzimuthAngles",
                                         "viewZenithMean", "viewAzimuthMean")),
    *(f"ref_check_smac_S2_{b}.tif" for b in ("B02", "B03", "B04", "B08")),
    "ref_check_icor_S2_AOT.tif",
    "ref_check_icor_S2_DEM.tif",
]


def main() -> None:
    total = 0
    for name, (row, col) in WINDOWS.items():
        out_dir = HERE / name
        out_dir.mkdir(exist_ok=True)
        win = Window(col, row, COLS, ROWS)
        for fname in FILES:
            with rasterio.open(RAW / fname) as src:
                data = src.read(1, window=win)
                profile = {
                    "driver": "GTiff", "width": COLS, "height": ROWS, "count": 1,
                    "dtype": src.dtypes[0], "crs": src.crs,
                    "transform": src.window_transform(win), "nodata": src.nodata,
                    "compress": "deflate", "predictor": 2,
                }
            dst = out_dir / fname
            with rasterio.open(dst, "w", **profile) as out:
                out.write(data, 1)
            total += dst.stat().st_size
    print(f"{total} bytes written in {len(WINDOWS)} windows")


if __name__ == "__main__":
    main()
