"""The web portal of the distribution service (docs/portal.md): a map of the catalogue, the
products drawn on it from their COGs, a pixel's time series, the basket.

* :mod:`.settings`: :class:`~.settings.PortalSettings`;
* :mod:`.products`: product ids -> items and files of the store, class tables, map layers;
* :mod:`.tiles`: titiler-core / rio-tiler tile endpoints over the store's COGs;
* :mod:`.series`: the time series of one pixel (JSON, CSV);
* :mod:`.app`: :func:`mount_portal`, which adds all of it to the service's FastAPI app.

Needs ``agriseries[server]``.
"""

from __future__ import annotations

__all__ = ["mount_portal", "PortalSettings"]


def __getattr__(name: str):
    if name == "mount_portal":
        from .app import mount_portal

        return mount_portal
    if name == "PortalSettings":
        from .settings import PortalSettings

        return PortalSettings
    raise AttributeError(name)
