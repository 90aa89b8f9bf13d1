"""Catalogue search: every acquisition of a site, from the providers in order, as one list.

:func:`search` asks each provider's STAC API (through pystac-client, which does the paging;
requests with a timeout and urllib3 retries with backoff that honour ``Retry-After``) for
the items of the wanted collections over the site's area and dates, and turns each item
into an :class:`Acquisition` with a provider-neutral id:

    ``{sensor}_{level}_{tile}_{YYYYMMDD}[_R{relative orbit}]``

e.g. ``S2B_L2A_T24MXV_20250731_R095`` (Sentinel-2: MGRS tile) or
``L8_L2A_WRS033032_20231008`` (Landsat: WRS-2 path/row). The same acquisition found in
several collections (Earth Search ``sentinel-2-l2a`` and its reprocessed
``sentinel-2-c1-l2a``) or at several providers becomes one :class:`Acquisition`: the first
provider in the order given wins, then the collection with the higher rank, then the newer
processing baseline; the others are kept as ``alternatives`` (fetched from when the first
choice fails). A provider that cannot be reached is reported in
:attr:`SearchResult.failures` and the others are still searched.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

from odc.geo.geom import Geometry

from ..core.bands import sensor_name
from ..core.errors import AuthenticationError, ConfigurationError, ProviderUnavailableError
from ..core.grid import parse_tile, tile_footprint
from .http import HttpSettings
from .providers import Collection, Credentials, Provider

__all__ = ["Acquisition", "SearchResult", "Selection", "acquisition_id", "archive_key", "search"]

_SENSOR_FAMILY = {"S2A": "S2", "S2B": "S2", "S2C": "S2", "S2D": "S2", "L8": "L8", "L9": "L9"}


@dataclass(frozen=True)
class Selection:
    """What to look for."""

    start: dt.date
    """First day (UTC)."""
    end: dt.date
    """Last day (UTC), included."""
    tiles: tuple[str, ...] = ()
    """Sentinel-2 tiles (``T31UDS``); Landsat scenes overlapping them are found too."""
    area: Geometry | None = None
    """The site's area (any CRS); default the tiles' squares."""
    level: str = "L2A"
    """``L2A`` (surface reflectance) or ``L1C`` (top of atmosphere)."""
    sensors: tuple[str, ...] = ("S2", "L8", "L9")
    """Sensor families."""
    max_cloud: float = 100.0
    """Largest cloud cover (%) of the acquisitions kept."""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ConfigurationError(f"--to {self.end} is before --from {self.start}")
        if self.level not in ("L1C", "L2A"):
            raise ConfigurationError(f"level {self.level!r}: expected L1C or L2A")
        bad = [s for s in self.sensors if s not in ("S2", "L8", "L9")]
        if bad:
            raise ConfigurationError(f"sensor {', '.join(bad)}: expected S2, L8 or L9")
        if not self.tiles and self.area is None:
            raise ConfigurationError("give tiles or an area to search")
        if not 0 <= self.max_cloud <= 100:
            raise ConfigurationError(f"max cloud {self.max_cloud}: expected 0-100 %")
        object.__setattr__(self, "tiles", tuple(parse_tile(t).name for t in self.tiles))

    def geometry(self) -> Geometry:
        """The search area in EPSG:4326."""
        if self.area is not None:
            return self.area.to_crs("EPSG:4326")
        geoms = [tile_footprint(t).to_crs("EPSG:4326") for t in self.tiles]
        out = geoms[0]
        for g in geoms[1:]:
            out = out.union(g)
        return out


@dataclass(frozen=True)
class Acquisition:
    """One acquisition found, with where to fetch it from."""

    id: str
    """Provider-neutral id (see the module docstring)."""
    provider: str
    collection: str
    item: object
    """The provider's ``pystac.Item``."""
    sensor: str
    level: str
    tile: str
    """MGRS tile (``T31UDS``) or WRS-2 path/row (``WRS033032``)."""
    datetime: dt.datetime
    cloud: float | None
    size: int | None
    """Bytes of the assets a whole-file fetch would move, when the item says."""
    rank: tuple = ()
    alternatives: tuple[Acquisition, ...] = field(default=(), compare=False)

    @property
    def item_id(self) -> str:
        """The provider's item id."""
        return self.item.id

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return {"id": self.id, "provider": self.provider, "collection": self.collection,
                "item": self.item.id, "sensor": self.sensor, "level": self.level,
                "tile": self.tile, "datetime": self.datetime.isoformat(),
                "cloud_cover": self.cloud, "size": self.size,
                "alternatives": [f"{a.provider}:{a.collection}:{a.item.id}"
                                 for a in self.alternatives]}

    def to_record(self) -> dict:
        """Everything needed to fetch it again without searching (the STAC items of it and
        of its alternatives as JSON): what an ``acquire`` job carries in its parameters.
        :meth:`from_record` gives back an equal acquisition."""
        return {"id": self.id, "provider": self.provider, "collection": self.collection,
                "item": self.item.to_dict(transform_hrefs=False), "sensor": self.sensor,
                "level": self.level, "tile": self.tile, "datetime": self.datetime.isoformat(),
                "cloud": self.cloud, "size": self.size, "rank": _plain(self.rank),
                "alternatives": [a.to_record() for a in self.alternatives]}

    @classmethod
    def from_record(cls, record: dict) -> Acquisition:
        """The acquisition of a :meth:`to_record` dict.

        Raises
        ------
        ConfigurationError
            The record lacks a field (it was not written by :meth:`to_record`).
        """
        import pystac

        try:
            return cls(id=record["id"], provider=record["provider"],
                       collection=record["collection"],
                       item=pystac.Item.from_dict(record["item"], preserve_dict=True),
                       sensor=record["sensor"], level=record["level"], tile=record["tile"],
                       datetime=dt.datetime.fromisoformat(record["datetime"]),
                       cloud=record.get("cloud"), size=record.get("size"),
                       rank=_tuples(record.get("rank") or ()),
                       alternatives=tuple(cls.from_record(a)
                                          for a in record.get("alternatives") or ()))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"acquisition record {record.get('id', '?')!r}: "
                                     f"{type(e).__name__}: {e} (expected the fields of "
                                     "Acquisition.to_record)") from None


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class SearchResult:
    """The acquisitions found and the providers that failed."""

    acquisitions: list[Acquisition]
    failures: dict[str, str]
    requests: int = 0


_TILE_RE = re.compile(r"(?:^|_)T?(\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2})(?:_|$)")
_ORBIT_RE = re.compile(r"_R(\d{3})_")
_BASELINE_RE = re.compile(r"_N(\d{4})_")


def _props(item) -> dict:
    return item.properties


def _sensor(item) -> str:
    p = _props(item)
    plat = p.get("platform") or p.get("eo:platform") or ""
    if plat:
        try:
            return sensor_name(str(plat).replace("_", "-"))
        except ConfigurationError:
            pass
    m = re.match(r"^(S2[ABCD]|LC0[89]|LC08|LC09)", item.id)
    if m:
        s = m.group(1)
        return {"LC08": "L8", "LC09": "L9"}.get(s, s)
    raise ConfigurationError(f"item {item.id}: unknown platform {plat!r}")


def _s2_tile(item) -> str | None:
    p = _props(item)
    code = p.get("grid:code") or ""
    if code.startswith("MGRS-"):
        return "T" + code[5:]
    if p.get("s2:mgrs_tile"):
        return "T" + p["s2:mgrs_tile"]
    if p.get("mgrs:utm_zone"):
        return f"T{int(p['mgrs:utm_zone']):02d}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
    if p.get("grid:code", "").startswith("T"):
        return p["grid:code"]
    m = _TILE_RE.search(item.id) or _TILE_RE.search(p.get("s2:product_uri", ""))
    return "T" + m.group(1) if m else None


def _wrs(item) -> str | None:
    p = _props(item)
    if p.get("landsat:wrs_path") and p.get("landsat:wrs_row"):
        return f"WRS{int(p['landsat:wrs_path']):03d}{int(p['landsat:wrs_row']):03d}"
    m = re.search(r"_(\d{6})_\d{8}_", item.id)
    return f"WRS{m.group(1)}" if m else None


def _orbit(item) -> int | None:
    p = _props(item)
    for text in (p.get("s2:product_uri", ""), item.id):
        m = _ORBIT_RE.search(text or "")
        if m:
            return int(m.group(1))
    v = p.get("sat:relative_orbit")
    return int(v) if v is not None else None


def _baseline(item) -> str:
    p = _props(item)
    b = p.get("s2:processing_baseline") or p.get("processing:version")
    if b:
        return str(b)
    m = _BASELINE_RE.search(p.get("s2:product_uri", "") or item.id)
    return m.group(1) if m else ""


def _sensing_time(item) -> dt.datetime:
    """The acquisition time: ``start_datetime`` when given (GEODES' ``datetime`` is the
    publication time), else ``datetime``."""
    start = _props(item).get("start_datetime")
    if start:
        t = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    return item.datetime


def acquisition_id(item, level: str) -> tuple[str, str, str]:
    """``(neutral id, sensor, tile)`` of a provider item (see the module docstring)."""
    sensor = _sensor(item)
    when = _sensing_time(item)
    day = when.astimezone(dt.timezone.utc).strftime("%Y%m%d")
    if sensor.startswith("S2"):
        tile = _s2_tile(item)
        if tile is None:
            raise ConfigurationError(f"item {item.id}: no MGRS tile in its properties or id")
        orbit = _orbit(item)
        return (f"{sensor}_{level}_{tile}_{day}" + (f"_R{orbit:03d}" if orbit else ""),
                sensor, tile)
    tile = _wrs(item)
    if tile is None:
        raise ConfigurationError(f"item {item.id}: no WRS-2 path/row")
    return f"{sensor}_{level}_{tile}_{day}", sensor, tile


def archive_key(item, coll: Collection) -> str | None:
    """The key of the item's whole-product archive asset: the collection's
    ``archive_asset``, else (GEODES, whose keys are file names) the one data asset that is a
    zip; ``None`` when the collection has no archives."""
    if not coll.archive_asset:
        return None
    if coll.archive_asset in item.assets:
        return coll.archive_asset
    zips = [k for k, a in item.assets.items()
            if (a.media_type or "").endswith("zip") and "data" in (a.roles or [])]
    return zips[0] if len(zips) == 1 else None


def _size(item, coll: Collection) -> int | None:
    assets = item.assets
    key = archive_key(item, coll)
    if key:
        a = assets[key]
        size = a.extra_fields.get("file:size")
        m = re.search(r"File size: (\d+) bytes", a.description or "")
        return size if size is not None else (int(m.group(1)) if m else None)
    sizes = [a.extra_fields.get("file:size") for a in assets.values()
             if "data" in (a.roles or []) and a.media_type and "tiff" in a.media_type]
    return sum(sizes) if sizes and all(s is not None for s in sizes) else None


def _open_client(provider: Provider, settings: HttpSettings, headers: dict[str, str],
                 on_request: Callable[[str], None] | None):
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=settings.attempts - 1, backoff_factor=settings.backoff_s,
                  status_forcelist=[429, 500, 502, 503, 504], allowed_methods=None,
                  respect_retry_after_header=True, backoff_max=settings.backoff_max_s,
                  raise_on_status=True)

    def modifier(request):
        if on_request:
            on_request(request.url)
        return request

    timeout = (settings.connect_timeout_s, settings.read_timeout_s)
    io = StacApiIO(headers=headers, timeout=timeout, max_retries=retry,
                   request_modifier=modifier)
    # from_file re-applies these to the StacApiIO: pass them again, or they are reset
    return Client.open(provider.url, headers=headers, request_modifier=modifier,
                       timeout=timeout, stac_io=io)


def _search_provider(provider: Provider, sel: Selection, settings: HttpSettings,
                     headers: dict[str, str], order: int,
                     on_request: Callable[[str], None] | None) -> list[Acquisition]:
    from pystac_client import ConformanceClasses

    colls = provider.select(sel.sensors, sel.level)
    if not colls:
        return []
    client = _open_client(provider, settings, headers, on_request)
    geom = sel.geometry()
    tiles = set(sel.tiles)
    out = []
    for coll in colls:
        kw = {}
        if sel.max_cloud < 100 and client.conforms_to(ConformanceClasses.QUERY):
            kw["query"] = {"eo:cloud_cover": {"lte": sel.max_cloud}}
        search = client.search(collections=[coll.id], intersects=geom.json,
                               datetime=[sel.start.isoformat(),
                                         (sel.end + dt.timedelta(days=1)).isoformat()],
                               limit=provider.search_limit, **kw)
        with warnings.catch_warnings():
            # pystac migrating the storage extension of real items (Earth Search c1) warns
            # about bucket URLs it cannot parse: not the user's concern
            warnings.filterwarnings("ignore", "Could not parse bucket", UserWarning)
            warnings.filterwarnings("ignore", "storage:tier was removed", UserWarning)
            items = list(search.items())
        for item in items:
            try:
                aid, sensor, tile = acquisition_id(item, sel.level)
            except ConfigurationError:
                continue
            if _SENSOR_FAMILY.get(sensor) not in sel.sensors:
                continue
            if sensor.startswith("S2") and tiles and tile not in tiles:
                continue
            when = _sensing_time(item)
            if when is None or not sel.start <= when.astimezone(dt.timezone.utc).date() <= sel.end:
                continue
            cloud = item.properties.get("eo:cloud_cover")
            if cloud is not None and float(cloud) > sel.max_cloud:
                continue
            rank = (order, -coll.rank, tuple(-int(c) for c in re.findall(r"\d+", _baseline(item))))
            out.append(Acquisition(
                id=aid, provider=provider.name, collection=coll.id, item=item, sensor=sensor,
                level=sel.level, tile=tile, datetime=when,
                cloud=float(cloud) if cloud is not None else None, size=_size(item, coll),
                rank=rank))
    return out


def search(selection: Selection, providers: Iterable[Provider], *,
           settings: HttpSettings | None = None,
           headers: Callable[[Provider], dict[str, str]] | None = None,
           on_request: Callable[[str], None] | None = None) -> SearchResult:
    """Search every provider (in order of preference) and merge the duplicates.

    Parameters
    ----------
    selection
        Dates, tiles or area, level, sensors, cloud cover.
    providers
        Providers in order of preference.
    settings
        Timeouts and retries.
    headers
        Request headers per provider; default: the provider's API key header (GEODES) when
        a key is configured (:class:`~agriseries.acquire.providers.Credentials`). A provider
        that refuses the search (no key, a wrong key) is a failure of that provider (its
        message says where the key is read); the others are still searched.
    on_request
        Called with the URL of every HTTP request (counting, logging).
    """
    import pystac_client.exceptions
    import requests

    settings = settings or HttpSettings()
    found: list[Acquisition] = []
    failures: dict[str, str] = {}
    count = [0]

    def counted(url: str) -> None:
        count[0] += 1
        if on_request:
            on_request(url)

    for order, p in enumerate(providers):
        try:
            h = headers(p) if headers else _auth_headers(p)
            found += _search_provider(p, selection, settings, h, order, counted)
        except AuthenticationError as e:
            failures[p.name] = f"AuthenticationError: {_short(e)}"
        except (requests.RequestException, pystac_client.exceptions.APIError, OSError,
                ProviderUnavailableError) as e:
            msg = f"{type(e).__name__}: {_short(e)}"
            if p.auth != "none" and re.search(r"\b(401|403)\b|unauthori[sz]ed|forbidden", msg,
                                              re.IGNORECASE):
                msg += f" (credentials refused; check {Credentials(p).where()})"
            failures[p.name] = msg
    groups: dict[str, list[Acquisition]] = {}
    for a in found:
        groups.setdefault(a.id, []).append(a)
    merged = []
    for aid, alts in groups.items():
        alts.sort(key=lambda a: a.rank)
        best = alts[0]
        merged.append(Acquisition(**{**best.__dict__, "alternatives": tuple(alts[1:])}))
    merged.sort(key=lambda a: (a.datetime, a.id))
    return SearchResult(merged, failures, count[0])


def _auth_headers(p: Provider) -> dict[str, str]:
    """The headers a search of ``p`` is sent with: its API key (GEODES) when one is
    configured (a catalogue that wants one and gets none answers 401: a failure of that
    provider, its message saying where the key is read), none for the others (OAuth2 and SAS
    tokens guard downloads, not searches)."""
    if p.auth != "apikey":
        return {}
    key = Credentials(p).optional()
    return {p.apikey_header: key[0]} if key else {}


def _short(e: BaseException) -> str:
    text = str(e)
    text = re.sub(r"\?[^\s'\"]*", "", text)  # no query strings (tokens) in messages
    return text[:300]
