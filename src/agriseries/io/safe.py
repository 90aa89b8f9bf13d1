"""Reader for ESA SAFE Sentinel-2 products: L1C (ESA) and L2A (Sen2Cor), S2A/S2B/S2C.

Public functions:

* :func:`is_safe` -- cheap detection: a folder (or a ``.zip``) holding
  ``MTD_MSIL1C.xml`` or ``MTD_MSIL2A.xml`` beside a ``GRANULE/`` folder.
* :func:`read_safe` -- the reader: a :class:`~agriseries.io.product.SourceProduct`
  with one :class:`~agriseries.io.product.Asset` per band file, the Sen2Cor quality
  layers and their mask decoder, the AOT layer, the sun and per-band viewing angle
  grids, the tile grids and the footprint. It reads no pixel (it opens the headers of
  the band files to clip the footprint to what is on disk); :func:`~agriseries.io.product.load`
  reads them.
* :func:`read_safe_metadata` -- what the two XML files (``MTD_MSIL1C/2A.xml`` and the
  granule's ``MTD_TL.xml``) say, as a :class:`SafeMetadata`, without looking at any
  raster. It also works on metadata-only copies of a product.
* :func:`decode_l2a`, :func:`decode_l1c` -- the pure mask decoders the reader attaches.

Conventions (ESA Sentinel-2 Products Specification Document, all baselines 02.xx to 05.xx):

* Reflectance ``= (DN + ADD_OFFSET) / QUANTIFICATION_VALUE``. ``ADD_OFFSET`` is
  ``RADIO_ADD_OFFSET`` (L1C) or ``BOA_ADD_OFFSET`` (L2A), given per ``band_id``
  since baseline 04.00 (-1000); before, there is no offset list and the offset is
  0. So an :class:`Asset` has ``scale = 1 / Q`` and ``offset = ADD_OFFSET / Q``.
  DN 0 is no data (``Special_Values`` NODATA).
* ``band_id`` / ``bandId`` 0-12 are mapped to band names through the product's own
  ``Spectral_Information`` list (``physicalBand="B8A"``), falling back to ESA's
  fixed order B01..B08, B8A, B09..B12.
* L2A bands are taken at their native resolution (10, 20 or 60 m) when that file is
  on disk, else at the next coarser resolution that is (``Asset.resolution`` says
  which). File names come from the ``IMAGE_FILE`` list of the product metadata, or
  from the folder when the list is absent; ``imageFormat="GeoTIFF"`` products
  (reprocessed by ESRI) have ``.tif`` files instead of ``.jp2``.
* Quality, L2A: ``SCL`` (20 m when present, else 60 m) and ``MSK_CLDPRB`` (20 m, else
  60 m; optional), decoded by :func:`agriseries.core.masks.from_scl` with the cloud
  probability threshold given to :func:`read_safe`.
* Quality, L1C: ESA's L1C has no per-pixel cloud classification that is usable as
  it is (``MSK_CLOUDS_B00.gml`` is a vector layer before baseline 04.00; cloud
  detection is agriseries' own L2A stage), so the only quality layer is the DN of
  one reflectance band (the finest selected), and the mask has only the NODATA bit
  where that DN is 0 (plus, as for every product, where the first loaded band is NaN).
* Angles: the sun grid and one viewing grid per band from ``MTD_TL.xml`` (nodes
  every ``COL_STEP`` = 5000 m from the tile's upper-left corner). Viewing grids are
  given per band *and per detector*, NaN outside each detector; they are merged
  per band by a NaN-mean over the detectors (circular mean for azimuths), so nodes
  in the overlap of two detectors get the mean of both.
* Footprint: ``Product_Footprint/EXT_POS_LIST`` (lat lon pairs) as a polygon in
  EPSG:4326; for tiles across the antimeridian the longitudes are unwrapped (values
  above 180) so the ring stays one polygon; :func:`read_safe` clips it to the extent
  common to the band files on disk (test products are cropped). A product without
  ``EXT_POS_LIST`` gets that extent, in the tile's UTM CRS, as footprint.

Not supported: the pre-December-2016 multi-granule SAFE layout (``S2A_OPER_PRD_...``,
``S2A_OPER_MTD_SAFL1C_...xml``) raises :class:`UnknownProductError`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
import shapely
from affine import Affine
from lxml import etree
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon

from ..core.bands import bands_of, sensor_name
from ..core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from ..core.grid import parse_tile
from ..core.masks import MaskBit, from_scl
from .files import ProductFiles, file_geobox, xml_float, xml_text, zip_members
from .product import AngleGrid, Asset, SourceProduct, nanmean_angles

#: Band names in ESA's ``bandId`` order (0-12), used when a product has no ``Spectral_Information``.
ESA_BAND_ORDER: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                   "B09", "B10", "B11", "B12")
#: Reflectance bands of an L1C product.
L1C_BANDS: tuple[str, ...] = ESA_BAND_ORDER
#: Reflectance bands of a Sen2Cor L2A product (no B10, the cirrus band is used and dropped).
L2A_BANDS: tuple[str, ...] = tuple(b for b in ESA_BAND_ORDER if b != "B10")
#: Native pixel size of each band (metres).
NATIVE_RESOLUTION: dict[str, int] = {b: band.resolution for b, band in bands_of("S2A").items()}

_RESOLUTIONS = (10, 20, 60)
_MTD_RE = re.compile(r"^MTD_MSIL(1C|2A)\.xml$", re.IGNORECASE)
_ZIP_MTD_RE = re.compile(r"^(?:([^/]+)/)?(MTD_MSIL(?:1C|2A)\.xml)$", re.IGNORECASE)
_OLD_MTD_RE = re.compile(r"^S2[ABC]_OPER_MTD_SAFL(1C|2A)_.*\.xml$", re.IGNORECASE)
_NAME_RE = re.compile(r"^S2[ABC]_MSIL(1C|2A)_\d{8}T\d{6}_", re.IGNORECASE)
_IMG_RE = re.compile(r"_(B\d[\dA]|SCL|AOT|WVP|TCI)(?:_(\d{2})m)?(\.jp2|\.tif)?$", re.IGNORECASE)
_TILE_RE = re.compile(r"_T(\d{2}[A-Z]{3})(?:_|$)")
_EXT = {"JPEG2000": ".jp2", "GEOTIFF": ".tif"}


# --------------------------------------------------------------------------------------------
# Detection and file access (folder or zip)


def is_safe(path: str | os.PathLike) -> bool:
    """True if ``path`` looks like a Sentinel-2 SAFE product (folder or ``.zip``).

    A folder must hold ``MTD_MSIL1C.xml`` or ``MTD_MSIL2A.xml`` and a ``GRANULE``
    folder; a zip must hold them at its root or under one top folder. Only names
    are looked at; nothing is parsed. Never raises. (:func:`diagnose` explains the
    paths that look like an incomplete SAFE.)
    """
    p = Path(path)
    try:
        if p.is_dir():
            names = {n.name.upper(): n for n in p.iterdir()}
            has_mtd = any(_MTD_RE.match(n.name) for n in names.values())
            granule = names.get("GRANULE")
            return has_mtd and granule is not None and granule.is_dir()
        if p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            return _zip_prefix(zip_members(p)) is not None
    except (OSError, CorruptProductError):
        return False
    return False


def diagnose(path: str | os.PathLike) -> InputProductError | None:
    """What is wrong with a path that looks like a Sentinel-2 SAFE but is not a readable one.

    A folder or zip named like a Sentinel-2 MSI product (``S2B_MSIL2A_...``), or holding
    an ``MTD_MSIL1C/2A.xml`` or a Sentinel-2 ``manifest.safe``, without the files every SAFE has (``GRANULE/`` and its
    ``MTD_TL.xml``, the product metadata), or in the pre-2016 multi-granule layout:
    the error :func:`read_safe` raises for it. None for a readable SAFE or a path that
    does not look like one. Parses nothing; never raises.
    """
    p = Path(path)
    try:
        if p.is_dir():
            manifest = p / "manifest.safe"
            looks = bool(_NAME_RE.match(p.name)) or any(
                _MTD_RE.match(n.name) or _OLD_MTD_RE.match(n.name) for n in p.iterdir()) or (
                manifest.is_file() and b"SENTINEL-2" in manifest.read_bytes()[:65536].upper())
        elif p.is_file() and p.suffix.lower() == ".zip":
            looks = bool(_NAME_RE.match(p.name)) or any(
                _ZIP_MTD_RE.match(n) for n in zip_members(p))
        else:
            return None
        if not looks:
            return None
        _locate(_open_files(p))
    except InputProductError as exc:
        return exc
    except OSError:
        return None
    return None


def _zip_prefix(names: Sequence[str]) -> str | None:
    """The folder of a SAFE inside a zip (``'X.SAFE/'`` or ``''``), from its ``MTD_MSIL*.xml``."""
    for n in names:
        m = _ZIP_MTD_RE.match(n)
        if m:
            return f"{m.group(1)}/" if m.group(1) else ""
    return None


def _open_files(path: str | os.PathLike) -> ProductFiles:
    """The files of a SAFE product (folder or zip)."""
    given = str(path)
    p = Path(path)
    if not p.exists():
        raise UnknownProductError(given, "no such file or folder; expected a Sentinel-2 "
                                  "SAFE folder or .zip")
    if p.is_dir():
        return ProductFiles.folder(p, given)
    if p.suffix.lower() != ".zip":
        raise UnknownProductError(given, "not a Sentinel-2 SAFE product: expected a "
                                  ".SAFE folder or a .zip archive of one")
    return ProductFiles.archive(p, _zip_prefix, "Sentinel-2 SAFE product (expected "
                                "MTD_MSIL1C.xml or MTD_MSIL2A.xml and GRANULE/ at its root or "
                                "in one top folder)")


def _locate(c: ProductFiles) -> tuple[str, str, str]:
    """``(level, product metadata, granule metadata)`` of a SAFE: the two XML files every one has.

    Raises
    ------
    UnknownProductError
        What is there and what is missing: no ``MTD_MSIL*.xml`` (or the unsupported
        pre-2016 ``S2A_OPER_MTD_SAFL1C`` layout), no ``GRANULE/`` folder, no or several
        ``GRANULE/<granule>/MTD_TL.xml``.
    """
    top = [n for n in c.names if "/" not in n]
    mtd_rel = next((n for n in top if _MTD_RE.match(n)), None)
    granules = sorted({n.split("/")[1] for n in c.names
                       if n.upper().startswith("GRANULE/") and n.count("/") >= 2})
    if mtd_rel is None:
        old = [n for n in top if _OLD_MTD_RE.match(n)]
        if old:
            raise UnknownProductError(
                c.given, f"pre-December-2016 multi-granule SAFE ({old[0]}): not supported; "
                "expected a single-tile SAFE with MTD_MSIL1C.xml or MTD_MSIL2A.xml")
        found = ", ".join(top[:4]) + (" ..." if len(top) > 4 else "")
        raise UnknownProductError(
            c.given, "not a Sentinel-2 SAFE product: expected MTD_MSIL1C.xml or MTD_MSIL2A.xml "
            f"beside a GRANULE/ folder; the product metadata file is missing (at the top: "
            f"{found or 'nothing'}{'; GRANULE/ is there' if granules else ''})")
    level = "L" + _MTD_RE.match(mtd_rel).group(1).upper()
    if not granules:
        raise UnknownProductError(
            c.given, f"Sentinel-2 SAFE without GRANULE/: {mtd_rel} is there but not the "
            "GRANULE/<granule>/ folder holding the tile metadata (MTD_TL.xml) and the images "
            "(an incomplete download or copy?); expected one granule folder")
    tl_rels = sorted(n for n in c.names if re.match(r"^GRANULE/[^/]+/MTD_TL\.xml$", n, re.I))
    if len(tl_rels) != 1:
        what = (f"found {len(tl_rels)}" if tl_rels else
                f"found none in GRANULE/{granules[0]}/ (the tile metadata is missing)")
        raise UnknownProductError(
            c.given, f"expected exactly one GRANULE/<granule>/MTD_TL.xml, {what}"
            + (" (the pre-2016 multi-granule SAFE layout is not supported)"
               if len(tl_rels) > 1 else ""))
    return level, mtd_rel, tl_rels[0]


# --------------------------------------------------------------------------------------------
# XML values


def _parse_time(txt: str, where: str) -> _dt.datetime:
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", txt.strip())
    if not m:
        raise CorruptProductError(where, f"cannot read the time {txt!r}: expected ISO 8601 UTC")
    frac = (m.group(2) or "")[:7]
    t = _dt.datetime.fromisoformat(m.group(1) + frac)
    tz = m.group(3)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        t = t - sign * _dt.timedelta(hours=hh, minutes=mm)
    return t.replace(tzinfo=_dt.timezone.utc)


def _values_list(el: etree._Element, where: str) -> np.ndarray:
    rows = [r.text.split() for r in el.findall("./Values_List/VALUES") if r.text]
    if not rows or len({len(r) for r in rows}) != 1:
        raise CorruptProductError(where, "angle grid Values_List is empty or ragged")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        raise CorruptProductError(where, "angle grid Values_List holds non-numbers") from None


def _band_name(physical: str) -> str:
    """ESA's ``physicalBand`` (``B1``, ``B8A``) -> agriseries band name (``B01``, ``B8A``)."""
    p = physical.strip().upper()
    m = re.match(r"^B(\d{1,2})(A?)$", p)
    if not m:
        return p
    return f"B{int(m.group(1)):02d}" if not m.group(2) else f"B{int(m.group(1))}A"


# --------------------------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class SafeMetadata:
    """What a SAFE product's two XML files say (no raster looked at).

    Attributes
    ----------
    path
        The product as given (folder or zip).
    product_id
        The SAFE name without ``.SAFE`` (``PRODUCT_URI``, else the folder name).
    level
        ``L1C`` or ``L2A``.
    sensor
        ``S2A``, ``S2B`` or ``S2C`` (from ``SPACECRAFT_NAME``).
    producer
        ``ESA`` (L1C) or ``SEN2COR`` (L2A).
    datetime
        ``PRODUCT_START_TIME`` (else the tile's ``SENSING_TIME``), UTC.
    tile
        MGRS tile id, ``T29UNU``.
    crs
        ``HORIZONTAL_CS_CODE`` of the tile, ``EPSG:32629``.
    processing_baseline
        ``PROCESSING_BASELINE``, ``"04.00"``.
    quantification_value
        ``QUANTIFICATION_VALUE`` (L1C) or ``BOA_QUANTIFICATION_VALUE`` (L2A).
    add_offsets
        ``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET`` per band name, in DN (0 for every
        band when the baseline has no offset list).
    aot_quantification_value
        ``AOT_QUANTIFICATION_VALUE`` (L2A), else None.
    nodata_dn, saturated_dn
        The ``Special_Values`` NODATA and SATURATED DNs.
    cloud_cover
        ``Cloud_Coverage_Assessment`` (percent).
    footprint
        ``EXT_POS_LIST`` as an EPSG:4326 polygon (longitudes unwrapped across the antimeridian).
    native_grids
        The tile grid per resolution, from ``Geoposition`` and ``Size``.
    sun_angles
        Sun zenith/azimuth grid.
    view_angles
        Viewing zenith/azimuth grid per band name, detectors merged.
    image_files
        Relative path (with extension) of each image per name (``B04``, ``SCL``,
        ``AOT``, ``WVP``, ``TCI``) and resolution, as the metadata lists them.
    mask_files
        Relative path of quality masks per type (``CLDPRB``) and resolution.
    product_mtd, tile_mtd
        Relative paths of ``MTD_MSIL*.xml`` and of the granule's ``MTD_TL.xml``.
    extras
        Other facts: reflectance conversion ``U``, no-data percentage, the metadata's
        own mean sun and viewing angles.
    """

    path: str
    product_id: str
    level: str
    sensor: str
    producer: str
    datetime: _dt.datetime
    tile: str
    crs: str
    processing_baseline: str
    quantification_value: float
    add_offsets: dict[str, float]
    aot_quantification_value: float | None
    nodata_dn: int
    saturated_dn: int | None
    cloud_cover: float | None
    footprint: Geometry | None
    native_grids: dict[int, GeoBox]
    sun_angles: AngleGrid | None
    view_angles: dict[str, AngleGrid]
    image_files: dict[str, dict[int, str]]
    mask_files: dict[str, dict[int, str]]
    product_mtd: str
    tile_mtd: str
    listed_in_mtd: bool = True
    extras: dict[str, object] = field(default_factory=dict)


def read_safe_metadata(path: str | os.PathLike) -> SafeMetadata:
    """Parse ``MTD_MSIL1C/2A.xml`` and the granule's ``MTD_TL.xml`` of a SAFE product.

    Only the XML files are read; rasters may be absent (metadata-only copies).

    Raises
    ------
    UnknownProductError
        If ``path`` is not a SAFE folder / zip, or holds more or fewer than one granule.
    CorruptProductError
        If an XML file cannot be parsed or lacks a required element (the message names
        the file and the element).
    """
    return _read_metadata(_open_files(path))


@dataclass(frozen=True)
class _Xml:
    """One parsed metadata file and where it is (for the error messages)."""

    root: etree._Element
    where: str

    def text(self, xpath: str, required: bool = True) -> str | None:
        return xml_text(self.root, xpath, self.where, required)

    def number(self, xpath: str, required: bool = True) -> float | None:
        return xml_float(self.root, xpath, self.where, required)


def _read_metadata(c: ProductFiles) -> SafeMetadata:
    """The two XML files of a SAFE, read part by part (each part a function below)."""
    level, mtd_rel, tl_rel = _locate(c)
    mtd = _Xml(c.xml(mtd_rel, "product metadata"), c.gdal_path(mtd_rel))
    tl = _Xml(c.xml(tl_rel, "tile metadata"), c.gdal_path(tl_rel))
    ident = _identity(mtd, tl, c.name)
    band_ids, spectral = _band_ids(mtd)
    radio = _radiometry(mtd, level, band_ids)
    image_files, listed = _image_files(mtd)
    if not listed:  # no IMAGE_FILE list: take what is in the granule's IMG_DATA folder
        image_files = _image_files_on_disk(c, tl_rel.rsplit("/", 1)[0])
    fp_txt = mtd.text(".//Global_Footprint/EXT_POS_LIST", required=False)
    crs, native_grids = _tile_geocoding(tl)
    sun, view = _angle_grids(tl, band_ids, crs, native_grids)
    extras = _extras(mtd, tl, band_ids)
    if spectral:
        extras["central_wavelength_nm"] = spectral
    return SafeMetadata(
        path=c.given, level=level, producer="ESA" if level == "L1C" else "SEN2COR", crs=crs,
        footprint=_footprint(fp_txt, mtd.where) if fp_txt else None, native_grids=native_grids,
        sun_angles=sun, view_angles=view, image_files=image_files,
        mask_files=_mask_files(tl), product_mtd=mtd_rel, tile_mtd=tl_rel, listed_in_mtd=listed,
        extras=extras, **ident, **radio,
    )


def _identity(mtd: _Xml, tl: _Xml, folder_name: str) -> dict[str, object]:
    """Product id, sensor, acquisition time, processing baseline and MGRS tile."""
    uri = mtd.text(".//Product_Info/PRODUCT_URI", required=False)
    name = uri or folder_name
    product_id = re.sub(r"\.SAFE$", "", re.sub(r"\.zip$", "", name, flags=re.I), flags=re.I)
    spacecraft = mtd.text(".//SPACECRAFT_NAME")
    try:
        sensor = sensor_name(spacecraft)
    except ConfigurationError as exc:
        raise CorruptProductError(mtd.where, f"SPACECRAFT_NAME: {exc}") from None
    start = mtd.text(".//Product_Info/PRODUCT_START_TIME", required=False)
    if start is not None:
        when = _parse_time(start, mtd.where)
    else:
        when = _parse_time(tl.text(".//SENSING_TIME"), tl.where)
    tile_id = tl.text(".//TILE_ID", required=False) or ""
    m = _TILE_RE.search(tile_id) or _TILE_RE.search(product_id)
    if not m:
        raise CorruptProductError(tl.where, f"no MGRS tile id (_Tzzbbb_) in TILE_ID {tile_id!r} "
                                  f"nor in the product name {product_id!r}")
    try:
        tile = parse_tile(m.group(1)).name
    except ConfigurationError as exc:
        raise CorruptProductError(tl.where, f"bad tile id: {exc}") from None
    return {"product_id": product_id, "sensor": sensor, "datetime": when, "tile": tile,
            "processing_baseline": mtd.text(".//PROCESSING_BASELINE")}


def _band_ids(mtd: _Xml) -> tuple[dict[int, str], dict[str, float]]:
    """``bandId`` -> band name from ``Spectral_Information`` (ESA's order by default), and
    the central wavelengths (nm) by band name."""
    band_ids = dict(enumerate(ESA_BAND_ORDER))
    spectral = {}
    for el in mtd.root.iter("Spectral_Information"):
        bid, phys = el.get("bandId"), el.get("physicalBand")
        if bid is not None and phys:
            band_ids[int(bid)] = _band_name(phys)
            wl = el.find("./Wavelength/CENTRAL")
            if wl is not None and wl.text:
                spectral[_band_name(phys)] = float(wl.text)
    return band_ids, spectral


def _radiometry(mtd: _Xml, level: str, band_ids: Mapping[int, str]) -> dict[str, object]:
    """Quantification value, per-band offsets (DN), AOT quantification, special DNs, cloud cover."""
    if level == "L1C":
        q = mtd.number(".//QUANTIFICATION_VALUE")
        off_tag = "RADIO_ADD_OFFSET"
    else:
        q = mtd.number(".//BOA_QUANTIFICATION_VALUE")
        off_tag = "BOA_ADD_OFFSET"
    if not q or q <= 0:
        raise CorruptProductError(mtd.where, f"quantification value {q!r} must be positive")
    offsets = {b: 0.0 for b in band_ids.values()}
    for el in mtd.root.iter(off_tag):
        bid = el.get("band_id") or el.get("bandId")
        if bid is None or not el.text:
            raise CorruptProductError(mtd.where, f"{off_tag} without band_id or value")
        offsets[band_ids.get(int(bid), str(bid))] = float(el.text)
    nodata_dn, saturated_dn = 0, None
    for el in mtd.root.iter("Special_Values"):
        kind = (el.findtext("SPECIAL_VALUE_TEXT") or "").strip().upper()
        idx = el.findtext("SPECIAL_VALUE_INDEX")
        if idx is None:
            continue
        if kind == "NODATA":
            nodata_dn = int(idx)
        elif kind == "SATURATED":
            saturated_dn = int(idx)
    return {"quantification_value": q, "add_offsets": offsets,
            "aot_quantification_value": mtd.number(".//AOT_QUANTIFICATION_VALUE", required=False),
            "nodata_dn": nodata_dn, "saturated_dn": saturated_dn,
            "cloud_cover": mtd.number(".//Cloud_Coverage_Assessment", required=False)}


def _image_key(rel: str) -> tuple[str, int] | None:
    """``(name, resolution)`` of an image file name (``..._B04_10m.jp2`` -> ``("B04", 10)``)."""
    mm = _IMG_RE.search(rel)
    if not mm:
        return None
    key = mm.group(1).upper()
    if key.startswith("B"):
        key = _band_name(key)
    return key, int(mm.group(2)) if mm.group(2) else NATIVE_RESOLUTION.get(key, 10)


def _image_files(mtd: _Xml) -> tuple[dict[str, dict[int, str]], bool]:
    """The ``IMAGE_FILE`` list of the product metadata, by name and resolution, and whether
    there is one. Names get the extension of the granule's ``imageFormat``."""
    image_files: dict[str, dict[int, str]] = {}
    listed = False
    for gran in mtd.root.iter("Granule"):
        ext = _EXT.get((gran.get("imageFormat") or "JPEG2000").upper(), ".jp2")
        for el in gran:
            if not (isinstance(el.tag, str) and el.tag.startswith("IMAGE_FILE")) or not el.text:
                continue
            listed = True
            rel = el.text.strip()
            found = _image_key(rel)
            if found is None:
                continue
            if not _IMG_RE.search(rel).group(3):
                rel += ext
            image_files.setdefault(found[0], {})[found[1]] = rel
    return image_files, listed


def _image_files_on_disk(c: ProductFiles, granule_dir: str) -> dict[str, dict[int, str]]:
    """The images of the granule's ``IMG_DATA`` folder, by name and resolution."""
    image_files: dict[str, dict[int, str]] = {}
    for rel in c.names:
        if rel.upper().startswith((granule_dir + "/IMG_DATA/").upper()):
            found = _image_key(rel)
            if found is not None and _IMG_RE.search(rel).group(3):
                image_files.setdefault(found[0], {})[found[1]] = rel
    return image_files


def _tile_geocoding(tl: _Xml) -> tuple[str, dict[int, GeoBox]]:
    """The tile's CRS and its grid per resolution (``Geoposition`` and ``Size``)."""
    crs = tl.text(".//Tile_Geocoding/HORIZONTAL_CS_CODE")
    sizes = {int(el.get("resolution")): el for el in tl.root.iter("Size") if el.get("resolution")}
    native_grids: dict[int, GeoBox] = {}
    for el in tl.root.iter("Geoposition"):
        res = int(el.get("resolution") or 0)
        if res not in sizes:
            continue
        ulx, uly = xml_float(el, "ULX", tl.where), xml_float(el, "ULY", tl.where)
        xdim, ydim = xml_float(el, "XDIM", tl.where), xml_float(el, "YDIM", tl.where)
        nrows = int(xml_float(sizes[res], "NROWS", tl.where))
        ncols = int(xml_float(sizes[res], "NCOLS", tl.where))
        native_grids[res] = GeoBox((nrows, ncols), Affine(xdim, 0.0, ulx, 0.0, ydim, uly), crs)
    if not native_grids:
        raise CorruptProductError(tl.where, "no Tile_Geocoding Geoposition/Size pair")
    return crs, native_grids


def _angle_grids(tl: _Xml, band_ids: Mapping[int, str], crs: str,
                 native_grids: Mapping[int, GeoBox]) -> tuple[AngleGrid | None, dict[str, AngleGrid]]:
    """The sun grid and one viewing grid per band (detectors merged), from the tile's corner."""
    ul = next(iter(native_grids.values())).affine
    x0, y0 = ul.c, ul.f
    sun = None
    sun_el = tl.root.find(".//Sun_Angles_Grid")
    if sun_el is not None:
        sun = _angle_grid([sun_el], x0, y0, crs, tl.where)
    per_band: dict[str, list[etree._Element]] = {}
    for el in tl.root.iter("Viewing_Incidence_Angles_Grids"):
        bid = el.get("bandId")
        if bid is None:
            continue
        per_band.setdefault(band_ids.get(int(bid), f"band{bid}"), []).append(el)
    view = {b: _angle_grid(els, x0, y0, crs, tl.where)
            for b, els in sorted(per_band.items(), key=lambda kv: ESA_BAND_ORDER.index(kv[0])
                                 if kv[0] in ESA_BAND_ORDER else 99)}
    return sun, view


def _mask_files(tl: _Xml) -> dict[str, dict[int, str]]:
    """Quality masks listed in the tile metadata (``MSK_CLDPRB``), by resolution."""
    mask_files: dict[str, dict[int, str]] = {}
    for el in tl.root.iter("MASK_FILENAME"):
        if el.get("type") == "MSK_CLDPRB" and el.text:
            rel = el.text.strip()
            mm = re.search(r"_(\d{2})m(\.\w+)?$", rel)
            if mm:
                mask_files.setdefault("CLDPRB", {})[int(mm.group(1))] = rel
    return mask_files


def _extras(mtd: _Xml, tl: _Xml, band_ids: Mapping[int, str]) -> dict[str, object]:
    """Other facts: reflectance conversion U, no-data percentage, the mean sun and view angles."""
    extras: dict[str, object] = {}
    u = mtd.number(".//Reflectance_Conversion/U", required=False)
    if u is not None:
        extras["reflectance_conversion_u"] = u
    nodata_pct = mtd.number(".//NODATA_PIXEL_PERCENTAGE", required=False)
    if nodata_pct is None:
        nodata_pct = tl.number(".//NODATA_PIXEL_PERCENTAGE", required=False)
    if nodata_pct is not None:
        extras["nodata_pixel_percentage"] = nodata_pct
    msz = tl.number(".//Mean_Sun_Angle/ZENITH_ANGLE", required=False)
    msa = tl.number(".//Mean_Sun_Angle/AZIMUTH_ANGLE", required=False)
    if msz is not None and msa is not None:
        extras["mean_sun_angles"] = {"zenith": msz, "azimuth": msa}
    mean_view = {}
    for el in tl.root.iter("Mean_Viewing_Incidence_Angle"):
        bid = el.get("bandId")
        z, a = el.findtext("ZENITH_ANGLE"), el.findtext("AZIMUTH_ANGLE")
        if bid is not None and z and a:
            mean_view[band_ids.get(int(bid), bid)] = {"zenith": float(z), "azimuth": float(a)}
    if mean_view:
        extras["mean_view_angles"] = mean_view
    return extras


def _footprint(txt: str, where: str) -> Geometry:
    """``EXT_POS_LIST`` (lat lon lat lon ...) -> EPSG:4326 polygon, unwrapped across 180 degrees."""
    try:
        vals = np.array(txt.split(), dtype=np.float64)
    except ValueError:
        raise CorruptProductError(where, "EXT_POS_LIST holds non-numbers") from None
    if vals.size < 8 or vals.size % 2:
        raise CorruptProductError(where, f"EXT_POS_LIST has {vals.size} numbers: expected lat lon pairs")
    lat, lon = vals[0::2], vals[1::2]
    if lon.max() - lon.min() > 180.0:  # crosses the antimeridian: keep one ring
        lon = np.where(lon < 0.0, lon + 360.0, lon)
    pts = list(zip(lon.tolist(), lat.tolist()))
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    return polygon(pts, "EPSG:4326")


def _angle_grid(elements: list[etree._Element], x0: float, y0: float, crs: str, where: str) -> AngleGrid:
    """One AngleGrid from one sun grid, or from the per-detector grids of one band (merged)."""
    zs, azs, step = [], [], None
    for el in elements:
        zen, azi = el.find("Zenith"), el.find("Azimuth")
        if zen is None or azi is None:
            raise CorruptProductError(where, f"{el.tag} without Zenith/Azimuth")
        for part in (zen, azi):
            cs, rs = xml_float(part, "COL_STEP", where), xml_float(part, "ROW_STEP", where)
            if cs != rs or (step is not None and cs != step):
                raise CorruptProductError(where, f"{el.tag}: COL_STEP {cs} and ROW_STEP {rs} differ; "
                                          "expected one square step")
            step = cs
        z, a = _values_list(zen, where), _values_list(azi, where)
        if z.shape != a.shape:
            raise CorruptProductError(where, f"{el.tag}: zenith and azimuth grids differ in shape")
        zs.append(z)
        azs.append(a)
    if len({z.shape for z in zs}) != 1:
        raise CorruptProductError(where, "viewing angle grids of one band differ in shape")
    if len(zs) == 1:
        zen, azi = zs[0], azs[0]
    else:
        zen = nanmean_angles(np.stack(zs))
        azi = nanmean_angles(np.stack(azs), circular=True)
    return AngleGrid(zen, azi, float(x0), float(y0), float(step), crs)


# --------------------------------------------------------------------------------------------
# Mask decoders (pure; numpy or dask)


def decode_l2a(layers: Mapping[str, object], cloud_probability_threshold: int = 65):
    """Sen2Cor quality layers -> common mask bits.

    ``layers["SCL"]`` is required; ``layers["CLDPRB"]`` (MSK_CLDPRB, percent) is used
    when present: pixels at or above ``cloud_probability_threshold`` get CLOUD.
    """
    return from_scl(layers["SCL"], layers.get("CLDPRB"), cloud_probability_threshold)


def decode_l1c(layers: Mapping[str, object], nodata_dn: int = 0):
    """L1C quality -> common mask bits: NODATA where the reference band's DN is ``nodata_dn``."""
    dn = layers["NODATA"]
    return (dn == nodata_dn).astype(np.uint8) * np.uint8(MaskBit.NODATA)


# --------------------------------------------------------------------------------------------
# The reader


def read_safe(path: str | os.PathLike, *, allow_missing_bands: bool = False,
              stack_bands: Sequence[str] | None = None,
              bands: Iterable[str] | None = None,
              cloud_probability_threshold: int = 65) -> SourceProduct:
    """Read a Sentinel-2 SAFE product (L1C or L2A, folder or ``.zip``) as a SourceProduct.

    Parameters
    ----------
    path
        The ``.SAFE`` folder (the suffix is not required) or a ``.zip`` of it.
    allow_missing_bands
        With the default band list, leave out the bands that are not on disk instead
        of refusing the product (partial downloads, trimmed samples); the bands left
        out are listed in ``metadata["missing_bands"]``. Bands asked for by name
        are always required.
    stack_bands
        Part of every reader's signature (:mod:`agriseries.io.detect`); a SAFE has one
        file per band, so giving it is a :class:`ConfigurationError`.
    bands
        Reflectance bands to take (default: every band of the level, 13 for L1C,
        12 for L2A). Bands not asked for need not be on disk: use it for partial
        downloads.
    cloud_probability_threshold
        L2A: ``MSK_CLDPRB`` percentage at or above which a pixel is CLOUD whatever
        SCL says (:func:`agriseries.core.masks.from_scl`); 0-100.

    Returns
    -------
    SourceProduct
        Reflectance assets (``scale = 1/Q``, ``offset = ADD_OFFSET/Q``, nodata 0),
        quality layers and decoder (see the module docstring for L1C vs L2A), ``aot``
        (L2A), sun and per-band view angle grids, tile grids, footprint clipped to
        the extent of the band files, and ``metadata`` with ``processing_baseline``,
        ``quantification_value``, ``add_offsets`` (DN per band), ``cloud_cover``,
        ``band_resolutions`` and ``quality_source``.

    Raises
    ------
    UnknownProductError
        Not a SAFE product, an incomplete one (no ``GRANULE/``, no product or tile
        metadata) or the unsupported pre-2016 multi-granule layout.
    CorruptProductError
        Truncated zip, unparseable XML, missing required metadata element, band file
        whose header cannot be read (a truncated JPEG 2000 body shows up later, in
        ``load``).
    MissingBandError
        A band that should be there (listed in the metadata, or asked for) is not on
        disk, or not listed at all; the message names the band and the file expected.
    ConfigurationError
        ``cloud_probability_threshold`` outside 0-100, an unknown band name, or
        ``stack_bands`` given.
    """
    if not 0 <= cloud_probability_threshold <= 100:
        raise ConfigurationError(
            f"cloud_probability_threshold={cloud_probability_threshold!r}: expected 0-100 (percent)")
    if stack_bands is not None:
        raise ConfigurationError(f"{path}: stack_bands names the bands of a multi-band stack; a "
                                 "Sentinel-2 SAFE has one file per band")
    c = _open_files(path)
    md = _read_metadata(c)
    wanted = _wanted_bands(c, md, bands)
    assets, missing = _reflectance_assets(c, md, wanted, allow_missing_bands and bands is None)
    if md.level == "L2A":
        quality, aux, decoder, quality_source = _l2a_layers(c, md, assets,
                                                            cloud_probability_threshold)
    else:
        quality, aux, decoder, quality_source = _l1c_layers(md, assets, wanted)
    metadata: dict[str, object] = {
        "processing_baseline": md.processing_baseline,
        "quantification_value": md.quantification_value,
        "add_offsets": dict(md.add_offsets),
        "cloud_cover": md.cloud_cover,
        "band_resolutions": {b: int(a.resolution) for b, a in assets.items()},
        "missing_bands": missing,
        "quality_source": quality_source,
        "nodata_dn": md.nodata_dn,
        "saturated_dn": md.saturated_dn,
        "product_metadata_file": c.gdal_path(md.product_mtd),
        "tile_metadata_file": c.gdal_path(md.tile_mtd),
        **md.extras,
    }
    if md.aot_quantification_value is not None:
        metadata["aot_quantification_value"] = md.aot_quantification_value
    atmosphere = read_atmosphere(c, md)
    if atmosphere:
        metadata["atmosphere"] = atmosphere
    return SourceProduct(
        path=c.given, product_id=md.product_id, level=md.level, sensor=md.sensor,
        producer=md.producer, datetime=md.datetime, crs=md.crs,
        footprint=_clip_footprint(md, list(assets.values())),
        bands=assets, quality=quality, mask_decoder=decoder if quality else None, aux=aux,
        sun_angles=md.sun_angles,
        view_angles={b: g for b, g in md.view_angles.items() if b in assets},
        tile=md.tile, native_grids=dict(md.native_grids), metadata=metadata,
    )


def _wanted_bands(c: ProductFiles, md: SafeMetadata, bands: Iterable[str] | None) -> list[str]:
    """The bands to read: every band of the level, or the ones asked for (checked)."""
    expected = L1C_BANDS if md.level == "L1C" else L2A_BANDS
    if bands is None:
        return list(expected)
    wanted = list(dict.fromkeys(bands))
    unknown = [b for b in wanted if b not in ESA_BAND_ORDER]
    if unknown:
        raise ConfigurationError(f"unknown Sentinel-2 band(s) {unknown}: expected some of "
                                 f"{', '.join(ESA_BAND_ORDER)}")
    absent = [b for b in wanted if b not in expected]
    if absent:
        raise MissingBandError(c.gdal_path(md.product_mtd),
                               f"{md.level} products have no band {', '.join(absent)}")
    return wanted


def _reflectance_assets(c: ProductFiles, md: SafeMetadata, wanted: Sequence[str],
                        skip_missing: bool) -> tuple[dict[str, Asset], list[str]]:
    """One asset per band (its file on disk), and the bands left out when ``skip_missing``."""
    q = md.quantification_value
    assets: dict[str, Asset] = {}
    missing: list[str] = []
    for b in wanted:
        try:
            rel, res = _pick_band_file(c, md, b)
        except MissingBandError:
            if skip_missing:
                missing.append(b)
                continue
            raise
        assets[b] = Asset(path=c.gdal_path(rel), band_index=1, scale=1.0 / q,
                          offset=md.add_offsets.get(b, 0.0) / q, nodata=float(md.nodata_dn),
                          resolution=float(res), kind="reflectance")
    return assets, missing


def _l2a_layers(c: ProductFiles, md: SafeMetadata, assets: Mapping[str, Asset],
                cloud_probability_threshold: int):
    """Sen2Cor's SCL (required) and MSK_CLDPRB, their decoder, and the AOT layer."""
    quality: dict[str, Asset] = {}
    aux: dict[str, Asset] = {}
    scl_rel, scl_res = _pick_aux_file(c, md.image_files.get("SCL", {}), (20, 60))
    if scl_rel is None:
        expected_rel = md.image_files.get("SCL", {}).get(20)
        raise MissingBandError(
            c.gdal_path(expected_rel) if expected_rel else c.gdal_path(md.product_mtd),
            "scene classification SCL (20 m or 60 m) not found on disk: it is needed for the mask")
    quality["SCL"] = Asset(path=c.gdal_path(scl_rel), resolution=float(scl_res), kind="quality")
    prb_rel, prb_res = _pick_aux_file(c, _cldprb_files(c, md), (20, 60))
    if prb_rel is not None:
        quality["CLDPRB"] = Asset(path=c.gdal_path(prb_rel), resolution=float(prb_res),
                                  kind="quality")
    decoder = functools.partial(decode_l2a, cloud_probability_threshold=cloud_probability_threshold)
    quality_source = " + ".join(f"{k}_{int(a.resolution)}m" for k, a in quality.items())
    finest = min(a.resolution for a in assets.values()) if assets else 20
    order = [r for r in _RESOLUTIONS if r >= finest] + [r for r in reversed(_RESOLUTIONS) if r < finest]
    aot_rel, aot_res = _pick_aux_file(c, md.image_files.get("AOT", {}), order)
    if aot_rel is not None and md.aot_quantification_value:
        aux["aot"] = Asset(path=c.gdal_path(aot_rel), scale=1.0 / md.aot_quantification_value,
                           offset=0.0, nodata=0.0, resolution=float(aot_res), kind="aux")
    return quality, aux, decoder, quality_source


def _l1c_layers(md: SafeMetadata, assets: Mapping[str, Asset], wanted: Sequence[str]):
    """L1C has no usable cloud layer: the DN of the finest band read gives the NODATA bit."""
    decoder = functools.partial(decode_l1c, nodata_dn=md.nodata_dn)
    quality: dict[str, Asset] = {}
    quality_source = "L1C, no cloud layer: no quality layer (no band selected)"
    if assets:
        ref = min(assets, key=lambda b: (assets[b].resolution, wanted.index(b)))
        quality["NODATA"] = Asset(path=assets[ref].path, resolution=assets[ref].resolution,
                                  kind="quality")
        quality_source = f"L1C, no cloud layer: NODATA where {ref} DN is {md.nodata_dn}"
    return quality, {}, decoder, quality_source


# --------------------------------------------------------------------------------------------
# auxiliary atmosphere (ECMWF / CAMS GRIB files of the granule)

#: GRIB element -> (key, factor): ECMWF ``AUX_ECMWFT`` total column water vapour in kg/m2
#: (/10 -> g/cm2), mean sea-level pressure in Pa (/100 -> hPa), total column ozone in kg/m2
#: (1 Dobson unit = 2.1415e-5 kg/m2 and 1000 DU = 1 cm-atm); CAMS ``AUX_CAMSFO`` parameter
#: 207 of ECMWF's local table 210 is the total aerosol optical depth at 550 nm.
_AUX_FIELDS = {
    "PWC": ("water_vapour", 0.1),
    "TCWV": ("water_vapour", 0.1),
    "MSL": ("pressure_msl", 0.01),
    "TCO3": ("ozone", 1.0 / 2.1415e-5 / 1000.0),
    "var207 of table 210 of center ECMWF": ("aot550", 1.0),
    "AOD550": ("aot550", 1.0),
}


def read_atmosphere(c: ProductFiles, md: SafeMetadata) -> dict[str, object]:
    """Scene-mean atmosphere from the granule's ``AUX_DATA`` GRIB files, when present.

    ESA puts the ECMWF forecast (``AUX_ECMWFT``: water vapour, sea-level pressure,
    ozone) in every L1C / L2A granule, and the CAMS aerosol forecast (``AUX_CAMSFO``)
    since 2019, as small GRIB grids over the tile. The values used for the
    atmospheric correction (:mod:`agriseries.l2a`) are their means over the grid
    (the grid is about 9 x 9 points over the 110 km tile): ``aot550`` (unitless),
    ``water_vapour`` (g/cm2), ``ozone`` (cm-atm), ``pressure_msl`` (hPa), with
    ``source`` naming the files. A file that GDAL cannot read is reported in
    ``errors`` and left out (the correction then uses its defaults): auxiliary
    data never makes the product unreadable.
    """
    granule = posixpath.dirname(md.tile_mtd)
    out: dict[str, object] = {}
    sources, errors = [], []
    for name in ("AUX_ECMWFT", "AUX_CAMSFO"):
        rel = posixpath.join(granule, "AUX_DATA", name)
        if c.find(rel) is None:
            continue
        path = c.gdal_path(rel)
        try:
            with rasterio.open(path) as src:
                for i in range(1, src.count + 1):
                    element = src.tags(i).get("GRIB_ELEMENT", "")
                    if element in _AUX_FIELDS:
                        key, factor = _AUX_FIELDS[element]
                        values = src.read(i).astype(np.float64)
                        values = values[np.isfinite(values)]
                        if values.size:
                            out[key] = round(float(values.mean()) * factor, 6)
            sources.append(name)
        except (RasterioIOError, OSError, ValueError) as exc:
            errors.append(f"{path}: {exc}")
    if sources:
        out["source"] = ", ".join(sources)
    if errors:
        out["errors"] = errors
    return out


def _on_disk(c: ProductFiles, rel: str) -> str | None:
    """The stored path of ``rel``, also accepting the other image extension (.jp2 / .tif)."""
    found = c.find(rel)
    if found is None:
        stem, ext = os.path.splitext(rel)
        if ext.lower() in (".jp2", ".tif"):
            found = c.find(stem + (".tif" if ext.lower() == ".jp2" else ".jp2"))
    return found


def _pick_band_file(c: ProductFiles, md: SafeMetadata, band: str) -> tuple[str, int]:
    """The band's file: native resolution, else the next coarser one on disk (L2A)."""
    listed = md.image_files.get(band, {})
    native = NATIVE_RESOLUTION[band]
    if not listed:
        suffix = "" if md.level == "L1C" else f"_{native}m"
        if md.listed_in_mtd:
            raise MissingBandError(
                c.gdal_path(md.product_mtd),
                f"band {band} is not listed in the product metadata (expected an IMAGE_FILE "
                f"ending in _{band}{suffix})")
        img_dir = md.tile_mtd.rsplit("/", 1)[0] + "/IMG_DATA"
        raise MissingBandError(c.gdal_path(img_dir),
                               f"no file for band {band} (expected a name ending in _{band}{suffix})")
    candidates = sorted(r for r in listed if r >= native) or sorted(listed)
    for res in candidates:
        found = _on_disk(c, listed[res])
        if found is not None:
            return found, res
    first = listed[candidates[0]]
    msg = (f"band {band} is listed in {md.product_mtd} but its file is missing on disk: "
           f"expected {first}")
    others = [listed[r] for r in candidates[1:]]
    if others:
        msg += f" (or a coarser one: {', '.join(others)})"
    raise MissingBandError(c.gdal_path(first), msg)


def _pick_aux_file(c: ProductFiles, listed: Mapping[int, str],
                   order: Iterable[int]) -> tuple[str | None, int | None]:
    for res in order:
        if res in listed:
            found = _on_disk(c, listed[res])
            if found is not None:
                return found, res
    return None, None


def _cldprb_files(c: ProductFiles, md: SafeMetadata) -> dict[int, str]:
    """MSK_CLDPRB files per resolution: from MTD_TL, else by name in QI_DATA."""
    files = dict(md.mask_files.get("CLDPRB", {}))
    if not files:
        qi = md.tile_mtd.rsplit("/", 1)[0].upper() + "/QI_DATA/"
        for rel in c.names:
            m = re.search(r"(?:MSK_CLDPRB|_CLD)_(\d{2})m\.(?:jp2|tif)$", rel, re.IGNORECASE)
            if rel.upper().startswith(qi) and m:
                files[int(m.group(1))] = rel
    return files


def _clip_footprint(md: SafeMetadata, assets: list[Asset]) -> Geometry | None:
    """The metadata footprint clipped to the extent common to the band files (EPSG:4326)."""
    if not assets:
        return md.footprint
    extent = None
    for a in assets:
        ext = file_geobox(a.path).extent
        extent = ext if extent is None else extent.intersection(ext)
    if md.footprint is None:
        return extent
    fp_utm = md.footprint.to_crs(extent.crs)
    if extent.buffer(1.0).contains(fp_utm):
        return md.footprint
    inter = fp_utm.intersection(extent)
    if inter.is_empty or inter.area <= 0:
        raise CorruptProductError(assets[0].path, "the band files do not overlap the footprint given "
                                  "in the product metadata")
    out = inter.to_crs("EPSG:4326")
    if md.footprint.boundingbox.right > 180.0:  # keep the antimeridian unwrapped, as the footprint
        out = Geometry(shapely.transform(out.geom, _unwrap_lon), "EPSG:4326")
    return out


def _unwrap_lon(xy: np.ndarray) -> np.ndarray:
    """Longitudes below 0 moved by +360 degrees (for shapes across the antimeridian)."""
    xy = np.array(xy, dtype=np.float64)
    xy[:, 0] = np.where(xy[:, 0] < 0.0, xy[:, 0] + 360.0, xy[:, 0])
    return xy
