"""Build the small SAFE test copies in this folder from $AGRISERIES_RAW_DATA (run once, by hand).

What it makes (see SOURCE.txt for origins and licences):

* ``S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE``: every XML
  metadata file of the real L2A product kept whole; the rasters cropped losslessly to
  one window of the tile (256 x 256 px at 60 m = 768 x 768 px at 20 m, 15.36 km
  square) that holds cloud, cloud shadow, cirrus, clear land, water and the swath
  edge: the 60 m reflectance bands present upstream (B01-B07, B8A, B09, B11, B12; B08
  was not in the upstream snapshot), SCL 20/60 m, MSK_CLDPRB 20/60 m, AOT 60 m.
* ``S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911``: the eodag L1C
  skeleton (MTD_MSIL1C.xml, MTD_TL.xml whole) with its only raster, B01, cropped to a
  256 x 256 px window across the swath edge.
* ``metadata/<product>``: MTD_MSIL1C/2A.xml, GRANULE/*/MTD_TL.xml and stactools'
  ``expected_output.json`` for six products covering L1C 02.09 and 03.01, L2A 02.12
  (S2A and S2B), 04.00 and 05.09, including two tiles across the antimeridian.
* ``window.json``: facts read from the ORIGINAL full-tile files with rasterio, for
  the tests to compare the reader against: the crop windows, SCL class counts in the
  window, MSK_CLDPRB counts, and raw DNs of a few pixels.

Crops are written with GDAL's JP2OpenJPEG driver, ``QUALITY=100, REVERSIBLE=YES``
(lossless), keeping the CRS and the geotransform of the window.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
HERE = Path(__file__).resolve().parent

L2A_NAME = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
L2A_SRC = RAW / "s2_l2a_safe_T29UNU" / L2A_NAME
L2A_GRANULE = "GRANULE/L2A_T29UNU_A038058_20221005T115407"
STEM = "T29UNU_20221005T115411"
#: (row, col) of the upper-left pixel of the window on the 60 m grid, and its size.
L2A_WIN60 = (1216, 704, 256)

L1C_NAME = "S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911"
L1C_SRC = RAW / "eodag_fixtures" / "products" / L1C_NAME
L1C_GRANULE = "GRANULE/L1C_T31TDH_A013204_20180101T105435"
L1C_WIN60 = (800, 960, 256)

METADATA_PRODUCTS = [
    "S2A_MSIL1C_20200717T221941_R029_T01LAC_20200717T234135.SAFE",
    "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE",
    "S2A_MSIL2A_20190212T192651_N0212_R013_T07HFE_20201007T160857.SAFE",
    "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658.SAFE",
    "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE",
    "S2A_MSIL2A_20230625T234621_N0509_R073_T01WCS_20230626T022157.SAFE",
]

L2A_60M = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"]


def window_at(win60: tuple[int, int, int], res: int) -> Window:
    """The 60 m window ``win60`` expressed on the ``res`` metre grid."""
    f = 60 // res
    r, c, n = win60
    return Window(c * f, r * f, n * f, n * f)


def crop(src: Path, dst: Path, window: Window) -> np.ndarray:
    """Copy ``window`` of ``src`` to ``dst`` as lossless JPEG 2000; return the pixels."""
    with rasterio.open(src) as s:
        data = s.read(window=window)
        profile = s.profile.copy()
        transform = s.window_transform(window)
    for key in ("blockxsize", "blockysize", "tiled", "nodata"):
        profile.pop(key, None)
    profile.update(driver="JP2OpenJPEG", width=int(window.width), height=int(window.height),
                   transform=transform, QUALITY=100, REVERSIBLE="YES")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
    with rasterio.open(dst) as check:
        assert np.array_equal(check.read(), data), f"lossy copy of {src}"
    return data


def copy_xml(src_root: Path, dst_root: Path) -> None:
    """Copy every XML / XSD / manifest file of a product, whole."""
    for f in src_root.rglob("*"):
        if f.is_file() and f.suffix.lower() in (".xml", ".xsd", ".safe"):
            out = dst_root / f.relative_to(src_root)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)


def make_l2a() -> dict:
    dst = HERE / L2A_NAME
    if dst.exists():
        shutil.rmtree(dst)
    copy_xml(L2A_SRC, dst)
    for aux in L2A_SRC.glob("GRANULE/*/AUX_DATA/AUX_*"):  # ECMWF / CAMS GRIB, 3 KB each
        out = dst / aux.relative_to(L2A_SRC)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(aux, out)
    facts: dict = {"window_60m": {"row": L2A_WIN60[0], "col": L2A_WIN60[1], "size": L2A_WIN60[2]}}
    w60, w20 = window_at(L2A_WIN60, 60), window_at(L2A_WIN60, 20)
    for band in L2A_60M + ["SCL", "AOT"]:
        rel = f"{L2A_GRANULE}/IMG_DATA/R60m/{STEM}_{band}_60m.jp2"
        crop(L2A_SRC / rel, dst / rel, w60)
    rel = f"{L2A_GRANULE}/IMG_DATA/R20m/{STEM}_SCL_20m.jp2"
    crop(L2A_SRC / rel, dst / rel, w20)
    for res, win in ((20, w20), (60, w60)):
        rel = f"{L2A_GRANULE}/QI_DATA/MSK_CLDPRB_{res}m.jp2"
        crop(L2A_SRC / rel, dst / rel, win)

    # Facts from the original full-tile files.
    with rasterio.open(L2A_SRC / f"{L2A_GRANULE}/IMG_DATA/R20m/{STEM}_SCL_20m.jp2") as s:
        scl20 = s.read(1, window=w20)
    with rasterio.open(L2A_SRC / f"{L2A_GRANULE}/IMG_DATA/R60m/{STEM}_SCL_60m.jp2") as s:
        scl60 = s.read(1, window=w60)
    with rasterio.open(L2A_SRC / f"{L2A_GRANULE}/QI_DATA/MSK_CLDPRB_20m.jp2") as s:
        prb20 = s.read(1, window=w20)
    facts["scl_counts_20m"] = np.bincount(scl20.ravel(), minlength=12).tolist()
    facts["scl_counts_60m"] = np.bincount(scl60.ravel(), minlength=12).tolist()
    facts["cldprb_ge65_20m"] = int((prb20 >= 65).sum())
    facts["cloud_bit_20m"] = int((np.isin(scl20, (8, 9)) | ((prb20 >= 65) & (scl20 != 0))).sum())
    with rasterio.open(L2A_SRC / f"{L2A_GRANULE}/IMG_DATA/R60m/{STEM}_B04_60m.jp2") as s:
        b04 = s.read(1, window=w60)
    with rasterio.open(L2A_SRC / f"{L2A_GRANULE}/IMG_DATA/R60m/{STEM}_AOT_60m.jp2") as s:
        aot = s.read(1, window=w60)
    pixels = []
    rng = np.random.default_rng(0)
    valid = np.argwhere(b04 > 0)
    for i, j in valid[rng.choice(len(valid), 8, replace=False)]:
        pixels.append({"row": int(i), "col": int(j), "B04_dn": int(b04[i, j]), "AOT_dn": int(aot[i, j]),
                       "SCL_60m": int(scl60[i, j])})
    facts["pixels_60m"] = pixels
    facts["b04_zero_count_60m"] = int((b04 == 0).sum())
    return facts


def make_l1c() -> dict:
    dst = HERE / L1C_NAME
    if dst.exists():
        shutil.rmtree(dst)
    copy_xml(L1C_SRC, dst)
    rel = f"{L1C_GRANULE}/IMG_DATA/T31TDH_20180101T105441_B01.jp2"
    data = crop(L1C_SRC / rel, dst / rel, window_at(L1C_WIN60, 60))[0]
    return {"window_60m": {"row": L1C_WIN60[0], "col": L1C_WIN60[1], "size": L1C_WIN60[2]},
            "b01_zero_count": int((data == 0).sum()),
            "b01_dn_at_10_10": int(data[10, 10])}


def make_metadata() -> None:
    root = HERE / "metadata"
    if root.exists():
        shutil.rmtree(root)
    for name in METADATA_PRODUCTS:
        src = RAW / "s2_safe_metadata" / name
        dst = root / name
        dst.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file() and (f.name.upper().startswith("MTD_MSIL") or f.name == "expected_output.json"):
                shutil.copyfile(f, dst / f.name)
        for tl in (src / "GRANULE").glob("*/MTD_TL.xml"):
            out = dst / tl.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tl, out)


def main() -> None:
    facts = {"l2a": make_l2a(), "l1c": make_l1c()}
    make_metadata()
    (HERE / "window.json").write_text(json.dumps(facts, indent=1) + "\n")


if __name__ == "__main__":
    main()
