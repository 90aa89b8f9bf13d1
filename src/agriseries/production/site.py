"""Site files: what a site is, which products it wants and how they are made.

A site is an area (Sentinel-2 tile ids, or a GeoJSON polygon turned into the tiles it
overlaps with :func:`agriseries.core.grid.tiles_for_geometry`), a season (first and last
day), the products wanted with their schedule, where the inputs arrive (an inbox folder),
where the products go (a product store), the production database and the compute engine.
Users write it as a YAML file; :func:`load_site` validates it with the pydantic models below
(pydantic at the boundary) and every error names the file and the field.
``agriseries site template`` prints :data:`TEMPLATE`, a commented example of every field.

Schedules (Sen2Agri's; docs/production.md, the methods in docs/l3a.md ... docs/crop.md):

* ``L3A``: one synthesis per calendar month of the season, centred on the middle of the month
  with the WASP half period (23 days), made once the synthesis window has ended (or,
  ``provisional: true``, as soon as it has an input, remade as new inputs arrive);
* ``L2A`` (with ``l2a: {source: agriseries}``): the L1C products of each tile made into L2A
  in date order, as they arrive (:func:`agriseries.l2a.processor.l2a`);
* ``L3B``: one product per L2A acquisition of the season;
* ``L4A`` (crop mask, docs/crop.md): one in-season map at the end of every month
  from ``start`` (default the middle of the season) to the season end, and one at the season
  end (:meth:`Site.l4a_dates`), trained on the site's ``in_situ`` polygons (field
  ``class_field``, cropland codes ``crop_values``) or, without them, on a reference
  land-cover map (``reference_map``, Matton et al.);
* ``L4B`` (crop type, docs/crop.md): one map at each of ``dates`` (default the season
  end; :meth:`Site.l4b_dates`), trained on the ``in_situ`` polygons (field ``class_field``,
  required), optionally masked with the tile's latest crop mask (``crop_mask: true``).

Levels a site may name whose processors are not in the production are listed in
:data:`PENDING_LEVELS` (empty today): :meth:`Site.notices` reports them and no job is
scheduled. Checks that tie several fields together (an enabled L4A needs in-situ data or a
reference map, the map dates lie in the season...) are made after the field validation, by
:func:`site_from_dict`, with the same ``site file X: invalid site: field 'F': ...`` messages.

Paths in the file are relative to the file's folder, so a site file and its data can be
moved together.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..biophysical.params import VARIABLES as _BIOPHYSICAL_VARIABLES
from ..biophysical.params import BiophysicalParams
from ..composite.params import WaspParams
from ..core.errors import ConfigurationError
from ..crop.params import CropMaskParams, CropTypeParams, NoInsituParams
from ..l2a.params import L2AParams

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "PENDING_LEVELS",
    "TEMPLATE",
    "Site",
    "load_site",
    "site_from_dict",
]

#: Levels a site may ask for whose processors are not part of the production yet, with the
#: reason :meth:`Site.notices` gives (none today; the mechanism stays for new levels).
PENDING_LEVELS: dict[str, str] = {}
#: The job database file, inside the product store, when the site gives no URL.
DEFAULT_DATABASE_FILE = "jobs.sqlite"
_SENSOR_FAMILIES = ("S2", "L8", "L9")


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path relative to the site file's folder (given in the validation context)."""
    if value is None:
        return None
    value = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.abspath(value))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ parts


class Area(_Model):
    """Where to produce: Sentinel-2 tile ids, or a GeoJSON geometry."""

    tiles: list[str] | None = None
    """Sentinel-2 tile ids (``T31UDS`` or ``31UDS``)."""
    geometry: dict[str, Any] | Path | None = None
    """A GeoJSON geometry, Feature or FeatureCollection (lon/lat), or a .geojson file."""

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, tiles: list[str] | None) -> list[str] | None:
        if tiles is None:
            return None
        from ..core.tilenames import tile_name

        if not tiles:
            raise ValueError("expected at least one Sentinel-2 tile id")
        out = []
        for t in tiles:
            try:
                name = tile_name(str(t))
            except ConfigurationError as e:
                raise ValueError(str(e)) from None
            if name not in out:
                out.append(name)
        return out

    @field_validator("geometry", mode="before")
    @classmethod
    def _geometry_file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            path = _resolve(Path(value), info)
            if not path.is_file():
                raise ValueError(f"GeoJSON file {path} does not exist")
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"GeoJSON file {path} cannot be read: {e}") from None
        return value

    _tile_ids: list[str] = PrivateAttr(default_factory=list)
    _shape: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_of(self) -> Area:
        if (self.tiles is None) == (self.geometry is None):
            raise ValueError("give either 'tiles' (Sentinel-2 tile ids) or 'geometry' "
                             "(a GeoJSON polygon or file), not both nor neither")
        self._tile_ids = self._resolve_tiles()
        return self

    @property
    def shape(self):
        """The geometry as an odc-geo ``Geometry`` (EPSG:4326), ``None`` for tiles."""
        return self._shape

    @property
    def tile_ids(self) -> list[str]:
        """The tile ids of the area (given, or those the geometry overlaps, sorted)."""
        return list(self._tile_ids)

    def _resolve_tiles(self) -> list[str]:
        if self.tiles is not None:
            return list(self.tiles)
        from odc.geo.geom import Geometry, unary_union

        from ..core.grid import tiles_for_geometry

        g = self.geometry
        assert isinstance(g, dict)
        if g.get("type") == "FeatureCollection":
            geoms = [f.get("geometry") for f in g.get("features") or []]
        elif g.get("type") == "Feature":
            geoms = [g.get("geometry")]
        else:
            geoms = [g]
        try:
            shapes = [Geometry(x, "EPSG:4326") for x in geoms if x]
            if not shapes:
                raise ValueError("no geometry")
            bad = [s.geom.geom_type for s in shapes if s.geom.geom_type not in
                   ("Polygon", "MultiPolygon")]
            if bad:
                raise ValueError(f"{bad[0]} geometry: expected Polygon or MultiPolygon")
            if not all(s.geom.is_valid for s in shapes):
                raise ValueError("the polygon is not valid (self-intersecting?)")
            shape = unary_union(shapes)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"not a usable GeoJSON polygon: {e}") from None
        x0, y0, x1, y1 = shape.boundingbox
        if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
            bad = next(v for v in (x0, x1, y0, y1) if not (-180 <= v <= 180)) \
                if not (-180 <= x0 <= x1 <= 180) else next(v for v in (y0, y1) if abs(v) > 90)
            what = "longitude" if not (-180 <= x0 <= x1 <= 180) else "latitude"
            raise ValueError(f"{what} {bad:g} is out of range: expected longitudes -180..180 and "
                             "latitudes -90..90, in GeoJSON's (lon, lat) order")
        self._shape = shape
        tiles = [t.name for t in tiles_for_geometry(shape)]
        if not tiles:
            raise ValueError("the geometry overlaps no Sentinel-2 tile")
        return tiles


class Season(_Model):
    """The agricultural season: first and last day of production."""

    start: dt.date
    """First day (YYYY-MM-DD)."""
    end: dt.date
    """Last day (YYYY-MM-DD), included."""

    @model_validator(mode="after")
    def _order(self) -> Season:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if (self.end - self.start).days > 731:
            raise ValueError("a season lasts at most two years")
        return self

    def months(self) -> list[tuple[dt.date, dt.date]]:
        """First and last day of every calendar month the season overlaps."""
        out = []
        y, m = self.start.year, self.start.month
        while (y, m) <= (self.end.year, self.end.month):
            out.append((dt.date(y, m, 1), dt.date(y, m, calendar.monthrange(y, m)[1])))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def _check_sensors(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    bad = [s for s in value if s not in _SENSOR_FAMILIES]
    if bad or not value:
        raise ValueError(f"sensors {value}: expected some of {', '.join(_SENSOR_FAMILIES)}")
    return sorted(set(value), key=_SENSOR_FAMILIES.index)


class L3ASchedule(_Model):
    """The monthly synthesis (L3A)."""

    enabled: bool = True
    """Make it."""
    schedule: Literal["monthly"] = "monthly"
    """One synthesis per calendar month of the season."""
    half_period: int = Field(WaspParams.half_period, ge=1, le=60)
    """WASP half synthesis period H (days): inputs within the month's middle +- H."""
    sensors: list[str] | None = None
    """Sensor families to use (S2, L8, L9); default all."""
    provisional: bool = False
    """Make a month before its window has ended (remade as inputs arrive)."""

    @field_validator("sensors")
    @classmethod
    def _sensors(cls, value: list[str] | None) -> list[str] | None:
        return _check_sensors(value)


class L3BSchedule(_Model):
    """The biophysical variables (L3B)."""

    enabled: bool = True
    """Make them."""
    schedule: Literal["every_date"] = "every_date"
    """One product per new L2A acquisition."""
    sensors: list[str] | None = None
    """Sensor families to process (S2, L8, L9); default all."""
    variables: list[str] = Field(default_factory=lambda: list(_BIOPHYSICAL_VARIABLES))
    """Variables (LAI, FAPAR, FCOVER, LAI_Cab, LAI_Cw)."""
    resolution: Literal[10, 20] = BiophysicalParams.resolution
    """Sentinel-2 pixel size of the networks (20: eight bands, 10: three bands)."""

    @field_validator("sensors")
    @classmethod
    def _sensors(cls, value: list[str] | None) -> list[str] | None:
        return _check_sensors(value)

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in _BIOPHYSICAL_VARIABLES]
        if bad or not value:
            raise ValueError(f"variables {value}: expected some of "
                             f"{', '.join(_BIOPHYSICAL_VARIABLES)}")
        return list(dict.fromkeys(value))


def _codes(value: list[int], what: str, allow_empty: bool = False) -> list[int]:
    if not value and not allow_empty:
        raise ValueError(f"give at least one {what}")
    return list(dict.fromkeys(int(v) for v in value))


class L4ASchedule(_Model):
    """The crop mask (L4A), docs/crop.md."""

    enabled: bool = False
    """Make it (needs the site's ``in_situ`` polygons or ``reference_map``)."""
    schedule: Literal["monthly_from_mid_season"] = "monthly_from_mid_season"
    """A map at every month end from ``start`` to the season end, and at the season end."""
    start: dt.date | None = None
    """First crop mask date: the first map is at the end of its month (default: the middle
    of the season)."""
    class_field: str = Field(CropMaskParams.class_field, min_length=1)
    """Field of the in-situ polygons with the class (Sen2Agri ``CROP``)."""
    crop_values: list[int] = Field(default_factory=lambda: list(CropMaskParams.crop_values))
    """Values of ``class_field`` (or codes of the reference map) that mean cropland."""
    reference_map: Path | None = None
    """A reference land-cover raster: the method without in-situ data (Matton et al.); when
    given it is used instead of the site's ``in_situ`` polygons."""
    ignore_values: list[int] = Field(default_factory=lambda: list(NoInsituParams.ignore_values))
    """Codes of the reference map to treat as no data."""
    model: Path | None = None
    """A site model (``agriseries croptrain``, trained on the in-situ data of the site's
    tiles): every tile's map is made with it (the ``in_situ`` polygons, when given, only
    validate). Its features are a whole season's: with it, only the season-end map is
    made (``start`` must be the season end's month)."""
    site_model: bool = False
    """Train one model per map date on the in-situ polygons of **all** the site's tiles
    (Sen2Agri's site-level training) and map every tile with it, in one job; ``in_situ``
    polygons the model did not train on validate each tile's map. False: one model per
    tile, trained on that tile's polygons."""
    feature_set: Literal["sen2agri", "20m"] = "sen2agri"
    """The per-date features (docs/crop.md): ``sen2agri`` (B03 B04 B08 B11, NDVI NDWI
    brightness) or ``20m`` (the six 20 m bands with NDRE NDMI brightness, for series without
    10 m bands)."""

    @field_validator("crop_values")
    @classmethod
    def _crop_values(cls, value: list[int]) -> list[int]:
        return _codes(value, "value meaning cropland")

    @field_validator("ignore_values")
    @classmethod
    def _ignore_values(cls, value: list[int]) -> list[int]:
        return _codes(value, "code", allow_empty=True)

    @field_validator("reference_map", "model")
    @classmethod
    def _reference(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)


class L4BSchedule(_Model):
    """The crop type map (L4B), docs/crop.md."""

    enabled: bool = False
    """Make it (needs the site's ``in_situ`` polygons and ``class_field``)."""
    dates: list[dt.date] = Field(default_factory=list)
    """Dates at which to make a crop type map (data up to that day); default the season end."""
    class_field: str | None = Field(None, min_length=1)
    """Field of the in-situ polygons with the crop code (Sen2Agri ``CODE``); required when
    enabled."""
    exclude_codes: list[int] = Field(default_factory=lambda: list(CropTypeParams.exclude_codes))
    """Crop codes of polygons to leave out of the training and validation."""
    crop_mask: bool = False
    """Set the pixels that the tile's latest crop mask (L4A, made on or before the map date)
    calls non-cropland to code 0."""
    model: Path | None = None
    """A crop type site model (``agriseries croptrain --kind type``): the maps are made with
    it (``in_situ`` then only validates); season-end maps only."""
    site_model: bool = False
    """As ``products.L4A.site_model``: one crop type model per map date trained on the
    in-situ polygons of all the site's tiles, every tile mapped with it."""
    feature_set: Literal["sen2agri", "20m"] = "sen2agri"
    """As ``products.L4A.feature_set``."""

    @field_validator("model")
    @classmethod
    def _model(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("dates")
    @classmethod
    def _dates(cls, value: list[dt.date]) -> list[dt.date]:
        return sorted(set(value))

    @field_validator("exclude_codes")
    @classmethod
    def _exclude(cls, value: list[int]) -> list[int]:
        return _codes(value, "code", allow_empty=True)


class Products(_Model):
    """The products wanted and their schedules."""

    L3A: L3ASchedule = Field(default_factory=L3ASchedule)
    L3B: L3BSchedule = Field(default_factory=L3BSchedule)
    L4A: L4ASchedule = Field(default_factory=L4ASchedule)
    L4B: L4BSchedule = Field(default_factory=L4BSchedule)


class L2ASource(_Model):
    """Where the L2A products come from, and how agriseries makes them from L1C."""

    source: Literal["provider", "agriseries"] = "provider"
    """``provider``: the providers' L2A (Sen2Cor, MAJA, LaSRC) found in the inbox;
    ``agriseries``: made here from the L1C products of the inbox (``agriseries l2a``)."""
    resolution: float = Field(L2AParams.resolution, ge=10, le=1000)
    """Coarse grid of the cloud tests and of the tile state (m; MAJA: 240)."""
    altitude: float = Field(L2AParams.altitude, ge=-500, le=9000)
    """Ground altitude (m) for the surface pressure, when there is no DEM."""
    dem: Path | None = None
    """A DEM raster (m) for the surface pressure."""
    backward_dates: int = Field(L2AParams.backward_dates, ge=0)
    """Dates after which the first products of a tile are made again with history."""

    @field_validator("dem")
    @classmethod
    def _dem(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)


class Inbox(_Model):
    """The folder where input products arrive."""

    path: Path
    """The inbox folder."""
    include: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns of the entries to ingest (file or folder names)."""
    exclude: list[str] = Field(default_factory=lambda: [".*", "*.part", "*.partial", "*.tmp",
                                                        "*.crdownload", "*.lock"])
    """Glob patterns of entries to leave alone (partial downloads...)."""
    settle_s: float = Field(60.0, ge=0)
    """An entry modified less than this many seconds ago is still arriving: wait."""
    allow_missing_bands: bool = False
    """Ingest products with missing bands (partial downloads) instead of refusing them."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class Endpoint(_Model):
    """Where a provider is reached, when not at its usual address (a mirror, a test server)."""

    url: str | None = None
    """The STAC API URL."""
    token_url: str | None = None
    """The token endpoint (Planetary Computer SAS, CDSE OAuth2)."""


class Acquire(_Model):
    """Acquisition: the site's acquisitions found and fetched from the providers
    (docs/acquisition.md)."""

    enabled: bool = True
    """Search and fetch (``agriseries run`` does it at each look at the inbox)."""
    providers: list[str] = Field(
        default_factory=lambda: ["earth-search", "planetary-computer", "usgs"])
    """Providers in order of preference (earth-search, planetary-computer, cdse, geodes,
    usgs): the same acquisition is fetched from the first that has it."""
    level: Literal["L2A", "L1C"] = "L2A"
    """Processing level fetched (L1C needs ``l2a.source: agriseries``)."""
    sensors: list[str] | None = None
    """Sensor families (S2, L8, L9); default all."""
    max_cloud: float = Field(100.0, ge=0, le=100)
    """Largest cloud cover (%) of the acquisitions fetched."""
    mode: Literal["auto", "window", "whole"] = "auto"
    """``auto``: COG providers by windows of the site's area, archive providers whole;
    ``window``: only the area's pixels; ``whole``: whole files."""
    bands: list[str] | None = None
    """Sentinel-2 bands to fetch (ESA names); default those the products asked for read."""
    snap_m: float = Field(60.0, gt=0)
    """Windows are snapped outwards to this lattice (m), common to the 10/20/60 m bands."""
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    """Provider endpoints moved from their usual addresses, by provider name."""
    read_timeout_s: float = Field(60.0, gt=0)
    """Longest silence of a provider's socket before a request is abandoned."""
    attempts: int = Field(6, ge=1, le=50)
    """Tries of one request or download before it fails."""

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: list[str]) -> list[str]:
        from ..acquire.providers import provider_names

        known = provider_names()
        bad = [p for p in value if p not in known]
        if bad or not value:
            raise ValueError(f"providers {value}: expected some of {', '.join(known)}")
        return list(dict.fromkeys(value))

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, Endpoint]) -> dict[str, Endpoint]:
        from ..acquire.providers import provider_names

        bad = [p for p in value if p not in provider_names()]
        if bad:
            raise ValueError(f"endpoints of {', '.join(bad)}: expected provider names "
                             f"({', '.join(provider_names())})")
        return value

    @field_validator("sensors")
    @classmethod
    def _sensors(cls, value: list[str] | None) -> list[str] | None:
        return _check_sensors(value)

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        known = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                 "B11", "B12", "SCL", "AOT")
        out = [str(b).upper() for b in value]
        bad = [b for b in out if b not in known]
        if bad or not out:
            raise ValueError(f"bands {value}: expected Sentinel-2 band names "
                             f"({', '.join(known)})")
        return list(dict.fromkeys(out))


class Database(_Model):
    """The production database (jobs and product catalogue)."""

    url: str | None = None
    """SQLAlchemy URL; default an SQLite file in the store."""
    statement_timeout_s: float = Field(30.0, gt=0)
    """Time limit of every database call (a lock held elsewhere, a hung server)."""
    lease_s: float = Field(300.0, gt=0)
    """A running job whose runner sent no heartbeat for this long is taken over."""
    retry_s: float = Field(120.0, ge=0)
    """How long the runner retries a failing database call before it stops cleanly."""


class Engine(_Model):
    """Where the jobs run: a Dask cluster."""

    scheduler: str | None = None
    """Address of an existing Dask scheduler (tcp://host:8786); default a LocalCluster."""
    scheduler_file: Path | None = None
    """Or the scheduler file an existing cluster wrote (dask-jobqueue, dask-mpi)."""
    n_workers: int = Field(2, ge=1, le=1024)
    """LocalCluster: worker processes."""
    threads_per_worker: int = Field(1, ge=1, le=256)
    """LocalCluster: threads per worker."""
    memory_limit: str = "4GiB"
    """LocalCluster: memory per worker (4GiB, 'auto')."""
    chunks: Literal["worker"] = "worker"
    """Where a job's chunks run: on the job's worker's threads (the only choice)."""
    poll_s: float = Field(300.0, gt=0)
    """--watch: seconds between two looks at the inbox."""

    @field_validator("scheduler_file")
    @classmethod
    def _file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(tcp|tls|ucx|ws|wss|inproc)://\S+$", value):
            raise ValueError(f"{value!r}: expected a Dask scheduler address, tcp://host:port")
        return value

    @field_validator("chunks", mode="before")
    @classmethod
    def _chunks(cls, value):
        if value == "cluster":
            raise ValueError(
                "'cluster' (one job's chunks spread over the whole cluster) was removed: "
                "measured, it made no job faster and several tiles slower "
                "(docs/benchmarks.md, 'Scale-out'); remove the line or write 'worker'")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if str(value).lower() == "auto":
            return "auto"
        from dask.utils import parse_bytes

        try:
            parse_bytes(str(value))
        except (ValueError, TypeError):
            raise ValueError(f"{value!r}: expected a size such as 4GiB or 'auto'") from None
        return str(value)

    @model_validator(mode="after")
    def _one_cluster(self) -> Engine:
        if self.scheduler and self.scheduler_file:
            raise ValueError("give 'scheduler' or 'scheduler_file', not both")
        return self


class Retries(_Model):
    """What happens when a job fails."""

    max_attempts: int = Field(3, ge=1, le=100)
    """Attempts before a job is quarantined (kept with its error for an operator)."""
    backoff_s: float = Field(60.0, gt=0)
    """Wait before the second attempt; it doubles at each attempt."""
    backoff_max_s: float = Field(6 * 3600.0, gt=0)
    """Longest wait between two attempts."""


class Publish(_Model):
    """Publication into the distribution catalogue as a stage of the run
    (:mod:`agriseries.distribution.stage`)."""

    enabled: bool = False
    """The run publishes what it makes (a publisher thread beside production)."""
    catalog_dsn: str | None = None
    """pgstac catalogue (``postgresql://user@host/db``); default the embedded
    stac-geoparquet catalogue of the store."""
    catalog_dir: Path | None = None
    """Folder of the embedded catalogue (default ``STORE/.distribution/catalog``)."""
    timeout_s: float = Field(30.0, gt=0)
    """Time limit of one catalogue call."""
    poll_s: float = Field(2.0, gt=0)
    """Seconds between two looks at the outbox."""

    @field_validator("catalog_dir")
    @classmethod
    def _dir(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("catalog_dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^postgres(ql)?(\+psycopg)?://", value):
            raise ValueError(f"{value!r}: expected a PostgreSQL URL, postgresql://user@host/db")
        return value


# ------------------------------------------------------------------------------- site


class Site(_Model):
    """A site file, validated (see :data:`TEMPLATE` for every field).

    Build it with :func:`load_site` (paths relative to the file) or :func:`site_from_dict`.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Short identifier (letters, digits, ``-``, ``_``, ``.``)."""
    area: Area
    season: Season
    products: Products = Field(default_factory=Products)
    l2a: L2ASource = Field(default_factory=L2ASource)
    inbox: Inbox
    acquire: Acquire | None = None
    """Fetch the site's acquisitions from the providers into the inbox; ``None``: the
    inbox is filled by other means."""
    in_situ: Path | None = None
    """In-situ field polygons (a vector file) for the crop mask and the crop type."""
    store: Path
    """The product store folder."""
    database: Database = Field(default_factory=Database)
    engine: Engine = Field(default_factory=Engine)
    retries: Retries = Field(default_factory=Retries)
    publish: Publish = Field(default_factory=Publish)
    """Publish what the run makes into the distribution catalogue (default: no; then
    ``agriseries publish`` does it)."""

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("store", "in_situ")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info)

    @field_validator("inbox", mode="before")
    @classmethod
    def _inbox_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, (str, Path)) else value

    @property
    def tiles(self) -> list[str]:
        """The Sentinel-2 tiles of the site."""
        return self.area.tile_ids

    def area_geometry(self):
        """The site's polygon (an odc-geo ``Geometry``, EPSG:4326) when the area is a
        geometry; ``None`` when it is given as tiles."""
        return self.area.shape

    @property
    def source(self) -> Path | None:
        """The site file, when loaded from one."""
        return self._source

    @property
    def database_url(self) -> str:
        """The job database URL (default: ``sqlite:///<store>/jobs.sqlite``)."""
        return self.database.url or f"sqlite:///{self.store / DEFAULT_DATABASE_FILE}"

    def where(self, field: str) -> str:
        """``site file X, field F`` for error messages."""
        return f"site file {self.source or self.name}, field '{field}'"

    def months(self) -> list[tuple[dt.date, dt.date]]:
        """The calendar months of the season (first and last day)."""
        return self.season.months()

    def l4a_dates(self) -> list[dt.date]:
        """The crop mask dates: every month end from ``products.L4A.start`` (default the
        middle of the season) to the season end, and the season end itself; dates on the
        season's first day are left out (a map needs data)."""
        first = self.products.L4A.start or (
            self.season.start + (self.season.end - self.season.start) // 2)
        out = [m1 for _, m1 in self.months() if first <= m1 <= self.season.end]
        if not out or out[-1] != self.season.end:
            out.append(self.season.end)
        return [d for d in out if d > self.season.start]

    def l4b_dates(self) -> list[dt.date]:
        """The crop type dates: ``products.L4B.dates``, or the season end when none given."""
        return list(self.products.L4B.dates) or [self.season.end]

    def notices(self) -> list[str]:
        """What the site asks for that the production cannot do yet."""
        out = []
        for level, why in PENDING_LEVELS.items():
            if getattr(self.products, level).enabled:
                out.append(f"{level} is enabled in {self.source or self.name}: {why}; no "
                           f"{level} job is scheduled")
        return out

    def job_store(self):
        """The site's :class:`~agriseries.production.jobstore.JobStore` (opened)."""
        from .jobstore import JobStore

        return JobStore(self.database_url, statement_timeout_s=self.database.statement_timeout_s,
                        lease_s=self.database.lease_s, max_attempts=self.retries.max_attempts,
                        backoff_s=self.retries.backoff_s,
                        backoff_max_s=self.retries.backoff_max_s)

    def product_store(self):
        """The site's :class:`~agriseries.io.store.ProductStore`."""
        from ..io.store import ProductStore

        return ProductStore(self.store)


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        msg = msg.removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (see 'agriseries site template' for the fields)"
        lines.append(f"field '{loc}': {msg}")
    return f"{source}: invalid site: " + "; ".join(lines)


def site_from_dict(data: Any, base_dir: str | Path | None = None,
                   source: str | Path | None = None) -> Site:
    """Validate a site given as a dict (the parsed YAML).

    Parameters
    ----------
    data
        The site fields.
    base_dir
        Folder relative paths are relative to (default: the current folder).
    source
        Name of the file, for error messages.

    Raises
    ------
    ConfigurationError
        Naming the source and every field at fault.
    """
    where = f"site file {source}" if source else "site"
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: expected a mapping of fields (name, area, season, "
                                 f"...), got {type(data).__name__}")
    try:
        site = Site.model_validate(data, context={"base_dir": os.path.abspath(base_dir or ".")})
    except ValidationError as e:
        raise ConfigurationError(_format_errors(where, e)) from None
    problems = _crop_problems(site)
    if problems:
        raise ConfigurationError(f"{where}: invalid site: "
                                 + "; ".join(f"field '{f}': {m}" for f, m in problems))
    site._source = Path(os.path.abspath(source)) if source else None
    return site


def _crop_problems(site: Site) -> list[tuple[str, str]]:
    """What is wrong with the L4A / L4B settings given the rest of the site: (field,
    problem) pairs, empty when all is well."""
    out: list[tuple[str, str]] = []
    season = site.season
    a, b = site.products.L4A, site.products.L4B
    if a.start is not None and not season.start <= a.start <= season.end:
        why = f"{a.start} is outside the season {season.start}..{season.end}"
        out.append(("products.L4A.start", why))
    bad = [str(d) for d in b.dates if not season.start < d <= season.end]
    if bad:
        why = (f"{', '.join(bad)}: outside the season (a map date is after its start "
               f"{season.start} and on or before its end {season.end})")
        out.append(("products.L4B.dates", why))

    def missing(field: str, path: Path, what: str) -> None:
        if not path.is_file():
            out.append((field, f"{what} {path} does not exist"))

    for name, cfg in (("L4A", a), ("L4B", b)):
        if cfg.enabled and cfg.site_model and cfg.model is not None:
            out.append((f"products.{name}.site_model", "give either a trained site model "
                        f"(products.{name}.model) or site_model: true (train one here), not "
                        "both"))
    if a.enabled and a.site_model and (a.reference_map is not None or site.in_situ is None):
        out.append(("products.L4A.site_model", "a site model is trained on the site's "
                    "'in_situ' polygons: give them (and no reference_map)"))
    if a.enabled and a.model is not None:
        missing("products.L4A.model", a.model, "site model")
        if site.l4a_dates() != [season.end]:
            out.append(("products.L4A.model", "a site model is trained on a whole season: it "
                        "maps the season end only; set products.L4A.start to "
                        f"{season.end:%Y-%m}-01"))
    elif a.enabled:
        if a.reference_map is not None:
            missing("products.L4A.reference_map", a.reference_map, "reference map")
        elif site.in_situ is None:
            why = ("the crop mask is enabled without training data: give the site's "
                   f"'in_situ' polygons (class field '{a.class_field}') or "
                   "'products.L4A.reference_map' (a reference land-cover raster)")
            out.append(("products.L4A", why))
    if b.enabled and b.model is not None:
        missing("products.L4B.model", b.model, "site model")
        if site.l4b_dates() != [season.end]:
            out.append(("products.L4B.model", "a site model is trained on a whole season: it "
                        "maps the season end only (leave products.L4B.dates empty)"))
    elif b.enabled:
        if site.in_situ is None:
            why = ("the crop type (products.L4B) is enabled: give the in-situ polygons with "
                   "the crop code")
            out.append(("in_situ", why))
        if b.class_field is None:
            why = ("required when the crop type is enabled: the in-situ field with the crop "
                   "code (Sen2Agri's CODE)")
            out.append(("products.L4B.class_field", why))
    if site.in_situ is not None and (b.enabled or (a.enabled and a.reference_map is None)):
        missing("in_situ", site.in_situ, "in-situ file")
    acq = site.acquire
    if acq is not None and acq.enabled and acq.level == "L1C" and site.l2a.source != "agriseries":
        out.append(("acquire.level", "L1C is fetched to be made into L2A here: set "
                                     "'l2a.source: agriseries' (or fetch L2A)"))
    return out


def load_site(path: str | Path) -> Site:
    """Read and validate a site YAML file; relative paths are relative to its folder.

    Raises
    ------
    ConfigurationError
        The file is missing or not YAML (with the line), or a field is wrong (named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"site file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"site file {path}: cannot be read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigurationError(f"site file {path}:{at}: not valid YAML: {problem}") from None
    return site_from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


#: The commented site template printed by ``agriseries site template``.
TEMPLATE = """\
# agriseries site file. One site = one area, one season, the products to make along it.
# Paths are relative to this file's folder.
#   agriseries site check SITE.yaml    validate it and show its tiles and months
#   agriseries run SITE.yaml           ingest the inbox, make what is due, record it, exit
#   agriseries run SITE.yaml --watch   keep running, pick up new inputs as they arrive
#   agriseries status SITE.yaml        jobs by state (with errors) and products made

# name: short identifier of the site (letters, digits, '-', '_', '.'); it names the runner
# in the job database.
name: my-site

# area: where to produce. EITHER tiles: Sentinel-2 tile ids ...
area:
  tiles: [T31UDS]
  # ... OR geometry: a GeoJSON Polygon / MultiPolygon (or a Feature / FeatureCollection of
  # them) in longitude / latitude, inline or as the path of a .geojson file; the site then
  # covers every Sentinel-2 tile the geometry overlaps.
  # geometry: {type: Polygon, coordinates: [[[2.9, 50.9], [3.1, 50.9], [3.1, 51.0], [2.9, 50.9]]]}
  # geometry: fields.geojson

# season: first and last day of the agricultural season (YYYY-MM-DD, both included).
season:
  start: 2018-03-01
  end: 2018-10-31

# products: what to make and when. A level left out keeps its default.
products:
  # L3A: monthly cloud-free synthesis (WASP weighted average).
  L3A:
    enabled: true          # make it
    schedule: monthly      # one synthesis per calendar month of the season (the only choice)
    half_period: 23        # WASP half period H, days: inputs within the month's middle +- H
    sensors: null          # sensor families to use, e.g. [S2] or [S2, L8]; null: all
    provisional: false     # true: make a month as soon as it has an input and remake it as
                           # new inputs arrive; false: make it once its window has ended
                           # (late inputs still trigger a remake)
  # L3B: biophysical variables (S2 Toolbox neural networks), one product per L2A date.
  L3B:
    enabled: true          # make them
    schedule: every_date   # one product per new L2A acquisition (the only choice)
    sensors: null          # sensor families to process, e.g. [S2]; null: all
    variables: [LAI, FAPAR, FCOVER, LAI_Cab, LAI_Cw]   # variables to estimate
    resolution: 20         # Sentinel-2 networks: 20 (eight bands) or 10 (three bands) m
  # L4A: crop mask (random forest), several times a season. Each map uses the Sentinel-2
  # L2A products from the season start to its date, and is made once, on that date.
  L4A:
    enabled: false         # make it; needs 'in_situ' (below) or 'reference_map'
    schedule: monthly_from_mid_season   # a map at every month end from 'start' to the
                           # season end, and one at the season end (the only choice)
    start: null            # first crop mask date (the first map is at the end of its
                           # month); null: the middle of the season
    class_field: CROP      # field of the in-situ polygons with the class
    crop_values: [1]       # values of class_field (or reference map codes) meaning cropland
    reference_map: null    # a reference land-cover raster (e.g. ESA-CCI LC, with
                           # crop_values [10, 11, 12, 20, 30]): the method without in-situ
                           # data, used instead of 'in_situ' when given
    ignore_values: []      # reference map codes to treat as no data
    model: null            # a site model (agriseries croptrain on the in-situ data of the
                           # site's tiles): every tile mapped with it, 'in_situ' only
                           # validates; season-end map only (start: the season end's month)
    site_model: false      # true: one model per map date trained on the in-situ polygons of
                           # all the site's tiles, every tile mapped with it (one job)
    feature_set: sen2agri  # per-date features: sen2agri (B03 B04 B08 B11 + NDVI NDWI
                           # brightness) or 20m (B05-B8A B11 B12 + NDRE NDMI brightness)
  # L4B: crop type map (random forest on the in-situ crop codes).
  L4B:
    enabled: false         # make it; needs 'in_situ' and class_field
    dates: []              # dates of the crop type maps (data up to that day), each made
                           # once on that day; []: the season end
    class_field: null      # field of the in-situ polygons with the crop code, e.g. CODE
                           # (integers); required when enabled
    exclude_codes: []      # crop codes of polygons to leave out (e.g. [0] for "no crop")
    crop_mask: false       # true: code 0 where the tile's latest crop mask (L4A, made on or
                           # before the map date) says non-cropland
    model: null            # a crop type site model (agriseries croptrain --kind type);
                           # season-end map only (dates: [])
    site_model: false      # true: one crop type model trained on all the site's tiles
    feature_set: sen2agri  # as L4A's

# l2a: where the L2A (surface reflectance) products come from.
l2a:
  # provider: the providers' L2A put in the inbox (ESA Sen2Cor SAFE, THEIA MAJA MUSCATE,
  # USGS Landsat C2 L2, NetCDF/Zarr series). agriseries: L2A made here from the L1C products
  # put in the inbox (ESA L1C SAFE, USGS Landsat C2 L1), tile by tile in date order.
  source: provider
  resolution: 240          # agriseries: coarse grid of the cloud tests and tile state (m)
  altitude: 0              # agriseries: ground altitude (m) for the pressure, without a DEM
  dem: null                # agriseries: DEM raster (m) for the surface pressure
  backward_dates: 3        # agriseries: remake the first dates once this many are done

# inbox: the folder where input products arrive (SAFE folders or zips, MUSCATE, Landsat
# scene folders, NetCDF series). Each entry is ingested once; a changed entry again.
inbox:
  path: inbox
  include: ["*"]           # glob patterns of the entries to ingest
  exclude: [".*", "*.part", "*.partial", "*.tmp", "*.crdownload", "*.lock"]  # left alone
  settle_s: 60             # an entry modified less than this many seconds ago is still
                           # arriving: it waits for the next run
  allow_missing_bands: false   # ingest products with missing bands instead of refusing them

# acquire: find and fetch the site's acquisitions into the inbox (docs/acquisition.md).
# With 'enabled: true', 'agriseries run' searches the providers at each look at the inbox,
# fetches what is new (each acquisition a job of the job database: fetched once, resumed
# after a crash, verified), ingests it and makes the products; '--watch' keeps doing it as
# acquisitions are published. Leave it disabled when the inbox is filled by other means.
acquire:
  enabled: false           # true: search and fetch
  providers: [earth-search, planetary-computer, usgs]   # in order of preference; also cdse
                           # ($CDSE_USERNAME/$CDSE_PASSWORD or ~/.netrc) and geodes
                           # ($GEODES_API_KEY or ~/.netrc)
  level: L2A               # L2A, or L1C (then l2a.source: agriseries)
  sensors: null            # e.g. [S2]; null: S2, L8, L9
  max_cloud: 100           # largest cloud cover (%) fetched
  mode: auto               # auto: COG providers by windows of the site's area, archives
                           # whole; window: only the area's pixels; whole: whole files
  bands: null              # Sentinel-2 bands; null: those the products asked for read
  snap_m: 60               # windows snapped outwards to this lattice (m)
  endpoints: {}            # providers moved from their usual address (a mirror), e.g.
                           # {earth-search: {url: https://mirror.example/v1}}; per provider
                           # url: its STAC API, and
                           # token_url: its token endpoint (planetary-computer, cdse)
  read_timeout_s: 60       # longest silence of a provider before a request is retried
  attempts: 6              # tries of a request or download before it fails

# in_situ: in-situ field polygons (GeoPackage, shapefile... any CRS, integer class fields)
# for the crop mask (products.L4A.class_field) and the crop type (products.L4B.class_field);
# null: none.
in_situ: null

# store: the product store folder (COG + STAC), created if absent.
store: store

# database: the production database (jobs and product catalogue).
database:
  url: null                # SQLAlchemy URL, e.g. postgresql+psycopg://user@host/agriseries;
                           # null: an SQLite file jobs.sqlite in the store
  statement_timeout_s: 30  # time limit of every database call: past it the call fails with a
                           # clear error instead of waiting (a lock held elsewhere, a hung server)
  lease_s: 300             # a running job whose runner sent no heartbeat for this long is
                           # taken over by another runner (the runner died)
  retry_s: 120             # how long the runner retries a failing database call before it
                           # stops cleanly

# publish: the run puts each product it makes into the distribution catalogue that
# 'agriseries serve' serves (docs/distribution.md), from the outbox, in a thread of its own:
# every catalogue call has the time limit timeout_s, so a catalogue that is down or hangs
# never slows production; what is not published yet waits in the outbox ('agriseries
# status' shows it) for the next run or 'agriseries publish'. false: only 'agriseries
# publish' publishes.
publish:
  enabled: true            # the run publishes what it makes
  catalog_dsn: null        # pgstac catalogue, postgresql://user@host/db; null: the embedded
                           # stac-geoparquet catalogue in STORE/.distribution/catalog
  catalog_dir: null        # folder of the embedded catalogue (null: the default one)
  timeout_s: 30            # time limit of one catalogue call (s)
  poll_s: 2                # seconds between two looks at the outbox

# engine: where the jobs run (Dask distributed). Default: a LocalCluster on this machine.
engine:
  scheduler: null          # address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786
                           # (dask-kubernetes, dask-jobqueue, dask-scheduler); null: LocalCluster
  scheduler_file: null     # or the scheduler file an existing cluster wrote
  n_workers: 2             # LocalCluster: worker processes
  threads_per_worker: 1    # LocalCluster: threads per worker
  memory_limit: 4GiB       # LocalCluster: memory per worker ('auto': share the machine's)
  chunks: worker           # where a job's chunks run: on its own worker's threads (the only
                           # choice: 'cluster', a job's chunks over the whole cluster, was
                           # removed; docs/benchmarks.md)
  poll_s: 300              # --watch: seconds between two looks at the inbox

# retries: what happens when a job fails.
retries:
  max_attempts: 3          # attempts before a job is quarantined (kept with its error and
                           # traceback until an operator retries it)
  backoff_s: 60            # wait before the second attempt; it doubles at each attempt
  backoff_max_s: 21600     # longest wait between two attempts
"""
