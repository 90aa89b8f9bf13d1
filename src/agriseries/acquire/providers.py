"""The provider registry: one entry per catalogue agriseries can search and fetch from.

A :class:`Provider` says where its STAC API is, which of its collections hold which
sensor and level, how its assets are reached (public, signed with a SAS token, an OAuth2
bearer token, an API key), how its asset keys map to band names, and whether its data are
COGs (fetched by windows, only the site's pixels) or archives (fetched whole). Adding a
provider is one entry in :data:`PROVIDERS`.

Endpoints can be moved (a mirror, a test server) without touching code: the environment
variable ``AGRISERIES_<NAME>_URL`` (name upper-cased, ``-`` as ``_``) replaces the STAC API
URL, ``AGRISERIES_<NAME>_TOKEN_URL`` the token endpoint; a site file's ``acquire.endpoints``
does the same per site.

Credentials are read from the environment or ``~/.netrc`` when a request needs them, kept
in memory only, and never logged, printed or written into an item (:class:`Credentials`).
"""

from __future__ import annotations

import netrc
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import urlparse

from ..core.errors import AuthenticationError, ConfigurationError

__all__ = ["PROVIDERS", "Collection", "Credentials", "Provider", "get_provider", "provider_names"]

Sensor = Literal["S2", "L8", "L9"]
Level = Literal["L1C", "L2A"]
Mode = Literal["window", "whole"]

#: Earth Search / LandsatLook common-name asset keys -> ESA band names (Sentinel-2).
S2_COMMON = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22", "SCL": "scl", "AOT": "aot",
}
#: Planetary Computer keeps the ESA names as asset keys.
S2_ESA = {b: b for b in S2_COMMON}


@dataclass(frozen=True)
class Collection:
    """One collection of a provider."""

    id: str
    """The collection id in the provider's STAC API."""
    sensors: tuple[Sensor, ...]
    """The sensor families it holds (``S2``, ``L8``, ``L9``)."""
    level: Level
    """``L1C`` (top of atmosphere; Landsat Level-1) or ``L2A`` (surface reflectance)."""
    rank: int = 0
    """Preference among collections holding the same acquisition (higher wins: a newer
    processing baseline or collection)."""
    metadata_assets: tuple[str, ...] = ()
    """Keys of the small metadata files fetched whole with the pixels (MTD_MSIL2A.xml,
    MTD_TL.xml, Landsat MTL)."""
    archive_asset: str | None = None
    """Key of the asset holding the whole product archive (SAFE zip), if any."""


@dataclass(frozen=True)
class Provider:
    """A catalogue agriseries can search and fetch from (one row of the registry)."""

    name: str
    """Short name used on the command line and in site files."""
    title: str
    """Who runs it."""
    url: str
    """Root of its STAC API."""
    collections: tuple[Collection, ...]
    """The collections it serves for agriseries' sensors and levels."""
    mode: Mode = "window"
    """``window``: COG assets, only the site's pixels of the needed bands are read;
    ``whole``: the product archive is downloaded whole."""
    auth: Literal["none", "sas", "oauth2", "apikey"] = "none"
    """How requests are authorised: public; Planetary Computer SAS token appended to asset
    URLs; OAuth2 bearer token (password grant, refreshed before expiry); API key header."""
    token_url: str | None = None
    """Token endpoint (SAS or OAuth2), when ``auth`` needs one."""
    client_id: str | None = None
    """OAuth2 public client id."""
    apikey_header: str = "X-API-Key"
    """Header carrying the API key (``auth: apikey``)."""
    credentials_env: tuple[str, ...] = ()
    """Environment variables read for credentials (user, password) or (key,)."""
    netrc_host: str | None = None
    """``~/.netrc`` machine holding the credentials when the environment has none."""
    s2_bands: Mapping[str, str] = field(default_factory=lambda: dict(S2_COMMON))
    """ESA band name -> asset key of its Sentinel-2 items."""
    search_limit: int = 100
    """Items per page asked of the API."""

    def collection(self, cid: str) -> Collection:
        """The registered collection ``cid``."""
        for c in self.collections:
            if c.id == cid:
                return c
        raise ConfigurationError(f"provider {self.name}: no collection {cid!r} (known: "
                                 f"{', '.join(c.id for c in self.collections)})")

    def select(self, sensors: tuple[str, ...], level: str) -> list[Collection]:
        """The collections holding any of ``sensors`` at ``level``, best first."""
        out = [c for c in self.collections if c.level == level and set(c.sensors) & set(sensors)]
        return sorted(out, key=lambda c: -c.rank)

    def with_endpoints(self, url: str | None = None, token_url: str | None = None) -> Provider:
        """A copy pointing at other endpoints (a mirror, a test server)."""
        return replace(self, url=url or self.url, token_url=token_url or self.token_url)


_S2_META = ("product_metadata", "granule_metadata")
_LS_META_ES = ("mtl.txt", "mtl.xml", "mtl.json")
_LS_META_USGS = ("MTL.txt", "MTL.xml", "MTL.json")

#: The registry (name -> provider). Adding a provider is one entry here.
PROVIDERS: dict[str, Provider] = {p.name: p for p in [
    Provider(
        name="earth-search", title="Element 84 Earth Search (AWS open data)",
        url="https://earth-search.aws.element84.com/v1",
        collections=(
            Collection("sentinel-2-c1-l2a", ("S2",), "L2A", rank=2,
                       metadata_assets=("product_metadata", "granule_metadata")),
            Collection("sentinel-2-l2a", ("S2",), "L2A", rank=1, metadata_assets=_S2_META),
            Collection("sentinel-2-l1c", ("S2",), "L1C", rank=1, metadata_assets=_S2_META),
            Collection("landsat-c2-l2", ("L8", "L9"), "L2A", rank=1, metadata_assets=_LS_META_ES),
        ),
    ),
    Provider(
        name="planetary-computer", title="Microsoft Planetary Computer",
        url="https://planetarycomputer.microsoft.com/api/stac/v1",
        collections=(
            Collection("sentinel-2-l2a", ("S2",), "L2A", rank=1,
                       metadata_assets=("product-metadata", "granule-metadata")),
            Collection("landsat-c2-l2", ("L8", "L9"), "L2A", rank=1, metadata_assets=_LS_META_ES),
        ),
        auth="sas", token_url="https://planetarycomputer.microsoft.com/api/sas/v1/token",
        credentials_env=("PC_SDK_SUBSCRIPTION_KEY",), s2_bands=S2_ESA,
    ),
    Provider(
        name="cdse", title="Copernicus Data Space Ecosystem (ESA)",
        url="https://stac.dataspace.copernicus.eu/v1",
        collections=(
            Collection("sentinel-2-l2a", ("S2",), "L2A", rank=1, archive_asset="Product"),
            Collection("sentinel-2-l1c", ("S2",), "L1C", rank=1, archive_asset="Product"),
        ),
        mode="whole", auth="oauth2", client_id="cdse-public",
        token_url=("https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/"
                   "openid-connect/token"),
        credentials_env=("CDSE_USERNAME", "CDSE_PASSWORD"),
        netrc_host="identity.dataspace.copernicus.eu",
    ),
    Provider(
        name="geodes", title="CNES GEODES (THEIA MAJA L2A, MUSCATE format)",
        url="https://geodes-portal.cnes.fr/api/stac",
        collections=(
            Collection("MUSCATE_SENTINEL2_SENTINEL2_L2A", ("S2",), "L2A", rank=3,
                       archive_asset="archive"),
            Collection("PEPS_S2_L1C", ("S2",), "L1C", rank=0, archive_asset="archive"),
        ),
        mode="whole", auth="apikey", apikey_header="X-API-Key",
        credentials_env=("GEODES_API_KEY",), netrc_host="geodes-portal.cnes.fr",
    ),
    Provider(
        name="usgs", title="USGS Landsat Collection 2 (LandsatLook STAC)",
        url="https://landsatlook.usgs.gov/stac-server",
        collections=(
            Collection("landsat-c2l2-sr", ("L8", "L9"), "L2A", rank=2,
                       metadata_assets=_LS_META_USGS),
            Collection("landsat-c2l1", ("L8", "L9"), "L1C", rank=1, metadata_assets=_LS_META_USGS),
        ),
    ),
]}


def provider_names() -> list[str]:
    """The registered provider names, in registry order."""
    return list(PROVIDERS)


def _env_key(name: str, what: str) -> str:
    return f"AGRISERIES_{name.upper().replace('-', '_')}_{what}"


def get_provider(name: str, endpoints: Mapping[str, str] | None = None) -> Provider:
    """The provider ``name``, with its endpoints moved by ``endpoints`` (``url``,
    ``token_url``) or by the ``AGRISERIES_<NAME>_URL`` / ``_TOKEN_URL`` environment."""
    if name not in PROVIDERS:
        raise ConfigurationError(f"unknown provider {name!r}: expected one of "
                                 f"{', '.join(PROVIDERS)}")
    ep = dict(endpoints or {})
    url = ep.get("url") or os.environ.get(_env_key(name, "URL"))
    token = ep.get("token_url") or os.environ.get(_env_key(name, "TOKEN_URL"))
    return PROVIDERS[name].with_endpoints(url, token)


class Credentials:
    """A provider's credentials, read when first needed, kept only in memory.

    ``repr`` and ``str`` never show the secret. Read from the provider's
    ``credentials_env`` variables, else from ``~/.netrc`` (``$NETRC``) for its
    ``netrc_host`` (login + password; for an API key the password field).
    """

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._lock = threading.Lock()
        self._values: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"Credentials({self.provider.name}, <hidden>)"

    __str__ = __repr__

    def where(self) -> str:
        """Where the credentials are looked for (for error messages)."""
        parts = [f"${v}" for v in self.provider.credentials_env]
        if self.provider.netrc_host:
            parts.append(f"~/.netrc machine {self.provider.netrc_host}")
        return " or ".join(parts) or "nowhere (the provider is public)"

    def values(self) -> tuple[str, ...]:
        """The credential values (``(user, password)`` or ``(key,)``)."""
        with self._lock:
            if self._values is None:
                self._values = self._read()
            return self._values

    def optional(self) -> tuple[str, ...] | None:
        """The values, or ``None`` when none are configured."""
        try:
            return self.values()
        except AuthenticationError:
            return None

    def _read(self) -> tuple[str, ...]:
        env = self.provider.credentials_env
        vals = tuple(os.environ.get(v, "") for v in env)
        if env and all(vals):
            return vals
        host = self.provider.netrc_host
        if host:
            path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
            if path.exists():
                try:
                    auth = netrc.netrc(str(path)).authenticators(host)
                except (netrc.NetrcParseError, OSError) as e:
                    raise AuthenticationError(f"{path}: cannot be read ({type(e).__name__})") \
                        from None
                if auth:
                    login, _, password = auth
                    if len(env) == 1 and password:
                        return (password,)
                    if login and password:
                        return (login, password)
        raise AuthenticationError(f"provider {self.provider.name}: no credentials found; "
                                  f"set {self.where()}")


@dataclass
class Token:
    """An access token and when it stops being valid (monotonic seconds)."""

    value: str
    expires_at: float
    refresh: str | None = None

    def fresh(self, margin_s: float) -> bool:
        """True while the token is valid for at least ``margin_s`` more seconds."""
        return time.monotonic() + margin_s < self.expires_at


def host_of(url: str) -> str:
    """The host[:port] of a URL."""
    return urlparse(url).netloc
