"""Settings of the web portal (pydantic, checked at the boundary)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["PortalSettings"]


class PortalSettings(BaseModel):
    """What the portal page shows and where it lives (:func:`~agriseries.portal.mount_portal`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = "/portal"
    """Where the portal's page, files and endpoints are mounted (the page is also served at
    ``/`` to browsers)."""
    title: str = "agriseries"
    """Title of the page."""
    basemap_url: str | None = None
    """An XYZ tile URL template (``https://tiles.example.org/{z}/{x}/{y}.png``) drawn under
    the products; none by default (the page then needs no other host)."""
    basemap_attribution: str = ""
    """The basemap's attribution text."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or "?" in v or "#" in v:
            raise ValueError(f"prefix {v!r}: expected a path such as '/portal' (leading slash, "
                             "no trailing slash)")
        return v

    @field_validator("basemap_url")
    @classmethod
    def _basemap(cls, v: str | None) -> str | None:
        if v is not None and not all(k in v for k in ("{z}", "{x}", "{y}")):
            raise ValueError(f"basemap_url {v!r}: expected an XYZ template with {{z}}, {{x}} "
                             "and {y}")
        return v
