"""STAC Items for agriseries products.

Every product in the store has one STAC Item (docs/formats.md). It carries:

* the footprint (GeoJSON, EPSG:4326) and bbox, the acquisition datetime or the
  ``start_datetime``/``end_datetime`` of a period product (whose ``datetime`` is the
  period's centre);
* ``platform``/``constellation``/``instruments`` of each sensor;
* the projection extension (``proj:code`` on the item, ``proj:shape`` and
  ``proj:transform`` per asset, since bands come at 10, 20 and 60 m);
* the eo extension (band name, common name, central wavelength; cloud and snow
  cover from the mask) and the raster extension (data type, no-data, scale and
  offset that turn the stored integers into reflectance, resolution);
* the view extension (mean sun and viewing angles) when known;
* the processing extension (level, software and version, lineage) and the
  provenance agriseries needs to be idempotent: ``agriseries:inputs`` (ids of the
  input products), ``agriseries:parameters`` and ``agriseries:parameter_hash``.

:func:`validate_item` checks an item against the STAC 1.1 core schemas shipped with
pystac (offline) and checks the extension fields agriseries writes; ``online=True``
also validates every extension schema (this needs network access to
stac-extensions.github.io).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pystac
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension

from ..version import VERSION
from .bands import Band
from .errors import ConfigurationError
from .ids import ProductId

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
GRID_EXTENSION = "https://stac-extensions.github.io/grid/v1.1.0/schema.json"
CLASSIFICATION_EXTENSION = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
#: Field prefix -> the extension schema an item using such fields declares (the others, proj,
#: eo, raster and view, are declared by pystac's extension classes when they write a field).
_DECLARED_BY_PREFIX = {"classification:": CLASSIFICATION_EXTENSION}

_PLATFORMS = {
    "S2A": ("sentinel-2a", "sentinel-2", ["msi"]),
    "S2B": ("sentinel-2b", "sentinel-2", ["msi"]),
    "S2C": ("sentinel-2c", "sentinel-2", ["msi"]),
    "L8": ("landsat-8", "landsat", ["oli", "tirs"]),
    "L9": ("landsat-9", "landsat", ["oli", "tirs"]),
}


def parameter_hash(parameters: dict[str, Any]) -> str:
    """A short, stable hash of a parameter mapping (sorted-key JSON, SHA-256, 16 hex digits)."""
    text = json.dumps(parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AssetSpec:
    """What the item says about one COG of a product.

    Attributes
    ----------
    key
        Asset key (``B04``, ``mask``, ``aot``, ``angles``).
    href
        Path relative to the item file.
    geobox
        The grid of the file.
    dtype
        Stored data type (``int16``, ``uint8``, ``float32``).
    roles
        STAC roles (``data``, ``reflectance``, ``cloud``, ``metadata`` ...).
    title
        Human-readable title.
    nodata, scale, offset, unit
        Raster-extension values: ``value = stored * scale + offset``.
    band
        The spectral band, for reflectance assets.
    extra
        Other asset fields (e.g. the mask's bit meanings).
    count
        Number of bands in the file (one per date for a series).
    media_type
        The file's media type (COG by default; ``image/png`` for a quicklook).
    """

    key: str
    href: str
    geobox: GeoBox
    dtype: str
    roles: tuple[str, ...]
    title: str
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    band: Band | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    media_type: str = pystac.MediaType.COG


def build_item(pid: ProductId, *, geometry: Geometry, assets: list[AssetSpec],
               sensors: list[str], inputs: list[str], parameters: dict[str, Any],
               lineage: str, datetime: dt.datetime | None = None,
               cloud_cover: float | None = None, snow_cover: float | None = None,
               sun_angles: tuple[float, float] | None = None,
               view_angles: tuple[float, float] | None = None,
               properties: dict[str, Any] | None = None) -> pystac.Item:
    """Build the STAC Item of a product.

    Parameters
    ----------
    pid
        The product id (the item id is ``str(pid)``).
    geometry
        Footprint of the valid data, any CRS (written in EPSG:4326).
    assets
        The files of the product.
    sensors
        Sensor short names of the inputs (``S2A``, ``L8``).
    inputs
        Ids of the input products (provider ids for ingested products).
    parameters
        The processing parameters (their hash makes the job key).
    lineage
        One sentence saying how the product was made.
    datetime
        Acquisition time; period products give ``None``: their item has ``start_datetime``
        and ``end_datetime`` from ``pid.start``/``pid.end`` and, as ``datetime``, the
        period's centre.
    cloud_cover, snow_cover
        Percentages of valid pixels.
    sun_angles, view_angles
        Mean (zenith, azimuth) in degrees.
    properties
        Further properties (product-specific).
    """
    g = geometry.to_crs("EPSG:4326")
    geo = json.loads(json.dumps(g.json))  # tuples -> lists, as in a file
    bbox = list(g.boundingbox)
    props: dict[str, Any] = {}
    if datetime is None:
        if pid.end is None:
            raise ConfigurationError(f"{pid}: an acquisition product needs a datetime")
        start = pid.start
        end = pid.end.replace(hour=23, minute=59, second=59)
        # the centre of the period (to the second), so that tools that sort or stack by
        # ``datetime`` (stackstac, odc-stac) get a real time; the period is start/end
        item_dt = (start + (end - start) / 2).replace(microsecond=0)
        props["start_datetime"] = pystac.utils.datetime_to_str(start)
        props["end_datetime"] = pystac.utils.datetime_to_str(end)
    else:
        item_dt = datetime if datetime.tzinfo else datetime.replace(tzinfo=dt.timezone.utc)
    platforms = sorted({_PLATFORMS[s][0] for s in sensors if s in _PLATFORMS})
    constellations = sorted({_PLATFORMS[s][1] for s in sensors if s in _PLATFORMS})
    instruments = sorted({i for s in sensors if s in _PLATFORMS for i in _PLATFORMS[s][2]})
    if len(platforms) == 1:
        props["platform"] = platforms[0]
    elif platforms:
        props["agriseries:platforms"] = platforms
    if len(constellations) == 1:
        props["constellation"] = constellations[0]
    if instruments:
        props["instruments"] = instruments
    props.update({
        "processing:level": pid.level.value,
        "processing:software": {"agriseries": VERSION},
        "processing:lineage": lineage,
        "processing:datetime": pystac.utils.datetime_to_str(
            dt.datetime.now(dt.timezone.utc).replace(microsecond=0)),
        "grid:code": f"MGRS-{pid.tile[1:]}",
        "agriseries:level": pid.level.value,
        "agriseries:tile": pid.tile,
        "agriseries:producer": pid.producer,
        "agriseries:sensors": sorted(set(sensors)),
        "agriseries:inputs": list(inputs),
        "agriseries:parameters": parameters,
        "agriseries:parameter_hash": parameter_hash(parameters),
    })
    if properties:
        props.update(properties)
    item = pystac.Item(str(pid), geo, bbox, item_dt, props)
    item.stac_extensions.extend([PROCESSING_EXTENSION, GRID_EXTENSION])
    crs = assets[0].geobox.crs if assets else None
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if crs is not None and crs.epsg is not None:
        proj.code = f"EPSG:{crs.epsg}"
    elif crs is not None:
        proj.wkt2 = crs.to_wkt()
    eo_item = None
    if cloud_cover is not None or snow_cover is not None:
        eo_item = EOExtension.ext(item, add_if_missing=True)
        if cloud_cover is not None:
            eo_item.cloud_cover = round(float(cloud_cover), 3)
        if snow_cover is not None:
            eo_item.snow_cover = round(float(snow_cover), 3)
    if sun_angles is not None or view_angles is not None:
        view = ViewExtension.ext(item, add_if_missing=True)
        if sun_angles is not None:
            view.sun_elevation = round(90.0 - float(sun_angles[0]), 4)
            view.sun_azimuth = round(float(sun_angles[1]) % 360.0, 4)
        if view_angles is not None:
            view.incidence_angle = round(float(view_angles[0]), 4)
            view.azimuth = round(float(view_angles[1]) % 360.0, 4)
    for spec in assets:
        _add_asset(item, spec)
    declare_extensions(item)
    return item


def declare_extensions(item: pystac.Item) -> None:
    """Add to ``stac_extensions`` the schema of every extension whose fields the item's
    properties or assets use (the classification extension of class maps)."""
    keys = set(item.properties)
    for a in item.assets.values():
        keys |= set(a.extra_fields)
    for prefix, uri in _DECLARED_BY_PREFIX.items():
        if any(k.startswith(prefix) for k in keys) and uri not in item.stac_extensions:
            item.stac_extensions.append(uri)


def _add_asset(item: pystac.Item, spec: AssetSpec) -> None:
    asset = pystac.Asset(spec.href, title=spec.title, media_type=spec.media_type,
                         roles=list(spec.roles), extra_fields=dict(spec.extra))
    item.add_asset(spec.key, asset)
    aproj = ProjectionExtension.ext(asset)
    aproj.shape = [int(spec.geobox.shape.y), int(spec.geobox.shape.x)]
    aproj.transform = [float(v) for v in list(spec.geobox.affine)[:6]]
    if spec.band is not None:
        EOExtension.ext(asset, add_if_missing=True).apply(bands=[EOBand.create(
            name=spec.band.name, common_name=spec.band.common_name,
            center_wavelength=spec.band.center_wavelength)])
    nodata = spec.nodata
    if isinstance(nodata, float) and nodata != nodata:
        nodata = "nan"  # the raster extension spells a NaN no-data value as a string
    rb = RasterBand.create(
        data_type=DataType(spec.dtype), nodata=nodata, scale=spec.scale, offset=spec.offset,
        unit=spec.unit, spatial_resolution=abs(float(spec.geobox.resolution.x)))
    RasterExtension.ext(asset, add_if_missing=True).apply(bands=[rb] * spec.count)


def stac_schema_errors(doc: dict, schemas: str | os.PathLike | None = None) -> list[str]:
    """Schema errors of a STAC document (item, collection or catalogue), offline: the core
    schema of its version and every extension it declares, from the folder ``schemas``
    (default: ``AGRISERIES_STAC_SCHEMAS``, else the schemas shipped with agriseries); a
    declared extension without a local schema is an error. One line per error; ``[]`` when
    valid. (:func:`agriseries.io.stac_schema.stac_errors`, the package's one validator.)"""
    from ..io.stac_schema import stac_errors

    return stac_errors(doc, limit=50, schemas=schemas)


def validate_item(item: pystac.Item | dict, online: bool = False,
                  schemas: str | os.PathLike | None = None) -> None:
    """Validate an item; raise ``ValueError`` if invalid.

    Offline (default): the STAC 1.1 core item schema shipped with pystac and every declared
    extension's schema (shipped with agriseries, or from ``schemas`` / the environment
    variable ``AGRISERIES_STAC_SCHEMAS``, see :func:`stac_schema_errors`), plus checks of
    the fields agriseries writes (projection code and per-asset shape/transform, raster data
    type, eo bands, processing level, provenance).
    ``online=True``: also every extension's JSON schema, fetched by pystac.
    """
    d = item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else item
    d = json.loads(json.dumps(d))  # validate what a file would hold
    errors = stac_schema_errors(d, schemas)
    if errors:
        raise ValueError(f"item {d.get('id')!r} is not a valid STAC item: " + "; ".join(errors[:5]))
    props = d["properties"]
    problems = []
    if "proj:code" not in props and "proj:wkt2" not in props:
        problems.append("no proj:code")
    for key, a in d["assets"].items():
        if not str(a.get("type") or "image/tiff").startswith("image/tiff"):
            continue  # a non-raster file of the product (model, report): no raster fields
        if len(a.get("proj:shape", [])) != 2 or len(a.get("proj:transform", [])) not in (6, 9):
            problems.append(f"asset {key}: proj:shape/proj:transform missing")
        rb = a.get("raster:bands") or []
        if not rb or any("data_type" not in b for b in rb):
            problems.append(f"asset {key}: raster:bands data_type missing")
        for b in a.get("eo:bands", []):
            if not isinstance(b.get("center_wavelength"), (int, float)):
                problems.append(f"asset {key}: eo:bands without center_wavelength")
    for k in ("processing:level", "processing:software", "agriseries:inputs",
              "agriseries:parameter_hash"):
        if k not in props:
            problems.append(f"property {k} missing")
    if problems:
        raise ValueError(f"item {d.get('id')!r}: " + "; ".join(problems))
    if online:
        obj = item if isinstance(item, pystac.Item) else pystac.Item.from_dict(d)
        obj.validate()


def stackstac_items(items) -> list[dict[str, Any]]:
    """Items as stackstac 0.5 wants them: plain dicts with absolute asset hrefs and the
    integer ``proj:epsg`` beside ``proj:code``.

    stackstac reads the CRS only from ``proj:epsg``, which the projection extension v2.0
    removed (the items declare v2.0 and write ``proj:code``; pystac drops a ``proj:epsg``
    when it reads an item), and opens the ``href`` of an asset as it is, i.e. relative to
    the working directory. Without the CRS it falls back on the longitude/latitude bbox and
    makes a grid one pixel larger, with NaN edges. This adds, in memory only, what it needs;
    the files are unchanged. ``items``: pystac Items (read from a file, so that relative
    hrefs resolve) or an ItemCollection.
    """
    out = []
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        props = d["properties"]
        code = props.get("proj:code")
        epsg = int(code.split(":", 1)[1]) if code and code.upper().startswith("EPSG:") else None
        if epsg is not None:
            props["proj:epsg"] = epsg
        for key, a in d["assets"].items():
            a["href"] = item.assets[key].get_absolute_href() or a["href"]
            acode = a.get("proj:code")
            if acode and acode.upper().startswith("EPSG:"):
                a["proj:epsg"] = int(acode.split(":", 1)[1])
        out.append(d)
    return out
