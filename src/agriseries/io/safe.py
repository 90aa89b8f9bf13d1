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
from typing import Iterable, Mapping

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
    MissingBandError,
    UnknownProductError,
)
from ..core.grid import parse_tile
from ..core.masks import MaskBit, from_scl
from .product import AngleGrid, Asset, SourceProduct, file_geobox, nanmean_angles

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
_IMG_RE = re.compile(r"_(B\d[\dA]|SCL|AOT|WVP|TCI)(?:_(\d{2})m)?(\.jp2|\.tif)?$", re.IGNORECASE)
_TILE_RE = re.compile(r"_T(\d{2}[A-Z]{3})(?:_|$)")
_EXT = {"JPEG2000": ".jp2", "GEOTIFF": ".tif"}


# --------------------------------------------------------------------------------------------
# Detection and file access (folder or zip)


def is_safe(path: str | os.PathLike) -> bool:
    """True if ``path`` looks like a Sentinel-2 SAFE product (folder or ``.zip``).

    A folder must hold ``MTD_MSIL1C.xml`` or ``MTD_MSIL2A.xml`` and a ``GRANULE``
    folder; a zip must hold them at its root or under one top folder. Only names
    are looked at; nothing is parsed. Never raises.
    """
    p = Path(path)
    try:
        if p.is_dir():
            names = {n.name.upper(): n for n in p.iterdir()}
            has_mtd = any(_MTD_RE.match(n.name) for n in names.values())
            granule = names.get("GRANULE")
            return has_mtd and granule is not None and granule.is_dir()
        if p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                return _zip_layout(zf.namelist()) is not None
    except OSError:
        return False
    return False


def _zip_layout(names: Iterable[str]) -> tuple[str, str] | None:
    """``(prefix, mtd name)`` of a SAFE inside a zip (prefix ``'X.SAFE/'`` or ``''``)."""
    names = list(names)
    for n in names:
        m = _ZIP_MTD_RE.match(n)
        if m:
            prefix = f"{m.group(1)}/" if m.group(1) else ""
            if any(x.upper().startswith((prefix + "GRANULE/").upper()) for x in names):
                return prefix, m.group(2)
    return None


class _Container:
    """The files of a SAFE product, in a folder or a zip, by path relative to the product root."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.given = str(path)
        p = Path(path)
        if not p.exists():
            raise UnknownProductError(self.given, "no such file or folder; expected a Sentinel-2 "
                                      "SAFE folder or .zip")
        self.zip: Path | None = None
        self.prefix = ""
        if p.is_dir():
            if not is_safe(p):
                raise UnknownProductError(
                    self.given, "not a Sentinel-2 SAFE product: expected MTD_MSIL1C.xml or "
                    "MTD_MSIL2A.xml beside a GRANULE/ folder")
            self.root = p.resolve()
            self.name = p.resolve().name
            rels = []
            for dirpath, _dirs, files in os.walk(self.root):
                for f in files:
                    rels.append(Path(dirpath, f).relative_to(self.root).as_posix())
        else:
            if p.suffix.lower() != ".zip":
                raise UnknownProductError(self.given, "not a Sentinel-2 SAFE product: expected a "
                                          ".SAFE folder or a .zip archive of one")
            try:
                with zipfile.ZipFile(p) as zf:
                    names = [n for n in zf.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as exc:
                raise CorruptProductError(self.given, f"cannot read the zip archive: {exc}") from exc
            layout = _zip_layout(names)
            if layout is None:
                raise UnknownProductError(
                    self.given, "zip archive without a Sentinel-2 SAFE product: expected "
                    "MTD_MSIL1C.xml or MTD_MSIL2A.xml and GRANULE/ at its root or in one top folder")
            self.zip = p.resolve()
            self.root = self.zip
            self.prefix = layout[0]
            self.name = self.prefix.rstrip("/") or p.stem
            rels = [n[len(self.prefix):] for n in names if n.startswith(self.prefix)]
        self.files: dict[str, str] = {r.upper(): r for r in rels}

    def find(self, rel: str) -> str | None:
        """The stored relative path matching ``rel`` (case-insensitive), or None."""
        return self.files.get(rel.replace("\\", "/").upper())

    def gdal_path(self, rel: str) -> str:
        """A path GDAL can open for the relative path ``rel``."""
        if self.zip is not None:
            return f"/vsizip/{self.zip.as_posix()}/{self.prefix}{rel}"
        return str(self.root / rel)

    def read(self, rel: str) -> bytes:
        if self.zip is not None:
            try:
                with zipfile.ZipFile(self.zip) as zf:
                    return zf.read(self.prefix + rel)
            except (zipfile.BadZipFile, OSError, KeyError) as exc:
                raise CorruptProductError(self.gdal_path(rel), f"cannot read from the zip: {exc}") from exc
        try:
            return (self.root / rel).read_bytes()
        except OSError as exc:
            raise CorruptProductError(self.gdal_path(rel), f"cannot read the file: {exc}") from exc


# --------------------------------------------------------------------------------------------
# XML helpers


def _parse_xml(container: _Container, rel: str) -> etree._Element:
    """Parse one XML file, namespaces stripped, or raise CorruptProductError naming it."""
    where = container.gdal_path(rel)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(container.read(rel), parser)
    except etree.XMLSyntaxError as exc:
        raise CorruptProductError(where, f"cannot parse the XML metadata: {exc}") from exc
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]
    return root


def _text(root: etree._Element, xpath: str, where: str, required: bool = True) -> str | None:
    el = root.find(xpath)
    if el is None or el.text is None or not el.text.strip():
        if required:
            raise CorruptProductError(where, f"metadata element {xpath.lstrip('./')} is missing or empty")
        return None
    return el.text.strip()


def _float(root: etree._Element, xpath: str, where: str, required: bool = True) -> float | None:
    txt = _text(root, xpath, where, required)
    if txt is None:
        return None
    try:
        return float(txt)
    except ValueError:
        raise CorruptProductError(where, f"metadata element {xpath.lstrip('./')} is not a number: "
                                  f"{txt!r}") from None


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
    return _read_metadata(_Container(path))


def _read_metadata(c: _Container) -> SafeMetadata:
    mtd_rel = next((r for r in c.files.values() if "/" not in r and _MTD_RE.match(r)), None)
    if mtd_rel is None:  # pragma: no cover - guarded by _Container
        raise UnknownProductError(c.given, "no MTD_MSIL1C.xml or MTD_MSIL2A.xml")
    level = "L" + _MTD_RE.match(mtd_rel).group(1).upper()
    tl_rels = sorted(r for r in c.files.values()
                     if re.match(r"^GRANULE/[^/]+/MTD_TL\.xml$", r, re.IGNORECASE))
    if len(tl_rels) != 1:
        raise UnknownProductError(
            c.given, f"expected exactly one GRANULE/<granule>/MTD_TL.xml, found {len(tl_rels)}"
            + (" (the pre-2016 multi-granule SAFE layout is not supported)" if tl_rels else ""))
    tl_rel = tl_rels[0]
    granule_dir = tl_rel.rsplit("/", 1)[0]
    mtd_where, tl_where = c.gdal_path(mtd_rel), c.gdal_path(tl_rel)
    mtd = _parse_xml(c, mtd_rel)
    tl = _parse_xml(c, tl_rel)

    # --- identity
    uri = _text(mtd, ".//Product_Info/PRODUCT_URI", mtd_where, required=False)
    name = uri or c.name
    product_id = re.sub(r"\.SAFE$", "", re.sub(r"\.zip$", "", name, flags=re.I), flags=re.I)
    spacecraft = _text(mtd, ".//SPACECRAFT_NAME", mtd_where)
    try:
        sensor = sensor_name(spacecraft)
    except ConfigurationError as exc:
        raise CorruptProductError(mtd_where, f"SPACECRAFT_NAME: {exc}") from None
    start = _text(mtd, ".//Product_Info/PRODUCT_START_TIME", mtd_where, required=False)
    if start is not None:
        when = _parse_time(start, mtd_where)
    else:
        when = _parse_time(_text(tl, ".//SENSING_TIME", tl_where), tl_where)
    baseline = _text(mtd, ".//PROCESSING_BASELINE", mtd_where)

    tile_id = _text(tl, ".//TILE_ID", tl_where, required=False) or ""
    m = _TILE_RE.search(tile_id) or _TILE_RE.search(product_id)
    if not m:
        raise CorruptProductError(tl_where, f"no MGRS tile id (_Tzzbbb_) in TILE_ID {tile_id!r} "
                                  f"nor in the product name {product_id!r}")
    try:
        tile = parse_tile(m.group(1)).name
    except ConfigurationError as exc:
        raise CorruptProductError(tl_where, f"bad tile id: {exc}") from None

    # --- band ids and radiometry
    band_ids = dict(enumerate(ESA_BAND_ORDER))
    spectral = {}
    for el in mtd.iter("Spectral_Information"):
        bid, phys = el.get("bandId"), el.get("physicalBand")
        if bid is not None and phys:
            band_ids[int(bid)] = _band_name(phys)
            wl = el.find("./Wavelength/CENTRAL")
            if wl is not None and wl.text:
                spectral[_band_name(phys)] = float(wl.text)
    if level == "L1C":
        q = _float(mtd, ".//QUANTIFICATION_VALUE", mtd_where)
        off_tag = "RADIO_ADD_OFFSET"
    else:
        q = _float(mtd, ".//BOA_QUANTIFICATION_VALUE", mtd_where)
        off_tag = "BOA_ADD_OFFSET"
    if not q or q <= 0:
        raise CorruptProductError(mtd_where, f"quantification value {q!r} must be positive")
    offsets = {b: 0.0 for b in band_ids.values()}
    for el in mtd.iter(off_tag):
        bid = el.get("band_id") or el.get("bandId")
        if bid is None or not el.text:
            raise CorruptProductError(mtd_where, f"{off_tag} without band_id or value")
        offsets[band_ids.get(int(bid), str(bid))] = float(el.text)
    aot_q = _float(mtd, ".//AOT_QUANTIFICATION_VALUE", mtd_where, required=False)
    nodata_dn, saturated_dn = 0, None
    for el in mtd.iter("Special_Values"):
        kind = (el.findtext("SPECIAL_VALUE_TEXT") or "").strip().upper()
        idx = el.findtext("SPECIAL_VALUE_INDEX")
        if idx is None:
            continue
        if kind == "NODATA":
            nodata_dn = int(idx)
        elif kind == "SATURATED":
            saturated_dn = int(idx)
    cloud = _float(mtd, ".//Cloud_Coverage_Assessment", mtd_where, required=False)

    # --- files listed in the product metadata
    image_files: dict[str, dict[int, str]] = {}
    listed = False
    for gran in mtd.iter("Granule"):
        ext = _EXT.get((gran.get("imageFormat") or "JPEG2000").upper(), ".jp2")
        for el in gran:
            if not (isinstance(el.tag, str) and el.tag.startswith("IMAGE_FILE")) or not el.text:
                continue
            listed = True
            rel = el.text.strip()
            mm = _IMG_RE.search(rel)
            if not mm:
                continue
            if not mm.group(3):
                rel += ext
            key = mm.group(1).upper()
            if key.startswith("B"):
                key = _band_name(key)
            res = int(mm.group(2)) if mm.group(2) else NATIVE_RESOLUTION.get(key, 10)
            image_files.setdefault(key, {})[res] = rel
    if not listed:  # no IMAGE_FILE list: take what is in the granule's IMG_DATA folder
        for rel in c.files.values():
            if rel.upper().startswith((granule_dir + "/IMG_DATA/").upper()):
                mm = _IMG_RE.search(rel)
                if mm and mm.group(3):
                    key = mm.group(1).upper()
                    key = _band_name(key) if key.startswith("B") else key
                    res = int(mm.group(2)) if mm.group(2) else NATIVE_RESOLUTION.get(key, 10)
                    image_files.setdefault(key, {})[res] = rel

    # --- footprint
    fp_txt = _text(mtd, ".//Global_Footprint/EXT_POS_LIST", mtd_where, required=False)
    footprint = _footprint(fp_txt, mtd_where) if fp_txt else None

    # --- tile geocoding
    crs = _text(tl, ".//Tile_Geocoding/HORIZONTAL_CS_CODE", tl_where)
    sizes = {int(el.get("resolution")): el for el in tl.iter("Size") if el.get("resolution")}
    native_grids: dict[int, GeoBox] = {}
    for el in tl.iter("Geoposition"):
        res = int(el.get("resolution") or 0)
        if res not in sizes:
            continue
        ulx, uly = _float(el, "ULX", tl_where), _float(el, "ULY", tl_where)
        xdim, ydim = _float(el, "XDIM", tl_where), _float(el, "YDIM", tl_where)
        nrows = int(_float(sizes[res], "NROWS", tl_where))
        ncols = int(_float(sizes[res], "NCOLS", tl_where))
        native_grids[res] = GeoBox((nrows, ncols), Affine(xdim, 0.0, ulx, 0.0, ydim, uly), crs)
    if not native_grids:
        raise CorruptProductError(tl_where, "no Tile_Geocoding Geoposition/Size pair")
    ul = next(iter(native_grids.values())).affine
    x0, y0 = ul.c, ul.f

    # --- angles
    sun = None
    sun_el = tl.find(".//Sun_Angles_Grid")
    if sun_el is not None:
        sun = _angle_grid([sun_el], x0, y0, crs, tl_where)
    per_band: dict[str, list[etree._Element]] = {}
    for el in tl.iter("Viewing_Incidence_Angles_Grids"):
        bid = el.get("bandId")
        if bid is None:
            continue
        per_band.setdefault(band_ids.get(int(bid), f"band{bid}"), []).append(el)
    view = {b: _angle_grid(els, x0, y0, crs, tl_where)
            for b, els in sorted(per_band.items(), key=lambda kv: ESA_BAND_ORDER.index(kv[0])
                                 if kv[0] in ESA_BAND_ORDER else 99)}

    # --- quality masks listed in the tile metadata
    mask_files: dict[str, dict[int, str]] = {}
    for el in tl.iter("MASK_FILENAME"):
        if el.get("type") == "MSK_CLDPRB" and el.text:
            rel = el.text.strip()
            mm = re.search(r"_(\d{2})m(\.\w+)?$", rel)
            if mm:
                mask_files.setdefault("CLDPRB", {})[int(mm.group(1))] = rel

    extras: dict[str, object] = {}
    u = _float(mtd, ".//Reflectance_Conversion/U", mtd_where, required=False)
    if u is not None:
        extras["reflectance_conversion_u"] = u
    nodata_pct = _float(mtd, ".//NODATA_PIXEL_PERCENTAGE", mtd_where, required=False)
    if nodata_pct is None:
        nodata_pct = _float(tl, ".//NODATA_PIXEL_PERCENTAGE", tl_where, required=False)
    if nodata_pct is not None:
        extras["nodata_pixel_percentage"] = nodata_pct
    msz = _float(tl, ".//Mean_Sun_Angle/ZENITH_ANGLE", tl_where, required=False)
    msa = _float(tl, ".//Mean_Sun_Angle/AZIMUTH_ANGLE", tl_where, required=False)
    if msz is not None and msa is not None:
        extras["mean_sun_angles"] = {"zenith": msz, "azimuth": msa}
    mean_view = {}
    for el in tl.iter("Mean_Viewing_Incidence_Angle"):
        bid = el.get("bandId")
        z, a = el.findtext("ZENITH_ANGLE"), el.findtext("AZIMUTH_ANGLE")
        if bid is not None and z and a:
            mean_view[band_ids.get(int(bid), bid)] = {"zenith": float(z), "azimuth": float(a)}
    if mean_view:
        extras["mean_view_angles"] = mean_view
    if spectral:
        extras["central_wavelength_nm"] = spectral

    return SafeMetadata(
        path=c.given, product_id=product_id, level=level, sensor=sensor,
        producer="ESA" if level == "L1C" else "SEN2COR", datetime=when, tile=tile, crs=crs,
        processing_baseline=baseline, quantification_value=q, add_offsets=offsets,
        aot_quantification_value=aot_q, nodata_dn=nodata_dn, saturated_dn=saturated_dn,
        cloud_cover=cloud, footprint=footprint, native_grids=native_grids, sun_angles=sun,
        view_angles=view, image_files=image_files, mask_files=mask_files, product_mtd=mtd_rel,
        tile_mtd=tl_rel, listed_in_mtd=listed, extras=extras,
    )


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
            cs, rs = _float(part, "COL_STEP", where), _float(part, "ROW_STEP", where)
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


def read_safe(path: str | os.PathLike, cloud_probability_threshold: int = 65, *,
              bands: Iterable[str] | None = None,
              allow_missing_bands: bool = False) -> SourceProduct:
    """Read a Sentinel-2 SAFE product (L1C or L2A, folder or ``.zip``) as a SourceProduct.

    Parameters
    ----------
    path
        The ``.SAFE`` folder (the suffix is not required) or a ``.zip`` of it.
    cloud_probability_threshold
        L2A: ``MSK_CLDPRB`` percentage at or above which a pixel is CLOUD whatever
        SCL says (:func:`agriseries.core.masks.from_scl`); 0-100.
    bands
        Reflectance bands to take (default: every band of the level, 13 for L1C,
        12 for L2A). Bands not asked for need not be on disk: use it for partial
        downloads.
    allow_missing_bands
        With the default band list, leave out the bands that are not on disk instead
        of refusing the product (partial downloads, trimmed samples); the bands left
        out are listed in ``metadata["missing_bands"]``. Bands asked for by name
        are always required.

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
        Not a SAFE product (or the unsupported pre-2016 multi-granule layout).
    CorruptProductError
        Unparseable XML, missing required metadata element, band file whose header
        cannot be read (a truncated JPEG 2000 body shows up later, in ``load``).
    MissingBandError
        A band that should be there (listed in the metadata, or asked for) is not on
        disk, or not listed at all; the message names the band and the file expected.
    ConfigurationError
        ``cloud_probability_threshold`` outside 0-100, or an unknown band name.
    """
    if not 0 <= cloud_probability_threshold <= 100:
        raise ConfigurationError(
            f"cloud_probability_threshold={cloud_probability_threshold!r}: expected 0-100 (percent)")
    c = _Container(path)
    md = _read_metadata(c)
    expected = L1C_BANDS if md.level == "L1C" else L2A_BANDS
    if bands is None:
        wanted = list(expected)
    else:
        wanted = list(dict.fromkeys(bands))
        unknown = [b for b in wanted if b not in ESA_BAND_ORDER]
        if unknown:
            raise ConfigurationError(f"unknown Sentinel-2 band(s) {unknown}: expected some of "
                                     f"{', '.join(ESA_BAND_ORDER)}")
        absent = [b for b in wanted if b not in expected]
        if absent:
            raise MissingBandError(c.gdal_path(md.product_mtd),
                                   f"{md.level} products have no band {', '.join(absent)}")

    q = md.quantification_value
    assets: dict[str, Asset] = {}
    missing: list[str] = []
    for b in wanted:
        try:
            rel, res = _pick_band_file(c, md, b)
        except MissingBandError:
            if allow_missing_bands and bands is None:
                missing.append(b)
                continue
            raise
        assets[b] = Asset(path=c.gdal_path(rel), band_index=1, scale=1.0 / q,
                          offset=md.add_offsets.get(b, 0.0) / q, nodata=float(md.nodata_dn),
                          resolution=float(res), kind="reflectance")

    quality: dict[str, Asset] = {}
    aux: dict[str, Asset] = {}
    if md.level == "L2A":
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
    else:
        decoder = functools.partial(decode_l1c, nodata_dn=md.nodata_dn)
        quality_source = "L1C, no cloud layer: no quality layer (no band selected)"
        if assets:
            ref = min(assets, key=lambda b: (assets[b].resolution, wanted.index(b)))
            quality["NODATA"] = Asset(path=assets[ref].path, resolution=assets[ref].resolution,
                                      kind="quality")
            quality_source = f"L1C, no cloud layer: NODATA where {ref} DN is {md.nodata_dn}"

    footprint = _clip_footprint(md, list(assets.values()))

    metadata: dict[str, object] = {
        "processing_baseline": md.processing_baseline,
        "quantification_value": q,
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
        producer=md.producer, datetime=md.datetime, crs=md.crs, footprint=footprint,
        bands=assets, quality=quality, mask_decoder=decoder if quality else None, aux=aux,
        sun_angles=md.sun_angles,
        view_angles={b: g for b, g in md.view_angles.items() if b in assets},
        tile=md.tile, native_grids=dict(md.native_grids), metadata=metadata,
    )


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


def read_atmosphere(c: _Container, md: SafeMetadata) -> dict[str, object]:
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


def _on_disk(c: _Container, rel: str) -> str | None:
    """The stored path of ``rel``, also accepting the other image extension (.jp2 / .tif)."""
    found = c.find(rel)
    if found is None:
        stem, ext = os.path.splitext(rel)
        if ext.lower() in (".jp2", ".tif"):
            found = c.find(stem + (".tif" if ext.lower() == ".jp2" else ".jp2"))
    return found


def _pick_band_file(c: _Container, md: SafeMetadata, band: str) -> tuple[str, int]:
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


def _pick_aux_file(c: _Container, listed: Mapping[int, str],
                   order: Iterable[int]) -> tuple[str | None, int | None]:
    for res in order:
        if res in listed:
            found = _on_disk(c, listed[res])
            if found is not None:
                return found, res
    return None, None


def _cldprb_files(c: _Container, md: SafeMetadata) -> dict[int, str]:
    """MSK_CLDPRB files per resolution: from MTD_TL, else by name in QI_DATA."""
    files = dict(md.mask_files.get("CLDPRB", {}))
    if not files:
        qi = md.tile_mtd.rsplit("/", 1)[0].upper() + "/QI_DATA/"
        for up, rel in c.files.items():
            m = re.search(r"(?:MSK_CLDPRB|_CLD)_(\d{2})m\.(?:jp2|tif)$", up, re.IGNORECASE)
            if up.startswith(qi) and m:
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
