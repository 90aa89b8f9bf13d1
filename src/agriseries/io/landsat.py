"""The reader of USGS Landsat 8 and 9 Collection 2 products (Level-1 and Level-2).

What lives here:

* the three parsers of the product metadata file (``*_MTL.txt`` in ODL, ``*_MTL.xml``,
  ``*_MTL.json``), each giving the same nested dict
  ``{"LANDSAT_METADATA_FILE": {group: {key: text}}}`` (values are the text USGS wrote,
  quotes removed): :func:`parse_mtl_odl`, :func:`parse_mtl_xml`,
  :func:`parse_mtl_json`, and :func:`read_mtl` which picks one by file name;
* :func:`is_landsat` (does a path hold a Landsat 8/9 Collection 2 product?) and
  :func:`read_landsat`, which turns a product folder or its MTL file into a
  :class:`~agriseries.io.product.SourceProduct`. Pixels are read later by
  :func:`agriseries.io.product.load`.

What the reader gives
---------------------
Level-2 (``L2SP``, ``L2SR``; ``level="L2A"``, ``producer="LASRC"``)
    Bands ``B1`` ... ``B7`` from ``SR_B1`` ... ``SR_B7``, surface reflectance
    ``DN * REFLECTANCE_MULT_BAND_x + REFLECTANCE_ADD_BAND_x`` (group
    ``LEVEL2_SURFACE_REFLECTANCE_PARAMETERS``; 2.75e-05 and -0.2 in Collection 2),
    no data 0. ``ST_B10`` (``L2SP`` only) becomes the aux layer
    ``surface_temperature`` in kelvin (``TEMPERATURE_MULT/ADD_BAND_ST_B10``, no data 0).
Level-1 (``L1TP``, ``L1GT``, ``L1GS``; ``level="L1C"``, ``producer="USGS"``)
    Bands ``B1`` ... ``B9`` (``B8`` is the 15 m panchromatic band) as top-of-atmosphere
    reflectance. USGS's formula is ``rho = (M * DN + A) / sin(sun_elevation)``; the
    loader only applies ``DN * scale + offset``, so the reader folds the division
    into both: ``scale = M / sin(e)``, ``offset = A / sin(e)`` with ``e`` the scene
    centre ``SUN_ELEVATION``. Away from the scene centre the sun elevation differs by
    up to about one degree, a relative error below 2 % on reflectance at mid
    latitudes (more at very low sun). The thermal bands B10/B11 are left out: their
    brightness temperature ``K2 / ln(K1 / L + 1)`` is not linear in DN and cannot be
    written as an :class:`~agriseries.io.product.Asset`.
Quality (both levels)
    ``QA_PIXEL`` and ``QA_RADSAT``, decoded by
    :func:`agriseries.core.masks.from_qa_pixel` (bits checked against the
    ``classification:bitfields`` of USGS's STAC items in the tests).
Angles
    Sun: the scene-centre ``SUN_AZIMUTH`` and ``90 - SUN_ELEVATION`` as a 1 x 1
    :class:`~agriseries.io.product.AngleGrid`. View: Landsat looks within +-7.5
    degrees of nadir; without angle bands the view zenith is taken as 0 (nadir, and
    azimuth 0, meaningless at nadir) for every band -- an approximation of up to 7.5
    degrees at the swath edges. When the per-pixel angle bands of the Level-1
    bundle (``*_VZA.TIF``, ``*_VAA.TIF``, ``*_SZA.TIF``, ``*_SAA.TIF``, int16,
    hundredths of a degree, band 4 geometry) are next to the MTL (named in its
    ``PRODUCT_CONTENTS`` or ``LEVEL1_PROCESSING_RECORD`` group), they are used instead,
    as aux layers ``view_zenith``, ``view_azimuth``, ``sun_zenith``, ``sun_azimuth``
    (scale 0.01, degrees) and the corresponding angle grid is dropped: a per-pixel
    :class:`~agriseries.io.product.AngleGrid` of a full 30 m scene would be two
    7000 x 7000 float64 arrays in memory. Azimuths from angle bands keep USGS's
    -180 to 180 range and are resampled bilinearly like any aux layer (wrong only
    across the +-180 cut, which view azimuths cross at nadir where the zenith is ~0).
    Being aux layers, they are loaded whatever ``load``'s ``angles`` argument says.
Geometry
    CRS from ``PROJECTION_ATTRIBUTES``: ``UTM`` gives EPSG:326zz (Collection 2 uses
    northern-hemisphere zones everywhere, negative northings in the south); ``PS``
    (polar stereographic, Antarctica) gives the matching EPSG code (3031 for
    ``TRUE_SCALE_LAT -71``, ``VERTICAL_LON_FROM_POLE 0``) or a PROJ definition. The
    footprint is the product rectangle from the ``CORNER_*_PROJECTION_*_PRODUCT``
    values (pixel centres, widened by half a pixel) in the product CRS -- exact,
    and free of antimeridian trouble; the ``CORNER_*_LAT/LON_PRODUCT`` values are
    used only when the projected ones are missing. Pixel placement always comes from
    the files' own georeferencing (the tests use scenes downsampled to ~450 m while
    their MTL says 30 m): the native grid is that of the first band file, and asset
    resolutions are the MTL's nominal sizes scaled by the file/MTL pixel-size ratio.

Collection 1 and pre-collection MTL files (``L1_METADATA_FILE``) are not read:
their quality band (``BQA``) has other bits. Landsat 4-7 are refused (other bands).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon
from pyproj import CRS as _ProjCRS
from pyproj.exceptions import CRSError

from ..core.bands import sensor_name
from ..core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    MissingBandError,
    UnknownProductError,
)
from ..core.masks import from_qa_pixel
from .files import file_geobox
from .product import AngleGrid, Asset, SourceProduct

__all__ = [
    "MTL_SUFFIXES",
    "decode_quality",
    "diagnose",
    "find_mtl",
    "is_landsat",
    "parse_mtl_json",
    "parse_mtl_odl",
    "parse_mtl_xml",
    "read_landsat",
    "read_mtl",
]

#: Metadata file suffixes, in order of preference when a folder holds several.
MTL_SUFFIXES = ("_MTL.txt", "_MTL.xml", "_MTL.json")

#: The root group of a Collection 2 MTL (Collection 1 used ``L1_METADATA_FILE``).
C2_ROOT = "LANDSAT_METADATA_FILE"

#: ``PROCESSING_LEVEL`` -> (agriseries level, producer).
LEVELS = {
    "L2SP": ("L2A", "LASRC"),
    "L2SR": ("L2A", "LASRC"),
    "L1TP": ("L1C", "USGS"),
    "L1GT": ("L1C", "USGS"),
    "L1GS": ("L1C", "USGS"),
}

#: Reflective bands read from each level.
L2_BANDS = tuple(f"B{i}" for i in range(1, 8))
L1_BANDS = tuple(f"B{i}" for i in range(1, 10))

#: Quality layers: name -> ``PRODUCT_CONTENTS`` key.
QUALITY_KEYS = {
    "QA_PIXEL": "FILE_NAME_QUALITY_L1_PIXEL",
    "QA_RADSAT": "FILE_NAME_QUALITY_L1_RADIOMETRIC_SATURATION",
}

#: Per-pixel angle bands of the Level-1 bundle: aux variable -> MTL key.
ANGLE_KEYS = {
    "view_zenith": "FILE_NAME_ANGLE_SENSOR_ZENITH_BAND_4",
    "view_azimuth": "FILE_NAME_ANGLE_SENSOR_AZIMUTH_BAND_4",
    "sun_zenith": "FILE_NAME_ANGLE_SOLAR_ZENITH_BAND_4",
    "sun_azimuth": "FILE_NAME_ANGLE_SOLAR_AZIMUTH_BAND_4",
}

#: Angle bands are int16 hundredths of a degree.
ANGLE_SCALE = 0.01

Mtl = dict[str, dict[str, dict[str, str]]]

_SPACECRAFT_RE = re.compile(r"SPACECRAFT_ID\W{1,6}LANDSAT_[89]\b")
#: File names of Landsat products: Collection 1/2 ids (``LE07_L2SP_021030_20100109_20200911_02_T1_``)
#: and pre-collection scene ids (``LC80130312015295LGN00_``).
_FILE_RE = re.compile(r"^(L[COTEM]0\d_L[12][A-Z0-9]{2}_\d{6}_\d{8}_\d{8}_\d{2}_[A-Z0-9]{2}_"
                      r"|L[COTEM]\d\d{13}[A-Z]{3}\d\d_)", re.IGNORECASE)
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?Z?$")


# --------------------------------------------------------------------------- parsers


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_mtl_odl(text: str, source: str | Path = "<text>") -> Mtl:
    """Parse an ODL ``*_MTL.txt`` (``GROUP = X`` ... ``END_GROUP = X``, ``KEY = value``).

    Parameters
    ----------
    text
        The file content.
    source
        The file name, for error messages.

    Returns
    -------
    dict
        ``{root: {group: {key: value}}}`` with quotes removed from values.

    Raises
    ------
    CorruptProductError
        A line is not ``KEY = value``, groups do not nest, or nothing was found.
    """
    root: str | None = None
    out: Mtl = {}
    stack: list[str] = []
    ended = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise CorruptProductError(source, f"line {lineno}: text after END: {raw[:60]!r}")
        if line == "END":
            ended = True
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise CorruptProductError(
                source, f"line {lineno}: expected 'KEY = value' (ODL metadata), got {raw[:60]!r}"
            )
        value = _unquote(value)
        if key == "GROUP":
            if not stack:
                if root is not None:
                    raise CorruptProductError(source, f"line {lineno}: a second root GROUP {value}")
                root = value
                out[root] = {}
            else:
                out[root].setdefault(value, {})
            stack.append(value)
        elif key == "END_GROUP":
            if not stack or stack[-1] != value:
                expected = stack[-1] if stack else "no open group"
                raise CorruptProductError(
                    source, f"line {lineno}: END_GROUP = {value} but the open group is {expected}"
                )
            stack.pop()
        else:
            if len(stack) < 2:
                raise CorruptProductError(
                    source, f"line {lineno}: {key} outside any metadata group"
                )
            out[root][stack[-1]][key] = value
    if stack:
        raise CorruptProductError(source, f"group {stack[-1]} is never closed (file truncated?)")
    if root is None or not out[root]:
        raise CorruptProductError(source, "no metadata group found: not an MTL file")
    return out


def parse_mtl_xml(data: bytes | str, source: str | Path = "<xml>") -> Mtl:
    """Parse a ``*_MTL.xml``: root element, one child per group, one grandchild per key.

    Returns the same structure as :func:`parse_mtl_odl`.

    Raises
    ------
    CorruptProductError
        Not well-formed XML, or not two levels of elements under the root.
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    try:
        root = etree.fromstring(data.encode() if isinstance(data, str) else data, parser)
    except etree.XMLSyntaxError as exc:
        raise CorruptProductError(source, f"not well-formed XML: {exc}") from exc
    groups: dict[str, dict[str, str]] = {}
    for group in root:
        if not isinstance(group.tag, str):
            continue
        if len(group) == 0:
            raise CorruptProductError(
                source, f"<{group.tag}> directly under <{root.tag}>: expected a group of keys"
            )
        groups[group.tag] = {
            el.tag: (el.text or "").strip() for el in group if isinstance(el.tag, str)
        }
    if not groups:
        raise CorruptProductError(source, f"<{root.tag}> holds no metadata group: not an MTL file")
    return {root.tag: groups}


def parse_mtl_json(text: str, source: str | Path = "<json>") -> Mtl:
    """Parse a ``*_MTL.json`` (``{root: {group: {key: "value"}}}``).

    Returns the same structure as :func:`parse_mtl_odl`.

    Raises
    ------
    CorruptProductError
        Not JSON, or not three levels of objects with string values.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptProductError(source, f"not valid JSON: {exc}") from exc
    ok = (isinstance(doc, dict) and len(doc) == 1
          and all(isinstance(g, dict) for g in doc.values()))
    if ok:
        (root, groups), = doc.items()
        ok = bool(groups) and all(
            isinstance(g, dict) and all(isinstance(v, (str, int, float)) for v in g.values())
            for g in groups.values()
        )
    if not ok:
        raise CorruptProductError(
            source, "expected {root: {group: {key: value}}} (a Landsat MTL in JSON)"
        )
    return {root: {g: {k: str(v) for k, v in kv.items()} for g, kv in groups.items()}}


def read_mtl(path: str | Path) -> Mtl:
    """Read and parse a metadata file, choosing the parser by its suffix (txt, xml, json).

    Raises
    ------
    CorruptProductError
        The file cannot be read or parsed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptProductError(path, f"cannot read the metadata file: {exc}") from exc
    name = path.name.lower()
    if name.endswith(".xml"):
        return parse_mtl_xml(data, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptProductError(path, f"not a text file ({exc}): expected a Landsat MTL") from exc
    if name.endswith(".json"):
        return parse_mtl_json(text, path)
    return parse_mtl_odl(text, path)


# ------------------------------------------------------------------- locating the MTL


def _mtl_stem(name: str) -> str | None:
    for suffix in MTL_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_mtl(path: str | Path) -> Path:
    """The metadata file of a product: ``path`` itself, or the one ``*_MTL.*`` in a folder.

    When a folder holds the same product's MTL in several formats, the ODL ``.txt``
    is preferred, then ``.xml``, then ``.json``.

    Raises
    ------
    UnknownProductError
        The path does not exist, is not an MTL file, holds no MTL, or holds the MTL
        files of several products.
    """
    p = Path(path)
    if p.is_file():
        if _mtl_stem(p.name) is None:
            raise UnknownProductError(
                p, "expected a Landsat product folder or its *_MTL.txt / *_MTL.xml file"
            )
        return p
    if not p.is_dir():
        raise UnknownProductError(p, "no such file or folder")
    found = _mtl_files(p)
    if not found:
        raise UnknownProductError(
            p, "no *_MTL.txt, *_MTL.xml or *_MTL.json file: not a Landsat Collection 2 product"
        )
    if len(found) > 1:
        raise UnknownProductError(
            p, f"metadata of several products in one folder ({', '.join(sorted(found))}): "
            "pass the MTL file of the one to read"
        )
    files = next(iter(found.values()))
    return min(files, key=lambda f: [f.name.endswith(s) for s in MTL_SUFFIXES].index(True))


def _mtl_files(folder: Path) -> dict[str, list[Path]]:
    """The MTL files of a folder, by product (file stem)."""
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        stem = _mtl_stem(f.name)
        if stem is not None and f.is_file():
            found.setdefault(stem, []).append(f)
    return found


def is_landsat(path: str | Path) -> bool:
    """True if ``path`` is a Landsat 8/9 Collection 2 product folder or its MTL file.

    The check is cheap: the MTL must exist, have Collection 2's root group
    (``LANDSAT_METADATA_FILE``) and name ``LANDSAT_8`` or ``LANDSAT_9`` as
    spacecraft. Collection 1 and pre-collection products answer ``False``. Never
    raises.
    """
    try:
        mtl = find_mtl(path)
        text = mtl.read_text(encoding="utf-8", errors="replace")
    except (UnknownProductError, OSError):
        return False
    return C2_ROOT in text[:2000] and _SPACECRAFT_RE.search(text) is not None


def diagnose(path: str | Path) -> InputProductError | None:
    """What is wrong with a path that looks like a Landsat product but is not a readable one.

    The error :func:`read_landsat` raises for an MTL that :func:`is_landsat` turns down
    (Landsat 1-7, Collection 1, unreadable or corrupt), or an "MTL missing" error for a
    folder of Landsat band files (``LE07_L2SP_..._SR_B4.TIF``, ``LC80130312015295LGN00_B1.TIF``)
    without one. None for a readable product or a path that does not look like Landsat.
    Never raises.
    """
    p = Path(path)
    try:
        if p.is_dir():
            found = _mtl_files(p)
            if len(found) > 1:
                return UnknownProductError(
                    p, f"metadata of several Landsat products in one folder "
                       f"({', '.join(sorted(found))}): pass the MTL file of the one to read")
            if not found:
                named = sorted(f.name for f in p.iterdir() if _FILE_RE.match(f.name))
                if not named:
                    return None
                return UnknownProductError(
                    p, f"Landsat product folder without its metadata: no *_MTL.txt, *_MTL.xml or "
                       f"*_MTL.json beside its {len(named)} Landsat file(s) ({named[0]} ...); "
                       "expected the MTL file USGS ships with the bands")
        elif not (p.is_file() and _mtl_stem(p.name) is not None):
            return None
        mtl = find_mtl(p)
        if is_landsat(mtl):
            return None
        _identify(mtl)
    except InputProductError as exc:
        return exc
    except OSError:
        return None
    return None


# -------------------------------------------------------------------- metadata access


class _Fields:
    """Typed access to the groups of one MTL, errors naming the file, group and key."""

    def __init__(self, groups: Mapping[str, Mapping[str, str]], source: Path) -> None:
        self.groups = groups
        self.source = source

    def get(self, group: str, key: str) -> str | None:
        return self.groups.get(group, {}).get(key)

    def text(self, group: str, key: str) -> str:
        value = self.get(group, key)
        if value is None or value == "":
            raise CorruptProductError(self.source, f"{group}/{key} missing from the metadata")
        return value

    def number(self, group: str, key: str) -> float:
        value = self.text(group, key)
        try:
            out = float(value)
        except ValueError:
            raise CorruptProductError(
                self.source, f"{group}/{key} = {value!r}: expected a number"
            ) from None
        if not math.isfinite(out):
            raise CorruptProductError(self.source, f"{group}/{key} = {value!r}: not finite")
        return out

    def optional_number(self, group: str, key: str) -> float | None:
        return None if self.get(group, key) in (None, "") else self.number(group, key)

    def file(self, key: str, what: str, groups: tuple[str, ...] = ("PRODUCT_CONTENTS",)) -> Path:
        """The path of a file named in the MTL (beside the MTL), MissingBandError if unnamed."""
        for group in groups:
            name = self.get(group, key)
            if name:
                if Path(name).name != name:
                    raise CorruptProductError(
                        self.source, f"{group}/{key} = {name!r}: expected a bare file name"
                    )
                return self.source.parent / name
        raise MissingBandError(
            self.source, f"{what}: {key} missing from the metadata ({'/'.join(groups)})"
        )


def _acquisition_time(f: _Fields) -> _dt.datetime:
    date_text = f.text("IMAGE_ATTRIBUTES", "DATE_ACQUIRED")
    time_text = f.text("IMAGE_ATTRIBUTES", "SCENE_CENTER_TIME")
    try:
        day = _dt.date.fromisoformat(date_text)
    except ValueError:
        raise CorruptProductError(
            f.source, f"DATE_ACQUIRED = {date_text!r}: expected YYYY-MM-DD"
        ) from None
    m = _TIME_RE.match(time_text)
    if not m:
        raise CorruptProductError(
            f.source, f"SCENE_CENTER_TIME = {time_text!r}: expected HH:MM:SS.fffffffZ"
        )
    hh, mm, ss, frac = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        return _dt.datetime.combine(day, _dt.time(int(hh), int(mm), int(ss), micro),
                                    tzinfo=_dt.timezone.utc)
    except ValueError:
        raise CorruptProductError(
            f.source, f"SCENE_CENTER_TIME = {time_text!r}: not a valid time of day"
        ) from None


def _projection_group(f: _Fields) -> str:
    return "PROJECTION_ATTRIBUTES" if "PROJECTION_ATTRIBUTES" in f.groups else \
        "LEVEL1_PROJECTION_PARAMETERS"


def _crs(f: _Fields) -> str:
    """The product CRS as ``EPSG:nnnn`` (or a PROJ string) from the projection group."""
    g = _projection_group(f)
    proj = f.text(g, "MAP_PROJECTION").upper()
    datum = (f.get(g, "DATUM") or "WGS84").upper()
    if datum != "WGS84":
        raise CorruptProductError(f.source, f"{g}/DATUM = {datum}: WGS84 expected")
    if proj == "UTM":
        zone_text = f.text(g, "UTM_ZONE")
        try:
            zone = int(zone_text)
        except ValueError:
            raise CorruptProductError(
                f.source, f"{g}/UTM_ZONE = {zone_text!r}: expected an integer"
            ) from None
        if not 1 <= abs(zone) <= 60:
            raise CorruptProductError(f.source, f"{g}/UTM_ZONE = {zone}: expected 1-60")
        return f"EPSG:{(32600 if zone > 0 else 32700) + abs(zone)}"
    if proj == "PS":
        lon0 = f.number(g, "VERTICAL_LON_FROM_POLE")
        lat_ts = f.number(g, "TRUE_SCALE_LAT")
        fe = f.number(g, "FALSE_EASTING")
        fn = f.number(g, "FALSE_NORTHING")
        lat0 = -90 if lat_ts < 0 else 90
        crs = _ProjCRS.from_proj4(
            f"+proj=stere +lat_0={lat0} +lat_ts={lat_ts:g} +lon_0={lon0:g} +k=1 "
            f"+x_0={fe:g} +y_0={fn:g} +datum=WGS84 +units=m +no_defs +type=crs"
        )
        epsg = crs.to_epsg(min_confidence=70)
        return f"EPSG:{epsg}" if epsg else crs.to_proj4()
    raise UnknownProductError(
        f.source, f"{g}/MAP_PROJECTION = {proj}: only UTM and PS (polar stereographic) are read"
    )


_CORNERS = ("UL", "UR", "LR", "LL")


def _footprint(f: _Fields, crs: str) -> Geometry:
    """The product rectangle: projected pixel-centre corners widened by half a pixel."""
    g = "PROJECTION_ATTRIBUTES"
    if all(f.get(g, f"CORNER_{c}_PROJECTION_X_PRODUCT") for c in _CORNERS):
        xs = [f.number(g, f"CORNER_{c}_PROJECTION_X_PRODUCT") for c in _CORNERS]
        ys = [f.number(g, f"CORNER_{c}_PROJECTION_Y_PRODUCT") for c in _CORNERS]
        half = (f.optional_number(g, "GRID_CELL_SIZE_REFLECTIVE") or 30.0) / 2.0
        left, right = min(xs) - half, max(xs) + half
        bottom, top = min(ys) - half, max(ys) + half
        if not (right > left and top > bottom):
            raise CorruptProductError(
                f.source, "the CORNER_*_PROJECTION_* values make no rectangle")
        return polygon([(left, bottom), (left, top), (right, top), (right, bottom),
                        (left, bottom)], crs)
    lats = [f.number(g, f"CORNER_{c}_LAT_PRODUCT") for c in _CORNERS]
    lons = [f.number(g, f"CORNER_{c}_LON_PRODUCT") for c in _CORNERS]
    if max(lons) - min(lons) > 180.0:  # across the antimeridian: keep the ring continuous
        lons = [lo + 360.0 if lo < 0 else lo for lo in lons]
    pts = list(zip(lons, lats))
    return polygon(pts + pts[:1], "EPSG:4326")


# -------------------------------------------------------------------------- assets


def _nominal_sizes(f: _Fields) -> dict[str, float]:
    g = _projection_group(f)
    refl = f.optional_number(g, "GRID_CELL_SIZE_REFLECTIVE") or 30.0
    pan = (f.optional_number(g, "GRID_CELL_SIZE_PANCHROMATIC")
           or f.optional_number("LEVEL1_PROJECTION_PARAMETERS", "GRID_CELL_SIZE_PANCHROMATIC")
           or refl / 2.0)
    thermal = f.optional_number(g, "GRID_CELL_SIZE_THERMAL") or refl
    return {"reflective": refl, "pan": pan, "thermal": thermal}


def _band_number(name: str) -> int:
    return int(name[1:])


def _l2_assets(f: _Fields) -> tuple[dict[str, Asset], dict[str, Asset]]:
    bands: dict[str, Asset] = {}
    params = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"
    for name in L2_BANDS:
        n = _band_number(name)
        path = f.file(f"FILE_NAME_BAND_{n}", f"band {name} (SR_{name})")
        bands[name] = Asset(
            path=str(path),
            scale=f.number(params, f"REFLECTANCE_MULT_BAND_{n}"),
            offset=f.number(params, f"REFLECTANCE_ADD_BAND_{n}"),
            nodata=0,
            kind="reflectance",
        )
    aux: dict[str, Asset] = {}
    if f.get("PRODUCT_CONTENTS", "FILE_NAME_BAND_ST_B10"):
        tparams = "LEVEL2_SURFACE_TEMPERATURE_PARAMETERS"
        aux["surface_temperature"] = Asset(
            path=str(f.file("FILE_NAME_BAND_ST_B10", "surface temperature ST_B10")),
            scale=f.number(tparams, "TEMPERATURE_MULT_BAND_ST_B10"),
            offset=f.number(tparams, "TEMPERATURE_ADD_BAND_ST_B10"),
            nodata=0,
            kind="aux",
            unit="K",
        )
    return bands, aux


def _l1_assets(f: _Fields, sun_elevation: float) -> dict[str, Asset]:
    if not 0.0 < sun_elevation <= 90.0:
        raise CorruptProductError(
            f.source, f"SUN_ELEVATION = {sun_elevation}: top-of-atmosphere reflectance needs "
            "the sun above the horizon (0 < elevation <= 90)"
        )
    inv_sin = 1.0 / math.sin(math.radians(sun_elevation))
    params = "LEVEL1_RADIOMETRIC_RESCALING"
    bands: dict[str, Asset] = {}
    for name in L1_BANDS:
        n = _band_number(name)
        path = f.file(f"FILE_NAME_BAND_{n}", f"band {name}")
        bands[name] = Asset(
            path=str(path),
            scale=f.number(params, f"REFLECTANCE_MULT_BAND_{n}") * inv_sin,
            offset=f.number(params, f"REFLECTANCE_ADD_BAND_{n}") * inv_sin,
            nodata=0,
            kind="reflectance",
        )
    return bands


def _quality_assets(f: _Fields) -> dict[str, Asset]:
    return {name: Asset(path=str(f.file(key, f"quality layer {name}")), kind="quality")
            for name, key in QUALITY_KEYS.items()}


def _angle_band_assets(f: _Fields) -> dict[str, Asset]:
    """The per-pixel angle bands that are on disk, by pairs (zenith and azimuth)."""
    found: dict[str, Asset] = {}
    for var, key in ANGLE_KEYS.items():
        for group in ("PRODUCT_CONTENTS", "LEVEL1_PROCESSING_RECORD"):
            name = f.get(group, key)
            if name and Path(name).name == name and (f.source.parent / name).is_file():
                found[var] = Asset(path=str(f.source.parent / name), scale=ANGLE_SCALE,
                                   offset=0.0, nodata=None, kind="aux")
                break
    out = {}
    for who in ("view", "sun"):
        if f"{who}_zenith" in found and f"{who}_azimuth" in found:
            out[f"{who}_zenith"] = found[f"{who}_zenith"]
            out[f"{who}_azimuth"] = found[f"{who}_azimuth"]
    return out


def decode_quality(layers: Mapping[str, object]):
    """The product's mask decoder: ``QA_PIXEL`` (and ``QA_RADSAT``) to the common bits."""
    return from_qa_pixel(layers["QA_PIXEL"], layers.get("QA_RADSAT"))


def _check_files(product_path: Path, assets: Mapping[str, Asset], what: str) -> None:
    for name, asset in assets.items():
        if not Path(asset.path).is_file():
            raise MissingBandError(
                asset.path, f"{what} {name} is named in the metadata of {product_path.name} "
                "but the file is not on disk"
            )


def _same_crs(a: str, b) -> bool:
    try:
        return _ProjCRS.from_user_input(a) == _ProjCRS.from_user_input(str(b))
    except CRSError:
        return False


# -------------------------------------------------------------------------- reader


def read_landsat(path: str | Path, *, allow_missing_bands: bool = False,
                 stack_bands: Sequence[str] | None = None,
                 check_files: bool = True) -> SourceProduct:
    """Read a Landsat 8/9 Collection 2 product (folder or MTL file) as a :class:`SourceProduct`.

    See the module docstring for what is read and the approximations made.

    Parameters
    ----------
    path
        The product folder, or its ``*_MTL.txt`` / ``*_MTL.xml`` / ``*_MTL.json``.
    allow_missing_bands
        Leave out the reflectance bands whose file is not on disk instead of refusing
        the product (partial downloads); they are listed in ``metadata["missing_bands"]``.
        The quality layers are always required.
    stack_bands
        Part of every reader's signature (:mod:`agriseries.io.detect`); a Landsat
        bundle has one file per band, so giving it is a :class:`ConfigurationError`.
    check_files
        Check that every file the product needs is on disk and take the native grid
        from the first band file's georeferencing (default). ``False`` builds the
        product from the metadata alone (a catalogue entry before download): asset
        resolutions are then the MTL's nominal sizes and ``native_grids`` is empty.

    Returns
    -------
    SourceProduct
        With ``sensor`` ``L8``/``L9``, ``level`` ``L2A``/``L1C``, bands ``B1`` ...

    Raises
    ------
    UnknownProductError
        Not a Landsat 8/9 Collection 2 product (Collection 1, Landsat 1-7, unknown
        processing level or map projection).
    CorruptProductError
        The metadata cannot be parsed or lacks a value, or a band file cannot be
        opened, or its CRS disagrees with the metadata.
    MissingBandError
        The metadata names no file for a band or quality layer, or the named file is
        not on disk.
    """
    if stack_bands is not None:
        raise ConfigurationError(f"{path}: stack_bands names the bands of a multi-band stack; a "
                                 "Landsat product has one file per band")
    mtl = find_mtl(path)
    f, sensor, processing_level = _identify(mtl)
    level, producer = LEVELS[processing_level]
    product_id = f.text("PRODUCT_CONTENTS", "LANDSAT_PRODUCT_ID")
    when = _acquisition_time(f)
    crs = _crs(f)
    footprint = _footprint(f, crs)
    sun_elevation = f.number("IMAGE_ATTRIBUTES", "SUN_ELEVATION")
    sun_azimuth = f.number("IMAGE_ATTRIBUTES", "SUN_AZIMUTH") % 360.0

    if level == "L2A":
        bands, aux = _l2_assets(f)
    else:
        bands, aux = _l1_assets(f, sun_elevation), {}
    quality = _quality_assets(f)
    aux.update(_angle_band_assets(f))

    sizes = _nominal_sizes(f)
    nominal = {name: sizes["pan"] if (level == "L1C" and name == "B8") else sizes["reflective"]
               for name in bands}
    native_grids: dict[int, GeoBox] = {}
    missing: list[str] = []
    factor = 1.0
    if check_files:
        bands, missing = _bands_on_disk(mtl, bands, allow_missing_bands)
        _check_files(mtl, quality, "quality layer")
        _check_files(mtl, aux, "layer")
        gb = _checked_grid(next(iter(bands.values())).path, crs)
        file_res = abs(gb.resolution.x)
        factor = file_res / sizes["reflective"]
        native_grids[int(round(file_res))] = gb

    def _res(nom: float) -> float:
        return float(round(nom * factor)) if factor != 1.0 else float(nom)

    bands = {k: _with_resolution(a, _res(nominal[k])) for k, a in bands.items()}
    quality = {k: _with_resolution(a, _res(sizes["reflective"])) for k, a in quality.items()}
    aux = {k: _with_resolution(a, _res(sizes["reflective"])) for k, a in aux.items()}
    sun_grid, view_angles = _scene_angles(footprint, crs, sun_elevation, sun_azimuth, aux, bands)
    metadata = _metadata(f, mtl, processing_level, level, aux)
    metadata.update(sun_elevation=sun_elevation, sun_azimuth=sun_azimuth, missing_bands=missing)
    return SourceProduct(
        path=str(path),
        product_id=product_id,
        level=level,
        sensor=sensor,
        producer=producer,
        datetime=when,
        crs=crs,
        footprint=footprint,
        bands=bands,
        quality=quality,
        mask_decoder=decode_quality,
        aux=aux,
        sun_angles=sun_grid,
        view_angles=view_angles,
        tile=None,
        native_grids=native_grids,
        metadata=metadata,
    )


def _identify(mtl: Path) -> tuple[_Fields, str, str]:
    """The parsed MTL, the sensor (``L8``/``L9``) and the processing level, checked.

    Raises
    ------
    CorruptProductError
        The MTL cannot be read or parsed.
    UnknownProductError
        Collection 1 metadata, another Landsat than 8/9, an unknown processing level.
    """
    doc = read_mtl(mtl)
    root, groups = next(iter(doc.items()))
    if root == "L1_METADATA_FILE":
        raise UnknownProductError(
            mtl, "Collection 1 or pre-collection metadata (L1_METADATA_FILE): only Landsat "
            "Collection 2 products (LANDSAT_METADATA_FILE) are read"
        )
    if root != C2_ROOT:
        raise UnknownProductError(mtl, f"root group {root or '?'}: expected {C2_ROOT}")
    f = _Fields(groups, mtl)
    spacecraft = f.text("IMAGE_ATTRIBUTES", "SPACECRAFT_ID")
    try:
        sensor = sensor_name(spacecraft)
    except ConfigurationError:
        sensor = ""
    if sensor not in ("L8", "L9"):
        raise UnknownProductError(mtl, f"SPACECRAFT_ID = {spacecraft}: {_not_read(spacecraft, f)}")
    processing_level = f.text("PRODUCT_CONTENTS", "PROCESSING_LEVEL")
    if processing_level not in LEVELS:
        raise UnknownProductError(
            mtl, f"PROCESSING_LEVEL = {processing_level}: expected one of {', '.join(LEVELS)}"
        )
    return f, sensor, processing_level


def _not_read(spacecraft: str, f: _Fields | None = None) -> str:
    """Why a Landsat other than 8/9 is refused, in the words of the error message."""
    m = re.search(r"(\d+)$", spacecraft.strip())
    number = int(m.group(1)) if m else None
    sensor_id = (f.get("IMAGE_ATTRIBUTES", "SENSOR_ID") if f is not None else None) or ""
    if sensor_id.upper() == "MSS" or (number is not None and number <= 3):
        what = "Landsat 1-5 MSS is not supported"
    elif number is not None and 4 <= number <= 7:
        what = "Landsat 4-7 is not supported (other bands and quality bits)"
    else:
        what = "not a Landsat 8/9 spacecraft"
    return f"{what}; agriseries reads Landsat 8/9 Collection 2 (OLI) products"


def _bands_on_disk(mtl: Path, bands: Mapping[str, Asset],
                   allow_missing: bool) -> tuple[dict[str, Asset], list[str]]:
    """The bands whose file is on disk, and the ones left out (``allow_missing``)."""
    absent = [name for name, a in bands.items() if not Path(a.path).is_file()]
    if not absent:
        return dict(bands), []
    if not allow_missing or len(absent) == len(bands):
        _check_files(mtl, bands, "band")
    return {k: a for k, a in bands.items() if k not in absent}, absent


def _checked_grid(path: str, crs: str) -> GeoBox:
    """The grid of a band file, which must be in the metadata's CRS."""
    gb = file_geobox(path)
    if not _same_crs(crs, gb.crs):
        raise CorruptProductError(path, f"raster CRS {gb.crs} differs from the metadata's {crs}")
    return gb


def _scene_angles(footprint: Geometry, crs: str, sun_elevation: float, sun_azimuth: float,
                  aux: Mapping[str, Asset], bands: Mapping[str, Asset]):
    """Scene-centre sun grid and nadir view grids, unless angle bands replace them."""
    bbox = footprint.to_crs(crs).boundingbox
    ulx, uly, width = bbox.left, bbox.top, bbox.right - bbox.left
    sun_grid = None
    if "sun_zenith" not in aux:
        sun_grid = AngleGrid(np.array([[90.0 - sun_elevation]]), np.array([[sun_azimuth]]),
                             ulx, uly, width, crs)
    view_angles: dict[str, AngleGrid] = {}
    if "view_zenith" not in aux:
        nadir = AngleGrid(np.zeros((1, 1)), np.zeros((1, 1)), ulx, uly, width, crs)
        view_angles = {name: nadir for name in bands}
    return sun_grid, view_angles


def _metadata(f: _Fields, mtl: Path, processing_level: str, level: str,
              aux: Mapping[str, Asset]) -> dict[str, object]:
    """The facts of the MTL worth keeping in ``SourceProduct.metadata``."""
    metadata: dict[str, object] = {
        "mtl": str(mtl),
        "processing_level": processing_level,
        "collection_number": f.get("PRODUCT_CONTENTS", "COLLECTION_NUMBER"),
        "collection_category": f.get("PRODUCT_CONTENTS", "COLLECTION_CATEGORY"),
        "sensor_id": f.get("IMAGE_ATTRIBUTES", "SENSOR_ID"),
        "wrs_path": f.get("IMAGE_ATTRIBUTES", "WRS_PATH"),
        "wrs_row": f.get("IMAGE_ATTRIBUTES", "WRS_ROW"),
        "cloud_cover": f.optional_number("IMAGE_ATTRIBUTES", "CLOUD_COVER"),
        "cloud_cover_land": f.optional_number("IMAGE_ATTRIBUTES", "CLOUD_COVER_LAND"),
        "earth_sun_distance": f.optional_number("IMAGE_ATTRIBUTES", "EARTH_SUN_DISTANCE"),
        "scene_id": f.get("LEVEL1_PROCESSING_RECORD", "LANDSAT_SCENE_ID"),
        "level1_product_id": f.get("LEVEL1_PROCESSING_RECORD", "LANDSAT_PRODUCT_ID"),
        "processing_software": (f.get("LEVEL2_PROCESSING_RECORD", "PROCESSING_SOFTWARE_VERSION")
                                or f.get("LEVEL1_PROCESSING_RECORD",
                                         "PROCESSING_SOFTWARE_VERSION")),
        "view_angles": "angle bands" if "view_zenith" in aux else "nadir (approximation)",
        "sun_angles": "angle bands" if "sun_zenith" in aux else "scene centre",
    }
    if level == "L2A":
        metadata["sr_algorithm"] = f.get("LEVEL2_PROCESSING_RECORD",
                                         "ALGORITHM_SOURCE_SURFACE_REFLECTANCE")
    else:
        metadata["toa_sun_correction"] = (
            "scale and offset divided by sin(SUN_ELEVATION) at the scene centre")
    return metadata


def _with_resolution(asset: Asset, resolution: float) -> Asset:
    return replace(asset, resolution=resolution)
