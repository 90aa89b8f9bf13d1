"""Settings of the distribution service and of the publisher (pydantic, validated at the
boundary: a wrong value names the setting and what was expected)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ServiceSettings", "catalog_dir_of"]


def catalog_dir_of(store: Path) -> Path:
    """The default folder of the embedded catalogue: ``STORE/.distribution/catalog``."""
    return Path(store) / ".distribution" / "catalog"


class ServiceSettings(BaseModel):
    """What the service serves and how (``agriseries serve``; :func:`~.app.create_app`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Path
    """The product store whose published files the service serves."""
    backend: Literal["geoparquet", "pgstac"] = "geoparquet"
    """Catalogue backend: ``geoparquet`` (embedded, files the publisher keeps) or ``pgstac``."""
    catalog_dir: Path | None = None
    """geoparquet: the folder the publisher writes (default ``STORE/.distribution/catalog``)."""
    catalog_dsn: str | None = None
    """pgstac: the PostgreSQL URL of the catalogue (``postgresql://user@host:5432/db``)."""
    service_db: str | None = None
    """Accounts, baskets and usage: SQLAlchemy URL or SQLite path (default
    ``STORE/.distribution/service.sqlite``)."""
    title: str = "agriseries"
    """Title of the STAC API landing page."""
    public_search: bool = True
    """Search and browse without a token (downloads always need one)."""
    quota_bytes_per_day: int = Field(200 * 2**30, gt=0)
    """Default download quota of a user, bytes per UTC day."""
    max_concurrent_downloads: int = Field(4, ge=1)
    """Default number of downloads a user may run at the same time."""
    statement_timeout_s: float = Field(10.0, gt=0)
    """Time limit of every database call of the service."""
    signed_url_ttl_s: int = Field(7 * 86400, gt=0)
    """Lifetime of the signed URLs of a basket's download list."""
    collections_reload_s: int = Field(2, ge=0)
    """geoparquet: how often the collection list the publisher writes is re-read."""
    pgstac_hydrate: Literal["api", "database"] = "api"
    """pgstac: where a found item gets back what the catalogue keeps once per collection (the
    collection's ``item_assets``, stripped from every stored item): ``api``, in the service
    (stac-fastapi-pgstac's API hydration: pgstac answers the stored rows, ``nohydrate``);
    ``database``, in pgstac's SQL (about 15 ms per item; docs/benchmarks.md,
    "Distribution"). The items served are the same bytes either way."""
    oidc_issuer: str | None = None
    """Single sign-on: the issuer (``iss``) bearer JWTs must have."""
    oidc_audience: str | None = None
    """Single sign-on: the audience (``aud``) bearer JWTs must have."""
    oidc_jwks_url: str | None = None
    """Single sign-on: where the issuer's signing keys are (JWKS)."""
    oidc_user_claim: str = "sub"
    """Single sign-on: the claim naming the user."""
    oidc_client_id: str | None = None
    """Single sign-on on the web portal: the portal's client id at the issuer (a public
    client; authorization code flow with PKCE; redirect URI ``<service>/portal/``)."""

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.backend == "pgstac" and not self.catalog_dsn:
            raise ValueError("backend 'pgstac' needs catalog_dsn (postgresql://user@host/db)")
        oidc = [self.oidc_issuer, self.oidc_audience, self.oidc_jwks_url]
        if any(oidc) and not all(oidc):
            raise ValueError("single sign-on needs all of oidc_issuer, oidc_audience and "
                             "oidc_jwks_url")
        if self.oidc_client_id and not all(oidc):
            raise ValueError("oidc_client_id (sign-in on the web page) needs single sign-on: "
                             "oidc_issuer, oidc_audience and oidc_jwks_url")
        return self

    @property
    def catalog_folder(self) -> Path:
        """The geoparquet catalogue folder."""
        return Path(self.catalog_dir) if self.catalog_dir else catalog_dir_of(self.store)

    @property
    def service_db_url(self) -> str:
        """The service database URL."""
        return self.service_db or str(Path(self.store) / ".distribution" / "service.sqlite")
